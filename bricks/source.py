"""The packet source brick, Packet Batching (paper Table I): frames in, batches out.

:class:`PacketBatching` reads a pcap/pcapng/TSV (``trace``) or an interface
(``interface``, AF_PACKET) in batches and strips the LEGO shim (EtherType
0x88B5): the shim's mirror flag and switch sequence number go into the batch's
``mirror``/``seq``, the switch timestamp travels as ``switch_ts_us`` (and becomes
``ts`` with ``timestamps = "switch"``), the assignment epoch as ``epoch`` and the
window clock's window as ``window``. A window mark (a shim with no frame) is no
packet: the highest window a batch's marks opened travels as its
``meta["window_mark"]``, and a batch of marks alone is still sent. With
``frames`` (an NF whose packet field is :data:`lego.nfs.FRAME`, with its own
dissector) a batch carries the frames' bytes instead of parsed columns
(:func:`frame_arrays`). It
is also the splitter of a key-routed edge: rows go to the feature-extractor
replica that owns the source address, and a mirror copy to the owner of the
destination (the same rule as the switch, DESIGN §7), so K extractor replicas
are exact where Algorithm 1 finds an exact split. Every NF's graph starts with it
(the NF boundary, :mod:`lego.nfs`).
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from lego.bricks.errors import BrickError
from lego.bricks.wire import Message
from lego.ext.batch import PacketBatch
from lego.ext.packets import packet_socket
from lego.p4src.contract import (
    LEGO_ETHERTYPE,
    N_BUCKETS,
    SHIM_FIELDS_LEN,
    SHIM_KIND_WINDOW,
    SHIM_MIRROR,
)

log = logging.getLogger(__name__)

PACKET_FIELDS = tuple(f.name for f in fields(PacketBatch))
#: the longest an idle interface source sleeps before the runtime serves its control
IDLE_WAIT_S = 0.02
#: frames one read of the interface takes at most (one recvmmsg)
READ_FRAMES = 256
#: a paused interface source (a lost port's frames are due first) goes on without
#: them after this long: longer than the controller's recovery may take (its
#: requests time out first, and it then reports the state lost)
PAUSE_MAX_S = 60.0
SHIM_LEN = SHIM_FIELDS_LEN  # shim fields between the 0x88B5 EtherType and the original one
#: the interface socket's receive buffer. A source under a CPU quota sleeps up to a
#: quota period (100 ms) while frames keep coming; the kernel's default (about 200
#: KiB: some 300 small frames) overflowed at 13,000 frames/s from BMv2 (8,725 frames
#: of a run dropped in the NF hosts' kernels)
RCVBUF_BYTES = 64 << 20
_SOL_PACKET, _PACKET_STATISTICS, _SO_RCVBUFFORCE = 263, 6, 33


def grow_receive_buffer(sock, size: int = RCVBUF_BYTES) -> int:
    """Raise a socket's receive buffer (past rmem_max where the process may: root);
    returns what the kernel granted."""
    import socket

    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def kernel_drops(sock) -> int:
    """Frames the kernel dropped for an AF_PACKET socket since the last call (its
    buffer was full): PACKET_STATISTICS, which resets on each read."""
    import struct

    _, drops = struct.unpack("II", sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
    return drops


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
    window: np.ndarray  # uint32 windows of the switch's window clock (0: none)
    mark: np.ndarray  # bool: a window mark, not a frame
    bucket: np.ndarray  # uint16 the owner bucket the switch split the frame by
    mark_window: int = 0  # the highest window the marks taken out of these frames opened

    def take(self, index) -> ShimFields:
        return ShimFields(self.ts_us[index], self.epoch[index], self.window[index],
                          self.mark[index], self.bucket[index], self.mark_window)


@dataclass
class ShimColumns:
    """The shim's fields of some frames, one array each, as the switch wrote them."""

    flags: np.ndarray  # uint8: epoch << 1 | mirror
    bucket: np.ndarray  # uint16
    seq: np.ndarray  # uint64
    ts_us: np.ndarray  # uint64
    orig_len: np.ndarray  # uint32
    window: np.ndarray  # uint32
    mark: np.ndarray  # bool: a window mark (SHIM_KIND_WINDOW)


