"""ZeroMQ transport between bricks: ``ipc://`` on one host, ``tcp://`` across hosts.

The same brick code runs on both; only the addresses differ (:func:`addresses`).

- Each brick replica binds one PULL socket, its input queue (:class:`Inlet`), and
  one PULL socket for control (:class:`Control`).
- An outgoing edge is one PUSH socket per next-hop replica (:class:`Outlet`), so
  the routing table, not ZeroMQ, picks the replica, and a dead replica's socket
  can be closed on its own.
- Bounded: every socket has a high-water mark in messages (batches). With
  ``overflow = "block"`` a full queue blocks the sender (backpressure, time
  counted in ``blocked_s``) while it keeps serving control messages; with
  ``overflow = "drop"`` the batch is dropped and counted. Either way memory is
  bounded by ``hwm`` batches per link (plus the kernel's socket buffers).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

from lego.bricks.brick_errors import BrickError
from lego.bricks.brick_routing import RoutingTable
from lego.bricks.brick_wire import Message, decode, encode, nbytes

log = logging.getLogger(__name__)

TRANSPORTS = ("ipc", "tcp")
OVERFLOWS = ("block", "drop")
POLL_MS = 100  # longest a blocked sender goes without looking at its control socket


def addresses(transport: str, workdir: Path, name: str, host: str = "127.0.0.1",
              port: int = 0) -> tuple[str, str]:
    """(bind, connect) addresses for a socket called ``name``.

    ``ipc``: a socket file in ``workdir``; ``tcp``: ``host:port`` (port 0 is not
    allowed here: the graph assigns ports so that peers know them in advance).
    """
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
    """The bounded input queue of a brick replica (PULL, bound)."""

    def __init__(self, ctx: zmq.Context, address: str, hwm: int) -> None:
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.address = address
        self.received = 0
        self.bytes = 0

    def recv(self) -> Message:
        msg = decode(self.sock.recv_multipart(copy=False))
        self.received += 1
        self.bytes += nbytes(msg)
        return msg

    def close(self) -> None:
        self.sock.close(0)


class Control:
    """A brick's control socket: JSON commands from its agent."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)

    def recv(self) -> dict:
        return json.loads(self.sock.recv())

    def close(self) -> None:
        self.sock.close(0)


class Outlet:
    """One outgoing edge: a routing table and a PUSH socket per next-hop replica."""

    def __init__(self, ctx: zmq.Context, table: RoutingTable, hwm: int,
                 overflow: str = "block") -> None:
        if overflow not in OVERFLOWS:
            raise BrickError(f"overflow: expected one of {OVERFLOWS}, got {overflow!r}")
        self.ctx = ctx
        self.table = table
        self.hwm = hwm
        self.overflow = overflow
        self.socks: list[zmq.Socket | None] = [self._connect(a) for a in table.addresses]
        self.sent = [0] * len(self.socks)
        self.dropped = 0  # batches (or pieces) not delivered: full queue or dead replica
        self.dropped_rows = 0
        self.blocked_s = 0.0
        self.bytes = 0

    def _connect(self, address: str) -> zmq.Socket:
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.SNDHWM, self.hwm)
        s.setsockopt(zmq.LINGER, 2000)
        s.connect(address)
        return s

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

    def send(self, index: int, msg: Message, serve_control: Callable[[], None]) -> bool:
        """Send to replica ``index``; False (and counted) if it was dropped."""
        sock = self.socks[index] if 0 <= index < len(self.socks) else None
        if sock is None or not self.table.live[index]:
            return self._drop(msg)
        frames = encode(msg)
        if self.overflow == "drop":
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return self._drop(msg)
            return self._sent(index, msg)
        while True:
            try:
                sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return self._sent(index, msg)
            except zmq.Again:
                t = time.perf_counter()
                sock.poll(POLL_MS, zmq.POLLOUT)
                self.blocked_s += time.perf_counter() - t
                serve_control()  # may kill this replica while we wait on it
                sock = self.socks[index]
                if sock is None:
                    return self._drop(msg)

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
