"""Kitsune as bricks (paper Table I): the logics the brick runtime runs.

    Packet Batching -> Feature Quantization -> Feature Mapping -> ULN (xR) -> Decision
       (source)        (damped statistics)    (normalise per AE)  (ensemble)   (merge, alert)

Each logic keeps what it remembers in ``state`` (a separate object), takes one
message (a batch) and returns the messages it emits:

- :class:`PacketBatching` reads a pcap/pcapng/TSV (``trace``) or an interface
  (``interface``, AF_PACKET) in batches and strips the LEGO shim (EtherType
  0x88B5): the shim's mirror flag and switch sequence number go into the
  batch's ``mirror``/``seq``, the switch timestamp travels as ``switch_ts_us``
  (and becomes ``ts`` with ``timestamps = "switch"``) and the assignment epoch
  as ``epoch``. It is also the splitter
  of a key-routed edge: rows go to the feature-extractor replica that owns the
  source address, and a mirror copy to the owner of the destination (the same
  rule as the switch, DESIGN §7), so K extractor replicas are exact (``lego``
  semantics only).
- :class:`FeatureQuantization`: the feature extractor (stateful). Under the
  ``lego`` semantics its keyed state moves between replicas by owner bucket
  (:mod:`lego.bricks.kitsune.moves`, driven by the controller).
- :class:`FeatureMapping`: feature rows -> each autoencoder's min-max normalised
  sub-vector (Table I: "map the features into the input of the ANN"). It moves
  the gather and normalisation off the ensemble, and it is stateless.
- :class:`UnsupervisedLearningNetwork`: the ensemble and the output layer, at
  inference only (stateless, any number of replicas, fed round robin). Its
  arithmetic is that of ``KitNET.execute`` op for op, so scores are bit-identical.
- :class:`Decision`: merges the replicas' scores back in batch (= sequence) order
  through a bounded reorder window, writes scores as CSV and alerts as JSON
  lines, and accounts for every batch: a batch (or piece of one) that has not
  arrived when ``window`` later batches have, or at the end, is recorded as lost
  with its sequence range and number of rows (``summary.json``).
"""

from __future__ import annotations

import json
import logging
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.errors import BrickError, StateTransferError
from lego.bricks.kitsune import moves
from lego.bricks.routing import N_BUCKETS
from lego.bricks.wire import Message
from lego.errors import ModelError
from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET
from lego.ext.packets import packet_socket

log = logging.getLogger(__name__)

PACKET_FIELDS = tuple(f.name for f in fields(PacketBatch))
LEGO_ETHERTYPE = 0x88B5
#: the longest an idle interface source sleeps before the runtime serves its control
IDLE_WAIT_S = 0.02
SHIM_LEN = 22  # shim fields between the 0x88B5 EtherType and the original EtherType
SHIM_MIRROR = 0x01


# ---------------------------------------------------------------- shim and owners


@dataclass
class Frames:
    """Undecoded frames in one buffer (what ``parse_frames`` takes)."""

    buffer: np.ndarray
    offsets: np.ndarray
    caplens: np.ndarray
    origlens: np.ndarray
    ts: np.ndarray
    linktypes: np.ndarray | int
    seq: np.ndarray


@dataclass
class ShimFields:
    """What the shims said beyond the batch's own fields, one value per frame."""

    ts_us: np.ndarray  # uint64 switch ingress timestamps (0: no shim)
    epoch: np.ndarray  # uint8 assignment epochs (split_group's epoch; 0: no shim)

    def take(self, index) -> ShimFields:
        return ShimFields(self.ts_us[index], self.epoch[index])


