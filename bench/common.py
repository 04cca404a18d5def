"""Shared helpers for the benchmarks (`make bench`).

Each ``bench/bench_*.py`` module defines ``run(quick: bool) -> list[Row]``. The
driver (``python -m bench``) runs every module in its own subprocess, so the peak
RSS of a row is that benchmark's own, and prints one table. A row's ratio is
always against a baseline measured in the same run, on the same packets.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@dataclass
class Row:
    name: str
    packets: int
    seconds: float
    baseline: str = ""  # what the ratio is against
    baseline_pps: float = 0.0
    target_pps: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ratio(self) -> float:
        return self.pps / self.baseline_pps if self.baseline_pps else float("nan")

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(pps=self.pps, ratio=self.ratio)
        return d


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *args, repeat: int = 1, **kwargs):
    """Run fn ``repeat`` times; return (best seconds, last result)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def latency_row(what: str, seconds: float, baseline: str, baseline_seconds: float,
                target_seconds: float) -> Row:
    """A latency as a row: ``packets`` = 1 and ``seconds`` = the latency, so the
    ratio is the speed-up over the baseline; the seconds and whether the target
    is met are in the name (the table's pkt/s and target columns are rates)."""
    met = "met" if seconds < target_seconds else "NOT met"
    base = f" vs {baseline} {baseline_seconds:.3f} s" if baseline else ""
    return Row(f"{what}: {seconds:.3f} s{base} (target < {target_seconds:g} s: {met})", 1,
               seconds, baseline=baseline, baseline_pps=1.0 / baseline_seconds
               if baseline_seconds > 0 else 0.0)
