"""Figure 4: the monolithic NF vs the brick graph vs whole-NF replicas, same cores.

- (a) monolith: ``KitsuneNF`` in one process (it can use one core);
- (b) bricks: the Kitsune brick graph on the core budget; a calibration run with
  one replica of everything measures CPU per packet of each brick, and the
  bottleneck brick is replicated (the extractor, split by address owner, needs
  the ``lego`` semantics; the ensemble is stateless);
- (c) whole-NF replicas: K processes each running the whole NF on its share of
  the traffic as the switch splits it (``control.split_sim.split``).

Throughput is packets over the wall time from "go" to the last result; memory
is the sum of the processes' RSS; the transport alone is measured with no-op
bricks moving batches of the same shapes through the same hops.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lego.bricks.brick_agent import ONE_CORE_ENV, BrickAgent
from lego.bricks.brick_graph import Graph, graph_from_dict
from lego.bricks.kitsune_graph import kitsune_graph, train_model


@dataclass
class Fig4Row:
    setup: str
    packets: int
    seconds: float
    pps: float
    ratio: float  # vs the monolith
    rss_mb: float
    cpu: dict[str, float] = field(default_factory=dict)  # brick -> CPU utilisation (0..1)
    cpu_us_per_packet: dict[str, float] = field(default_factory=dict)


def run_graph(graph: Graph, workdir: Path, packets: int, timeout: float = 300.0) -> Fig4Row:
    """Run a graph; wall time from go to the sink's exit."""
    agent = BrickAgent(graph, workdir)
    try:
        agent.start()
        t0 = time.monotonic()
        agent.go()
        agent.wait(timeout)
        sinks = [e.t for e in agent.events if e.kind == "exited"
                 and not graph.downstream(e.brick.split("/")[0])]
        t1 = max(sinks) if sinks else time.monotonic()
        if any(c != 0 for c in agent.exit_codes().values()):
            raise RuntimeError(f"graph failed: {agent.exit_codes()}")
    finally:
        agent.stop()
    seconds = t1 - t0
    loads = agent.board.latest
    cpu = {b: r["cpu_s"] / seconds for b, r in loads.items()}
    per = {b: 1e6 * r["cpu_s"] / packets for b, r in loads.items()}
    return Fig4Row(graph.name, packets, seconds, packets / seconds, float("nan"),
                   sum(r["rss_mb"] for r in loads.values()), cpu, per)


def _monolith_child(trace: str, model: str, semantics: str, repeat: int, index: str | None,
                    cpus: list[int]) -> dict:
    """Body of a monolith process: the NF over (a share of) the repeated trace."""
    import resource

    from lego.bricks.kitsune_nf import KitsuneNF
    from lego.ext.kitnet import KitNET

    os.sched_setaffinity(0, cpus)
    batch = repeated_trace(trace, repeat)
    if index:
        data = np.load(index)
        batch = batch.take(data["index"])
        batch.mirror[:] = data["mirror"]
    nf = KitsuneNF(semantics, KitNET.load(model), keep_training_rows=False)
    parts = list(batch.split(8192))
    t0 = time.perf_counter()
    c0 = time.process_time()
    for b in parts:
        nf.kitnet.decide(nf.process(b).score)
    return {"packets": len(batch), "seconds": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def repeated_trace(trace: str | Path, repeat: int):
    from lego.ext.batch import PacketBatch
    from lego.ext.packets import read_trace

    one = read_trace(trace)
    parts = []
    span = float(one.ts[-1] - one.ts[0]) + 1.0
    for r in range(repeat):
        b = one.take(slice(None))
        b.ts += r * span
        b.seq += np.uint64(r * len(one))
        parts.append(b)
    return PacketBatch.concat(parts)


def run_monoliths(trace: Path, model: Path, semantics: str, repeat: int, cpus: list[int],
                  shares: list[Path | None]) -> list[dict]:
    """Start one monolith process per share at once; their results."""
    env = dict(os.environ, **ONE_CORE_ENV)
    procs = []
    for i, share in enumerate(shares):
        mine = [cpus[i % len(cpus)]]
        code = ("import json,sys; from lego.bricks.experiment_bricks import _monolith_child as m;"
                f"print(json.dumps(m({str(trace)!r},{str(model)!r},{semantics!r},{repeat},"
                f"{str(share) if share else None!r},{mine!r})))")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                      text=True, env=env))
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"monolith process failed with code {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def figure4(trace: Path, out: Path, semantics: str = "lego", repeat: int = 4,
            cpus: list[int] | None = None, fm: int = 2000, ad: int = 15000,
            batch: int = 8192, workdir: Path | None = None) -> list[Fig4Row]:
    cpus = cpus or sorted(os.sched_getaffinity(0))[:2]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="lego-fig4-"))
    model = train_model(trace, tmp / f"model-{semantics}.npz", semantics, fm, ad)
    packets = len(repeated_trace(trace, 1)) * repeat
    rows: list[Fig4Row] = []

    mono = run_monoliths(trace, model, semantics, repeat, cpus, [None])[0]
    base = mono["packets"] / mono["seconds"]
    rows.append(Fig4Row("monolith (1 process)", mono["packets"], mono["seconds"], base, 1.0,
                        mono["rss_mb"], {"nf": mono["cpu_s"] / mono["seconds"]},
                        {"nf": 1e6 * mono["cpu_s"] / mono["packets"]}))

    def graph(fq: int, uln: int, name: str) -> Graph:
        g = kitsune_graph(trace, model, tmp / f"out-{name}", semantics=semantics, fq=fq,
                          uln=uln, batch=batch, repeat=repeat, write_scores=False,
                          cpus={n: cpus for n in ("source", "fq", "fm", "uln", "decision")})
        g.name = name
        return g

    calib = run_graph(graph(1, 1, "bricks, 1 replica each"), tmp / "w-calib", packets)
    calib.ratio = calib.pps / base
    rows.append(calib)
    per_node: dict[str, float] = {}
    for b, us in calib.cpu_us_per_packet.items():
        per_node[b.split("/")[0]] = per_node.get(b.split("/")[0], 0.0) + us
    bottleneck = max(("fq", "uln"), key=lambda n: per_node.get(n, 0.0))
    if bottleneck == "fq" and semantics != "lego":
        bottleneck = "uln"  # the kitsune extractor has no exact split
    fq, uln = (2, 1) if bottleneck == "fq" else (1, 2)
    name = f"bricks, {bottleneck} x2"
    final = run_graph(graph(fq, uln, name), tmp / "w-final", packets)
    final.ratio = final.pps / base
    rows.append(final)

    from lego.control.split_sim import GRANULARITIES, MIRROR_PLAN, round_robin_owners, split

    whole = repeated_trace(trace, repeat)
    config = MIRROR_PLAN if semantics == "lego" else GRANULARITIES[1]
    streams = split(whole, config, round_robin_owners(len(cpus)))
    shares = []
    for r, (idx, mirror) in enumerate(zip(streams.index, streams.mirror, strict=True)):
        path = tmp / f"share{r}.npz"
        np.savez(path, index=idx, mirror=mirror)
        shares.append(path)
    reps = run_monoliths(trace, model, semantics, repeat, cpus, shares)
    seconds = max(r["seconds"] for r in reps)
    rows.append(Fig4Row(f"whole-NF replicas x{len(cpus)} ({config.name})", packets, seconds,
                        packets / seconds, packets / seconds / base,
                        sum(r["rss_mb"] for r in reps),
                        {f"nf{i}": r["cpu_s"] / seconds for i, r in enumerate(reps)},
                        {f"nf{i}": 1e6 * r["cpu_s"] / packets for i, r in enumerate(reps)}))
    return rows


