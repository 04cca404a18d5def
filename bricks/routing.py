"""A brick's routing table: which replica of a next-hop brick gets each batch.

Pure logic, no sockets: :class:`RoutingTable` turns a message into
``(replica index, message)`` pairs; the transport sends them. Two policies:

- ``round_robin``: whole batches dealt to the live replicas in turn (stateless
  next hops, e.g. the autoencoder ensemble);
- ``key``: rows split by the owner of a key (stateful next hops, e.g. the feature
  extractor split by address owner). The logic that knows the rows splits them
  (``Splitter``); the table owns ``owner``: bucket -> replica index over
  :data:`N_BUCKETS` buckets, so re-balancing moves buckets, not "hash mod N".

Both are changeable at run time: replicas can be removed (a dead brick) or the
address list and owner table replaced (:meth:`RoutingTable.update`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lego.bricks.errors import BrickError
from lego.bricks.wire import Message
from lego.p4src.contract import N_BUCKETS

POLICIES = ("round_robin", "key")

#: split(message, owner_of_bucket, n_replicas) -> one message per replica
Splitter = Callable[[Message, np.ndarray, int], list[Message]]


def dealt_owners(n_replicas: int) -> np.ndarray:
    """bucket -> replica, buckets dealt round robin (all to 0 when there is none)."""
    return (np.arange(N_BUCKETS) % max(n_replicas, 1)).astype(np.int64)


class RoutingTable:
    """Next hops of one outgoing edge: ``target`` (a graph node) and the addresses
    of its replicas (none when the target runs only inline in the sender)."""

    def __init__(self, target: str, addresses: Sequence[str], policy: str = "round_robin",
                 owner: np.ndarray | None = None) -> None:
        if policy not in POLICIES:
            raise BrickError(f"routing to {target}: policy expected one of {POLICIES}, "
                             f"got {policy!r}")
        self.target = target
        self.policy = policy
        self.addresses = list(addresses)
        self.live = [True] * len(self.addresses)
        self.owner = dealt_owners(len(self.addresses)) if owner is None else \
            np.asarray(owner, dtype=np.int64)
        self._next = 0
        self.version = 0

    @property
    def n_live(self) -> int:
        return sum(self.live)

    def update(self, addresses: Sequence[str] | None = None,
               owner: Sequence[int] | None = None) -> None:
        """Replace the replica list and/or the bucket owners (run-time change)."""
        if addresses is not None:
            if not addresses:
                raise BrickError(f"routing to {self.target}: expected at least one replica")
            self.addresses = list(addresses)
            self.live = [True] * len(self.addresses)
            if owner is None:
                self.owner = dealt_owners(len(self.addresses))
        if owner is not None:
            own = np.asarray(owner, dtype=np.int64)
            if own.shape != (N_BUCKETS,) or own.min() < 0 or own.max() >= len(self.addresses):
                raise BrickError(f"routing to {self.target}: owner expected {N_BUCKETS} replica "
                                 f"indices in [0, {len(self.addresses)}), got shape {own.shape}")
            self.owner = own
        self._next = 0
        self.version += 1

    def remove(self, index: int) -> None:
        """Stop sending to replica ``index`` (it died). Round robin skips it; under
        ``key`` its buckets have no live owner and their rows are dropped (counted)
        until the controller moves the buckets and their state."""
        if 0 <= index < len(self.live):
            self.live[index] = False
            self.version += 1

    def peek(self) -> int | None:
        """The replica round robin gives the next batch to (None: key routing, or
        no live replica); :meth:`route` still decides."""
        if self.policy != "round_robin":
            return None
        k = len(self.addresses)
        return next(((self._next + j) % k for j in range(k) if self.live[(self._next + j) % k]),
                    None)

    def route(self, msg: Message, splitter: Splitter | None = None) -> list[tuple[int, Message]]:
        """(replica index, message) pairs for one message; an index may be dead
        (the caller counts those as dropped)."""
        if msg.kind == "end":
            return [(i, msg) for i in range(len(self.addresses)) if self.live[i]]
        if self.policy == "round_robin":
            if not any(self.live):
                return [(-1, msg)]
            k = len(self.addresses)
            for _ in range(k):
                i = self._next
                self._next = (self._next + 1) % k
                if self.live[i]:
                    return [(i, msg)]
        if splitter is None:
            raise BrickError(f"routing to {self.target}: key routing needs a splitter "
                             "from the sending brick's logic")
        parts = splitter(msg, self.owner, len(self.addresses))
        if len(parts) != len(self.addresses):
            raise BrickError(f"routing to {self.target}: splitter returned {len(parts)} "
                             f"parts for {len(self.addresses)} replicas")
        return list(enumerate(parts))
