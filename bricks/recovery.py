"""Exact recovery of a dead brick: checkpoints, logs kept upstream, replay.

The controller (:mod:`lego.control.runtime`) drives it; this module is what the
bricks do. The idea is CHC's: a failed instance's state is its last checkpoint
plus the packets logged upstream since, replayed in order.

- **Checkpoints of a keyed brick** (``{"op": "checkpoint", "path": P}``): between
  two batches, its whole keyed state (the state-move export of every bucket) to
  ``P`` and its *position*: the source's frame count after the last frame it
  took (each source batch carries the count before it, ``meta.taken0``). The
  blob travels to the controller (Ray's object store), off the brick's host. A
  brick with a move under way answers ``busy``: its state is in flux.
- **The source's log** (:class:`SentLog`, ``BrickSpec.replay_log_mib``): every
  batch it sent, kept until a checkpoint covers it (``{"op": "trim", "upto":
  P}``), bounded in bytes (the oldest go first, counted).
- **A keyed successor** (the brick restarted by Ray, ``recover`` option) waits
  for ``{"op": "restore", "path": P, "position": N}`` before it takes any frame:
  it imports the checkpoint, and from then on takes the port's frames by
  position (:func:`sequenced`), once each and in order: what the dead one's
  source re-sends from its log (``{"op": "replay", "from": N}``) and what it sends
  anew, whichever comes first; a frame before the position is a duplicate, a
  batch after a gap waits for the gap (in a brick never restored, frames a gap
  skips are counted, never waited for: a link may drop). Without a
  checkpoint (``restore`` with no path) it goes on from the next frame with
  empty state: the loss is the controller's to report.
- **The keyed brick's output log** (``BrickSpec.output_log_mib``): its last
  output batches, so that when a stateless brick after it dies, the batches in
  flight to it are sent again (``{"op": "resend", "from_batch": B}``, ``B`` the
  decision's next batch): the stateless bricks recompute them, the decision
  keeps the first copy of each batch.

Outputs a replay recomputes are the dead brick's, bit for bit (same state, same
frames, same order), so the decision's duplicate filter makes the run's output
what it would have been without the fault.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.wire import Message, epoch_of
from lego.p4src.contract import N_BUCKETS

log = logging.getLogger(__name__)

#: a successor with no restore this long after its start goes on without state
AWAIT_RESTORE_S = 30.0
#: batches a waiting successor queues before it stops waiting
AWAIT_QUEUE_MAX = 4096


def message_bytes(msg: Message) -> int:
    return sum(int(a.nbytes) for a in msg.arrays.values())


class SentLog:
    """Messages a brick sent, oldest first, bounded in bytes: the oldest are dropped
    (and counted) to keep the bound."""

    def __init__(self, mib: float) -> None:
        self.limit = int(mib * 2**20)
        self.entries: deque[tuple[Message, int]] = deque()
        self.bytes = 0
        self.dropped = 0  # messages dropped for the bound, never replayable
        self.peak_bytes = 0

    def append(self, msg: Message, copy: bool = False) -> None:
        if copy:  # arrays lent by a shared-memory slot are reused: keep our own
            msg = msg.with_arrays({k: np.array(a) for k, a in msg.arrays.items()})
        size = message_bytes(msg)
        self.entries.append((msg, size))
        self.bytes += size
        while self.bytes > self.limit and len(self.entries) > 1:
            _, gone = self.entries.popleft()
            self.bytes -= gone
            self.dropped += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def trim(self, keep) -> int:
        """Drop the oldest messages while ``keep(msg)`` is false; returns how many."""
        n = 0
        while self.entries and not keep(self.entries[0][0]):
            _, size = self.entries.popleft()
            self.bytes -= size
            n += 1
        return n

    def select(self, want) -> list[Message]:
        return [m for m, _ in self.entries if want(m)]

    def report(self) -> dict[str, int]:
        return {"log_batches": len(self.entries), "log_bytes": self.bytes,
                "log_peak_bytes": self.peak_bytes, "log_dropped": self.dropped}


# ---------------------------------------------------------------- positions


def position(msg: Message) -> int | None:
    """The source's frame count before this batch (None: not a source's batch)."""
    taken0 = msg.meta.get("taken0")
    return None if taken0 is None else int(taken0)


def replayable(log_: SentLog, start: int) -> tuple[list[Message], int | None]:
    """The logged source batches holding frames at or after position ``start``, and the
    first position the log still has (None: empty)."""
    first = position(log_.entries[0][0]) if log_.entries else None
    return log_.select(lambda m: position(m) + m.n > start), first


# ---------------------------------------------------------------- the keyed side


@dataclass
class RecoveryState:
    """A keyed brick's place in its source's stream, and a successor's wait."""

    next_pos: int | None = None  # the position after the last frame taken
    epoch: int | None = None  # the source incarnation positions count in
    awaiting: bool = False  # a successor that has not been restored yet
    exact: bool = False  # restored from a checkpoint: a gap waits for the replay
    await_since: float = 0.0
    progress_at: float = 0.0  # when it last took a batch (a replay's pace)
    last_batch: int | None = None  # the id of the last source batch it took
    last_seq: int | None = None  # the switch sequence number of the last frame it took
    queue: list[Message] = field(default_factory=list)  # waiting, or after a gap
    stats: dict[str, int] = field(default_factory=lambda: {
        "checkpoints": 0, "checkpoint_entries": 0, "restores": 0, "restored_entries": 0,
        "frames_duplicate": 0, "frames_skipped": 0, "batches_queued": 0,
        "restore_timeouts": 0})


