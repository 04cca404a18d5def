"""The ``lego`` feature semantics: kernel == spec, exact splits, mirrors, cost.

Cheap (a few seconds): the kernel runs at about a million packets/s, and the
pure-Python spec only on a few thousand packets.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lego.errors import ConfigError
from lego.ext.batch import Family, PacketBatch, Proto
from lego.ext.features import LAMBDAS, make_extractor
from lego.ext.legostats import LegoExtractor
from lego.ext.legostats_spec import N_FEATURES, LegoSpecExtractor, feature_names
from lego.topo.traffic_batches import mixed_traffic, scan_batch

TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitsune_mirai_first38363.tsv"
_ADDRS = [(4, bytes((10, 0, 0, i)) + bytes(12)) for i in range(4)] + [
    (6, bytes.fromhex("fe80") + bytes(13) + bytes((1,))), (1, bytes(range(1, 7)) + bytes(10)),
    (0, bytes(16))]


# ------------------------------------------------------------------ helpers ----

def bits(a: np.ndarray) -> np.ndarray:
    """Compare floats as bit patterns (so -0.0 != 0.0 and NaN == NaN)."""
    return np.ascontiguousarray(a).view(np.uint64)


def copy(batch: PacketBatch, index=slice(None)) -> PacketBatch:
    """A copy of the selected rows (``PacketBatch.take`` of a slice returns views)."""
    return batch.take(np.arange(len(batch))[index])


def run(extractor, batch: PacketBatch, size: int = 0) -> np.ndarray:
    parts = [extractor.process(b) for b in (batch.split(size) if size else [batch])]
    return np.concatenate(parts) if parts else np.empty((0, N_FEATURES))


def owners(family: np.ndarray, addr: np.ndarray, k: int, seed: int) -> np.ndarray:
    """owner(address) = crc32(family, 16 address bytes; seed) % k, per packet.
    A stand-in for the switch's bucket -> replica map (same derived address)."""
    rows = np.ascontiguousarray(np.concatenate([family[:, None], addr], axis=1))
    uniq, inverse = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(),
                              return_inverse=True)
    own = np.array([zlib.crc32(u.tobytes(), seed) % k for u in uniq], dtype=np.int64)
    return own[inverse.ravel()]


def split_by_owner(batch: PacketBatch, k: int, seed: int):
    """Replica r gets, in order, every packet whose source it owns (primary) and a
    mirror of every packet whose destination it owns when the source's owner is
    another replica. Yields (original indices of r's primaries, r's batch)."""
    src = owners(batch.src_family, batch.src_addr, k, seed)
    dst = owners(batch.dst_family, batch.dst_addr, k, seed)
    for r in range(k):
        primary = src == r
        mirror = (dst == r) & ~primary
        idx = np.nonzero(primary | mirror)[0]
        sub = batch.take(idx)
        sub.mirror[:] = mirror[idx]
        yield idx[primary[idx]], sub


def run_split(batch: PacketBatch, k: int, seed: int, chunk: int = 4000, **options):
    out = np.full((len(batch), N_FEATURES), np.nan)
    mirrors = 0
    for prim_idx, sub in split_by_owner(batch, k, seed):
        ext = LegoExtractor(hash_seed=seed + 1, **options)
        rows = run(ext, sub, chunk)
        assert rows.shape == (len(prim_idx), N_FEATURES)
        out[prim_idx] = rows
        mirrors += ext.counters()["mirrors"]
    return out, mirrors


@pytest.fixture(scope="module")
def traffic() -> PacketBatch:
    return mixed_traffic(n=3000, seed=7)


@pytest.fixture(scope="module")
def trace(shared_data) -> PacketBatch:
    if not TRACE.exists():
        pytest.skip(f"shared data absent: {TRACE} (the real Mirai prefix)")
    from lego.ext.packets import read_trace

    return read_trace(TRACE)


# --------------------------------------------------------------- definition ----

