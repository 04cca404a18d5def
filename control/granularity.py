"""Algorithm 1 of the paper: choose the traffic-split granularity of an NF.

An NF declares the *state groups* its features are keyed by (:class:`StateGroup`).
A group partitions traffic: two packets are in the same class when they agree on
the group's header fields. A *symmetric* group also puts a packet and its reverse
(source and destination swapped) in one class: the 2-D statistics that couple a
directed stream with its reverse. A group may instead declare that its state is
coupled to every peer's outbound stream (2-D statistics over all of a host's pairs): no header
group can hold such state.

Algorithm 1 works on the containment relation of those partitions: group G1 is
contained in G2 when every class of G1 lies inside one class of G2 (the split by
G2 keeps each G1 class whole). It returns the groups nothing contains (indegree
0). One result: split on it. Several: split on one and mirror the packets for
the others, where the dataplane can express it (:func:`plan_split`); otherwise
there is no exact split and the plan names the features affected. Where every
maximal group is symmetric and the dataplane hashes that very key with its two
endpoints ordered (:attr:`SplitGroup.SOCKET_SYM`, :attr:`SplitGroup.SRC_IP_DST_IP_SYM`),
the plan is a plain split on it: a flow and its reverse share one bucket, so no
mirror is needed.

An NF may also declare *global* state that no header group keys, such as a window
clock shared by all flows (:class:`GlobalState`). Held by the switch (a register
stamped on every frame), it is satisfied by any split; otherwise no split is exact.

Nothing here knows an NF: each declares its state groups through the NF boundary
(:mod:`lego.nfs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from lego.errors import ConfigError

# Header fields a group may be keyed by, and the direction swap of each.
SWAP = {
    "src_mac": "dst_mac",
    "dst_mac": "src_mac",
    "src_ip": "dst_ip",
    "dst_ip": "src_ip",
    "src_port": "dst_port",
    "dst_port": "src_port",
    "proto": "proto",
}
FIELDS = frozenset(SWAP)
DIRECTIONAL = frozenset(f for f in FIELDS if SWAP[f] != f)


@dataclass(frozen=True)
class HashedKey:
    """What a split group hashes: header ``fields``, and whether the two endpoints
    are ordered first (``symmetric``: a packet and its reply get one bucket)."""

    fields: frozenset[str]
    symmetric: bool = False


_SOCKET = frozenset({"src_ip", "dst_ip", "src_port", "dst_port", "proto"})


class SplitGroup(Enum):
    """The split groups the dataplane can hash on (``lego.p4``'s selector, and the
    symmetric variants of the two-endpoint groups: DESIGN §4)."""

    SRC_MAC_SRC_IP = HashedKey(frozenset({"src_mac", "src_ip"}))
    SRC_IP = HashedKey(frozenset({"src_ip"}))
    SRC_IP_DST_IP = HashedKey(frozenset({"src_ip", "dst_ip"}))
    SOCKET = HashedKey(_SOCKET)
    DST_IP = HashedKey(frozenset({"dst_ip"}))
    SRC_IP_DST_IP_SYM = HashedKey(frozenset({"src_ip", "dst_ip"}), symmetric=True)
    SOCKET_SYM = HashedKey(_SOCKET, symmetric=True)

    @property
    def fields(self) -> frozenset[str]:
        return self.value.fields

    @property
    def symmetric(self) -> bool:
        return self.value.symmetric

    @classmethod
    def for_fields(cls, fields: frozenset[str], symmetric: bool = False) -> SplitGroup | None:
        """The group hashing exactly ``fields`` (with the endpoints ordered when
        ``symmetric``), or None."""
        for group in cls:
            if group.value == HashedKey(frozenset(fields), symmetric):
                return group
        return None


@dataclass(frozen=True)
class StateGroup:
    """State an NF keeps per class of this partition of its traffic.

    ``fields``: the header fields of the key. ``symmetric``: the state is shared
    by a key and its reverse (a packet and its reply). ``peer_coupled``: updating
    the state also reads or updates the state of every peer the key has talked to
    (so it depends on traffic no header group delimits). ``features``: the names
    of the features computed from this state, for reports.
    """

    name: str
    fields: frozenset[str]
    symmetric: bool = False
    peer_coupled: bool = False
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", frozenset(self.fields))
        if not self.name:
            raise ConfigError("state group: a name is required")
        unknown = sorted(self.fields - FIELDS)
        if unknown:
            raise ConfigError(f"state group {self.name!r}: unknown header fields {unknown}; "
                              f"expected a subset of {sorted(FIELDS)}")
        if not self.fields:
            raise ConfigError(f"state group {self.name!r}: expected at least one header field")
        if self.symmetric and {SWAP[f] for f in self.fields} != self.fields:
            raise ConfigError(f"state group {self.name!r}: a symmetric group needs both directions "
                              f"of each field, got {sorted(self.fields)}")


@dataclass(frozen=True)
class GlobalState:
    """State that no header group keys: one value shared by all traffic (e.g. a
    window clock that every flow's fragments follow). ``switch_held``: the NF
    declares that the switch keeps it and stamps it on every frame (a register in
    the P4 program; DESIGN §4), so every replica reads the same value and the
    split need not keep it whole. Algorithm 1 takes the declaration at its word:
    the dataplane that holds it is the NF's deployment to provide."""

    name: str
    switch_held: bool = False
    features: tuple[str, ...] = ()


def contains(outer: StateGroup, inner: StateGroup) -> bool:
    """True when every class of ``inner`` lies inside one class of ``outer``."""
    if outer.symmetric:
        # an outer class holds a key and its reverse: it contains the inner class when
        # the inner key determines the outer key up to direction
        return outer.fields <= inner.fields
    if inner.symmetric:
        # an inner class spans both directions: only undirected outer fields agree on it
        return outer.fields <= inner.fields and not (outer.fields & DIRECTIONAL)
    return outer.fields <= inner.fields


def _validate(groups: list[StateGroup]) -> None:
    if not groups:
        raise ConfigError("NF declaration: expected at least one state group, got none")
    names = [g.name for g in groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"NF declaration: state group names must be unique, repeated: {dupes}")
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            if contains(a, b) and contains(b, a):
                raise ConfigError(
                    f"NF declaration: groups {a.name!r} and {b.name!r} partition traffic "
                    "identically (a cycle in the containment relation); declare it once")


def algorithm1(groups: list[StateGroup]) -> list[StateGroup]:
    """The groups no other group contains (indegree 0), in declaration order."""
    _validate(groups)
    indegree = {g.name: 0 for g in groups}
    for g1 in groups:
        for g2 in groups:
            if g1 is not g2 and contains(g2, g1):
                indegree[g1.name] += 1
    return [g for g in groups if indegree[g.name] == 0]


class Verdict(Enum):
    SPLIT = "split"  # one group: hash on it, no mirrors
    SPLIT_AND_MIRROR = "split+mirror"  # hash on the primary, clone to the mirror group's owner
    NO_EXACT_SPLIT = "no exact split"


@dataclass(frozen=True)
class SplitPlan:
    verdict: Verdict
    maximal: tuple[str, ...]
    primary: SplitGroup | None = None
    mirror: SplitGroup | None = None
    reason: str = ""
    affected_features: tuple[str, ...] = field(default=())
    switch_held: tuple[str, ...] = ()  # global state the switch holds (stamped per frame)

    def describe(self) -> str:
        held = f", with {', '.join(self.switch_held)} held by the switch" \
            if self.switch_held else ""
        if self.verdict is Verdict.SPLIT:
            if self.primary.symmetric:
                return (f"split on {self.primary.name} (symmetric: both directions of a flow "
                        f"in one bucket), no mirror{held}")
            return f"split on {self.primary.name}{held}"
        if self.verdict is Verdict.SPLIT_AND_MIRROR:
            return (f"split on {self.primary.name}, mirror to the owner of "
                    f"{self.mirror.name}{held}")
        return f"no exact split: {self.reason}"


def plan_split(groups: list[StateGroup], global_state: Sequence[GlobalState] = ()
               ) -> SplitPlan:
    """Turn Algorithm 1's answer into what the dataplane installs. Global state the
    switch holds is satisfied whatever the split; any other global state is kept
    whole by no split."""
    maximal = algorithm1(groups)
    names = tuple(g.name for g in maximal)
    loose = [g for g in global_state if not g.switch_held]
    if loose:
        return SplitPlan(
            Verdict.NO_EXACT_SPLIT, names,
            reason="state " + ", ".join(repr(g.name) for g in loose) + " is shared by all "
            "traffic and not held by the switch, so no split keeps it whole",
            affected_features=tuple(f for g in loose for f in g.features))
    held = tuple(g.name for g in global_state)
    plan = _plan_groups(groups, maximal, names)
    return replace(plan, switch_held=held) if held else plan


def _plan_groups(groups: list[StateGroup], maximal: list[StateGroup],
                 names: tuple[str, ...]) -> SplitPlan:
    coupled = [g for g in groups if g.peer_coupled]
    if coupled:
        return SplitPlan(
            Verdict.NO_EXACT_SPLIT, names,
            reason="state of " + ", ".join(repr(g.name) for g in coupled)
            + " is coupled to every peer's outbound stream, which no header group delimits",
            affected_features=tuple(f for g in coupled for f in g.features))
    directed = [g for g in maximal if not g.symmetric]
    symmetric = [g for g in maximal if g.symmetric]
    if not directed:
        # the state's own key up to direction, hashed with the endpoints ordered: each
        # class (a flow and its reverse) lands whole in one bucket, no mirror needed
        exact = [h for h in SplitGroup
                 if h.symmetric and all(s.fields == h.fields for s in symmetric)]
        if exact:
            return SplitPlan(Verdict.SPLIT, names, primary=exact[0])
    # only symmetric groups: hash on the source address, mirror to the destination's owner
    keys = [directed[0].fields] if len(directed) == 1 else []
    if not directed and all({"src_ip", "dst_ip"} <= s.fields for s in symmetric):
        keys = [SplitGroup.SRC_IP.fields]
    if keys:
        primary = SplitGroup.for_fields(keys[0])
        mirror = SplitGroup.for_fields(frozenset(SWAP[f] for f in keys[0]))
        # a symmetric group is held whole by the owners of both ends when its key
        # contains the primary key and that key's reverse
        covered = all(keys[0] | {SWAP[f] for f in keys[0]} <= s.fields for s in symmetric)
        if primary is not None and mirror is not None and covered:
            if not symmetric:
                return SplitPlan(Verdict.SPLIT, names, primary=primary)
            return SplitPlan(Verdict.SPLIT_AND_MIRROR, names, primary=primary, mirror=mirror)
    return SplitPlan(
        Verdict.NO_EXACT_SPLIT, names,
        reason=f"the maximal groups {list(names)} cannot be covered by one hashed group and "
        "one mirrored group of the dataplane",
        affected_features=tuple(f for g in maximal for f in g.features))