def report(logic: Any) -> dict[str, dict[str, int]]:
    """A keyed brick's recovery counters for its load report (``{}``: none counted)."""
    r = getattr(getattr(logic, "moves", None), "recovery", None)
    counted = {k: v for k, v in r.stats.items() if v} if r is not None else {}
    return {"recovery": counted} if counted else {}


def await_restore(fq: Any) -> None:
    """A restarted keyed brick: take nothing until the controller restores it."""
    r: RecoveryState = fq.moves.recovery
    r.awaiting, r.await_since = True, time.monotonic()


def sequenced(fq: Any, msg: Message, take) -> list[Message]:
    """``take(msg)`` for each batch the brick can take now, in position order: a
    waiting successor queues; a batch after a gap waits for it; frames before the
    position are dropped (a replay's duplicates)."""
    r: RecoveryState = fq.moves.recovery
    if r.awaiting:
        if len(r.queue) < AWAIT_QUEUE_MAX and \
                time.monotonic() - r.await_since < AWAIT_RESTORE_S:
            r.queue.append(msg)
            r.stats["batches_queued"] += 1
            return []
        log.warning("%s: no restore came; going on without the dead one's state",
                    getattr(fq, "name", "keyed brick"))
        r.stats["restore_timeouts"] += 1
        r.awaiting = False
        return _take_queue(fq, take, msg)
    return _take_queue(fq, take, msg)


def _take_queue(fq: Any, take, msg: Message | None) -> list[Message]:
    r: RecoveryState = fq.moves.recovery
    if msg is not None:
        r.queue.append(msg)
    outs: list[Message] = []
    if len(r.queue) > 1:
        r.queue.sort(key=lambda m: (position(m) is None, epoch_of(m.batch), position(m) or 0))
    waiting: list[Message] = []
    for m in r.queue:  # in position order: after a gap, the rest waits too
        cut = None if waiting else _admit(r, m)
        if cut is None:
            waiting.append(m)
        elif cut == 0 or 0 < cut < m.n:
            outs += take(m if cut == 0 else _tail(m, cut))
            _advance(r, m)
    r.queue = waiting
    if outs:
        r.progress_at = time.monotonic()
    return outs


def _admit(r: RecoveryState, m: Message) -> int | None:
    """Rows of ``m`` already taken (its duplicates), or None when it comes after a gap
    (-1: a batch of window marks alone, before the position of a restored brick)."""
    pos = position(m)
    if pos is None:  # not a source's batch: as it comes
        return 0
    epoch = epoch_of(m.batch)
    if r.next_pos is None or r.epoch is None or epoch != r.epoch:
        r.next_pos, r.epoch = pos, epoch  # the first batch, or a new source incarnation
    if pos > r.next_pos:
        if r.exact:  # the replay fills it (its links block: no other gap comes)
            return None
        r.stats["frames_skipped"] += pos - r.next_pos  # frames lost before the brick
        r.next_pos = pos
    if not m.n and pos < r.next_pos:
        return 0 if not r.exact else -1  # window marks before the position: a dropped
        # duplicate where exact (taken later, they would close windows a replay refills)
    dup = min(m.n, r.next_pos - pos)
    r.stats["frames_duplicate"] += dup
    return dup


def _advance(r: RecoveryState, m: Message) -> None:
    r.last_batch = m.batch
    pos = position(m)
    if pos is not None:
        r.next_pos = max(r.next_pos or 0, pos + m.n)
        if m.n:  # (a port's frames come in switch order)
            r.last_seq = max(r.last_seq or 0, m.seq1 - 1)