def test_rows_land_in_the_callers_buffer():
    batch = mixed_traffic(300, seed=5)
    batch.mirror[::3] = 1  # a row per primary packet only
    rows = int((batch.mirror == 0).sum())
    want = LegoExtractor(hash_seed=1).process(batch)
    out = np.full((rows, N_FEATURES), np.nan)
    assert LegoExtractor(hash_seed=1).process(batch, out=out) is out
    assert np.array_equal(out, want)
    with pytest.raises(ValueError, match="out must be"):
        LegoExtractor().process(batch, out=np.empty((len(batch), N_FEATURES)))


def test_feature_names_order():
    names = feature_names()
    assert len(names) == len(set(names)) == N_FEATURES == 115
    assert LegoExtractor(hash_seed=0).feature_names() == names
    assert names[:3] == ["MI_L5_w", "MI_L5_mean", "MI_L5_var"]
    assert names[15] == "H_L5_w"
    assert names[30:37] == [f"channel_L5_{s}" for s in
                            ("w", "mean", "var", "radius", "magnitude", "cov", "pcc")]
    assert names[65] == "jitter_L5_w" and names[80] == "socket_L5_w"
    assert names[-1] == "socket_L0.01_pcc"


def test_make_extractor_builds_both():
    assert isinstance(make_extractor("lego", hash_seed=3), LegoExtractor)
    assert isinstance(make_extractor("lego", spec=True), LegoSpecExtractor)


def _one(t, length, src, dst, proto=Proto.UDP, sport=1000, dport=2000, mirror=0,
         smac=1, dmac=2) -> PacketBatch:
    b = PacketBatch.empty(1)
    b.ts[0], b.frame_len[0], b.proto[0] = t, length, proto
    b.eth_src[0], b.eth_dst[0] = smac, dmac
    b.src_family[0] = b.dst_family[0] = Family.IPV4
    b.src_addr[0, :4], b.dst_addr[0, :4] = src, dst
    b.sport[0], b.dport[0], b.mirror[0] = sport, dport, mirror
    return b


def _col(group: str, lam: float, stat: str) -> int:
    return feature_names().index(f"{group}_L{lam:g}_{stat}")


def test_first_packet_and_absent_reverse():
    row = LegoExtractor(hash_seed=0).process(_one(10.0, 100, (1, 1, 1, 1), (2, 2, 2, 2)))[0]
    for lam in LAMBDAS:
        for g in ("MI", "H", "channel", "socket"):
            assert row[_col(g, lam, "w")] == 1.0 + 1e-20
            assert row[_col(g, lam, "mean")] == 100.0 / (1.0 + 1e-20)
        assert row[_col("jitter", lam, "mean")] == 0.0  # first packet: gap 0
        var = row[_col("channel", lam, "var")]
        assert row[_col("channel", lam, "radius")] == var  # reverse empty: mean 0, var 0
        assert row[_col("channel", lam, "magnitude")] == row[_col("channel", lam, "mean")]
        assert row[_col("channel", lam, "pcc")] == 0.0


def test_jitter_and_decay():
    ext = LegoExtractor(hash_seed=0)
    a, b = (1, 1, 1, 1), (2, 2, 2, 2)
    ext.process(_one(10.0, 100, a, b))
    row = ext.process(_one(12.0, 300, a, b))[0]
    for lam in LAMBDAS:
        f = math.pow(2.0, -lam * 2.0)
        w = (1e-20 + 1.0) * f + 1.0
        assert row[_col("jitter", lam, "w")] == w
        assert row[_col("jitter", lam, "mean")] == 2.0 / w
        assert row[_col("H", lam, "mean")] == (100.0 * f + 300.0) / w


