"""``lego bricks`` (check / run a brick graph file) and ``lego experiment bricks``
(Figure 4)."""

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

    # `lego experiment bricks`: attach to the experiment command when it is registered
    exp = subparsers.choices.get("experiment")
    if exp is None:
        exp = subparsers.add_parser("experiment", help="reproduce the paper's experiments")
        exp.add_subparsers(dest="experiment", metavar="NAME", required=True)
    exp_sub = next(a for a in exp._actions if isinstance(a, argparse._SubParsersAction))
    p = exp_sub.add_parser("bricks", help="Figure 4: monolith vs brick graph vs NF replicas")
    p.add_argument("--trace", type=existing_file, metavar="TRACE",
                   help="default: ../shared/data/kitsune_mirai_first38363.tsv if present, "
                        "else the generated synthetic trace")
    p.add_argument("--semantics", choices=("lego", "kitsune"), default="lego")
    p.add_argument("--repeat", type=positive_int, default=4, metavar="N",
                   help="trace passes (more packets per run)")
    p.add_argument("--cores", type=positive_int, default=2, metavar="N")
    p.add_argument("--out", type=Path, default=REPO / "results", metavar="DIR")
    p.set_defaults(func=cmd_experiment)


def cmd_check(args: argparse.Namespace) -> int:
    from lego.bricks.brick_graph import load_graph

    g = load_graph(args.graph)
    Console().print(f"{args.graph}: ok: {len(g.nodes)} bricks, {len(g.instances())} replicas, "
                    f"{len(g.edges)} edges, transport {g.transport}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lego.bricks.brick_agent import BrickAgent
    from lego.bricks.brick_errors import BrickError
    from lego.bricks.brick_graph import load_graph

    g = load_graph(args.graph)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lego-bricks-"))
    console = Console(stderr=True)
    with BrickAgent(g, workdir, on_event=lambda e: console.print(
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


def cmd_experiment(args: argparse.Namespace) -> int:
    import os

    from lego.bricks.experiment_bricks import figure4, transport_cost, write_outputs
    from lego.errors import ConfigError

    cpus = sorted(os.sched_getaffinity(0))
    if args.cores > len(cpus):
        raise ConfigError(f"--cores: expected at most the {len(cpus)} CPUs available, "
                          f"got {args.cores}")
    cpus = cpus[:args.cores]
    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.trace or _default_trace(args.out)
    with tempfile.TemporaryDirectory(prefix="lego-fig4-") as tmp:
        rows = figure4(trace, args.out, args.semantics, args.repeat, cpus, workdir=Path(tmp))
        from lego.ext.kitnet import KitNET

        model = KitNET.load(Path(tmp) / f"model-{args.semantics}.npz")
        ipc = transport_cost(trace, 10**9, args.repeat, model.n_features,
                             model.n_autoencoders, cpus, Path(tmp) / "w-ipc")
    nf_us = rows[0].cpu_us_per_packet["nf"]
    ipc_us = sum(ipc.cpu_us_per_packet.values())
    title = (f"Figure 4: {trace.name} x{args.repeat}, {args.semantics} semantics, "
             f"{len(cpus)} cores")
    notes = [f"IPC (transport alone, no-op bricks, same hops and shapes): {ipc_us:.3f} us CPU "
             f"per packet = {100 * ipc_us / nf_us:.1f}% of the NF's {nf_us:.3f} us per packet "
             f"(target <= 10%)",
             f"brick graph vs monolith: {rows[2].ratio:.2f}x (target >= 1.6x)"]
    stem = args.out / f"figure4_{args.semantics}"
    write_outputs(rows, stem, title, notes)
    console = Console()
    console.print(stem.with_suffix(".md").read_text())
    console.print(f"wrote {stem}.md, .csv, .png")
    return 0