def strip_shims(f: Frames) -> tuple[Frames, np.ndarray, ShimFields | None]:
    """Remove the LEGO shim from the frames that carry one (vectorised, one copy
    of the buffer). Returns the frames, the mirror flags and the other shim
    fields (None when no frame had a shim). A shimmed frame's ``seq`` becomes
    the switch sequence number and its original length the shim's ``orig_len``."""
    n = len(f.offsets)
    mirror = np.zeros(n, dtype=np.uint8)
    off = f.offsets.astype(np.int64)
    cap = f.caplens.astype(np.int64)
    lt = np.broadcast_to(np.asarray(f.linktypes), (n,))
    cand = np.flatnonzero((cap >= 14 + SHIM_LEN + 2) & (lt == 1))
    if len(cand):
        b = f.buffer
        et = (b[off[cand] + 12].astype(np.uint16) << 8) | b[off[cand] + 13]
        cand = cand[et == LEGO_ETHERTYPE]
    if not len(cand):
        return f, mirror, None
    buf = np.array(f.buffer, dtype=np.uint8)  # writable copy
    o = off[cand]
    shim = buf[(o + 14)[:, None] + np.arange(SHIM_LEN)]
    flags = shim[:, 0]
    seq = np.ascontiguousarray(shim[:, 4:12]).view(">u8").ravel().astype(np.uint64)
    ts_hi = np.ascontiguousarray(shim[:, 12:14]).view(">u2").ravel().astype(np.uint64)
    ts_lo = np.ascontiguousarray(shim[:, 14:18]).view(">u4").ravel().astype(np.uint64)
    olen = np.ascontiguousarray(shim[:, 18:22]).view(">u4").ravel().astype(np.uint32)
    macs = (o[:, None] + np.arange(12)).ravel()
    buf[macs + SHIM_LEN + 2] = buf[macs]  # MACs move up to sit before origEtherType
    offsets = off.copy()
    caplens = f.caplens.astype(np.uint32).copy()
    origlens = f.origlens.astype(np.uint32).copy()
    seqs = f.seq.astype(np.uint64).copy()
    offsets[cand] += SHIM_LEN + 2
    caplens[cand] -= SHIM_LEN + 2
    origlens[cand] = olen
    seqs[cand] = seq
    mirror[cand] = (flags & SHIM_MIRROR).astype(np.uint8)
    ts_us = np.zeros(n, dtype=np.uint64)
    ts_us[cand] = (ts_hi << np.uint64(32)) | ts_lo
    epoch = np.zeros(n, dtype=np.uint8)
    epoch[cand] = flags >> 1
    return (Frames(buf, offsets, caplens, origlens, f.ts, f.linktypes, seqs), mirror,
            ShimFields(ts_us, epoch))


def frames_to_batch(f: Frames, timestamps: str = "capture"
                    ) -> tuple[PacketBatch, ShimFields | None]:
    """Strip shims and parse: the PacketBatch and the other shim fields."""
    from lego.ext.packets import parse_frames

    f, mirror, shim = strip_shims(f)
    ts = f.ts
    if timestamps == "switch" and shim is not None:
        ts = np.where(shim.ts_us > 0, shim.ts_us / 1e6, f.ts)
    batch = parse_frames(f.buffer, f.offsets, f.caplens, f.origlens, ts, f.linktypes)
    batch.seq[:] = f.seq
    batch.mirror[:] = mirror
    return batch, shim


_K1, _K2, _K3, _K4 = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
                      np.uint64(0x165667B19E3779F9), np.uint64(0xD6E8FEB86659FD93))


def address_buckets(family: np.ndarray, addr: np.ndarray) -> np.ndarray:
    """Bucket (0..N_BUCKETS-1) of each derived address (family + 16 bytes): the owner
    key of the ``lego`` semantics, the same for an address as source or destination."""
    w = np.ascontiguousarray(addr, dtype=np.uint8).view(np.uint64)
    h = (w[:, 0] * _K1) ^ (w[:, 1] * _K2) ^ (family.astype(np.uint64) * _K3)
    h ^= h >> np.uint64(31)
    h *= _K4
    h ^= h >> np.uint64(29)
    return (h % np.uint64(N_BUCKETS)).astype(np.int64)


def split_by_owner(msg: Message, owner: np.ndarray, k: int) -> list[Message]:
    """Pieces of a packet message, one per replica: a primary goes to the owner of
    its source address; a copy marked mirror goes to the owner of its destination
    when that is another replica (a packet already mirrored by the switch goes to
    the destination's owner only)."""
    a = msg.arrays
    src_owner = owner[address_buckets(a["src_family"], a["src_addr"])]
    dst_owner = owner[address_buckets(a["dst_family"], a["dst_addr"])]
    was_mirror = a["mirror"] != 0
    parts = []
    for r in range(k):
        primary = ~was_mirror & (src_owner == r)
        copy = (dst_owner == r) & (was_mirror | (src_owner != r))
        idx = np.flatnonzero(primary | copy)
        arrays = {name: arr[idx] for name, arr in a.items()}
        arrays["mirror"] = (~primary[idx]).astype(np.uint8)
        parts.append(msg.with_arrays(arrays, part=r, parts=k))
    return parts


