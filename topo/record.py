"""Record what the switch sent each NF host (tcpdump), for the offline reference.

:class:`Recorders` runs one ``tcpdump`` per NF host's dataplane interface and
stops them only once each capture holds as many frames as the switch counted
out of that port (:func:`pcap_frames`), so a CPU-starved tcpdump is waited
for, not cut short. :func:`offline_scores` (in :mod:`lego.topo.testlib`)
then scores the captured, switch-stamped stream with one NF instance.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from pathlib import Path

from lego.errors import LegoError


def pcap_frames(path: Path) -> int:
    """Frames in a (possibly still growing) classic pcap file; a cut record is not one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(data) < 24:
        return 0
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    n, off = 0, 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, off + 8)[0]
        if off + 16 + caplen > len(data):
            break
        off += 16 + caplen
        n += 1
    return n


class Recorders:
    """tcpdump on each NF host's dataplane interface (started before the replay)."""

    def __init__(self, system, hosts: list[str], outdir: Path) -> None:
        self.system = system
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, tuple[subprocess.Popen, Path, Path]] = {}
        for h in hosts:
            path, err = self.outdir / f"recorded-{h}.pcap", self.outdir / f"tcpdump-{h}.log"
            with open(err, "wb") as f:
                p = system.net.host(h).popen(
                    ["tcpdump", "-i", system.net.nf_iface(h), "-w", str(path), "-U",
                     "-B", "65536", "-s", "0"],
                    stdout=f, stderr=subprocess.STDOUT)
            self.procs[h] = (p, path, err)
        deadline = time.monotonic() + 20
        for h, (p, _, err) in self.procs.items():
            while "listening on" not in err.read_text(errors="replace"):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise LegoError(f"tcpdump on {h} did not start: "
                                    f"{err.read_text(errors='replace')[-300:]}")
                time.sleep(0.05)  # polling tcpdump's banner up to a deadline

    def stop(self, want: dict[str, int], timeout: float = 30.0) -> dict[str, int]:
        """Stop each tcpdump once its capture holds ``want[host]`` frames (or the
        deadline); the frames each captured."""
        deadline = time.monotonic() + timeout
        got = {}
        for h, (p, path, _) in self.procs.items():
            while pcap_frames(path) < want.get(h, 0) and time.monotonic() < deadline:
                time.sleep(0.1)  # polling the capture up to a deadline
            p.send_signal(signal.SIGINT)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            got[h] = pcap_frames(path)
        return got

    def close(self) -> None:
        for p, _, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    @property
    def paths(self) -> list[Path]:
        return [path for _, path, _ in self.procs.values()]
