"""The controller with its bricks on Ray: the software target's P4Runtime server (in
process, port 0), a local Ray cluster (nodes nf1, nf2) running every brick as an
actor (ipc between bricks), frames driven through the target's pipeline model
into each port's feed. Feature-extraction scale-out and
scale-in with live state moves: zero packets lost and scores bit-equal to the
monolith on the same stream (~30 s)."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lego.control.config import config_from_dict
from lego.control.registry import Command
from lego.control.runtime import ControllerRuntime
from lego.nfs.kitsune.graph import monolith_scores, read_scores, train_model
from lego.polling import wait_for
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer
from lego.topo.local_system import Driver
from lego.topo.traffic_synth import generate, write_trace

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
TOKEN = "live-test-token-0123456789"
TRAFFIC = 1
N = 6000


@pytest.fixture(scope="module")
def trace_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("live")
    tr = generate(seed=3, packets=N)
    pcap = d / "trace.pcap"
    write_trace(tr, pcap)
    model = train_model(pcap, d / "model.npz", "lego", fm=300, ad=2000)
    return tr, pcap, model


def _live_system(model: Path, fe_initial: int, *, mode: str, name: str, scaling: dict,
                 hosts: list[dict], recovery: dict | None = None, fuse: bool = False):
    """A scratch directory with the token, a started software target, and the
    controller's config: feed sources, small batches, one ULN per graph, the bricks
    in a namespace of their own on the local Ray cluster."""
    work = Path(tempfile.mkdtemp(prefix="lg", dir="/tmp"))
    (work / "token").write_text(TOKEN)
    srv = P4RuntimeServer(pl.Pipeline(), 0, None, "127.0.0.1:0")
    srv.start()
    cfg = config_from_dict({
        "switch": {"address": srv.grpc_addr, "traffic_ports": [TRAFFIC]},
        "northbound": {"bind": "127.0.0.1:0", "token_file": str(work / "token")},
        "nf": {"semantics": "lego", "model": str(model), "results": str(work / "results"),
               "source": "feed", "fe_initial": fe_initial},
        "graph": {"batch": 256, "flush_ms": 10, "stateless": 1, "fuse": fuse},
        "scaling": scaling,
        "placement": {"mode": mode},
        "sla": {"latency_ms": 100.0},
        "ray": {"namespace": work.name, "workdir": str(work / "bricks")},
        "recovery": recovery or {},
        "hosts": hosts,
    }, name)
    return work, srv, cfg


def _feeds(work: Path, host: str, ports: list[int]) -> dict[int, Path]:
    return {p: work / "bricks" / host for p in ports}


def _running(rt: ControllerRuntime, brick: str) -> bool:
    """The brick's actor answered its first load read (registered and reporting)."""
    b = rt.core.bricks.get(brick)
    return b is not None and b.load.get("state") == "running"


@pytest.fixture
def system(trace_model, local_ray, request):
    """One graph on port 2 (nf1 also has port 3), no scaling policy; a test marked
    ``recovery`` checkpoints its feature extractor every 0.5 s, one marked ``fused``
    runs each graph as one process."""
    tr, pcap, model = trace_model
    recovery = {"checkpoint_s": 0.5} if request.node.get_closest_marker("recovery") else {}
    fuse = request.node.get_closest_marker("fused") is not None
    work, srv, cfg = _live_system(
        model, 1, mode="graph", name="<live test>",
        scaling={"fe": False, "standby": False, "high": 0.99, "low": 0.0001, "dwell": 1000.0,
                 "adopt_grace": 0.3, "stateless": not fuse},
        hosts=[{"name": "nf1", "ports": [2, 3], "cores": 16}], recovery=recovery, fuse=fuse)
    rt = ControllerRuntime(cfg, TOKEN)
    try:
        rt.start()
        yield srv, rt, work, cfg
    finally:
        rt.close(stop_bricks=True)
        srv.stop()


