"""Software-switch forwarding rate between veths in namespaces the benchmark creates.

Three hosts (traffic, replica A, replica B) in namespaces; the switch (``lego
switch``, its own process, one core) between them, configured over P4Runtime.
A sender process blasts UDP frames from the traffic host (sendmmsg, 256 source
addresses); the receiver counts what arrives at a replica, and the rate is
frames received / (last arrival - first arrival).

- ``switch primary``: SrcIP split, every bucket owned by replica A.
- ``switch clone``: the same plus a DstIP mirror owned by replica B: each frame
  goes out twice; the row counts the clones arriving at B.
- baseline: a plain Python AF_PACKET copy loop (one recv and one send per
  frame, no pipeline) between the same interfaces, measured in the same run.
- ``bmv2 primary`` / ``bmv2 clone``: the same two paths on BMv2
  (``simple_switch_grpc`` with the committed ``lego.json``, no logging), where
  it is on PATH; the software target's rows then give their ratio to it too.
  Under the blast BMv2 drops most frames at its libpcap ring, so its rows are
  the rate of the frames that got through, and say how many did.

Needs root and ``ip netns``; without them it returns no rows (and says why).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench.common import Row

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

SENDER = textwrap.dedent("""
    import socket, sys
    from lego.ext._afpacket import BatchSocket
    iface, n = sys.argv[1], int(sys.argv[2])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((iface, 3))
    s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)
    frames = []
    for i in range(256):
        ip = bytes([10, 0, 1, i])
        hdr = bytes.fromhex("45000032000000004011") + b"\\0\\0" + ip + bytes([10, 0, 2, 1])
        frames.append(bytes.fromhex("020000000002020000000001") + b"\\x08\\x00" + hdr
                      + b"\\x04\\x00\\x00\\x35\\x00\\x1e\\x00\\x00" + b"benchbench" * 2 + bytes(2))
    io = BatchSocket(s.fileno(), 64, 2048)
    sent = 0
    while sent < n:
        k = min(64, n - sent)
        io.send([frames[(sent + j) % 256] for j in range(k)])
        sent += k
""")

COPY_LOOP = textwrap.dedent("""
    import socket, sys
    a, b = sys.argv[1], sys.argv[2]
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); rx.bind((a, 3))
    tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); tx.bind((b, 3))
    rx.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
    print("ready", flush=True)
    while True:
        data, addr = rx.recvfrom(65536)
        if addr[2] != 4:
            tx.send(data)
