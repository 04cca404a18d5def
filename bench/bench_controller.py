"""The controller's southbound: plan push, rebalance, and scale-out latency.

Against the software target's P4Runtime server in this process (real gRPC on
127.0.0.1, port 0); the switch's pipeline model forwards frames in a traffic
thread. Each row's baseline is measured in the same run:

- ``push full plan``: :meth:`SwitchManager.sync` on a switch with no pipeline:
  pipeline push, Read, and 1024 + 1024 owner entries, clone sessions, roles and
  the split default in one Write; baseline: the same with one update per Write.
- ``rebalance 1/3 of buckets``: read the per-bucket counters, then write a
  third of the buckets (both owner tables) and read the old owners' port
  counters (the seq hint); baseline: one update per Write.
- ``scale-out -> first frame``: from the ``scale_out`` call to the first frame
  the pipeline sends to the new replica while traffic flows (target < 1 s: the
  row's rate is 1 / latency, target 1/s), with traffic at about 64k frames/s
  in batches of 64 (the software target's pace); baseline: one update per Write.

Rates are updates (or events) per second.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import threading
import time

import numpy as np

from bench.common import Row, peak_rss_mb

log = logging.getLogger(__name__)
TRAFFIC, REPLICAS, NEW = 1, (2, 3, 4), 5


def _frames(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        s = ipaddress.IPv4Address(0x0A000000 + i * 7 + 1).packed
        d = ipaddress.IPv4Address(0xC0A80000 + i % 50 + 1).packed
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, 17, 0, s, d)
        out.append(bytes.fromhex("0200000000020200000000010800") + ip
                   + struct.pack("!HHHH", 40000, 53, 16, 0) + b"benchlgo")
    return out


class _Setup:
    def __init__(self, batch_size: int, with_pipeline: bool = False):
        from lego.control.granularity import plan_split
        from lego.control.p4rt_client import P4RuntimeClient
        from lego.control.switch_manager import SwitchManager
        from lego.control.switch_state import SwitchPlan
        from lego.ext.features import state_groups
        from lego.p4src.p4info import load_p4info
        from lego.switch import pipeline as pl
        from lego.switch.server import P4RuntimeServer

        self.server = P4RuntimeServer(pl.Pipeline(), 0,
                                      load_p4info() if with_pipeline else None)
        self.server.start()
        self.client = P4RuntimeClient(self.server.grpc_addr, election_id=1, timeout=30.0)
        self.client.connect()
        plan = SwitchPlan.from_split(plan_split(state_groups("lego")), [TRAFFIC], REPLICAS)
        self.manager = SwitchManager(self.client, plan, device_config=b"",
                                     batch_size=batch_size)

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _push(batch_size: int) -> tuple[int, float]:
    s = _Setup(batch_size)
    try:
        t0 = time.perf_counter()
        report = s.manager.sync()
        return report.changes, time.perf_counter() - t0
    finally:
        s.close()


def _rebalance(batch_size: int) -> tuple[int, float]:
    from lego.switch import pipeline as pl

    s = _Setup(batch_size)
    try:
        m = s.manager
        m.sync()
        s.server.service.pipeline.process(_frames(2000), TRAFFIC, 0)
        owners = m.owners.copy()
        third = np.arange(0, pl.N_BUCKETS, 3)
        owners[third] = np.roll(np.asarray(REPLICAS), 1)[
            np.searchsorted(np.asarray(REPLICAS), owners[third])]
        before = s.client.stats.updates
        t0 = time.perf_counter()
        m.read_loads(now=1.0)
        m.apply(m.plan, owners)
        secs = time.perf_counter() - t0
        return s.client.stats.updates - before, secs
    finally:
        s.close()


def _scale_out(batch_size: int) -> tuple[int, float]:
    s = _Setup(batch_size)
    stop = threading.Event()
    seen: list[float] = []
    try:
        m = s.manager
        m.sync()
        frames = _frames(256)
        pipe = s.server.service.pipeline
        pipe.process(frames, TRAFFIC, 0)  # load, so the new replica gets busy buckets
        started = threading.Event()

        def traffic() -> None:
            # about 64k frames/s in batches of 64, as the software target forwards:
            # between batches the pipeline lock is free for P4Runtime writes
            i = 0
            while not stop.wait(0.001):
                out = pipe.process(frames[i:i + 64], TRAFFIC, 0)
                i = (i + 64) % len(frames)
                started.set()
                if not seen and any(p == NEW for p, _ in out):
                    seen.append(time.perf_counter())

        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        started.wait(10)
        t0 = time.perf_counter()
        moves = m.scale_out(NEW, now=1.0)
        written = time.perf_counter()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.0005)
        stop.set()
        t.join(timeout=5)
        if not seen:
            raise RuntimeError(f"no frame reached the new replica ({len(moves)} moves)")
        log.info("scale-out: %d moves, written after %.1f ms, first frame after %.1f ms",
                 len(moves), (written - t0) * 1e3, (seen[0] - t0) * 1e3)
        return 1, seen[0] - t0
    finally:
        stop.set()
        s.close()


def _best(fn, arg, repeat: int) -> tuple[int, float]:
    best = None
    for _ in range(repeat):
        n, secs = fn(arg)
        if best is None or secs < best[1]:
            best = (n, secs)
    return best


def run(quick: bool) -> list[Row]:
    repeat = 1 if quick else 3
    rows: list[Row] = []
    for label, fn, target in (("push full plan", _push, 0.0),
                              ("rebalance 1/3 of buckets", _rebalance, 0.0),
                              ("scale-out -> first frame at new replica", _scale_out, 1.0)):
        n0, s0 = _best(fn, 1, repeat)
        base = Row(f"controller {label}, 1 update/Write (baseline)", n0, s0, "itself")
        base.baseline_pps = base.pps
        base.peak_rss_mb = peak_rss_mb()
        n1, s1 = _best(fn, 0, repeat)
        row = Row(f"controller {label}, batched", n1, s1, "1 update/Write", base.pps,
                  target_pps=target, peak_rss_mb=peak_rss_mb())
        log.info("%s: %.4fs (baseline %.4fs)", label, s1, s0)
        rows += [base, row]
    return rows


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    for r in run(quick=True):
        print(f"{r.name:60s} {r.packets:6d} {r.seconds * 1000:9.2f} ms  ratio {r.ratio:.2f}")
