"""The controller's pure core with a fake clock and scripted load reports (fast)."""

from __future__ import annotations

import pytest

from lego.control.config import config_from_dict
from lego.control.core import ControllerCore
from lego.control.graph_specs import graph_specs
from lego.control.registry import GraphRec
from lego.errors import ConfigError

BASE = {
    "switch": {"traffic_ports": [1]},
    "northbound": {"token_file": "t"},
    "nf": {"model": "m.npz", "source": "feed"},
    "scaling": {"dwell": 1.0, "cooldown": 2.0, "high": 0.8, "low": 0.3, "standby": True,
                "fe": False, "host_timeout": 0.9},
    "hosts": [{"name": "nf1", "ports": [2, 3], "cores": 8}, {"name": "nf2", "ports": [4],
                                                              "cores": 8}],
}


def core_with_graph():
    core = ControllerCore(config_from_dict(BASE))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    cmds = core.start(0.0, [])
    assert [c.kind for c in cmds] == ["start_graph"] and cmds[0].port == 2
    return core


def beat(core, now, util, host="nf1"):
    """A heartbeat whose ULN replicas each report ``util`` busy since the last one."""
    loads = []
    for b in core.bricks.values():
        if b.host != host:
            continue
        busy = b.load.get("busy_s", 0.0) + (util * 0.25 if b.role == "uln" else 0.0)
        loads.append({"brick": b.id, "now": now, "busy_s": busy, "queue_depth": 0,
                      "packets_in": 0, "state": "running"})
    assert core.on_heartbeat(now, host, "inc", loads)
    return core.tick(now)


def routed(core, port=2):
    fm = core.bricks[f"fm-{port}/0"]
    return len(fm.spec["outlets"][0]["addresses"])


def test_uln_scales_out_after_the_dwell_by_promoting_the_standby_then_back_in():
    core = core_with_graph()
    now, out_at = 0.0, None
    for _ in range(12):  # 3 s overloaded
        now += 0.25
        cmds = beat(core, now, 0.95)
        if any(c.kind == "control" and c.args["cmd"]["op"] == "route" for c in cmds):
            out_at = out_at or now
            assert [c.args["cmd"]["op"] for c in cmds if c.kind == "control"] == \
                ["add_upstream", "route"]  # decision first, then the new route
            assert any(c.kind == "start" for c in cmds)  # a new warm standby
    assert out_at is not None and 1.0 <= out_at <= 1.5 and routed(core) == 2
    for _ in range(20):  # 5 s idle
        now += 0.25
        beat(core, now, 0.05)
    assert routed(core) == 1
    assert [e["kind"] for e in core.events if e["kind"].startswith("scale")] == \
        ["scale_out", "scale_in"]


def test_no_flapping_under_a_load_oscillating_around_the_watermark():
    core = core_with_graph()
    now = 0.0
    for i in range(80):  # 20 s: 0.85 / 0.75 alternating every round
        now += 0.25
        beat(core, now, 0.85 if i % 2 == 0 else 0.75)
    assert not [e for e in core.events if e["kind"].startswith("scale")]


def test_a_silent_host_is_lost_within_a_second_and_its_buckets_go_elsewhere():
    core = core_with_graph()
    beat(core, 0.25, 0.5)
    beat(core, 0.25, 0.5, host="nf2")
    cmds = []
    now = 0.25
    while not cmds:
        now += 0.05
        core.on_heartbeat(now, "nf2", "inc", [])
        cmds = core.tick(now)
    assert now - 0.25 <= 1.0
    kinds = [c.kind for c in cmds]
    assert kinds == ["start_graph", "switch_scale_out", "switch_scale_in"]
    assert cmds[0].host == "nf2" and cmds[2].port == 2 and not cmds[2].args["transfer"]
    assert core.counters["hosts_lost"] == 1
    assert any(e["kind"] == "state_lost" for e in core.events)


def test_a_drained_graph_leaves_what_it_took_and_scored_in_the_totals():
    """A graph scaled in is forgotten once drained; the frames its source took and
    the packets its decision scored stay in the status totals (the zero-loss check
    compares them with the switch's counters) and in its ``graph_gone`` event."""
    core = core_with_graph()

    def report(b, now):
        extra = {"scores": 700, "alerts": 3} if b.role == "dec" else {}
        return {"brick": b.id, "now": now, "busy_s": 0.0, "queue_depth": 0, "state": "done",
                "packets_in": 700, "extra": extra}

    assert core.on_heartbeat(1.0, "nf1", "inc", [report(b, 1.0) for b in core.bricks.values()])
    live = core.status(1.0)
    assert (live["taken"], live["scores"], live["alerts"]) == (700, 700, 3)
    core.graphs[2].draining = True
    core.tick(1.5)
    assert 2 not in core.graphs and not core.graph_bricks(2)
    gone = core.status(1.5)
    assert (gone["taken"], gone["scores"], gone["alerts"]) == (700, 700, 3)
    assert [e["taken"] for e in gone["events"] if e["kind"] == "graph_gone"] == [700]


def test_a_dead_brick_is_restarted_in_place_and_its_upstream_rerouted():
    core = core_with_graph()
    cmds = core.on_death(1.0, "nf1", "uln-2/0", -9)
    assert cmds[0].kind == "start" and cmds[0].args["specs"][0]["node"] == "uln-2"
    assert [c.args["cmd"]["op"] for c in cmds[1:]] == ["route"]
    assert cmds[1].args["brick"] == "fm-2/0"


