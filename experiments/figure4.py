"""Figure 4: the monolithic NF vs the brick graph vs whole-NF replicas, same cores.

- (a) monolith: ``KitsuneNF`` in one process (it can use one core);
- (b) bricks: the Kitsune brick graph on the core budget; a calibration run with
  one process per brick measures the CPU per packet of each brick, and the
  cores are shared out by it (:func:`split_cores`): n extractor processes, as
  many as keep up with k cores' worth of packets (one on 2 cores: fused with the
  source, :data:`LAYOUT`; more are fed by key, :data:`LAYOUT_FQ`), and k - n
  scorer processes (feature mapping + ensemble, fused); the decision alone;
  hops in shared memory. Each extractor process also runs a scorer replica
  inline (graph edge ``inline = true``): it scores the batches the scorer
  processes have no room for, so the part of its core the extractor leaves idle
  does scoring, with no second process competing for that core. The same
  layout with a scorer process per core and no inline replica (every process on
  every core), the inline layout over ZeroMQ ipc (copying) and the unfused
  graph are measured in the same run, for comparison;
- (c) whole-NF replicas: K processes each running the whole NF on its share of
  the traffic as the switch splits it (``control.split_sim.split``).

Like for like: every setup parses the trace before its clock starts (the
monolith reads it whole, the source brick with ``preload``) and decides alerts
without writing one line per alert (the monolith calls ``KitNET.decide``, the
decision brick counts them: ``write_alerts = false``); the bricks still merge
the replicas' scores in order and account for every batch.

Each setup runs ``trials`` times, the setups interleaved so that a change in
the machine's load hits them alike; a row is the run with the median
throughput. Throughput is packets over the wall time from "go" to the last
result; memory is the sum of the processes' RSS; the transport alone is
measured with no-op bricks moving batches of the same shapes through the same
hops (:func:`transport_cost`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lego.bricks.agent import BrickAgent
from lego.bricks.graph import Graph, graph_from_dict
from lego.bricks.main import ONE_CORE_ENV
from lego.nfs.kitsune.graph import kitsune_graph, train_model

#: glibc malloc settings for every process of the experiment, bricks and monoliths
#: alike: batch arrays are reallocated from the heap instead of fresh mmaps, so no
#: process pays page faults for them (a fresh brick process otherwise takes ~0.3
#: faults per packet; a monolith that has read the trace ~0.01, glibc having
#: raised its mmap threshold on freeing the trace's temporaries)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}

#: the default layout on a small core budget: brick -> process (group)
LAYOUT = {"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}
#: the layout with several extractors (replicated by key)
LAYOUT_FQ = {"fm": "scorer", "uln": "scorer"}


@dataclass
class Fig4Row:
    setup: str
    packets: int
    seconds: float
    pps: float
    ratio: float  # vs the monolith
    rss_mb: float
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU utilisation (0..1)
    cpu_us_per_packet: dict[str, float] = field(default_factory=dict)
    # fused processes: "front/0 fq" -> CPU us per packet of that member
    member_us_per_packet: dict[str, float] = field(default_factory=dict)
    trials_pps: list[float] = field(default_factory=list)


def run_graph(graph: Graph, workdir: Path, packets: int, timeout: float = 300.0) -> Fig4Row:
    """Run a graph; wall time from go to the sinks' last result (their final load
    report, stamped by the sink itself: the agent notices an exit only within
    its watch period, which would bias a one-second run)."""
    agent = BrickAgent(graph, workdir, env=MALLOC_ENV)
    try:
        agent.start()
        t0 = time.time()
        agent.go()
        agent.wait(timeout)
        if any(c != 0 for c in agent.exit_codes().values()):
            raise RuntimeError(f"graph failed: {agent.exit_codes()}")
    finally:
        agent.stop()
    loads = agent.board.latest
    sinks = [r["now"] for b, r in loads.items()
             if not graph.downstream(b.split("/")[0]) and r.get("state") == "done"]
    if not sinks:
        raise RuntimeError(f"graph {graph.name}: no final report from its sinks")
    seconds = max(sinks) - t0
    cpu = {b: r["cpu_s"] / seconds for b, r in loads.items()}
    per = {b: 1e6 * r["cpu_s"] / packets for b, r in loads.items()}
    members = {f"{b} {m}": 1e6 * c / packets for b, r in loads.items()
               for m, c in (r.get("extra") or {}).get("members_cpu_s", {}).items()}
    for b, r in loads.items():  # a replica run inline: "front/0 inline scorer/1 uln"
        inline = (r.get("extra") or {}).get("inline")
        for m, c in (inline or {}).get("members_cpu_s", {}).items():
            members[f"{b} inline {inline['brick']} {m}"] = 1e6 * c / packets
    return Fig4Row(graph.name, packets, seconds, packets / seconds, float("nan"),
                   sum(r["rss_mb"] for r in loads.values()), cpu, per, members)


def median_row(rows: list[Fig4Row]) -> Fig4Row:
    """The trial with the median throughput (its CPU figures too), with every
    trial's throughput in ``trials_pps``."""
    ordered = sorted(rows, key=lambda r: r.pps)
    row = ordered[(len(ordered) - 1) // 2]
    row.trials_pps = [r.pps for r in rows]
    return row


def _monolith_child(trace: str, model: str, semantics: str, repeat: int, index: str | None,
                    cpus: list[int]) -> dict:
    """Body of a monolith process: the NF over (a share of) the repeated trace."""
    import resource

    from lego.ext.kitnet import KitNET
    from lego.nfs.kitsune.monolith import KitsuneNF

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
    env = dict(os.environ, **ONE_CORE_ENV, **MALLOC_ENV)
    procs = []
    for i, share in enumerate(shares):
        mine = [cpus[i % len(cpus)]]
        code = ("import json,sys; from lego.experiments.figure4 import _monolith_child as m;"
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


def split_cores(k: int, fq_us: float, scorer_us: float, semantics: str) -> tuple[int, int]:
    """(extractor processes, scorer processes) for k cores, given each brick's CPU
    per packet: as many extractors as keep up with k cores' worth of packets
    (each also runs a scorer replica inline), the other cores for scorers. One
    extractor when its semantics has no exact split (``kitsune``). One core: one
    extractor and the scorer it runs inline, no scorer process."""
    if k < 2:
        return 1, 0
    n = math.ceil(k * fq_us / (fq_us + scorer_us)) if semantics == "lego" else 1
    n = min(max(n, 1), k - 1)
    return n, k - n


def _graph_setups(trace: Path, model: Path, semantics: str, repeat: int, cpus: list[int],
                  batch: int, tmp: Path, calib: Fig4Row | None) -> dict[str, Graph]:
    """The brick graphs of a run: the calibration (one process per brick) first;
    given its figures, the replicated layouts (:func:`split_cores`)."""
    k = len(cpus)

    def graph(name: str, fq: int = 1, uln: int = 1, groups: dict[str, str] | None = None,
              shm: bool = True, inline: bool = False) -> Graph:
        pin = {n: cpus for n in ("src", "fq", "fm", "uln", "dec")}
        if inline:  # extractors (+ inline scorers) own the first cores, scorers the rest
            pin.update({"fq": cpus[:fq], "fm": cpus[fq:], "uln": cpus[fq:]})
            if fq == 1:
                pin["src"] = cpus[:1]
        g = kitsune_graph(trace, model, tmp / f"out-{len(name)}-{abs(hash(name))}",
                          semantics=semantics, fq=fq, uln=uln, batch=batch, repeat=repeat,
                          write_scores=False, write_alerts=False, preload=True, shm=shm,
                          groups=groups, inline=inline, cpus=pin)
        g.name = name
        return g

    if calib is None:
        return {"calib": graph("bricks, 1 process per brick (calibration)")}
    per_node: dict[str, float] = {}
    for b, us in calib.cpu_us_per_packet.items():
        per_node[b.split("/")[0]] = per_node.get(b.split("/")[0], 0.0) + us
    n, m = split_cores(k, per_node.get("src", 0.0) + per_node.get("fq", 0.0),
                       per_node.get("fm", 0.0) + per_node.get("uln", 0.0), semantics)
    groups = LAYOUT if n == 1 else LAYOUT_FQ  # one extractor: fused with the source
    front = "source+fq" if n == 1 else f"source | fq x{n} (key)"
    plain = graph(f"bricks: {front} | fm+uln x{n + m} | decision; shm", fq=n, uln=n + m,
                  groups=groups)
    return {
        "final": graph(f"bricks: {front} (+ fm+uln inline) | fm+uln x{m} | decision; shm",
                       fq=n, uln=m, groups=groups, inline=True),
        "plain": plain,
        "ipc": graph("bricks: the inline layout over ZeroMQ ipc (copying)", fq=n, uln=m,
                     groups=groups, shm=False, inline=True),
        "unfused": graph(f"bricks: unfused, fq x{n}, uln x{n + m}; shm", fq=n, uln=n + m),
    }


def figure4(trace: Path, out: Path, semantics: str = "lego", repeat: int = 32,
            cpus: list[int] | None = None, fm: int = 2000, ad: int = 15000,
            batch: int = 8192, workdir: Path | None = None, trials: int = 3,
            whole_nf: bool = True, compare: bool = True,
            model: Path | None = None) -> list[Fig4Row]:
    """Rows: monolith, calibration, the chosen layout, then (``compare``) the same
    bricks without inline replicas, the inline layout over ipc and the unfused
    graph, then whole-NF replicas (median of ``trials`` interleaved runs).
    ``model``: a trained model to use (default: train one on the trace)."""
    cpus = cpus or sorted(os.sched_getaffinity(0))[:2]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="lego-fig4-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model = model or train_model(trace, tmp / f"model-{semantics}.npz", semantics, fm, ad)
    packets = len(repeated_trace(trace, 1)) * repeat

    def monolith() -> Fig4Row:
        mono = run_monoliths(trace, model, semantics, repeat, cpus, [None])[0]
        return Fig4Row("monolith (1 process)", mono["packets"], mono["seconds"],
                       mono["packets"] / mono["seconds"], 1.0, mono["rss_mb"],
                       {"nf": mono["cpu_s"] / mono["seconds"]},
                       {"nf": 1e6 * mono["cpu_s"] / mono["packets"]})

    runs: dict[str, list[Fig4Row]] = {"mono": [], "calib": []}
    for t in range(trials):  # the calibration decides the layout: run it first
        runs["mono"].append(monolith())
        g = _graph_setups(trace, model, semantics, repeat, cpus, batch, tmp, None)["calib"]
        runs["calib"].append(run_graph(g, tmp / f"w-calib-{t}", packets))
    calib = median_row(runs["calib"])
    setups = _graph_setups(trace, model, semantics, repeat, cpus, batch, tmp, calib)
    if not compare:
        setups = {"final": setups["final"]}
    shares = _whole_nf_shares(trace, semantics, repeat, cpus, tmp) if whole_nf else []
    for t in range(trials):
        runs["mono"].append(monolith())
        for key, g in setups.items():
            runs.setdefault(key, []).append(run_graph(g, tmp / f"w-{key}-{t}", packets))
        if shares:
            runs.setdefault("whole", []).append(_whole_nf(trace, model, semantics, repeat, cpus,
                                                          shares, packets))
    mono = median_row(runs["mono"])
    rows = [mono, calib] + [median_row(runs[k]) for k in setups] + \
        ([median_row(runs["whole"])] if shares else [])
    for r in rows[1:]:
        r.ratio = r.pps / mono.pps
    return rows


def figure4_curve(trace: Path, out: Path, semantics: str, repeat: int, cpus: list[int],
                  workdir: Path, trials: int = 3) -> list[tuple[int, list[Fig4Row]]]:
    """Figure 4 for 1..len(cpus) cores: per core count, the monolith, the brick
    graph's chosen layout and whole-NF replicas (:func:`figure4` without the
    comparison layouts), one model for all."""
    workdir.mkdir(parents=True, exist_ok=True)
    model = train_model(trace, workdir / f"model-{semantics}.npz", semantics, 2000, 15000)
    points = []
    for k in range(1, len(cpus) + 1):
        rows = figure4(trace, out, semantics, repeat, cpus[:k], workdir=workdir / f"k{k}",
                       trials=trials, compare=False, model=model)
        points.append((k, [rows[0], rows[2], rows[-1]]))
    return points


def write_curve(points: list[tuple[int, list[Fig4Row]]], stem: Path, title: str) -> None:
    """The curve as CSV, markdown and PNG (throughput against cores)."""
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cores", "setup", "pps", "ratio", "cpu_us_per_packet", "trials_pps"])
        for k, rows in points:
            for r in rows:
                w.writerow([k, r.setup, f"{r.pps:.0f}", f"{r.ratio:.3f}",
                            f"{sum(r.cpu_us_per_packet.values()):.3f}",
                            json.dumps([round(p) for p in r.trials_pps])])
    lines = [f"# {title}", "", "| cores | monolith pkt/s | brick graph pkt/s | vs monolith | "
             "whole-NF replicas pkt/s | vs monolith | brick layout |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for k, (mono, bricks, whole) in points:
        lines.append(f"| {k} | {mono.pps:,.0f} | {bricks.pps:,.0f} | {bricks.ratio:.2f}x | "
                     f"{whole.pps:,.0f} | {whole.ratio:.2f}x | {bricks.setup} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = [k for k, _ in points]
    for i, label in enumerate(("monolith (1 process)", "brick graph", "whole-NF replicas")):
        ax.plot(ks, [rows[i].pps / 1e3 for _, rows in points], marker="o", label=label)
    ax.set_xlabel("cores")
    ax.set_ylabel("throughput (thousand packets/s)")
    ax.set_xticks(ks)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    plt.close(fig)


def _whole_nf_shares(trace: Path, semantics: str, repeat: int, cpus: list[int],
                     tmp: Path) -> list[Path]:
    from lego.experiments.split_sim import GRANULARITIES, MIRROR_PLAN, round_robin_owners, split

    whole = repeated_trace(trace, repeat)
    config = MIRROR_PLAN if semantics == "lego" else GRANULARITIES[1]
    streams = split(whole, config, round_robin_owners(len(cpus)))
    shares = []
    for r, (idx, mirror) in enumerate(zip(streams.index, streams.mirror, strict=True)):
        path = tmp / f"share{r}.npz"
        np.savez(path, index=idx, mirror=mirror)
        shares.append(path)
    return shares


def _whole_nf(trace: Path, model: Path, semantics: str, repeat: int, cpus: list[int],
              shares: list[Path], packets: int) -> Fig4Row:
    from lego.experiments.split_sim import GRANULARITIES, MIRROR_PLAN

    config = MIRROR_PLAN if semantics == "lego" else GRANULARITIES[1]
    reps = run_monoliths(trace, model, semantics, repeat, cpus, shares)
    seconds = max(r["seconds"] for r in reps)
    return Fig4Row(f"whole-NF replicas x{len(cpus)} ({config.name})", packets, seconds,
                   packets / seconds, float("nan"), sum(r["rss_mb"] for r in reps),
                   {f"nf{i}": r["cpu_s"] / seconds for i, r in enumerate(reps)},
                   {f"nf{i}": 1e6 * r["cpu_s"] / packets for i, r in enumerate(reps)})


def transport_cost(trace: Path, packets_limit: int, repeat: int, n_features: int,
                   n_autoencoders: int, cpus: list[int], workdir: Path,
                   batch: int = 8192, shm: bool = True, groups: dict[str, str] | None = None,
                   uln: int = 1, inline: bool = False, name: str = "transport only") -> Fig4Row:
    """The hops of a Kitsune graph layout with no-op bricks (same batch shapes:
    packets, feature rows, per-autoencoder inputs, scores): the CPU per packet of
    the transport alone, summed over the processes. ``groups`` fuses bricks as
    in the Kitsune graph (a fused hop is a function call, not a transport), and
    ``inline`` runs a replica of the next hop inline as in the Kitsune graph."""
    groups = groups or {}
    replicas = {"uln": uln, "fm": uln if groups.get("fm") and groups.get("fm") ==
                groups.get("uln") else 1}
    options = {
        "src": {"trace": str(trace), "batch": batch, "repeat": repeat,
                "limit": packets_limit},
        "fq": {"emit": "features", "width": n_features},
        "fm": {"emit": "mapped", "width": n_features, "arrays": n_autoencoders},
        "uln": {"emit": "scores"},
    }
    types = {"src": "noop_source", "fq": "noop_relay", "fm": "noop_relay",
             "uln": "noop_relay", "dec": "noop_sink"}
    bricks = {}
    for n, t in types.items():
        bricks[n] = {"type": t, "cpus": cpus, "options": options.get(n, {}),
                     "replicas": replicas.get(n, 1)}
        if groups.get(n):
            bricks[n]["group"] = groups[n]
    data = {
        "graph": {"name": name, "hwm": 4, "shm": shm},
        "bricks": bricks,
        "edges": [{"from": "src", "to": "fq"}, {"from": "fq", "to": "fm", "inline": inline},
                  {"from": "fm", "to": "uln"}, {"from": "uln", "to": "dec"}],
    }
    from lego.ext.packets import read_trace

    n = len(read_trace(trace, limit=packets_limit)) * repeat
    return run_graph(graph_from_dict(data, "<transport>"), workdir, n)


# ---------------------------------------------------------------- outputs


def write_outputs(rows: list[Fig4Row], stem: Path, title: str, notes: list[str]) -> None:
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setup", "packets", "seconds", "pps", "ratio", "rss_mb", "cpu",
                    "cpu_us_per_packet", "member_us_per_packet", "trials_pps"])
        for r in rows:
            w.writerow([r.setup, r.packets, f"{r.seconds:.4f}", f"{r.pps:.0f}", f"{r.ratio:.3f}",
                        f"{r.rss_mb:.0f}", json.dumps({k: round(v, 3) for k, v in r.cpu.items()}),
                        json.dumps({k: round(v, 3) for k, v in r.cpu_us_per_packet.items()}),
                        json.dumps({k: round(v, 3) for k, v in r.member_us_per_packet.items()}),
                        json.dumps([round(p) for p in r.trials_pps])])
    lines = [f"# {title}", "", "| setup | packets | pkt/s | vs monolith | RSS MiB (sum) | "
             "CPU us/packet (sum) | CPU per process (cores) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.cpu.items()))
        lines.append(f"| {r.setup} | {r.packets:,} | {r.pps:,.0f} | {r.ratio:.2f}x | "
                     f"{r.rss_mb:.0f} | {sum(r.cpu_us_per_packet.values()):.3f} | {cpu} |")
    lines += [""] + [f"- {n}" for n in notes]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    lo = [r.pps - min(r.trials_pps or [r.pps]) for r in rows]
    hi = [max(r.trials_pps or [r.pps]) - r.pps for r in rows]
    ax.barh([r.setup for r in rows], [r.pps / 1e3 for r in rows], color="#4a7ab5",
            xerr=[[v / 1e3 for v in lo], [v / 1e3 for v in hi]], capsize=3,
            error_kw={"ecolor": "#888"})
    for i, r in enumerate(rows):
        ax.text((r.pps + hi[i]) / 1e3, i, f" {r.ratio:.2f}x", va="center")
    ax.set_xlim(0, 1.2 * max(max(r.trials_pps or [r.pps]) for r in rows) / 1e3)
    ax.set_xlabel("throughput (thousand packets/s): median of the trials, bars = range")
    ax.set_title(title, fontsize=9, loc="left")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    plt.close(fig)


def rows_json(rows: list[Fig4Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)