""")


def _all_cpus() -> None:
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def _count(sock, want: int, quiet: float = 1.0, timeout: float = 60.0) -> tuple[int, float]:
    """Frames received (UDP marker) and the seconds from first to last."""
    from lego.ext._afpacket import BatchSocket

    io = BatchSocket(sock.fileno(), 64, 2048)
    sock.setblocking(False)
    got, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    while got < want and time.monotonic() < deadline:
        frames = io.recv()
        now = time.perf_counter()
        n = sum(1 for f in frames if b"benchbench" in f)
        if n:
            got += n
            first = first or now
            last = now
        elif last is not None and now - last > quiet:
            break
        elif not frames:
            time.sleep(0.0005)
    return got, (last - first) if first and last and last > first else 0.0


def _send(ns: str, iface: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", SENDER, iface, str(n)],
                            cwd=REPO, preexec_fn=_all_cpus)


def _measure(lab, rx_index: int, n: int) -> tuple[int, float]:
    rx = lab.host_socket(rx_index)
    try:
        sender = _send(lab.namespaces[0], lab.host_ifaces[0], n)
        got, secs = _count(rx, n)
        sender.wait(timeout=60)
        return got, secs
    finally:
        rx.close()


def _configure(addr: str, clone: bool) -> None:
    from p4.v1 import p4runtime_pb2 as p4r

    from lego.control.p4rt_client import default_device_config
    from lego.p4src.p4info import load_p4info
    from lego.switch import pipeline as pl
    from lego.switch.small_client import SmallClient

    with SmallClient(addr) as c:
        c.open_stream()
        c.set_pipeline(load_p4info(), device_config=default_device_config())
        ups = [c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
            "LegoIngress.port_role", {"standard_metadata.ingress_port": 1},
            "LegoIngress.role_traffic")})]
        for b in range(pl.N_BUCKETS):
            ups.append(c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
                "LegoIngress.bucket_owner", {"meta.version": 0, "meta.bucket": b},
                "LegoIngress.to_replica", {"port": 2})}))
            ups.append(c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
                "LegoIngress.mirror_owner", {"meta.version": 0, "meta.mirror_bucket": b},
                "LegoIngress.mirror_to", {"port": 3})}))
        c.write(ups)
        c.clone_session(3 + pl.CLONE_SESSION_BASE, [3])
        if clone:
            c.modify(c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                                   {"primary": pl.GROUP_SRCIP, "mirror": pl.GROUP_DSTIP,
                                    "epoch": 0},
                                   default=True))


def _switch(lab, port: int, kind: str) -> subprocess.Popen:
    from lego.topo.switches import switch_argv

    ifaces = {i + 1: iface for i, iface in enumerate(lab.switch_ifaces)}
    cmd = switch_argv(kind, ifaces, 0, f"127.0.0.1:{port}", log_console=False)
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            preexec_fn=_pin_one)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{kind} switch did not start: "
                                   + proc.stderr.read().decode()[-500:]) from None
            time.sleep(0.05)


def _pin_one() -> None:
    cpus = os.cpu_count() or 1
    os.sched_setaffinity(0, {cpus - 1})


def run(quick: bool) -> list[Row]:
    from lego.switch.netns import NetnsLab, netns_available

    why = netns_available()
    if why:
        log.warning("bench_switch skipped: %s", why)
        return []
    n = 100_000 if quick else 1_000_000
    rows: list[Row] = []
    with NetnsLab(3, prefix="lb") as lab:
        # baseline: a plain copy loop traffic -> replica A
        copy = subprocess.Popen([PY, "-c", COPY_LOOP, lab.switch_ifaces[0],
                                 lab.switch_ifaces[1]], stdout=subprocess.PIPE,
                                preexec_fn=_pin_one)
        try:
            copy.stdout.readline()
            got, secs = _measure(lab, 1, n)
        finally:
            copy.kill()
            copy.wait()
        base_pps = got / secs if secs else 0.0
        rows.append(Row("afpacket copy loop (baseline)", got, secs, "itself", base_pps))
        from lego.p4src.p4info import BMV2_JSON_PATH
        from lego.topo.switches import BMV2_BINARY

        kinds = ["soft"]
        if shutil.which(BMV2_BINARY) and BMV2_JSON_PATH.is_file():
            kinds.insert(0, "bmv2")
        else:
            log.warning("bench_switch: no BMv2 rows (%s or %s missing)", BMV2_BINARY,
                        BMV2_JSON_PATH.name)
        bmv2_pps: dict[bool, float] = {}
        for kind in kinds:
            for clone in (False, True):
                port = 50100 + os.getpid() % 1000 + 2 * kinds.index(kind) + int(clone)
                sw = _switch(lab, port, kind)
                try:
                    _configure(f"127.0.0.1:{port}", clone)
                    got, secs = _measure(lab, 2 if clone else 1, n)
                finally:
                    sw.terminate()
                    sw.wait(timeout=10)
                path = "clone" if clone else "primary"
                pps = got / secs if secs else 0.0
                if kind == "bmv2":
                    bmv2_pps[clone] = pps
                    # BMv2 reads its ports through a small libpcap ring: under a blast
                    # it drops most frames, so the row says how many got through
                    rows.append(Row(f"bmv2 {path} path ({got:,} of {n:,} through)", got, secs,
                                    "afpacket copy loop", base_pps))
                    continue
                rows.append(Row(f"switch {path} path", got, secs, "afpacket copy loop",
                                base_pps, target_pps=100_000.0 if not clone else 0.0))
                if clone in bmv2_pps:
                    rows.append(Row(f"switch {path} path vs BMv2", got, secs, "bmv2",
                                    bmv2_pps[clone]))
    return rows


if __name__ == "__main__":  # pragma: no cover
    for r in run("--quick" in sys.argv):
        print(f"{r.name:35s} {r.packets:9d} pkts {r.pps:12,.0f} pkt/s  x{r.ratio:.2f}")
