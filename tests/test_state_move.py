"""West-east state moves of the ``lego`` feature extractor: owner buckets, the
export/import/drop round trip (kernel == spec, bitwise), the wire format, and the
move protocol (``lego.control.state_move``) against one instance over the whole
stream. Cheap: a few seconds (the spec runs only on a few thousand packets).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lego.control.policy_buckets import initial_assignment, rebalance
from lego.control.state_move import hold_mask, plan_move
from lego.errors import ConfigError
from lego.ext.legostats import (
    LegoExtractor,
    StateBlob,
    StateConflictError,
    StateFormatError,
    TableState,
    address_buckets,
    bucket_mask,
)
from lego.ext.legostats_spec import (
    OWNER_BUCKETS,
    STATE_LAYOUT,
    LegoSpecExtractor,
    address_bucket,
    key_tuple,
    key_words,
    owners,
)
from lego.nfs.kitsune.move_sim import simulate_moves
from lego.switch.parser import records_from_batch
from lego.switch.pipeline import GROUP_DSTIP, GROUP_SRCIP, N_BUCKETS, group_buckets
from lego.topo.traffic_batches import mixed_traffic

THIRD = np.arange(0, OWNER_BUCKETS, 3)
ALL = np.arange(OWNER_BUCKETS)


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint64)


@pytest.fixture(scope="module")
def traffic():
    return mixed_traffic(n=3000, seed=7)


@pytest.fixture(scope="module")
def trace(shared_data):
    from lego.ext.packets import read_trace

    return read_trace(shared_data / "kitsune_mirai_first38363.tsv")


def both(batch, seed: int = 3):
    """A kernel and a spec extractor that have both processed ``batch``."""
    k, s = LegoExtractor(hash_seed=seed), LegoSpecExtractor()
    k.process(batch)
    s.process(batch)
    return k, s


# ------------------------------------------------------------- owner bucket ----

def test_owner_bucket_is_the_switchs(traffic, trace):
    assert OWNER_BUCKETS == N_BUCKETS
    for batch in (traffic, trace):
        rec = records_from_batch(batch)
        src = address_buckets(batch.src_family, batch.src_addr)
        dst = address_buckets(batch.dst_family, batch.dst_addr)
        assert np.array_equal(src, group_buckets(rec, GROUP_SRCIP))
        assert np.array_equal(dst, group_buckets(rec, GROUP_DSTIP))
        for i in range(0, len(batch), 97):  # the spec's definition, per address
            assert address_bucket((int(batch.src_family[i]), batch.src_addr[i].tobytes())) \
                == src[i]
    rng = np.random.default_rng(0)  # every family byte, random address bytes
    fam = np.arange(256, dtype=np.uint8)
    addr = rng.integers(0, 256, (256, 16), dtype=np.uint8)
    want = [address_bucket((int(f), a.tobytes())) for f, a in zip(fam, addr, strict=True)]
    assert address_buckets(fam, addr).tolist() == want


def test_every_exported_entry_has_an_owner_in_the_buckets(traffic):
    k, _ = both(traffic)
    blob = k.export_state(THIRD)
    sel = set(THIRD.tolist())
    assert blob.n_entries > 0
    for name, t in blob.tables.items():
        for w in t.keys:
            key = key_tuple(name, w)
            assert key_words(name, key) == [int(x) for x in w]
            assert sel & {address_bucket(a) for a in owners(name, key)}


def test_key_words_round_trip_and_order(traffic):
    """Word order is the spec's tuple order (so both sort a blob the same way)."""
    _, s = both(traffic)
    for name, table in s.tables.items():
        keys = sorted(table)
        words = [key_words(name, key) for key in keys]
        assert words == sorted(words)
        assert [key_tuple(name, np.array(w, dtype=np.uint64)) for w in words] == keys


# ------------------------------------------------------- export/import/drop ----

def test_export_of_kernel_and_spec_is_bytewise_equal(traffic):
    k, s = both(traffic)
    for sel, exc in ((THIRD, ()), (ALL, ()), (THIRD, np.arange(1, OWNER_BUCKETS, 3)), ((), ())):
        a, b = k.export_state(sel, exclude=exc), s.export_state(sel, exclude=exc)
        assert a.entries() == b.entries()
        assert a.to_bytes() == b.to_bytes()
    assert k.export_state(ALL).n_entries == k.counters()["keys_live"] \
        == s.counters()["keys_live"]
    assert k.export_state(()).n_entries == 0


