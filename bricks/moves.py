"""West-east state moves on a live keyed brick: the brick's side of the protocol.

The controller runs :mod:`lego.control.state_move`'s protocol on live bricks
through control messages; this module is the keyed brick's side of it, for any
NF whose keyed logic offers (:class:`lego.nfs.KeyedState`):

- ``moves``: a :class:`MoveState`;
- ``rows(msg, idx) -> (seq, x)``: process rows ``idx`` of a batch, returning the
  output rows (sequence numbers and a row matrix) of the primaries among them;
- ``row_buckets(msg, idx) -> [buckets, ...]``: the owner buckets each row's update
  touches (one int64 array per touched key, e.g. the source's and the
  destination's), for the closure rule;
- ``export_buckets(buckets, exclude) -> (blob, entries)``, ``import_buckets(blob)
  -> (imported, skipped)``, ``drop_buckets(keep) -> dropped``;
- optionally ``hold_state(on)``: pause what would change state on its own (an
  idle sweep) while rows are held.

The control messages:

- ``{"op": "hold", "buckets": [...]}`` (destination, before the switch moves the
  buckets): from now on, hold the packets that could touch moved state, by the
  ``closure`` rule (:func:`~lego.control.state_move.hold_mask`), with a blocked
  set that persists across batches; every other row is processed at once. A
  batch with held rows is emitted whole once its held rows are processed.
- ``{"op": "prepare"}`` (source, before the switch write): stop processing and
  queue what arrives, so that the state can be exported exactly at the write.
- ``{"op": "export", "buckets": [...], "exclude": [...], "keep": [...], "after":
  N, "epoch": E, "path": P}`` (source, after the switch write): process the
  queue up to the write — the first frame whose shim carries the new epoch
  ``E``, or else ``N`` packets (the switch's port-out count read after the
  write, minus what the port sent before this brick existed); a queued batch is
  cut there. Then write the blob of the moving buckets to ``P``, drop what it
  no longer owns (``keep``, on the last transfer) and go on with the queue.
  Deferred until the write is reached. Exporting any later would be wrong: the
  source keeps updating the pairs it shares with the destination, and the
  destination replays the packets after the write on the imported copy.
- ``{"op": "import", "paths": [...]}`` (destination): import every blob, then
  process the held rows in sequence order and emit their batches; stop holding.
- ``{"op": "cancel"}``: the switch write failed; process what is queued or held.
- ``{"op": "checkpoint"}`` and ``{"op": "restore"}``: a dead brick's exact
  recovery (:mod:`lego.bricks.recovery`).

Buckets travel as lists of bucket numbers (the switch's owner buckets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks import recovery
from lego.bricks.wire import Message
from lego.p4src.contract import N_BUCKETS

log = logging.getLogger(__name__)


def bucket_mask(buckets) -> np.ndarray:
    """bool[N_BUCKETS] from bucket numbers."""
    mask = np.zeros(N_BUCKETS, dtype=bool)
    mask[np.asarray(buckets, dtype=np.int64)] = True
    return mask


@dataclass
class _Held:
    msg: Message
    held: np.ndarray  # row indices held
    seq: np.ndarray  # output of the rows processed at once
    x: np.ndarray


@dataclass
class MoveState:
    """What a keyed brick keeps while a move is under way."""

    blocked: np.ndarray | None = None  # bool[OWNER_BUCKETS] while holding
    held: list[_Held] = field(default_factory=list)
    processed: int = 0  # packets taken so far (processed, or held by the closure rule)
    paused: list[Message] | None = None  # a source's queue between prepare and export
    split: _Held | None = None  # a paused batch cut at the export point: its first part
    recovery: recovery.RecoveryState = field(default_factory=recovery.RecoveryState)
    stats: dict[str, int] = field(default_factory=lambda: {
        "holds": 0, "rows_held": 0, "exports": 0, "entries_exported": 0, "entries_dropped": 0,
        "imports": 0, "entries_imported": 0, "entries_skipped": 0, "frames_before": 0})

    @property
    def holding(self) -> bool:
        return self.blocked is not None

    @property
    def active(self) -> bool:
        return self.blocked is not None or self.paused is not None


class KeyedBrick:
    """The framework's half of a keyed brick's logic: the move protocol and exact
    recovery (:mod:`lego.bricks.recovery`) around what the NF writes, its
    ``take_batch(msg)`` (one batch, as it comes) and :class:`lego.nfs.KeyedState`.
    A subclass sets ``moves`` (a :class:`MoveState`) and ``recover`` (the brick's
    ``recover`` option: restarted, it waits for the controller's restore); it may
    add ``checkpoint_extra()`` / ``restore_extra(extra)`` for what it keeps beside
    its keyed state."""

    moves: MoveState
    recover: bool = False

    def handle(self, msg: Message) -> list[Message]:
        return recovery.sequenced(self, msg, self.take_batch)

    def resume(self) -> None:
        if self.recover:
            recovery.await_restore(self)

    def end_ready(self, meta: dict[str, Any]) -> bool:
        return recovery.end_ready(self, meta)

    def control(self, cmd: dict, packets_in: int) -> tuple[dict | None, list[Message]]:
        return control(self, cmd, packets_in)

    def count(self, msg: Message) -> None:
        count(self, msg)


def control(fq: Any, cmd: dict, packets_in: int) -> tuple[dict | None, list[Message]]:
    """One move control message -> (reply or None when deferred, messages to emit)."""
    moves: MoveState = fq.moves
    op = cmd.get("op")
    if op == "hold":
        incoming = bucket_mask(np.asarray(cmd.get("buckets", []), dtype=np.int64))
        moves.blocked = incoming if moves.blocked is None else moves.blocked | incoming
        moves.stats["holds"] += 1
        if hasattr(fq, "hold_state"):
            fq.hold_state(True)
        return {"ok": True, "holding": int(moves.blocked.sum())}, []
    if op == "prepare":
        if moves.paused is None:
            moves.paused = []
        return {"ok": True, "processed": moves.processed}, []
    if op == "export":
        after = int(cmd.get("after", 0))
        outs, ready = _advance(fq, after, cmd.get("epoch"))
        if not ready:
            return None, outs  # the packets before the write have not all come yet
        data, entries = fq.export_buckets(np.asarray(cmd.get("buckets", []), dtype=np.int64),
                                          np.asarray(cmd.get("exclude", []), dtype=np.int64))
        Path(cmd["path"]).write_bytes(data)
        dropped = 0
        if cmd.get("keep") is not None:
            dropped = fq.drop_buckets(np.asarray(cmd["keep"], dtype=np.int64))
        moves.stats["exports"] += 1
        moves.stats["entries_exported"] += entries
        moves.stats["entries_dropped"] += dropped
        if cmd.get("keep") is not None:  # the source's last transfer: go on with the queue
            outs += _resume(fq)
        return {"ok": True, "path": cmd["path"], "entries": entries, "bytes": len(data),
                "dropped": dropped, "packets_in": packets_in, "hint": after,
                "exported_at": moves.processed}, outs
    if op == "import":
        imported = skipped = 0
        for path in cmd.get("paths", []):
            done, left = fq.import_buckets(Path(path).read_bytes())
            imported += done
            skipped += left
        moves.stats["imports"] += 1
        moves.stats["entries_imported"] += imported
        moves.stats["entries_skipped"] += skipped
        outs = release(fq)
        return {"ok": True, "imported": imported, "skipped": skipped,
                "released_batches": len(outs)}, outs
    if op == "cancel":  # the move did not happen: go on with everything queued or held
        return {"ok": True}, flush(fq)
    if op == "move_stats":
        return {"ok": True, **moves.stats, "holding": moves.holding}, []
    if op == "checkpoint":
        return recovery.checkpoint(fq, cmd), []
    if op == "restore":
        return recovery.restore(fq, cmd, fq.take_batch)
    if op == "resync":
        return recovery.resync(fq, fq.take_batch)
    return {"ok": False, "error": f"unknown op {op!r}"}, []


def catch_up(moves: MoveState, msg: Message) -> None:
    """Before a batch is taken: count the port's frames from the source's count
    before it (``taken0``) where that is ahead, so that a keyed brick restarted
    mid-run counts the frames its predecessor took (or lost with it) too, and an
    export's point (``after``) is reached rather than waited for in vain (a
    scale-in after a restart got no answer)."""
    taken0 = msg.meta.get("taken0")
    if taken0 is not None and taken0 > moves.processed:
        moves.stats["frames_before"] += int(taken0) - moves.processed
        moves.processed = int(taken0)


def count(fq: Any, msg: Message) -> None:
    """A source's count message (``kind = "count"``, sent when the keyed brick after
    it was restarted): the frames it took so far, in order with its batches, so a
    successor that gets no batch before an export still knows where it stands."""
    moves: MoveState = fq.moves
    if moves.recovery.exact:
        return  # restored from a checkpoint: it knows its place from the positions
    if moves.paused is not None:
        moves.paused.append(msg)  # in its place in the queue
    else:
        catch_up(moves, msg)


def handle(fq: Any, msg: Message) -> list[Message]:
    """A batch while a move is under way: queued by a paused source, else its rows
    are taken (:func:`_take`)."""
    moves: MoveState = fq.moves
    if moves.paused is not None:
        moves.paused.append(msg)
        return []
    catch_up(moves, msg)
    return _take(fq, msg, np.arange(msg.n), hold=True)


def _take(fq: Any, msg: Message, idx: np.ndarray, hold: bool,
          first: _Held | None = None) -> list[Message]:
    """Process rows ``idx`` of a batch; while holding (and ``hold``), the rows the
    closure rule blocks wait for :func:`release`. ``first``: the already processed
    first part of a batch cut at an export point."""
    moves: MoveState = fq.moves
    held = np.zeros(len(idx), dtype=bool)
    if hold and moves.holding:
        touched = [b.tolist() for b in fq.row_buckets(msg, idx)]
        blocked = moves.blocked
        for i, keys in enumerate(zip(*touched, strict=True)):
            for k in keys:
                if blocked[k]:
                    held[i] = True
                    blocked[list(keys)] = True
                    break
    idx_now, idx_held = idx[~held], idx[held]
    moves.processed += len(idx)
    seq, x = fq.rows(msg, idx_now)
    if first is not None:
        seq, x = np.concatenate([first.seq, seq]), np.concatenate([first.x, x])
    if not len(idx_held) and not moves.held:
        return [msg.with_arrays({"seq": seq, "x": x}, rows=len(seq))]
    moves.held.append(_Held(msg, idx_held, seq, x))
    moves.stats["rows_held"] += len(idx_held)
    return []


def _advance(fq: Any, upto: int, epoch: int | None) -> tuple[list[Message], bool]:
    """A paused source processes its queue up to the switch write (no holding:
    these packets precede it); returns the output and whether the write is reached.

    The write is where the first frame of the new assignment ``epoch`` (the shim's
    epoch) stands, or, with no such frame yet, after ``upto`` packets: the port's
    frame count read after the write, which covers every frame sent before it
    (the read can come late, hence the epoch: counting alone would overshoot)."""
    moves: MoveState = fq.moves
    outs: list[Message] = []
    while moves.paused and moves.split is None:
        msg = moves.paused[0]
        catch_up(moves, msg)
        if msg.kind == "count":
            moves.paused.pop(0)
            continue
        cut = _first_of_epoch(msg, epoch)
        if cut is None:  # frames without epochs (e.g. a trace): by the count alone
            if moves.processed >= upto:
                break
            cut = min(msg.n, upto - moves.processed)
        if cut == msg.n:
            moves.paused.pop(0)
            outs += _take(fq, msg, np.arange(msg.n), hold=False)
            continue
        moves.processed += cut  # cut the batch at the write; its first part now
        seq, x = fq.rows(msg, np.arange(cut))
        moves.split = _Held(msg, np.arange(cut, msg.n), seq, x)
    return outs, moves.split is not None or moves.processed >= upto


def _first_of_epoch(msg: Message, epoch: int | None) -> int | None:
    """Index of the batch's first frame of ``epoch`` (its length if none); None when
    the frames carry no epoch."""
    tags = msg.arrays.get("epoch")
    if epoch is None or tags is None:
        return None
    hits = np.flatnonzero(tags == int(epoch))
    return int(hits[0]) if len(hits) else msg.n


def _resume(fq: Any) -> list[Message]:
    """After the export: the rest of a cut batch, then the queue, as usual."""
    moves: MoveState = fq.moves
    queue, moves.paused = moves.paused or [], None
    outs: list[Message] = []
    if moves.split is not None:
        cut, moves.split = moves.split, None
        queue.pop(0)
        outs += _take(fq, cut.msg, cut.held, hold=True, first=cut)
    for msg in queue:
        catch_up(moves, msg)
        if msg.kind != "count":
            outs += _take(fq, msg, np.arange(msg.n), hold=True)
    return outs


def flush(fq: Any) -> list[Message]:
    """Process whatever a paused source queued or a destination held (and what a
    restarted brick still queued: :func:`lego.bricks.recovery.drain`)."""
    moves: MoveState = fq.moves
    outs = recovery.drain(fq, fq.take_batch) if hasattr(fq, "take_batch") else []
    outs += _resume(fq) if moves.paused is not None else []
    return outs + (release(fq) if moves.holding or moves.held else [])


def release(fq: Any) -> list[Message]:
    """After the import: process the held rows in order; emit each batch whole."""
    moves: MoveState = fq.moves
    outs = []
    for h in moves.held:
        seq, x = fq.rows(h.msg, h.held)
        seq = np.concatenate([h.seq, seq])
        x = np.concatenate([h.x, x])
        order = np.argsort(seq, kind="stable")
        outs.append(h.msg.with_arrays({"seq": seq[order], "x": x[order]}, rows=len(seq)))
    moves.held.clear()
    moves.blocked = None
    if hasattr(fq, "hold_state"):
        fq.hold_state(False)
    return outs
