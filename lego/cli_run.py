"""``lego run``: the main job on the embedded defaults (``make run``).

Where Mininet and root are available (the default), it runs the whole system
in Mininet (:mod:`lego.experiments.elastic.run`): the P4 switch (BMv2 if
``simple_switch_grpc`` is on PATH, else the software target), the controller,
brick agents on the NF hosts, a ramping tcpreplay of the trace, a live
dashboard, and ``results/`` (alerts, scores, timeline, plots, summary).

``lego run --offline`` (and the automatic fallback, with a one-line reason,
when Mininet or root is missing) runs the NF as one offline instance over the
trace (:attr:`lego.nfs.NetworkFunction.offline`) and writes ``results/``: scores,
alerts, and a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lego import nfs
from lego.cli_args import positive_int
from lego.errors import ConfigError, LegoError

REPO = Path(__file__).resolve().parents[1]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="the main job: the NF over the default trace")
    p.add_argument("--trace", type=Path, metavar="TRACE",
                   help="pcap/pcapng/TSV (default: the generated synthetic IoT trace)")
    p.add_argument("--labels", type=Path, metavar="LABELS",
                   help="0/1 per packet (default: the trace's .labels.csv if present)")
    p.add_argument("--results", type=Path, default=REPO / "results", metavar="DIR")
    p.add_argument("--nf", default=None, metavar="NAME",
                   help="the NF (lego.nfs.<NAME> or a module path; default: lego.nfs.DEFAULT)")
    p.add_argument("--nf-option", action="append", default=[], metavar="KEY=VALUE",
                   help="one of the NF's options, e.g. window=1 for LUCID (repeatable)")
    p.add_argument("--semantics", default="lego",
                   help="the NF's feature semantics, where it has that option (default lego)")
    p.add_argument("--train-packets", type=positive_int, default=55_001, metavar="N",
                   help="the NF's model is prepared on the trace's first N packets "
                        "(default 55,001: Kitsune's 5,000 feature-mapping + 50,000 training "
                        "+ 1)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--offline", action="store_true",
                   help="one NF instance, offline, no Mininet (the fallback without root)")
    p.add_argument("--topo", type=Path, metavar="TOPO.toml",
                   help="topology file (default: topo/default.toml)")
    p.add_argument("--target", choices=("auto", "soft", "bmv2"),
                   help="switch target (default: the topology's, auto)")
    p.add_argument("--replicas", type=positive_int, metavar="N",
                   help="NF hosts holding buckets at the start (default: the topology's)")
    p.add_argument("--cli", action="store_true", help="open the Mininet CLI during the run")
    p.add_argument("--scaling", choices=("on", "off"), default="on",
                   help="off: the same run with the controller's scaling policy disabled")
    p.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                   help="on: each replica's bricks run as one process (function calls); "
                        "off: a process per brick; auto (default): on, unless --faults "
                        "is given (a killed brick's exact recovery replays the log of the "
                        "process before it). The ramp is sized from what the replicas run")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="faults to inject, seconds into the replay: "
                        "'20:kill:fq@nf1 40:lose:nf3' (kill:ROLE@HOST SIGKILLs that brick, "
                        "lose:HOST kills the host's Ray node)")
    p.add_argument("--sla-ms", type=float, metavar="MS",
                   help="p99 latency target, switch ingress to decision (default: 1000)")
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
    if args.offline:
        if args.cli or args.topo or args.target or args.replicas or args.scaling == "off":
            raise ConfigError("run: --offline contradicts --cli/--topo/--target/--replicas "
                              "(they configure the Mininet run)")
        return cmd_offline(args)
    from lego.topo.net import mininet_available

    why = mininet_available()
    if why is not None:
        if args.cli or args.target == "bmv2":
            raise ConfigError(f"run: cannot run in Mininet: {why}")
        Console().print(f"[yellow]lego run: offline, one instance: {why}[/yellow]")
        return cmd_offline(args)
    return cmd_mininet(args)


def _log_to_file(path: Path) -> None:
    """During the dashboard, library logging goes to a file, not the terminal."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            root.removeHandler(h)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))


