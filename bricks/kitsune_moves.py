"""West-east state moves on a live feature-extraction brick (``lego`` semantics).

The controller runs :mod:`lego.control.state_move`'s protocol on live bricks
through control messages; this module is the brick's side of it, used by
:class:`~lego.bricks.kitsune_bricks.FeatureQuantization`:

- ``{"op": "hold", "buckets": [...]}`` (destination, before the switch moves the
  buckets): from now on, hold the packets that could touch moved state, by the
  ``closure`` rule (:func:`~lego.control.state_move.hold_mask`), with a blocked
  set that persists across batches; every other row is processed at once. A
  batch with held rows is emitted whole once its held rows are processed.
- ``{"op": "export", "buckets": [...], "exclude": [...], "keep": [...], "after":
  N, "path": P}`` (source, after the switch write): once the brick has processed
  ``N`` packets (the switch's port-out count at the write, minus what the port
  sent before this brick existed), write the blob of the moving buckets to ``P``
  and drop what it no longer owns (``keep``). Deferred until then.
- ``{"op": "import", "paths": [...]}`` (destination): import every blob, then
  process the held rows in sequence order and emit their batches; stop holding.

Buckets travel as lists of bucket numbers (the switch's owner buckets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.brick_wire import Message
from lego.ext.legostats import StateBlob, address_buckets, bucket_mask

log = logging.getLogger(__name__)


@dataclass
class _Held:
    msg: Message
    held: np.ndarray  # row indices held
    seq: np.ndarray  # output of the rows processed at once
    x: np.ndarray


@dataclass
class MoveState:
    """What a feature-extraction brick keeps while a move is under way."""

    blocked: np.ndarray | None = None  # bool[OWNER_BUCKETS] while holding
    held: list[_Held] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=lambda: {
        "holds": 0, "rows_held": 0, "exports": 0, "entries_exported": 0, "entries_dropped": 0,
        "imports": 0, "entries_imported": 0, "entries_skipped": 0})

    @property
    def holding(self) -> bool:
        return self.blocked is not None


def control(fq: Any, cmd: dict, packets_in: int) -> tuple[dict | None, list[Message]]:
    """One move control message -> (reply or None when deferred, messages to emit)."""
    moves: MoveState = fq.moves
    op = cmd.get("op")
    if op == "hold":
        incoming = bucket_mask(np.asarray(cmd.get("buckets", []), dtype=np.int64))
        moves.blocked = incoming if moves.blocked is None else moves.blocked | incoming
        moves.stats["holds"] += 1
        if hasattr(fq.state, "pause_sweep"):
            fq.state.pause_sweep(True)
        return {"ok": True, "holding": int(moves.blocked.sum())}, []
    if op == "export":
        after = int(cmd.get("after", 0))
        if packets_in < after:
            return None, []
        blob = fq.state.export_state(np.asarray(cmd.get("buckets", []), dtype=np.int64),
                                     exclude=np.asarray(cmd.get("exclude", []), dtype=np.int64))
        data = blob.to_bytes()
        Path(cmd["path"]).write_bytes(data)
        dropped = 0
        if cmd.get("keep") is not None:
            dropped = fq.state.drop_state(np.asarray(cmd["keep"], dtype=np.int64))
        moves.stats["exports"] += 1
        moves.stats["entries_exported"] += blob.n_entries
        moves.stats["entries_dropped"] += dropped
        return {"ok": True, "path": cmd["path"], "entries": blob.n_entries, "bytes": len(data),
                "dropped": dropped, "packets_in": packets_in}, []
    if op == "import":
        imported = skipped = 0
        for path in cmd.get("paths", []):
            res = fq.state.import_state(StateBlob.from_bytes(Path(path).read_bytes()))
            imported += res.imported
            skipped += res.skipped
        moves.stats["imports"] += 1
        moves.stats["entries_imported"] += imported
        moves.stats["entries_skipped"] += skipped
        outs = release(fq)
        return {"ok": True, "imported": imported, "skipped": skipped,
                "released_batches": len(outs)}, outs
    if op == "move_stats":
        return {"ok": True, **moves.stats, "holding": moves.holding}, []
    return {"ok": False, "error": f"unknown op {op!r}"}, []


def handle(fq: Any, msg: Message) -> list[Message]:
    """A batch while holding: the rows the closure rule lets through now, the rest
    later (:func:`release`)."""
    moves: MoveState = fq.moves
    a = msg.arrays
    src = address_buckets(a["src_family"], a["src_addr"])
    dst = address_buckets(a["dst_family"], a["dst_addr"])
    blocked = moves.blocked
    held = np.zeros(len(src), dtype=bool)
    for i, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
        if blocked[s] or blocked[d]:
            held[i] = blocked[s] = blocked[d] = True
    idx_now, idx_held = np.flatnonzero(~held), np.flatnonzero(held)
    seq, x = fq.rows(msg, idx_now)
    if not len(idx_held) and not moves.held:
        return [msg.with_arrays({"seq": seq, "x": x})]
    moves.held.append(_Held(msg, idx_held, seq, x))
    moves.stats["rows_held"] += len(idx_held)
    return []


def release(fq: Any) -> list[Message]:
    """After the import: process the held rows in order; emit each batch whole."""
    moves: MoveState = fq.moves
    outs = []
    for h in moves.held:
        seq, x = fq.rows(h.msg, h.held)
        seq = np.concatenate([h.seq, seq])
        x = np.concatenate([h.x, x])
        order = np.argsort(seq, kind="stable")
        outs.append(h.msg.with_arrays({"seq": seq[order], "x": x[order]}))
    moves.held.clear()
    moves.blocked = None
    if hasattr(fq.state, "pause_sweep"):
        fq.state.pause_sweep(False)
    return outs
