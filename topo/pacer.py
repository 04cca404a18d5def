"""Replay a pcap at its own timing, each frame at its absolute time.

``tcpreplay`` keeps a trace's timing either by spinning (95 % of a core for
2,600 pkt/s here: on a two-core machine it then starves the switch and falls 4-20 %
behind) or by sleeping between packets (``-T select``: 3 % of a core, but every
oversleep adds up: 12 % behind after 36 s). The NF's damped statistics see that
drift as a slower trace. The pacer sends every frame whose time has come in one
``sendmmsg`` batch and sleeps until the next one is due, against one clock started
at the first frame: an oversleep delays a few frames and is caught up at once, so
the replay never drifts.

A late wake-up still sends the frames due meanwhile together, and the switch stamps
them together: an NF's timing features (inter-arrival jitter) then see a burst the
trace does not have.
Under CPU contention a sleeper at normal priority woke 4.7 ms late at the 99th
percentile here (two cores, three busy loops); the pacer asks for the lowest
real-time priority (``SCHED_FIFO`` 1: above every normal task, below the kernel's
own), which woke 0.06 ms late. It uses a few percent of a core, and the kernel's
real-time throttling bounds it even if it spun.

    python -m lego.topo.pacer IFACE PCAP

prints one JSON line: sent, failed, seconds, trace_seconds, scheduling.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

#: frames per sendmmsg call
BATCH = 256
#: the longest sleep, so that a stop signal is seen promptly
MAX_SLEEP_S = 0.05
#: SCHED_FIFO priority: the lowest real-time one
RT_PRIORITY = 1


def real_time() -> str:
    """Ask for real-time scheduling; say what the pacer got (``fifo``, or ``normal``
    and why: no CAP_SYS_NICE, or a cgroup without real-time runtime)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except OSError as exc:
        return f"normal ({exc.strerror})"
    return "fifo"


def due(rel: np.ndarray, start: int, elapsed: float) -> int:
    """Index one past the last frame due ``elapsed`` seconds in (pure)."""
    return max(start, int(np.searchsorted(rel, elapsed, side="right")))


def pace(iface: str, pcap: Path) -> dict[str, float | str]:
    from lego.ext.packets import open_trace
    from lego.switch.ports import Port

    frames: list[bytes] = []
    ts: list[np.ndarray] = []
    for raw in open_trace(pcap).raw_batches(65536):
        frames.extend(raw.frame(i) for i in range(len(raw)))
        ts.append(np.asarray(raw.ts, dtype=np.float64))
    rel = np.concatenate(ts) - ts[0][0] if frames else np.zeros(0)
    port = Port(0, iface, batch=BATCH)
    scheduling = real_time()
    sent = 0
    try:
        t0 = time.perf_counter()
        i = 0
        while i < len(frames):
            j = due(rel, i, time.perf_counter() - t0)
            if j > i:
                sent += port.send(frames[i:j])
                i = j
                continue
            time.sleep(max(0.0, min(MAX_SLEEP_S, rel[i] - (time.perf_counter() - t0))))
        seconds = time.perf_counter() - t0
    finally:
        port.close()
    return {"sent": sent, "failed": len(frames) - sent, "seconds": round(seconds, 3),
            "trace_seconds": round(float(rel[-1]) if len(rel) else 0.0, 3),
            "scheduling": scheduling}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m lego.topo.pacer IFACE PCAP", file=sys.stderr)
        return 2
    print(json.dumps(pace(args[0], Path(args[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
