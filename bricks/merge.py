"""The merge sink: the replicas' outputs back in switch sequence order, every batch
accounted for (:class:`SequenceMerge`).

Stateless replicas upstream take batches round robin, so their outputs arrive out
of order; a key-routed split cuts a batch into parts. The sink holds them in a
bounded reorder window (``window`` batches) and releases each batch whole, in
batch (= sequence) order: a batch (or part of one) that has not arrived when
``window`` later batches have, or at the end, is recorded as lost with its
sequence range and rows (``summary.json``). It writes each row's score
(``scores.csv``) and, above ``threshold``, an alert (``alerts.jsonl``), flushed
batch by batch and appended to, so that a sink restarted after a crash keeps what
the dead one wrote and takes up the numbering where its upstream is
(:meth:`SequenceMerge.resume`); a restarted source's new epoch of batch ids
(:data:`lego.bricks.wire.EPOCH_BITS`) is followed once its reorder window has
arrived. An NF's own sink may subclass it (to take the threshold from its
model).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.errors import BrickError
from lego.bricks.wire import Message, epoch_of, epoch_start

log = logging.getLogger(__name__)


def alert_lines(seq: np.ndarray, score: np.ndarray) -> str:
    """``{"seq": N, "score": X}`` JSON lines, as ``json.dumps`` writes them (the
    shortest repr of each float), about four times faster than one dumps each."""
    if not np.isfinite(score).all():  # json's Infinity / NaN
        return "".join([json.dumps({"seq": q, "score": x}) + "\n"
                        for q, x in zip(seq.tolist(), score.tolist(), strict=True)])
    return "".join([f'{{"seq": {q}, "score": {x!r}}}\n'
                    for q, x in zip(seq.tolist(), score.tolist(), strict=True)])


def score_lines(seq: np.ndarray, score: np.ndarray, alert: np.ndarray, decided: float) -> str:
    """``seq,score,trained,alert,decided`` CSV lines: each score as its shortest repr
    (it reads back to the same float). 0.4 µs a row against ``np.savetxt``'s 1.6
    (256-row batches), in the decision brick's every batch."""
    tail = f",{decided:.6f}\n"
    return "".join([f"{q},{x!r},1,{a}{tail}" for q, x, a in
                    zip(np.asarray(seq, dtype=np.int64).tolist(),
                        np.asarray(score, dtype=np.float64).tolist(),
                        np.asarray(alert, dtype=np.int8).tolist(), strict=True)])


@dataclass
class _Pending:
    parts: int
    rows: int
    seq0: int
    seq1: int
    got: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.got) == self.parts


@dataclass
class MergeState:
    next_batch: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    last_seq1: int = 0
    batches: int = 0
    rows: int = 0
    alerts: int = 0
    duplicates: int = 0
    late: int = 0  # parts of batches a restart skipped: a dead source's, or before a resume
    resuming: bool = False  # a restarted decision, its first batch not yet chosen
    resumed_from: int | None = None
    epochs: list[dict] = field(default_factory=list)  # each restarted source's epoch
    lost: list[dict] = field(default_factory=list)


