"""``lego profile``: each of an NF's bricks' per-packet CPU cost on a trace, and the SLA
split into per-brick deadlines (:mod:`lego.control.profile`).

    lego profile --trace TRACE --model MODEL.npz [--nf kitsune] [--semantics lego] [--sla-ms 100] \\
        [--batch 1024] [--limit N] [--out results/profile.json]

Prints a table; ``--out`` writes the profile as JSON, which the controller
takes as its initial costs (``[sla] profile = "results/profile.json"``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lego.cli_args import existing_file, positive_int


def positive_ms(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected milliseconds > 0, got {text!r}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="per-brick costs on a trace and SLA deadlines",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", type=existing_file, required=True, metavar="TRACE",
                   help="pcap, pcapng or TSV trace")
    p.add_argument("--model", type=existing_file, required=True, metavar="MODEL.npz",
                   help="a trained model (lego kitsune train)")
    p.add_argument("--nf", default=None, metavar="NAME", help="the NF (default: lego.nfs.DEFAULT)")
    p.add_argument("--semantics", default="lego", help="the NF's feature semantics, where it "
                   "has that option (Kitsune: lego or kitsune; default lego)")
    p.add_argument("--sla-ms", type=positive_ms, default=100.0, metavar="MS",
                   help="end-to-end latency target to split (default 100)")
    p.add_argument("--batch", type=positive_int, default=1024, metavar="N",
                   help="packets per batch (default 1024, the graph's)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="profile only the first N packets")
    p.add_argument("--out", type=Path, default=None, metavar="PROFILE.json",
                   help="write the profile (the controller's [sla].profile)")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace) -> int:
    from lego import nfs
    from lego.control.profile import profile_trace, table_lines

    decl = nfs.get(args.nf or nfs.DEFAULT)
    options = decl.pick(model=str(args.model), semantics=args.semantics)
    prof = profile_trace(args.trace, args.nf, options, args.sla_ms, args.batch, args.limit)
    print("\n".join(table_lines(prof)))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(prof.to_json())
        print(f"profile written to {args.out}")
    return 0
