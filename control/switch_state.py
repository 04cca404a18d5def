"""What the controller wants on the switch, as data, and the difference to what is there.

Pure logic, no I/O (the manager, :mod:`.switch_manager`, reads and writes):

- :class:`SwitchPlan`: port roles (traffic-facing ports are split; NF-facing
  replica ports; ports whose frames are forwarded, e.g. alerts; everything else
  dropped by the table's default), the split groups (from Algorithm 1's
  :class:`~lego.control.granularity.SplitPlan`), the clone truncation and the
  window clock's period (a switch-held global state);
- :func:`desired_state`: a plan plus a bucket -> replica assignment -> a
  :class:`SwitchState` (entries by P4Info name): ``bucket_owner`` and
  ``mirror_owner`` written identically, in the version the epoch names and (the
  previous assignment) in the other, one clone session per replica port
  (session id = port + 1), and with a window clock its period and the window
  marks' session (every replica port);
- :func:`state_from_rows`: the same record from what a Read returned;
- :func:`diff`: the :class:`Change` list that turns one state into the other,
  ordered so that no frame can meet a half-made change even when a target
  applies the updates one by one: clone sessions first (an owner never points
  at a missing session), then the owner entries (of the version no frame reads
  yet), then port roles, then the defaults (split_group's new epoch switches
  every frame to the new version at once), then deletions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from lego.control.granularity import SplitGroup, SplitPlan, Verdict
from lego.control.p4rt_entities import DELETE, INSERT, MODIFY, CloneSpec, Pairs, TableRow, pairs
from lego.errors import ConfigError
from lego.p4src import contract as pl

MANAGED_TABLES = (pl.T_PORT_ROLE, pl.T_SPLIT_GROUP, pl.T_BUCKET_OWNER, pl.T_MIRROR_OWNER,
                  pl.T_WINDOW_CLOCK, pl.T_FRAME_LOG)
MAX_PORT = 510  # 511 is BMv2's drop port
MAX_WINDOW_US = (1 << 47) - 1  # the 48-bit register holds start + period

#: the split groups lego.p4 hashes: what the controller may install
GROUP_IDS = {SplitGroup.SRC_MAC_SRC_IP: pl.GROUP_SRCMAC_SRCIP, SplitGroup.SRC_IP: pl.GROUP_SRCIP,
             SplitGroup.SRC_IP_DST_IP: pl.GROUP_SRCIP_DSTIP, SplitGroup.SOCKET: pl.GROUP_SOCKET,
             SplitGroup.DST_IP: pl.GROUP_DSTIP,
             SplitGroup.SRC_IP_DST_IP_SYM: pl.GROUP_SRCIP_DSTIP_SYM,
             SplitGroup.SOCKET_SYM: pl.GROUP_SOCKET_SYM}

# the program's own defaults (what a table holds when nobody wrote its default), but
# split_group's: that one is the plan's, always written (it carries the epoch)
INITIAL_DEFAULTS = {t: (a, pairs(p)) for t, (a, p) in pl.INITIAL_DEFAULTS.items()
                    if t != pl.T_SPLIT_GROUP}


def split_groups(plan: SplitPlan) -> tuple[int, int]:
    """(primary, mirror) group ids of ``lego.p4`` for Algorithm 1's plan."""
    if plan.verdict is Verdict.NO_EXACT_SPLIT or plan.primary is None:
        raise ConfigError(f"split plan: expected a plan the dataplane can install, got "
                          f"{plan.describe()!r}; pass explicit groups instead")
    mirror = pl.GROUP_NONE
    if plan.verdict is Verdict.SPLIT_AND_MIRROR and plan.mirror is not None:
        mirror = group_id(plan.mirror)
    return group_id(plan.primary), mirror


def group_id(group: SplitGroup) -> int:
    """The ``lego.p4`` group id the switch is given for ``group``."""
    if group not in GROUP_IDS:
        raise ConfigError(f"split group {group.name}: expected one of "
                          f"{[g.name for g in GROUP_IDS]}")
    return GROUP_IDS[group]


