"""Transport between bricks: shared memory or ``ipc://`` on one host, ``tcp://`` across.

The same brick code runs on all three; only the addresses differ (:func:`addresses`):

- ``shm``: the arrays are written once into a shared-memory slot and only the
  header travels over ZeroMQ ipc (:mod:`lego.bricks.shm`); the receiver
  views them in place. Address ``shm+ipc://PATH``.
- ``ipc`` / ``tcp``: the header and the arrays travel as one ZeroMQ multipart
  message (the kernel copies them; the receiver views the frames).

- Each brick replica binds one PULL socket, its input queue (:class:`Inlet`), and
  one PULL socket for control (:class:`Control`).
- An outgoing edge is one link per next-hop replica (:class:`Outlet`): a PUSH
  socket (:class:`SocketLink`) or a PUSH socket plus shared-memory slots
  (:class:`~lego.bricks.shm.ShmLink`), so the routing table, not ZeroMQ,
  picks the replica, and a dead replica's link can be closed on its own. Round
  robin is work-conserving: a batch whose replica is full goes to another with
  room before the sender waits.
- Bounded: every socket has a high-water mark in messages (batches) and a
  shared-memory link ``hwm`` slots. With ``overflow = "block"`` a full queue
  blocks the sender (backpressure, time counted in ``blocked_s``) while it keeps
  serving control messages; with ``overflow = "drop"`` the batch is dropped and
  counted. Either way memory is bounded by ``hwm`` batches per link (plus the
  kernel's socket buffers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from lego.bricks.errors import BrickError
from lego.bricks.routing import RoutingTable
from lego.bricks.shm import SCHEME, ShmLink, ShmReceiver, is_shm, socket_address
from lego.bricks.wire import Message, encode, nbytes

log = logging.getLogger(__name__)

TRANSPORTS = ("ipc", "tcp")  # a graph's choice; same-host hops may add shared memory (shm)
OVERFLOWS = ("block", "drop")
POLL_MS = 100  # longest a blocked sender goes without looking at its control socket
#: a round-robin batch goes to another replica than its turn's only while it is
#: fewer than this many batches ahead of the oldest one still queued on the edge,
#: so a merger's reorder window (the decision's: 32) is never outrun
SPILL_AHEAD = 16


def addresses(transport: str, workdir: Path, name: str, host: str = "127.0.0.1",
              port: int = 0) -> tuple[str, str]:
    """(bind, connect) addresses for a socket called ``name``.

    ``ipc``: a socket file in ``workdir``; ``shm``: the same, prefixed ``shm+``
    (payload in shared memory, header on the socket); ``tcp``: ``host:port``
    (port 0 is not allowed here: the graph assigns ports so that peers know them
    in advance).
    """
    if transport == "shm":
        bind, connect = addresses("ipc", workdir, name, host, port)
        return SCHEME + bind, SCHEME + connect
    if transport == "ipc":
        path = Path(workdir) / f"{name.replace('/', '-')}.sock"
        if len(str(path)) > 100:
            raise BrickError(f"ipc socket path too long for the kernel ({len(str(path))} > 100 "
                             f"bytes): {path}; use a shorter work directory")
        return f"ipc://{path}", f"ipc://{path}"
    if transport == "tcp":
        if not 0 < port < 65536:
            raise BrickError(f"tcp address of {name}: expected a port in 1..65535, got {port}")
        return f"tcp://{host}:{port}", f"tcp://{host}:{port}"
    raise BrickError(f"transport: expected one of {TRANSPORTS}, got {transport!r}")


class Inlet:
    """The bounded input queue of a brick replica (PULL, bound). It takes plain
    and shared-memory messages alike; a message's arrays are valid until the next
    :meth:`recv` (which releases a shared-memory slot)."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int) -> None:
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(socket_address(address))
        self.address = address
        self.shared = ShmReceiver(ctx)
        self.received = 0
        self.bytes = 0

    def recv(self) -> Message:
        msg = self.shared.decode(self.sock.recv_multipart(copy=False))
        self.received += 1
        self.bytes += nbytes(msg)
        return msg

    def close(self) -> None:
        while self.sock.poll(0):  # never to be read: their segments go now
            self.shared.discard(self.sock.recv_multipart(copy=False))
        self.shared.close()
        self.sock.close(0)


