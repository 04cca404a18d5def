"""Bricks: the Kitsune brick graph vs the monolith, and the transport alone.

Rows (same trace, same run; the baseline is the monolithic NF in one process):
- the brick graph on 2 cores in its default layout (source+extractor fused
  with a mapping+ensemble replica inline, mapping+ensemble fused in a second
  process, decision; shared-memory hops), ``lego`` semantics; target 1.6x the
  monolith;
- the transport alone: no-op bricks moving batches of the same shapes through
  the same process hops (shared memory; and the old ZeroMQ-ipc-only graph with
  a process per brick, for comparison); its "pkt/s" is packets per CPU-second
  summed over the bricks, and its target is 10x the NF's packets per CPU-second
  (IPC cost per packet <= 10% of the NF's);
- whole-NF replicas (the traditional scale-out), for reference.
Note: the driver pins this process to one core; the bricks re-pin themselves to
the cores this machine allows (at most 2). The machine may be shared: rows are
medians of interleaved trials (see ``lego experiment bricks`` for every trial).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import SHARED_DATA, Row, peak_rss_mb


def run(quick: bool) -> list[Row]:
    from lego.experiments.figure4 import LAYOUT, figure4, transport_cost
    from lego.ext.kitnet import KitNET

    trace = SHARED_DATA / "kitsune_mirai_first38363.tsv"
    if not trace.exists():
        from lego.topo.traffic_synth import default_trace

        trace = default_trace()
    cpus = list(range(min(2, os.cpu_count() or 1)))
    os.sched_setaffinity(0, cpus)  # the driver pinned us to one core; the bricks need two
    repeat, trials = (8, 1) if quick else (32, 3)
    with tempfile.TemporaryDirectory(prefix="bench-bricks-") as tmp:
        rows = figure4(trace, Path(tmp) / "out", "lego", repeat, cpus, workdir=Path(tmp),
                       trials=trials)
        model = KitNET.load(Path(tmp) / "model-lego.npz")
        shapes = (trace, 10**9, repeat, model.n_features, model.n_autoencoders, cpus)
        layout = transport_cost(*shapes, Path(tmp) / "t-layout", groups=LAYOUT,
                                uln=max(len(cpus) - 1, 1), inline=len(cpus) > 1)
        hops4 = transport_cost(*shapes, Path(tmp) / "t-4", shm=False)
    mono, bricks, whole = rows[0], rows[2], rows[-1]
    nf_cpu_pps = 1e6 / mono.cpu_us_per_packet["nf"]

    def cpu_s(r) -> float:
        return sum(r.cpu_us_per_packet.values()) * r.packets / 1e6

    return [
        Row("monolith, 1 process", mono.packets, mono.seconds, peak_rss_mb=mono.rss_mb),
        Row(f"{bricks.setup}, {len(cpus)} cores", bricks.packets, bricks.seconds,
            "monolith", mono.pps, 1.6 * mono.pps, bricks.rss_mb),
        Row("transport only, default layout, shm (pkt per CPU-s)", layout.packets,
            cpu_s(layout), "NF pkt per CPU-s", nf_cpu_pps, 10 * nf_cpu_pps, layout.rss_mb),
        Row("transport only, 4 hops, ZeroMQ ipc (pkt per CPU-s)", hops4.packets, cpu_s(hops4),
            "NF pkt per CPU-s", nf_cpu_pps, 10 * nf_cpu_pps, hops4.rss_mb),
        Row(f"{whole.setup}", whole.packets, whole.seconds, "monolith", mono.pps, 0.0,
            whole.rss_mb),
        Row("bench process", 0, 1.0, peak_rss_mb=peak_rss_mb()),
    ][:5]