def _check_port(port: int, what: str, highest: int = MAX_PORT) -> int:
    if not isinstance(port, int | np.integer) or not 0 <= int(port) <= highest:
        raise ConfigError(f"switch plan: {what} must be a port in 0..{highest}, got {port!r}")
    return int(port)


@dataclass(frozen=True)
class SwitchPlan:
    """Port roles, split groups and clone truncation (the assignment is separate).

    ``traffic_ports``: frames are split over the replicas. ``replica_ports``:
    NF-facing ports that own buckets (frames *from* them are dropped unless
    ``forward`` names them). ``forward``: port -> port its frames go to unchanged.
    ``groups``: (primary, mirror) ``lego.p4`` group ids. ``truncate``: clone
    length in bytes (0: whole frames). ``window_us``: the window clock's period in
    microseconds (0: no clock), for an NF whose global state the switch holds.
    ``log_port``: the frame log's port (None: no log), where each frame sent to a
    replica is copied, off the NF hosts, for a lost host's exact recovery.
    """

    traffic_ports: tuple[int, ...]
    replica_ports: tuple[int, ...]
    groups: tuple[int, int] = (pl.GROUP_SRCIP, pl.GROUP_NONE)
    forward: Mapping[int, int] = field(default_factory=dict)
    truncate: int = 0
    window_us: int = 0
    log_port: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "traffic_ports", tuple(int(p) for p in self.traffic_ports))
        object.__setattr__(self, "replica_ports", tuple(int(p) for p in self.replica_ports))
        object.__setattr__(self, "forward", dict(self.forward))
        if isinstance(self.window_us, np.integer):
            object.__setattr__(self, "window_us", int(self.window_us))
        for p in self.traffic_ports:
            _check_port(p, "a traffic port")
        for p in self.replica_ports:  # its clone session must not be the window marks'
            _check_port(p, "a replica port", pl.MAX_REPLICA_PORT)
        for a, b in self.forward.items():
            _check_port(a, "a forwarded port")
            _check_port(b, f"the forward target of port {a}")
        if self.log_port is not None:
            _check_port(self.log_port, "the frame log's port")
            if self.log_port in (*self.traffic_ports, *self.replica_ports, *self.forward):
                raise ConfigError(f"switch plan: the frame log's port {self.log_port} is "
                                  "also a traffic, replica or forwarded port")
        if not self.replica_ports:
            raise ConfigError("switch plan: expected at least one replica port, got none")
        if len(set(self.replica_ports)) != len(self.replica_ports):
            raise ConfigError(f"switch plan: replica ports must be distinct, got "
                              f"{list(self.replica_ports)}")
        both = sorted(set(self.traffic_ports) & (set(self.replica_ports) | set(self.forward)))
        if both:
            raise ConfigError(f"switch plan: ports {both} are both traffic-facing and "
                              "NF-facing/forwarded")
        p, m = self.groups
        if p not in pl.GROUP_NAMES or (m != pl.GROUP_NONE and m not in pl.GROUP_NAMES):
            raise ConfigError(f"switch plan: groups must be lego.p4 group ids "
                              f"{sorted(pl.GROUP_NAMES)} (mirror may be 0), got {self.groups}")
        if not 0 <= self.truncate <= 0xFFFF:
            raise ConfigError(f"switch plan: truncate must be in 0..65535 bytes, got "
                              f"{self.truncate}")
        if isinstance(self.window_us, bool) or not isinstance(self.window_us, int | np.integer) \
                or not 0 <= self.window_us <= MAX_WINDOW_US:
            raise ConfigError(f"switch plan: window_us must be an integer in "
                              f"0..{MAX_WINDOW_US} microseconds, got {self.window_us!r}")

    @classmethod
    def from_split(cls, split: SplitPlan, traffic_ports: Iterable[int],
                   replica_ports: Iterable[int], **kw) -> SwitchPlan:
        return cls(tuple(traffic_ports), tuple(replica_ports), split_groups(split), **kw)

    def with_replicas(self, replica_ports: Iterable[int]) -> SwitchPlan:
        return SwitchPlan(self.traffic_ports, tuple(replica_ports), self.groups,
                          self.forward, self.truncate, self.window_us, self.log_port)