def test_self_pair_is_its_own_reverse():
    ext = LegoExtractor(hash_seed=0)
    a = (9, 9, 9, 9)
    rows = np.concatenate([ext.process(_one(10.0 + i, 100 + 50 * i, a, a, sport=5, dport=5))
                           for i in range(4)])
    spec = LegoSpecExtractor()
    want = np.concatenate([spec.process(_one(10.0 + i, 100 + 50 * i, a, a, sport=5, dport=5))
                           for i in range(4)])
    assert np.array_equal(bits(rows), bits(want))
    last = rows[-1]
    for g in ("channel", "socket"):
        for lam in LAMBDAS:
            var = last[_col(g, lam, "var")]
            mean = last[_col(g, lam, "mean")]
            assert last[_col(g, lam, "radius")] == math.sqrt(var * var + var * var)
            assert last[_col(g, lam, "magnitude")] == math.sqrt(mean * mean + mean * mean)
            cov = last[_col(g, lam, "cov")]
            assert last[_col(g, lam, "pcc")] == cov / (math.sqrt(var) * math.sqrt(var))
    counters = ext.counters()
    assert counters["channel_keys"] == counters["socket_keys"] == 1


def test_keys_are_typed_tuples():
    """"192.168.2.1" + "23" == "192.168.2.12" + "3" as strings, not as keys; TCP
    and UDP on one port differ; an ARP endpoint carries its IP and its MAC."""
    ext = LegoExtractor(hash_seed=0)
    b = PacketBatch.concat([
        _one(1.0, 60, (192, 168, 2, 1), (8, 8, 8, 8), sport=23, dport=53),
        _one(1.0, 60, (192, 168, 2, 12), (8, 8, 8, 8), sport=3, dport=53),
        _one(1.0, 60, (192, 168, 2, 1), (8, 8, 8, 8), Proto.TCP, sport=23, dport=53),
        _one(1.0, 60, (192, 168, 2, 5), (192, 168, 2, 1), Proto.ARP, 0, 0, smac=7, dmac=8),
        _one(1.0, 60, (192, 168, 2, 6), (192, 168, 2, 1), Proto.ARP, 0, 0, smac=7, dmac=8),
    ])
    ext.process(b)
    c = ext.counters()
    assert c["socket_keys"] == 5
    assert c["MI_keys"] == 4  # (MAC 1, .1), (MAC 1, .12), (MAC 7, .5), (MAC 7, .6)
    assert c["H_keys"] == 4


# ------------------------------------------------------------ kernel == spec ----

def test_kernel_equals_spec_bitwise(traffic):
    want = LegoSpecExtractor().process(traffic)
    got = LegoExtractor(hash_seed=11).process(traffic)
    assert got.shape == (len(traffic), N_FEATURES)
    assert np.array_equal(bits(got), bits(want))
    assert np.isfinite(got).all()


def test_kernel_equals_spec_with_mirrors_and_eviction(traffic):
    b = copy(traffic)
    b.mirror[:] = np.random.default_rng(5).random(len(b)) < 0.3
    for options in ({}, {"evict_idle": 0.5}, {"evict_idle": 0.02}):
        spec = LegoSpecExtractor(**options)
        ext = LegoExtractor(hash_seed=2, **options)
        want = np.concatenate([spec.process(p) for p in b.split(997)])
        got = run(ext, b, 997)
        assert got.shape == (int((b.mirror == 0).sum()), N_FEATURES)
        assert np.array_equal(bits(got), bits(want))
    assert ext.counters()["keys_evicted"] > 0
    assert spec.counters()["keys_evicted"] > 0


def test_kernel_equals_spec_on_real_trace(trace):
    part = copy(trace, slice(0, 4000))
    want = LegoSpecExtractor().process(part)
    assert np.array_equal(bits(LegoExtractor(hash_seed=4).process(part)), bits(want))


