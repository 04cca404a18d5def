"""Bricks: the Kitsune brick graph vs the monolith, and the transport alone.

Rows (same trace, same run; the baseline is the monolithic NF in one process):
- the brick graph on 2 cores, the bottleneck brick replicated (``lego`` semantics);
- the transport alone: no-op bricks moving batches of the same shapes through the
  same ZeroMQ ipc hops; its "pkt/s" is packets per CPU-second summed over the
  bricks, and its target is 10x the NF's packets per CPU-second (IPC cost per
  packet <= 10% of the NF's).
Note: the driver pins this process to one core; the bricks re-pin themselves to
the cores this machine allows (at most 2).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import SHARED_DATA, Row, peak_rss_mb


def run(quick: bool) -> list[Row]:
    from lego.bricks.experiment_bricks import figure4, transport_cost
    from lego.ext.kitnet import KitNET

    trace = SHARED_DATA / "kitsune_mirai_first38363.tsv"
    if not trace.exists():
        from lego.topo.traffic_synth import default_trace

        trace = default_trace()
    cpus = list(range(min(2, os.cpu_count() or 1)))
    os.sched_setaffinity(0, cpus)  # the driver pinned us to one core; the bricks need two
    repeat = 2 if quick else 8
    with tempfile.TemporaryDirectory(prefix="bench-bricks-") as tmp:
        rows = figure4(trace, Path(tmp) / "out", "lego", repeat, cpus, workdir=Path(tmp))
        model = KitNET.load(Path(tmp) / "model-lego.npz")
        ipc = transport_cost(trace, 10**9, repeat, model.n_features, model.n_autoencoders,
                             cpus, Path(tmp) / "w-ipc")
    mono, bricks = rows[0], rows[2]
    nf_cpu_pps = 1e6 / mono.cpu_us_per_packet["nf"]
    ipc_cpu_s = sum(ipc.cpu_us_per_packet.values()) * ipc.packets / 1e6
    return [
        Row("monolith, 1 process", mono.packets, mono.seconds, peak_rss_mb=mono.rss_mb),
        Row(f"{bricks.setup}, {len(cpus)} cores", bricks.packets, bricks.seconds,
            "monolith", mono.pps, 1.6 * mono.pps, bricks.rss_mb),
        Row("transport only (pkt per CPU-s)", ipc.packets, ipc_cpu_s, "NF pkt per CPU-s",
            nf_cpu_pps, 10 * nf_cpu_pps, ipc.rss_mb),
        Row(f"{rows[3].setup}", rows[3].packets, rows[3].seconds, "monolith", mono.pps, 0.0,
            rows[3].rss_mb),
        Row("bench process", 0, 1.0, peak_rss_mb=peak_rss_mb()),
    ][:4]