def _check_live(nf, args: argparse.Namespace) -> list[str]:
    """Refuse, before anything starts, an NF the live run cannot carry: it needs model
    preparation, an offline reference and a graph the controller runs. Returns the
    graph's nodes (the roles a fault may name)."""
    from lego.control.graph_specs import nf_chain_of

    if nf.train is None or nf.instance is None:
        raise ConfigError(f"run: NF {nf.name!r} has no live run yet (it declares no model "
                          f"preparation or offline reference); lego run --nf {nf.name} "
                          "--offline runs one instance")
    return list(nf_chain_of(nf, nf.pick(**{**nf.parse_options(getattr(args, "nf_option", [])),
                                           "semantics": args.semantics})).nodes)


def _fused(choice: str, faults: list) -> bool:
    """Whether the replicas run fused: ``auto`` is yes without faults to inject (the
    recoveries they exercise are measured with a process per brick)."""
    if choice == "auto":
        return not faults
    return choice == "on"


def cmd_mininet(args: argparse.Namespace) -> int:
    from lego.experiments.elastic.faults import parse_faults
    from lego.experiments.elastic.run import RunOptions, run_mininet
    from lego.topo.switches import pick_target
    from lego.topo.topology import load_topology

    console = Console()
    roles = _check_live(nfs.get(args.nf or nfs.DEFAULT), args)
    topo = load_topology(args.topo)
    faults = parse_faults(args.faults, [h.name for h in topo.nf_hosts], roles)
    if args.replicas:
        topo = topo.with_replicas(args.replicas)
    target, why = pick_target(args.target or topo.switch.target)
    args.results.mkdir(parents=True, exist_ok=True)
    trace, labels = _trace_and_labels(args)
    _log_to_file(args.results / "run" / "lego.log")
    opts = RunOptions(trace=trace, labels=labels, results=args.results, topo=topo,
                      target=target, target_why=why, semantics=args.semantics,
                      nf=args.nf or nfs.DEFAULT,
                      nf_extra=nfs.get(args.nf or nfs.DEFAULT).parse_options(args.nf_option),
                      train_packets=args.train_packets, cli=args.cli, quiet=args.quiet,
                      synthetic=args.trace is None, scaling=args.scaling == "on",
                      fuse=_fused(args.fuse, faults), sla_ms=args.sla_ms, faults=faults)
    summary = run_mininet(opts, console)
    head = (args.results / "summary.md").read_text().split("## Everything else")[0]
    console.print(head.strip(), markup=False, highlight=False)
    console.print(f"wrote {args.results}/alerts.jsonl, scores.csv, timeline.csv, latency.csv, "
                  "timeline.png, summary.md, summary.json, logs/")
    if not summary["zero_loss"] and summary.get("decides_per", "packet") != "packet":
        raise LegoError(
            f"the run lost frames or fragments: {summary['packets_sent']:,} sent, "
            f"{summary['switch_in']:,} into the switch, {summary['switch_out']:,} out, "
            f"{summary['nf_hosts_received']:,} taken by the replicas; "
            f"{summary['packets_scored']:,} fragments decided against "
            f"{summary['offline_reference_packets']} offline, "
            f"{summary['lost_in_brick_graphs']:,} batches lost in the brick graphs "
            f"(see {args.results}/summary.md)")
    if not summary["zero_loss"]:  # the run's promise: every packet scored, once
        raise LegoError(
            f"the run lost packets: {summary['packets_sent']:,} sent, "
            f"{summary['packets_scored']:,} scored; lost before the switch's ingress "
            f"{summary['lost_before_switch']:,}, between the switch and the NF hosts "
            f"{summary['lost_switch_to_bricks']:,}, in the brick graphs "
            f"{summary['lost_in_brick_graphs']:,} (see {args.results}/summary.md)")
    return 0


def cmd_offline(args: argparse.Namespace) -> int:
    nf = nfs.get(args.nf or nfs.DEFAULT)
    if nf.offline is None:
        raise ConfigError(f"run --offline: NF {nf.name!r} declares no offline run")
    options = nf.pick(**{**nf.parse_options(args.nf_option), "semantics": args.semantics})
    console = Console()
    args.results.mkdir(parents=True, exist_ok=True)
    trace, labels = _trace_and_labels(args)
    shown = {k: v for k, v in options.items() if v is not None}
    console.print(f"[bold]LEGO[/bold]: {nf.name} {shown} on {trace}, one instance, offline "
                  "(the switch and bricks are not in this run)")
    summary = nf.offline(trace, options, args.train_packets, args.results, labels,
                         args.quiet)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    console.print(f"wrote {args.results}/scores.csv, alerts.jsonl, summary.json")
    return 0
