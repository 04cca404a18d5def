"""LUCID: feature extraction (packets/s) and CNN inference (fragments/s), one core.

- features: the Cython kernel over a whole capture held in memory (the generated
  80,000-packet trace, and the CIC SYN flood where ../shared/data is present), the
  window clock, dissection, flow table and fragments included, the fragments read
  out at the end; against the pure-Python specification on the same frames.
- cnn: LUCID's CNN (n = 10, k = 64, h = 3) over 200,000 fragments (float32, one
  product per fragment over its unfolded windows, as served), against the plain specification
  (``forward_spec``) on a prefix.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, Row, timed
from lego.nfs.lucid.cnn import forward_spec, glorot_model
from lego.nfs.lucid.features import Capture, load_capture, new_extractor
from lego.nfs.lucid.features_spec import extract_spec

FE_TARGET_PPS = 1_000_000.0
CNN_TARGET_FPS = 200_000.0
SYNFLOOD = SHARED_DATA / "cic-ddos2019" / "synflood.pcap"


def _kernel_pass(cap: Capture, t: float, n: int) -> int:
    ex = new_extractor(t, n)
    ex.feed(cap.buffer, cap.offsets, cap.caplens, cap.ts, cap.linktypes)
    return len(ex.fragments()[0])


def _spec_pps(cap: Capture, t: float, n: int, limit: int) -> float:
    idx = range(min(limit, len(cap.ts)))
    frames = [bytes(cap.buffer[cap.offsets[i]:cap.offsets[i] + cap.caplens[i]]) for i in idx]
    start = time.perf_counter()
    extract_spec(frames, cap.ts[:len(frames)], t, n)
    return len(frames) / (time.perf_counter() - start)


def _generated(quick: bool) -> Path:
    from lego.topo.traffic_synth import default_trace

    return default_trace(Path(__file__).resolve().parent.parent / "results",
                         packets=20_000 if quick else 80_000)


def feature_rows(quick: bool) -> list[Row]:
    rows = []
    traces = [("generated", _generated(quick))]
    if SYNFLOOD.exists():
        traces.append(("CIC SYN flood", SYNFLOOD))
    for label, path in traces:
        cap = load_capture(path)
        seconds, frags = timed(_kernel_pass, cap, 10.0, 10, repeat=3 if quick else 7)
        spec = _spec_pps(cap, 10.0, 10, 5_000 if quick else 30_000)
        cap.close()
        rows.append(Row(f"lucid features kernel ({label}, 10t-10n, {frags:,} fragments)",
                        len(cap.ts), seconds, "spec, same frames (prefix)", spec,
                        FE_TARGET_PPS))
    return rows


def cnn_rows(quick: bool) -> list[Row]:
    rng = np.random.default_rng(0)
    model = glorot_model(10, 3, 11, 64, rng)
    F = 50_000 if quick else 200_000
    X = rng.random((F, 10, 11))
    X[:, 6:] = 0.0  # padded rows, as most fragments have
    seconds, _ = timed(model.forward, X, repeat=3 if quick else 5)
    prefix = 200 if quick else 1000
    start = time.perf_counter()
    forward_spec(model, X[:prefix])
    spec = prefix / (time.perf_counter() - start)
    return [Row("lucid cnn inference (n 10, k 64, float32)", F, seconds,
                f"forward_spec, first {prefix} fragments", spec, CNN_TARGET_FPS)]


def run(quick: bool) -> list[Row]:
    return feature_rows(quick) + cnn_rows(quick)