def test_with_recovery_a_dead_brick_is_rebuilt_after_its_upstream_is_rerouted():
    """[recovery]: the keyed brick is restored from its checkpoint and its source's log
    (no state_lost); a worker after it gets its batches in flight again; the specs
    carry the logs."""
    cfg = config_from_dict({**BASE, "recovery": {"checkpoint_s": 1.0}})
    core = ControllerCore(cfg)
    core.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 8, "inc", [])
    cmds = core.start(0.0, [])
    specs = {s["node"]: s for s in cmds[0].args["specs"]}
    assert specs["src-2"]["replay_log_mib"] == 32.0 and specs["fq-2"]["output_log_mib"] == 16.0
    assert specs["fq-2"]["options"]["recover"] is True
    cmds = core.on_death(1.0, "nf1", "fq-2/0", -9)
    assert [c.kind for c in cmds] == ["start", "control", "recover"]
    assert cmds[1].args["brick"] == "src-2/0"
    assert cmds[2].args == {"brick": "fq-2/0", "source": "src-2/0", "sink": "dec-2/0",
                            "died": 1.0}
    assert not [e for e in core.events if e["kind"] == "state_lost"]
    cmds = core.on_death(2.0, "nf1", "uln-2/0", -9)
    assert [c.kind for c in cmds] == ["start", "control", "resend"]
    assert cmds[2].args == {"brick": "uln-2/0", "keyed": "fq-2/0", "sink": "dec-2/0",
                            "died": 2.0}
    assert {c.kind for c in core.on_death(3.0, "nf1", "dec-2/0", -9)} == {"start", "control"}
    plain = core_with_graph()
    assert [c.kind for c in plain.on_death(1.0, "nf1", "fq-2/0", -9)] == ["start", "control"]
    assert [e["reason"] for e in plain.events if e["kind"] == "state_lost"] == [
        "keyed brick died"]


def test_a_restarted_source_and_decision_leave_what_they_reported_in_the_totals():
    """A restarted brick's successor counts from 0: what the dead source took and
    the dead decision scored (as last reported) stays in the status totals."""
    core = core_with_graph()

    def report(b, n):
        extra = {"scores": n, "alerts": 1} if b.role == "dec" else {}
        return {"brick": b.id, "now": 1.0, "busy_s": 0.0, "queue_depth": 0,
                "state": "running", "packets_in": n, "extra": extra}

    core.on_heartbeat(1.0, "nf1", "inc", [report(b, 500) for b in core.bricks.values()])
    core.on_death(1.1, "nf1", "src-2/0", -9)
    core.on_death(1.1, "nf1", "dec-2/0", -9)
    core.on_heartbeat(1.2, "nf1", "inc", [report(b, 40 if b.role in ("src", "dec") else 500)
                                          for b in core.bricks.values()])
    st = core.status(1.2)
    assert (st["taken"], st["scores"], st["alerts"]) == (540, 540, 2)


def test_re_registration_rebuilds_the_registry_without_commands():
    core = core_with_graph()
    specs = graph_specs(core.cfg, 2, core.hosts["nf1"].workdir, 5, 1, 1)
    fresh = ControllerCore(config_from_dict(BASE))
    bricks = [{"id": f"{s['node']}/{s['serial']}", "type": s["type"], "spec": s, "pid": 1,
               "state": "running"} for s in specs]
    assert fresh.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 8, "inc", bricks) == []
    assert fresh.start(0.0, [2]) == []  # the graph runs: nothing restarted
    assert fresh.graphs[2].base == 5
    assert [b.id for b in fresh.bricks.values() if b.standby] == ["uln-2/1"]


