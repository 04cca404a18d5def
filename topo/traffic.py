"""The traffic host: replay a trace with tcpreplay at a fixed or ramping rate, or
at its own (sped-up) timing with :mod:`lego.topo.pacer`.

A ramp is several tcpreplay runs back to back, each over its own slice of the
trace at its own ``--pps`` (rising then falling). :func:`ramp_segments` (pure)
cuts the trace so every step lasts the same time; :func:`split_trace` writes
the slices as pcap files; :func:`tcpreplay_argv` (pure) is one step's command;
:class:`Replayer` runs the steps in the traffic host's namespace, one after the
other, and records what tcpreplay reports for each (packets sent, failed).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lego.errors import ConfigError, LegoError

log = logging.getLogger(__name__)

_ACTUAL = re.compile(r"Actual:\s+(\d+)\s+packets")
_FAILED = re.compile(r"Failed packets:\s+(\d+)")


@dataclass(frozen=True)
class Segment:
    index: int
    start: int  # first packet of the trace in this step
    count: int
    pps: int

    @property
    def seconds(self) -> float:
        return self.count / self.pps


@dataclass
class SegmentResult:
    segment: Segment
    t_start: float  # time.time()
    t_end: float = 0.0
    sent: int = 0
    failed: int = 0
    code: int | None = None
    output: str = ""
    scheduling: str = ""  # the pacer's: fifo, or normal and why


def ramp_segments(packets: int, rates: tuple[int, ...] | list[int]) -> list[Segment]:
    """Cut ``packets`` into one step per rate, each lasting the same time."""
    if packets <= 0:
        raise ConfigError(f"traffic: expected a trace with packets, got {packets}")
    if not rates or any(r <= 0 for r in rates):
        raise ConfigError(f"traffic.pps: expected rates > 0, got {list(rates)}")
    total = sum(rates)
    bounds = np.floor(np.cumsum([0, *rates]) / total * packets).astype(int)
    bounds[-1] = packets
    return [Segment(i, int(bounds[i]), int(bounds[i + 1] - bounds[i]), int(r))
            for i, r in enumerate(rates) if bounds[i + 1] > bounds[i]]


def base_rate(ts: np.ndarray) -> float:
    """The trace's own packet rate over its first half (packets/s): the benign
    traffic a capacity ramp scales; an attack later in the trace does not count."""
    half = len(ts) // 2
    span = float(ts[half] - ts[0]) if half > 0 else 0.0
    if span <= 0:
        raise ConfigError("traffic: the trace's first half spans no time; cannot scale "
                          "its clock to a rate")
    return half / span


def speedup_schedule(ts: np.ndarray, rates: list[int], step_s: float
                     ) -> tuple[list[Segment], np.ndarray]:
    """Replay the trace with its clock sped up by one factor per step (pure).

    Step ``i`` lasts ``step_s`` and runs the trace's clock ``rates[i] / base_rate``
    times faster, so its base traffic arrives at ``rates[i]`` packets/s. The factor
    depends on the step alone, never on which packets fall into it: everything that
    happens at the same moment of the trace (benign hosts and an attack alike) is
    sped up equally, so rate differences within the trace survive the replay (a
    per-step packet count would flatten an attack's burst to the step's rate).
    Returns the steps (packets past the last one are left out) and the new times,
    from 0, of the packets they cover."""
    if not rates or any(r <= 0 for r in rates):
        raise ConfigError(f"traffic.pps: expected rates > 0, got {list(rates)}")
    rel = np.asarray(ts, dtype=np.float64) - float(ts[0])
    factors = np.asarray(rates, dtype=np.float64) / base_rate(rel)
    orig_bounds = np.concatenate([[0.0], np.cumsum(factors * step_s)])
    idx = np.searchsorted(rel, orig_bounds, side="left")
    idx[-1] = np.searchsorted(rel, orig_bounds[-1], side="right")
    new_bounds = np.arange(len(rates) + 1, dtype=np.float64) * step_s
    kept = int(idx[-1])
    times = np.interp(rel[:kept], orig_bounds, new_bounds)
    segments = [Segment(i, int(idx[i]), int(idx[i + 1] - idx[i]),
                        max(1, round((idx[i + 1] - idx[i]) / step_s)))
                for i in range(len(rates)) if idx[i + 1] > idx[i]]
    return segments, times


def split_trace(trace: Path, segments: list[Segment], outdir: Path) -> list[Path]:
    """Write each segment's frames to ``outdir/segment-NN.pcap`` (classic pcap)."""
    from lego.ext.packets import open_trace, write_pcap

    reader = open_trace(trace)
    raw_batches = getattr(reader, "raw_batches", None)
    if raw_batches is None:
        raise ConfigError(f"{trace}: tcpreplay needs frames (pcap or pcapng), "
                          "not a TSV of fields")
    frames: list[bytes] = []
    ts: list[np.ndarray] = []
    for raw in raw_batches(65536):
        if np.any(raw.linktypes != 1):
            raise ConfigError(f"{trace}: expected Ethernet frames (link type 1) to replay")
        frames.extend(raw.frame(i) for i in range(len(raw)))
        ts.append(np.asarray(raw.ts, dtype=np.float64))
    times = np.concatenate(ts) if ts else np.zeros(0)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for seg in segments:
        path = outdir / f"segment-{seg.index:02d}.pcap"
        write_pcap(path, frames[seg.start:seg.start + seg.count],
                   times[seg.start:seg.start + seg.count])
        paths.append(path)
    return paths


