"""Elasticity: seconds from overload detected to the new replica receiving traffic.

A live system (:mod:`lego.topo.local_system`: the software target's
P4Runtime server and the controller in this process, the bricks as actors on a
local Ray cluster, frames driven through the target's pipeline model into each
port's feed) carries a synthetic trace at a steady rate. The scaling policy is then
armed with a hair trigger (high watermark 0.001, no dwell), so the next load
report is an overload; the clock starts at the policy's decision (``t_detect``)
and stops at the new replica's first batch (its own wall clock, reported).

- ULN scale-out: warm = a standby replica is promoted (a route to it);
  baseline cold = a replica actor is created (its brick started), then routed.
- FE scale-out (a feature-extraction replica on another switch port): warm = a
  standby graph owning no buckets gets buckets (the switch write and the state
  move); baseline cold = a graph of five brick actors is created first.
  The buckets moved are those the last per-bucket load window says even the
  load (a few, on this trace), as in a running system.
  "frames" = the new replica's first batch (its rows are held until the state
  arrives); "state moved" = the import done, the replica processing.

Rows are latencies: ``packets`` = 1 and ``seconds`` = the latency, so the ratio
column is the speed-up over the cold start measured in the same run; the
seconds and the target (< 1 s) are in the name. The processes may use every
core of the machine (the driver pins single-process benchmarks to one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Row, latency_row
from lego.control.config import config_from_dict
from lego.control.policy_scaling import ScalingConfig, ScalingPolicy
from lego.control.runtime import ControllerRuntime
from lego.nfs.kitsune.graph import train_model
from lego.polling import wait_for
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer
from lego.topo.local_system import TOKEN, Driver, brick_dir, system_config
from lego.topo.traffic_synth import generate, write_trace

TARGET_S = 1.0
WALL = time.time() - time.monotonic()  # the controller's t_detect is monotonic


class System:
    """One live system with one host (ports 2 and 3); ``warm`` keeps standbys."""

    def __init__(self, work: Path, trace, model: Path, warm: bool) -> None:
        self.work = work
        self.srv = P4RuntimeServer(pl.Pipeline(), 0, None, "127.0.0.1:0")
        self.srv.start()
        data = system_config(self.srv.grpc_addr, work, model,
                             [{"name": "nf1", "ports": [2, 3], "cores": 16}],
                             scaling={"fe": True, "stateless": True, "standby": warm,
                                      "fe_standby": warm, "high": 0.99, "low": 0.0,
                                      "dwell": 1000.0, "max_replicas": 4, "period": 0.05,
                                      "adopt_grace": 0.3})
        self.cfg = config_from_dict(data, "<bench elastic>")
        self.rt = ControllerRuntime(self.cfg, TOKEN)
        self.driver: Driver | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        try:
            self.rt.start()
            want = ["dec-2/0"] + (["dec-3/0"] if warm else [])
            wait_for(lambda: all(b in self.rt.engine.incarnations for b in want), 60,
                     "the graphs")
            self.driver = Driver(self.srv, trace, {p: brick_dir(work, "nf1") for p in (2, 3)},
                                 linger_ms=0)
        except BaseException:
            self.close()
            raise

    def traffic(self) -> None:
        """Frames at a steady ~6k/s until closed (the trace is long enough)."""
        def run() -> None:
            self.driver.send(len(self.driver.trace.frames), chunk=32,
                             pause=lambda: time.sleep(0.005), stop=self.stop)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def arm(self, brick: str) -> None:
        """From now on, the next load report of ``brick`` (uln | fq) is an overload."""
        with self.rt.lock:
            self.cfg.scaling["stateless"] = brick == "uln"
            self.cfg.scaling["fe"] = brick == "fq"
            self.rt.core.policy = ScalingPolicy(ScalingConfig(
                high=0.001, low=0.0, dwell=0.0, cooldown=1000.0, max_replicas=4))

    def scale_out(self, brick: str) -> dict:
        n = len(self.rt.core.events)
        self.arm(brick)
        return wait_for(lambda: next((e for e in self.rt.core.events[n - 200:]
                                      if e["kind"] == "scale_out" and e["brick"] == brick),
                                     None), 30, f"{brick} scale-out")

    def first_in(self, brick: str, timeout: float = 60.0) -> float:
        """Wall clock of ``brick``'s first batch."""
        def first() -> float | None:
            b = self.rt.core.bricks.get(brick)
            return b.load.get("extra", {}).get("first_in") if b is not None else None

        return wait_for(first, timeout, f"{brick}'s first batch")

    def event_after(self, kind: str, t: float, timeout: float = 60.0) -> dict:
        return wait_for(lambda: next((e for e in self.rt.core.events
                                      if e["kind"] == kind and e["t"] >= t), None),
                        timeout, kind)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        self.rt.close(stop_bricks=True)
        if self.driver is not None:
            self.driver.close()
        self.srv.stop()


def measure(work: Path, trace, model: Path, warm: bool) -> dict[str, float]:
    s = System(work, trace, model, warm)
    try:
        s.traffic()
        s.first_in("fq-2/0")
        e = s.scale_out("uln")
        uln = s.first_in(e["replica"]) - (e["t_detect"] + WALL)
        wait_for(lambda: s.rt.bucket_loads is not None and s.rt.bucket_loads.sum() > 0, 30,
                 "a window of per-bucket loads")
        e = s.scale_out("fq")
        fe = s.first_in(f"fq-{e['port']}/0") - (e["t_detect"] + WALL)
        moved = s.event_after("state_moved", e["t_detect"])["t"] - e["t_detect"]
        return {"uln": uln, "fe": fe, "fe_moved": moved}
    finally:
        s.close()


def run(quick: bool) -> list[Row]:
    if hasattr(os, "sched_setaffinity"):  # a system of processes: every core (the driver
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # pins benchmarks to one)
    from lego.topo.ray_cluster import LocalRay

    tmp = Path(tempfile.mkdtemp(prefix="lgel", dir="/tmp"))
    ray = LocalRay({"nf1": {"ports": [2, 3], "cpus": 2}})  # the bricks as Ray actors
    try:
        tr = generate(seed=3, packets=60_000 if quick else 150_000)
        pcap = tmp / "trace.pcap"
        write_trace(tr, pcap)
        model = train_model(pcap, tmp / "model.npz", "lego", fm=300, ad=2000)
        cold = measure(tmp / "cold", tr, model, warm=False)
        warm = measure(tmp / "warm", tr, model, warm=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    out = []
    for key, what in (("uln", "ULN scale-out: overload detected -> new replica's first batch"),
                      ("fe", "FE scale-out: overload detected -> new replica's first frames"),
                      ("fe_moved", "FE scale-out: overload detected -> state moved")):
        out.append(latency_row(f"elastic {what}, cold start", cold[key], "", 0.0, TARGET_S))
        out.append(latency_row(f"elastic {what}, warm standby", warm[key], "cold start",
                               cold[key], TARGET_S))
    return out
