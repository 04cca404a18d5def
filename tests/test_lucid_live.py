"""LUCID's extractor as a live brick needs it: windows closed as the switch stamps
them (fragments popped window by window equal one offline pass), and flows moved
between two extractors mid-capture (TCP base numbers, TLS records, open fragments)
with the union of their fragments still equal to one offline pass."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from lego.nfs.lucid.features import extract, load_capture, new_extractor

T, N, BATCH = 2.0, 10, 997


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from lego.topo.traffic_synth import generate, write_trace

    path = tmp_path_factory.mktemp("lucid_live") / "synth.pcap"
    write_trace(generate(seed=3, packets=12000), path)
    return path


def offline(trace: Path) -> dict[int, tuple]:
    """One pass: first frame -> (stored key, window, packets, raw)."""
    f = extract(trace, T, N)
    return {int(first): (tuple(key), float(w), int(n), raw)
            for first, key, w, n, raw in zip(f.first_seen, f.key, f.window, f.npkts, f.raw,
                                             strict=True)}


def popped(ex, before: float, into: dict[int, tuple]) -> None:
    from lego.nfs.lucid.features import key_strings

    flow, window, first, npkts, raw = ex.pop_fragments(before)
    if not len(flow):
        return
    keys = key_strings(ex.flow_keys()[flow])
    for k, w, f, n, r in zip(keys, window, first, npkts, raw, strict=True):
        assert int(f) not in into, f"fragment of frame {f} popped twice"
        into[int(f)] = (tuple(k), float(w), int(n), r)


def assert_same(got: dict[int, tuple], want: dict[int, tuple]) -> None:
    assert sorted(got) == sorted(want)
    for first, (key, w, n, raw) in want.items():
        g = got[first]
        assert (g[0], g[1], g[2]) == (key, w, n), first
        assert np.array_equal(g[3], raw), first


def test_windows_popped_as_they_close_equal_one_pass(synth):
    cap = load_capture(synth)
    windows = new_extractor(T, N).clock(cap.ts)
    ex = new_extractor(T, N)
    got: dict[int, tuple] = {}
    for lo in range(0, len(cap.ts), BATCH):
        s = slice(lo, lo + BATCH)
        ex.feed(cap.buffer, cap.offsets[s], cap.caplens[s], cap.ts[s], cap.linktypes[s],
                windows=windows[s], index=np.arange(lo, lo + len(cap.ts[s]), dtype=np.int64))
        popped(ex, windows[s][-1], got)  # the last frame's window is still open
        assert all(v[1] < windows[s][-1] for v in got.values())
    popped(ex, np.inf, got)
    assert ex.pop_fragments(np.inf)[0].size == 0
    assert_same(got, offline(synth))


def _bucket(key) -> int:
    """A symmetric bucket of a frame's LUCID key (src, sport, dst, dport, proto)."""
    a, b = (int(key[0]), int(key[1])), (int(key[2]), int(key[3]))
    return zlib.crc32(repr((min(a, b), max(a, b), int(key[4]))).encode()) % 8


@pytest.mark.parametrize("defer", [0, 3])
def test_flows_moved_mid_capture_keep_every_fragment_exact(synth, defer):
    """``defer``: batches before the move whose closed windows are not popped, so
    that fragments of closed windows travel with their flows."""
    cap = load_capture(synth)
    windows = new_extractor(T, N).clock(cap.ts)
    keys = new_extractor(T, N).frame_keys(cap.buffer, cap.offsets, cap.caplens, cap.linktypes)
    bucket = np.array([_bucket(k) for k in keys])
    owner = {b: 0 if b < 4 else 1 for b in range(8)}
    ex = [new_extractor(T, N), new_extractor(T, N)]
    flow_bucket: list[dict[int, int]] = [{}, {}]
    got: dict[int, tuple] = {}
    moved = exported = 0
    for lo in range(0, len(cap.ts), BATCH):
        if lo >= len(cap.ts) // 2 and not moved:  # buckets 2, 3 move from 0 to 1, mid-window
            ids = [f for f, b in flow_bucket[0].items() if b in (2, 3)]
            blob = ex[0].export_flows(ids)
            new = ex[1].import_flows(blob)
            assert (new >= 0).all() and len(new) == len(ids)
            flow_bucket[1].update({int(f): 2 for f in new})
            assert ex[0].drop_flows(ids) == len(ids)
            exported = len(ids)
            owner[2] = owner[3] = moved = 1
        idx = np.arange(lo, min(lo + BATCH, len(cap.ts)))
        for r in (0, 1):
            mine = idx[np.array([owner[b] == r for b in bucket[idx]], dtype=bool)]
            if not len(mine):
                continue
            flows = np.empty(len(mine), dtype=np.int64)
            ex[r].feed(cap.buffer, cap.offsets[mine], cap.caplens[mine], cap.ts[mine],
                       cap.linktypes[mine], windows=windows[mine], index=mine, flow_ids=flows)
            flow_bucket[r].update({int(f): int(b) for f, b in zip(flows, bucket[mine],
                                                                    strict=True) if f >= 0})
        if moved or lo + (defer + 1) * BATCH < len(cap.ts) // 2:
            for r in (0, 1):
                popped(ex[r], windows[idx[-1]], got)
    for r in (0, 1):
        popped(ex[r], np.inf, got)
    assert exported > 20
    assert_same(got, offline(synth))


def test_a_blob_cut_short_is_refused_and_a_known_flow_is_skipped(synth):
    cap = load_capture(synth)
    ex = new_extractor(T, N)
    flows = np.empty(2000, dtype=np.int64)
    ex.feed(cap.buffer, cap.offsets[:2000], cap.caplens[:2000], cap.ts[:2000],
            cap.linktypes[:2000], flow_ids=flows)
    ids = np.unique(flows[flows >= 0])
    blob = ex.export_flows(ids)
    assert (ex.import_flows(blob) == -1).all()  # all known: skipped, none doubled
    with pytest.raises(KeyError, match="no flows"):
        ex.export_flows([10**9])
    other = new_extractor(T, N)  # a blob cut anywhere changes nothing
    for cut in (len(blob) - 5, len(blob) // 2, 100):
        with pytest.raises(ValueError, match="cut short"):
            other.import_flows(blob[:cut])
        assert len(other.flow_keys()) == 0 and other.pop_fragments(np.inf)[0].size == 0
    assert (other.import_flows(blob) >= 0).all()
    with pytest.raises(ValueError, match="n=10 packets per fragment, this extractor keeps n=5"):
        new_extractor(T, 5).import_flows(blob)
    with pytest.raises(ValueError, match="not a flow blob"):
        new_extractor(T, N).import_flows(b"x" * 64)
