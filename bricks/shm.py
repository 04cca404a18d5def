"""Shared-memory rings for same-host hops: payload written once, header over ZeroMQ.

A hop whose address is ``shm+ipc://PATH`` carries a batch like this:

    sender (Outlet)                                    receiver (Inlet)
    take a free slot (else wait: backpressure)
    copy the arrays into it (64-byte aligned)
    header frame --- ZeroMQ PUSH ipc://PATH --->       map the slot's segment (once)
                                                       view the arrays in place (read-only)
    slot free again <--- ZeroMQ PUSH ack address ---   release it when taking the next message

- One :class:`ShmLink` per (sender replica, receiver replica) pair: ``slots``
  segments of shared memory (``/dev/shm``), each one batch; a bigger batch
  replaces its slot's segment by a bigger one. The number of slots bounds the
  memory and the batches in flight (backpressure, or counted drops).
- The header is the ordinary wire header (:mod:`lego.bricks.wire`) plus
  where the arrays are; the brick code is the same whatever the hop.
- Release: a receiver takes one message at a time; taking the next one releases
  the previous slot (an ack to the sender's ack socket). A logic that kept
  views of the arrays (the per-message root array is still referenced) is not
  cheated: the ack says *kept*, the sender forgets that segment (it is the
  receiver's now, freed with its last view) and makes a new one for the slot.
- Names: ``lego-<run>-<pid>-<link>-<slot>-<generation>`` where ``run`` is the
  graph's work directory (:func:`run_id`). The receiver unlinks a segment as soon
  as it has mapped it, the sender unlinks what it still owns when it closes,
  and the agent sweeps ``lego-<run>-*`` when it stops (:func:`unlink_run`), so
  nothing is left in ``/dev/shm`` even after a crash.

Cost per batch: one copy of the payload into the slot (the sender), one small
JSON header and one 4-byte ack over ZeroMQ, and a ``getrefcount``; no copy on
the receiving side.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import mmap
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from lego.bricks.errors import BrickError, WireError
from lego.bricks.wire import Message, contiguous, decode, header_frame

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
SCHEME = "shm+"  # address prefix: "shm+ipc:///work/dir/uln-0.sock"
ALIGN = 64
MIN_SEGMENT = 1 << 20
_links = itertools.count()


def run_id(workdir: str | Path) -> str:
    """The run a work directory stands for (names its segments)."""
    return hashlib.sha1(str(Path(workdir).resolve()).encode()).hexdigest()[:12]


def segment_names(run: str) -> list[str]:
    """Segments of a run still in ``/dev/shm``."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(f"lego-{run}-"))
    except FileNotFoundError:
        return []


def unlink_run(run: str) -> list[str]:
    """Unlink every segment of a run (the agent calls this when it stops)."""
    gone = []
    for name in segment_names(run):
        try:
            os.unlink(SHM_DIR / name)
            gone.append(name)
        except FileNotFoundError:
            pass
    if gone:
        log.info("unlinked %d shared-memory segments of run %s", len(gone), run)
    return gone


def is_shm(address: str) -> bool:
    return address.startswith(SCHEME)


