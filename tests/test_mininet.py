"""The system in Mininet: topology files, switch classes, traffic, and topology tests.

The first tests are pure (topology validation, argv builders, ramp cutting).
Classes marked ``mininet`` build the network (software target, the real
controller ``lego controller run --config``, a Ray node in each NF host)
through the declarative base in
:mod:`tests.support.mininet`; they need root and Mininet and are skipped, with
the reason, otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lego.errors import ConfigError
from lego.experiments.elastic.record import offline_scores
from lego.experiments.elastic.run import SLA_MS as MAKE_RUN_SLA_MS
from lego.experiments.elastic.run import drained, scaled_back_to, scheduled_step
from lego.polling import wait_for
from lego.topo.pacer import due
from lego.topo.switches import pick_target, realtime_refused, switch_argv
from lego.topo.topology import TopologyError, load_topology, topology_from_dict
from lego.topo.traffic import (
    parse_pacer,
    parse_tcpreplay,
    ramp_segments,
    speedup_schedule,
    tcpreplay_argv,
)
from tests.support.mininet import (
    TEST_AD,
    TEST_FM,
    LegoMininetTest,
    skip_reason,
    small_trace,
)

# ---------------------------------------------------------------- pure


def _topo(**over) -> dict:
    base = {"switch": {"target": "soft"}, "traffic": {"pps": [100, 200, 100]},
            "nf": [{"name": "nf1", "port": 2, "mgmt_ip": "10.99.0.11"},
                   {"name": "nf2", "port": 3, "mgmt_ip": "10.99.0.12"}]}
    for k, v in over.items():
        base[k] = v
    return base


def test_default_topology_is_valid():
    t = load_topology()
    assert t.replicas == 1 and [h.port for h in t.active] == [2]
    assert t.management.northbound == "10.99.0.1:50051"
    assert "lgmgmt0" in t.interface_names() and "s1-eth1" in t.interface_names()


@pytest.mark.parametrize("over, message", [
    ({"switch": {"target": "ovs"}}, "switch.target: expected one of"),
    ({"switch": {"colour": 1}}, "unknown key 'colour'"),
    ({"switch": {"grpc_addr": "nowhere"}}, "switch.grpc_addr: expected HOST:PORT"),
    ({"traffic": {"pps": []}}, "traffic.pps: expected a list of packets/s > 0"),
    ({"traffic": {"pps": [1, 2], "profile": "fixed"}}, "a fixed profile takes one rate"),
    ({"traffic": {"pps": [10], "port": 2}}, "switch port 2 is given to two hosts"),
    ({"nf": []}, "expected at least one [[nf]]"),
    ({"nf": [{"name": "NF1", "port": 2, "mgmt_ip": "10.99.0.11"}]}, "nf[0].name"),
    ({"nf": [{"name": "nf1", "port": 2, "mgmt_ip": "10.1.0.1"}]}, "management network"),
    ({"nf": [{"name": "nf1", "port": 2, "mgmt_ip": "10.99.0.11", "cores": 0}]}, "cores"),
    ({"nf": [{"name": "nf1", "port": "2", "mgmt_ip": "10.99.0.11"}]}, "nf[0].port: expected int"),
    ({"nf_defaults": {"replicas": 3}}, "nf_defaults.replicas: expected 1..2"),
    ({"management": {"bridge": "br0"}}, "management.bridge"),
    ({"extra": {}}, "unknown table 'extra'"),
])
def test_topology_rules_each_fail(over, message):
    with pytest.raises(TopologyError) as exc:
        topology_from_dict(_topo(**over), "t.toml")
    assert message in str(exc.value) and str(exc.value).startswith("t.toml")


def test_switch_argv_is_simple_switch_grpcs():
    ports = {2: "s1-eth2", 1: "s1-eth1"}
    soft = switch_argv("soft", ports, 0, "127.0.0.1:9559")
    bmv2 = switch_argv("bmv2", ports, 0, "127.0.0.1:9559")
    assert bmv2[0] == "simple_switch_grpc" and soft[1:4] == ["-m", "lego", "switch"]
    for argv in (soft, bmv2):
        assert argv[argv.index("-i") + 1] == "1@s1-eth1"
        assert argv[-3:] == ["--", "--grpc-server-addr", "127.0.0.1:9559"]
        assert argv[argv.index("--device-id") + 1] == "0"
    assert pick_target("soft")[0] == "soft"
    rt = switch_argv("bmv2", ports, 0, "127.0.0.1:9559", rt_priority=10)
    assert rt[:4] == ["chrt", "-f", "10", "simple_switch_grpc"] and rt[4:] == bmv2[1:]
    assert switch_argv("soft", ports, 0, "127.0.0.1:9559", rt_priority=10) == soft


def test_realtime_refused_says_why_or_allows():
    why = realtime_refused(10)
    assert why is None or (isinstance(why, str) and why)
    assert realtime_refused(1000) is not None  # no such SCHED_FIFO priority


def test_ramp_segments_last_equally_long_and_cover_the_trace():
    segs = ramp_segments(10_000, [100, 200, 300, 200, 100])
    assert sum(s.count for s in segs) == 10_000
    assert [s.start for s in segs] == list(np.cumsum([0] + [s.count for s in segs[:-1]]))
    assert max(s.seconds for s in segs) - min(s.seconds for s in segs) < 0.02
    assert tcpreplay_argv("tg-eth0", "a.pcap", 300) == ["tcpreplay", "--intf1=tg-eth0",
                                                       "--pps=300", "a.pcap"]
    assert parse_tcpreplay("Actual: 1200 packets (3 bytes)\nFailed packets:  4\n") == (1200, 4)


def test_speedup_schedule_speeds_the_clock_up_per_step_not_per_packet():
    # a base rate of 100 pkt/s for 100 s, then a burst at 10x for 5 s
    base = np.arange(10_000) / 100.0
    burst = 100.0 + np.arange(5_000) / 1000.0
    ts = 1_700_000_000.0 + np.concatenate([base, burst])
    segs, times = speedup_schedule(ts, [200, 500, 400], step_s=10.0)
    assert [s.index for s in segs] == [0, 1, 2] and segs[0].start == 0
    # step 0 runs the clock 2x faster (20 s of trace), step 1 5x (50 s), step 2 4x (40 s)
    assert segs[0].count == 2000 and segs[1].count == 5000
    assert segs[0].pps == 200 and segs[1].pps == 500
    assert np.all(np.diff(times) >= 0) and times[0] == 0.0 and times[-1] <= 30.0
    # the burst keeps its 10x rate over the base traffic of the same step
    in_last = times[segs[2].start:]
    burst_times = in_last[-5000:]
    assert abs((burst_times[-1] - burst_times[0]) - 5.0 / 4) < 0.01
    assert segs[2].count == 3000 + 5000  # the trace ends within the last step
    with pytest.raises(ConfigError):
        speedup_schedule(ts, [100, 0], 1.0)


def test_the_replay_step_by_elapsed_time_and_the_pacers_due_frames():
    segs, _ = speedup_schedule(np.arange(1000) / 10.0, [20, 40], step_s=2.0)
    assert scheduled_step(segs, 2.0, 0.5).index == 0
    assert scheduled_step(segs, 2.0, 3.9).index == 1
    assert scheduled_step(segs, 2.0, 4.1) is None and scheduled_step(segs, 2.0, -1) is None
    rel = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 2.0])
    assert due(rel, 0, 0.0) == 2 and due(rel, 2, 0.99) == 3 and due(rel, 3, 1.0) == 5
    assert due(rel, 5, 1.5) == 5 and due(rel, 5, 9.0) == 6
    assert parse_pacer('{"sent": 12, "failed": 1, "seconds": 2.0}\n') == (12, 1)
    assert parse_pacer("Traceback ...\n") == (0, 0)


def test_the_drain_ends_when_all_is_scored_or_nothing_more_can_come():
    def st(scored, entered):
        return {"scores": scored, "switch": {"ports": {"1": {"in": entered, "out": 0}}}}

    assert drained(st(1000, 1000), 1000, 1, scaled_back=True, late=False) == ""
    assert drained(st(1000, 1000), 1000, 1, scaled_back=False, late=False) is None
    assert drained(st(1000, 1000), 1000, 1, scaled_back=False, late=True) == ""
    # 50 frames never reached the switch's ingress: no wait for the drain time
    why = drained(st(950, 950), 1000, 1, scaled_back=True, late=False)
    assert why.startswith("50 of 1,000 packets never entered the switch")
    assert drained(st(950, 950), 1000, 1, scaled_back=False, late=False) is None
    # frames that entered are still on their way: wait, until the drain time
    assert drained(st(900, 1000), 1000, 1, scaled_back=True, late=False) is None
    assert "100 of 1,000 packets still unscored" in drained(st(900, 1000), 1000, 1,
                                                            scaled_back=True, late=True)
    # an NF deciding per window: a frame counts once a replica took it (its last
    # windows are decided at the drain)
    taken = {**st(3, 1000), "taken": 1000}
    assert drained(taken, 1000, 1, scaled_back=True, late=False, per_packet=False) == ""
    assert drained(taken, 1000, 1, scaled_back=True, late=False) is None


def test_a_run_is_scaled_back_only_when_the_controller_and_the_switch_are():
    def st(replica_ports, graphs, dead=()):
        return {"switch": {"replica_ports": replica_ports},
                "hosts": [{"host": h, "alive": h not in dead} for h in ("nf1", "nf2", "nf3")],
                "graphs": [{"port": p, "host": h, "draining": d, "standby": s}
                           for p, h, d, s in graphs]}

    one = [(2, "nf1", False, False), (3, "nf2", False, True)]  # a warm standby
    assert scaled_back_to(st([2], one), 1)
    # a scale-out decided (the standby taken) before the switch writes its port
    taken = [(2, "nf1", False, False), (3, "nf2", False, False)]
    assert not scaled_back_to(st([2], taken), 1)
    # a scale-in: the victim drains; the switch still lists it until the move ends
    leaving = [(2, "nf1", True, False), (3, "nf2", False, False)]
    assert not scaled_back_to(st([2, 3], leaving), 1)
    assert scaled_back_to(st([3], leaving), 1)
    # a graph on a lost host owns nothing
    assert scaled_back_to(st([3], taken, dead=("nf1",)), 1)


# ---------------------------------------------------------------- Mininet

_why = skip_reason()
mininet = [pytest.mark.mininet, pytest.mark.slow,
           pytest.mark.skipif(_why is not None, reason=f"mininet: {_why}")]


@pytest.fixture(scope="module")
def trace_and_model(tmp_path_factory):
    from lego.nfs.kitsune.graph import train_model

    d = tmp_path_factory.mktemp("mn")
    trace = small_trace(d)
    return trace, train_model(trace, d / "model.npz", "lego", TEST_FM, TEST_AD)


@pytest.fixture
def system(request, tmp_path, trace_and_model):
    test = request.instance
    test.build(tmp_path, trace_and_model[1])
    yield test.system
    test.teardown_system()


def _accounting(test: LegoMininetTest) -> tuple[int, int, int]:
    """(switch out to NF ports, packets the NF sources took, primaries scored)."""
    st = test.system.status()
    ports = st["switch"]["ports"]
    out = sum(v["out"] for p, v in ports.items() if int(p) != 1)
    return out, st["taken"], st["scores"]


def _events(system, kind: str, **match) -> list[dict]:
    st = system.controller_status() or {}
    return [e for e in st.get("events", []) if e["kind"] == kind
            and all(e.get(k) == v for k, v in match.items())]


def _wait_recovered(system, timeout: float, what: str, **match) -> list[dict]:
    """The ``state_recovered`` events matching ``match``, waited for; on a timeout
    the controller's newest events say what happened instead."""
    return wait_for(
        lambda: _events(system, "state_recovered", **match), timeout,
        lambda: f"{what}; events " + str([
            (e["kind"], e.get("reason") or e.get("error") or e.get("brick"))
            for e in (system.controller_status() or {}).get("events", [])][-12:]))


