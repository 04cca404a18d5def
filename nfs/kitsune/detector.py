"""Kitsune as bricks (paper Table I): the detector's logics the brick runtime runs.

    Packet Batching -> Feature Quantization -> Feature Mapping -> ULN (xR) -> Decision
       (source)        (damped statistics)    (normalise per AE)  (ensemble)   (merge, alert)

Each logic keeps what it remembers in ``state`` (a separate object), takes one
message (a batch) and returns the messages it emits:

- :class:`~lego.bricks.source.PacketBatching` (its own module): frames
  from a trace or an interface, the LEGO shim stripped, rows split by owner.
- :class:`FeatureQuantization`: the feature extractor (stateful). Under the
  ``lego`` semantics its keyed state moves between replicas by owner bucket
  (:mod:`lego.bricks.moves`, driven by the controller).
- :class:`FeatureMapping`: feature rows -> each autoencoder's min-max normalised
  sub-vector (Table I: "map the features into the input of the ANN"). It moves
  the gather and normalisation off the ensemble, and it is stateless.
- :class:`UnsupervisedLearningNetwork`: the ensemble and the output layer, at
  inference only (stateless, any number of replicas, fed round robin). Its
  arithmetic is that of ``KitNET.execute`` op for op, so scores are bit-identical.
- :class:`Decision`: the framework's merge sink (:class:`~lego.bricks.merge.
  SequenceMerge`: the replicas' scores back in sequence order, every batch
  accounted for, outputs appended so that a restarted decision goes on), alerting
  above the model's threshold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from lego.bricks import moves
from lego.bricks.errors import BrickError, StateTransferError
from lego.bricks.merge import SequenceMerge
from lego.bricks.source import PACKET_FIELDS
from lego.bricks.wire import Message
from lego.errors import ModelError
from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET
from lego.nfs.kitsune.nf import DEFAULT_SEMANTICS

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- feature quantization


class FeatureQuantization(moves.KeyedBrick):
    """The feature extractor. Options: ``semantics`` (kitsune | lego); ``recover``
    (restarted, wait for the controller's restore: :mod:`lego.bricks.recovery`).
    Emits ``seq`` (uint64) and ``x`` (float64 rows x features) for the batch's
    primaries."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.name = str(brick_id)
        self.recover = bool(options.get("recover", False))
        self.semantics = options.get("semantics") or DEFAULT_SEMANTICS
        self.state = make_extractor(self.semantics)
        self.width = len(self.state.feature_names())
        self.moves = moves.MoveState()  # state moves under way (controller)
        self.lend = None  # the runtime's Outlet.lend (bind_output)

    def bind_output(self, lend) -> None:
        """Write feature rows straight into the next hop's shared-memory slot
        (``lend(shape) -> array or None``), saving a copy of the largest array of
        the graph."""
        self.lend = lend

    def take_batch(self, msg: Message) -> list[Message]:
        if self.moves.active:
            return moves.handle(self, msg)
        batch = PacketBatch(**{name: msg.arrays[name] for name in PACKET_FIELDS})
        moves.catch_up(self.moves, msg)
        self.moves.processed += len(batch)
        primary = batch.mirror == 0
        out = None
        if self.lend is not None:  # kitsune: a row per packet, mirrors included
            rows = int(primary.sum()) if self.semantics == "lego" else len(batch)
            out = self.lend((rows, self.width))
        x = self.state.process(batch, out=out)
        if len(x) == len(batch) and not primary.all():  # kitsune: mirrors yield rows too
            x = x[primary]
        return [msg.with_arrays({"seq": batch.seq[primary], "x": x})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return moves.flush(self)  # a move cut short by the end: nothing stays queued

    def rows(self, msg: Message, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(seq, x) of the primaries among rows ``idx`` of a batch (mirrors update state)."""
        batch = PacketBatch(**{name: msg.arrays[name][idx] for name in PACKET_FIELDS})
        if not len(batch):
            return batch.seq[:0], np.zeros((0, len(self.state.feature_names())))
        x = self.state.process(batch)
        primary = batch.mirror == 0
        if len(x) == len(batch) and not primary.all():
            x = x[primary]
        return batch.seq[primary], x

    # the keyed state, by owner bucket (lego.nfs.KeyedState; ``lego`` semantics only)
    def _splittable(self) -> None:
        if not hasattr(self.state, "export_state"):
            raise StateTransferError(f"feature_quantization ({self.semantics}): this "
                                     "semantics' state cannot be split by bucket")

    def export_buckets(self, buckets: np.ndarray, exclude: np.ndarray | None = None
                       ) -> tuple[bytes, int]:
        """(blob, entries) of the state of ``buckets`` (pairs in ``exclude`` left out)."""
        self._splittable()
        blob = self.state.export_state(np.asarray(buckets, dtype=np.int64),
                                       exclude=np.asarray(() if exclude is None else exclude,
                                                          dtype=np.int64))
        return blob.to_bytes(), blob.n_entries

    def import_buckets(self, blob: bytes) -> tuple[int, int]:
        """(imported, skipped) entries of an exported blob."""
        from lego.ext.legostats import StateBlob

        self._splittable()
        res = self.state.import_state(StateBlob.from_bytes(blob))
        return res.imported, res.skipped

    def drop_buckets(self, keep: np.ndarray) -> int:
        self._splittable()
        return self.state.drop_state(np.asarray(keep, dtype=np.int64))

    def row_buckets(self, msg: Message, idx: np.ndarray) -> list[np.ndarray]:
        """The owner buckets a row's update touches: its source's and its destination's
        (DESIGN §7: every key holds the derived addresses that decide its owner)."""
        from lego.ext.legostats import address_buckets

        a = msg.arrays
        return [address_buckets(a["src_family"][idx], a["src_addr"][idx]),
                address_buckets(a["dst_family"][idx], a["dst_addr"][idx])]

    def hold_state(self, on: bool) -> None:
        """No idle sweep while rows are held: it would evict what they update."""
        if hasattr(self.state, "pause_sweep"):
            self.state.pause_sweep(on)


# ---------------------------------------------------------------- model-backed bricks


def _load_model(options: dict[str, Any], who: str) -> KitNET:
    path = options.get("model")
    if not path:
        raise BrickError(f"{who}: option 'model' (a trained MODEL.npz) is required")
    model = KitNET.load(path)
    if model.phase != "exec":
        raise ModelError(f"{path}: the model is not trained (phase {model.phase!r})")
    semantics = options.get("semantics")
    if semantics and model.meta.get("semantics", semantics) != semantics:
        raise ModelError(f"{path}: model trained for semantics "
                         f"{model.meta.get('semantics')!r}, the graph says {semantics!r}")
    return model


class FeatureMapping:
    """Feature rows -> ``x0 .. x{k-1}``: each autoencoder's normalised inputs
    (``KitNET.map_inputs``)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.state = _load_model(options, str(brick_id))  # read-only: its feature map and norms

    def handle(self, msg: Message) -> list[Message]:
        inputs = self.state.map_inputs(msg.arrays["x"])
        return [msg.with_arrays({"seq": msg.arrays["seq"],
                                 **{f"x{a}": x for a, x in enumerate(inputs)}})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


class UnsupervisedLearningNetwork:
    """The autoencoder ensemble + output layer at inference (no state changes):
    ``KitNET.score_inputs``, so scores are the monolith's bit for bit.
    Options: ``model``; ``fail_after`` (batches) and ``fail_serial`` (which replica):
    raise after that many batches, for failure tests."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.state = _load_model(options, str(brick_id))  # read-only parameters
        fail_serial = options.get("fail_serial")
        serial = getattr(brick_id, "serial", None)
        self.fail_after = options.get("fail_after") if fail_serial in (None, serial) else None
        self.handled = 0

    def handle(self, msg: Message) -> list[Message]:
        if self.fail_after is not None and self.handled >= int(self.fail_after):
            raise BrickError(f"fail_after={self.fail_after}: failing on purpose (test)")
        self.handled += 1
        k = self.state.n_autoencoders
        scores = self.state.score_inputs([msg.arrays[f"x{a}"] for a in range(k)])
        return [msg.with_arrays({"seq": np.array(msg.arrays["seq"]), "score": scores})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


# ---------------------------------------------------------------- decision


class Decision(SequenceMerge):
    """Kitsune's sink: the framework's sequence merge (:class:`~lego.bricks.merge.
    SequenceMerge`), alerting above the trained model's threshold. Options as
    SequenceMerge's, with ``model`` (its threshold) in place of ``threshold``."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        if options.get("threshold") is None:
            model = _load_model(options, str(brick_id))
            if model.threshold is None:
                raise ModelError(f"{options['model']}: the model has no threshold")
            options = {**options, "threshold": float(model.threshold)}
        super().__init__(options, brick_id)