def test_round_trip_continues_bitwise(traffic):
    """Export everything at a batch boundary, import into fresh extractors (kernel
    and spec, crosswise), continue: rows equal one extractor over the stream."""
    head, tail = traffic.take(slice(0, 2000)), traffic.take(slice(2000, None))
    whole = LegoExtractor(hash_seed=1).process(traffic)[2000:]
    k, s = both(head)
    for blob in (k.export_state(ALL), s.export_state(ALL)):
        data = blob.to_bytes()
        for fresh in (LegoExtractor(hash_seed=9), LegoSpecExtractor()):
            res = fresh.import_state(StateBlob.from_bytes(data))
            assert res == (blob.n_entries, 0)
            assert np.array_equal(bits(fresh.process(tail)), bits(whole))


def test_split_export_import_drop_kernel_equals_spec(traffic):
    """Move a third of the buckets from one replica to an empty one, with the
    kernel and with the spec: the same entries move, the same are dropped (those
    none of whose owners stays), and what remains on each side agrees."""
    k, s = both(traffic)
    keep = np.setdiff1d(ALL, THIRD)
    left = []
    for ext in (k, s):
        blob = ext.export_state(THIRD)
        dst = type(ext)()
        assert dst.import_state(StateBlob.from_bytes(blob.to_bytes())) == (blob.n_entries, 0)
        dropped = ext.drop_state(keep)
        assert dropped == blob.n_entries - _pairs_kept(blob, keep) > 0
        c = ext.counters()
        assert (c["state_exported"], c["state_dropped"]) == (blob.n_entries, dropped)
        assert dst.counters()["state_imported"] == blob.n_entries
        assert dst.export_state(THIRD).to_bytes() == blob.to_bytes()
        assert dst.counters()["keys_live"] == blob.n_entries
        left.append(ext.export_state(ALL).to_bytes())
    assert left[0] == left[1]


def _pairs_kept(blob: StateBlob, keep) -> int:
    """Entries of ``blob`` with an owner bucket in ``keep`` (pairs across the cut)."""
    mask = bucket_mask(keep).astype(bool)
    return sum(any(mask[address_bucket(a)] for a in owners(name, key_tuple(name, w)))
               for name, t in blob.tables.items() for w in t.keys)


def test_import_of_an_identical_replicated_pair_is_skipped(traffic):
    k, s = both(traffic)
    blob = k.export_state(THIRD)
    for ext in (k, s):  # both already hold every entry: all identical
        res = ext.import_state(blob)
        assert res == (0, blob.n_entries)
        assert ext.counters()["state_skipped"] == blob.n_entries
        assert ext.counters()["state_conflicts"] == 0


def _altered(blob: StateBlob, table: str, row: int, col: int) -> StateBlob:
    tables = {n: TableState(t.keys.copy(), t.vals.copy(), t.flags.copy())
              for n, t in blob.tables.items()}
    tables[table].vals[row, col] = np.nextafter(tables[table].vals[row, col], np.inf)
    return StateBlob.build(blob.buckets, blob.evict_idle, tables)


def test_import_of_a_conflicting_entry_raises_and_imports_nothing(traffic):
    head = traffic.take(slice(0, 2000))
    k, s = both(head)
    blob = LegoExtractor(hash_seed=4)
    blob.process(traffic)  # same keys, other values, plus keys absent from k and s
    theirs = blob.export_state(ALL)
    bad = _altered(k.export_state(ALL), "socket", 3, 40)
    for ext in (k, s):
        before = ext.export_state(ALL).to_bytes()
        for other in (theirs, bad):
            with pytest.raises(StateConflictError, match="differ from this replica"):
                ext.import_state(other)
        assert ext.export_state(ALL).to_bytes() == before
        c = ext.counters()
        assert c["state_imported"] == 0 and c["state_conflicts"] > 0


def test_absent_side_of_a_pair_is_not_compared_and_exports_as_zero():
    """A pair whose reverse never sent anything: the kernel's words for that side
    are undefined (slots are reused); the export zeroes them, so kernel == spec."""
    b = mixed_traffic(n=500, seed=2)
    k, s = both(b)
    blob = k.export_state(ALL)
    ch = blob.tables["channel"]
    one_sided = ch.flags != 3
    assert one_sided.any()
    for side in (0, 1):
        absent = (ch.flags & (1 << side)) == 0
        assert not ch.vals[absent, 16 * side:16 * side + 16].any()
    assert blob.to_bytes() == s.export_state(ALL).to_bytes()


