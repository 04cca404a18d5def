"""Faults on a live system (:mod:`lego.topo.local_system`): the software
target's P4Runtime server, the controller, its bricks as actors on a local Ray
cluster, frames driven through the target's pipeline model. Each test kills one
component:

- a Ray node (its raylet, its actors and their bricks: the NF host is gone);
- the controller (``lego controller run``, killed, then started again);
- the switch (its gRPC server stopped, a new one with no pipeline on its port).

About 30 s for the file; every wait polls up to a deadline."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import pytest

from lego.control import northbound as nb
from lego.control.config import config_from_dict
from lego.control.runtime import ControllerRuntime
from lego.nfs.kitsune.graph import train_model
from lego.polling import wait_for
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer
from lego.topo.local_system import TOKEN, Driver, brick_dir, system_config
from lego.topo.traffic_synth import generate, write_trace
from tests.support.controller import controller_process, free_tcp_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
N = 4500


@pytest.fixture(scope="module")
def trace_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    tr = generate(seed=4, packets=N)
    pcap = d / "trace.pcap"
    write_trace(tr, pcap)
    return tr, train_model(pcap, d / "model.npz", "lego", fm=300, ad=2000)


@pytest.fixture
def work():
    return Path(tempfile.mkdtemp(prefix="lgf", dir="/tmp"))  # ipc paths stay short


@pytest.fixture
def cleanup():
    """Things to stop after the test, last started first (each by its own handle)."""
    stack: list = []
    yield stack
    for stop in reversed(stack):
        stop()


def _summary(work: Path, port: int) -> dict:
    path = work / "results" / f"port-{port}" / "summary.json"
    wait_for(path.exists, 30, f"summary of port {port}")
    return json.loads(path.read_text())


def _events(rt: ControllerRuntime, kind: str) -> list[dict]:
    with rt.lock:
        return [e for e in rt.core.events if e["kind"] == kind]


def test_a_dead_ray_node_is_lost_and_its_buckets_go_to_live_ports(
        trace_model, work, cleanup, local_ray):
    tr, model = trace_model
    srv = P4RuntimeServer(pl.Pipeline(), 0, None, "127.0.0.1:0")
    srv.start()
    cleanup.append(srv.stop)
    local_ray.add("nf3", [5])  # a node of this test's own, killed below
    cleanup.append(lambda: "nf3" in local_ray.nodes and local_ray.remove("nf3"))
    cfg = config_from_dict(system_config(
        srv.grpc_addr, work, model, [{"name": "nf1", "ports": [2], "cores": 8},
                                     {"name": "nf3", "ports": [5], "cores": 8}],
        nf={"fe_initial": 2}, scaling={"period": 0.1, "adopt_grace": 20.0}), "<faults>")
    rt = ControllerRuntime(cfg, TOKEN)
    cleanup.append(lambda: rt.close(stop_bricks=True))
    rt.start()
    wait_for(lambda: {"dec-2/0", "dec-5/0"} <= {b["id"] for b in rt.status()["bricks"]
                                                if b["packets_in"] >= 0}, 60, "both graphs")
    assert rt.manager.plan.replica_ports == (2, 5)
    drv = Driver(srv, tr, {2: brick_dir(work, "nf1"), 5: brick_dir(work, "nf3")},
                 linger_ms=0)
    cleanup.append(drv.close)
    drv.send(N // 3)
    wait_for(lambda: rt.core.bricks["fq-5/0"].load.get("packets_in", 0) > 0, 30,
             "port 5 to take frames")

    local_ray.remove("nf3")  # its raylet and workers killed: the host is gone
    killed = time.monotonic()  # (removal returns once they are)
    lost = wait_for(lambda: _events(rt, "host_lost"), 10, "the host to be lost")
    # Ray's health checks (3 x 0.5 s) and one watch round; the live host stays
    assert [e["host"] for e in lost] == ["nf3"] and lost[0]["reason"] == "Ray node dead"
    assert lost[0]["t"] - killed < 3.0, lost
    print(f"node death seen {lost[0]['t'] - killed:.2f} s after its processes were killed")
    wait_for(lambda: rt.manager.plan.replica_ports == (2,), 10, "port 5's buckets to move")
    assert (rt.manager.owners == 2).all()
    state_lost = [e for e in _events(rt, "state_lost") if e.get("port") == 5]
    assert state_lost and state_lost[0]["reason"] == "host lost"
    moved = wait_for(lambda: _events(rt, "state_moved"), 10, "the move record")[0]
    assert moved["lost_buckets"] > 0  # no state transfer from a dead host: counted
    assert rt.core.counters["hosts_lost"] == 1
    assert rt.core.counters["state_lost_buckets"] == moved["lost_buckets"]

    before5 = drv.sent[5]
    drv.send(N)  # the rest of the trace: all of it to the live port
    assert drv.sent[5] == before5 and drv.dropped == 0
    wait_for(lambda: rt.core.bricks["fq-2/0"].load.get("packets_in", 0) == drv.sent[2], 30,
             "port 2 to take every frame sent to it")
    assert rt.status()["counters"]["hosts_lost"] == 1
    drv.end([2])
    s = _summary(work, 2)
    assert s["lost_batches"] == 0


def test_controller_restart_adopts_the_switch_and_the_bricks_without_writes(
        trace_model, work, cleanup, local_ray):
    """The controller is a process of its own on the Ray cluster: SIGKILL it, traffic
    goes on through the detached brick actors, and a new controller adopts the
    switch (no write) and the running actors (no restart)."""
    import ray

    from lego.control.ray_bricks import brick_actor_name

    tr, model = trace_model
    srv = P4RuntimeServer(pl.Pipeline(), 0, None, "127.0.0.1:0")
    srv.start()
    cleanup.append(srv.stop)
    bind = f"127.0.0.1:{free_tcp_port()}"
    data = system_config(srv.grpc_addr, work, model,
                         [{"name": "nf1", "ports": [2, 3], "cores": 8}],
                         northbound={"bind": bind}, scaling={"adopt_grace": 0.2})
    data["ray"]["address"] = local_ray.address
    first = controller_process(data, work, "controller-1")
    cleanup.append(first.kill)
    names = [f"{r}-2/0" for r in ("src", "fq", "fm", "uln", "dec")]

    def actor(brick: str):
        return ray.get_actor(brick_actor_name(brick), namespace=data["ray"]["namespace"])

    def load(brick: str) -> dict:
        return ray.get(actor(brick).load.remote(), timeout=10)

    def pids() -> dict[str, tuple[int, str]]:
        infos = ray.get([actor(b).info.remote() for b in names], timeout=10)
        return {i["id"]: (i["pid"], i["incarnation"]) for i in infos}

    cleanup.append(lambda: [ray.kill(actor(b), no_restart=True) for b in names])
    wait_for(lambda: load("dec-2/0")["state"] == "running", 60, "the graph of port 2")
    before = pids()
    drv = Driver(srv, tr, {2: brick_dir(work, "nf1")})
    cleanup.append(drv.close)
    drv.send(N // 3)
    wait_for(lambda: load("fq-2/0").get("packets_in") == drv.sent[2], 30, "the graph to run")

    first.kill(signal.SIGKILL)
    drv.send(2 * N // 3)  # traffic keeps flowing with no controller
    wait_for(lambda: load("fq-2/0").get("packets_in") == drv.sent[2], 30,
             "the bricks to take the frames sent without a controller")

    data["switch"]["election_id"] = 2
    data["scaling"]["adopt_grace"] = 10.0  # ends as soon as nf1's node is seen
    second = controller_process(data, work, "controller-2")
    cleanup.append(second.kill)
    ready = next(line for line in second.text().splitlines()
                 if line.startswith("controller: northbound on"))
    assert ready.endswith("0 updates written (assignment adopted)"), ready
    client = nb.controller_client(bind, TOKEN)
    cleanup.append(client.close)

    def status() -> dict:
        return json.loads(client.call("GetStatus", nb.pb.StatusRequest()).json)

    st = wait_for(lambda: (s := status())["hosts"] and s, 10, "nf1 to be seen")
    assert {b["id"] for b in st["bricks"]} == set(before)
    sync = [e for e in st["events"] if e["kind"] == "switch_sync"]
    assert sync and sync[0]["changes"] == 0 and sync[0]["adopted"]
    assert not any(e["kind"] in ("graph_start", "brick_restart") for e in st["events"])
    assert st["counters"]["bricks_restarted"] == 0
    assert pids() == before  # the same processes: no brick restarted

    drv.send(N)
    drv.end([2])
    s = _summary(work, 2)
    assert s["rows"] == N and s["lost_batches"] == 0  # zero loss across the restart


def test_switch_restart_gets_the_pipeline_and_tables_again(trace_model, work, cleanup,
                                                           local_ray):
    tr, model = trace_model
    port = free_tcp_port()
    srv = P4RuntimeServer(pl.Pipeline(), 0, None, f"127.0.0.1:{port}")
    srv.start()
    servers = [srv]
    cleanup.append(lambda: [s.stop() for s in servers])
    cfg = config_from_dict(system_config(srv.grpc_addr, work, model,
                                         [{"name": "nf1", "ports": [2, 3], "cores": 8}],
                                         nf={"fe_initial": 2}, scaling={"period": 0.1}),
                           "<faults>")
    rt = ControllerRuntime(cfg, TOKEN)
    cleanup.append(lambda: rt.close(stop_bricks=True))
    rt.start()
    wait_for(lambda: {"dec-2/0", "dec-3/0"} <= set(rt.engine.incarnations), 60, "the graphs")
    owners = rt.manager.owners.copy()
    drv = Driver(srv, tr, {p: brick_dir(work, "nf1") for p in (2, 3)})
    cleanup.append(drv.close)
    drv.send(N // 2)

    srv.stop()
    wait_for(lambda: _events(rt, "switch_recover"), 10, "the controller to see the switch go")
    new = P4RuntimeServer(pl.Pipeline(), 0, None, f"127.0.0.1:{port}")  # no pipeline
    new.start()
    servers.append(new)
    resync = wait_for(lambda: _events(rt, "switch_resync"), 30, "the re-sync")[0]
    assert resync["pipeline_pushed"] and resync["changes"] > 0
    assert (rt.manager.owners == owners).all()

    drv.restart_switch(new)
    sent = dict(drv.sent)
    drv.send(N)
    assert drv.dropped == 0 and all(drv.sent[p] > sent[p] for p in (2, 3))
    drv.end([2, 3])
    rows = sum(_summary(work, p)["rows"] for p in (2, 3))
    assert rows == N  # every primary reached its owner, before and after the restart
    assert all(_summary(work, p)["lost_batches"] == 0 for p in (2, 3))