@dataclass
class SwitchState:
    """Entries by P4Info name: (table, key) -> (action, params); table -> default;
    session id -> clone session."""

    entries: dict[tuple[str, Pairs], tuple[str, Pairs]] = field(default_factory=dict)
    defaults: dict[str, tuple[str, Pairs]] = field(default_factory=dict)
    clone_sessions: dict[int, CloneSpec] = field(default_factory=dict)

    def owners(self, table: str = pl.T_BUCKET_OWNER, version: int | None = None
               ) -> np.ndarray:
        """int64[N_BUCKETS] replica port per bucket (-1: unowned) of an owner table, in
        ``version`` (default: the one frames read, the epoch's low bit)."""
        version = self.epoch() & 1 if version is None else version
        act = pl.A_TO_REPLICA if table == pl.T_BUCKET_OWNER else pl.A_MIRROR_TO
        out = np.full(pl.N_BUCKETS, -1, dtype=np.int64)
        for (t, k), (a, params) in self.entries.items():
            if t == table and a == act:
                v, b = owner_key(k)
                if v == version and 0 <= b < pl.N_BUCKETS:
                    out[b] = dict(params)["port"]
        return out

    def epoch(self) -> int:
        """The assignment epoch in split_group's default action (0 if none)."""
        action = self.defaults.get(pl.T_SPLIT_GROUP)
        return int(dict(action[1]).get("epoch", 0)) if action else 0

    def copy(self) -> SwitchState:
        return SwitchState(dict(self.entries), dict(self.defaults), dict(self.clone_sessions))


def check_owners(owners: np.ndarray, plan: SwitchPlan) -> np.ndarray:
    owners = np.asarray(owners, dtype=np.int64)
    if owners.shape != (pl.N_BUCKETS,):
        raise ConfigError(f"bucket assignment: expected {pl.N_BUCKETS} owners, got shape "
                          f"{owners.shape}")
    stray = sorted(set(np.unique(owners).tolist()) - set(plan.replica_ports))
    if stray:
        raise ConfigError(f"bucket assignment: owners {stray} are not replica ports "
                          f"{list(plan.replica_ports)}")
    return owners


def owner_key(key: Pairs) -> tuple[int, int]:
    """(version, bucket) of an owner table's match key."""
    k = dict(key)
    return k.get("meta.version", -1), k.get("meta.bucket", k.get("meta.mirror_bucket", -1))


def desired_state(plan: SwitchPlan, owners: np.ndarray, epoch: int = 0,
                  previous: np.ndarray | None = None) -> SwitchState:
    """``owners`` in the version ``epoch`` names, ``previous`` (default: ``owners``)
    in the other: what frames read until the epoch changes, during a move."""
    owners = check_owners(owners, plan)
    previous = owners if previous is None else np.asarray(previous, dtype=np.int64)
    s = SwitchState()
    for port in plan.traffic_ports:
        s.entries[(pl.T_PORT_ROLE, pairs({"standard_metadata.ingress_port": port}))] = \
            (pl.A_ROLE_TRAFFIC, ())
    for port in plan.replica_ports:
        if port not in plan.forward:
            s.entries[(pl.T_PORT_ROLE, pairs({"standard_metadata.ingress_port": port}))] = \
                (pl.A_ROLE_DROP, ())
    for port, out in plan.forward.items():
        s.entries[(pl.T_PORT_ROLE, pairs({"standard_metadata.ingress_port": port}))] = \
            (pl.A_ROLE_FORWARD, pairs({"port": out}))
    primary, mirror = plan.groups
    s.defaults[pl.T_SPLIT_GROUP] = (pl.A_SET_GROUPS, pairs({"primary": primary,
                                                            "mirror": mirror, "epoch": epoch}))
    s.defaults.update(INITIAL_DEFAULTS)
    log = () if plan.log_port is None else (plan.log_port,)  # the last replica of each
    if log:
        s.defaults[pl.T_FRAME_LOG] = (pl.A_LOG_FRAMES, ())
        s.clone_sessions[pl.FRAME_LOG_SESSION] = CloneSpec(pl.FRAME_LOG_SESSION, log, 0)
    if plan.window_us:
        s.defaults[pl.T_WINDOW_CLOCK] = (pl.A_SET_WINDOW, pairs({"period": plan.window_us}))
        s.clone_sessions[pl.WINDOW_MARK_SESSION] = CloneSpec(  # lego.p4 cuts marks
            pl.WINDOW_MARK_SESSION, (*sorted(plan.replica_ports), *log), 0)
    version = epoch & 1
    for v, assignment in ((version, owners), (1 - version, previous)):
        for b, port in enumerate(assignment.tolist()):
            if port < 0:
                continue
            s.entries[(pl.T_BUCKET_OWNER, pairs({"meta.version": v, "meta.bucket": b}))] = \
                (pl.A_TO_REPLICA, (("port", port),))
            s.entries[(pl.T_MIRROR_OWNER, pairs({"meta.version": v, "meta.mirror_bucket": b}))] = \
                (pl.A_MIRROR_TO, (("port", port),))
    for port in plan.replica_ports:
        sid = port + pl.CLONE_SESSION_BASE
        s.clone_sessions[sid] = CloneSpec(sid, (port, *log), plan.truncate)
    return s