def _taken(system, port: int) -> int:
    """The frames the source of ``port``'s graph took, live or drained and gone."""
    st = system.controller_status() or {}
    return sum(b["packets_in"] for b in st.get("bricks", []) if b["id"] == f"src-{port}/0") + \
        sum(e["taken"] for e in st.get("events", []) if e["kind"] == "graph_gone"
            and e["port"] == port)


def _wait_checkpoints(system, n: int, port: int, frames: int) -> None:
    """Until the controller took ``n`` checkpoints and ``port``'s source ``frames``."""
    wait_for(lambda: (system.controller_status() or {}).get("checkpoints", {}).get(
        "taken", 0) >= n and _taken(system, port) > frames, 30,
        f"{n} checkpoints and {frames} frames on port {port}")


def _brick_pid(system, host: str, brick_file: str) -> int:
    """The pid of the brick process started from ``brick_file`` on ``host``."""
    spec = str(system.brick_dir(host) / brick_file)
    pid = next((p for p in system.ray.node_pids(host)
                if spec in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")),
               None)
    assert pid is not None, f"{host}'s {brick_file} brick not found"
    return pid


def _port_out(system, port: int) -> int:
    return system.status()["switch"]["ports"].get(str(port), {}).get("out", 0)


def _scored_all(test: LegoMininetTest, r, timeout: float = 60) -> None:
    r.wait(120)
    assert r.failed == 0
    wait_for(lambda: _accounting(test)[2] >= r.sent, timeout, "every packet scored")


def _exact(test: LegoMininetTest, rec, model, sent: int, lost_ports: tuple[int, ...] = ()
           ) -> None:
    """Zero loss and scores bit-equal to one offline instance on the recorded stream
    (a lost host's decision wrote no summary: ``lost_ports``)."""
    system = test.system
    want = {h: _port_out(system, system.topo.nf(h).port) for h in test.AGENTS}
    # a graph scaled in counts in the controller's totals once it has drained: wait
    # for that (a lost frame never comes)
    acc: list[tuple[int, int, int]] = []

    def balanced() -> bool:
        acc.append(_accounting(test))
        return acc[-1][0] == acc[-1][1]

    wait_for(balanced, 30, lambda: f"switch sent {acc[-1][0]} frames to NF ports, bricks "
             f"took {acc[-1][1]}", poll=0.2)
    out, took, _ = acc[-1]
    system.finish()
    got = rec.stop(want)
    assert got == want, f"captures incomplete: {got} of {want}"
    assert out == took, f"switch sent {out} frames to NF ports, bricks took {took}"
    seq, score = test.host_scores()
    assert len(seq) == len(np.unique(seq)) == sent  # zero loss, each scored once
    ref_seq, ref_score = offline_scores(rec.paths, model)
    np.testing.assert_array_equal(seq, ref_seq)
    assert np.array_equal(score.view(np.uint64), ref_score.view(np.uint64))  # bit for bit
    for d in system.score_dirs():
        if d.name in {f"port-{p}" for p in lost_ports}:
            continue
        s = json.loads((d / "summary.json").read_text())
        assert s["lost_rows"] == 0 and s["lost_batches"] == 0, (d.name, s)


class TestDetectionThroughSwitch(LegoMininetTest):
    """K=2 replicas score exactly what one offline instance scores on the frames the
    NF hosts received (switch-stamped, primaries in switch sequence order)."""

    REPLICAS = 2
    AGENTS = ("nf1", "nf2")
    RATES = (2000,)

    pytestmark = mininet

    def test_k_replicas_equal_one_offline_instance(self, system, trace_and_model):
        from lego.experiments.elastic.record import Recorders

        trace, model = trace_and_model
        rec = Recorders(system, list(self.AGENTS), self.tmp / "rec")
        try:
            r = self.replay(trace)
            _scored_all(self, r)
            assert system.status()["switch"]["replica_ports"] == [2, 3]
            _exact(self, rec, model, r.sent)
        finally:
            rec.close()


class TestScaleUnderRamp(LegoMininetTest):
    """Under a real CPU quota (0.1 core per NF host) and the default watermarks, a
    step to 5,000 pkt/s overloads the single feature-extraction replica: the
    policy adds a switch port owner (exact state move) only then, and removes it
    once the load falls; nothing is lost and the scores equal one offline
    instance's on the same switch-stamped stream."""

    REPLICAS = 1
    AGENTS = ("nf1", "nf2", "nf3")
    RATES = (150, 5000, 5000, 150)
    CORES = 0.1
    SCALING = {"cooldown": 1.0, "max_replicas": 2}  # the default dwell (0.5 s), as make run
    # make run's SLA, so its sources' flush (SLA/8): at 20 ms a graph under 0.2 cores
    # spent its whole quota on per-batch wake-ups at 150 pkt/s (measured)
    SLA_MS = MAKE_RUN_SLA_MS

    pytestmark = mininet

    def test_policy_scales_out_on_real_overload_and_in_when_idle_losing_nothing(
            self, system, trace_and_model):
        from lego.experiments.elastic.record import Recorders

        _, model = trace_and_model
        trace = small_trace(self.tmp, 40_000)  # about 4 s per step
        rec = Recorders(system, list(self.AGENTS), self.tmp / "rec")
        try:
            assert all(h.cores < 1 for h in system.topo.nf_hosts)
            r = self.replay(trace)
            peak: dict[str, float] = {}  # the busiest each host was (failure evidence)

            def scaled_out() -> list[dict]:
                for h in (system.controller_status() or {}).get("hosts", []):
                    peak[h["host"]] = max(peak.get(h["host"], 0.0), h["util"])
                return _events(system, "scale_out", brick="fq")

            out = wait_for(scaled_out, 60, lambda: "the policy to scale feature extraction "
                           f"out; hosts' peak utilisation {peak}, replay at "
                           f"{r.current.segment.pps if r.current else None} pkt/s, events "
                           f"{[e['kind'] for e in system.status()['events']][-15:]}")
            util = float(out[0]["reason"].split()[1])
            assert util >= system.config_scaling()["high"], out[0]["reason"]  # 2 decimals
            assert r.current.segment.pps == 5000, f"scaled out before the overload: {out}"
            moved = wait_for(lambda: _events(system, "state_moved"), 30, "the state move")
            assert moved[0]["lost_buckets"] == 0
            _scored_all(self, r)
            back = wait_for(lambda: _events(system, "scale_in", brick="fq"), 30,
                            "the policy to scale feature extraction in")
            assert float(back[0]["reason"].split()[1]) < system.config_scaling()["low"]
            wait_for(lambda: len(system.status()["switch"]["replica_ports"]) == 1, 10,
                     "one owner port again")
            assert _taken(system, out[0]["port"]) > 0, "new owner got nothing"
            _exact(self, rec, model, r.sent)
        finally:
            rec.close()


@pytest.mark.mininet
@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=f"mininet: {_why}")
def test_make_run_scales_on_real_overload_holds_the_sla_and_detects_as_offline():
    """``lego run`` as ``make run`` runs it (default topology, 0.1-core quotas, the
    calibrated ramp): every scale-out at utilisation over the high watermark, a
    scale-in once the load falls, the SLA held at the peak, nothing lost, scores
    bit-identical to one offline instance, and live detection within 0.01 AUC and
    0.03 TPR at 1 % FPR of one offline instance on the trace."""
    import csv
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    results = Path(tempfile.mkdtemp(prefix="lgrun-"))  # ipc socket paths must stay short
    try:
        done = subprocess.run([sys.executable, "-m", "lego", "run", "--quiet", "--target", "soft",
                               "--results",
                               str(results)], capture_output=True, text=True, timeout=480)
        assert done.returncode == 0, done.stderr[-2000:]
        s = json.loads((results / "summary.json").read_text())
        with open(results / "timeline.csv") as f:
            steps = [(float(r["t"]), int(float(r["replicas"]))) for r in csv.DictReader(f)]
    finally:
        shutil.rmtree(results, ignore_errors=True)
    assert s["zero_loss"] and s["bit_identical_to_offline"], s
    assert s["failures"] == 0, s["faults"]  # a clean run: nothing died, failed or was lost
    for e in (e for e in s["scaling_events"] if e["replicas_after"] is not None):
        # the picture follows the switch's assignment
        seen = next((t for t, n in steps if t >= e["t"] and n == e["replicas_after"]), None)
        assert seen is not None and seen - e["t"] <= e["seconds"] + 4.0, (e, steps)
    outs = [e for e in s["scaling_events"] if e["event"] == "scale-out"]
    ins = [e for e in s["scaling_events"] if e["event"] == "scale-in"]
    assert outs and all(e["utilisation"] >= e["high"] for e in outs), outs
    assert ins and ins[-1]["t"] > outs[-1]["t"] and all(e["utilisation"] < e["low"]
                                                        for e in ins), s["scaling_events"]
    # The peak's share of seconds within the SLA, over 8 runs of this code on the
    # 2-core VM (2026-12-07): 1.0 in 7, 0.75 in one (worst p99 2.0 s, the machine not
    # saturated). The strict figure is the run's report; the bound here is one a
    # correct run has not missed, and SCALING=off does (25 % in the README's runs).
    assert s["seconds_within_sla_fraction_peak"] >= 0.5, {  # and was the machine saturated?
        k: s[k] for k in ("p99_latency_ms_peak", "sla_ms", "machine_cores_busy_replay",
                          "machine_cores_busy_normal_replay", "machine_saturated_s",
                          "machine_replay_s")}
    assert 0 < s["machine_cores_busy_replay"] <= s["machine_cores"], s
    detection = {k: s[k] for k in s if k.startswith(("auc_", "tpr_", "replay_lag_"))
                 or k == "pacer_scheduling"}  # the replay's timing is what can set them apart
    assert abs(s["auc_live"] - s["auc_offline_original"]) <= 0.01, detection
    assert abs(s["tpr_1pct_live"] - s["tpr_1pct_offline_original"]) <= 0.03, detection