@st.composite
def small_batches(draw) -> PacketBatch:
    """Few addresses and ports (so pairs and reverses recur), repeated timestamps,
    self-pairs, every protocol."""
    n = draw(st.integers(1, 40))
    b = PacketBatch.empty(n)
    t = 1000.0
    for i in range(n):
        t += draw(st.sampled_from([0.0, 0.0, 1e-6, 0.01, 0.3, 2.0, 50.0]))
        b.ts[i] = t
        b.frame_len[i] = draw(st.integers(42, 1514))
        b.proto[i] = draw(st.sampled_from(list(Proto)))
        (b.src_family[i], src), (b.dst_family[i], dst) = (draw(st.sampled_from(_ADDRS)),
                                                          draw(st.sampled_from(_ADDRS)))
        b.src_addr[i] = np.frombuffer(src, dtype=np.uint8)
        b.dst_addr[i] = np.frombuffer(dst, dtype=np.uint8)
        b.eth_src[i], b.eth_dst[i] = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        b.sport[i], b.dport[i] = draw(st.sampled_from([0, 53, 80])), draw(st.sampled_from([0, 53]))
    return b


@settings(max_examples=60, deadline=None)
@given(b=small_batches(), k=st.integers(2, 4), seed=st.integers(0, 3),
       evict=st.sampled_from([None, 0.5]))
def test_property_kernel_equals_spec_and_splits_exactly(b, k, seed, evict):
    whole = LegoExtractor(hash_seed=seed, evict_idle=evict).process(b)
    assert np.array_equal(bits(whole), bits(LegoSpecExtractor(evict_idle=evict).process(b)))
    got, _ = run_split(b, k, seed, chunk=7, evict_idle=evict)
    assert np.array_equal(bits(got), bits(whole))
    m = copy(b)
    m.mirror[:] = np.arange(len(m)) % 3 == 1
    assert np.array_equal(bits(LegoExtractor(hash_seed=seed, evict_idle=evict).process(m)),
                          bits(LegoSpecExtractor(evict_idle=evict).process(m)))


@pytest.mark.parametrize("size", [1, 7, 256, 4097])
def test_any_batch_split_is_bitwise_identical(traffic, size):
    whole = LegoExtractor(hash_seed=1).process(traffic)
    assert np.array_equal(bits(run(LegoExtractor(hash_seed=99), traffic, size)), bits(whole))


def test_read_only_and_strided_inputs(traffic):
    want = LegoExtractor(hash_seed=1).process(traffic)
    b = copy(traffic)
    for name in ("ts", "frame_len", "src_addr", "mirror"):
        getattr(b, name).flags.writeable = False
    b.sport = np.repeat(traffic.sport, 2)[::2]  # non-contiguous after construction
    assert np.array_equal(bits(LegoExtractor(hash_seed=1).process(b)), bits(want))


def test_rejects_bad_batches_and_options(traffic):
    ext = LegoExtractor(hash_seed=1)
    b = copy(traffic, slice(0, 10))
    b.frame_len = b.frame_len.astype(np.int64)
    with pytest.raises(TypeError, match="frame_len: expected numpy uint32, got int64"):
        ext.process(b)
    b = copy(traffic, slice(0, 10))
    b.src_addr = b.src_addr[:, :4].copy()
    with pytest.raises(ValueError, match="src_addr: expected shape"):
        ext.process(b)
    for bad in ({"evict_idle": 0}, {"evict_idle": "1"}, {"sweep_budget": 0},
                {"hash_seed": -1}):
        with pytest.raises(ConfigError):
            LegoExtractor(**bad)
    assert ext.counters()["packets"] == 0
    assert len(LegoExtractor(hash_seed=0).process(PacketBatch.empty(0))) == 0


# ------------------------------------------------------------------ mirrors ----

def test_mirror_yields_nothing_and_touches_only_pairs(traffic):
    ext = LegoExtractor(hash_seed=3)
    ext.process(traffic.take(slice(0, 1500)))
    before = {t: ext.table_arrays(t) for t in ("MI", "H", "jitter", "channel", "socket")}
    mirrors = copy(traffic, slice(1500, 2500))
    mirrors.mirror[:] = 1
    assert ext.process(mirrors).shape == (0, N_FEATURES)
    c = ext.counters()
    assert c["mirrors"] == 1000 and c["rows"] == 1500
    for t in ("MI", "H", "jitter"):
        for x, y in zip(before[t], ext.table_arrays(t), strict=True):
            assert np.array_equal(x, y)
        assert c[f"{t}_updates"] == 1500
    for t in ("channel", "socket"):
        assert c[f"{t}_updates"] == 2500
        assert not np.array_equal(before[t][1], ext.table_arrays(t)[1][:len(before[t][1])])