@pytest.mark.parametrize("patch,match", [
    ({"nf": {"model": "m", "source": "nic"}}, "source"),
    ({"placement": {"mode": "cluster"}}, "mode"),
    ({"scaling": {"high": 0.2, "low": 0.5}}, "low < high"),
    ({"hosts": [{"name": "a", "ports": [1]}]}, "overlap"),
    ({"nf": {"model": "m", "semantics": "kitsune", "source": "feed"},
      "scaling": {"fe": True}}, "no exact split"),
    ({"bogus": {}}, "unknown section"),
    ({"switch": {"traffic_ports": [1], "colour": 1}}, "unknown key"),
    ({"graph": {"fuse": True}}, r"fuse: .*\[scaling\].stateless = false"),
])
def test_bad_configs_are_refused(patch, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({**BASE, **patch})


FE = {**BASE, "scaling": {**BASE["scaling"], "fe": True, "fe_standby": True, "stateless": False},
      "hosts": [{"name": "nf1", "ports": [2, 3], "cores": 8}, {"name": "nf2", "ports": [4],
                                                                "cores": 8}]}


def fq_beat(core, now, util, host="nf1"):
    """A heartbeat whose FE replicas (routed or standby) report ``util``."""
    loads = [{"brick": b.id, "now": now, "queue_depth": 0, "state": "running",
              "busy_s": b.load.get("busy_s", 0.0) + (util * 0.25 if b.role == "fq" else 0)}
             for b in core.bricks.values() if b.host == host]
    assert core.on_heartbeat(now, host, "inc", loads)
    return core.tick(now)


def test_fe_scale_out_promotes_the_warm_standby_graph_with_one_switch_command():
    core = ControllerCore(config_from_dict(FE))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    cmds = core.start(0.0, [2])
    assert [(c.kind, c.port, c.args["fe_standby"]) for c in cmds] == \
        [("start_graph", 2, False), ("start_graph", 3, True)]  # the standby: same host
    assert [g.port for g in core.live_graphs()] == [2] and core.graphs[3].standby
    now, out = 0.0, []
    while not out:
        now += 0.25
        assert now < 3
        core.on_heartbeat(now, "nf2", "inc", [])
        out = fq_beat(core, now, 0.95)
    assert out[0].kind == "switch_scale_out" and out[0].port == 3 and out[0].args["transfer"]
    assert not any(c.kind == "start_graph" and c.port == 3 for c in out)  # warm: no start
    assert [(c.kind, c.port, c.host) for c in out[1:]] == [("start_graph", 4, "nf2")]
    assert out[1].args["fe_standby"]  # the next standby, on the host with a free port
    e = next(e for e in core.events if e["kind"] == "scale_out")
    assert e["warm"] and e["port"] == 3
    assert sorted(g.port for g in core.live_graphs()) == [2, 3]


def test_fe_policy_waits_for_a_state_move_and_cools_down_from_its_end():
    """A scale-in's move loads the replica that imports the state (seconds of busy
    CPU at a small quota): the FE policy judges nothing while a move is under way,
    and its cooldown and dwell start again when the move ends, so the import does
    not read as overload (a scale-out right after each scale-in)."""
    core = ControllerCore(config_from_dict(FE))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    core.start(0.0, [2])
    now, out = 0.0, []
    while not out:
        now += 0.25
        core.on_heartbeat(now, "nf2", "inc", [])
        out = fq_beat(core, now, 0.95)
    assert out[0].kind == "switch_scale_out" and core.switch_busy == 1
    for _ in range(24):  # 6 s of a move under way with both replicas saturated
        now += 0.25
        core.on_heartbeat(now, "nf2", "inc", [])
        assert not any(c.kind.startswith("switch_") for c in fq_beat(core, now, 0.99))
    assert [e["kind"] for e in core.events].count("scale_out") == 1
    core.on_switch_done(now, "switch_scale_out")
    done, cmds = now, []
    while not any(c.kind == "switch_scale_out" for c in cmds):
        now += 0.25
        assert now < done + 4
        core.on_heartbeat(now, "nf2", "inc", [])
        cmds = fq_beat(core, now, 0.99)
    cfg = core.cfg.scaling  # the next one: a cooldown after the move, not the decision
    assert now >= done + max(cfg["cooldown"], cfg["dwell"])


QUOTA = {**FE, "hosts": [{"name": "nf1", "ports": [2], "cores": 0.2},
                         {"name": "nf2", "ports": [3], "cores": 0.2}]}


def test_under_a_cpu_quota_the_hosts_cpu_drives_fe_scaling_not_the_feature_brick():
    """The graph's bricks share the host's quota: a ULN that eats it overloads the
    replica although the feature brick itself is mostly idle; idle CPU scales in."""
    core = ControllerCore(config_from_dict(QUOTA))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 0.2, "inc", [])
    cmds = core.start(0.0, [2])
    assert [(c.kind, c.host) for c in cmds] == [("start_graph", "nf1"), ("start_graph", "nf2")]
    now, cpu, out = 0.0, 0.0, []
    while not out:  # nf1 uses 0.19 of its 0.2 cores; its feature brick reports 10 % busy
        now += 0.25
        assert now < 3
        cpu += 0.19 * 0.25
        core.on_heartbeat(now, "nf2", "inc", [], (now, 0.0))
        assert core.on_heartbeat(now, "nf1", "inc", [
            {"brick": b.id, "now": now, "queue_depth": 0, "state": "running",
             "busy_s": b.load.get("busy_s", 0.0) + (0.1 * 0.25 if b.role == "fq" else 0)}
            for b in core.bricks.values() if b.host == "nf1"], (now, cpu))
        out = core.tick(now)
    assert core.hosts["nf1"].util == pytest.approx(0.95)
    assert out[0].kind == "switch_scale_out" and out[0].host == "nf2"
    e = next(e for e in core.events if e["kind"] == "scale_out")
    assert "utilisation 0.950 > 0.8" in e["reason"]
    core.on_switch_done(now, "switch_scale_out")  # the I/O moved the state
    # both hosts nearly idle now: one replica goes
    cpu2, out = 0.0, []
    while not any(c.kind == "switch_scale_in" for c in out):
        now += 0.25
        assert now < 12
        cpu, cpu2 = cpu + 0.01 * 0.25, cpu2 + 0.01 * 0.25
        core.on_heartbeat(now, "nf1", "inc", [], (now, cpu))
        core.on_heartbeat(now, "nf2", "inc", [], (now, cpu2))
        for b in core.bricks.values():
            b.load = b.load or {"now": now}
        out = core.tick(now)
    assert "utilisation 0.050 < " in next(e for e in core.events
                                         if e["kind"] == "scale_in")["reason"]


def test_a_lost_hosts_buckets_go_to_the_standby_when_no_other_port_is_live():
    core = ControllerCore(config_from_dict(FE))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    core.start(0.0, [4])  # nf2 owns every bucket; the standby is on nf1
    assert core.graphs[2].standby
    now, cmds = 0.0, []
    while not cmds:
        now += 0.1
        core.on_heartbeat(now, "nf1", "inc", [])
        cmds = core.tick(now)
    assert [(c.kind, c.port) for c in cmds][:2] == [("switch_scale_out", 2),
                                                   ("switch_scale_in", 4)]
    assert not cmds[0].args["transfer"] and not core.graphs[2].standby
    assert 4 not in core.graphs and core.counters["hosts_lost"] == 1


