"""Bucket -> replica assignment: balance measured load while moving few buckets.

The switch hashes each packet's split key into one of B buckets and an exact
table maps bucket -> replica (DESIGN §4). Scaling and rebalancing change that
table only, and every bucket that changes owner costs a state move, so the
functions here move as few buckets as they can. Loads are per-bucket packet
counts (the switch's per-bucket counters, read over P4Runtime, as deltas).
"""

from __future__ import annotations

import numpy as np

from lego.errors import ConfigError


def _check(owners: np.ndarray, replicas: list[int]) -> None:
    if not replicas:
        raise ConfigError("bucket assignment: expected at least one replica, got none")
    if len(set(replicas)) != len(replicas):
        raise ConfigError(f"bucket assignment: replicas must be distinct, got {replicas}")


def initial_assignment(n_buckets: int, replicas: list[int]) -> np.ndarray:
    """Buckets dealt round robin: owners[b] = replicas[b % K]."""
    _check(np.zeros(0), replicas)
    return np.asarray(replicas, dtype=np.int64)[np.arange(n_buckets) % len(replicas)]


def replica_loads(owners: np.ndarray, loads: np.ndarray, replicas: list[int]) -> dict[int, float]:
    return {r: float(loads[owners == r].sum()) for r in replicas}


def rebalance(owners: np.ndarray, loads: np.ndarray, replicas: list[int],
              tolerance: float = 0.1, max_moves: int | None = None) -> np.ndarray:
    """A new assignment over ``replicas`` whose most loaded replica carries at most
    ``(1 + tolerance)`` x the mean, reached greedily by moving single buckets from
    the most to the least loaded replica (largest bucket that narrows the gap
    first), so few buckets move. Buckets owned by a replica not in ``replicas``
    (scale-in) always move; a new replica (scale-out) starts empty and fills up.
    A heavy bucket that alone exceeds the target stays where it is: splitting it
    needs a finer hash, not a move.
    """
    _check(owners, replicas)
    owners = owners.astype(np.int64).copy()
    loads = np.asarray(loads, dtype=np.float64)
    if owners.shape != loads.shape:
        raise ConfigError(f"rebalance: owners {owners.shape} and loads {loads.shape} differ")
    current = {r: 0.0 for r in replicas}
    orphans = [b for b in np.argsort(-loads, kind="stable") if int(owners[b]) not in current]
    for b in np.flatnonzero(np.isin(owners, replicas)):
        current[int(owners[b])] += loads[b]
    for b in orphans:  # scale-in: give each orphan to the least loaded replica
        r = min(replicas, key=lambda x: (current[x], x))
        owners[b] = r
        current[r] += loads[b]
    target = (1.0 + tolerance) * sum(current.values()) / len(replicas)
    moves = 0
    while max_moves is None or moves < max_moves:
        hi = max(replicas, key=lambda x: (current[x], -x))
        lo = min(replicas, key=lambda x: (current[x], x))
        gap = current[hi] - current[lo]
        if current[hi] <= target or gap <= 0:
            break
        mine = np.flatnonzero(owners == hi)
        # a move helps when the bucket is lighter than the gap; take the largest such
        fits = mine[(loads[mine] > 0) & (loads[mine] < gap)]
        if len(fits) == 0:
            break
        b = int(fits[np.argmax(loads[fits])])
        owners[b] = lo
        current[hi] -= loads[b]
        current[lo] += loads[b]
        moves += 1
    return owners


def moved(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Indices of the buckets whose owner changed."""
    return np.flatnonzero(before != after)