@pytest.mark.mininet
@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=f"mininet: {_why}")
def test_make_run_of_lucid_splits_flows_by_the_switch_and_decides_as_one_instance():
    """``make run NF=lucid``: the symmetric split and the switch's window clock behind
    the same elastic run. Scale-outs on real overload move flows (not hosts) with
    their open fragments, nothing is lost, every fragment is decided once and
    bit-identically to one LUCID over the switch-stamped stream, windows close and
    are decided, and live detection stays with one offline LUCID on the trace."""
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    results = Path(tempfile.mkdtemp(prefix="lgluc-"))  # ipc socket paths must stay short
    try:
        done = subprocess.run([sys.executable, "-m", "lego", "run", "--quiet", "--nf", "lucid",
                               "--target", "soft", "--results", str(results)],
                              capture_output=True, text=True, timeout=480)
        assert done.returncode == 0, done.stderr[-2000:]
        s = json.loads((results / "summary.json").read_text())
    finally:
        shutil.rmtree(results, ignore_errors=True)
    assert s["decides_per"].startswith("fragment"), s
    assert s["zero_loss"] and s["bit_identical_to_offline"], s
    assert s["offline_reference_packets"] == s["packets_scored"] > 1000, s
    outs = [e for e in s["scaling_events"] if e["event"] == "scale-out"]
    ins = [e for e in s["scaling_events"] if e["event"] == "scale-in"]
    assert outs and all(e["utilisation"] >= e["high"] for e in outs), outs
    assert ins and ins[-1]["t"] > outs[-1]["t"], s["scaling_events"]
    assert sum(e["entries"] for e in s["scaling_events"]) > 0  # flows moved with state
    assert s["state_lost_buckets"] == 0
    assert s["windows_decided"] >= 2 and s["window_latency_ms_max"] > 0, s
    figures = {k: s[k] for k in s if k.startswith(("tpr_", "fpr_", "f1_"))}
    assert abs(s["tpr_live"] - s["tpr_offline_original"]) <= 0.02, figures
    assert abs(s["fpr_live"] - s["fpr_offline_original"]) <= 0.01, figures