def test_option_mismatch_is_refused(traffic):
    k, _ = both(traffic.take(slice(0, 300)))
    blob = k.export_state(ALL)
    with pytest.raises(ConfigError, match="evict_idle"):
        LegoExtractor(hash_seed=1, evict_idle=1.0).import_state(blob)
    with pytest.raises(ConfigError, match="buckets: expected integers"):
        k.export_state([1024])
    with pytest.raises(ConfigError, match="bool mask"):
        k.drop_state(np.ones(5, dtype=bool))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 400),
       ops=st.lists(st.tuples(st.sampled_from(["export", "drop", "import", "process"]),
                              st.integers(0, 2**32 - 1)), min_size=1, max_size=8),
       evict=st.sampled_from([None, 0.05]))
def test_property_kernel_and_spec_agree_through_moves(seed, n, ops, evict):
    """Any sequence of exports, drops, imports (into the same replica: absent
    entries come back, present ones are skipped) and batches keeps the kernel and
    the spec in the same state, and their rows bitwise equal."""
    b = mixed_traffic(n=n, seed=seed, n_hosts=4, scan_packets=0)
    parts = list(b.split(max(1, len(b) // 4)))
    k = LegoExtractor(hash_seed=seed, evict_idle=evict, sweep_budget=3)
    s = LegoSpecExtractor(evict_idle=evict)
    saved = []
    for op, r in ops:
        mask = np.random.default_rng(r).random(OWNER_BUCKETS) < 0.5
        if op == "process" and parts:
            part = parts.pop(0)
            assert np.array_equal(bits(k.process(part)), bits(s.process(part)))
        elif op == "export":
            got = k.export_state(mask)
            if evict is None:
                assert got.to_bytes() == s.export_state(mask).to_bytes()
            saved.append(got)
        elif op == "drop":
            dropped = k.drop_state(mask)
            assert evict is not None or dropped == s.drop_state(mask)
            if evict is not None:
                s.drop_state(mask)
        elif op == "import" and saved and evict is None:
            blob = saved.pop()  # stale when packets ran since: then both refuse it
            res = []
            for ext in (k, s):
                try:
                    res.append(ext.import_state(blob))
                except StateConflictError:
                    res.append("conflict")
            assert res[0] == res[1]
    for part in parts:
        assert np.array_equal(bits(k.process(part)), bits(s.process(part)))
    if evict is None:
        assert k.export_state(ALL).to_bytes() == s.export_state(ALL).to_bytes()
        assert k.counters()["state_conflicts"] == s.counters()["state_conflicts"]


# -------------------------------------------------------------- wire format ----

def test_wire_format_round_trip_and_validation(traffic):
    k, _ = both(traffic)
    blob = k.export_state(THIRD)
    data = blob.to_bytes()
    back = StateBlob.from_bytes(data)
    assert back.to_bytes() == data and back.entries() == blob.entries()
    assert np.array_equal(back.buckets, bucket_mask(THIRD).astype(bool))
    assert StateBlob.from_bytes(bytearray(b"x" + data)[1:]).to_bytes() == data  # unaligned
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 1
    cases = [(data[:-1], "CRC-32|length"), (bytes(corrupt), "CRC-32"), (data[:10], "length"),
             (b"XXXX" + data[4:], "magic"), (data[:4] + b"\x02\x00" + data[6:], "version")]
    for bad, match in cases:
        with pytest.raises(StateFormatError, match=match):
            StateBlob.from_bytes(bad)
    t = blob.tables
    unsorted = dict(t, socket=TableState(t["socket"].keys[::-1].copy(),
                                         t["socket"].vals[::-1].copy(),
                                         t["socket"].flags[::-1].copy()))
    with pytest.raises(StateFormatError, match="strictly increasing"):
        StateBlob(blob.buckets, 0.0, unsorted).validate()
    badflags = dict(t, H=TableState(t["H"].keys, t["H"].vals, t["H"].flags + 1))
    with pytest.raises(StateFormatError, match="flags"):
        StateBlob(blob.buckets, 0.0, badflags).validate()
    with pytest.raises(StateFormatError, match="expected a StateBlob"):
        k.import_state(data)
    size = 24 + OWNER_BUCKETS // 8 + 4  # header, bucket bitmap, CRC
    for name, (kw, vw) in STATE_LAYOUT.items():  # raw words, flags, no other framing
        n = blob.entries()[name]
        size += 8 + n * (kw + vw) * 8 + n + (-n % 8)
    assert len(data) == size


# ------------------------------------------------------------------- memory ----

def test_drop_frees_memory_and_cycles_do_not_leak(trace):
    part = trace.take(slice(0, 20_000))
    ext = LegoExtractor(hash_seed=1)
    ext.process(part)
    full = ext.memory_bytes()
    blob = ext.export_state(ALL)
    assert ext.drop_state(()) == blob.n_entries
    assert ext.counters()["keys_live"] == 0
    empty = ext.memory_bytes()
    assert empty < full / 10
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(6):
            ext.import_state(blob)
            ext.drop_state(np.arange(0, OWNER_BUCKETS, 2))
            ext.drop_state(())
            sizes.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert max(sizes[2:]) <= sizes[1] + 64 * 1024, sizes
    assert ext.memory_bytes() == empty
    c = ext.counters()
    assert c["keys_live"] == (c["keys_created"] + c["state_imported"] - c["keys_evicted"]
                              - c["state_dropped"]) == 0
    ext.import_state(blob)  # the emptied tables are reusable
    assert ext.export_state(ALL).to_bytes() == blob.to_bytes()


# --------------------------------------------------------------- the protocol ----

def test_plan_and_hold_rules():
    old = np.zeros(OWNER_BUCKETS, dtype=np.int64)
    old[1::2] = 1
    new = old.copy()
    new[:8] = 2  # 0 -> 2 and 1 -> 2
    new[8:10] = 1 - old[8:10]  # swap
    plan = plan_move(old, new)
    assert [(t.src, t.dst, int(t.buckets.sum())) for t in plan] == \
        [(0, 1, 1), (0, 2, 4), (1, 0, 1), (1, 2, 4)]
    assert all(np.array_equal(t.exclude, old == t.dst) for t in plan)
    incoming = np.zeros(OWNER_BUCKETS, dtype=bool)
    incoming[5] = True
    src = np.array([7, 5, 9, 7, 3])
    dst = np.array([9, 7, 3, 4, 4])
    mirror = np.array([0, 0, 0, 0, 1], dtype=np.uint8)
    # 5 -> 7 is held (moving source) and blocks 7; then 7 -> 4 is held; 9 -> 3 is not
    assert hold_mask(src, dst, mirror, incoming).tolist() == [False, True, False, True, True]
    assert hold_mask(src, dst, mirror, incoming, "routing").tolist() == \
        [False, True, False, False, False]
    assert hold_mask(src, dst, mirror, incoming, "barrier").all()
    with pytest.raises(ConfigError, match="hold rule"):
        hold_mask(src, dst, mirror, incoming, "none")


def schedule(batch) -> list[tuple[int, np.ndarray]]:
    """Five moves: scale-out 1 -> 3; rebalance (the heaviest bucket moves, and a
    swap in both directions at once); scale-in 3 -> 2 with two sources feeding one
    destination; scale-out 2 -> 3 by measured load; scale-in 3 -> 1."""
    n = len(batch)
    src = address_buckets(batch.src_family, batch.src_addr)

    def loads(lo: int, hi: int) -> np.ndarray:
        return np.bincount(src[lo:hi], minlength=OWNER_BUCKETS).astype(float)

    m = [n * i // 6 for i in range(1, 6)]
    out1 = initial_assignment(OWNER_BUCKETS, [0, 1, 2])
    reb = out1.copy()
    heavy = int(np.argmax(loads(0, m[1])))
    reb[heavy] = (out1[heavy] + 1) % 3
    swap = np.flatnonzero(np.isin(out1, (1, 2)))[::7]
    reb[swap] = 3 - out1[swap]
    into = reb.copy()
    into[reb == 2] = 0
    into[np.flatnonzero(reb == 1)[::3]] = 0
    out2 = rebalance(into, loads(m[2], m[3]) + 1.0, [0, 1, 2])
    return [(m[0], out1), (m[1], reb), (m[2], into), (m[3], out2),
            (m[4], np.zeros(OWNER_BUCKETS, dtype=np.int64))]


def check_exact(run, whole: np.ndarray) -> None:
    assert run.packets_lost == 0 and run.packets_duplicated == 0
    assert np.array_equal(run.primary_count, np.ones(len(whole), dtype=np.int64))
    assert np.array_equal(bits(run.features), bits(whole))


def check_moves(run, n_moves: int = 5) -> None:
    assert len(run.moves) == n_moves
    kinds = [(len(s.replicas_before), len(s.replicas_after)) for s in run.moves]
    assert kinds == [(1, 3), (3, 3), (3, 2), (2, 3), (3, 1)]
    for s in run.moves:
        assert s.entries_exported == s.entries_imported + s.entries_skipped > 0
        assert s.bytes > 0 and s.packets_held <= s.packets_window
        assert all(v == 0 for v in s.retired.values())
    assert run.moves[1].transfers >= 2  # a swap: 1 -> 2 and 2 -> 1 at once
    assert run.moves[2].retired == {2: 0} and run.moves[4].retired == {1: 0, 2: 0}
    assert run.moves[4].entries_skipped > 0  # a pair exported by two sources
    assert list(run.keys_live) == [0]


@pytest.mark.parametrize("lag", [0, 50, 400])
def test_moves_are_exact_on_mixed_traffic(traffic, lag):
    whole = LegoExtractor(hash_seed=1).process(traffic)
    run = simulate_moves(traffic, "lego", k=1, moves=schedule(traffic), lag=lag, hash_seed=2)
    check_exact(run, whole)
    check_moves(run)
    assert (sum(s.packets_held for s in run.moves) > 0) == (lag > 0)
    assert run.mirror_count.sum() > 0


def test_moves_on_the_spec_equal_the_kernel(traffic):
    """The spec as a replica: same rows and the same entries and bytes per move."""
    whole = LegoSpecExtractor().process(traffic)
    kernel = simulate_moves(traffic, "lego", 1, schedule(traffic), lag=100, hash_seed=2)
    spec = simulate_moves(traffic, "lego", 1, schedule(traffic), lag=100, spec=True)
    check_exact(spec, whole)
    assert spec.moves == kernel.moves


def test_moves_are_exact_on_real_trace(trace):
    whole = LegoExtractor(hash_seed=1).process(trace)
    for hold in ("closure", "barrier"):
        run = simulate_moves(trace, "lego", k=1, moves=schedule(trace), lag=300,
                             hold=hold, hash_seed=5)
        check_exact(run, whole)
        check_moves(run)
    closure = simulate_moves(trace, "lego", 1, schedule(trace), lag=300, hash_seed=5)
    barrier = run
    assert sum(s.packets_held for s in closure.moves) \
        < sum(s.packets_held for s in barrier.moves)


def test_moves_stay_exact_with_eviction(traffic, monkeypatch):
    """The destination pauses its background sweep while it holds packets (they
    run after later ones); without the pause a sweep frees keys they still need."""
    wholes = {}
    for idle in (0.3, 0.05):
        wholes[idle] = LegoExtractor(hash_seed=1, evict_idle=idle).process(traffic)
        run = simulate_moves(traffic, "lego", 1, schedule(traffic), lag=100, hash_seed=2,
                             evict_idle=idle)
        check_exact(run, wholes[idle])
        assert sum(s.packets_held for s in run.moves) > 0
    monkeypatch.setattr(LegoExtractor, "pause_sweep", lambda self, paused=True: None)
    run = simulate_moves(traffic, "lego", 1, schedule(traffic), lag=100, hash_seed=2,
                         evict_idle=0.3)
    assert run.packets_lost == 0
    assert not np.array_equal(bits(run.features), bits(wholes[0.3]))


def test_moves_without_state_or_with_the_routing_rule_differ(traffic, trace):
    """What the protocol is for: without the transfer, rows differ; holding only
    the packets routed by a moved bucket lets a pair see two directions out of order."""
    for batch in (traffic, trace):
        whole = LegoExtractor(hash_seed=1).process(batch)
        for kwargs in ({"transfer": False}, {"hold": "routing"}):
            run = simulate_moves(batch, "lego", 1, schedule(batch), lag=300, hash_seed=2,
                                 **kwargs)
            assert run.packets_lost == 0  # nothing lost, but not exact
            assert not np.array_equal(bits(run.features), bits(whole)), kwargs
        assert sum(s.bytes for s in run.moves) > 0


def test_simulate_moves_rejects_bad_schedules(traffic):
    owners = np.zeros(OWNER_BUCKETS, dtype=np.int64)
    for kwargs, match in (({"semantics": "kitsune"}, "semantics"),
                          ({"moves": [(10, owners), (20, owners)], "lag": 50}, "moves\\[1\\]"),
                          ({"moves": [(10, owners[:5])]}, "owners"),
                          ({"hold": "never"}, "hold"), ({"lag": -1}, "lag")):
        with pytest.raises(ConfigError, match=match):
            simulate_moves(traffic, **kwargs)