# ---------------------------------------------------------------- packet batching


@dataclass
class SourceState:
    batches: int = 0
    packets: int = 0
    seq_end: int = 0
    counters: dict[str, int] = field(default_factory=dict)


class PacketBatching:
    """Source brick. Options: ``trace`` (path) or ``interface`` (name); ``batch``
    (packets, default 8192); ``limit`` (packets); ``repeat`` (trace passes,
    timestamps shifted so time keeps increasing); ``pps`` (pace the replay);
    ``timestamps`` (``capture`` | ``switch``); ``flush_ms`` (interface: longest
    wait to fill a batch); ``idle_s`` (interface: end after this long without
    packets); ``preload`` (trace: read and parse every pass before the run
    starts, so a throughput run measures the NF and not the trace parser, as the
    monolith's does)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.trace = options.get("trace")
        self.interface = options.get("interface")
        if bool(self.trace) == bool(self.interface):
            raise BrickError(f"{brick_id}: packet_batching needs exactly one of options "
                             f"'trace' and 'interface', got trace={self.trace!r} "
                             f"interface={self.interface!r}")
        self.size = int(options.get("batch", 8192))
        self.limit = options.get("limit")
        self.repeat = int(options.get("repeat", 1))
        self.pps = float(options.get("pps", 0) or 0)
        self.timestamps = options.get("timestamps", "switch" if self.interface else "capture")
        self.flush_s = float(options.get("flush_ms", 20)) / 1e3
        self.idle_s = options.get("idle_s")
        self.src = str(brick_id)
        self.state = SourceState()
        self._preloaded = None
        if options.get("preload") and self.trace:
            self._preloaded = list(self._trace_batches())
            self.state = SourceState(counters=self.state.counters)

    # the runtime asks a source for these
    def end_meta(self) -> dict[str, Any]:
        return {"batches": self.state.batches, "packets": self.state.packets,
                "seq_end": self.state.seq_end}

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        raise BrickError("packet_batching is a source: it takes no input")

    split = staticmethod(split_by_owner)

    def produce(self) -> Iterator[Message | None]:
        start = time.perf_counter()
        source = self._interface_batches() if self.interface else \
            iter(self._preloaded) if self._preloaded is not None else self._trace_batches()
        for batch, shim in source:
            if batch is None:
                yield None
                continue
            if self.limit is not None and self.state.packets + len(batch) > int(self.limit):
                batch = batch.take(slice(0, int(self.limit) - self.state.packets))
                shim = None if shim is None else shim.take(slice(0, len(batch)))
            if not len(batch):
                break
            arrays = {name: getattr(batch, name) for name in PACKET_FIELDS}
            if shim is not None:
                arrays["switch_ts_us"] = shim.ts_us
                arrays["epoch"] = shim.epoch
            msg = Message(batch=self.state.batches, seq0=int(batch.seq.min()),
                          seq1=int(batch.seq.max()) + 1,
                          rows=int(np.count_nonzero(batch.mirror == 0)), src=self.src,
                          t0=time.time(), arrays=arrays)
            self.state.batches += 1
            self.state.packets += len(batch)
            self.state.seq_end = max(self.state.seq_end, msg.seq1)
            if self.pps:
                ahead = self.state.packets / self.pps - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)  # pacing a replay, as tcpreplay --pps does
            yield msg
            if self.limit is not None and self.state.packets >= int(self.limit):
                break

    def _trace_batches(self) -> Iterator[tuple[PacketBatch, np.ndarray | None]]:
        from lego.ext.packets import open_trace

        shift = 0.0
        seq_shift = 0
        for _ in range(self.repeat):
            reader = open_trace(self.trace)
            last_ts, n = 0.0, 0
            raw_batches = getattr(reader, "raw_batches", None)
            if raw_batches is not None:
                parts = (frames_to_batch(Frames(r.buffer, r.offsets, r.caplens, r.origlens,
                                                r.ts, r.linktypes,
                                                np.arange(r.seq0, r.seq0 + len(r),
                                                          dtype=np.uint64)),
                                         self.timestamps)
                         for r in raw_batches(self.size))
            else:
                parts = ((b, None) for b in reader.batches(self.size))
            for batch, shim in parts:
                if shift or seq_shift:
                    batch.ts += shift
                    batch.seq += np.uint64(seq_shift)
                last_ts = float(batch.ts[-1]) if len(batch) else last_ts
                n += len(batch)
                yield batch, shim
            self.state.counters = dict(reader.counters)
            shift = last_ts + 1.0
            seq_shift += n

    def _interface_batches(self) -> Iterator[tuple[PacketBatch | None, np.ndarray | None]]:
        from lego.ext import require_built

        afp = require_built("_afpacket")
        sock = packet_socket(self.interface)
        try:
            reader = afp.BatchSocket(sock.fileno(), 256)
            waiter = select.poll()
            waiter.register(sock.fileno(), select.POLLIN)
            pending: list[bytes] = []
            times: list[float] = []
            first = last_rx = time.monotonic()
            while True:
                # sleep in the kernel until a frame, the batch's flush time, or the
                # next turn of the runtime's control (a 1 ms nap polled 1,000 times a
                # second: a fifth of a 0.1-core quota with no traffic at all)
                wait = self.flush_s - (time.monotonic() - first) if pending else IDLE_WAIT_S
                if wait > 0:
                    waiter.poll(max(1, int(1000 * min(wait, IDLE_WAIT_S))))
                frames = reader.recv()
                now = time.monotonic()
                if frames:
                    if not pending:
                        first = now
                    pending.extend(frames)
                    times.extend([time.time()] * len(frames))
                    last_rx = now
                elif self.idle_s is not None and now - last_rx > float(self.idle_s):
                    break
                if pending and (len(pending) >= self.size or now - first >= self.flush_s):
                    yield self._frames_batch(pending[:self.size], times[:self.size])
                    del pending[:self.size], times[:self.size]
                elif not frames:
                    yield None, None  # lets the runtime serve control while idle
            if pending:
                yield self._frames_batch(pending, times)
        finally:
            sock.close()

    def _frames_batch(self, frames: list[bytes], times: list[float]):
        lens = np.fromiter((len(x) for x in frames), dtype=np.uint32, count=len(frames))
        offsets = np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64)
        buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
        seq = np.arange(self.state.packets, self.state.packets + len(frames), dtype=np.uint64)
        return frames_to_batch(Frames(buf, offsets, lens, lens.copy(), np.array(times), 1, seq),
                               self.timestamps)


# ---------------------------------------------------------------- feature quantization


class FeatureQuantization:
    """The feature extractor. Options: ``semantics`` (kitsune | lego). Emits
    ``seq`` (uint64) and ``x`` (float64 rows x features) for the batch's primaries."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.semantics = options.get("semantics", "kitsune")
        self.state = make_extractor(self.semantics)
        self.width = len(self.state.feature_names())
        self.moves = moves.MoveState()  # state moves under way (controller)
        self.lend = None  # the runtime's Outlet.lend (bind_output)

    def bind_output(self, lend) -> None:
        """Write feature rows straight into the next hop's shared-memory slot
        (``lend(shape) -> array or None``), saving a copy of the largest array of
        the graph."""
        self.lend = lend

    def handle(self, msg: Message) -> list[Message]:
        if self.moves.active:
            return moves.handle(self, msg)
        batch = PacketBatch(**{name: msg.arrays[name] for name in PACKET_FIELDS})
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

    # west-east moves driven by the controller (lego.bricks.kitsune.moves)
    def control(self, cmd: dict, packets_in: int) -> tuple[dict | None, list[Message]]:
        return moves.control(self, cmd, packets_in)

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

    def export_state(self, buckets: np.ndarray) -> bytes:
        """West-east: the keyed state of ``buckets`` (``lego`` semantics only)."""
        if not hasattr(self.state, "export_state"):
            raise StateTransferError(f"feature_quantization ({self.semantics}): this "
                                     "semantics' state cannot be split by bucket")
        return self.state.export_state(np.asarray(buckets, dtype=np.int64)).to_bytes()

    def import_state(self, blob: bytes) -> None:
        from lego.ext.legostats import StateBlob

        if not hasattr(self.state, "import_state"):
            raise StateTransferError(f"feature_quantization ({self.semantics}): this "
                                     "semantics' state cannot be split by bucket")
        self.state.import_state(StateBlob.from_bytes(blob))


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