class TestKillNode(LegoMininetTest):
    """An NF host's Ray node dies (its raylet, actors and bricks killed): Ray's
    health checks declare it dead, the controller gives its buckets to the live
    port and reports the lost state; traffic goes on."""

    REPLICAS = 2
    AGENTS = ("nf1", "nf2")
    RATES = (600,)  # 10 s of traffic: some left once Ray declared the node dead
    SCALING = {"high": 0.99, "low": 0.0, "dwell": 3600.0, "host_timeout": 0.6}

    pytestmark = mininet

    def test_dead_node_is_detected_and_its_buckets_reassigned(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _accounting(self)[2] > 1000, 30, "scores")
        killed = time.monotonic()  # the controller's event times: the same clock
        assert system.ray.kill_node("nf2") > 0
        lost = wait_for(lambda: _events(system, "host_lost"), 10, "host_lost")
        assert [e["host"] for e in lost] == ["nf2"] and lost[0]["reason"] == "Ray node dead"
        assert lost[0]["t"] - killed < 3.0, "detected later than 3 s after the kill"
        st_lost = _events(system, "state_lost", host="nf2")
        assert st_lost and st_lost[0]["reason"] == "host lost"
        wait_for(lambda: system.status()["switch"]["replica_ports"] == [2], 10,
                 "nf2's buckets given to port 2")
        before3, before_scores = _port_out(system, 3), _accounting(self)[2]
        wait_for(lambda: _accounting(self)[2] > before_scores + 500, 30, "traffic to go on")
        assert _port_out(system, 3) == before3, "the switch still sends to the dead host"
        assert system.controller_status()["counters"]["hosts_lost"] == 1
        r.wait(120)