def test_with_the_frame_log_a_lost_hosts_port_is_rebuilt_on_the_standby():
    """[recovery].frame_log: a lost host's port goes to the warm standby with the
    command that rebuilds its state (recover_port), carrying what the dead
    decision reported written and the frames the dead source took; no state is
    reported lost by the core (the runtime reports the outcome)."""
    cfg = {**FE, "nf": {**FE["nf"], "source": "interface"},
           "recovery": {"checkpoint_s": 1.0, "frame_log": "ipc:///tmp/x.sock", "log_port": 9},
           "hosts": [{"name": "nf1", "ports": [2, 3], "interfaces": ["a", "b"], "cores": 8},
                     {"name": "nf2", "ports": [4], "interfaces": ["c"], "cores": 8}]}
    core = ControllerCore(config_from_dict(cfg))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    core.start(0.0, [4])
    core.on_heartbeat(0.1, "nf2", "inc", [
        {"brick": b.id, "now": 0.1, "busy_s": 0.0, "queue_depth": 0, "state": "running",
         "packets_in": 700, "extra": {"next_batch": 12, "scores": 600} if b.role == "dec"
         else {}} for b in core.bricks.values() if b.host == "nf2"])
    now, cmds = 0.1, []
    while not cmds:
        now += 0.1
        core.on_heartbeat(now, "nf1", "inc", [])
        cmds = core.tick(now)
    rec = [c for c in cmds if c.kind == "recover_port"]
    assert [(c.host, c.port) for c in rec] == [("nf1", 2)] and not core.graphs[2].standby
    assert rec[0].args["lost_port"] == 4 and rec[0].args["written_before"] == 12
    assert rec[0].args["taken"] == 700 and rec[0].args["source"] == "src-2/0"
    assert not [c for c in cmds if c.kind.startswith("switch_")]
    assert core.counters["retired_scores"] == 600  # what the dead decision wrote
    assert not [e for e in core.events if e["kind"] == "state_lost"]


def test_a_frame_log_needs_checkpoints_an_interface_source_and_a_port_of_its_own():
    base = {**FE, "nf": {**FE["nf"], "source": "interface"},
            "hosts": [{"name": "nf1", "ports": [2], "interfaces": ["a"], "cores": 8}]}
    log = {"frame_log": "ipc:///tmp/x.sock", "log_port": 9}
    config_from_dict({**base, "recovery": {"checkpoint_s": 1.0, **log}})
    for recovery, why in (({"checkpoint_s": 0.0, **log}, "needs checkpoints"),
                          ({"checkpoint_s": 1.0, "frame_log": "ipc:///x"}, "go together"),
                          ({"checkpoint_s": 1.0, **log, "log_port": 2}, "is an NF host"),
                          ({"checkpoint_s": 1.0, **log, "log_port": 1}, "traffic")):
        with pytest.raises(ConfigError, match=why):
            config_from_dict({**base, "recovery": recovery})
    with pytest.raises(ConfigError, match="interface source"):
        config_from_dict({**base, "nf": {**base["nf"], "source": "feed"},
                          "recovery": {"checkpoint_s": 1.0, **log}})


def test_a_graph_whose_host_joins_after_the_start_is_started_then():
    core = ControllerCore(config_from_dict(BASE))
    assert core.start(0.0, [2]) == [] and core.pending == {2}
    assert core.tick(0.1) == []
    core.on_host_joined(0.2, "nf1", "nf1:1", "/tmp/nf1", 8, "inc", [])
    cmds = core.tick(0.3)
    assert [(c.kind, c.port) for c in cmds] == [("start_graph", 2)] and not core.pending


def test_after_a_controller_restart_a_graph_on_a_port_without_buckets_is_the_standby():
    core = ControllerCore(config_from_dict(FE))
    core.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 8, "x", [])
    workdir = core.hosts["nf1"].workdir
    specs = graph_specs(core.cfg, 2, workdir, 0, 1, 1) + graph_specs(core.cfg, 3, workdir, 0, 1, 1)
    fresh = ControllerCore(config_from_dict(FE))
    bricks = [{"id": f"{s['node']}/{s['serial']}", "type": s["type"], "spec": s, "pid": 1,
               "state": "running"} for s in specs]
    fresh.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 8, "inc", bricks)
    fresh.mark_standby(0.0, [2])
    assert fresh.graphs[3].standby and not fresh.graphs[2].standby
    assert fresh.start(0.0, [2]) == []  # both run, and a standby exists: nothing started


REB = {**BASE, "nf": {**BASE["nf"], "fe_initial": 2},
       "scaling": {**BASE["scaling"], "stateless": False, "rebalance_s": 5.0,
                   "rebalance_tolerance": 0.2, "cooldown": 2.0}}


def core_with_two_replicas(patch=None):
    core = ControllerCore(config_from_dict({**REB, **(patch or {})}))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 8, "inc", [])
    assert [c.port for c in core.start(0.0, [2, 4])] == [2, 4]
    return core