def socket_address(address: str) -> str:
    """The ZeroMQ address under an ``shm+`` address."""
    return address[len(SCHEME):] if is_shm(address) else address


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Segment:
    """One slot's shared memory on the sending side (read-write)."""

    def __init__(self, name: str, size: int) -> None:
        fd = os.open(SHM_DIR / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.name = name
        self.size = size
        self.buf = np.frombuffer(self.map, dtype=np.uint8)
        self.owned = True  # the name is ours to unlink (unless the receiver did)

    def unlink(self) -> None:
        if self.owned:
            self.owned = False
            try:
                os.unlink(SHM_DIR / self.name)
            except FileNotFoundError:
                pass  # the receiver unlinked it once mapped


class ShmLink:
    """The sending end of one shared-memory hop (one next-hop replica).

    It quacks like the ZeroMQ socket it wraps for plain frames
    (``send_multipart``, ``poll``, ``close``), so markers and re-routing work
    the same on every hop; :meth:`offer` / :meth:`wait` send a batch."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int, slots: int | None = None) -> None:
        path = Path(socket_address(address).removeprefix("ipc://"))
        self.run = run_id(path.parent)
        self.link = f"{os.getpid()}-{next(_links)}"
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(socket_address(address))
        ack_path = path.parent / f"ack-{self.link}.sock"
        if len(str(ack_path)) > 100:
            raise BrickError(f"ipc socket path too long for the kernel: {ack_path}; use a "
                             "shorter work directory")
        self.ack_address = f"ipc://{ack_path}"
        self.acks = ctx.socket(zmq.PULL)
        self.acks.setsockopt(zmq.LINGER, 0)
        self.acks.bind(self.ack_address)
        self.segments: list[_Segment | None] = [None] * max(2, slots or hwm)
        self.free = list(range(len(self.segments)))
        self.gen = 0
        self._pending: bytes | None = None  # a header whose slot is filled, not yet sent
        self._pending_slot = -1
        self._lent: int | None = None  # a slot lent to the logic (lend), not yet offered
        self.kept = 0  # segments a receiver kept (its logic held on to the arrays)
        self.in_flight: dict[int, int] = {}  # slot -> batch id, until released

    # ------------------------------------------------------------ the socket's face

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True) -> None:
        self.sock.send_multipart(frames, flags=flags, copy=copy)

    def poll(self, timeout: int, flags: int = zmq.POLLOUT) -> int:
        return self.sock.poll(timeout, flags)

    # ------------------------------------------------------------ batches

    def _take_acks(self) -> None:
        while self.acks.poll(0):
            slot, kept = json.loads(self.acks.recv())
            self.in_flight.pop(slot, None)
            if kept:
                seg = self.segments[slot]
                if seg is not None:  # the receiver's now; ours goes when unmapped
                    seg.owned = False
                self.segments[slot] = None
                self.kept += 1
            self.free.append(slot)

    def _segment(self, slot: int, size: int) -> _Segment:
        seg = self.segments[slot]
        if seg is None or seg.size < size:
            if seg is not None:
                seg.unlink()
            self.gen += 1
            seg = _Segment(f"lego-{self.run}-{self.link}-{slot}-{self.gen}",
                           max(MIN_SEGMENT, _align(size + size // 16)))
            self.segments[slot] = seg
        return seg

    def lend(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """An array in a free slot, for a logic to write its output in place: when
        a message carrying it is offered here, that array travels without a copy.
        None when no slot is free. At most one loan per link: a loan that was never
        offered (the logic emitted something else) is lent again, so the logic
        must not keep the array past emitting it."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if self._lent is None:
            self._take_acks()
            if not self.free:
                return None
            self._lent = self.free.pop()
        seg = self._segment(self._lent, nbytes + nbytes // 16)  # room for the small arrays
        return seg.buf[:nbytes].view(dtype).reshape(shape)

    def _unlend(self) -> None:
        if self._lent is not None:
            self.free.append(self._lent)
            self._lent = None

    def _layout(self, arrays: list[tuple[str, np.ndarray]]) -> tuple[int | None, list[int], int]:
        """(the lent array's index or None, offsets, end): a lent array stays at
        offset 0 of its slot, the others follow it."""
        lent = None
        if self._lent is not None:
            seg = self.segments[self._lent]
            base = seg.buf.ctypes.data if seg is not None else -1
            lent = next((i for i, (_, a) in enumerate(arrays)
                         if a.nbytes and a.ctypes.data == base), None)
        order = ([lent] if lent is not None else []) + \
            [i for i in range(len(arrays)) if i != lent]
        offsets, end = [0] * len(arrays), 0
        for i in order:
            offsets[i] = end
            end = _align(end + arrays[i][1].nbytes)
        return lent, offsets, end

    def offer(self, msg: Message) -> bool:
        """Try to send a batch without blocking: False if no slot is free or the
        header queue is full (call :meth:`wait`, then offer the same message again)."""
        if self._pending is None:
            arrays = contiguous(msg)
            lent, offsets, end = self._layout(arrays)
            if lent is None:
                self._unlend()  # the loan went unused: its slot is free again
                self._take_acks()
                if not self.free:
                    return False
                slot = self.free.pop()
            else:
                slot, self._lent = self._lent, None
                if self.segments[slot].size < end:  # the others did not fit: copy all
                    lent = None
            seg = self._segment(slot, end)
            specs = []
            for i, ((name, a), off) in enumerate(zip(arrays, offsets, strict=True)):
                if a.nbytes and i != lent:
                    seg.buf[off:off + a.nbytes] = a.reshape(-1).view(np.uint8)
                specs.append([name, a.dtype.str, list(a.shape), off])
            self._pending = header_frame(msg, specs, {"seg": seg.name, "size": seg.size,
                                                      "slot": slot, "ack": self.ack_address})
            self._pending_slot = slot
            self.in_flight[slot] = msg.batch
        try:
            self.sock.send(self._pending, zmq.NOBLOCK)
        except zmq.Again:
            return False
        self._pending = None
        return True

    def abandon(self) -> None:
        """Forget a batch :meth:`offer` could not send (it is dropped)."""
        if self._pending is not None:
            self._pending = None
            self.free.append(self._pending_slot)
            self.in_flight.pop(self._pending_slot, None)

    def oldest(self) -> int | None:
        """The oldest batch id not yet released by the receiver (None: none)."""
        self._take_acks()
        return min(self.in_flight.values(), default=None)

    def wait(self, timeout_ms: int) -> None:
        """Until a slot may be free or the header queue has room (or the timeout)."""
        self.wait_on()[0].poll(timeout_ms, self.wait_on()[1])

    def wait_on(self) -> tuple[zmq.Socket, int]:
        """(socket, event) that :meth:`wait` waits for (to poll several links)."""
        if self._pending is not None:
            return self.sock, zmq.POLLOUT
        return self.acks, zmq.POLLIN

    def close(self, linger_ms: int = 2000) -> None:
        """Close the sockets (queued headers still go out within ``linger_ms``) and
        unlink the segments no header is on its way for; one in flight is
        unlinked by its receiver when mapped, or else by the agent's sweep. With
        ``linger_ms = 0`` (a dead receiver) every segment is unlinked."""
        self.sock.close(linger_ms)
        self._unlend()
        self._take_acks()
        self.acks.close(0)
        in_flight = set(range(len(self.segments))) - set(self.free) if linger_ms else set()
        for slot, seg in enumerate(self.segments):
            if seg is not None and slot not in in_flight:
                seg.unlink()
        self.segments = [None] * len(self.segments)


class ShmReceiver:
    """The receiving side of every shared-memory hop into one inlet: maps the
    senders' segments, views messages in place and releases their slots."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.ctx = ctx
        self.maps: dict[tuple[str, int], tuple[str, mmap.mmap]] = {}
        self.acks: dict[str, zmq.Socket] = {}
        self._lease: tuple[np.ndarray, str, int] | None = None
        self.kept = 0

    def _segment(self, shm: dict[str, Any]) -> np.ndarray:
        try:
            name, size, slot, ack = shm["seg"], int(shm["size"]), int(shm["slot"]), shm["ack"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"message header shm: expected seg, size, slot, ack; got {shm!r}"
                            ) from exc
        key = (ack, slot)
        have = self.maps.get(key)
        if have is None or have[0] != name:
            try:
                fd = os.open(SHM_DIR / name, os.O_RDONLY)
            except FileNotFoundError as exc:
                raise WireError(f"shared-memory segment {name} is gone (its sender died?)"
                                ) from exc
            try:
                m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            try:
                os.unlink(SHM_DIR / name)  # mapped: the name is not needed any more
            except FileNotFoundError:
                pass
            have = self.maps[key] = (name, m)  # a replaced map goes with its last view
        root = np.frombuffer(have[1], dtype=np.uint8)  # one per message: its refcount tells
        self._lease = (root, ack, slot)
        return root

    def decode(self, frames: list) -> Message:
        self.release()
        return decode(frames, self._segment)

    def release(self) -> None:
        """Give the previous message's slot back (kept if its arrays are still in use)."""
        if self._lease is None:
            return
        root, ack, slot = self._lease
        self._lease = None
        kept = sys.getrefcount(root) > 2  # our local + getrefcount's argument
        if kept:
            self.kept += 1
            log.debug("slot %d of %s kept by the logic (its arrays are still referenced)",
                      slot, ack)
        sock = self.acks.get(ack)
        if sock is None:
            sock = self.acks[ack] = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.connect(ack)
        try:
            sock.send(json.dumps([slot, kept]).encode(), zmq.NOBLOCK)
        except zmq.Again:  # the sender is gone
            pass

    def discard(self, frames: list) -> None:
        """A message that will never be read (the receiver is closing): unlink the
        segment its header names if it was never mapped."""
        try:
            head = json.loads(bytes(frames[0].buffer if hasattr(frames[0], "buffer")
                                    else frames[0]))
            name = head.get("shm", {}).get("seg")
        except (ValueError, AttributeError, IndexError):
            return
        if name and not any(have[0] == name for have in self.maps.values()):
            try:
                os.unlink(SHM_DIR / name)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        self.release()
        for s in self.acks.values():
            s.close(0)
        self.acks.clear()
        self.maps.clear()