class SocketLink:
    """A ZeroMQ PUSH socket to one next-hop replica, with :class:`ShmLink`'s
    ``offer``/``wait`` face: every array travels in the message (copied by the
    kernel), so the same brick code runs over ipc, tcp and shared memory."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int) -> None:
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.connect(address)
        self._frames: list | None = None

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True) -> None:
        self.sock.send_multipart(frames, flags=flags, copy=copy)

    def poll(self, timeout: int, flags: int = zmq.POLLOUT) -> int:
        return self.sock.poll(timeout, flags)

    def offer(self, msg: Message) -> bool:
        if self._frames is None:
            self._frames = encode(msg)
        try:
            self.sock.send_multipart(self._frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self._frames = None
        return True

    def abandon(self) -> None:
        self._frames = None

    def wait(self, timeout_ms: int) -> None:
        self.sock.poll(timeout_ms, zmq.POLLOUT)

    def wait_on(self) -> tuple[zmq.Socket, int]:
        """(socket, event) that :meth:`wait` waits for (to poll several links)."""
        return self.sock, zmq.POLLOUT

    def close(self, linger_ms: int = 2000) -> None:
        self.sock.close(linger_ms)


class Control:
    """A brick's control socket: JSON commands from its supervisor."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)

    def recv(self) -> dict:
        return json.loads(self.sock.recv())

    def close(self) -> None:
        self.sock.close(0)


