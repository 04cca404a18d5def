"""The state-move protocol on live feature-extraction bricks: the switch's move hooks.

:class:`~lego.control.switch_manager.SwitchManager` calls these hooks around each
switch write that moves buckets; they run :mod:`lego.control.state_move`'s
protocol on the FE bricks through their Ray actors
(:mod:`lego.bricks.moves` is the brick's side):

- ``on_buckets_moving``: each destination's FE brick holds the packets of its
  incoming buckets (closure rule) and acknowledges before the switch is written;
  each source stops at the write, so that it exports exactly the state before it;
- ``on_buckets_moved(moves, seq_hint)``: each source FE brick processes the
  packets the switch sent it before the write (``seq_hint`` minus what the port
  carried before the brick's source started), exports each transfer (excluding
  the pairs the destination already holds) and drops what it no longer owns; the
  destination imports the blobs and releases the held packets in order;
- ``cancel``: the write failed, every engaged brick goes on as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from lego.control.registry import brick_name
from lego.control.state_move import plan_move
from lego.errors import LegoError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the runtime owns the hooks; imported for the annotation only
    from lego.control.runtime import ControllerRuntime


class LiveMoves:
    """SwitchManager hooks: the state-move protocol on live FE bricks."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.transfer = True
        self.rebuilt = False  # moves without a transfer whose state is rebuilt elsewhere
        self._before: np.ndarray | None = None
        self.log: list[dict[str, Any]] = []
        self._held_seen: dict[str, int] = {}  # FE brick -> rows it held, all moves
        self._engaged: list[int] = []  # ports whose FE brick the current move engaged

    def _fq(self, port: int) -> str | None:
        """The FE brick of ``port``'s graph, if its host is alive."""
        core = self.rt.core
        g = core.graphs.get(port)
        if g is None or core.hosts.get(g.host) is None or not core.hosts[g.host].alive:
            return None
        return brick_name(core.chain.keyed, port)

    def _rows_held(self, brick: str) -> int:
        """Packets ``brick`` held (closure rule) since the last count: its move counters."""
        try:
            rows = int(self.rt.engine.request(brick, {"op": "move_stats"}).get("rows_held", 0))
        except LegoError:
            return 0
        seen = self._held_seen.get(brick, 0)
        self._held_seen[brick] = max(rows, seen)
        return max(0, rows - seen)

    def on_buckets_moving(self, moves) -> None:
        self._before = self.rt.manager.owners.copy()
        self._engaged = []
        if not self.transfer:
            return
        incoming: dict[int, list[int]] = {}
        for m in moves:
            incoming.setdefault(m.new_port, []).append(m.bucket)
        # sources stop at the write, so they export exactly the state before it
        sources = sorted({m.old_port for m in moves if m.old_port >= 0})
        commands = [(port, {"op": "prepare"}) for port in sources]
        commands += [(port, {"op": "hold", "buckets": b}) for port, b in incoming.items()]
        for port, cmd in commands:
            brick = self._fq(port)
            if brick is None:
                continue
            self.rt.recovery.moving(port)  # its checkpoint is stale from now
            reply = self.rt.engine.request(brick, cmd)
            if not reply.get("ok", True):
                raise LegoError(f"{cmd['op']} on {brick}: {reply}")
            self._engaged.append(port)

    def cancel(self) -> None:
        """The switch write failed: every engaged FE brick goes on as before."""
        for port in dict.fromkeys(self._engaged):
            brick = self._fq(port)
            if brick is not None:
                self.rt.engine.request(brick, {"op": "cancel"})
            self.rt.recovery.moved(port)
        self._engaged = []

    def on_buckets_moved(self, moves, seq_hint: dict[int, int]) -> None:
        t0 = time.monotonic()
        old = self._before
        new = self.rt.manager.owners
        gone = "rebuilt_buckets" if self.rebuilt else "lost_buckets"
        record: dict[str, Any] = {"buckets": len(moves), "transfers": 0, "entries": 0,
                                  "bytes": 0, "lost_buckets": 0, gone: 0}
        blobs: dict[int, list[bytes]] = {}
        transfers = plan_move(np.where(old < 0, new, old), new)
        by_src: dict[int, list] = {}
        for t in transfers:
            by_src.setdefault(t.src, []).append(t)
        with self._boosted(list(by_src), record):
            self._export(by_src, seq_hint, record, blobs, gone)
        with self._boosted(sorted({m.new_port for m in moves}), record):
            self._import(moves, record, blobs)
        record["seconds"] = round(time.monotonic() - t0, 4)
        for port in self._engaged:  # a new checkpoint of each brick the move changed
            self.rt.recovery.moved(port)
        self.log.append(record)
        with self.rt.lock:
            self.rt.core.counters["moves"] += 1
            self.rt.core.counters["state_lost_buckets"] += record["lost_buckets"]
            self.rt.core.event(time.monotonic(), "state_moved", **record)

    def _export(self, by_src: dict[int, list], seq_hint: dict[int, int],
                record: dict[str, Any], blobs: dict[int, list[bytes]], gone: str) -> None:
        """Each old owner's transfers, exported once it has processed the packets the
        switch sent it before the write."""
        new = self.rt.manager.owners
        for src, ts in by_src.items():
            brick = self._fq(src) if self.transfer else None
            if brick is None:
                record[gone] += int(sum(t.buckets.sum() for t in ts))
                continue
            g = self.rt.core.graphs[src]
            after = max(0, seq_hint.get(src, 0) - g.base + g.adopted) if g.base >= 0 else 0
            for i, t in enumerate(ts):
                cmd = {"buckets": np.flatnonzero(t.buckets).tolist(),
                       "exclude": np.flatnonzero(t.exclude).tolist(), "after": after,
                       "epoch": self.rt.manager.epoch}
                if i == len(ts) - 1:
                    cmd["keep"] = np.flatnonzero(new == src).tolist()
                info, blob = self.rt.engine.export_state(brick, cmd)
                if not info.get("ok"):
                    raise LegoError(f"export from {brick}: {info}")
                blobs.setdefault(t.dst, []).append(blob)
                record["transfers"] += 1
                record["entries"] += info.get("entries", 0)
                record["bytes"] += len(blob)
                # where the source cut its stream: the write (by epoch), vs the count hint
                record.setdefault("export_at", {})[src] = {"cut": info.get("exported_at"),
                                                           "hint": after}

    def _import(self, moves, record: dict[str, Any], blobs: dict[int, list[bytes]]) -> None:
        """Each new owner imports its blobs and releases the packets it held."""
        for dst in sorted({m.new_port for m in moves}):
            brick = self._fq(dst)
            if brick is None or not self.transfer:
                continue
            reply = self.rt.engine.import_state(brick, blobs.get(dst, []))
            if not reply.get("ok"):
                raise LegoError(f"import into {brick}: {reply}")
            record["held"] = record.get("held", 0) + self._rows_held(brick)

    @contextmanager
    def _boosted(self, ports: list[int], record: dict[str, Any]) -> Iterator[None]:
        """The hosts of ``ports``' FE bricks on a larger CPU quota while the move
        waits on them (:meth:`ElasticDecisions.move_boost`), each given its own
        back after, whatever happened. Nothing changes without ``[scaling].resize``."""
        core = self.rt.core
        with self.rt.lock:  # a host lost meanwhile takes its graphs: skipped
            bricks = {p: self._fq(p) for p in ports} if self.transfer else {}
            hosts = {core.graphs[p].host: b for p, b in bricks.items()
                     if b is not None and p in core.graphs}
            before = {h: core.hosts[h].cores for h in hosts}
            plan = core.move_boost(list(hosts))
        raised: dict[str, float] = {}
        try:
            for host, cores in plan.items():
                try:
                    raised[host] = self.rt.engine.set_cores(hosts[host], cores)
                except LegoError as exc:  # the move goes on at the quota it has
                    log.warning("move boost of %s: %s", host, exc)
            with self.rt.lock:
                for host, cores in raised.items():
                    core.on_resized(time.monotonic(), host, cores, settled=False)
            if raised:
                record.setdefault("boost", {}).update(raised)
            yield
        finally:
            for host in plan:  # a raise that failed may still have been written
                try:
                    back = self.rt.engine.set_cores(hosts[host], before[host])
                except LegoError as exc:
                    log.warning("quota of %s after a move: %s", host, exc)
                    back = None if host in raised else before[host]
                with self.rt.lock:
                    core.on_resized(time.monotonic(), host, back)
