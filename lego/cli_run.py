"""``lego run``: the main job on the embedded defaults (``make run``).

Today it runs the Kitsune NF, one instance, over a trace (by default the
synthetic IoT trace the project generates itself), scores every packet, and
writes ``results/``: scores, alerts, and a summary. The Mininet system (switch,
controller, brick agents) takes over this command when it lands.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lego.cli_args import non_negative_int, positive_int
from lego.ext.features import SEMANTICS

REPO = Path(__file__).resolve().parents[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="the main job: the NF over the default trace")
    p.add_argument("--trace", type=Path, metavar="TRACE",
                   help="pcap/pcapng/TSV (default: the generated synthetic IoT trace)")
    p.add_argument("--labels", type=Path, metavar="LABELS",
                   help="0/1 per packet (default: the trace's .labels.csv if present)")
    p.add_argument("--results", type=Path, default=REPO / "results", metavar="DIR")
    p.add_argument("--semantics", choices=SEMANTICS, default="lego")
    p.add_argument("--fm", type=non_negative_int, default=5000, metavar="N")
    p.add_argument("--ad", type=positive_int, default=50000, metavar="N")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_run)


def _trace_and_labels(args: argparse.Namespace) -> tuple[Path, Path | None]:
    from lego.topo.traffic_synth import default_trace, labels_path

    if args.trace is None:
        trace = default_trace(args.results)
        return trace, labels_path(trace)
    labels = args.labels
    if labels is None and labels_path(args.trace).is_file():
        labels = labels_path(args.trace)
    return args.trace, labels


def cmd_run(args: argparse.Namespace) -> int:
    from lego.bricks.kitsune_nf import KitsuneNF
    from lego.cli_kitsune import detection, score_trace, write_outputs

    console = Console()
    args.results.mkdir(parents=True, exist_ok=True)
    trace, labels = _trace_and_labels(args)
    console.print(f"[bold]LEGO[/bold]: Kitsune ({args.semantics} features) on {trace}, "
                  "one instance, offline (the switch and bricks are not in this run)")
    nf = KitsuneNF.fresh(args.semantics, fm=args.fm, ad=args.ad)
    result = score_trace(nf, trace, args.quiet, fit=("lognormal", 1e-4))
    write_outputs(result, args.results / "scores.csv", args.results / "alerts.jsonl")
    summary = {
        "trace": str(trace),
        "semantics": args.semantics,
        "packets": int(len(result.seq)),
        "training packets": args.fm + args.ad + 1,
        "autoencoders": len(nf.kitnet.feature_map),
        "scored by the trained model": int(result.trained.sum()),
        "threshold": result.threshold,
        "alerts": int(result.alert.sum()),
        "seconds": round(result.seconds, 3),
        "packets/s (read + features + KitNET, training included)":
            round(len(result.seq) / result.seconds),
    }
    if labels is not None:
        summary.update({k: round(v, 4) for k, v in detection(result, labels).items()})
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    console.print(f"wrote {args.results}/scores.csv, alerts.jsonl, summary.json")
    return 0