def packed_frames(frames: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """The frames back to back, with each one's offset and length (int64)."""
    lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    offsets = np.zeros(len(frames), dtype=np.int64)
    np.cumsum(lens[:-1], out=offsets[1:])
    return b"".join(frames), offsets, lens


def carries_shim(buffer: np.ndarray, offsets: np.ndarray, caplens: np.ndarray) -> np.ndarray:
    """bool per frame: long enough for Ethernet and the shim, EtherType 0x88B5."""
    off = np.asarray(offsets, dtype=np.int64)
    ok = np.asarray(caplens, dtype=np.int64) >= 14 + SHIM_LEN + 2
    b = np.asarray(buffer)
    ok[ok] = ((b[off[ok] + 12].astype(np.uint16) << 8) | b[off[ok] + 13]) == LEGO_ETHERTYPE
    return ok


def shim_columns(buffer: np.ndarray, offsets: np.ndarray) -> ShimColumns:
    """The shims of the frames at ``offsets`` (each known to carry one)."""
    shim = np.asarray(buffer)[(np.asarray(offsets, dtype=np.int64) + 14)[:, None]
                              + np.arange(SHIM_LEN)]

    def field(lo: int, hi: int, kind: str, dtype) -> np.ndarray:
        return np.ascontiguousarray(shim[:, lo:hi]).view(kind).ravel().astype(dtype)

    ts_hi, ts_lo = field(12, 14, ">u2", np.uint64), field(14, 18, ">u4", np.uint64)
    return ShimColumns(shim[:, 0], field(2, 4, ">u2", np.uint16), field(4, 12, ">u8", np.uint64),
                       (ts_hi << np.uint64(32)) | ts_lo, field(18, 22, ">u4", np.uint32),
                       field(22, 26, ">u4", np.uint32), shim[:, 26] == SHIM_KIND_WINDOW)


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
    cand = np.flatnonzero((lt == 1) & carries_shim(f.buffer, off, cap))
    if not len(cand):
        return f, mirror, None
    buf = np.array(f.buffer, dtype=np.uint8)  # writable copy
    o = off[cand]
    sc = shim_columns(buf, o)
    macs = (o[:, None] + np.arange(12)).ravel()
    buf[macs + SHIM_LEN + 2] = buf[macs]  # MACs move up to sit before origEtherType
    offsets = off.copy()
    caplens = f.caplens.astype(np.uint32).copy()
    origlens = f.origlens.astype(np.uint32).copy()
    seqs = f.seq.astype(np.uint64).copy()
    offsets[cand] += SHIM_LEN + 2
    caplens[cand] -= SHIM_LEN + 2
    origlens[cand] = sc.orig_len
    seqs[cand] = sc.seq
    mirror[cand] = (sc.flags & SHIM_MIRROR).astype(np.uint8)
    ts_us = np.zeros(n, dtype=np.uint64)
    ts_us[cand] = sc.ts_us
    epoch = np.zeros(n, dtype=np.uint8)
    epoch[cand] = sc.flags >> 1
    windows = np.zeros(n, dtype=np.uint32)
    windows[cand] = sc.window
    mark = np.zeros(n, dtype=bool)
    mark[cand] = sc.mark
    buckets = np.zeros(n, dtype=np.uint16)
    buckets[cand] = sc.bucket
    return (Frames(buf, offsets, caplens, origlens, f.ts, f.linktypes, seqs), mirror,
            ShimFields(ts_us, epoch, windows, mark, buckets))


def without_marks(f: Frames, mirror: np.ndarray, shim: ShimFields | None
                  ) -> tuple[Frames, np.ndarray, ShimFields | None]:
    """The frames less the window marks among them; the highest window the marks
    opened goes to the shim fields' ``mark_window``."""
    if shim is None or not shim.mark.any():
        return f, mirror, shim
    keep = np.flatnonzero(~shim.mark)
    lt = f.linktypes if np.ndim(f.linktypes) == 0 else np.asarray(f.linktypes)[keep]
    kept = Frames(f.buffer, f.offsets[keep], f.caplens[keep], f.origlens[keep], f.ts[keep], lt,
                  f.seq[keep])
    rest = shim.take(keep)
    rest.mark_window = max(shim.mark_window, int(shim.window[shim.mark].max()))
    return kept, mirror[keep], rest


def frames_to_batch(f: Frames, timestamps: str = "capture"
                    ) -> tuple[PacketBatch, ShimFields | None]:
    """Strip shims and parse: the PacketBatch (window marks left out: see
    :func:`without_marks`) and the other shim fields, per packet."""
    from lego.ext.packets import parse_frames

    f, mirror, shim = without_marks(*strip_shims(f))
    ts = f.ts
    if timestamps == "switch" and shim is not None:
        ts = np.where(shim.ts_us > 0, shim.ts_us / 1e6, f.ts)
    batch = parse_frames(f.buffer, f.offsets, f.caplens, f.origlens, ts, f.linktypes)
    batch.seq[:] = f.seq
    batch.mirror[:] = mirror
    return batch, shim


@dataclass
class FrameBatch:
    """Frames as an NF with its own dissector reads them: ``arrays`` are a message's
    (:func:`frame_arrays`), ``seq``, ``ts`` and ``mirror`` among them."""

    arrays: dict[str, np.ndarray]

    @property
    def seq(self) -> np.ndarray:
        return self.arrays["seq"]

    @seq.setter
    def seq(self, value: np.ndarray) -> None:  # a repeated trace's shifted numbers
        self.arrays["seq"] = value

    @property
    def ts(self) -> np.ndarray:
        return self.arrays["ts"]

    @ts.setter
    def ts(self, value: np.ndarray) -> None:
        self.arrays["ts"] = value

    @property
    def mirror(self) -> np.ndarray:
        return self.arrays["mirror"]

    def __len__(self) -> int:
        return len(self.arrays["seq"])

    def take(self, index) -> FrameBatch:
        a = self.arrays
        idx = np.arange(len(self))[index]
        rows = {k: v[idx] for k, v in a.items() if k not in ("frames", "offset")}
        buf, offsets = gather_frames(a["frames"], a["offset"][idx], a["caplen"][idx])
        return FrameBatch({**rows, "offset": offsets, "frames": buf})


def gather_frames(buffer: np.ndarray, offsets: np.ndarray, caplens: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The frames' bytes, back to back in a new buffer, and their offsets there."""
    cap = caplens.astype(np.int64)
    starts = np.zeros(len(cap), dtype=np.int64)
    np.cumsum(cap[:-1], out=starts[1:])
    at = np.repeat(np.asarray(offsets, dtype=np.int64) - starts, cap) + np.arange(int(cap.sum()))
    return np.asarray(buffer)[at], starts


def frame_arrays(f: Frames, timestamps: str = "capture") -> tuple[FrameBatch, ShimFields | None]:
    """Strip shims, take the window marks out, and keep the frames whole: per frame
    ``seq``, ``ts``, ``offset`` and ``caplen`` (into ``frames``, the bytes gathered),
    ``linktype``, ``mirror``, and from a shim ``switch_ts_us``, ``epoch``, ``window``
    and ``bucket``; ``frames`` last (a message's rows are its first array's)."""
    f, mirror, shim = without_marks(*strip_shims(f))
    n = len(f.offsets)
    ts = np.asarray(f.ts, dtype=np.float64)
    if timestamps == "switch" and shim is not None:
        ts = np.where(shim.ts_us > 0, shim.ts_us / 1e6, ts)
    buf, offsets = gather_frames(f.buffer, f.offsets, f.caplens)
    arrays = {"seq": np.asarray(f.seq, dtype=np.uint64), "ts": ts, "offset": offsets,
              "caplen": np.asarray(f.caplens, dtype=np.uint32),
              "linktype": np.broadcast_to(np.asarray(f.linktypes, dtype=np.uint16), (n,)).copy(),
              "mirror": mirror.astype(np.uint8)}
    if shim is not None:
        arrays.update(switch_ts_us=shim.ts_us, epoch=shim.epoch, window=shim.window,
                      bucket=shim.bucket)
    arrays["frames"] = buf
    return FrameBatch(arrays), shim


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
    meta = {key: v for key, v in msg.meta.items()  # the source's count is not a part's
            if key != "taken0" or k == 1}
    parts = []
    for r in range(k):
        primary = ~was_mirror & (src_owner == r)
        copy = (dst_owner == r) & (was_mirror | (src_owner != r))
        idx = np.flatnonzero(primary | copy)
        arrays = {name: arr[idx] for name, arr in a.items()}
        arrays["mirror"] = (~primary[idx]).astype(np.uint8)
        parts.append(msg.with_arrays(arrays, part=r, parts=k, meta=meta))
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
    monolith's does); ``frames`` (send the frames' bytes, :func:`frame_arrays`,
    not parsed columns)."""

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
        self.frames = bool(options.get("frames", False))
        self._decode = frame_arrays if self.frames else frames_to_batch
        self.src = str(brick_id)
        self.state = SourceState()
        self.read_cpu_s = 0.0  # of produce's CPU: reading the port or the trace
        self._preloaded = None
        # a lost port's frames, injected ahead of this port's own (lego.bricks.recovery)
        self.paused_at: float | None = None
        self._injected: list[bytes] | None = None
        if options.get("preload") and self.trace:
            self._preloaded = list(self._trace_batches())
            self.state = SourceState(counters=self.state.counters)
            self.read_cpu_s = 0.0  # read before the run: not the run's

    # the runtime asks a source for these
    def end_meta(self) -> dict[str, Any]:
        return {"batches": self.state.batches, "packets": self.state.packets,
                "seq_end": self.state.seq_end,
                "kernel_drops": self.state.counters.get("kernel_drops", 0)}

    def report(self) -> dict[str, int]:
        """For the load report: frames the kernel dropped before this source read them,
        and a lost port's frames injected here."""
        c = self.state.counters
        return {"kernel_drops": c.get("kernel_drops", 0),
                **{k: c[k] for k in ("frames_injected", "pause_timeouts") if c.get(k)}}

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []

    def handle(self, msg: Message) -> list[Message]:
        raise BrickError("packet_batching is a source: it takes no input")

    # a lost port's frames, ahead of this port's own (lego.control.recovery)
    def pause(self) -> dict[str, Any]:
        """Send nothing more of this port's frames (keep reading them) until
        :meth:`inject`; returns the frames sent so far: where the injected ones start."""
        if not self.interface:
            return {"ok": False, "error": "only an interface source takes injected frames"}
        self.paused_at = time.monotonic()
        return {"ok": True, "position": self.state.packets}

    def inject(self, frames: list[bytes]) -> dict[str, Any]:
        """Send ``frames`` (switch frames, shims on) next, then go on with this port's."""
        if self.paused_at is None:
            return {"ok": False, "error": "not paused"}
        self._injected = list(frames)
        return {"ok": True, "frames": len(frames)}

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
            marked = shim.mark_window if shim is not None else 0
            if not len(batch) and not marked:
                break
            if self.frames:
                arrays = batch.arrays
            else:
                arrays = {name: getattr(batch, name) for name in PACKET_FIELDS}
                if shim is not None:
                    arrays["switch_ts_us"] = shim.ts_us
                    arrays["epoch"] = shim.epoch
                    if shim.window.any():  # a switch clock: a parsed batch's NF may need it
                        arrays["window"] = shim.window
            seq0 = int(batch.seq.min()) if len(batch) else self.state.seq_end
            msg = Message(batch=self.state.batches, seq0=seq0,
                          seq1=int(batch.seq.max()) + 1 if len(batch) else seq0,
                          rows=int(np.count_nonzero(batch.mirror == 0)), src=self.src,
                          t0=time.time(), arrays=arrays,
                          # the frames taken before: a keyed brick restarted mid-run
                          # counts the port's frames from it (lego.bricks.moves)
                          meta={"taken0": self.state.packets,
                                **({"window_mark": marked} if marked else {})})
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
                parts = (self._decode(Frames(r.buffer, r.offsets, r.caplens, r.origlens,
                                             r.ts, r.linktypes,
                                             np.arange(r.seq0, r.seq0 + len(r),
                                                       dtype=np.uint64)),
                                      self.timestamps)
                         for r in self._timed(raw_batches(self.size)))
            elif self.frames:
                raise BrickError(f"{self.src}: {self.trace}: a text trace has no frames to "
                                 "send (option 'frames'): give a pcap or pcapng")
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

    def _timed(self, it: Iterator) -> Iterator:
        """``it``'s items, the CPU each took to read counted in :attr:`read_cpu_s`."""
        while True:
            t = time.thread_time()
            item = next(it, None)
            self.read_cpu_s += time.thread_time() - t
            if item is None:
                return
            yield item

    def _interface_batches(self) -> Iterator[tuple[PacketBatch | None, np.ndarray | None]]:
        from lego.ext import require_built

        afp = require_built("_afpacket")
        sock = packet_socket(self.interface)
        counters = self.state.counters
        counters["rcvbuf_bytes"] = grow_receive_buffer(sock)
        counters.setdefault("kernel_drops", 0)
        try:
            reader = afp.BatchSocket(sock.fileno(), READ_FRAMES)
            waiter = select.poll()
            waiter.register(sock.fileno(), select.POLLIN)
            pending: list[bytes] = []
            times: list[float] = []
            first = last_rx = time.monotonic()
            full = False  # the last read took all it could: more are waiting
            while True:
                t_read = time.thread_time()
                if not pending:
                    # sleep in the kernel until a frame or the next turn of the
                    # runtime's control (a 1 ms nap polled 1,000 times a second: a
                    # fifth of a 0.1-core quota with no traffic at all)
                    waiter.poll(int(1000 * IDLE_WAIT_S))
                elif not full:
                    # a batch is open: let frames gather in the socket's buffer until
                    # its flush time (at most a control turn away) rather than wake
                    # for every few frames that arrive: 50 wakes a second, not one
                    # per frame, for a batch the runtime sends whole anyway
                    wait = min(self.flush_s - (time.monotonic() - first), IDLE_WAIT_S)
                    if wait > 0:
                        time.sleep(wait)
                frames = reader.recv()
                self.read_cpu_s += time.thread_time() - t_read
                full = len(frames) >= READ_FRAMES
                now = time.monotonic()
                if frames:
                    if not pending:
                        first = now
                    pending.extend(frames)
                    times.extend([time.time()] * len(frames))
                    last_rx = now
                elif self.idle_s is not None and now - last_rx > float(self.idle_s):
                    break
                if self.paused_at is not None:
                    yield from self._paused()
                    continue
                if pending and (len(pending) >= self.size or now - first >= self.flush_s):
                    counters["kernel_drops"] += kernel_drops(sock)
                    yield self._frames_batch(pending[:self.size], times[:self.size])
                    del pending[:self.size], times[:self.size]
                elif not full:
                    yield None, None  # lets the runtime serve control meanwhile
            if pending:
                yield self._frames_batch(pending, times)
        finally:
            counters["kernel_drops"] += kernel_drops(sock)
            if counters["kernel_drops"]:
                log.warning("%s: the kernel dropped %d frames on %s (its receive buffer, "
                            "%d bytes, was full)", self.src, counters["kernel_drops"],
                            self.interface, counters["rcvbuf_bytes"])
            sock.close()

    def _paused(self):
        """While paused: the injected frames once they come, in batches, then this
        port's again; nothing else (the runtime serves control meanwhile)."""
        if self._injected is None:
            if time.monotonic() - self.paused_at < PAUSE_MAX_S:
                time.sleep(0.002)  # a batch is open past its flush time: no busy loop
                yield None, None
                return
            log.warning("%s: no frames injected within %.0f s of the pause; going on",
                        self.src, PAUSE_MAX_S)
            self.state.counters["pause_timeouts"] = \
                self.state.counters.get("pause_timeouts", 0) + 1
            self._injected = []
        frames, self._injected, self.paused_at = self._injected, None, None
        now = time.time()
        c = self.state.counters
        for i in range(0, len(frames), self.size):
            part = frames[i:i + self.size]
            batch, shim = self._frames_batch(part, [now] * len(part))
            c["frames_injected"] = c.get("frames_injected", 0) + len(batch)  # (no marks)
            yield batch, shim

    def _frames_batch(self, frames: list[bytes], times: list[float]):
        data, offsets, lens = packed_frames(frames)
        lens = lens.astype(np.uint32)
        buf = np.frombuffer(data, dtype=np.uint8)
        seq = np.arange(self.state.packets, self.state.packets + len(frames), dtype=np.uint64)
        return self._decode(Frames(buf, offsets, lens, lens.copy(), np.array(times), 1, seq),
                            self.timestamps)
