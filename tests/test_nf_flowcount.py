"""A second NF through the boundary, with no line changed outside its own module
(tests/support/flowcount.py): Algorithm 1 splits it, the split simulator and the
brick runtime (K = 3 keyed replicas) give one instance's scores, its keyed state
moves by bucket, and the controller builds its graph (~15 s: brick processes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lego import nfs
from lego.bricks.agent import BrickAgent
from lego.bricks.graph import graph_from_dict
from lego.bricks.wire import Message
from lego.control.config import config_from_dict
from lego.control.granularity import SplitGroup, Verdict
from lego.control.graph_specs import graph_specs, nf_chain
from lego.experiments.split_sim import GRANULARITIES, nf_split, plan_config, round_robin_owners
from lego.ext.packets import read_trace
from tests.support import flowcount

REPO = Path(__file__).resolve().parents[1]
TRAIN = 2000


@pytest.fixture(scope="module")
def trace_model(tmp_path_factory):
    from lego.topo.traffic_synth import generate, write_trace

    d = tmp_path_factory.mktemp("flowcount")
    pcap = d / "trace.pcap"
    write_trace(generate(seed=7, packets=6000), pcap)
    model = NF().train(pcap, d / "model.npz", {}, TRAIN)
    return pcap, model


def NF():  # noqa: N802 (the declaration, found by name as a config would)
    return nfs.get(flowcount.NAME)


def test_algorithm1_splits_it_on_the_source_host_without_mirrors():
    plan = NF().plan({})
    assert plan.verdict is Verdict.SPLIT and plan.primary is SplitGroup.SRC_IP
    assert plan.mirror is None and NF().splits_exactly({})


def test_k3_replicas_in_the_split_simulator_equal_one_instance(trace_model):
    pcap, model = trace_model
    batch = read_trace(pcap)
    one, _ = nf_split(batch, lambda: NF().instance(model, {}), None)
    assert not np.isnan(one).any()
    plan = plan_config(NF().plan({}))
    for k in (2, 3, 5):
        split, mirrored = nf_split(batch, lambda: NF().instance(model, {}), plan,
                                   round_robin_owners(k))
        assert np.array_equal(split, one), f"K={k}: scores differ"
        assert mirrored == 0.0
    # a split that cuts a host's state apart gives other answers: the check can fail
    dst_ip = next(c for c in GRANULARITIES if c.name == "SrcIP-DstIP")
    apart, _ = nf_split(batch, lambda: NF().instance(model, {}), dst_ip, round_robin_owners(3))
    assert not np.array_equal(apart, one)


def test_k3_keyed_replicas_in_the_brick_runtime_equal_one_instance(trace_model, tmp_path):
    pcap, model = trace_model
    out = tmp_path / "out"
    data = NF().graph(source={"type": "packet_batching",
                              "options": {"trace": str(pcap), "batch": 512}},
                      options=NF().resolve({"model": str(model)}),
                      replicas={"count": 3, "score": 2}, sink={"out": str(out)})
    graph = graph_from_dict(data, "<flowcount graph>")
    assert [n.replicas for n in graph.nodes.values()] == [1, 3, 2, 1]
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    agent = BrickAgent(graph, tmp_path / "w", env=env)
    try:
        agent.start()
        agent.go()
        agent.wait(60.0)
    finally:
        agent.stop()
    assert set(agent.exit_codes().values()) == {0}, agent.events
    got = np.loadtxt(out / "scores.csv", delimiter=",", skiprows=1, ndmin=2)
    seq, score = NF().reference([read_trace(pcap)], model, {})
    assert np.array_equal(got[:, 0].astype(np.int64), seq)
    assert np.array_equal(got[:, 1], score)


def _msg(batch, rows) -> Message:
    b = batch.take(rows)
    return Message(batch=0, arrays={f: getattr(b, f) for f in flowcount.FIELDS})


def test_its_keyed_state_moves_by_bucket_through_the_protocol(trace_model, tmp_path):
    """Half of the hosts' buckets move from replica a to b mid-trace, through the
    framework's move protocol (hold, prepare, export with drop, import): each goes
    on exactly, b's held rows released in order once the state is in."""
    pcap, _ = trace_model
    batch = read_trace(pcap)
    half = len(batch) // 2
    ref = flowcount.HostCounter({}, None).handle(_msg(batch, slice(None)))[0].arrays["x"]
    a, b = flowcount.HostCounter({}, None), flowcount.HostCounter({}, None)
    a.handle(_msg(batch, slice(0, half)))
    owned = np.unique(a.row_buckets(_msg(batch, slice(0, half)), np.arange(half))[0])
    moving = owned[::2]  # a strict subset of the buckets a holds state for
    keep = np.setdiff1d(np.arange(1024), moving)
    rest = np.arange(half, len(batch))
    to_b = np.isin(a.row_buckets(_msg(batch, rest), np.arange(len(rest)))[0], moving)
    assert 0 < to_b.sum() < len(rest)

    assert b.control({"op": "hold", "buckets": moving.tolist()}, 0)[0]["ok"]
    assert b.handle(_msg(batch, rest[to_b])) == []  # every row touches a moving bucket
    assert a.control({"op": "prepare"}, half)[0]["ok"]
    blob = tmp_path / "move.blob"
    reply, _ = a.control({"op": "export", "buckets": moving.tolist(), "exclude": [],
                          "keep": keep.tolist(), "after": half, "path": str(blob)}, half)
    hosts_before = len(a.state.hosts) + reply["dropped"]
    assert 0 < reply["entries"] == reply["dropped"] < hosts_before
    got_a = a.handle(_msg(batch, rest[~to_b]))[0].arrays["x"]
    reply, released = b.control({"op": "import", "paths": [str(blob)]}, 0)
    assert reply["imported"] == reply_entries(blob) and len(released) == 1
    assert np.array_equal(got_a, ref[rest[~to_b]])
    assert np.array_equal(released[0].arrays["x"], ref[rest[to_b]])  # exactly, in order


def reply_entries(blob: Path) -> int:
    with np.load(blob) as z:
        return len(z["keys"])


def test_the_controller_builds_its_graph_from_the_template(tmp_path):
    cfg = config_from_dict({
        "switch": {"traffic_ports": [1]}, "northbound": {"token_file": "t"},
        "nf": {"name": flowcount.NAME, "source": "feed", "model": "m.npz", "fe_initial": 2},
        "hosts": [{"name": "nf1", "ports": [2, 3], "cores": 2}]}, "<flowcount>", tmp_path)
    chain = nf_chain(cfg)
    assert (chain.source, chain.keyed, chain.router, chain.stateless, chain.sink) == \
        ("src", "count", "count", "score", "sink")
    specs = {f"{s['node']}/{s['serial']}": s for s in graph_specs(cfg, 2, str(tmp_path), 0,
                                                                   replicas=2, standby=0)}
    assert sorted(specs) == ["count-2/0", "score-2/0", "score-2/1", "sink-2/0", "src-2/0"]
    assert len(specs["count-2/0"]["outlets"][0]["addresses"]) == 2
    assert specs["sink-2/0"]["upstream"] == 2