def _tail(m: Message, cut: int) -> Message:
    """Rows ``cut:`` of a source batch (its duplicates dropped), positioned after them.
    Whole frames stay in their buffer (``frames``): the rows' offsets point into it."""
    arrays = {k: a if k == "frames" else a[cut:] for k, a in m.arrays.items()}
    mirror = arrays.get("mirror")
    rows = int(np.count_nonzero(mirror == 0)) if mirror is not None else len(
        next(iter(arrays.values())))
    return m.with_arrays(arrays, rows=rows, meta={**m.meta, "taken0": position(m) + cut})


def checkpoint(fq: Any, cmd: dict) -> dict:
    """The whole keyed state to ``cmd["path"]``, and the position it stands at."""
    r: RecoveryState = fq.moves.recovery
    moves = fq.moves
    if moves.active or moves.held or r.awaiting or r.queue:
        return {"ok": False, "busy": True, "error": "a move or a restore is under way"}
    if r.next_pos is None:
        return {"ok": False, "busy": True, "error": "no source batch taken yet"}
    try:
        blob, entries = fq.export_buckets(np.arange(N_BUCKETS, dtype=np.int64),
                                          np.zeros(0, dtype=np.int64))
    except Exception as exc:  # noqa: BLE001 - e.g. a state with no buckets: no checkpoint
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    Path(cmd["path"]).write_bytes(blob)
    r.stats["checkpoints"] += 1
    r.stats["checkpoint_entries"] = entries
    # what the brick keeps beside its keyed state (LUCID: the newest window reached)
    extra = getattr(fq, "checkpoint_extra", dict)()
    return {"ok": True, "position": r.next_pos, "epoch": r.epoch, "batch": r.last_batch,
            "last_seq": r.last_seq, "entries": entries, "bytes": len(blob),
            "processed": moves.processed, "extra": extra}


def restore(fq: Any, cmd: dict, take) -> tuple[dict, list[Message]]:
    """A successor's state: the checkpoint at ``cmd["path"]`` (none: empty state), at
    position ``cmd["position"]``; then what it queued, in order."""
    r: RecoveryState = fq.moves.recovery
    adopt = bool(cmd.get("adopt"))  # a live brick taking a lost port's part (it owns none)
    if adopt and (fq.moves.active or fq.moves.held or r.queue):
        return {"ok": False, "error": "a move or a restore is under way"}, []
    # a successor that gave up waiting went on: importing now would apply twice
    if not (adopt or r.awaiting):
        return {"ok": False, "error": "not waiting for a restore (it went on without)"}, []
    imported = skipped = 0
    if cmd.get("path"):
        imported, skipped = fq.import_buckets(Path(cmd["path"]).read_bytes())
        r.next_pos, r.epoch = int(cmd["position"]), int(cmd["epoch"])
        fq.moves.processed = r.next_pos
        r.exact = True
        if hasattr(fq, "restore_extra"):
            fq.restore_extra(cmd.get("extra") or {})
        r.stats["restored_entries"] += imported
    r.stats["restores"] += 1
    queued = len(r.queue)
    r.awaiting = False
    r.progress_at = time.monotonic()
    outs = _take_queue(fq, take, None)
    return {"ok": True, "imported": imported, "skipped": skipped, "queued": queued,
            "position": r.next_pos}, outs


def resync(fq: Any, take) -> tuple[dict, list[Message]]:
    """The replay cannot cover the checkpoint's position (the log's start is gone, or
    the source restarted): take what comes from the lowest position on, the gap
    given up (the controller reports the loss)."""
    r: RecoveryState = fq.moves.recovery
    r.next_pos = r.epoch = None
    r.exact = False
    return {"ok": True, "queued": len(r.queue)}, _take_queue(fq, take, None)


def end_ready(fq: Any, meta: dict) -> bool:
    """May the source's end be taken now? Not while the brick waits for its restore
    or for frames a replay still owes (the source's final count is in ``meta``)."""
    r: RecoveryState = fq.moves.recovery
    if r.awaiting:
        return time.monotonic() - r.await_since >= AWAIT_RESTORE_S
    final = meta.get("packets")
    if final is None or r.next_pos is None or r.epoch is None or \
            epoch_of(int(meta.get("batch0", 0))) != r.epoch:
        return True
    # a replay that stalls this long (its log gone with a fault) does not hold the end
    return r.next_pos >= int(final) or \
        time.monotonic() - max(r.await_since, r.progress_at) >= AWAIT_RESTORE_S


def drain(fq: Any, take) -> list[Message]:
    """At the end: what a brick still queued (waiting for a restore or a gap that
    never came) is taken now, gaps skipped and counted, rather than dropped."""
    r: RecoveryState = fq.moves.recovery
    if not r.queue:
        return []
    if r.awaiting:
        r.stats["restore_timeouts"] += 1
    r.awaiting = r.exact = False
    return _take_queue(fq, take, None)
