"""AF_PACKET ports of the software switch.

A :class:`Port` is one interface opened as a raw ``AF_PACKET`` socket (all
EtherTypes, promiscuous), read and written in batches through the Cython
``lego.ext._afpacket.BatchSocket`` (recvmmsg / sendmmsg). If that extension is
not built, a pure-Python fallback does one syscall per frame (slower; a warning
says how to build it). Frames this host sent on the interface
(``PACKET_OUTGOING``, ``sll_pkttype == 4``) are skipped, and the kernel is asked
not to deliver them at all (``PACKET_IGNORE_OUTGOING``) where it can.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct

from lego.errors import LegoError
from lego.ext.packets import packet_socket

log = logging.getLogger(__name__)

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_AUXDATA = 8
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS: a struct timespec per received frame
BUFFER_BYTES = 8 << 20

try:
    from lego.ext._afpacket import BatchSocket
except ImportError:  # pragma: no cover - depends on the build
    BatchSocket = None


class _PythonIO:
    """One recv/send syscall per frame: the fallback when the extension is missing."""

    def __init__(self, sock: socket.socket, batch: int, snaplen: int):
        self.sock = sock
        self.batch = batch
        self.snaplen = snaplen
        self.rx_frames = self.rx_outgoing = self.tx_frames = self.tx_errors = 0

    def recv(self) -> list[bytes]:
        out = []
        for _ in range(self.batch):
            try:
                data, addr = self.sock.recvfrom(self.snaplen, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] == PACKET_OUTGOING:
                self.rx_outgoing += 1
                continue
            out.append(data)
        self.rx_frames += len(out)
        return out

    def recv_stamped(self) -> tuple[list[bytes], list[int]]:
        frames = self.recv()  # no kernel stamps here: the caller uses its own clock
        return frames, [0] * len(frames)

    def send(self, frames: list[bytes]) -> int:
        sent = 0
        for f in frames:
            try:
                self.sock.send(f)
                sent += 1
            except OSError:
                self.tx_errors += 1
        self.tx_frames += sent
        return sent


class Port:
    """One switch port: ``port_no`` on interface ``ifname``."""

    def __init__(self, port_no: int, ifname: str, batch: int = 64, snaplen: int = 65536):
        self.port_no = port_no
        self.ifname = ifname
        try:
            sock = packet_socket(ifname)
        except PermissionError as exc:
            raise LegoError(f"port {port_no}@{ifname}: AF_PACKET needs root "
                            "(or CAP_NET_RAW)") from exc
        except OSError as exc:
            raise LegoError(f"port {port_no}@{ifname}: cannot bind: {exc.strerror}") from exc
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:
            sock.close()
            raise LegoError(f"port {port_no}@{ifname}: cannot bind: {exc.strerror}") from exc
        self.sock = sock
        mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError as exc:  # older kernels: frames are filtered by sll_pkttype
            if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
                raise
        # each frame's kernel receive time: the switch's ingress timestamp; and the
        # 802.1Q tag the kernel offloads, to put back (lego.ext._afpacket)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                              (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, fallback, BUFFER_BYTES)
        if BatchSocket is not None:
            self.io = BatchSocket(sock.fileno(), batch, snaplen)
        else:
            log.warning("lego.ext._afpacket is not built: port %d@%s uses one syscall per "
                        "frame. Build it: .venv/bin/python setup.py build_ext --inplace",
                        port_no, ifname)
            self.io = _PythonIO(sock, batch, snaplen)

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> list[bytes]:
        return self.io.recv()

    def recv_stamped(self) -> tuple[list[bytes], list[int]]:
        """The frames waiting and each one's kernel receive time (ns since the
        epoch, 0 where unknown)."""
        return self.io.recv_stamped()

    def send(self, frames: list[bytes]) -> int:
        return self.io.send(frames)

    def stats(self) -> dict[str, int]:
        io = self.io
        return {"rx": io.rx_frames, "rx_outgoing_skipped": io.rx_outgoing,
                "tx": io.tx_frames, "tx_errors": io.tx_errors}

    def close(self) -> None:
        self.sock.close()