def transport_cost(trace: Path, packets_limit: int, repeat: int, n_features: int,
                   n_autoencoders: int, cpus: list[int], workdir: Path,
                   batch: int = 8192) -> Fig4Row:
    """The same hops as the Kitsune graph with no-op bricks: CPU per packet of the
    transport alone (sum over the bricks)."""
    data = {
        "graph": {"name": "transport only", "hwm": 4},
        "bricks": {
            "source": {"type": "noop_source", "cpus": cpus, "options": {
                "trace": str(trace), "batch": batch, "repeat": repeat, "limit": packets_limit}},
            "fq": {"type": "noop_relay", "cpus": cpus,
                   "options": {"emit": "features", "width": n_features}},
            "fm": {"type": "noop_relay", "cpus": cpus,
                   "options": {"emit": "mapped", "width": n_features,
                               "arrays": n_autoencoders}},
            "uln": {"type": "noop_relay", "cpus": cpus, "options": {"emit": "scores"}},
            "decision": {"type": "noop_sink", "cpus": cpus},
        },
        "edges": [{"from": "source", "to": "fq"}, {"from": "fq", "to": "fm"},
                  {"from": "fm", "to": "uln"}, {"from": "uln", "to": "decision"}],
    }
    from lego.ext.packets import read_trace

    n = len(read_trace(trace, limit=packets_limit)) * repeat
    return run_graph(graph_from_dict(data, "<transport>"), workdir, n)


# ---------------------------------------------------------------- outputs


def write_outputs(rows: list[Fig4Row], stem: Path, title: str, notes: list[str]) -> None:
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setup", "packets", "seconds", "pps", "ratio", "rss_mb", "cpu",
                    "cpu_us_per_packet"])
        for r in rows:
            w.writerow([r.setup, r.packets, f"{r.seconds:.4f}", f"{r.pps:.0f}", f"{r.ratio:.3f}",
                        f"{r.rss_mb:.0f}", json.dumps({k: round(v, 3) for k, v in r.cpu.items()}),
                        json.dumps({k: round(v, 3) for k, v in r.cpu_us_per_packet.items()})])
    lines = [f"# {title}", "", "| setup | packets | pkt/s | vs monolith | RSS MiB (sum) | "
             "CPU per brick (cores) |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
        lines.append(f"| {r.setup} | {r.packets:,} | {r.pps:,.0f} | {r.ratio:.2f}x | "
                     f"{r.rss_mb:.0f} | {cpu} |")
    lines += [""] + [f"- {n}" for n in notes]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([r.setup for r in rows], [r.pps / 1e3 for r in rows], color="#4a7ab5")
    for i, r in enumerate(rows):
        ax.text(r.pps / 1e3, i, f" {r.ratio:.2f}x", va="center")
    ax.set_xlabel("throughput (thousand packets/s)")
    ax.set_title(title, fontsize=9)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    plt.close(fig)


def rows_json(rows: list[Fig4Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)