def _scores(results: Path):
    seqs, scores = [], []
    for d in sorted(results.glob("port-*")):
        s, v = read_scores(d / "scores.csv")
        seqs.append(s)
        scores.append(v)
    seq, score = np.concatenate(seqs), np.concatenate(scores)
    order = np.argsort(seq)
    return seq[order], score[order]


def _driving_port_2(system, trace_model) -> tuple:
    """Once port 2's graph runs: the runtime, work directory, trace, model and a
    driver of frames to nf1's ports 2 and 3."""
    srv, rt, work, _ = system
    tr, pcap, model = trace_model
    wait_for(lambda: _running(rt, "fq-2/0"), 30, "graph of port 2")
    return rt, work, pcap, model, Driver(srv, tr, _feeds(work, "nf1", [2, 3]), traffic=TRAFFIC)


def _scale_out_to_port_3(rt: ControllerRuntime) -> None:
    """What the policy would command: a graph on port 3, then the switch's move."""
    with rt.lock:
        cmds = rt.core._add_graph(time.monotonic(), "nf1", 3, base=-1)
    for c in cmds + [Command("switch_scale_out", "nf1", 3, {"transfer": True})]:
        rt.commands.put(c)


def _scale_in_port_2(rt: ControllerRuntime) -> None:
    """What the policy would command: port 2's buckets and state to the other
    replica, then its graph drains."""
    rt.commands.put(Command("switch_scale_in", "nf1", 2, {"transfer": True}))
    with rt.lock:
        rt.core.graphs[2].draining = True
    rt.commands.put(Command("drain", "nf1", 2, {"brick": "src-2/0"}))


def _end_on_port_3(drv: Driver, work: Path) -> None:
    """The input ends (on port 3, the one left); both decisions write their summary."""
    drv.end([3])
    for p in (2, 3):
        wait_for(lambda p=p: (work / "results" / f"port-{p}" / "summary.json").exists(),
                 60, f"summary of port {p}")


def _assert_exact(work: Path, pcap: Path, model: Path) -> None:
    """Every packet scored once, bit-equal to the monolith on the same stream."""
    seq, score = _scores(work / "results")
    want_seq, want_score = monolith_scores(pcap, model, "lego")
    assert len(seq) == len(want_seq) == N  # zero packets lost, none twice
    assert np.array_equal(seq, want_seq)
    assert np.array_equal(score.view(np.uint64), want_score.view(np.uint64))  # bit for bit
    for p in (2, 3):
        s = json.loads((work / "results" / f"port-{p}" / "summary.json").read_text())
        assert s["lost_batches"] == 0


def test_fe_scale_out_and_in_with_live_state_moves_is_exact(system, trace_model):
    rt, work, pcap, model, drv = _driving_port_2(system, trace_model)
    try:
        _scale_out_and_in_while_driving(rt, work, drv)
    finally:
        drv.close()
    _assert_exact(work, pcap, model)