class SequenceMerge:
    """Sink brick. Options: ``threshold`` (a score above it is an alert);
    ``out`` (directory: scores.csv, alerts.jsonl, summary.json); ``window``
    (reorder window in batches, default 32); ``write_scores`` (default true;
    false keeps only alerts and the summary, for throughput runs);
    ``write_alerts`` (default true; false counts alerts without writing each
    one, as the monolith does in Figure 4)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        if options.get("threshold") is None:
            raise BrickError(f"{brick_id}: option 'threshold' (alert above it) is required")
        self.threshold = float(options["threshold"])
        self.window = int(options.get("window", 32))
        out = options.get("out")
        if not out:
            raise BrickError(f"{brick_id}: option 'out' (a results directory) is required")
        self.out = Path(out)
        keep_earlier(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.write_scores = bool(options.get("write_scores", True))
        self.write_alerts = bool(options.get("write_alerts", True))
        self._scores = append_lines(self.out / "scores.csv", "seq,score,trained,alert,decided")
        self._alerts = append_lines(self.out / "alerts.jsonl")
        self.state = MergeState()

    def resume(self) -> None:
        """This decision replaces a dead one (the runtime calls this on a restart):
        its upstream goes on numbering where it was, so the first batch is the
        lowest one pending once a reorder window of them has arrived (or at the
        end), not 0; what the dead one released is in the files already."""
        self.state.resuming = True

    def handle(self, msg: Message) -> list[Message]:
        s = self.state
        if msg.batch < s.next_batch:
            if epoch_of(msg.batch) < epoch_of(s.next_batch) or \
                    (s.resumed_from is not None and msg.batch < s.resumed_from):
                s.late += 1
            else:
                s.duplicates += 1
            return []
        p = s.pending.get(msg.batch)
        if p is None:
            p = s.pending[msg.batch] = _Pending(msg.parts, msg.rows, msg.seq0, msg.seq1)
        if msg.part in p.got:
            s.duplicates += 1
            return []
        # copies: a received message's arrays are valid until the next one arrives
        p.got[msg.part] = (np.array(msg.arrays["seq"]), np.array(msg.arrays["score"]))
        self._drain(until=None)
        return []

    def control(self, cmd: dict[str, Any], packets_in: int) -> tuple[dict, list[Message]]:
        """``progress``: the next batch it waits for (batches before it are written):
        what a dead brick's upstream sends again from (lego.bricks.recovery)."""
        if cmd.get("op") == "progress":
            return {"ok": True, "next_batch": self.state.next_batch,
                    "pending": len(self.state.pending)}, []
        return {"ok": False, "error": f"unknown op {cmd.get('op')!r}"}, []

    def report(self) -> dict[str, int]:
        """Counters for the load report (the controller's status: alerts, scores)."""
        s = self.state
        return {"alerts": s.alerts, "scores": s.rows, "lost_batches": len(s.lost),
                "next_batch": s.next_batch}

    def _drain(self, until: int | None) -> None:
        s = self.state
        if s.resuming:  # (finish ends it before it drains)
            if len(s.pending) < self.window:
                return
            self._resume_at(min(s.pending))
        while True:
            p = s.pending.get(s.next_batch)
            if p is not None and p.complete:
                self._release(s.next_batch, s.pending.pop(s.next_batch))
                continue
            newest = max(s.pending, default=-1)
            epoch = epoch_of(s.next_batch)
            if epoch_of(newest) > epoch:  # a restarted source's batches are pending
                newer = [b for b in s.pending if epoch_of(b) > epoch]
                if len(newer) >= self.window:  # the dead one's stragglers had their time
                    self._close_epochs(epoch_of(min(newer)))
                    continue
                newest = max(b for b in s.pending if epoch_of(b) == epoch) \
                    if len(newer) < len(s.pending) else -1
            overdue = newest - s.next_batch >= self.window
            if (until is not None and s.next_batch < until) or (until is None and overdue):
                self._release(s.next_batch, s.pending.pop(s.next_batch, None))
                continue
            return

    def resume_from(self, batch: int) -> None:
        """A restarted decision whose upstream restarted with it (one fused process):
        its first batch is known, its source's first (``batch``)."""
        self._resume_at(batch)

    def _resume_at(self, batch: int) -> None:
        """A restarted decision's first batch is chosen: ``batch``."""
        s = self.state
        s.resuming = False
        s.next_batch = s.resumed_from = batch

    def _close_epochs(self, epoch: int) -> None:
        """A restarted source numbers its batches from ``epoch``: release what the
        earlier incarnations' batches left pending, in order (ids missing up to the
        newest one pending are lost; what the dead one sent after that is unknown
        here), and go on at the new epoch's first id."""
        s = self.state
        for b in sorted(b for b in s.pending if epoch_of(b) < epoch):
            if epoch_of(s.next_batch) < epoch_of(b):
                s.next_batch = epoch_start(epoch_of(b))
            while s.next_batch < b:
                self._release(s.next_batch, None)
            self._release(b, s.pending.pop(b))
        s.epochs.append({"epoch": epoch, "closed_after": s.next_batch - 1})
        s.next_batch = epoch_start(epoch)

    def _release(self, batch: int, p: _Pending | None) -> None:
        s = self.state
        if p is None:
            nxt = s.pending.get(batch + 1)
            s.lost.append({"batch": batch, "seq0": s.last_seq1,
                           "seq1": nxt.seq0 if nxt else None, "rows_lost": None,
                           "parts_missing": "all"})
        else:
            got = list(p.got.values())
            seq = np.concatenate([g[0] for g in got]) if got else np.zeros(0, np.uint64)
            score = np.concatenate([g[1] for g in got]) if got else np.zeros(0)
            if len(seq) > 1 and not (seq[1:] > seq[:-1]).all():  # pieces of a key split
                order = np.argsort(seq, kind="stable")
                seq, score = seq[order], score[order]
            self._write(seq, score)
            if not p.complete:
                s.lost.append({"batch": batch, "seq0": p.seq0, "seq1": p.seq1,
                               "rows_lost": p.rows - len(seq),
                               "parts_missing": sorted(set(range(p.parts)) - set(p.got))})
            s.last_seq1 = p.seq1
        s.next_batch = batch + 1

    def _write(self, seq: np.ndarray, score: np.ndarray) -> None:
        s = self.state
        alert = score > self.threshold
        s.batches += 1
        s.rows += len(seq)
        s.alerts += int(alert.sum())
        if len(seq) and self.write_scores:  # decided: wall clock, for per-packet latency
            self._scores.write(score_lines(seq, score, alert, time.time()))
        if self.write_alerts and alert.any():
            self._alerts.write(alert_lines(seq[alert], score[alert]))
        self._scores.flush()  # a crash loses no released batch (a restart appends)
        self._alerts.flush()

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        s = self.state
        total = meta.get("batches")
        if total is not None:  # the last source incarnation's ids: [first, until)
            first = int(meta.get("batch0", 0))
            until = first + int(total)
        else:  # no count: up to the newest batch here
            first = max(s.pending, default=s.next_batch)
            until = first + 1 if s.pending else first
        if s.resuming:  # no window of batches chose the first one: the source's does
            self._resume_at(min(s.pending, default=first))
        if epoch_of(first) > epoch_of(s.next_batch):
            self._close_epochs(epoch_of(first))
        self._drain(until=until)
        for b in sorted(s.pending):  # beyond the source's count: should not happen
            self._release(b, s.pending.pop(b))
        self._scores.close()
        self._alerts.close()
        whole = sum(1 for x in s.lost if x["parts_missing"] == "all")
        summary = {"batches_total": s.batches + whole, "batches_scored": s.batches,
                   "rows": s.rows,
                   "alerts": s.alerts, "threshold": self.threshold,
                   "lost_batches": len(s.lost),
                   "lost_rows": sum(x["rows_lost"] or 0 for x in s.lost),
                   "lost": s.lost, "duplicates": s.duplicates, "late": s.late,
                   "source_epochs": s.epochs, "resumed_from": s.resumed_from,
                   "source": {k: v for k, v in meta.items() if isinstance(v, int | float | str)}}
        if s.lost:
            log.warning("decision: %d batches (partly) lost: %s", len(s.lost), s.lost[:5])
        write_whole(self.out / "summary.json", json.dumps(summary, indent=1))
        return []