def window_tick(core, now, loads, start=None):
    """Heartbeats from both hosts, a load window ending ``now``, then a round."""
    for h in ("nf1", "nf2"):
        core.on_heartbeat(now, h, "inc", [])
    core.on_bucket_loads(now - 2.0 if start is None else start, now, loads)
    return core.tick(now)


def test_a_heavy_source_pinning_one_replica_is_rebalanced_once_then_left_alone():
    core = core_with_two_replicas()
    now, issued = 0.0, []
    for _ in range(8):  # 2 s: a heavy source pins port 2
        now += 0.25
        issued += [c for c in window_tick(core, now, {2: 900.0, 4: 100.0})
                   if c.kind.startswith("switch_")]
    assert [(c.kind, c.port, c.host) for c in issued] == [("switch_rebalance", 2, "nf1")]
    assert issued[0].args["tolerance"] == 0.2
    e = next(e for e in core.events if e["kind"] == "rebalance")
    assert e["port"] == 2 and e["ratio"] == 1.8
    # under way: nothing more, however skewed the fresh windows look
    for _ in range(20):
        now += 0.25
        assert not window_tick(core, now, {2: 900.0, 4: 100.0})
    moved_at = now
    core.on_switch_done(now, "switch_rebalance", moved=3)
    # a window that began before the move ended is stale: no second move
    for _ in range(20):
        now += 0.25
        assert not window_tick(core, now, {2: 900.0, 4: 100.0}, start=moved_at - 0.1)
    # balanced since (within the tolerance): never again
    for _ in range(200):  # 50 s
        now += 0.25
        assert not window_tick(core, now, {2: 560.0, 4: 440.0}, start=max(moved_at, now - 2))
    assert sum(e["kind"] == "rebalance" for e in core.events) == 1


def test_rebalance_waits_for_scale_commands_and_the_cooldown_and_can_be_off():
    core = core_with_two_replicas()
    core.switch_busy = 1  # a scale-out issued, not done yet
    assert not window_tick(core, 1.0, {2: 900.0, 4: 0.0})
    core.on_switch_done(1.0, "switch_scale_out", moved=100)
    assert not window_tick(core, 2.5, {2: 900.0, 4: 0.0}, start=1.5)  # cooldown (2 s)
    cmds = window_tick(core, 3.5, {2: 900.0, 4: 0.0}, start=1.5)
    assert [c.kind for c in cmds] == ["switch_rebalance"]
    # one replica only, or a replica draining: nothing to even out
    core = core_with_two_replicas()
    core.graphs[4].draining = True
    assert not window_tick(core, 1.0, {2: 900.0, 4: 0.0})
    assert not window_tick(core, 7.0, {2: 900.0})
    off = core_with_two_replicas({"scaling": {**REB["scaling"], "rebalance_s": 0}})
    assert not window_tick(off, 1.0, {2: 900.0, 4: 0.0})


def full_host_core(mode):
    """Port 2's graph fills nf1 (2.5 cores: FE + ULN + the rest); nf2 has room."""
    cfg = {**BASE, "scaling": {**BASE["scaling"], "fe": True, "fe_standby": False,
                               "standby": False, "stateless": True, "rebalance_s": 0},
           "placement": {"mode": mode},
           "hosts": [{"name": "nf1", "ports": [2, 3], "cores": 2.5},
                     {"name": "nf2", "ports": [4], "cores": 8}]}
    core = ControllerCore(config_from_dict(cfg))
    core.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 2.5, "inc", [])
    core.on_host_joined(0.0, "nf2", "nf2:1", "/tmp/nf2", 8, "inc", [])
    assert [(c.kind, c.port) for c in core.start(0.0, [2])] == [("start_graph", 2)]
    return core


def overload_uln(core):
    """ULN of port 2 at 95 %, FE at 50 % (no FE decision), until something happens."""
    now = 0.0
    while True:
        now += 0.25
        assert now < 3
        core.on_heartbeat(now, "nf2", "inc", [])
        loads = [{"brick": b.id, "now": now, "queue_depth": 0, "state": "running",
                  "busy_s": b.load.get("busy_s", 0.0)
                  + {"uln": 0.95, "fq": 0.5}.get(b.role, 0.0) * 0.25}
                 for b in core.bricks.values() if b.host == "nf1"]
        core.on_heartbeat(now, "nf1", "inc", loads)
        cmds = core.tick(now)
        if cmds or any(e["kind"] == "no_capacity" for e in core.events):
            return cmds


def test_uln_overload_on_a_full_host_starts_a_whole_graph_elsewhere_in_graph_mode():
    core = full_host_core("graph")
    cmds = overload_uln(core)
    # in-host impossible (no core left): a new FE graph on nf2, given buckets by the switch
    assert [(c.kind, c.host, c.port) for c in cmds] == \
        [("start_graph", "nf2", 4), ("switch_scale_out", "nf2", 4)]
    assert cmds[1].args["transfer"] and not cmds[0].args["fe_standby"]
    out = next(e for e in core.events if e["kind"] == "scale_out")
    assert out["brick"] == "uln" and out["graph"] and out["host"] == "nf2"
    assert not [e for e in core.events if e["kind"] == "placement_fallback"]
    assert routed(core) == 1  # port 2's graph is unchanged