def _scale_out_and_in_while_driving(rt: ControllerRuntime, work: Path, drv: Driver,
                                    between=lambda: None) -> None:
    """A third of the trace on port 2, a scale-out to port 3 as the next third flows,
    (``between``), a scale-in of port 2 as the last does, the end on port 3."""
    drv.send(N // 3)
    _scale_out_to_port_3(rt)  # while traffic flows
    t = threading.Thread(target=drv.send, args=(2 * N // 3,),
                         kwargs={"pause": lambda: time.sleep(0.002)})
    t.start()
    wait_for(lambda: any(e["kind"] == "switch_scale_out" for e in rt.core.events), 60,
             "scale-out")
    t.join()
    assert 3 in rt.manager.plan.replica_ports
    moved = [e for e in rt.core.events if e["kind"] == "state_moved"]
    assert moved and moved[0]["entries"] > 0 and moved[0]["lost_buckets"] == 0
    between()
    # scale in port 2: its buckets and state go to port 3, then its graph drains
    _scale_in_port_2(rt)
    t = threading.Thread(target=drv.send, args=(N,),
                         kwargs={"pause": lambda: time.sleep(0.002)})
    t.start()
    wait_for(lambda: sum(e["kind"] == "state_moved" for e in rt.core.events) >= 2, 60,
             "scale-in")
    t.join()
    assert rt.manager.plan.replica_ports == (3,)
    _end_on_port_3(drv, work)


@pytest.mark.fused
@pytest.mark.recovery
def test_fused_graphs_scale_out_and_in_with_live_state_moves_exactly(system, trace_model):
    """Each graph is one process (its five bricks as function calls), the controller
    still knows and commands its bricks one by one: the same moves, checkpoints
    taken, the same exact scores."""
    rt, work, pcap, model, drv = _driving_port_2(system, trace_model)
    assert set(rt.engine.process_of) >= {"src-2/0", "fq-2/0", "dec-2/0"}
    assert _brick_actors(rt) == ["brick:replica-2/0"]  # one actor, one process
    try:
        _scale_out_and_in_while_driving(rt, work, drv, between=lambda: wait_for(
            lambda: rt.recovery.checkpoint(2, "fq-2/0", "src-2/0") is not None, 20,
            "a checkpoint of port 2's keyed brick, inside its graph's process"))
    finally:
        drv.close()
    _assert_exact(work, pcap, model)
    assert rt.recovery.stats["taken"] > 0
    wait_for(lambda: rt.core.bricks["fq-3/0"].load.get("state") in ("done", "exited"), 30,
             "port 3's process's last load report")
    bricks = {b["id"]: b for b in rt.status()["bricks"]}
    fq, src = bricks["fq-3/0"], bricks["src-3/0"]  # the process's load, split by member
    assert src["packets_in"] >= fq["packets_in"] > 0
    assert fq["cpu_s"] > 0 and src["cpu_s"] > 0 and fq["cpu_s"] != src["cpu_s"]
    # the drained graph's process ends with its last member
    wait_for(lambda: "src-2/0" not in rt.engine.handles, 30, "port 2's process ended")
    assert {p for p in rt.engine.process_of.values()} == {"replica-3/0"}


def _brick_actors(rt: ControllerRuntime) -> list[str]:
    """The named brick actors of this system's namespace, sorted."""
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == rt.engine.namespace and a["name"].startswith("brick:"))


@pytest.mark.fused
def test_a_killed_fused_graph_is_one_death_restarted_empty_and_scores_on(system, trace_model):
    """SIGKILL a fused graph's process: one death (its source's), one restart, its
    keyed state reported lost (no log inside one process), no failed command, and
    the restarted process scores what comes after, its decision starting at once."""
    import os
    import signal

    rt, work, pcap, model, drv = _driving_port_2(system, trace_model)
    try:
        drv.send(N // 3)
        wait_for(lambda: rt.core.bricks["dec-2/0"].load.get("extra", {}).get("scores", 0)
                 > 0, 30, "scores before the kill")
        os.kill(rt.engine._call("src-2/0", "info")["pid"], signal.SIGKILL)
        wait_for(lambda: any(e["kind"] == "state_lost" for e in rt.core.events), 20,
                 "the death seen")
        wait_for(lambda: rt.core.bricks["src-2/0"].load.get("state") == "running", 30,
                 "the restarted process")
        drv.send(2 * N // 3, pause=lambda: time.sleep(0.002))
        wait_for(lambda: rt.core.bricks["dec-2/0"].load.get("extra", {}).get("scores", 0)
                 > 0, 30, "scores after the restart")
    finally:
        drv.close()
    died = [e for e in rt.core.events if e["kind"] == "brick_died"]
    assert [e["brick"] for e in died] == ["src-2/0"] and died[0]["code"] == -signal.SIGKILL
    lost = [e for e in rt.core.events if e["kind"] == "state_lost"]
    assert [e["brick"] for e in lost] == ["fq-2/0"] and "fused" in lost[0]["reason"]
    assert rt.core.counters["bricks_restarted"] == 1
    assert not [e for e in rt.core.events if e["kind"] == "command_failed"]


def test_a_killed_brick_is_restarted_by_ray_and_rerouted(system):
    """SIGKILL the ULN brick's process: its actor exits, Ray restarts it on the same
    node (a new process, a new incarnation), and the controller sees the restart
    with the old process's exit code and re-routes the mapping brick to it."""
    import os
    import signal

    srv, rt, work, cfg = system
    wait_for(lambda: _running(rt, "uln-2/0"), 30, "graph of port 2")
    before = rt.engine._call("uln-2/0", "info")
    killed = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: any(e["kind"] == "brick_died" for e in rt.core.events), 15, "death")
    died = next(e for e in rt.core.events if e["kind"] == "brick_died")
    assert died["brick"] == "uln-2/0" and died["code"] == -signal.SIGKILL
    assert died["t"] - killed < 10.0
    after = rt.engine._call("uln-2/0", "ready")
    assert after["pid"] != before["pid"] and after["incarnation"] != before["incarnation"]
    assert after["node_id"] == before["node_id"]  # placed by its port again
    assert after["previous"][-1]["pid"] == before["pid"]
    wait_for(lambda: any(c.kind == "control" and c.args["cmd"]["op"] == "route"
                         for _, c in rt.executed), 10, "the re-route")
    assert rt.core.counters["bricks_restarted"] == 1
    assert not [e for e in rt.core.events if e["kind"] == "command_failed"]


def test_status_cli_with_and_without_the_token(system, capsys):
    from lego.cli import main

    srv, rt, work, cfg = system
    wait_for(lambda: _running(rt, "dec-2/0"), 30, "graph of port 2")
    assert main(["controller", "status", "--controller", rt.address, "--token-file",
                 str(work / "token"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert {b["id"] for b in st["bricks"]} >= {"src-2/0", "fq-2/0", "uln-2/0", "dec-2/0"}
    (work / "bad").write_text("x" * 32)
    assert main(["controller", "status", "--controller", rt.address, "--token-file",
                 str(work / "bad")]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_skewed_buckets_are_rebalanced_live_with_exact_scores(trace_model, monkeypatch,
                                                             local_ray):
    """Two FE replicas, port 2 given 7/8 of the buckets: the periodic rebalance
    moves buckets (and their state) to port 3 while traffic flows; zero loss and
    scores bit-equal to the monolith."""
    from lego.control import runtime
    from lego.control.switch_rebalance import BucketMove

    monkeypatch.setattr(runtime, "LOADS_EVERY_S", 0.4)
    tr, pcap, model = trace_model
    work, srv, cfg = _live_system(
        model, 2, mode="graph", name="<live rebalance test>",
        scaling={"fe": False, "stateless": False, "standby": False, "fe_standby": False,
                 "adopt_grace": 0.3, "rebalance_s": 0.5, "rebalance_tolerance": 0.25,
                 "cooldown": 0.5, "host_timeout": 2.0},
        hosts=[{"name": "nf1", "ports": [2, 3], "cores": 16}])
    rt = ControllerRuntime(cfg, TOKEN)
    drv = None
    try:
        rt.start()
        for p in (2, 3):
            wait_for(lambda p=p: _running(rt, f"fq-{p}/0"), 30, f"graph {p}")
        m = rt.manager
        assert m.plan.replica_ports == (2, 3)
        # skew before any traffic (no load yet, so the controller moves nothing)
        skew = np.where(np.arange(len(m.owners)) % 8 == 0, 3, 2).astype(np.int64)
        m.apply(m.plan, skew, [BucketMove(int(b), int(m.owners[b]), int(skew[b]))
                               for b in np.flatnonzero(m.owners != skew)])
        drv = Driver(srv, tr, _feeds(work, "nf1", [2, 3]), traffic=TRAFFIC)

        def rebalanced() -> bool:
            return any(e["kind"] == "switch_rebalance" and e["buckets"] > 0
                       for e in rt.core.events)

        # the move needs load windows with traffic in them: about 2.5 s of traffic,
        # then the rest slowly (about 7 s more) until a rebalance, so a loaded
        # machine still sees one while packets flow
        drv.send(N // 2, pause=lambda: time.sleep(0.05))
        drv.send(N, pause=lambda: time.sleep(0.05 if rebalanced() else 0.15))
        wait_for(rebalanced, 20, lambda: f"a rebalance; events: {rt.core.events[-12:]}")
        drv.end([2, 3])
        for p in (2, 3):
            wait_for(lambda p=p: (work / "results" / f"port-{p}" / "summary.json").exists(),
                     60, f"summary of port {p}")
        reb = [e for e in rt.core.events if e["kind"] == "switch_rebalance"]
        moved = [e for e in rt.core.events if e["kind"] == "state_moved"]
        assert reb and reb[0]["buckets"] > 0 and reb[0]["port"] == 2  # off the pinned one
        # the trace's hubs shift over time, so a later window may call for another
        # move, but never within the cooldown of the previous one (no flapping)
        assert all(b["t"] - a["t"] >= 0.5 for a, b in zip(reb, reb[1:], strict=False))
        assert all(e["lost_buckets"] == 0 for e in moved)
        seq, score = _scores(work / "results")
        want_seq, want_score = monolith_scores(pcap, model, "lego")
        assert len(seq) == len(want_seq) == N  # zero packets lost
        assert np.array_equal(seq, want_seq)
        assert np.array_equal(score.view(np.uint64), want_score.view(np.uint64))
        for p in (2, 3):
            s = json.loads((work / "results" / f"port-{p}" / "summary.json").read_text())
            assert s["lost_batches"] == 0
    finally:
        if drv is not None:
            drv.close()
        rt.close(stop_bricks=True)
        srv.stop()


def test_brick_placement_puts_one_uln_on_another_host_over_tcp_exactly(trace_model,
                                                                       local_ray):
    """``[placement].mode = "brick"``: nf1 has cores for one ULN only; a forced ULN
    overload starts one ULN replica on nf2 (another Ray node), fed by
    the mapping brick over tcp and sending its scores to the decision over tcp.
    The remote replica takes batches, then is retired (scale-in: an end marker
    over tcp, it finishes its queue); zero loss, scores bit-equal to the monolith."""
    from lego.control.graph_specs import tcp_port

    tr, pcap, model = trace_model
    work, srv, cfg = _live_system(
        model, 1, mode="brick", name="<live brick placement test>",
        scaling={"fe": False, "stateless": False, "standby": False, "fe_standby": False,
                 "adopt_grace": 0.3, "rebalance_s": 0},
        hosts=[{"name": "nf1", "ports": [2], "cores": 2.5},  # FE + one ULN + the rest
               {"name": "nf2", "ports": [4], "cores": 8}])
    rt = ControllerRuntime(cfg, TOKEN)
    drv = None
    try:
        rt.start()
        wait_for(lambda: _running(rt, "dec-2/0"), 30, "graph of port 2")
        drv = Driver(srv, tr, _feeds(work, "nf1", [2]), traffic=TRAFFIC)
        drv.send(N // 3)
        with rt.lock:  # the ULN overload decision, forced: nf1 has no core left
            cmds = rt.core._uln_elsewhere(time.monotonic(), rt.core.graphs[2], "forced")
        assert [c.kind for c in cmds] == ["control", "start", "control", "control"]
        assert cmds[1].host == "nf2" and not any(c.kind == "start_graph" for c in cmds)
        for c in cmds:
            rt.commands.put(c)
        wait_for(lambda: _running(rt, "uln-2/1"), 30, "the remote ULN")
        assert rt.engine._call("uln-2/1", "info")["node_id"] == rt.nodes["nf2"]["node_id"]
        wait_for(lambda: rt.commands.empty() and any(
            c.args.get("cmd", {}).get("op") == "route" for _, c in rt.executed), 10,
            "the route to the remote ULN")
        drv.send(2 * N // 3, pause=lambda: time.sleep(0.002))
        wait_for(lambda: rt.core.bricks["uln-2/1"].load.get("batches_in", 0) > 0, 10,
                 "batches at the remote ULN")
        remote = rt.core.bricks["uln-2/1"].load
        with rt.lock:  # scale-in: the remote replica is retired like a local one
            cmds = rt.core._retire_uln(time.monotonic(), rt.core.graphs[2],
                                       rt.core.bricks["uln-2/1"], "forced")
        for c in cmds:
            rt.commands.put(c)
        wait_for(lambda: "uln-2/1" not in rt.core.bricks or
                 rt.core.bricks["uln-2/1"].load.get("state") == "done", 20,
                 "the remote ULN to finish")
        drv.send(N, pause=lambda: time.sleep(0.002))
        drv.end([2])
        wait_for(lambda: (work / "results" / "port-2" / "summary.json").exists(), 60,
                 "summary of port 2")
        assert not [e for e in rt.core.events if e["kind"] == "command_failed"]
        spec = json.loads((work / "bricks" / "nf2" / "uln-2-1.json").read_text())
        ip1, ip2 = rt.nodes["nf1"]["ip"], rt.nodes["nf2"]["ip"]
        assert spec["inlet"] == f"tcp://{ip2}:{tcp_port(2, 1)}"
        assert spec["outlets"][0]["addresses"] == [f"tcp://{ip1}:{tcp_port(2, 0)}"]
        assert remote["batches_in"] > 0 and remote["packets_in"] > 0  # batches over tcp
        seq, score = _scores(work / "results")
        want_seq, want_score = monolith_scores(pcap, model, "lego")
        assert len(seq) == len(want_seq) == N  # zero packets lost
        assert np.array_equal(seq, want_seq)
        assert np.array_equal(score.view(np.uint64), want_score.view(np.uint64))  # bit for bit
        s = json.loads((work / "results" / "port-2" / "summary.json").read_text())
        assert s["lost_batches"] == 0
    finally:
        if drv is not None:
            drv.close()
        rt.close(stop_bricks=True)
        srv.stop()


def test_a_restarted_feature_extractor_answers_a_later_scale_out_and_scale_in(
        system, trace_model):
    """SIGKILL the feature extractor mid-traffic: Ray restarts it with empty state
    and a frame count of 0. A scale-out from its port and then its scale-in must
    still be answered: each export counts the port's frames from the source's count
    carried by every batch, not from the restart (before, the scale-in's export
    waited for frames that never came: "no answer within 10 s")."""
    import os
    import signal

    rt, work, pcap, model, drv = _driving_port_2(system, trace_model)
    try:
        drv.send(N // 4)
        wait_for(lambda: rt.core.bricks["fq-2/0"].load.get("packets_in", 0) > 0, 30,
                 "frames at the extractor")
        os.kill(rt.engine._call("fq-2/0", "info")["pid"], signal.SIGKILL)
        wait_for(lambda: any(e["kind"] == "brick_restart" and e["brick"] == "fq-2/0"
                             for e in rt.core.events), 20, "the restart")
        wait_for(lambda: _running(rt, "fq-2/0"), 30, "the new extractor")
        # no frame since the restart: only the source's count tells it where it is
        _scale_out_to_port_3(rt)
        wait_for(lambda: any(e["kind"] == "switch_scale_out" for e in rt.core.events), 60,
                 "scale-out")
        drv.send(N // 2)  # (up to packet N / 2: send takes the trace's position)
        _scale_in_port_2(rt)
        wait_for(lambda: sum(e["kind"] == "state_moved" for e in rt.core.events) >= 2, 60,
                 "scale-in")
        assert rt.manager.plan.replica_ports == (3,)
        drv.send(N)
        drv.end([3])
        wait_for(lambda: (work / "results" / "port-3" / "summary.json").exists(), 60,
                 "summary of port 3")
    finally:
        drv.close()
    failed = [e for e in rt.core.events if e["kind"] == "command_failed"]
    assert not failed, failed
    moved = [e for e in rt.core.events if e["kind"] == "state_moved"]
    assert len(moved) == 2 and all(e["lost_buckets"] == 0 for e in moved), moved
    s = json.loads((work / "results" / "port-3" / "summary.json").read_text())
    assert s["rows"] > 0 and s["lost_batches"] == 0


def _kill(rt: ControllerRuntime, brick: str, sig: int = 9) -> None:
    import os

    os.kill(rt.engine._call(brick, "info")["pid"], sig)


def _event(rt: ControllerRuntime, kind: str, brick: str) -> dict | None:
    return next((e for e in rt.core.events if e["kind"] == kind and e.get("brick") == brick),
                None)


@pytest.mark.recovery
def test_killed_extractor_and_ensemble_are_recovered_exactly_then_scale_out_and_in(
        system, trace_model):
    """SIGKILL the feature extractor mid-traffic (its state rebuilt from its last
    checkpoint and its source's log), then the ensemble (its batches in flight sent
    again from the extractor's output log), then scale out from the port and back
    in: every score equals the monolith's on the same stream, bit for bit, none lost."""
    rt, work, pcap, model, drv = _driving_port_2(system, trace_model)
    try:
        drv.send(N // 4)
        wait_for(lambda: rt.recovery.stats["taken"] >= 2, 30, "checkpoints")
        drv.send(N // 3)  # frames after the checkpoint: the replay must rebuild them
        _kill(rt, "fq-2/0")
        drv.send(N // 2)  # while it is dead and restarting: queued, then in order
        wait_for(lambda: _event(rt, "state_recovered", "fq-2/0"), 30, "the recovery")
        rec = _event(rt, "state_recovered", "fq-2/0")
        assert rec["entries"] > 0 and rec["batches"] > 0 and rec["seconds"] < 20
        wait_for(lambda: _running(rt, "uln-2/0"), 30, "the ensemble")
        _kill(rt, "uln-2/0", 19)  # SIGSTOP: batches queue at it, then die with it
        drv.send(2 * N // 3)
        wait_for(lambda: rt.core.bricks["fq-2/0"].load.get("packets_in", 0) >= N // 6, 30,
                 "frames at the extractor")
        _kill(rt, "uln-2/0")
        # what was in flight goes again (how much: what the dead process had read from
        # its socket; what ZeroMQ still held at the sender reaches the new one anyway)
        wait_for(lambda: _event(rt, "batches_resent", "uln-2/0"), 30, "the resend")
        wait_for(lambda: rt.recovery.stats["taken"] >= 6, 30, "checkpoints after")
        _scale_out_to_port_3(rt)
        wait_for(lambda: any(e["kind"] == "switch_scale_out" for e in rt.core.events), 60,
                 "scale-out")
        drv.send(5 * N // 6)
        _scale_in_port_2(rt)
        wait_for(lambda: sum(e["kind"] == "state_moved" for e in rt.core.events) >= 2, 60,
                 "scale-in")
        drv.send(N)
        _end_on_port_3(drv, work)
    finally:
        drv.close()
    kinds = [e["kind"] for e in rt.core.events]
    assert "state_lost" not in kinds and "command_failed" not in kinds, rt.core.events
    moved = [e for e in rt.core.events if e["kind"] == "state_moved"]
    assert len(moved) == 2 and all(e["lost_buckets"] == 0 for e in moved), moved
    _assert_exact(work, pcap, model)
