"""Record what the switch sent each NF host (tcpdump), for the offline reference.

:class:`Recorders` runs one ``tcpdump`` per NF host's dataplane interface and
stops them only once each capture holds as many frames as the switch counted
out of that port (:func:`pcap_frames`), so a CPU-starved tcpdump is waited
for, not cut short. :func:`offline_scores` then scores the captured,
switch-stamped stream with one NF instance; :func:`ingress_times` and
:func:`capture_epoch_s` read the switch's timestamps back from the captures.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from pathlib import Path

import numpy as np

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


def recorded_frames(pcaps: list[Path]):
    """Every frame the NF hosts' captures hold (shims and window marks kept)."""
    from lego.bricks.source import Frames
    from lego.ext.packets import open_trace

    frames: list[bytes] = []
    for p in pcaps:
        for raw in open_trace(p).raw_batches(65536):
            frames.extend(raw.frame(i) for i in range(len(raw)))
    lens = np.fromiter((len(x) for x in frames), dtype=np.uint32, count=len(frames))
    offsets = np.concatenate([[0], np.cumsum(lens[:-1], dtype=np.int64)]).astype(np.int64)
    buf = np.frombuffer(b"".join(frames), dtype=np.uint8)
    return Frames(buf, offsets, lens, lens.copy(), np.zeros(len(frames)), 1,
                  np.arange(len(frames), dtype=np.uint64))


def _switch_batch(pcaps: list[Path]):
    """The frames the NF hosts received (shims kept) as one batch, switch-stamped."""
    from lego.bricks.source import frames_to_batch

    batch, _ = frames_to_batch(recorded_frames(pcaps), "switch")
    prim = np.flatnonzero(batch.mirror == 0)
    return batch.take(prim[np.argsort(batch.seq[prim], kind="stable")])


def switch_frames(pcaps: list[Path], recorded=None):
    """The same for an NF that reads frames: one frames batch
    (:class:`~lego.bricks.source.FrameBatch`) in sequence order, window marks out,
    each frame with its switch time, window and bucket. ``recorded``: the captures'
    frames (:func:`recorded_frames`) when the caller read them already."""
    from lego.bricks.source import frame_arrays

    batch, _ = frame_arrays(recorded_frames(pcaps) if recorded is None else recorded, "switch")
    prim = np.flatnonzero(batch.mirror == 0)
    return batch.take(prim[np.argsort(batch.seq[prim], kind="stable")])


def window_opens(pcaps: list[Path], recorded=None) -> dict[int, float]:
    """When each window of the switch's clock opened (switch time, seconds): the
    earliest frame or window mark the NF hosts received stamped with it."""
    from lego.bricks.source import strip_shims

    _, _, shim = strip_shims(recorded_frames(pcaps) if recorded is None else recorded)
    if shim is None or not shim.window.any():
        return {}
    w, ts = shim.window.astype(np.int64), shim.ts_us / 1e6
    order = np.lexsort((ts, w))
    first = np.flatnonzero(np.diff(w[order], prepend=-1) != 0)
    return {int(w[order][i]): float(ts[order][i]) for i in first if w[order][i] > 0}


def ingress_times(pcaps: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(switch sequence number, switch ingress timestamp in seconds) of every primary
    the NF hosts received, in sequence order."""
    one = _switch_batch(pcaps)
    return one.seq.astype(np.int64), np.asarray(one.ts, dtype=np.float64)


def capture_epoch_s(pcaps: list[Path], sample: int = 20_000) -> float | None:
    """The wall-clock time of the switch's timestamp 0, from the NF hosts' captures:
    the smallest (capture time - shim timestamp) over their first frames. Where the
    switch does not say its epoch (BMv2), latencies measured from it are short by
    the fastest frame's switch-to-host delay (tens of microseconds)."""
    from lego.bricks.source import Frames, strip_shims
    from lego.ext.packets import open_trace

    best = []
    for p in pcaps:
        raw = next(iter(open_trace(p).raw_batches(sample)), None)
        if raw is None:
            continue
        ts = np.asarray(raw.ts, dtype=np.float64)
        f = Frames(raw.buffer, raw.offsets, raw.caplens, raw.origlens, ts, raw.linktypes,
                   np.zeros(len(raw), dtype=np.uint64))
        out, _, shim = strip_shims(f)
        if shim is not None:
            shimmed = out.offsets != np.asarray(f.offsets, dtype=np.int64)
            best.append(float(np.min(ts[shimmed] - shim.ts_us[shimmed] / 1e6)))
    return min(best) if best else None


def offline_scores(pcaps: list[Path], model: Path, nf=None, options: dict | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One offline NF instance over the frames the NF hosts received (shims kept):
    the primaries, in switch sequence order, with the switch's timestamps."""
    from lego import nfs

    nf = nf or nfs.get(nfs.DEFAULT)
    stream = switch_frames(pcaps) if nf.source_options().get("frames") else \
        _switch_batch(pcaps)
    seq, score = nf.reference([stream], model, nf.resolve(options))
    order = np.argsort(seq, kind="stable")  # an NF deciding per window emits out of order
    return seq[order], score[order]
