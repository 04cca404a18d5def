"""Run one benchmark module in this process and print its rows as JSON lines."""

from __future__ import annotations

import importlib
import json
import os
import sys

from bench.common import peak_rss_mb


def main() -> int:
    name = sys.argv[1]
    quick = "--quick" in sys.argv[2:]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    module = importlib.import_module(f"bench.{name}")
    for row in module.run(quick):
        if not row.peak_rss_mb:
            row.peak_rss_mb = peak_rss_mb()
        print(json.dumps(row.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