def trace_frames(trace: Path) -> int:
    from lego.ext.packets import open_trace

    return sum(len(r) for r in open_trace(trace).raw_batches(65536))


def tcpreplay_argv(iface: str, pcap: Path, pps: int) -> list[str]:
    """One replay step: ``pcap`` on ``iface`` at ``pps`` packets/s."""
    return ["tcpreplay", f"--intf1={iface}", f"--pps={pps}", str(pcap)]


def pacer_argv(iface: str, pcap: Path) -> list[str]:
    """One replay at the pcap's own timing (:mod:`lego.topo.pacer`)."""
    return [sys.executable, "-m", "lego.topo.pacer", iface, str(pcap)]


def pacer_report(output: str) -> dict:
    """The pacer's JSON line ({} if it printed none: it failed)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def parse_pacer(output: str) -> tuple[int, int]:
    """(packets sent, packets failed) from the pacer's JSON line."""
    r = pacer_report(output)
    return int(r.get("sent", 0)), int(r.get("failed", 0))


def parse_tcpreplay(output: str) -> tuple[int, int]:
    """(packets sent, packets failed) from tcpreplay's summary."""
    sent = _ACTUAL.search(output)
    failed = _FAILED.search(output)
    return (int(sent.group(1)) if sent else 0, int(failed.group(1)) if failed else 0)


@dataclass
class Replayer:
    """Runs the steps in ``host`` (a Mininet host) one after the other, in a thread."""

    host: object
    iface: str
    steps: list[tuple[Segment, Path]]
    on_step: Callable[[SegmentResult], None] | None = None
    own_timing: bool = False  # the step pcaps carry the replay's timing: the pacer
    results: list[SegmentResult] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="replayer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def current(self) -> SegmentResult | None:
        return self.results[-1] if self.results else None

    def _run(self) -> None:
        try:
            for seg, path in self.steps:
                if self._stop.is_set():
                    return
                r = SegmentResult(seg, time.time())
                self.results.append(r)
                if self.on_step is not None:
                    self.on_step(r)
                argv = pacer_argv(self.iface, path) if self.own_timing else \
                    tcpreplay_argv(self.iface, path, seg.pps)
                self._proc = self.host.popen(argv, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT)
                out, _ = self._proc.communicate()
                r.t_end = time.time()
                r.code = self._proc.returncode
                r.output = out.decode(errors="replace") if out else ""
                r.sent, r.failed = (parse_pacer if self.own_timing else
                                    parse_tcpreplay)(r.output)
                if self.own_timing:
                    r.scheduling = str(pacer_report(r.output).get("scheduling", ""))
                if r.code != 0 and not self._stop.is_set():
                    self.error = (f"tcpreplay step {seg.index} exited with {r.code}: "
                                  f"{r.output.strip()[-500:]}")
                    log.error("%s", self.error)
                    return
        except Exception as exc:  # noqa: BLE001 - reported through .error
            log.exception("replayer failed")
            self.error = f"replayer: {exc!r}"

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise LegoError(f"replay still running after {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
        self._thread.join(5)

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)
