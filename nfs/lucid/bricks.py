"""LUCID as bricks: the frames a switch port carries in, one decision per (flow,
time window) fragment out.

- ``flow_windows`` (keyed, :class:`FlowWindows`): LUCID's extractor fed each
  frame with the window the switch stamped on it (a replica sees only its share
  of the frames, so it cannot keep the clock itself; frames with no window, a
  plain trace, run the extractor's own clock). A window closes here when a later
  one arrives, in a frame or in the switch's window mark, and its fragments go
  out normalised: ``(seq, x)``, ``seq`` the switch sequence number of the frame
  that opened the fragment (unique: a frame opens at most one). Its state, moved
  by the switch's owner bucket: each flow's entry (stored direction, TCP base
  numbers, TLS and OpenFlow conversations) and its fragments not yet out.
- ``cnn`` (stateless, :class:`Classifier`): the probability of each fragment, the
  same bits however the fragments are batched.
- ``decision`` (sink, :class:`Decision`): the framework's sequence merge, a
  fragment malicious above 0.5.

:class:`Instance` is one offline LUCID over the same frames, the reference the
live graph must equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from lego.bricks import moves
from lego.bricks.errors import BrickError, StateTransferError
from lego.bricks.merge import SequenceMerge
from lego.bricks.wire import Message
from lego.nfs.lucid.nf import FEATURES

log = logging.getLogger(__name__)

N_FEATURES = len(FEATURES)


@dataclass
class WindowsState:
    frames: int = 0
    fragments: int = 0
    newest: float = -np.inf  # the newest window reached (a frame's, or a mark's)
    unstamped: int = 0  # shimmed frames with no window (the switch's clock not set yet)


class Windows:
    """The extractor and its clock, as the brick and the offline instance share it."""

    def __init__(self, t: float, n: int) -> None:
        from lego.nfs.lucid.features import new_extractor

        self.t, self.n = t, n
        self.ex = new_extractor(t, n)
        self.state = WindowsState()
        self.no_fragments = np.zeros((0, n, N_FEATURES), dtype=np.float32)

    def feed(self, a: dict[str, np.ndarray], idx: np.ndarray, mark: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` of a frames message (mirror copies left out: LUCID's split has
        none); returns the flow each fed frame joined (-1: not IPv4) and the rows fed.
        ``mark``: the newest window the switch's marks in the message opened."""
        idx = idx[a["mirror"][idx] == 0]
        ts = np.ascontiguousarray(a["ts"][idx])
        stamped = a.get("window")
        if stamped is None:  # no switch: LUCID's own clock (one instance of a whole trace)
            windows = self.ex.clock(ts)
        else:
            windows = stamped[idx].astype(np.float64)
            if len(windows) and not windows.all():  # stamped before the clock was set:
                self.state.unstamped += int((windows == 0).sum())  # the window so far
                windows = np.maximum.accumulate(
                    np.concatenate(([max(self.state.newest, 0.0)], windows)))[1:]
        flows = np.empty(len(idx), dtype=np.int64)
        if len(idx):
            self.ex.feed(a["frames"], np.ascontiguousarray(a["offset"][idx]),
                         np.ascontiguousarray(a["caplen"][idx]), ts,
                         np.ascontiguousarray(a["linktype"][idx]), windows=windows,
                         index=a["seq"][idx].astype(np.int64), flow_ids=flows)
            self.state.newest = max(self.state.newest, float(windows.max()))
        if mark:
            self.state.newest = max(self.state.newest, float(mark))
        self.state.frames += len(idx)
        return flows, idx

    def closed(self, before: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(seq, X float32) of the fragments of every window before ``before`` (default:
        the newest window reached, which may still grow)."""
        from lego.nfs.lucid.features_spec import normalise

        _, _, first, npkts, raw = self.ex.pop_fragments(
            self.state.newest if before is None else before)
        self.state.fragments += len(first)
        if not len(first):
            return np.zeros(0, np.uint64), self.no_fragments
        return first.astype(np.uint64), normalise(raw, npkts, self.t).astype(np.float32)


def _options(options: dict[str, Any]) -> tuple[float, int]:
    from lego import nfs

    o = nfs.get("lucid").resolve({k: options[k] for k in ("window", "packets")
                                  if options.get(k) is not None}, "lucid brick")
    return float(o["window"]), int(o["packets"])


class FlowWindows(moves.KeyedBrick):
    """Keyed brick (:class:`lego.nfs.KeyedState`). Options: ``window`` (t, seconds),
    ``packets`` (n), ``recover`` (restarted, wait for the controller's restore:
    :mod:`lego.bricks.recovery`). Outputs ``{"seq", "x"}``: the fragments of the
    windows closed by a batch; at the end, those of the windows still open, in one
    more batch."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.name = str(brick_id)
        self.recover = bool(options.get("recover", False))
        self.win = Windows(*_options(options))
        self.state = self.win.state
        self.moves = moves.MoveState()
        self.flow_bucket = np.full(1024, -1, dtype=np.int32)  # flow id -> owner bucket

    # ---------------------------------------------------------------- the data path
    def checkpoint_extra(self) -> dict[str, Any]:
        """Beside the flows: the newest window reached (a mark may have set it)."""
        return {"newest": self.state.newest if np.isfinite(self.state.newest) else None}

    def restore_extra(self, extra: dict[str, Any]) -> None:
        if extra.get("newest") is not None:
            self.state.newest = float(extra["newest"])

    def take_batch(self, msg: Message) -> list[Message]:
        if self.moves.active:
            return moves.handle(self, msg)
        moves.catch_up(self.moves, msg)
        self.moves.processed += msg.n
        seq, x = self.rows(msg, np.arange(msg.n))
        return [msg.with_arrays({"seq": seq, "x": x}, rows=len(seq))]

    def rows(self, msg: Message, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed rows ``idx``; out: the fragments of the windows now closed. While a move
        holds rows back, nothing closes: a held frame may still belong to an open
        window (the held batches go out when the move ends, and close it then)."""
        flows, fed = self.win.feed(msg.arrays, np.asarray(idx, dtype=np.int64),
                                   int(msg.meta.get("window_mark", 0)))
        bucket = msg.arrays.get("bucket")
        if bucket is not None:
            known = flows >= 0
            self._set_buckets(flows[known], bucket[fed][known])
        if self.moves.holding or self.moves.held or self.moves.paused is not None:
            return np.zeros(0, np.uint64), self.win.no_fragments
        return self.win.closed()

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        """The rest of a move, then the windows still open, as one more batch after the
        source's last (its count, in ``meta``, grows by one for the merge)."""
        outs = moves.flush(self)
        seq, x = self.win.closed(np.inf)
        batch = int(meta.get("batch0", 0)) + int(meta.get("batches", 0))
        meta["batches"] = int(meta.get("batches", 0)) + 1
        end = int(meta.get("seq_end", 0))
        outs.append(Message(batch=batch, seq0=end, seq1=end, rows=len(seq), src=self.name,
                            arrays={"seq": seq, "x": x}))
        return outs

    def report(self) -> dict[str, int]:
        return {"flows": int((self.flow_bucket >= 0).sum()), "fragments": self.state.fragments,
                "unstamped_frames": self.state.unstamped}

    # ---------------------------------------------------------------- state by bucket
    def _set_buckets(self, flows: np.ndarray, buckets: np.ndarray) -> None:
        if len(flows) and flows.max() >= len(self.flow_bucket):
            grown = np.full(max(2 * len(self.flow_bucket), int(flows.max()) + 1), -1, np.int32)
            grown[:len(self.flow_bucket)] = self.flow_bucket
            self.flow_bucket = grown
        self.flow_bucket[flows] = buckets

    def row_buckets(self, msg: Message, idx: np.ndarray) -> list[np.ndarray]:
        bucket = msg.arrays.get("bucket")
        if bucket is None:
            raise BrickError(f"{self.name}: frames without the switch's bucket cannot be held "
                             "for a move (a trace source has none)")
        return [bucket[idx].astype(np.int64)]

    def export_buckets(self, buckets, exclude) -> tuple[bytes, int]:
        """The flows of these buckets (``exclude``: shared pairs, none under a
        symmetric split) and their fragments not yet out."""
        ids = np.flatnonzero(moves.bucket_mask(buckets)[np.maximum(self.flow_bucket, 0)]
                             & (self.flow_bucket >= 0))
        kernel = self.win.ex.export_flows(ids)
        head = np.array([len(ids)], dtype=np.int64).tobytes()
        return head + self.flow_bucket[ids].astype(np.int32).tobytes() + kernel, len(ids)

    def import_buckets(self, blob: bytes) -> tuple[int, int]:
        if len(blob) < 8:
            raise StateTransferError(f"{self.name}: a LUCID state blob of {len(blob)} bytes")
        count = int(np.frombuffer(blob[:8], dtype=np.int64)[0])
        buckets = np.frombuffer(blob[8:8 + 4 * count], dtype=np.int32)
        if len(buckets) != count:
            raise StateTransferError(f"{self.name}: a LUCID state blob cut in its buckets")
        try:
            new = self.win.ex.import_flows(bytes(blob[8 + 4 * count:]))
        except ValueError as exc:
            raise StateTransferError(f"{self.name}: {exc}") from exc
        ok = new >= 0
        self._set_buckets(new[ok], buckets[ok])
        return int(ok.sum()), int((~ok).sum())

    def drop_buckets(self, keep) -> int:
        kept = moves.bucket_mask(keep)
        gone = np.flatnonzero((self.flow_bucket >= 0) & ~kept[np.maximum(self.flow_bucket, 0)])
        dropped = self.win.ex.drop_flows(gone)
        self.flow_bucket[gone] = -1
        return int(dropped)


class Classifier:
    """Stateless brick: ``{"seq", "x"}`` in, ``{"seq", "score"}`` out. Options:
    ``model`` (a LUCID model file), ``packets`` (n, checked against the model's)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        from lego.nfs.lucid.cnn import LucidCNN

        if not options.get("model"):
            raise BrickError(f"{brick_id}: option 'model' (a LUCID model file) is required")
        self.model = LucidCNN.load(options["model"])
        t, n = _options(options)
        if (self.model.n, self.model.window) != (n, t):
            raise BrickError(f"{brick_id}: the model was trained on n={self.model.n}, "
                             f"t={self.model.window}; the graph runs n={n}, t={t}")
        self.state = WindowsState()

    def handle(self, msg: Message) -> list[Message]:
        x = msg.arrays["x"]
        score = self.model.forward(x) if len(x) else np.zeros(0)
        self.state.fragments += len(score)
        return [msg.with_arrays({"seq": msg.arrays["seq"], "score": score})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


class Decision(SequenceMerge):
    """LUCID's sink: the framework's sequence merge at LUCID's threshold (0.5), one
    row a fragment, keyed by the switch sequence number of its first frame."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        from lego.nfs.lucid.nf import NF

        super().__init__({"threshold": NF.decision_threshold, **options}, brick_id)


class Instance:
    """One offline LUCID over frames messages (:func:`lego.bricks.source.frame_arrays`)
    in switch order: the reference a live graph must equal, fragment for fragment."""

    def __init__(self, model, options) -> None:
        from lego.nfs.lucid.cnn import LucidCNN

        self.model = LucidCNN.load(model)
        self.win = Windows(float(options["window"]), int(options["packets"]))

    def process(self, batch) -> tuple[np.ndarray, np.ndarray]:
        a = batch.arrays if hasattr(batch, "arrays") else batch
        self.win.feed(a, np.arange(len(a["seq"])))
        return self._score(*self.win.closed())

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return self._score(*self.win.closed(np.inf))

    def _score(self, seq: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return seq, self.model.forward(x) if len(x) else np.zeros(0)

