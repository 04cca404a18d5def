"""`make bench`: run every ``bench/bench_*.py`` in its own process, print one table.

Each benchmark process is pinned to one core with BLAS single-threaded, so the
figures are "one core of this machine"; its peak RSS is its own. Ratios are
against baselines measured in the same process, on the same packets.
Usage: ``python -m bench [--quick] [--only NAME ...] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ONE_CORE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def run_module(name: str, quick: bool) -> tuple[list[dict], str]:
    env = dict(os.environ, **ONE_CORE_ENV)
    cmd = [sys.executable, "-m", "bench.run_one", name] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, cwd=HERE.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return [], proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return rows, ""


def machine_line() -> str:
    load = os.getloadavg()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
            f"{load[2]:.2f}; each benchmark pinned to one core, BLAS single-threaded")


def render(rows: list[dict], failures: dict[str, str], console: Console) -> None:
    table = Table(title="LEGO benchmarks", show_lines=False)
    for col in ("benchmark", "packets", "pkt/s", "baseline", "ratio", "target", "met",
                "peak RSS MiB"):
        table.add_column(col, justify="left" if col in ("benchmark", "baseline") else "right")
    for r in rows:
        target = r.get("target_pps") or 0
        met = "" if not target else ("yes" if r["pps"] >= target else "NO")
        ratio = r.get("ratio")
        table.add_row(r["name"], f"{r['packets']:,}", f"{r['pps']:,.0f}", r.get("baseline", ""),
                      "" if ratio is None or ratio != ratio else f"{ratio:,.1f}x",
                      f"{target:,.0f}" if target else "", met, f"{r['peak_rss_mb']:.0f}")
    console.print(table)
    for name, why in failures.items():
        console.print(f"[red]{name} failed:[/red] {why}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    parser.add_argument("--only", nargs="*", help="module names, e.g. bench_kitnet")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not wrap the table at 80 columns
        console = Console(width=200)
    console.print(machine_line())
    rows: list[dict] = []
    failures: dict[str, str] = {}
    for name in args.only or discover():
        console.print(f"running {name} ...")
        got, why = run_module(name, args.quick)
        rows.extend(got)
        if why:
            failures[name] = why
    render(rows, failures, console)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
