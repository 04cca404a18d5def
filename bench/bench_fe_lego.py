"""Feature extraction, ``lego`` semantics: packets/s of the compiled kernel.

Rows (each kernel figure is the best of a few runs, a fresh extractor each):
- benign traffic: the real Mirai prefix when ``../shared/data`` has it, else
  generated mixed traffic; ratio against the pure-Python spec on its first
  packets (the spec is slow, so it runs on a prefix; the row's baseline says so);
- a scan: one host to N distinct destinations (every 10th answered), with the
  same spec ratio;
- flatness: the scan's last tenth against its first tenth, timed in the same run
  (ratio ~1 means constant cost per packet as the host's peers grow).
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import SHARED_DATA, Row, timed
from lego.ext.batch import PacketBatch
from lego.ext.legostats import LegoExtractor
from lego.ext.legostats_spec import LegoSpecExtractor
from lego.topo.traffic_batches import mixed_traffic, scan_batch

TARGET_PPS = 300_000.0
TRACE = SHARED_DATA / "kitsune_mirai_first38363.tsv"


def _benign(quick: bool) -> tuple[str, PacketBatch]:
    if TRACE.exists():
        from lego.ext.packets import read_trace

        return "real Mirai prefix", read_trace(TRACE)
    return "mixed_traffic", mixed_traffic(n=10_000 if quick else 40_000, scan_packets=0)


def _kernel(batch: PacketBatch, size: int = 65536) -> None:
    ext = LegoExtractor(hash_seed=1)
    for part in batch.split(size):
        ext.process(part)


def _spec_pps(batch: PacketBatch, n: int) -> tuple[float, int]:
    part = batch.take(np.arange(min(n, len(batch))))
    seconds, _ = timed(LegoSpecExtractor().process, part)
    return len(part) / seconds, len(part)


def _rows(label: str, batch: PacketBatch, spec_n: int, repeat: int) -> list[Row]:
    spec_pps, spec_n = _spec_pps(batch, spec_n)
    seconds, _ = timed(_kernel, batch, repeat=repeat)
    return [Row(f"fe lego: {label}", len(batch), seconds,
                baseline=f"pure-Python spec, first {spec_n} packets",
                baseline_pps=spec_pps, target_pps=TARGET_PPS)]


def _flatness(label: str, batch: PacketBatch, repeat: int) -> Row:
    """Time the first and the last tenth of the scan inside one run."""
    tenth = len(batch) // 10
    first = batch.take(np.arange(tenth))
    middle = batch.take(np.arange(tenth, len(batch) - tenth))
    last = batch.take(np.arange(len(batch) - tenth, len(batch)))
    best_first = best_last = float("inf")
    for _ in range(repeat):
        ext = LegoExtractor(hash_seed=1)
        start = time.perf_counter()
        ext.process(first)
        best_first = min(best_first, time.perf_counter() - start)
        ext.process(middle)
        start = time.perf_counter()
        ext.process(last)
        best_last = min(best_last, time.perf_counter() - start)
    return Row(f"fe lego: {label}, last tenth", len(last), best_last,
               baseline="same run, first tenth", baseline_pps=len(first) / best_first,
               target_pps=TARGET_PPS)


def run(quick: bool) -> list[Row]:
    repeat = 2 if quick else 3
    spec_n = 2_000 if quick else 10_000
    n_dst = 20_000 if quick else 100_000
    label, benign = _benign(quick)
    scan = scan_batch(n_dst)
    rows = _rows(f"benign ({label})", benign, spec_n, repeat)
    rows += _rows(f"scan to {n_dst} destinations", scan, spec_n, repeat)
    rows.append(_flatness(f"scan to {n_dst} destinations", scan, repeat))
    return rows