class TestLoseNodeExactly(LegoMininetTest):
    """An NF host's Ray node dies mid-replay, with the switch's frame log on and a
    warm standby: the standby imports the lost port's last checkpoint, takes its
    buckets, and replays from the frame log what the lost port got since (what the
    dead host never read included); nothing is lost and the scores equal one
    offline instance's on the switch-stamped stream, bit for bit."""

    REPLICAS = 2
    AGENTS = ("nf1", "nf2", "nf3")  # nf3: the warm standby
    RATES = (1500,)
    # no policy move: a move makes the moved ports' checkpoints stale until the next
    SCALING = {"high": 0.99, "low": 0.0, "dwell": 3600.0, "host_timeout": 0.6,
               "rebalance_s": 0}

    pytestmark = mininet

    def test_lost_hosts_state_rebuilt_from_checkpoint_and_frame_log(
            self, system, trace_and_model):
        from lego.experiments.elastic.record import Recorders

        _, model = trace_and_model
        trace = small_trace(self.tmp, 24_000)
        rec = Recorders(system, list(self.AGENTS), self.tmp / "rec")
        try:
            r = self.replay(trace)
            _wait_checkpoints(system, 4, port=3, frames=1000)
            assert system.ray.kill_node("nf2") > 0
            rebuilt = _wait_recovered(system, 30, "nf2's state rebuilt", host="nf2")
            e = rebuilt[0]
            assert e["from_frame_log"] and e["to_port"] == 4 and e["entries"] > 0, e
            assert e["frames"] > 0 and e["buckets"] > 0, e
            assert not _events(system, "state_lost"), _events(system, "state_lost")
            assert system.status()["switch"]["replica_ports"] == [2, 4]
            _scored_all(self, r)
            assert not _events(system, "command_failed"), _events(system, "command_failed")
            _exact(self, rec, model, r.sent, lost_ports=(3,))
        finally:
            rec.close()


