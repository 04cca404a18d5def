"""``lego trace``: generate the synthetic trace, describe a capture."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lego.cli_args import existing_file, non_negative_int, positive_int, probability

# The readers import the compiled kernels: imported where used, so that
# `lego --help` works before `make build`.


def register(subparsers: argparse._SubParsersAction) -> None:
    trace = subparsers.add_parser("trace", help="generate or inspect packet traces")
    sub = trace.add_subparsers(dest="trace_command", metavar="ACTION", required=True)

    p = sub.add_parser("synth", help="write the labelled synthetic IoT LAN + Mirai trace")
    p.add_argument("--seed", type=non_negative_int, default=1, metavar="N",
                   help="random seed (default 1); the same seed gives the same bytes")
    p.add_argument("--packets", type=positive_int, default=80_000, metavar="N",
                   help="number of packets (default 80000)")
    p.add_argument("--attack-start", type=probability, default=0.70, metavar="FRACTION",
                   help="fraction of packets before the attack starts (default 0.70)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="TRACE.pcap")
    p.add_argument("--labels", type=Path, metavar="LABELS.csv",
                   help="write one 0/1 label per packet (1 = attack)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("info", help="format, packets, protocols, malformed, duration")
    p.add_argument("file", type=existing_file, metavar="FILE", help="pcap, pcapng or TSV")
    p.set_defaults(func=cmd_info)


def cmd_synth(args: argparse.Namespace) -> int:
    from lego.topo.traffic_synth import generate, write_trace

    start = time.perf_counter()
    trace = generate(args.seed, args.packets, args.attack_start)
    write_trace(trace, args.output, args.labels)
    print(f"{args.output}: {len(trace.frames)} packets, attack from packet "
          f"{trace.attack_start} ({int(trace.labels.sum())} attack packets, infected "
          f"{trace.infected_ip}), {trace.ts[-1] - trace.ts[0]:.1f} s of traffic, "
          f"generated in {time.perf_counter() - start:.2f} s"
          + (f"; labels in {args.labels}" if args.labels else ""))
    return 0


def describe(path: Path) -> dict:
    """Summary of a capture: what ``lego trace info`` prints."""
    from lego.ext.batch import Proto
    from lego.ext.packets import open_trace

    reader = open_trace(path)
    counts = np.zeros(len(Proto), dtype=np.int64)
    first = last = None
    total_bytes = 0
    try:
        for batch in reader.batches():
            if not len(batch):
                continue
            counts += np.bincount(batch.proto, minlength=len(Proto))
            total_bytes += int(batch.frame_len.sum(dtype=np.int64))
            first = float(batch.ts[0]) if first is None else first
            last = float(batch.ts[-1])
    finally:
        reader.close()
    return {
        "file": str(path),
        "format": reader.format,
        **reader.counters,
        "bytes": total_bytes,
        "protocols": {p.name: int(counts[p]) for p in Proto},
        "first_ts": first,
        "duration_s": (last - first) if first is not None else 0.0,
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = describe(args.file)
    print(f"{info['file']}: {info['format']}")
    print(f"  packets      {info['packets']}")
    print(f"  bytes        {info['bytes']}")
    print(f"  duration     {info['duration_s']:.6f} s")
    protos = ", ".join(f"{k} {v}" for k, v in info["protocols"].items() if v)
    print(f"  protocols    {protos}")
    for key in ("malformed", "truncated", "non_ethernet", "fragments"):
        print(f"  {key:<12} {info[key]}")
    return 0
