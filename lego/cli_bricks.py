"""``lego bricks`` (check / run a brick graph file) and the body of ``lego
experiment bricks`` (Figure 4), which ``lego.cli_experiment`` registers with
:func:`add_experiment`."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from lego.cli_args import existing_file, positive_int

REPO = Path(__file__).resolve().parents[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    bricks = subparsers.add_parser("bricks", help="brick graphs: check or run a graph file")
    sub = bricks.add_subparsers(dest="bricks_command", metavar="ACTION", required=True)
    p = sub.add_parser("check", help="check a graph file (exit 1 with the first error)")
    p.add_argument("graph", type=existing_file, metavar="GRAPH.toml")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("run", help="start the graph's bricks on this host and wait for them")
    p.add_argument("graph", type=existing_file, metavar="GRAPH.toml")
    p.add_argument("--timeout", type=positive_int, default=3600, metavar="SECONDS")
    p.add_argument("--workdir", type=Path, metavar="DIR", help="sockets, specs and brick logs")
    p.set_defaults(func=cmd_run)


def add_experiment(experiments: argparse._SubParsersAction) -> None:
    """``lego experiment bricks``: added to the experiment command's subcommands."""
    p = experiments.add_parser("bricks", help="Figure 4: monolith vs brick graph vs NF replicas")
    p.add_argument("--trace", type=existing_file, metavar="TRACE",
                   help="default: ../shared/data/kitsune_mirai_first38363.tsv if present, "
                        "else the generated synthetic trace")
    p.add_argument("--semantics", choices=("lego", "kitsune"), default="lego")
    p.add_argument("--repeat", type=positive_int, default=32, metavar="N",
                   help="trace passes (more packets per run)")
    p.add_argument("--cores", type=positive_int, default=2, metavar="N")
    p.add_argument("--trials", type=positive_int, default=3, metavar="N",
                   help="runs of each setup, interleaved; rows are the median")
    p.add_argument("--curve", action="store_true",
                   help="the curve for 1..--cores cores (monolith, brick graph, whole-NF "
                        "replicas): figure4_curve_*.{md,csv,png}")
    p.add_argument("--out", type=Path, default=REPO / "results", metavar="DIR")
    p.set_defaults(func=cmd_experiment)


def cmd_check(args: argparse.Namespace) -> int:
    from lego.bricks.graph import load_graph

    g = load_graph(args.graph)
    bricks = len(g.logical.nodes) if g.logical else len(g.nodes)
    Console().print(f"{args.graph}: ok: {bricks} bricks, {len(g.instances())} processes, "
                    f"{len(g.edges)} edges between them, hops {g.hop_transport}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lego.bricks.agent import BrickAgent
    from lego.bricks.errors import BrickError
    from lego.bricks.graph import load_graph
    from lego.experiments.figure4 import MALLOC_ENV

    g = load_graph(args.graph)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lego-bricks-"))
    console = Console(stderr=True)
    with BrickAgent(g, workdir, env=MALLOC_ENV, on_event=lambda e: console.print(
            f"{e.kind}: {e.brick}" + (f" (exit code {e.code})" if e.code else ""))) as agent:
        agent.run(args.timeout)
    died = {n: c for n, c in agent.exit_codes().items() if c != 0}
    if died:
        raise BrickError(f"bricks died: {died}; logs in {workdir}")
    return 0


def _default_trace(out: Path) -> Path:
    real = REPO.parent / "shared" / "data" / "kitsune_mirai_first38363.tsv"
    if real.is_file():
        return real
    from lego.topo.traffic_synth import default_trace

    return default_trace(out)


def _curve(args: argparse.Namespace, trace: Path, cpus: list[int]) -> int:
    from lego.experiments.figure4 import figure4_curve, write_curve

    with tempfile.TemporaryDirectory(prefix="lego-fig4-curve-") as tmp:
        points = figure4_curve(trace, args.out, args.semantics, args.repeat, cpus, Path(tmp),
                               args.trials)
    stem = args.out / f"figure4_curve_{args.semantics}"
    write_curve(points, stem, f"Figure 4 against cores: {trace.name} x{args.repeat}, "
                              f"{args.semantics} semantics, 1..{len(cpus)} cores")
    Console().print(stem.with_suffix(".md").read_text())
    Console().print(f"wrote {stem}.md, .csv, .png")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    import os

    from lego.errors import ConfigError
    from lego.experiments.figure4 import (
        LAYOUT,
        figure4,
        transport_cost,
        write_outputs,
    )

    cpus = sorted(os.sched_getaffinity(0))
    if args.cores > len(cpus):
        raise ConfigError(f"--cores: expected at most the {len(cpus)} CPUs available, "
                          f"got {args.cores}")
    cpus = cpus[:args.cores]
    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.trace or _default_trace(args.out)
    if args.curve:
        return _curve(args, trace, cpus)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lego-fig4-") as tmp:
        rows = figure4(trace, args.out, args.semantics, args.repeat, cpus, workdir=Path(tmp),
                       trials=args.trials)
        from lego.ext.kitnet import KitNET

        model = KitNET.load(Path(tmp) / f"model-{args.semantics}.npz")
        shapes = (trace, 10**9, args.repeat, model.n_features, model.n_autoencoders, cpus)
        hops = {
            "4 process hops, ZeroMQ ipc": transport_cost(*shapes, Path(tmp) / "t1", shm=False),
            "4 process hops, shared memory": transport_cost(*shapes, Path(tmp) / "t2"),
            "the default layout's hops, shared memory": transport_cost(
                *shapes, Path(tmp) / "t3", groups=LAYOUT, uln=max(len(cpus) - 1, 1),
                inline=len(cpus) > 1),
        }
    load1 = os.getloadavg()
    nf_us = rows[0].cpu_us_per_packet["nf"]
    final = rows[2]
    bricks_us = sum(final.cpu_us_per_packet.values())
    title = (f"Figure 4: {trace.name} x{args.repeat}, {args.semantics} semantics, "
             f"{len(cpus)} cores")
    notes = [f"{final.setup}: {final.ratio:.2f}x the monolith (target >= 1.6x); all its "
             f"processes together use {bricks_us:.3f} us CPU per packet vs the monolith's "
             f"{nf_us:.3f}, so {len(cpus)} dedicated cores bound it at "
             f"{len(cpus) * nf_us / bricks_us:.2f}x; best trial against best trial: "
             f"{max(final.trials_pps) / max(rows[0].trials_pps):.2f}x"]
    notes += [f"transport alone, {name} (no-op bricks, same batch shapes): "
              f"{sum(r.cpu_us_per_packet.values()):.3f} us CPU per packet = "
              f"{100 * sum(r.cpu_us_per_packet.values()) / nf_us:.1f}% of the NF's "
              f"{nf_us:.3f} us (target <= 10%)" for name, r in hops.items()]
    notes += [f"per-member CPU of fused processes ({final.setup}), us per packet: " +
              ", ".join(f"{k} {v:.3f}" for k, v in final.member_us_per_packet.items()),
              f"{args.trials} interleaved trials per setup (the monolith twice as often), "
              "median shown; every trial, k pkt/s: " + "; ".join(
                  f"row {i + 1} " + "/".join(f"{p / 1e3:.0f}" for p in r.trials_pps)
                  for i, r in enumerate(rows)),
              f"load average (1, 5, 15 min) before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
              f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (the machine is shared)"]
    stem = args.out / f"figure4_{args.semantics}"
    write_outputs(rows, stem, title, notes)
    console = Console()
    console.print(stem.with_suffix(".md").read_text())
    console.print(f"wrote {stem}.md, .csv, .png")
    return 0
