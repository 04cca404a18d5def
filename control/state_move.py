"""Loss-free, order-preserving moves of a keyed brick's state between replicas.

The switch sends a packet to the owner of its primary bucket and, under a mirror
plan, clones it to the owner of its mirror bucket when that is another replica;
an entry of the keyed state is owned by the bucket(s) of the key that decides
its owner (one end, or both ends of a pair, replicated at each owner). A move
changes the bucket -> replica assignment ``old`` -> ``new`` at switch sequence
number ``M``: the primary and the mirror tables both change at M, so every packet
with seq < M went to the old owners and every packet with seq >= M goes to the
new ones. The protocol (the live bricks' side is :mod:`lego.bricks.moves`, driven
by :mod:`lego.control.live_moves`; an NF's package may run it offline over a
trace, as the first NF's ``move_sim`` does):

1. Plan (:func:`plan_move`): one transfer per (source A, destination B) of the
   buckets that move from A to B. B already holds the pairs whose other end it
   owned before M, and keeps updating them after M, so A exports the moved
   buckets' entries *excluding* those (``exclude`` = B's old buckets).
2. A processes all its packets with seq < M, exports each transfer
   (``export_buckets``, a snapshot between batches, serialised), then drops what it
   no longer owns (``drop_buckets(new == A)``). A never holds anything: after M it receives no
   packet that touches a moved entry.
3. B, from M until all its incoming state has arrived, holds the packets that
   could touch moved state (:func:`hold_mask`) and processes the others at once.
   Then it imports every blob (an entry already present must be bitwise identical,
   a pair that two sources both exported, and is skipped) and processes the held
   packets in seq order, before anything that arrives later. With ``evict_idle``
   it pauses its background sweep meanwhile (``hold_state``): the held packets
   run after later ones, and a sweep at those later times could free a key that
   is not yet idle at theirs.

Which packets B holds (``rule``): the brief's rule, ``"routing"`` (primaries whose
source bucket moves to B, mirrors whose destination bucket does), is not enough:
a held primary Y -> X (Y moving to B, X already B's) shares the pair {X, Y} with
a later X -> Y that the rule lets through, so the pair sees them out of order
(and X's own streams then see X's later packets out of order with X -> Y if that
one is held as well). ``"closure"`` (the default) holds a packet when either of
its buckets is blocked, and then blocks both: the blocked set starts as the
buckets moving to B and grows with what B holds, so every key a held packet
touches is touched afterwards only by held packets (per-key order is kept) and
no key B updates before the import has an owner among the moved buckets.
``"barrier"`` holds all of B's packets. Both are exact; ``"routing"`` is kept to
show (in the tests) that it is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lego.errors import ConfigError
from lego.p4src.contract import N_BUCKETS as OWNER_BUCKETS

HOLD_RULES = ("closure", "barrier", "routing")


@dataclass(frozen=True)
class Transfer:
    """Buckets moving from replica ``src`` to ``dst`` (bool[OWNER_BUCKETS]), and
    the buckets whose pairs ``dst`` already holds (its old buckets)."""

    src: int
    dst: int
    buckets: np.ndarray
    exclude: np.ndarray


def check_owners(owners, what: str) -> np.ndarray:
    arr = np.asarray(owners)
    if arr.shape != (OWNER_BUCKETS,) or not np.issubdtype(arr.dtype, np.integer) \
            or arr.min() < 0:
        raise ConfigError(f"{what}: expected replica numbers >= 0, int[{OWNER_BUCKETS}], "
                          f"got {arr.dtype}{list(arr.shape)}")
    return arr.astype(np.int64)


def plan_move(old: np.ndarray, new: np.ndarray) -> list[Transfer]:
    """One transfer per (old owner, new owner) of the buckets whose owner changes."""
    old = check_owners(old, "plan_move old")
    new = check_owners(new, "plan_move new")
    changed = old != new
    pairs = sorted(set(zip(old[changed].tolist(), new[changed].tolist(), strict=True)))
    return [Transfer(a, b, changed & (old == a) & (new == b), old == b) for a, b in pairs]


def hold_mask(src_bucket: np.ndarray, dst_bucket: np.ndarray, mirror: np.ndarray,
              incoming: np.ndarray, rule: str = "closure") -> np.ndarray:
    """Which of a destination's packets (in seq order, from M until its state has
    arrived) it holds; ``incoming``: bool[OWNER_BUCKETS], the buckets moving to it."""
    n = len(src_bucket)
    if rule == "barrier":
        return np.ones(n, dtype=bool)
    if rule == "routing":
        return np.where(mirror.astype(bool), incoming[dst_bucket], incoming[src_bucket])
    if rule != "closure":
        raise ConfigError(f"hold rule: expected one of {HOLD_RULES}, got {rule!r}")
    blocked = incoming.astype(bool).copy()
    held = np.zeros(n, dtype=bool)
    for i, (s, d) in enumerate(zip(src_bucket.tolist(), dst_bucket.tolist(), strict=True)):
        if blocked[s] or blocked[d]:
            held[i] = blocked[s] = blocked[d] = True
    return held