def test_uln_overload_on_a_full_host_starts_one_tcp_replica_elsewhere_in_brick_mode():
    from lego.control.graph_specs import tcp_port

    core = full_host_core("brick")
    cmds = overload_uln(core)
    dec_tcp = f"tcp://nf1:{tcp_port(2, 0)}"
    uln_tcp = f"tcp://nf2:{tcp_port(2, 1)}"
    # no graph start, no switch write: the decision binds tcp, the ULN starts on nf2,
    # the decision waits for one more end, the mapping brick routes to it
    assert [(c.kind, c.host, c.args.get("cmd", {}).get("op")) for c in cmds] == [
        ("control", "nf1", "bind"), ("start", "nf2", None), ("control", "nf1", "add_upstream"),
        ("control", "nf1", "route")]
    assert cmds[0].args == {"brick": "dec-2/0", "cmd": {"op": "bind", "address": dec_tcp}}
    (spec,) = cmds[1].args["specs"]
    assert spec["node"] == "uln-2" and spec["serial"] == 1 and spec["inlet"] == uln_tcp
    assert spec["outlets"][0]["addresses"] == [dec_tcp]
    assert spec["control"].startswith("ipc:///tmp/nf2/")  # nf2's own work directory
    route = cmds[3].args["cmd"]
    assert cmds[3].args["brick"] == "fm-2/0" and route["target"] == "uln-2"
    assert route["addresses"][-1] == uln_tcp and len(route["addresses"]) == 2
    assert routed(core) == 2 and core.bricks["uln-2/1"].host == "nf2"
    assert core.bricks["dec-2/0"].spec["binds"] == [dec_tcp]
    assert set(core.graphs) == {2}  # no graph started elsewhere
    out = next(e for e in core.events if e["kind"] == "scale_out")
    assert out["host"] == "nf2" and out["placement"] == "brick" and out["inlet"] == uln_tcp
    assert not [e for e in core.events if e["kind"] == "placement_fallback"]
    # a second one binds nothing more on the decision, and takes the next port
    now = max(e["t"] for e in core.events)
    more = core._uln_remote(now, core.graphs[2], "nf2", "test")
    assert [c.kind for c in more] == ["start", "control", "control"]
    assert more[0].args["specs"][0]["inlet"] == f"tcp://nf2:{tcp_port(2, 2)}"
    # scale-in retires the last (remote) one like a local one: an end marker via fm
    ulns = [b for b in core.graph_bricks(2, "uln") if not b.retired]
    victim = None
    t = now + 10
    while victim is None:
        t += 0.25
        assert t < now + 30
        for b in ulns:  # idle reports from every replica, nf2's too
            b.util, b.load = 0.0, {"now": t, "busy_s": 0.0}
        cmds = core._scale_uln(t, core.graphs[2])
        if cmds:
            victim = cmds[0].args["cmd"]["retire"]
    assert victim == [f"tcp://nf2:{tcp_port(2, 2)}"] and cmds[0].host == "nf1"
    # nf2 lost: its remaining remote ULN is routed around and counted as ended
    core.hosts["nf1"].last_seen, core.hosts["nf2"].last_seen = t, -100.0
    cmds = core._check_hosts(t)
    ops = [(c.args["brick"], c.args["cmd"]["op"]) for c in cmds if c.kind == "control"]
    assert ("fm-2/0", "route") in ops and ("dec-2/0", "upstream_dead") in ops
    assert uln_tcp not in core.bricks["fm-2/0"].spec["outlets"][0]["addresses"]
    assert routed(core) == 1 and 2 in core.graphs


def test_brick_mode_without_a_free_core_anywhere_falls_back_to_a_graph():
    core = full_host_core("brick")
    core.hosts["nf2"].cores = 0.5  # no core for a ULN on nf2 either
    cmds = overload_uln(core)
    (fb,) = [e for e in core.events if e["kind"] == "placement_fallback"]
    assert fb["target"] is None and fb["to"] == "graph"
    # a host's first graph fits whatever its quota: the graph gets all of it
    assert [(c.kind, c.host) for c in cmds] == [("start_graph", "nf2"),
                                                ("switch_scale_out", "nf2")]


def test_no_host_with_room_for_a_graph_is_reported():
    core = full_host_core("brick")
    core.hosts["nf2"].cores = 0.5
    core.graphs[9] = GraphRec(9, "nf2")  # nf2 already runs a graph: no room for another
    overload_uln(core)
    assert any(e["kind"] == "no_capacity" for e in core.events)


def test_uln_overload_with_room_in_host_stays_in_host_in_either_mode():
    for mode in ("graph", "brick"):
        core = full_host_core(mode)
        core.hosts["nf1"].cores = 8  # room now
        cmds = overload_uln(core)
        assert {c.host for c in cmds} == {"nf1"} and routed(core) == 2
        assert not any(c.kind.startswith("switch_") for c in cmds)
        assert not [e for e in core.events if e["kind"] == "placement_fallback"]


RESIZE = {**QUOTA, "scaling": {**QUOTA["scaling"], "resize": True, "quota_budget": 0.6,
                               "fe": False}}


def quota_host_at(core, now, cpu, util, cores):
    """nf1's heartbeat after ``util`` of its ``cores`` for 0.25 s; returns its new CPU."""
    cpu += util * cores * 0.25
    core.on_heartbeat(now, "nf2", "inc", [], (now, 0.0))
    assert core.on_heartbeat(now, "nf1", "inc", [], (now, cpu))
    return cpu


def resize_core():
    core = ControllerCore(config_from_dict(RESIZE))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 0.2, "inc", [])
    core.start(0.0, [2])
    return core


