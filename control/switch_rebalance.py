"""Per-bucket load from the switch's counters, and the bucket moves that even it out.

Pure logic (time is passed in as ``now``):

- :class:`CounterDeltas` turns cumulative counter reads into deltas since the
  previous read; a counter that went down (the switch restarted, or somebody
  reset it) counts from zero again;
- :func:`bucket_loads`: the load a bucket puts on its owner: its primary packets
  plus ``mirror_weight`` x the clones its mirror bucket sent (the owner tables
  are identical, so a bucket's mirrors land on the same replica);
- :func:`plan_moves`: a new assignment by
  :func:`lego.control.policy_buckets.rebalance` (few buckets move; a heavy
  bucket that alone exceeds the target stays, and the others leave its replica,
  so one heavy source does not pin a replica's other buckets), and the moves.
  Without any measured load the buckets are balanced by count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lego.control.policy_buckets import moved, rebalance
from lego.errors import ConfigError


@dataclass(frozen=True)
class BucketMove:
    bucket: int
    old_port: int  # -1: the bucket had no owner
    new_port: int


class CounterDeltas:
    """Deltas of cumulative counters (uint64[n, 2]: packets, bytes) between reads."""

    def __init__(self) -> None:
        self._last: dict[str, np.ndarray] = {}
        self.last_now: float | None = None
        self.interval: float = 0.0

    def update(self, counters: dict[str, np.ndarray], now: float) -> dict[str, np.ndarray]:
        out = {}
        for name, cur in counters.items():
            cur = np.asarray(cur, dtype=np.uint64)
            prev = self._last.get(name)
            if prev is None or prev.shape != cur.shape:
                delta = cur.copy()
            else:
                reset = cur < prev
                delta = np.where(reset, cur, cur - np.where(reset, 0, prev)).astype(np.uint64)
            self._last[name] = cur.copy()
            out[name] = delta
        self.interval = 0.0 if self.last_now is None else max(0.0, now - self.last_now)
        self.last_now = now
        return out

    def reset(self) -> None:
        self._last.clear()
        self.last_now = None


def bucket_loads(primary: np.ndarray, mirror: np.ndarray | None = None,
                 mirror_weight: float = 0.5) -> np.ndarray:
    """float64[n] load per bucket from packet-count deltas (column 0 of each counter)."""
    load = np.asarray(primary, dtype=np.float64)
    if load.ndim == 2:
        load = load[:, 0]
    if mirror is not None and mirror_weight:
        m = np.asarray(mirror, dtype=np.float64)
        load = load + mirror_weight * (m[:, 0] if m.ndim == 2 else m)
    return load


def plan_moves(owners: np.ndarray, loads: np.ndarray, replicas: list[int] | tuple[int, ...],
               tolerance: float = 0.1,
               max_moves: int | None = None) -> tuple[np.ndarray, list[BucketMove]]:
    """(new owners, moves) over ``replicas``: buckets of a replica no longer in the
    set always move; otherwise only as many as evening the load needs."""
    owners = np.asarray(owners, dtype=np.int64)
    loads = np.asarray(loads, dtype=np.float64)
    if owners.shape != loads.shape:
        raise ConfigError(f"plan_moves: owners {owners.shape} and loads {loads.shape} differ")
    if not np.isfinite(loads).all() or (loads < 0).any():
        raise ConfigError("plan_moves: loads must be finite and non-negative")
    replicas = [int(r) for r in replicas]
    if loads.sum() == 0:  # nothing measured: balance the bucket counts, exactly
        loads, tolerance = np.ones_like(loads), 0.0
    new = rebalance(owners, loads, replicas, tolerance=tolerance, max_moves=max_moves)
    moves = [BucketMove(int(b), int(owners[b]), int(new[b])) for b in moved(owners, new)]
    return new, moves


def replica_load(owners: np.ndarray, loads: np.ndarray, replicas) -> dict[int, float]:
    return {int(r): float(loads[owners == r].sum()) for r in replicas}