class TestKillController(LegoMininetTest):
    """The controller dies mid-replay: traffic keeps flowing; a restarted controller
    re-reads the switch and the agents' bricks and rewrites nothing."""

    RATES = (1500,)

    pytestmark = mininet

    def test_traffic_survives_and_restart_rewrites_nothing(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _accounting(self)[0] > 500, 30, "traffic through the switch")
        system.kill_controller()
        before = _accounting(self)[0]
        wait_for(lambda: _accounting(self)[0] > before + 500, 30, "traffic without controller")
        system.start_controller()
        assert ": 0 updates written" in system.controller_line()
        _scored_all(self, r)
        out, took, scored = _accounting(self)
        assert out == took and scored == r.sent
        assert not _events(system, "graph_start"), "the restart started graphs again"


class TestKillBrick(LegoMininetTest):
    """A brick dies (SIGKILL): its actor exits, Ray restarts it on the same node, the
    controller sees the restart and re-routes to it; the other host is unaffected."""

    RATES = (1500,)

    pytestmark = mininet

    def test_dead_brick_is_reported_and_restarted(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _accounting(self)[2] > 300, 30, "scores")
        pid = _brick_pid(system, "nf1", "uln-2-0.json")
        before = _accounting(self)[2]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        died = wait_for(lambda: _events(system, "brick_died", brick="uln-2/0"), 15, "the death")
        assert died[0]["t"] - killed < 10.0, "restart seen later than 10 s after the kill"
        wait_for(lambda: _events(system, "brick_restart", brick="uln-2/0"), 10, "the restart")
        assert died[0]["code"] == -signal.SIGKILL
        wait_for(lambda: _accounting(self)[2] > before + 300, 60, "scoring to go on")
        resent = wait_for(lambda: _events(system, "batches_resent", brick="uln-2/0"), 15,
                          "the batches in flight to it sent again")
        assert resent[0]["sender"] == "fq-2/0"
        r.wait(120)
        system.finish()
        for port in (2, 3):  # what was in flight to the dead one came again
            dec = json.loads((system.results_dir / f"port-{port}" / "summary.json").read_text())
            assert dec["lost_rows"] == 0 and dec["lost_batches"] == 0 and dec["rows"] > 0, (
                port, {k: dec[k] for k in ("lost", "duplicates", "late", "rows")})