def rounds_until_commands(core, now, cpu, util, cores, deadline, heaviest=None):
    """Quarter-second rounds of nf1 at ``util`` (its heaviest bucket's load of 1,000
    given) until the core commands something: (now, cpu, commands)."""
    cmds = []
    while not cmds:
        now += 0.25
        assert now < deadline
        cpu = quota_host_at(core, now, cpu, util, cores)
        if heaviest is not None:
            core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: heaviest})
        cmds = core.tick(now)
    return now, cpu, cmds


def test_a_host_one_bucket_overloads_gets_a_larger_quota_then_its_own_back():
    """A key that cannot be split (one bucket holds 90 % of the replica's load) keeps
    the host over the watermark wherever it goes: its quota grows in place, within
    the budget, and returns to the host's own cores when the load is gone."""
    core = resize_core()
    now, cpu, cmds = rounds_until_commands(core, 0.0, 0.0, 0.98, 0.2, 3, heaviest=900.0)
    assert [(c.kind, c.host, c.args["cores"]) for c in cmds] == [("resize", "nf1", 0.4)]
    assert cmds[0].args["brick"] == "fq-2/0"
    e = next(e for e in core.events if e["kind"] == "scale_up")
    assert (e["cores_before"], e["cores"], e["host"]) == (0.2, 0.4, "nf1")
    assert "one bucket 90% of its load" in e["reason"]
    for _ in range(16):  # past dwell and cooldown: still one resize at a time
        now += 0.25
        cpu = quota_host_at(core, now, cpu, 0.98, 0.2)
        core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: 900.0})
        assert not core.tick(now)
    core.on_resized(now, "nf1", 0.4)
    assert core.hosts["nf1"].cores == 0.4 and core.hosts["nf1"].util == pytest.approx(0.49)
    # hot again: the budget (0.6 cores, nf2 holds 0.2) has no more room: said once
    for _ in range(28):
        now += 0.25
        cpu = quota_host_at(core, now, cpu, 0.98, 0.4)
        core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: 900.0})
        assert not core.tick(now)
    assert sum(e["kind"] == "no_capacity" for e in core.events) == 1
    # the load is gone: back to the host's own 0.2 cores, not lower
    now, cpu, cmds = rounds_until_commands(core, now, cpu, 0.05, 0.4, now + 4)
    assert [(c.kind, c.args["cores"]) for c in cmds] == [("resize", 0.2)]
    assert next(e for e in core.events if e["kind"] == "scale_down")["cores_before"] == 0.4


def test_a_move_raises_the_quotas_it_waits_on_within_the_budget_and_blocks_resizes():
    """While a state move waits on hosts (the old owners' backlogs, then the new
    owners' imports), they share what the quota budget leaves; the policy resizes
    none of them until each has its own quota back."""
    core = resize_core()  # budget 0.6 cores: nf1 and nf2 hold 0.2 each
    quota_host_at(core, 0.5, 0.0, 0.1, 0.2)  # their CPU read: both under a quota
    assert core.move_boost(["nf1"]) == {"nf1": 0.4}
    assert core.move_boost(["nf1"]) == {}  # under way already
    cpu = 0.0
    for i in range(16):  # hot with one bucket: no policy resize while it is boosted
        now = 1.0 + i * 0.25
        cpu = quota_host_at(core, now, cpu, 0.98, 0.4)
        core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: 900.0})
        assert not [c for c in core.tick(now) if c.kind == "resize"]
    assert core.hosts["nf1"].util > core.cfg.scaling["high"]  # it would be, unboosted
    core.on_resized(5.0, "nf1", 0.2)
    assert "nf1" not in core.resizing
    assert core.move_boost(["nf1", "nf2", "nf1"]) == {"nf1": 0.3, "nf2": 0.3}  # shared
    for h in ("nf1", "nf2"):
        core.on_resized(6.0, h, 0.2)
    core.hosts["nf2"].cores = 0.4  # a policy resize: no room left
    assert core.move_boost(["nf1"]) == {}
    off = ControllerCore(config_from_dict({**RESIZE, "scaling": {**RESIZE["scaling"],
                                                                 "resize": False}}))
    off.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 0.2, "inc", [])
    off.on_heartbeat(0.5, "nf1", "inc", [], (0.5, 0.01))
    # SCALING=off, or resize off: the quota stays
    assert off.hosts["nf1"].quota and off.move_boost(["nf1"]) == {}


def test_a_replica_one_bucket_holds_is_resized_not_scaled_out_while_the_budget_has_room():
    """With FE scaling on: a replica over the watermark because of one bucket gets a
    larger quota; no new replica (it could not take that bucket's load, and its
    state move would wait behind the saturated one). Without room in the budget,
    or with the load over many buckets, the scale-out happens as before."""
    def first_commands(share, budget):
        cfg = {**RESIZE, "scaling": {**RESIZE["scaling"], "fe": True, "fe_standby": True,
                                     "quota_budget": budget}}
        core = ControllerCore(config_from_dict(cfg))
        for h in ("nf1", "nf2"):
            core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 0.2, "inc", [])
        core.start(0.0, [2])
        now, cpu, kinds = 0.0, 0.0, []
        while now < 4 and not {"resize", "switch_scale_out"} & set(kinds):
            now += 0.25
            cpu = quota_host_at(core, now, cpu, 0.98, 0.2)
            core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: 1000.0 * share})
            fq_load = {"brick": "fq-2/0", "now": now, "queue_depth": 0, "state": "running",
                       "busy_s": 0.25 * now}
            core.on_heartbeat(now, "nf1", "inc", [fq_load], (now, cpu))
            kinds = [c.kind for c in core.tick(now)]
        return kinds

    assert "resize" in first_commands(0.9, 0.6)
    assert "switch_scale_out" not in first_commands(0.9, 0.6)
    assert "switch_scale_out" in first_commands(0.9, 0.4)  # nf2's 0.2 leaves no room
    assert "switch_scale_out" in first_commands(0.3, 0.6)  # many buckets: split them