def alert_lines(seq: np.ndarray, score: np.ndarray) -> str:
    """``{"seq": N, "score": X}`` JSON lines, as ``json.dumps`` writes them (the
    shortest repr of each float), about four times faster than one dumps each."""
    if not np.isfinite(score).all():  # json's Infinity / NaN
        return "".join([json.dumps({"seq": q, "score": x}) + "\n"
                        for q, x in zip(seq.tolist(), score.tolist(), strict=True)])
    return "".join([f'{{"seq": {q}, "score": {x!r}}}\n'
                    for q, x in zip(seq.tolist(), score.tolist(), strict=True)])


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
class DecisionState:
    next_batch: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    last_seq1: int = 0
    batches: int = 0
    rows: int = 0
    alerts: int = 0
    duplicates: int = 0
    lost: list[dict] = field(default_factory=list)


class Decision:
    """Sink brick. Options: ``model`` (for the threshold, or ``threshold``);
    ``out`` (directory: scores.csv, alerts.jsonl, summary.json); ``window``
    (reorder window in batches, default 32); ``write_scores`` (default true;
    false keeps only alerts and the summary, for throughput runs);
    ``write_alerts`` (default true; false counts alerts without writing each
    one, as the monolith does in Figure 4)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        if options.get("threshold") is not None:
            self.threshold = float(options["threshold"])
        else:
            model = _load_model(options, str(brick_id))
            if model.threshold is None:
                raise ModelError(f"{options['model']}: the model has no threshold")
            self.threshold = float(model.threshold)
        self.window = int(options.get("window", 32))
        out = options.get("out")
        if not out:
            raise BrickError(f"{brick_id}: option 'out' (a results directory) is required")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.write_scores = bool(options.get("write_scores", True))
        self.write_alerts = bool(options.get("write_alerts", True))
        self._scores = open(self.out / "scores.csv", "w")
        self._scores.write("seq,score,trained,alert,decided\n")
        self._alerts = open(self.out / "alerts.jsonl", "w")
        self.state = DecisionState()

    def handle(self, msg: Message) -> list[Message]:
        s = self.state
        if msg.batch < s.next_batch:
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

    def report(self) -> dict[str, int]:
        """Counters for the load report (the controller's status: alerts, scores)."""
        s = self.state
        return {"alerts": s.alerts, "scores": s.rows, "lost_batches": len(s.lost)}

    def _drain(self, until: int | None) -> None:
        s = self.state
        while True:
            p = s.pending.get(s.next_batch)
            if p is not None and p.complete:
                self._release(s.next_batch, s.pending.pop(s.next_batch))
                continue
            newest = max(s.pending, default=-1)
            overdue = newest - s.next_batch >= self.window
            if (until is not None and s.next_batch < until) or (until is None and overdue):
                self._release(s.next_batch, s.pending.pop(s.next_batch, None))
                continue
            return

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
            table = np.column_stack([seq, score, np.ones(len(seq)), alert,
                                     np.full(len(seq), time.time())])
            np.savetxt(self._scores, table, fmt=["%d", "%.17g", "%d", "%d", "%.6f"],
                       delimiter=",")
        if self.write_alerts and alert.any():
            self._alerts.write(alert_lines(seq[alert], score[alert]))

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        s = self.state
        total = meta.get("batches")
        until = int(total) if total is not None else max(s.pending, default=s.next_batch - 1) + 1
        self._drain(until=until)
        for b in sorted(s.pending):  # beyond the source's count: should not happen
            self._release(b, s.pending.pop(b))
        self._scores.close()
        self._alerts.close()
        summary = {"batches_total": until, "batches_scored": s.batches, "rows": s.rows,
                   "alerts": s.alerts, "threshold": self.threshold,
                   "lost_batches": len(s.lost),
                   "lost_rows": sum(x["rows_lost"] or 0 for x in s.lost),
                   "lost": s.lost, "duplicates": s.duplicates,
                   "source": {k: v for k, v in meta.items() if isinstance(v, int | float | str)}}
        if s.lost:
            log.warning("decision: %d batches (partly) lost: %s", len(s.lost), s.lost[:5])
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return []
