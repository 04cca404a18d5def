"""West-east state moves, ``lego`` semantics: entries/s of moving a third of the
owner buckets of a state built from the real Mirai prefix (generated mixed
traffic when ``../shared/data`` is absent).

Rows ("packets" are state entries here; the name gives the bytes per entry on the
wire). Each ratio is against the pure-Python spec doing the same on the *same*
state in the same run (the spec's state is the kernel's, imported whole):
- move: export (a snapshot of 1/3 of the buckets) + ``to_bytes`` on the source,
  ``from_bytes`` (validated) + ``import_state`` into an empty replica;
- drop: the source forgets what it no longer owns.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import SHARED_DATA, Row
from lego.ext.legostats import LegoExtractor, StateBlob
from lego.ext.legostats_spec import OWNER_BUCKETS, LegoSpecExtractor
from lego.topo.traffic_batches import mixed_traffic

TRACE = SHARED_DATA / "kitsune_mirai_first38363.tsv"
TARGET_ENTRIES_PS = 1_000_000.0
THIRD = np.arange(0, OWNER_BUCKETS, 3)
REST = np.setdiff1d(np.arange(OWNER_BUCKETS), THIRD)


def _state(quick: bool) -> tuple[str, LegoExtractor]:
    if TRACE.exists():
        from lego.ext.packets import read_trace

        label, batch = "real Mirai prefix", read_trace(TRACE)
    else:
        label, batch = "mixed_traffic", mixed_traffic(n=10_000 if quick else 40_000)
    ext = LegoExtractor(hash_seed=1)
    for part in batch.split(65536):
        ext.process(part)
    return label, ext


def _move(src, fresh) -> tuple[float, int, int]:
    """(seconds, entries, bytes) of one export + serialise + parse + import."""
    start = time.perf_counter()
    data = src.export_state(THIRD).to_bytes()
    dst = fresh()
    res = dst.import_state(StateBlob.from_bytes(data))
    return time.perf_counter() - start, res.imported, len(data)


def _best_move(src, fresh, repeat: int) -> tuple[float, int, int]:
    runs = [_move(src, fresh) for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1], runs[0][2]


def _best_drop(whole: StateBlob, fresh, repeat: int) -> tuple[float, int]:
    best, dropped = float("inf"), 0
    for _ in range(repeat):
        ext = fresh()
        ext.import_state(whole)
        start = time.perf_counter()
        dropped = ext.drop_state(REST)
        best = min(best, time.perf_counter() - start)
    return best, dropped


def run(quick: bool) -> list[Row]:
    repeat = 3 if quick else 5
    label, kernel = _state(quick)
    whole = kernel.export_state(np.arange(OWNER_BUCKETS))
    spec = LegoSpecExtractor()
    spec.import_state(whole)  # the same state, exactly

    def new_kernel() -> LegoExtractor:
        return LegoExtractor(hash_seed=2)

    k_s, n, nbytes = _best_move(kernel, new_kernel, repeat)
    s_s, s_n, s_bytes = _best_move(spec, LegoSpecExtractor, 1)
    assert (s_n, s_bytes) == (n, nbytes)
    kd_s, dropped = _best_drop(whole, new_kernel, repeat)
    sd_s, s_dropped = _best_drop(whole, LegoSpecExtractor, 1)
    assert s_dropped == dropped
    per_entry = nbytes / n if n else 0.0
    return [
        Row(f"state move: export+serialise+import, 1/3 of buckets of {label} "
            f"({whole.n_entries} entries), {per_entry:.0f} B/entry", n, k_s,
            baseline="pure-Python spec, same state", baseline_pps=s_n / s_s,
            target_pps=TARGET_ENTRIES_PS),
        Row(f"state move: drop_state of the moved third ({dropped} entries)", dropped, kd_s,
            baseline="pure-Python spec, same state", baseline_pps=s_dropped / sd_s,
            target_pps=TARGET_ENTRIES_PS),
    ]
