"""The switch side of the controller: keep one switch in the desired state.

The logic is pure (:mod:`.switch_state` turns a plan and an assignment into
entries and differences; :mod:`.switch_rebalance` turns counters into bucket
moves); this module is the I/O edge that reads the switch, asks the logic, and
writes only what differs, through a :class:`~lego.control.p4rt_client.P4RuntimeClient`.

- :meth:`SwitchManager.sync` makes the switch hold the plan: it checks the
  running pipeline (pushes it when missing or foreign, e.g. after a switch
  restart), reads the managed tables and clone sessions, and writes the
  difference, so a restarted controller rewrites nothing that is correct. A
  manager created without an assignment adopts the switch's own when every
  bucket has a replica owner (a controller restart keeps the rebalanced
  buckets), else deals the buckets round robin.
- :meth:`SwitchManager.rebalance` reads the per-bucket counters (deltas since
  the last read), computes the moves, and applies them; :meth:`scale_out` and
  :meth:`scale_in` do the same on a new replica set (plus its clone sessions
  and port roles).
- Every assignment change calls ``hooks.on_buckets_moving(moves)`` before the
  table write and ``hooks.on_buckets_moved(moves, seq_hint)`` after it, where
  ``seq_hint[old_port]`` is the port-out packet counter of each old owner read
  right after the write: a Write is applied between two frame batches, so once
  an old owner has received that many packets it holds every packet sent to it
  before the change.

Not thread-safe: one caller drives a manager.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from p4.config.v1 import p4info_pb2

from lego.control.p4rt_client import P4RuntimeClient, default_device_config, pipeline_cookie
from lego.control.p4rt_errors import PipelineMissing, WriteError
from lego.control.policy_buckets import initial_assignment
from lego.control.switch_rebalance import (
    BucketMove,
    CounterDeltas,
    bucket_loads,
    plan_moves,
    replica_load,
)
from lego.control.switch_state import (
    MANAGED_TABLES,
    Change,
    SwitchPlan,
    SwitchState,
    apply_changes,
    desired_state,
    diff,
    state_from_rows,
)
from lego.errors import ConfigError
from lego.p4src import contract as pl
from lego.p4src.p4info import load_p4info

EPOCHS = 128  # the shim carries the epoch in 7 bits

log = logging.getLogger(__name__)


class MoveHooks(Protocol):
    """What the state-move coordinator is told around an assignment change."""

    def on_buckets_moving(self, moves: list[BucketMove]) -> None: ...

    def on_buckets_moved(self, moves: list[BucketMove], seq_hint: dict[int, int]) -> None: ...


class NoHooks:
    def on_buckets_moving(self, moves: list[BucketMove]) -> None:
        pass

    def on_buckets_moved(self, moves: list[BucketMove], seq_hint: dict[int, int]) -> None:
        pass


@dataclass
class SyncReport:
    pipeline_pushed: bool
    reason: str  # why the pipeline was (not) pushed
    changes: int  # updates written
    write_rpcs: int
    adopted: bool  # the assignment was taken from the switch


class SwitchManager:
    """Desired state of one switch, and the reads and writes that keep it."""

    def __init__(self, client: P4RuntimeClient, plan: SwitchPlan,
                 owners: np.ndarray | None = None, *, p4info: p4info_pb2.P4Info | None = None,
                 device_config: bytes | None = None, hooks: MoveHooks | None = None,
                 tolerance: float = 0.1, mirror_weight: float = 0.5,
                 max_moves: int | None = None, batch_size: int = 0):
        self.client = client
        self.plan = plan
        self.owners: np.ndarray | None = None
        if owners is not None:
            self.owners = np.asarray(owners, dtype=np.int64).copy()
            desired_state(plan, self.owners)  # validate now
        self.p4info = p4info if p4info is not None else load_p4info()
        self.device_config = default_device_config() if device_config is None else device_config
        self.cookie = pipeline_cookie(self.p4info, self.device_config)
        self.hooks: MoveHooks = hooks or NoHooks()
        self.tolerance = tolerance
        self.mirror_weight = mirror_weight
        self.max_moves = max_moves
        if batch_size < 0:
            raise ConfigError(f"batch_size: expected >= 0 (0: one Write), got {batch_size}")
        self.batch_size = batch_size
        self.epoch = 0  # split_group's assignment epoch (shim flags bits 1..7)
        self.installed: SwitchState | None = None  # None: unknown, read before writing
        self.deltas = CounterDeltas()
        self.last_loads: np.ndarray = np.zeros(pl.N_BUCKETS)

    # ------------------------------------------------------------------ sync
    def _ensure_pipeline(self) -> tuple[bool, str]:
        try:
            cfg = self.client.get_pipeline()
        except PipelineMissing as exc:
            reason = f"no pipeline on the switch ({exc})"
        else:
            if cfg.cookie.cookie == self.cookie:
                return False, "running pipeline has our cookie"
            if cfg.p4info.SerializeToString(deterministic=True) == \
                    self.p4info.SerializeToString(deterministic=True):
                return False, "running pipeline has our P4Info"
            reason = "running pipeline differs from ours"
        log.info("switch %s: pushing the pipeline: %s", self.client.switch, reason)
        self.client.set_pipeline(self.p4info, self.device_config)
        self.client.get_pipeline()  # resolve names from what now runs
        self.deltas.reset()
        return True, reason

    def read_state(self) -> SwitchState:
        """What the switch holds in the managed tables and clone sessions."""
        rows = self.client.read_tables(MANAGED_TABLES)
        return state_from_rows(rows, self.client.read_clone_sessions())

    def sync(self) -> SyncReport:
        """Make the switch hold the plan; write only the difference."""
        pushed, reason = self._ensure_pipeline()
        current = self.read_state()
        adopted = False
        if self.owners is None:
            have = current.owners()
            if (have >= 0).all() and set(np.unique(have).tolist()) <= set(self.plan.replica_ports):
                self.owners, adopted = have, True
                self.epoch = current.epoch()
            else:
                self.owners = initial_assignment(pl.N_BUCKETS, list(self.plan.replica_ports))
        self.installed = current
        # the version frames do not read stays as it is (a move cut short may have
        # half-written it; frames read the other until the epoch changes); on a fresh
        # switch both get the assignment, so that a move writes only its own buckets
        idle = current.owners(version=1 - (self.epoch & 1))
        idle = None if (idle < 0).all() else idle
        changes = diff(current, desired_state(self.plan, self.owners, self.epoch, idle))
        rpcs = self._write(changes)
        log.info("switch %s: sync wrote %d updates in %d Write(s)%s", self.client.switch,
                 len(changes), rpcs, " (assignment adopted)" if adopted else "")
        return SyncReport(pushed, reason, len(changes), rpcs, adopted)

    def recover(self) -> SyncReport:
        """Reconnect (with the client's backoff), then sync: after a lost stream or a
        switch restart."""
        self.client.reconnect()
        self.installed = None
        return self.sync()

    def _write(self, changes: list[Change]) -> int:
        if not changes:
            return 0
        names = self.client.names
        updates = [names.update(c.op, c.item) for c in changes]
        rpcs = 0
        try:
            for off, chunk in self._chunks(updates):
                try:
                    rpcs += self.client.write(chunk)
                except WriteError as exc:
                    failures = [dataclasses.replace(f, index=f.index + off)
                                for f in exc.failures]
                    raise WriteError(exc.switch, failures, len(updates)) from None
        except BaseException:
            self.installed = None  # partly written: read it back next time
            raise
        self.installed = apply_changes(self.installed or SwitchState(), changes)
        return rpcs

    def _chunks(self, updates: list):
        """Batches of ``batch_size``, in order: the owner entries go to the version no
        frame reads, and the epoch that switches to it comes after them (diff's order),
        so a boundary anywhere is safe."""
        step = self.batch_size or len(updates)
        for off in range(0, len(updates), step):
            yield off, updates[off:off + step]

    # ------------------------------------------------------------------ assignment
    def _require_installed(self) -> SwitchState:
        if self.installed is None or self.owners is None:
            self.sync()
        return self.installed

    def read_loads(self, now: float) -> np.ndarray:
        """Per-bucket load since the previous read (see :func:`bucket_loads`)."""
        c = self.client.read_counters([pl.C_BUCKET, pl.C_MIRROR_BUCKET])
        d = self.deltas.update(c, now)
        self.last_loads = bucket_loads(d[pl.C_BUCKET], d[pl.C_MIRROR_BUCKET], self.mirror_weight)
        return self.last_loads

    def replica_loads(self) -> dict[int, float]:
        """Load per replica in the last read, under the current assignment."""
        return replica_load(self.owners, self.last_loads, self.plan.replica_ports)

    def rebalance(self, now: float) -> list[BucketMove]:
        """Move buckets so that no replica carries more than (1 + tolerance) x the mean
        of the load measured since the last read; returns the moves (maybe none)."""
        return self._reassign(self.plan, now)

    def scale_out(self, port: int, now: float) -> list[BucketMove]:
        """Add replica ``port`` (its clone session and role), and give it buckets."""
        if port in self.plan.replica_ports:
            raise ConfigError(f"scale_out: port {port} is already a replica "
                              f"{list(self.plan.replica_ports)}")
        return self._reassign(self.plan.with_replicas(self.plan.replica_ports + (port,)), now)

    def scale_in(self, port: int, now: float) -> list[BucketMove]:
        """Move every bucket of replica ``port`` to the others, then drop its session."""
        if port not in self.plan.replica_ports:
            raise ConfigError(f"scale_in: port {port} is not a replica "
                              f"{list(self.plan.replica_ports)}")
        if len(self.plan.replica_ports) == 1:
            raise ConfigError(f"scale_in: port {port} is the last replica")
        rest = tuple(p for p in self.plan.replica_ports if p != port)
        return self._reassign(self.plan.with_replicas(rest), now)

    def _reassign(self, plan: SwitchPlan, now: float) -> list[BucketMove]:
        self._require_installed()
        loads = self.read_loads(now)
        new, moves = plan_moves(self.owners, loads, plan.replica_ports, self.tolerance,
                                self.max_moves)
        self.apply(plan, new, moves)
        return moves

    def apply(self, plan: SwitchPlan, owners: np.ndarray,
              moves: list[BucketMove] | None = None) -> list[BucketMove]:
        """Install ``plan`` with ``owners``, telling the hooks about the moved buckets.

        On a failed write (:class:`WriteError`, or the switch gone) the new plan
        stays desired and ``installed`` unknown: :meth:`sync` completes it, and
        ``on_buckets_moved`` is not called for these moves."""
        installed = self._require_installed()
        owners = np.asarray(owners, dtype=np.int64)
        if moves is None:
            old = self.owners
            moves = [BucketMove(int(b), int(old[b]), int(owners[b]))
                     for b in np.flatnonzero(old != owners)]
        previous = None
        if moves:  # the new owners go into the version frames do not read, then a new
            # epoch switches every frame to it at once: replicas tell the frames of the
            # old assignment from the new (lego.bricks.moves cuts there), exactly,
            # even on a target that applies a Write's updates one by one (BMv2)
            self.epoch = (self.epoch + 1) % EPOCHS
            previous = self.owners
        changes = diff(installed, desired_state(plan, owners, self.epoch, previous))
        if moves:
            self.hooks.on_buckets_moving(moves)
        # the new plan is desired from here on: if the write fails part-way, the
        # next sync() completes it (the moves stay pending for the hooks' owner)
        self.plan, self.owners = plan, owners.copy()
        self._write(changes)
        if moves:
            olds = sorted({m.old_port for m in moves if m.old_port >= 0})
            seq = self.client.read_counters([pl.C_PORT_OUT], olds)[pl.C_PORT_OUT] if olds \
                else None
            hint = {p: int(seq[p % pl.N_PORTS, 0]) for p in olds} if seq is not None else {}
            log.info("switch %s: moved %d buckets away from ports %s", self.client.switch,
                     len(moves), olds)
            self.hooks.on_buckets_moved(moves, hint)
        return moves

