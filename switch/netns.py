"""Test harness for the software switch: hosts in network namespaces on veth pairs.

``NetnsLab(n)`` creates ``n`` namespaces, each with one veth whose peer stays in
this namespace for the switch (``switch_ifaces[i]``). Names are unique per lab,
IPv6 is off on every interface (no router solicitations or DAD in the way),
and everything is removed on exit, also after a failure. ``host_socket(i)``
opens a raw AF_PACKET socket inside host ``i``'s namespace (``setns`` in a
short-lived thread), so a test talks to the switch as a host would.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time

from lego.errors import LegoError
from lego.ext.packets import packet_socket

CLONE_NEWNET = 0x40000000


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not (for a skip reason)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and veth pairs)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip"
    return None


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise LegoError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _disable_ipv6(iface: str, netns: str | None = None) -> None:
    path = f"net.ipv6.conf.{iface}.disable_ipv6=1"
    cmd = ["sysctl", "-q", "-w", path]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    subprocess.run(cmd, capture_output=True, timeout=20)


class NetnsLab:
    def __init__(self, n_hosts: int, prefix: str = "lg"):
        tag = secrets.token_hex(3)
        self.namespaces = [f"{prefix}{tag}h{i}" for i in range(n_hosts)]
        self.switch_ifaces = [f"{prefix}{tag}s{i}" for i in range(n_hosts)]
        self.host_ifaces = [f"{prefix}{tag}p{i}" for i in range(n_hosts)]

    def __enter__(self) -> NetnsLab:
        try:
            for ns, sw, host in zip(self.namespaces, self.switch_ifaces, self.host_ifaces,
                                    strict=True):
                _ip("netns", "add", ns)
                _ip("link", "add", sw, "type", "veth", "peer", "name", host)
                _ip("link", "set", host, "netns", ns)
                _disable_ipv6(sw)
                _disable_ipv6(host, ns)
                _ip("link", "set", sw, "up")
                _ip("-n", ns, "link", "set", host, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
            self._wait_up()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for sw in self.switch_ifaces:
            while True:
                with open(f"/sys/class/net/{sw}/operstate") as f:
                    if f.read().strip() == "up":
                        break
                if time.monotonic() > deadline:
                    raise LegoError(f"{sw} did not come up within {timeout}s")
                time.sleep(0.01)

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        for sw in self.switch_ifaces:  # gone with its peer's namespace; make sure
            subprocess.run(["ip", "link", "del", sw], capture_output=True, timeout=20)

    def __exit__(self, *exc) -> None:
        self.close()

    def host_socket(self, i: int) -> socket.socket:
        """A raw socket bound to host ``i``'s interface, inside its namespace."""
        result: dict[str, object] = {}

        def inside() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            try:
                with open(f"/var/run/netns/{self.namespaces[i]}") as f:
                    if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                result["sock"] = packet_socket(self.host_ifaces[i])
            except BaseException as exc:
                result["error"] = exc

        t = threading.Thread(target=inside)
        t.start()
        t.join()
        if "error" in result:
            raise LegoError(f"socket in {self.namespaces[i]}: {result['error']}")
        return result["sock"]


def recv_until(sock: socket.socket, want: int, timeout: float, accept=None) -> list[bytes]:
    """Frames received on ``sock`` (incoming only) until ``want`` accepted or the deadline."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(min(left, 0.2))
        try:
            data, addr = sock.recvfrom(65536)
        except (TimeoutError, BlockingIOError):
            continue
        if addr[2] == 4:  # PACKET_OUTGOING
            continue
        if accept is None or accept(data):
            got.append(data)
    return got