class Outlet:
    """One outgoing edge: a routing table and a link per next-hop replica
    (:class:`SocketLink`, or :class:`~lego.bricks.shm.ShmLink` for an
    ``shm+`` address); ``socks`` is the list of links."""

    def __init__(self, ctx: zmq.Context, table: RoutingTable, hwm: int,
                 overflow: str = "block") -> None:
        if overflow not in OVERFLOWS:
            raise BrickError(f"overflow: expected one of {OVERFLOWS}, got {overflow!r}")
        self.ctx = ctx
        self.table = table
        self.hwm = hwm
        self.overflow = overflow
        self.socks: list[SocketLink | ShmLink | None] = [self._connect(a)
                                                         for a in table.addresses]
        self.sent = [0] * len(self.socks)
        self.dropped = 0  # batches (or pieces) not delivered: full queue or dead replica
        self.dropped_rows = 0
        self.spilled = 0  # round-robin batches sent to another replica than their turn's
        self.blocked_s = 0.0
        self.bytes = 0

    def _connect(self, address: str) -> SocketLink | ShmLink:
        if is_shm(address):
            return ShmLink(self.ctx, address, self.hwm)
        return SocketLink(self.ctx, address, self.hwm)

    def rebuild(self) -> None:
        """Reconnect after :meth:`RoutingTable.update` replaced the addresses."""
        for s in self.socks:
            if s is not None:
                s.close(0)
        self.socks = [self._connect(a) for a in self.table.addresses]
        self.sent = [0] * len(self.socks)

    def kill(self, index: int) -> None:
        """Replica ``index`` is dead: close its socket, discarding what is queued."""
        self.table.remove(index)
        if 0 <= index < len(self.socks) and self.socks[index] is not None:
            self.socks[index].close(0)
            self.socks[index] = None

    def lend(self, shape: tuple[int, ...], dtype: np.dtype = np.float64) -> np.ndarray | None:
        """Memory in the shared-memory slot of the replica that round robin gives
        the next batch to, for the sending logic to write an output array in
        place (:meth:`ShmLink.lend`); None when that is not possible (key routing,
        a socket link, no free slot): the logic allocates as usual."""
        index = self.table.peek()
        link = self.socks[index] if index is not None and index < len(self.socks) else None
        return link.lend(shape, dtype) if isinstance(link, ShmLink) else None

    def send(self, index: int, msg: Message, serve_control: Callable[[], None]) -> bool:
        """Send to replica ``index``; False (and counted) if it was dropped.

        Round robin is work-conserving: a batch whose replica's queue is full goes
        to another live replica with room (``spilled``) before the sender waits,
        so a replica that gets less CPU (it shares a core) gets fewer batches
        instead of stalling the others; a batch never gets :data:`SPILL_AHEAD`
        batches ahead of the oldest one still queued (shared-memory links know
        what their receiver has released; socket links do not spill). Key
        routing never moves a batch."""
        sock = self.socks[index] if 0 <= index < len(self.socks) else None
        if sock is None or not self.table.live[index]:
            return self._drop(msg)
        spill = self._can_spill(msg)
        while True:
            if sock.offer(msg):
                return self._sent(index, msg)
            if spill:
                other = self._spill(index, msg)
                if other is not None:
                    sock.abandon()
                    self.spilled += 1
                    return self._sent(other, msg)
            if self.overflow == "drop":
                sock.abandon()
                return self._drop(msg)
            t = time.perf_counter()
            if spill:
                self._wait_any(POLL_MS)
            else:
                sock.wait(POLL_MS)
            self.blocked_s += time.perf_counter() - t
            serve_control()  # may kill or replace this replica while we wait on it
            if index >= len(self.socks) or self.socks[index] is not sock:
                sock.abandon()
                sock = self.socks[index] if index < len(self.socks) else None
                if sock is None or not self.table.live[index]:
                    return self._drop(msg)

    def try_send(self, index: int, msg: Message) -> bool:
        """Send to replica ``index``, or another live one with room (round robin),
        without waiting: False when none has room (nothing is counted as dropped:
        the caller has somewhere else to put the batch)."""
        sock = self.socks[index] if 0 <= index < len(self.socks) else None
        if sock is not None and self.table.live[index]:
            if sock.offer(msg):
                return self._sent(index, msg)
            sock.abandon()
        other = self._spill(index, msg) if self._can_spill(msg) else None
        if other is None:
            return False
        self.spilled += 1
        return self._sent(other, msg)

    def _can_spill(self, msg: Message) -> bool:
        return msg.kind == "data" and self.table.policy == "round_robin" and \
            len(self.socks) > 1 and all(isinstance(s, ShmLink) for s in self.socks if s)

    def _spill(self, index: int, msg: Message) -> int | None:
        """Another live replica that takes ``msg`` now (round robin from ``index``)."""
        oldest = min((o for s in self.socks if s is not None
                      for o in [s.oldest()] if o is not None), default=msg.batch)
        if msg.batch - oldest >= SPILL_AHEAD:
            return None
        n = len(self.socks)
        for k in range(1, n):
            j = (index + k) % n
            link = self.socks[j]
            if link is not None and self.table.live[j]:
                if link.offer(msg):
                    return j
                link.abandon()
        return None

    def _wait_any(self, timeout_ms: int) -> None:
        """Until some live replica's queue may have room (or the timeout)."""
        poller = zmq.Poller()
        for j, link in enumerate(self.socks):
            if link is not None and self.table.live[j]:
                poller.register(*link.wait_on())
        poller.poll(timeout_ms)

    def _sent(self, index: int, msg: Message) -> bool:
        self.sent[index] += 1
        self.bytes += nbytes(msg)
        return True

    def _drop(self, msg: Message) -> bool:
        if msg.kind == "data":
            self.dropped += 1
            self.dropped_rows += msg.n
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("to %s: %d batches dropped so far", self.table.target, self.dropped)
        return False

    def close(self, linger_ms: int = 2000) -> None:
        for s in self.socks:
            if s is not None:
                s.close(linger_ms)


def rows_of(msg: Message) -> int:
    """Rows a message carries (0 for an end marker)."""
    return msg.n if msg.kind == "data" else 0


def empty_like(msg: Message) -> dict[str, np.ndarray]:
    """Zero-row arrays with the dtypes and trailing shapes of ``msg``'s arrays."""
    return {k: np.zeros((0,) + a.shape[1:], dtype=a.dtype) for k, a in msg.arrays.items()}


def push_control(ctx: zmq.Context, sockets: dict[str, zmq.Socket], brick: str, address: str,
                 command: dict, hwm: int) -> bool:
    """One control message to a brick's control socket (connected on first use, kept
    in ``sockets``), without blocking; False (and a warning) when its queue is full."""
    sock = sockets.get(brick)
    if sock is None:
        sock = sockets[brick] = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.connect(address)
    try:
        sock.send(json.dumps(command).encode(), zmq.NOBLOCK)
    except zmq.Again:
        log.warning("control to %s dropped (queue full): %s", brick, command)
        return False
    return True
