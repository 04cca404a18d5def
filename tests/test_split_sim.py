"""The split simulator: the lego semantics under Algorithm 1's mirror plan gives
exactly one instance's features and scores; the kitsune semantics cannot."""

from __future__ import annotations

import numpy as np
import pytest

from lego.experiments.split_sim import (
    GRANULARITIES,
    MIRROR_PLAN,
    round_robin_owners,
    split,
)
from lego.experiments.table2 import grace_for, table2, train_model
from lego.ext.packets import read_trace
from lego.nfs.kitsune.split import run_split
from lego.topo.traffic_batches import mixed_traffic

SHARED_TRACES = ["kitsune-reference/fx16k.tsv", "kitsune_mirai_first38363.tsv",
                 "kitsune_mirai_first2000.pcap", "netspot_wifi.pcap", "netspot_openflow.pcapng"]


def test_every_packet_is_primary_once_and_mirrored_only_across_replicas():
    batch = mixed_traffic(2000, seed=3)
    streams = split(batch, MIRROR_PLAN, round_robin_owners(4))
    pairs = zip(streams.index, streams.mirror, strict=True)
    primaries = np.concatenate([i[m == 0] for i, m in pairs])
    assert np.array_equal(np.sort(primaries), np.arange(len(batch)))
    for idx in streams.index:
        assert np.all(np.diff(idx) > 0)  # switch order kept
    one = split(batch, MIRROR_PLAN, round_robin_owners(1))
    assert not one.mirror[0].any() and one.mirrored_fraction == 0.0
    plain = split(batch, GRANULARITIES[1], round_robin_owners(4))
    assert plain.mirrored_fraction == 0.0


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from lego.topo.traffic_synth import generate, write_trace

    path = tmp_path_factory.mktemp("synth") / "synth.pcap"
    write_trace(generate(seed=5, packets=12000), path)
    return read_trace(path)


def _exact_for_all_k(batch, fm, ad):
    model = train_model(batch, "lego", fm, ad)
    ref_features, ref_scores, _ = run_split(batch, "lego", model, None)
    for k in range(2, 9):
        features, scores, mirrored = run_split(batch, "lego", model, MIRROR_PLAN,
                                               round_robin_owners(k))
        assert np.array_equal(features, ref_features), f"K={k}: features differ"
        assert np.array_equal(scores, ref_scores), f"K={k}: scores differ"
        assert mirrored > 0


def test_lego_mirror_plan_is_exact_on_generated_traffic():
    batch = mixed_traffic(4000, seed=11)
    _exact_for_all_k(batch, 200, 1500)


def test_lego_mirror_plan_is_exact_on_the_synthetic_trace(synthetic):
    fm, ad = grace_for(len(synthetic))
    _exact_for_all_k(synthetic, fm, ad)


@pytest.mark.parametrize("name", SHARED_TRACES)
def test_lego_mirror_plan_is_exact_on_real_traces(shared_data, name):
    batch = read_trace(shared_data / name)
    fm, ad = grace_for(len(batch))
    _exact_for_all_k(batch, fm, ad)


def test_table2_on_the_reference_trace(shared_data):
    ref = shared_data / "kitsune-reference"
    batch = read_trace(ref / "fx16k.tsv")
    labels = np.loadtxt(ref / "fx16k.labels", dtype=np.int8)
    table = table2(batch, labels, 3, 1000, 10000)
    rows = {(r.semantics, r.method.split(" (")[0]): r for r in table}
    plan = rows[("lego", MIRROR_PLAN.name)]
    assert plan.identical_features and plan.max_abs_deviation == 0 and plan.decision_flips == 0
    assert plan.mirrored_percent > 0
    # the kitsune semantics: close under SrcMAC-SrcIP and SrcIP, far under SrcIP-DstIP, Socket
    dev = {m: rows[("kitsune", m)].max_abs_deviation
           for m in ("SrcMAC-SrcIP", "SrcIP", "SrcIP-DstIP", "Socket")}
    assert max(dev["SrcMAC-SrcIP"], dev["SrcIP"]) * 10 < min(dev["SrcIP-DstIP"], dev["Socket"])
    assert not rows[("kitsune", MIRROR_PLAN.name)].identical_features
    assert rows[("kitsune", "one instance")].auc > 0.9


def _replica_of(streams, n: int) -> np.ndarray:
    """Replica receiving each packet (every packet is primary once, no mirrors here)."""
    where = np.full(n, -1)
    for r, idx in enumerate(streams.index):
        where[idx] = r
    assert (where >= 0).all()
    return where


def test_symmetric_socket_keeps_both_directions_of_a_flow_at_one_replica(synthetic):
    from lego.experiments.split_sim import SYMMETRIC, plan_config
    from lego.nfs import get

    b = synthetic
    n = len(b)
    src = [(int(f), a.tobytes(), int(p)) for f, a, p in zip(b.src_family, b.src_addr, b.sport,
                                                             strict=True)]
    dst = [(int(f), a.tobytes(), int(p)) for f, a, p in zip(b.dst_family, b.dst_addr, b.dport,
                                                             strict=True)]
    forward = list(zip(src, dst, b.proto.tolist(), strict=True))
    flow = [(p, min(s, d), max(s, d)) for s, d, p in forward]  # the 5-tuple up to direction
    directions: dict = {}
    for key, f in zip(flow, forward, strict=True):
        directions.setdefault(key, set()).add(f)
    both = {key for key, seen in directions.items() if len(seen) == 2}
    assert len(both) > 50  # the trace has many conversations seen both ways
    socket_sym = next(c for c in SYMMETRIC if c.name == "Socket (sym)")
    socket = next(c for c in GRANULARITIES if c.name == "Socket")
    assert plan_config(get("lucid").plan()).primary == socket_sym.primary
    for k in range(2, 9):
        owners = round_robin_owners(k)
        sym = split(b, socket_sym, owners)
        assert sym.mirrored_fraction == 0.0
        at, plain = _replica_of(sym, n), _replica_of(split(b, socket, owners), n)
        replicas, plain_replicas = {}, {}
        for i, key in enumerate(flow):
            replicas.setdefault(key, set()).add(at[i])
            plain_replicas.setdefault(key, set()).add(plain[i])
        assert all(len(r) == 1 for r in replicas.values()), f"K={k}"
        assert sum(len(plain_replicas[key]) > 1 for key in both) > 0, f"K={k}"