class TestKillExtractor(LegoMininetTest):
    """The feature extractor dies (SIGKILL) early in a ramp: Ray restarts it, the
    controller restores its last checkpoint and its source replays what it sent
    since; the policy later scales out on real overload and back in, each move
    answered; nothing is lost and the scores equal one offline instance's on the
    switch-stamped stream, bit for bit."""

    REPLICAS = 1
    AGENTS = ("nf1", "nf2", "nf3")
    RATES = (300, 5000, 5000, 150)
    CORES = 0.1
    SCALING = {"cooldown": 1.0, "max_replicas": 2}
    SLA_MS = MAKE_RUN_SLA_MS

    pytestmark = mininet

    def test_state_rebuilt_from_checkpoint_and_log_then_scaling_is_exact(
            self, system, trace_and_model):
        from lego.experiments.elastic.record import Recorders

        _, model = trace_and_model
        trace = small_trace(self.tmp, 40_000)
        rec = Recorders(system, list(self.AGENTS), self.tmp / "rec")
        try:
            r = self.replay(trace)
            _wait_checkpoints(system, 2, port=2, frames=300)
            os.kill(_brick_pid(system, "nf1", "fq-2-0.json"), signal.SIGKILL)
            rebuilt = _wait_recovered(system, 60, "the extractor's state rebuilt",
                                      brick="fq-2/0")
            assert rebuilt[0]["entries"] > 0, rebuilt
            assert not _events(system, "state_lost"), _events(system, "state_lost")
            wait_for(lambda: _events(system, "scale_out", brick="fq"), 60,
                     "the policy to scale feature extraction out")
            _scored_all(self, r)
            wait_for(lambda: _events(system, "scale_in", brick="fq"), 30,
                     "the policy to scale feature extraction in")
            def both_moves() -> list[dict] | None:
                moved = _events(system, "state_moved")
                return moved if len(moved) >= 2 else None

            moved = wait_for(both_moves, 30, "the scale-in's state move")
            assert all(m["lost_buckets"] == 0 for m in moved), moved
            assert not _events(system, "command_failed"), _events(system, "command_failed")
            _exact(self, rec, model, r.sent)
        finally:
            rec.close()