def write_whole(path: Path, text: str) -> None:
    """``text`` to ``path`` by a rename: a reader waiting for the file (a test, the
    run's report) never reads it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def append_lines(path: Path, header: str | None = None):
    """``path`` opened to append lines: a dead writer's torn last line cut off, the
    header written if the file is new (or was empty)."""
    with open(path, "a+b") as f:
        size = f.seek(0, 2)
        if size:
            f.seek(max(0, size - 65536))
            tail = f.read()
            cut = tail.rfind(b"\n") + 1
            if cut < len(tail):  # a line the dead writer did not finish
                f.truncate(size - len(tail) + cut)
    out = open(path, "a")
    if header is not None and out.tell() == 0:
        out.write(header + "\n")
    return out


def keep_earlier(out: Path) -> None:
    """A graph's results directory is named by its switch port, and a port is used
    again: a standby graph started on the port of one scaled in. An earlier graph's
    results there (its summary written: it finished) move aside to ``<out>.1``,
    ``.2`` ..., so that the new decision does not truncate them (29,363 scores of a
    make run were lost so) and ``port-*`` still finds them."""
    if not (out / "summary.json").is_file():
        return
    n = 1
    while out.with_name(f"{out.name}.{n}").exists():
        n += 1
    out.rename(out.with_name(f"{out.name}.{n}"))