def test_a_load_many_buckets_share_is_not_resized():
    """Over the watermark with no bucket dominant, moving buckets helps (FE scale-out
    and rebalance are the answer): the quota stays. A failed resize frees the host."""
    core = resize_core()
    now, cpu = 0.0, 0.0
    for _ in range(16):
        now += 0.25
        cpu = quota_host_at(core, now, cpu, 0.98, 0.2)
        core.on_bucket_loads(now - 2, now, {2: 1000.0}, {2: 40.0})
        assert not core.tick(now)
    now, cpu, cmds = rounds_until_commands(core, now, cpu, 0.98, 0.2, now + 4, heaviest=900.0)
    assert [c.kind for c in cmds] == ["resize"]  # once one bucket holds the load
    core.on_resized(now, "nf1", None)  # the write failed: the quota is what it was
    assert core.hosts["nf1"].cores == 0.2 and "nf1" not in core.resizing


def test_a_resized_host_scaled_in_gets_its_own_quota_back_before_its_graph_drains():
    core = ControllerCore(config_from_dict({**RESIZE, "scaling": {**RESIZE["scaling"],
                                                                   "fe": True}}))
    for h in ("nf1", "nf2"):
        core.on_host_joined(0.0, h, f"{h}:1", f"/tmp/{h}", 0.2, "inc", [])
    core.start(0.0, [2, 3])
    core.hosts["nf1"].cores = 0.4  # resized earlier
    now, cpu1, cpu2, cmds = 0.0, 0.0, 0.0, []
    while not cmds:
        now += 0.25
        assert now < 8
        cpu1, cpu2 = cpu1 + 0.02 * 0.4 * 0.25, cpu2 + 0.1 * 0.2 * 0.25
        core.on_heartbeat(now, "nf1", "inc", [], (now, cpu1))
        core.on_heartbeat(now, "nf2", "inc", [], (now, cpu2))
        for b in core.bricks.values():
            b.load = b.load or {"now": now}
        cmds = core.tick(now)
    assert [(c.kind, c.host) for c in cmds[:3]] == [
        ("resize", "nf1"), ("switch_scale_in", "nf1"), ("drain", "nf1")]
    assert cmds[0].args["cores"] == 0.2 and cmds[0].args["brick"] == "fq-2/0"


def test_a_fused_graph_is_one_process_whose_bricks_the_controller_still_knows():
    """With [graph].fuse each brick spec names the graph's process; the process's
    spec carries them (chain order, no logs: no hop leaves the process); its load
    splits by member so that the members' CPU adds up to the process's once."""
    from lego.control.graph_specs import fused_spec, member_specs
    from lego.control.ray_bricks import member_load

    cfg = config_from_dict({**BASE, "graph": {"fuse": True},
                            "scaling": {**BASE["scaling"], "standby": False, "stateless": False},
                            "recovery": {"checkpoint_s": 1.0}})
    specs = graph_specs(cfg, 3, "/tmp/nf1", 0, 1, 0)
    assert [s["node"] for s in specs] == ["src-3", "fq-3", "fm-3", "uln-3", "dec-3"]
    assert {s["group"] for s in specs} == {"replica-3"}
    assert not any(s.get("replay_log_mib") or s.get("output_log_mib") for s in specs)
    proc = fused_spec(specs, "/tmp/nf1")
    assert proc["node"] == "replica-3" and proc["type"] == "chain" and proc["inlet"] is None
    assert proc["options"]["nf"] == "kitsune" and member_specs(proc) == specs
    assert member_specs(specs[0]) == []
    load = {"brick": "replica-3/0", "cpu_s": 1.0, "pps": 900.0, "busy_s": 0.4, "now": 5.0,
            "stages_cpu_s": {"logic": 0.8}, "extra": {"members": {
                "src-3": {"cpu_s": 0.1, "packets_in": 900}, "fq-3": {"cpu_s": 0.3,
                                                                       "packets_in": 900},
                "dec-3": {"cpu_s": 0.2, "packets_in": 450}}}}
    src = member_load(load, "src-3/0")  # the head: the first member
    fq = member_load(load, "fq-3/0")
    dec = member_load(load, "dec-3/0")
    assert (src["brick"], src["packets_in"], fq["packets_in"]) == ("src-3/0", 900, 900)
    assert abs(src["cpu_s"] + fq["cpu_s"] + dec["cpu_s"] - 1.0) < 1e-9  # the runtime: head's
    assert fq["cpu_s"] == fq["logic_cpu_s"] == 0.3 and fq["stages_cpu_s"] == {}
    assert src["stages_cpu_s"] == {"logic": 0.8} and dec["pps"] == 450.0
    assert fq["busy_s"] == 0.4  # one replica: its members are as busy as it
