"""``lego experiment``: the paper's experiments, one command each."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lego.cli_args import (
    existing_file,
    name_list,
    non_negative_int,
    positive_int,
    positive_int_list,
)

REPO = Path(__file__).resolve().parents[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    exp = subparsers.add_parser("experiment", help="reproduce the paper's experiments")
    sub = exp.add_subparsers(dest="experiment", metavar="NAME", required=True)
    p = sub.add_parser("split", help="Table II: one instance vs K replicas per granularity")
    p.add_argument("--trace", type=existing_file, metavar="TRACE",
                   help="pcap/pcapng/TSV (default: the generated synthetic IoT trace)")
    p.add_argument("--labels", type=existing_file, metavar="LABELS",
                   help="0/1 per packet (default: the trace's .labels.csv if present)")
    p.add_argument("--replicas", "-k", type=positive_int, default=3, metavar="K")
    p.add_argument("--nf", metavar="NAME", help="the NF (default: kitsune's Table II)")
    p.add_argument("--model", type=existing_file, metavar="MODEL",
                   help="an NF's trained model, to count changed decisions")
    p.add_argument("--fm", type=non_negative_int, metavar="N",
                   help="feature-mapping grace (default: 5000, or 1/16 of a short trace)")
    p.add_argument("--ad", type=positive_int, metavar="N",
                   help="training grace (default: 50000, or 1/2 of a short trace)")
    p.add_argument("--out", type=Path, default=REPO / "results", metavar="DIR")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("hotspot", help="the hot spot: each replica's share of the load under "
                                       "each NF's split, K = 2, 4, 8")
    p.add_argument("--trace", type=existing_file, metavar="TRACE",
                   help="pcap/pcapng/TSV (default: the generated synthetic IoT trace)")
    p.add_argument("--nf", type=name_list, metavar="NF[,NF...]",
                   help="NFs, each split by its Algorithm-1 plan with its default options "
                        "(default: every built-in NF)")
    p.add_argument("--replicas", "-k", type=positive_int_list, default=(2, 4, 8),
                   metavar="K[,K...]", help="replica counts (default: 2,4,8)")
    p.add_argument("--start", type=non_negative_int, default=0, metavar="N",
                   help="count from the trace's frame N on (e.g. where the attack starts; "
                        "each frame's split depends on that frame alone)")
    p.add_argument("--out", type=Path, default=REPO / "results", metavar="DIR")
    p.set_defaults(func=cmd_hotspot)

    from lego.cli_bricks import add_experiment

    add_experiment(sub)  # Figure 4


def cmd_split(args: argparse.Namespace) -> int:
    from lego import nfs
    from lego.topo.traffic_synth import default_trace

    nf = nfs.get(args.nf or nfs.DEFAULT)
    if nf.split_experiment is not None:
        given = [flag for flag, value in (("--labels", args.labels), ("--fm", args.fm),
                                          ("--ad", args.ad)) if value is not None]
        if given:
            raise SystemExit(f"lego experiment split: {', '.join(given)}: not read by NF "
                             f"{nf.name!r}'s split experiment")
        args.out.mkdir(parents=True, exist_ok=True)
        trace = args.trace or default_trace(args.out)
        rows = nf.split_experiment(trace, args.replicas, args.out, args.model)
        for md in sorted(args.out.glob(f"split_{nf.name}_{trace.stem}.md")):
            Console(width=200).print(md.read_text())
        return 0 if rows else 1
    if nf.name != nfs.DEFAULT:
        raise SystemExit(f"lego experiment split: NF {nf.name!r} declares no split experiment")
    if args.model is not None:
        raise SystemExit("lego experiment split: --model: Table II trains its own models")
    from lego.experiments.table2 import (
        algorithm1_lines,
        grace_for,
        plot,
        table2,
        to_markdown,
        write_csv,
    )
    from lego.ext.packets import read_trace
    from lego.metrics import load_labels
    from lego.topo.traffic_synth import labels_path

    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.trace or default_trace(args.out)
    labels_file = args.labels or (labels_path(trace) if labels_path(trace).is_file() else None)
    batch = read_trace(trace)
    labels = load_labels(labels_file, len(batch)) if labels_file else None
    fm, ad = grace_for(len(batch))
    fm = args.fm if args.fm is not None else fm
    ad = args.ad if args.ad is not None else ad
    rows = table2(batch, labels, args.replicas, fm, ad)
    title = (f"Table II: {trace.name}, {len(batch):,} packets, K = {args.replicas} replicas, "
             f"trained on the first {fm + ad + 1:,} (FM {fm}, AD {ad})")
    stem = args.out / f"table2_{trace.stem}_k{args.replicas}"
    stem.with_name(stem.name + ".md").write_text(to_markdown(rows, title))
    write_csv(rows, stem.with_name(stem.name + ".csv"))
    plot(rows, stem.with_name(stem.name + ".png"), title)
    _print(rows, title)
    for line in algorithm1_lines():
        Console().print(line)
    Console().print(f"wrote {stem}.md, .csv, .png")
    return 0


def cmd_hotspot(args: argparse.Namespace) -> int:
    from lego import nfs
    from lego.errors import ConfigError
    from lego.experiments.hotspot import hotspot, title_for, write_outputs
    from lego.ext.packets import read_trace
    from lego.topo.traffic_synth import default_trace

    declared = ([nfs.get(name) for name in args.nf] if args.nf  # unknown: ConfigError first
                else nfs.all_builtin())
    args.out.mkdir(parents=True, exist_ok=True)
    trace = args.trace or default_trace(args.out)
    batch = read_trace(trace)
    if args.start >= len(batch):
        raise ConfigError(f"--start: expected a frame of the trace (0..{len(batch) - 1}), "
                          f"got {args.start}")
    if args.start:
        batch = batch.take(slice(args.start, len(batch)))
    rows = hotspot(declared, batch, args.replicas)
    stem = write_outputs(rows, args.out, trace, args.start)
    table = Table(title=title_for(trace.name, len(batch), args.start))
    for col in ("NF", "K", "replica shares", "max share", "max/mean", "busiest/trace",
                "mirrored"):
        table.add_column(col, justify="left" if col in ("NF", "replica shares") else "right")
    for r in rows:
        table.add_row(r.nf, str(r.k), " / ".join(f"{s:.3f}" for s in r.shares),
                      f"{r.max_share:.3f}", f"{r.imbalance:.2f}", f"{100 * r.busiest:.1f}%",
                      f"{100 * r.mirrored:.1f}%")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
    for nf in declared:
        console.print(f"{nf.name}: Algorithm 1: {nf.plan().describe()}")
    console.print(f"wrote {stem}.md, .csv, .png")
    return 0


def _print(rows, title: str) -> None:
    table = Table(title=title)
    for col in ("semantics", "method", "mean score", "max |dev|", "flips", "AUC", "mirrored",
                "identical"):
        table.add_column(col, justify="left" if col in ("semantics", "method") else "right")
    for r in rows:
        table.add_row(r.semantics, r.method, f"{r.mean_score:.6g}", f"{r.max_abs_deviation:.3g}",
                      f"{100 * r.decision_flips:.3f}%", f"{r.auc:.4f}",
                      f"{r.mirrored_percent:.1f}%", "yes" if r.identical_features else "no")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)