class TestKillSource(LegoMininetTest):
    """The source brick dies (SIGKILL) while frames flow: Ray restarts it, and the
    new incarnation numbers its batches from the next epoch, so the decision
    scores them; numbered from 0 again, they were taken for duplicates of the dead
    one's batches and dropped until the count passed the old one's."""

    RATES = (1500,)

    pytestmark = mininet

    def test_a_restarted_source_is_scored_in_its_new_epoch(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _taken(system, 2) > 500, 30, "frames at nf1's source")
        os.kill(_brick_pid(system, "nf1", "src-2-0.json"), signal.SIGKILL)
        wait_for(lambda: _events(system, "brick_restart", brick="src-2/0"), 15, "the restart")
        restarted = time.time()
        r.wait(120)
        system.finish()
        out = system.results_dir / "port-2"
        dec = json.loads((out / "summary.json").read_text())
        assert dec["duplicates"] == 0, dec
        assert [e["epoch"] for e in dec["source_epochs"]] == [1], dec["source_epochs"]
        decided = np.loadtxt(out / "scores.csv", delimiter=",", skiprows=1, ndmin=2)[:, 4]
        assert (decided > restarted + 1.0).sum() > 300  # the new incarnation's, scored


class TestKillDecision(LegoMininetTest):
    """The decision brick dies (SIGKILL) while frames flow: Ray restarts it, and the
    new incarnation keeps the dead one's scores (flushed batch by batch, appended
    to) and takes up the batch numbering where its upstream is; from 0, it waited
    for a batch that never came and truncated the dead one's scores."""

    RATES = (600,)  # 10 s of traffic

    pytestmark = mininet

    def test_a_restarted_decision_keeps_the_scores_and_goes_on(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _taken(system, 2) > 500, 30, "frames at nf1's source")
        killed = time.time()
        os.kill(_brick_pid(system, "nf1", "dec-2-0.json"), signal.SIGKILL)
        wait_for(lambda: _events(system, "brick_restart", brick="dec-2/0"), 15, "the restart")
        r.wait(120)
        system.finish()
        out = system.results_dir / "port-2"
        dec = json.loads((out / "summary.json").read_text())
        assert dec["duplicates"] == 0 and dec["resumed_from"], dec
        table = np.loadtxt(out / "scores.csv", delimiter=",", skiprows=1, ndmin=2)
        seq, decided = table[:, 0], table[:, 4]
        assert len(np.unique(seq)) == len(seq)  # no row scored twice
        assert (decided < killed).sum() > 100  # the dead decision's scores are kept
        assert (decided > killed + 1.0).sum() > 300  # and the new one scores on


class TestBadTraffic(LegoMininetTest):
    """Malformed frames and a flood of tiny packets crash nothing and are counted."""

    RATES = (5000,)

    pytestmark = mininet

    def test_malformed_and_tiny_frames_are_counted(self, system, tmp_path):
        from lego.ext.packets import write_pcap

        eth = bytes.fromhex("020000000002020000000001")
        bad = [eth[:10], eth + b"\x08\x00" + b"\x45\x00\x00",  # runt, cut IPv4
               eth + b"\x08\x00" + bytes([0x4F]) + bytes(30),  # IHL past the end
               eth + b"\x86\xdd" + bytes(10),  # cut IPv6
               eth + b"\x88\xb5" + bytes(5)]  # a fake, cut shim
        tiny = [eth + b"\x08\x00" + bytes.fromhex("450000140000000040110000c0a80202c0a80203")
                + bytes(26)] * 3000
        frames = bad * 20 + tiny
        path = tmp_path / "bad.pcap"
        write_pcap(path, frames, 1.0 + np.arange(len(frames)) * 1e-4)
        r = self.replay(path)
        r.wait(60)
        wait_for(lambda: system.status()["switch"].get("ports", {}).get("1", {}).get("in", 0)
                 >= r.sent, 20, "the switch to count every frame")
        st = system.status()
        ev = st["switch"]["events"]
        assert st["switch"]["ports"]["1"]["in"] == r.sent
        assert ev["runt"] + ev["parser_error"] > 0, ev
        assert system.net.switch.alive()
        out = sum(v["out"] for p, v in st["switch"]["ports"].items() if p != "1")
        wait_for(lambda: _accounting(self)[1] >= out, 30, "the bricks to take every frame")
        assert all(system.ray.alive(h) for h in system.nf_host_names)
        assert not _events(system, "brick_died")


class TestInspection(LegoMininetTest):
    """p4runtime-shell, connected as a backup (election id 0,1) while the controller
    holds primary, shows the granularity, the bucket table and the clone sessions."""

    AGENTS = ("nf1", "nf2")

    pytestmark = mininet

    def test_p4runtime_shell_reads_the_running_switch(self, system):
        from tests.support.p4rt import shell_reads

        out = shell_reads(system.topo.switch.grpc_addr)
        assert out["default"] == ["LegoIngress.set_groups"]
        assert out["owners"] == 1024
        # session id = replica port + 1; the frame log's (its host on port 8)
        assert out["sessions"] == [3, 4, 510]
        assert out["write"] != "accepted"  # the controller is primary
