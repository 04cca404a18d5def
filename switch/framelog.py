"""The frame log: every frame the switch sends to a replica, kept off the NF hosts.

With ``frame_log`` on (``lego.p4``), the switch copies each frame it sends to a
replica port, byte for byte, to one log port: a primary by an egress-to-egress
clone, a mirror and a window mark as the last replica of their clone sessions.
A process on the host behind that port (:func:`serve`) keeps them, in the
switch's order, bounded in bytes, and answers the controller over ZeroMQ
(:class:`FrameLogClient`):

- ``trim``: drop what every kept checkpoint already covers (sequence numbers up
  to ``seq``);
- ``covers``: whether the log still holds every frame after sequence number
  ``after`` (nothing dropped for the bound, by a trim or by the kernel since);
- ``frames``: the frames a lost port got after its checkpoint: those after
  sequence number ``after`` whose shim bucket is one of the port's ``buckets``,
  and the window marks, split under an epoch before ``cut_epoch`` (the switch
  write that moved the buckets away), in sequence order. It answers once a
  frame of the cut's epoch was logged and ``grace_s`` passed (copies reach the
  log port in nearly the switch's order: BMv2 makes a primary's copy in the
  replica port's egress, after the mirrors' and marks' copies of later frames
  may have left ingress), or after ``quiet_s`` without any frame (no traffic:
  nothing in flight), and says whether the log still reaches back to ``after``.

A lost host's frames since its last checkpoint, the ones it never read
included, are therefore all here (:mod:`lego.control.recovery` replays them into
the port's successor).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from lego.bricks.source import carries_shim, packed_frames, shim_columns
from lego.errors import LegoError

log = logging.getLogger(__name__)

#: epochs are 7 bits; a frame's epoch within this many after the cut's is after it
EPOCH_AHEAD = 64
#: after the cut's first frame, how long a primary's late copy may still come
GRACE_S = 0.1
#: frames one read of the log port takes at most (one recvmmsg)
READ_FRAMES = 256


@dataclass
class Chunk:
    """Frames logged together: their bytes back to back and their shim fields."""

    buf: bytes
    starts: np.ndarray  # int64 offsets into buf
    lens: np.ndarray  # int64
    seq: np.ndarray  # uint64
    bucket: np.ndarray  # int64
    epoch: np.ndarray  # int64 (7 bits)
    mark: np.ndarray  # bool: a window mark

    @classmethod
    def of(cls, frames: list[bytes]) -> Chunk | None:
        """The frames that carry a shim (others are not the switch's copies)."""
        buf, starts, lens = packed_frames(frames)
        raw = np.frombuffer(buf, dtype=np.uint8)
        ok = carries_shim(raw, starts, lens)
        if not ok.all():
            if not ok.any():
                return None
            buf, starts, lens = packed_frames([f for f, k in zip(frames, ok, strict=True) if k])
            raw = np.frombuffer(buf, dtype=np.uint8)
        sc = shim_columns(raw, starts)
        return cls(buf, starts, lens, sc.seq, sc.bucket.astype(np.int64),
                   (sc.flags >> 1).astype(np.int64), sc.mark)

    @property
    def nbytes(self) -> int:
        return len(self.buf) + 48 * len(self.lens)

    def frames(self, idx: np.ndarray) -> list[bytes]:
        view = memoryview(self.buf)
        return [bytes(view[s:s + n]) for s, n in zip(self.starts[idx].tolist(),
                                                     self.lens[idx].tolist(), strict=True)]


class FrameLog:
    """The switch's copies, oldest first, at most ``mib`` MiB: the oldest go first,
    counted. The highest sequence number gone (for the bound or a trim) is kept: a
    replay from before it is not covered."""

    def __init__(self, mib: float) -> None:
        self.limit = int(mib * 2**20)
        self.chunks: deque[Chunk] = deque()
        self.bytes = 0
        self.stats = {"logged_frames": 0, "logged_marks": 0, "dropped_for_bound": 0, "trimmed": 0,
                      "peak_bytes": 0}
        self.gone_upto: int | None = None  # highest seq dropped (bound, trim, kernel)
        self.last_add = time.monotonic()

    def add(self, frames: list[bytes]) -> None:
        chunk = Chunk.of(frames) if frames else None
        if chunk is None:
            return
        self.chunks.append(chunk)
        self.bytes += chunk.nbytes
        self.last_add = time.monotonic()
        self.stats["logged_frames"] += int((~chunk.mark).sum())
        self.stats["logged_marks"] += int(chunk.mark.sum())
        while self.bytes > self.limit and len(self.chunks) > 1:
            self.stats["dropped_for_bound"] += self._drop_oldest()
        self.stats["peak_bytes"] = max(self.stats["peak_bytes"], self.bytes)

    def _drop_oldest(self) -> int:
        gone = self.chunks.popleft()
        self.bytes -= gone.nbytes
        top = int(gone.seq.max())
        self.gone_upto = top if self.gone_upto is None else max(self.gone_upto, top)
        return len(gone.lens)

    def trim(self, seq: int) -> int:
        """Drop the chunks whose every frame is at or before ``seq``."""
        n = 0
        while self.chunks and int(self.chunks[0].seq.max()) <= seq:
            n += self._drop_oldest()
        self.stats["trimmed"] += n
        return n

    def select(self, after: int, buckets: np.ndarray, cut_epoch: int
               ) -> tuple[list[bytes], int]:
        """The lost port's frames after ``after`` and before the cut, in sequence
        order (a frame before the window mark of the same number), and how many of
        them are window marks (no frame: a port's counts leave them out)."""
        owned = np.zeros(1 << 16, dtype=bool)
        owned[np.asarray(buckets, dtype=np.int64)] = True
        picked: list[tuple[np.ndarray, np.ndarray, list[bytes]]] = []
        for c in self.chunks:
            idx = np.flatnonzero(_recent(c, after) & ~_after_cut(c, cut_epoch)
                                 & (c.mark | owned[c.bucket]))
            if len(idx):
                picked.append((c.seq[idx], c.mark[idx], c.frames(idx)))
        if not picked:
            return [], 0
        seq = np.concatenate([p[0] for p in picked])
        mark = np.concatenate([p[1] for p in picked])
        frames = [f for p in picked for f in p[2]]
        order = np.lexsort((mark, seq))
        return [frames[i] for i in order.tolist()], int(mark.sum())

    def cut_logged(self, after: int, cut_epoch: int) -> bool:
        """Was a frame after ``after`` split under the cut's epoch (or a later) logged?"""
        return any((_recent(c, after) & _after_cut(c, cut_epoch)).any()
                   for c in reversed(self.chunks))

    def covers(self, after: int) -> bool:
        return self.gone_upto is None or self.gone_upto <= after

    def lost_in_kernel(self, frames: int) -> None:
        """The kernel dropped ``frames`` copies before they were read: every replay
        from before the newest logged frame is incomplete."""
        self.stats["kernel_drops"] = self.stats.get("kernel_drops", 0) + frames
        if self.chunks:
            top = int(self.chunks[-1].seq.max())
            self.gone_upto = top if self.gone_upto is None else max(self.gone_upto, top)

    def report(self) -> dict[str, int]:
        return {**self.stats, "bytes": self.bytes, "chunks": len(self.chunks),
                "first_seq": int(self.chunks[0].seq.min()) if self.chunks else None}


def _recent(c: Chunk, after: int) -> np.ndarray:
    """The frames after sequence number ``after`` (older ones' epochs may have
    wrapped: only recent frames are tested against a cut)."""
    return c.seq > np.uint64(after)


def _after_cut(c: Chunk, cut_epoch: int) -> np.ndarray:
    return ((c.epoch - cut_epoch) % 128) < EPOCH_AHEAD


# ---------------------------------------------------------------- the process


def serve(iface: str, bind: str, mib: float, quiet_s: float = 0.3,
          stop: threading.Event | None = None) -> None:
    """Log ``iface``'s frames and answer requests on ``bind`` until SIGTERM."""
    import zmq

    from lego.bricks.source import grow_receive_buffer, kernel_drops
    from lego.ext import require_built
    from lego.ext.packets import packet_socket

    afp = require_built("_afpacket")
    flog = FrameLog(mib)
    sock = packet_socket(iface)
    grow_receive_buffer(sock)
    reader = afp.BatchSocket(sock.fileno(), READ_FRAMES)
    ctx = zmq.Context.instance()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(bind)
    poller = zmq.Poller()
    poller.register(rep, zmq.POLLIN)
    poller.register(sock.fileno(), zmq.POLLIN)
    if stop is None:  # the process's own loop: SIGTERM ends it
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pending: tuple[dict, float] | None = None  # a frames request waiting for its cut
    log.info("frame log on %s (%.0f MiB), requests on %s", iface, mib, bind)
    try:
        while not stop.is_set():
            ready = dict(poller.poll(50))
            while True:
                frames = reader.recv()
                if not frames:
                    break
                flog.add(frames)
            dropped = kernel_drops(sock)
            if dropped:
                log.warning("the kernel dropped %d copies on %s", dropped, iface)
                flog.lost_in_kernel(dropped)
            if pending is not None:
                req, since = pending
                if _answer_frames(rep, flog, req, since, quiet_s):
                    pending = None
            elif ready.get(rep):
                req = json.loads(rep.recv())
                if req.get("op") == "frames":
                    if _answer_frames(rep, flog, req, time.monotonic(), quiet_s):
                        continue
                    pending = (req, time.monotonic())
                else:
                    rep.send(json.dumps(_request(flog, req)).encode())
    finally:
        rep.close()
        sock.close()


def _request(flog: FrameLog, req: dict) -> dict:
    op = req.get("op")
    if op == "trim":
        return {"ok": True, "trimmed": flog.trim(int(req["seq"])), **flog.report()}
    if op == "report":
        return {"ok": True, **flog.report()}
    if op == "covers":
        return {"ok": True, "covered": flog.covers(int(req["after"])), **flog.report()}
    return {"ok": False, "error": f"unknown op {op!r}"}


def _answer_frames(rep, flog: FrameLog, req: dict, since: float, quiet_s: float) -> bool:
    """Answer a ``frames`` request once its cut was logged, or the port has been quiet
    for ``quiet_s`` (or the request's ``timeout_s`` passed); False: not yet."""
    now = time.monotonic()
    if "cut_at" not in req and flog.cut_logged(int(req["after"]), int(req["cut_epoch"])):
        req["cut_at"] = now  # (kept across polls: the pending request is this dict)
    cut_seen = "cut_at" in req
    quiet = now - max(flog.last_add, since) >= quiet_s
    if not ((cut_seen and now - req["cut_at"] >= GRACE_S) or quiet
            or now - since >= float(req.get("timeout_s", 5.0))):
        return False
    frames, marks = flog.select(int(req["after"]), np.asarray(req["buckets"]),
                                int(req["cut_epoch"]))
    lens = [len(f) for f in frames]
    head = {"ok": True, "frames": len(frames), "marks": marks, "lens": lens,
            "cut_seen": cut_seen,
            "covered": flog.covers(int(req["after"])), **flog.report()}
    rep.send_multipart([json.dumps(head).encode(), b"".join(frames)])
    return True


class FrameLogClient:
    """The controller's side: one request at a time (a lock), each with a deadline."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._sock = None

    def _socket(self):
        import zmq

        if self._sock is None:
            self._sock = zmq.Context.instance().socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        return self._sock

    def _call(self, req: dict, timeout_s: float | None = None) -> list[bytes]:
        with self._lock:
            sock = self._socket()
            sock.send(json.dumps(req).encode())
            if not sock.poll(int(1e3 * (timeout_s or self.timeout_s))):
                sock.close()  # a REQ socket without its reply cannot send again
                self._sock = None
                raise LegoError(f"frame log at {self.address}: no answer to "
                                f"{req.get('op')} within {timeout_s or self.timeout_s:.1f} s")
            return sock.recv_multipart()

    def trim(self, seq: int, timeout_s: float = 1.0) -> dict:
        return json.loads(self._call({"op": "trim", "seq": int(seq)}, timeout_s)[0])

    def covers(self, after: int) -> bool:
        return bool(json.loads(self._call({"op": "covers", "after": int(after)})[0])["covered"])

    def report(self) -> dict:
        return json.loads(self._call({"op": "report"})[0])

    def frames(self, after: int, buckets: list[int], cut_epoch: int,
               timeout_s: float = 5.0) -> tuple[dict, bytes]:
        """The lost port's frames (their bytes back to back; ``lens`` in the header)."""
        parts = self._call({"op": "frames", "after": int(after), "buckets": list(buckets),
                            "cut_epoch": int(cut_epoch), "timeout_s": timeout_s},
                           timeout_s + self.timeout_s)
        return json.loads(parts[0]), parts[1]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lego.switch.framelog",
                                 description="keep the switch's frame log (its log port)")
    ap.add_argument("--iface", required=True, help="the interface behind the log port")
    ap.add_argument("--bind", required=True, help="ZeroMQ address for the controller")
    ap.add_argument("--mib", type=float, default=64.0, help="most MiB of frames kept")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s framelog %(message)s")
    try:
        serve(args.iface, args.bind, args.mib)
    except OSError as exc:
        print(f"framelog: {args.iface}: {exc.strerror or exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
