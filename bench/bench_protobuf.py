"""The control path's protobuf: the C implementation (upb) against pure Python.

Two operations of the controller against the software target's P4Runtime server
(real gRPC on 127.0.0.1; both ends build and parse protobuf):

- ``read 2,048 counter cells``: the per-bucket load read (``bucket_counter`` and
  ``mirror_bucket_counter``, whole), as the controller runs it every 2 s;
- ``write the full plan``: :meth:`SwitchManager.sync` on a switch with no pipeline
  (pipeline push, Read, 2,048 owner entries, clone sessions, roles, defaults).

Each runs in a child process with the runtime's own implementation, and again with
``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python`` (what a protobuf without a C
implementation for this interpreter gives: the baseline). Rates are cells read
and updates written per second, best of ``repeat``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Row

ROOT = Path(__file__).resolve().parent.parent


def _measure(repeat: int) -> dict:
    """In this process: (cells, best seconds) of the read, (updates, seconds) of the write."""
    from google.protobuf.internal import api_implementation

    from bench.bench_controller import TRAFFIC, _frames, _Setup
    from lego.switch import pipeline as pl

    s = _Setup(0)
    try:
        s.manager.sync()
        s.server.service.pipeline.process(_frames(2000), TRAFFIC, 0)
        best_read = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            c = s.client.read_counters([pl.C_BUCKET, pl.C_MIRROR_BUCKET])
            best_read = min(best_read, time.perf_counter() - t0)
        cells = sum(len(v) for v in c.values())
    finally:
        s.close()
    best_write, updates = float("inf"), 0
    for _ in range(repeat):
        s = _Setup(0)
        try:
            t0 = time.perf_counter()
            updates = s.manager.sync().changes
            best_write = min(best_write, time.perf_counter() - t0)
        finally:
            s.close()
    return {"implementation": api_implementation.Type(), "cells": cells, "read_s": best_read,
            "updates": updates, "write_s": best_write}


def _child(pure_python: bool, repeat: int) -> dict:
    env = dict(os.environ)
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    if pure_python:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    code = ("import json, sys; from bench.bench_protobuf import _measure; "
            f"print(json.dumps(_measure({repeat})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"protobuf bench child failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Row]:
    repeat = 3 if quick else 10
    base, fast = _child(True, repeat), _child(False, repeat)
    rows = []
    for what, n, secs in (("read 2,048 counter cells", "cells", "read_s"),
                          ("write the full plan", "updates", "write_s")):
        b = Row(f"P4Runtime {what}, protobuf {base['implementation']} (baseline)",
                base[n], base[secs], "itself")
        b.baseline_pps = b.pps
        rows += [b, Row(f"P4Runtime {what}, protobuf {fast['implementation']}", fast[n],
                        fast[secs], f"protobuf {base['implementation']}", b.pps)]
    return rows


if __name__ == "__main__":  # pragma: no cover
    for r in run(quick=True):
        print(f"{r.name:64s} {r.packets:6d} {r.seconds * 1000:9.2f} ms  ratio {r.ratio:.2f}")