def state_from_rows(rows: Iterable[TableRow], sessions: Mapping[int, CloneSpec]) -> SwitchState:
    s = SwitchState(clone_sessions=dict(sessions))
    for r in rows:
        if r.table not in MANAGED_TABLES:
            continue
        if r.is_default:
            s.defaults[r.table] = (r.action or "", r.params)
        else:
            s.entries[(r.table, r.key)] = (r.action or "", r.params)
    return s


@dataclass(frozen=True)
class Change:
    op: int  # INSERT / MODIFY / DELETE (p4.v1 Update.Type)
    item: TableRow | CloneSpec


_TABLE_ORDER = {t: i for i, t in enumerate((pl.T_BUCKET_OWNER, pl.T_MIRROR_OWNER))}


def _owner_sort(k: tuple[str, Pairs]) -> tuple:
    # version, then bucket by bucket, bucket_owner before mirror_owner
    return (*owner_key(k[1]), _TABLE_ORDER.get(k[0], 9))


def diff(current: SwitchState, desired: SwitchState) -> list[Change]:
    """The changes that turn ``current`` into ``desired`` (nothing when they agree)."""
    out: list[Change] = []
    for sid, spec in sorted(desired.clone_sessions.items()):
        have = current.clone_sessions.get(sid)
        if have != spec:
            out.append(Change(INSERT if have is None else MODIFY, spec))
    owner_keys = sorted((k for k in desired.entries if k[0] in _TABLE_ORDER), key=_owner_sort)
    other_keys = sorted(k for k in desired.entries if k[0] not in _TABLE_ORDER)
    for key in owner_keys + other_keys:
        want = desired.entries[key]
        have = current.entries.get(key)
        if have != want:
            out.append(Change(INSERT if have is None else MODIFY,
                              TableRow(key[0], key[1], want[0], want[1])))
    for table, (action, params) in sorted(desired.defaults.items()):
        have = current.defaults.get(table, INITIAL_DEFAULTS.get(table))
        if have != (action, params):
            out.append(Change(MODIFY, TableRow(table, (), action, params, is_default=True)))
    for key in sorted(set(current.entries) - set(desired.entries), key=_owner_sort):
        out.append(Change(DELETE, TableRow(key[0], key[1], None)))
    for sid in sorted(set(current.clone_sessions) - set(desired.clone_sessions)):
        out.append(Change(DELETE, current.clone_sessions[sid]))
    return out


def apply_changes(state: SwitchState, changes: Iterable[Change]) -> SwitchState:
    """``state`` after ``changes`` (what the switch holds once a Write succeeded)."""
    s = state.copy()
    for c in changes:
        item = c.item
        if isinstance(item, CloneSpec):
            if c.op == DELETE:
                s.clone_sessions.pop(item.session_id, None)
            else:
                s.clone_sessions[item.session_id] = item
        elif item.is_default:
            s.defaults[item.table] = (item.action or "", item.params)
        elif c.op == DELETE:
            s.entries.pop((item.table, item.key), None)
        else:
            s.entries[(item.table, item.key)] = (item.action or "", item.params)
    return s