# ------------------------------------------------------------ exact splits ----

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_by_owner_is_bitwise_exact_on_mixed_traffic(traffic, seed):
    whole = LegoExtractor(hash_seed=7).process(traffic)
    for k in range(1, 9):
        got, mirrors = run_split(traffic, k, seed, chunk=500)
        assert np.array_equal(bits(got), bits(whole)), f"K={k} seed={seed}"
        assert (mirrors > 0) == (k > 1)


def test_split_stays_exact_with_eviction(traffic):
    whole = LegoExtractor(hash_seed=7, evict_idle=0.3).process(traffic)
    for k in (2, 5):
        got, _ = run_split(traffic, k, 3, evict_idle=0.3)
        assert np.array_equal(bits(got), bits(whole)), f"K={k}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_by_owner_is_bitwise_exact_on_real_trace(trace, seed):
    whole = LegoExtractor(hash_seed=5).process(trace)
    for k in range(1, 9):
        got, mirrors = run_split(trace, k, seed, chunk=8192)
        assert np.array_equal(bits(got), bits(whole)), f"K={k} seed={seed}"
        assert (mirrors > 0) == (k > 1)


# ------------------------------------------------------------ constant cost ----

def test_cost_per_packet_is_flat_under_a_scan():
    """Work is counted, not timed: a primary makes 5 table lookups and a mirror 2,
    whatever the number of peers, and probes per lookup stay flat while a host
    scans 20k distinct destinations. Index growth is amortised: entries moved
    <= 2 x keys."""
    b = scan_batch(20_000)
    ext = LegoExtractor(hash_seed=8)
    per_window = []
    prev = ext.counters()
    for part in b.split(2000):
        ext.process(part)
        c = ext.counters()
        lookups = sum(c[f"{t}_updates"] - prev[f"{t}_updates"]
                      for t in ("MI", "H", "jitter", "channel", "socket"))
        probes = sum(c[f"{t}_probes"] - prev[f"{t}_probes"]
                     for t in ("MI", "H", "jitter", "channel", "socket"))
        assert lookups == 5 * len(part)
        per_window.append(probes / len(part))
        prev = c
    assert c["channel_keys"] == 20_000 and c["socket_keys"] == 20_000
    # The index stays at most half full: under 2 probes per lookup on average,
    # a sawtooth as it doubles, and no trend as the host's peers grow 10-fold.
    assert max(per_window) < 10.0, per_window
    half = len(per_window) // 2
    assert np.mean(per_window[half:]) < 1.25 * np.mean(per_window[:half]), per_window
    for t in ("jitter", "channel", "socket"):
        assert c[f"{t}_moved"] <= 2 * c[f"{t}_keys"]


def test_eviction_under_a_scan_equals_spec():
    """Heavy churn (most keys freed in the background, the index shifting on
    every delete) must not lose or mix up a live key."""
    b = scan_batch(3000)
    b.ts[1::3] -= 2e-6  # uneven gaps
    b.ts.sort()
    for idle in (5e-5, 1e-3):
        want = LegoSpecExtractor(evict_idle=idle).process(b)
        ext = LegoExtractor(hash_seed=5, evict_idle=idle, sweep_budget=4)
        assert np.array_equal(bits(run(ext, b, 501)), bits(want))
        assert ext.counters()["keys_evicted"] > 1000


def test_eviction_bounds_memory_under_a_scan():
    b = scan_batch(20_000)  # 0.2 s of packet time
    ext = LegoExtractor(hash_seed=8, evict_idle=0.01)
    ext.process(b)
    c = ext.counters()
    assert c["keys_evicted"] > 30_000
    assert c["channel_keys"] < 3_000 and c["socket_keys"] < 3_000
    assert c["keys_live"] == c["keys_created"] - c["keys_evicted"]
