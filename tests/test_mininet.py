"""The system in Mininet: topology files, switch classes, traffic, and topology tests.

The first tests are pure (topology validation, argv builders, ramp cutting).
Classes marked ``mininet`` build the network (software target, southbound
controller, graph-file agents) through the declarative base in
:mod:`lego.topo.mn_testlib`; they need root and Mininet and are skipped, with
the reason, otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from lego.topo.mn_switch import pick_target, switch_argv
from lego.topo.mn_testlib import (
    TEST_AD,
    TEST_FM,
    LegoMininetTest,
    offline_scores,
    skip_reason,
    small_trace,
    wait_for,
)
from lego.topo.mn_topology import TopologyError, load_topology, topology_from_dict
from lego.topo.mn_traffic import parse_tcpreplay, ramp_segments, tcpreplay_argv

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
    assert t.replicas == 2 and [h.port for h in t.active] == [2, 3]
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


def test_ramp_segments_last_equally_long_and_cover_the_trace():
    segs = ramp_segments(10_000, [100, 200, 300, 200, 100])
    assert sum(s.count for s in segs) == 10_000
    assert [s.start for s in segs] == list(np.cumsum([0] + [s.count for s in segs[:-1]]))
    assert max(s.seconds for s in segs) - min(s.seconds for s in segs) < 0.02
    assert tcpreplay_argv("tg-eth0", "a.pcap", 300) == ["tcpreplay", "--intf1=tg-eth0",
                                                       "--pps=300", "a.pcap"]
    assert parse_tcpreplay("Actual: 1200 packets (3 bytes)\nFailed packets:  4\n") == (1200, 4)


# ---------------------------------------------------------------- Mininet

_why = skip_reason()
mininet = [pytest.mark.mininet, pytest.mark.slow,
           pytest.mark.skipif(_why is not None, reason=f"mininet: {_why}")]


@pytest.fixture(scope="module")
def trace_and_model(tmp_path_factory):
    from lego.bricks.kitsune_graph import train_model

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
    took = sum(b["packets_in"] for b in st["bricks"] if b["type"] == "packet_batching")
    return out, took, st["scores"]


class TestDetectionThroughSwitch(LegoMininetTest):
    """K=2 replicas score exactly what one offline instance scores on the frames the
    NF hosts received (switch-stamped, primaries in switch sequence order)."""

    REPLICAS = 2
    AGENTS = ("nf1", "nf2")
    RATES = (2000,)

    pytestmark = mininet

    def test_k_replicas_equal_one_offline_instance(self, system, trace_and_model):
        trace, model = trace_and_model
        recorders = [self.record(h) for h in self.AGENTS]
        r = self.replay(trace)
        r.wait(120)
        codes = system.wait_agents_done(60)
        for p, _path in recorders:
            p.send_signal(signal.SIGINT)
            p.wait(10)
        assert codes == {"nf1": 0, "nf2": 0}
        out, took, scored = _accounting(self)
        assert r.failed == 0
        assert out == took, "frames lost between the switch and the NF hosts"
        seq, score = self.host_scores()
        assert len(seq) == r.sent == scored
        ref_seq, ref_score = offline_scores([p for _, p in recorders], model)
        np.testing.assert_array_equal(seq, ref_seq)
        np.testing.assert_array_equal(score, ref_score)  # bit-identical
        assert sum(self.decision(h)["alerts"] for h in self.AGENTS) == \
            int((ref_score > self.decision("nf1")["threshold"]).sum())


class TestScaleUnderRamp(LegoMininetTest):
    """Scale out from 2 to 3 replicas during the ramp, then back in: every packet the
    switch sent reached a brick, and every primary was scored (no loss)."""

    REPLICAS = 2
    AGENTS = ("nf1", "nf2", "nf3")
    RATES = (800, 1600, 2400, 1600, 800)
    IDLE_S = 12.0

    pytestmark = mininet

    def test_scale_out_and_in_lose_nothing(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: r.current and r.current.segment.index >= 1, 30, "the second step")
        assert system.scale([2, 3, 4]), "no bucket moved to the new replica"
        assert "replicas [2, 3, 4], 0 updates written" in system.controller_line()
        wait_for(lambda: r.current and r.current.segment.index >= 3, 30, "the fourth step")
        assert system.scale([2, 3])
        r.wait(120)
        codes = system.wait_agents_done(60)
        assert all(c == 0 for c in codes.values()), codes
        out, took, scored = _accounting(self)
        assert out == took, f"switch sent {out} frames to NF ports, bricks took {took}"
        assert scored == r.sent == 6000
        st = system.status()
        nf3 = [b for b in st["bricks"] if b["brick"] == "nf3/source"][0]
        assert nf3["packets_in"] > 0, "the scaled-out replica received nothing"
        assert sum(self.decision(h)["lost_rows"] for h in self.AGENTS) == 0


class TestKillController(LegoMininetTest):
    """The controller dies mid-replay: traffic keeps flowing; a restarted controller
    re-reads the switch and rewrites nothing."""

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
        assert ", 0 updates written" in system.controller_line()
        r.wait(120)
        system.wait_agents_done(60)
        out, took, scored = _accounting(self)
        assert out == took and scored == r.sent


class TestKillBrick(LegoMininetTest):
    """A brick dies (SIGKILL): its agent reports it, the other host is unaffected, and
    the lost rows are accounted for, not silent."""

    RATES = (1500,)
    ALLOW_DEAD = ()

    pytestmark = mininet

    def test_dead_brick_is_reported_and_counted(self, system, trace_and_model):
        trace, _ = trace_and_model
        r = self.replay(trace)
        wait_for(lambda: _accounting(self)[2] > 300, 30, "scores")
        st = system.agent_dir("nf1") / "status.json"
        pid = None
        for proc in subprocess.run(["pgrep", "-f", "lego.bricks.brick_main"],
                                   capture_output=True, text=True).stdout.split():
            cmd = open(f"/proc/{proc}/cmdline").read()
            if "agents/nf1/uln-0.json" in cmd:
                pid = int(proc)
        assert pid is not None, "nf1's uln brick not found"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: any(e["kind"] == "died" for e in
                             json.loads(st.read_text()).get("events", [])), 10,
                 "the agent to report the death")
        r.wait(120)
        codes = system.wait_agents_done(60)
        assert codes["nf2"] == 0 and codes["nf1"] == 1
        nf2 = self.decision("nf2")
        assert nf2["lost_rows"] == 0 and nf2["rows"] > 0


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
        codes = system.wait_agents_done(60)
        assert all(c == 0 for c in codes.values()), codes


INSPECT = """
import json, sys
import p4runtime_sh.shell as sh
sh.setup(device_id=0, grpc_addr=sys.argv[1], election_id=(0, 1), verbose=False)
out = {}
try:
    t = sh.TableEntry("LegoIngress.split_group")
    t.is_default = True
    out["default"] = " ".join(str(e) for e in t.read())
    out["buckets"] = sum(1 for _ in sh.TableEntry("LegoIngress.bucket_owner").read())
    out["sessions"] = sorted(s.session_id for s in sh.CloneSessionEntry(0).read())
finally:
    sh.teardown()
print(json.dumps(out))
"""


class TestInspection(LegoMininetTest):
    """p4runtime-shell, connected as a backup (election id 0,1) while the controller
    holds primary, shows the granularity, the bucket table and the clone sessions."""

    AGENTS = ()

    pytestmark = mininet

    def test_p4runtime_shell_reads_the_running_switch(self, system):
        pytest.importorskip("p4runtime_sh", reason="pip install -e '.[dev]'")
        import sys

        proc = subprocess.run([sys.executable, "-c", INSPECT, system.topo.switch.grpc_addr],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert "set_groups" in out["default"]
        assert out["buckets"] == 1024
        assert out["sessions"] == [3, 4]  # session id = replica port + 1
