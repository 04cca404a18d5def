"""``lego run`` in Mininet: the whole system over the trace, a dashboard, results/.

Order: refuse if another run is alive, clean what a dead one left; measure one
replica's capacity; speed the trace's clock up step by step to the ramp's rates;
train the NF's model offline on the benign prefix at that timing (the NF hosts use the
switch's timestamps, which follow it); start the network, the switch, Ray and the
controller; replay the trace with the pacer while the dashboard shows the status;
wait for the NF hosts to drain; write ``results/`` (:mod:`lego.experiments.elastic.results`);
tear everything down (``finally``, plus ``atexit`` and SIGTERM/SIGHUP handlers for
the paths a ``finally`` does not cover).
"""

from __future__ import annotations

import atexit
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.live import Live

from lego import nfs
from lego.cpu_quota import machine_cpu_s
from lego.errors import LegoError
from lego.experiments.elastic.calibrate import Calibration
from lego.experiments.elastic.faults import FaultInjector
from lego.experiments.elastic.record import Recorders
from lego.experiments.elastic.report import machine_busy, merge_events
from lego.experiments.elastic.results import (
    offline_original,
    offline_reference,
    packet_latency,
    replay_lag,
    write_results,
)
from lego.topo.cleanup import active_run, cleanup
from lego.topo.topology import Topology
from lego.topo.traffic import Segment, speedup_schedule

log = logging.getLogger(__name__)

#: what ``SCALING=off`` changes: the same system, no policy
SCALING_OFF: dict[str, Any] = {"fe": False, "stateless": False, "fe_standby": False,
                               "rebalance_s": 0.0, "resize": False}


@dataclass
class RunOptions:
    trace: Path
    labels: Path | None
    results: Path
    topo: Topology
    target: str  # soft | bmv2 (already picked)
    target_why: str
    semantics: str = "lego"  # the NF's feature semantics, where it has that option
    train_packets: int = 55_001  # the NF's model is prepared on the trace's first N
    nf: str = nfs.DEFAULT
    cli: bool = False
    quiet: bool = False
    drain_s: float = 60.0
    synthetic: bool = False  # the trace is the generated default (sized to the load)
    scaling: bool = True  # False: the same run with the scaling policy off
    fuse: bool = True  # each replica's bricks in one process ([graph].fuse)
    sla_ms: float | None = None  # None: from the calibration
    nf_extra: dict = field(default_factory=dict)  # the NF's options beyond semantics
    faults: list = field(default_factory=list)  # faults.Fault to inject (FAULTS=...)

    @property
    def decl(self):
        """The NF (:class:`lego.nfs.NetworkFunction`)."""
        return nfs.get(self.nf)

    @property
    def nf_options(self) -> dict:
        return self.decl.pick(**{**self.nf_extra, "semantics": self.semantics})


#: packets the calibration replica processes (its first ones are the trace's)
CALIBRATION_PACKETS = 12_000
#: benign packets before the last step, in the NF's training packets
TRAIN_MARGIN = 1.05
#: attack packets the generated trace holds, in base-rate packets of the last step
#: (Mirai's scan runs at about 6x the LAN's base rate: more than the step takes)
ATTACK_BUDGET = 12
#: the default SLA (p99, switch ingress to decision): an operator's requirement, the
#: same on any machine. It used to be 4 batches at the calibrated capacity, which
#: set 500 ms when a calibration caught a fast moment of this VM (one replica 998 to
#: 2,034 pkt/s between runs) while the pipeline's floor under 0.1-core quotas did not
#: move (p99 150-300 ms at 0.4x load): one peak second in four missed it.
SLA_MS = 1000.0


def retime(trace: Path, rates: list[int], step_s: float, work: Path
           ) -> tuple[list[Segment], Path, Path]:
    """The replay's trace: the trace's clock sped up by one factor per step
    (:func:`~lego.topo.traffic.speedup_schedule`), written to ``retimed.pcap``,
    and the same packets at their own timing (``original.pcap``: what one offline
    instance on the original trace reads, so that both see the same packets)."""
    from lego.ext.packets import open_trace, write_pcap

    frames, ts = [], []
    for raw in open_trace(trace).raw_batches(65536):
        frames.extend(raw.frame(i) for i in range(len(raw)))
        ts.append(np.asarray(raw.ts, dtype=np.float64))
    orig = np.concatenate(ts) if ts else np.zeros(0)
    segments, times = speedup_schedule(orig, rates, step_s)
    kept = len(times)
    retimed, original = work / "retimed.pcap", work / "original.pcap"
    write_pcap(retimed, frames[:kept], 1.0 + times)
    write_pcap(original, frames[:kept], orig[:kept])
    return segments, retimed, original


def size_load(opts: RunOptions, console: Console, work: Path
              ) -> tuple[Path, Path | None, list[int], Calibration | None]:
    """The replay's rates (and, for the generated trace, the trace sized to them).

    ``capacity`` profile: one replica's capacity under an NF host's quota is
    measured first (:func:`~lego.experiments.elastic.calibrate.calibrate`, on the trace's first
    packets with a model trained on them), and each step offers ``load`` x that.
    The generated trace is benign until the last step, where the infection
    starts: the ramp (and the model's training) runs on benign traffic, and the
    attack arrives at the trace's own rates, sped up like everything else."""
    from lego.experiments.elastic.calibrate import calibrate
    from lego.topo.traffic_synth import default_trace, labels_path

    tr = opts.topo.traffic
    if tr.profile != "capacity":
        return opts.trace, opts.labels, list(tr.pps), None
    cores = min(h.cores for h in opts.topo.nf_hosts)
    cdir = work / "calibration"
    cdir.mkdir(parents=True, exist_ok=True)
    model = opts.decl.train(opts.trace, cdir / "model.npz", opts.nf_options,
                            CALIBRATION_PACKETS)
    cal = calibrate(opts.trace, model, cores, cdir, packets=CALIBRATION_PACKETS,
                    semantics=opts.semantics, nf=opts.nf, nf_options=opts.nf_extra)
    console.print(cal.line())
    console.print(cal.breakdown())
    console.print(cal.stage_breakdown())
    if cal.fused is not None:
        console.print(cal.fused_line(live=opts.fuse))
    if opts.fuse:  # the live replicas are the fused ones: the ramp is theirs
        if cal.fused is None:
            raise LegoError("FUSE=on: the fused calibration failed (see the log); the ramp "
                            "has no replica to be sized from")
        cal = replace(cal, live_fused=True)
    rates = [max(1, round(x * cal.replica_pps)) for x in tr.load]
    if not opts.synthetic:
        return opts.trace, opts.labels, rates, cal
    train = opts.train_packets
    if sum(rates[:-1]) * tr.step_s < TRAIN_MARGIN * train:  # longer steps, same rates
        step_s = round(TRAIN_MARGIN * train / sum(rates[:-1]), 1)
        console.print(f"steps of {step_s:g} s instead of {tr.step_s:g} s, so that the NF's "
                      f"{train:,} training packets precede the last step")
        tr = replace(tr, step_s=step_s)
        opts.topo = replace(opts.topo, traffic=tr)
    benign = round(sum(rates[:-1]) * tr.step_s)
    packets = benign + round(ATTACK_BUDGET * rates[-1] * tr.step_s)
    trace = default_trace(opts.results, packets=packets, attack_start=benign / packets)
    return trace, labels_path(trace), rates, cal


def _install_handlers(teardown) -> None:
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(teardown)


def run_mininet(opts: RunOptions, console: Console) -> dict:
    from lego.topo.system import LegoSystem
    from lego.topo.traffic import Replayer

    missing = [h for h in ("train", "instance", "run") if getattr(opts.decl, h) is None]
    if missing:  # the run prepares a model, and holds itself against offline instances
        raise LegoError(f"run: NF {opts.decl.name!r} declares no {', '.join(missing)}: "
                        "make run trains its model and compares with offline instances")
    other = active_run()
    if other is not None:
        raise LegoError(f"another lego run is active (pid {other.pid}, run {other.run_id}): "
                        "wait for it or `make stop`")
    stale = cleanup(opts.topo.interface_names())
    if stale.processes or stale.links:
        console.print(f"cleaned up a previous run: {stale.describe()}")
    results = opts.results
    results.mkdir(parents=True, exist_ok=True)
    work = results / "run"
    # a previous run's outputs must not be read as this run's (a replica's scores on a
    # host this run never scales out to would count twice)
    shutil.rmtree(work, ignore_errors=True)
    opts.trace, opts.labels, rates, cal = size_load(opts, console, work)
    step_s = opts.topo.traffic.step_s
    segments, retimed, original = retime(opts.trace, rates, step_s, work)
    # The generated trace is made for this run: its LAN's clock follows the load
    # profile, so the replay reproduces the trace's own timing and one offline
    # instance on it is the reference. A trace you bring is sped up step by step;
    # its own timing stays the reference (the difference is the speed-up's).
    reference = retimed if opts.synthetic else original
    n = sum(sg.count for sg in segments)
    # one pacer run over the whole retimed trace: a process per step would start each
    # step late (process start-up, pcap load) and insert idle gaps the NF would see
    steps = [(Segment(0, 0, n, max(1, round(n / (step_s * len(rates))))), retimed)]
    console.print(f"[bold]LEGO[/bold] in Mininet: {opts.trace.name}, {n:,} packets in "
                  f"{len(segments)} steps of {opts.topo.traffic.step_s:g} s, its clock sped up "
                  f"so that its base traffic arrives at {' -> '.join(f'{r:,}' for r in rates)} "
                  "packets/s")
    sla_ms = opts.sla_ms or SLA_MS
    t0 = time.perf_counter()
    model = opts.decl.train(retimed, work / "model.npz", opts.nf_options, opts.train_packets)
    if opts.decl.prefix_training:
        console.print(f"trained {opts.nf}'s model offline on the first "
                      f"{opts.train_packets:,} packets ({opts.semantics} features, the "
                      f"replay's timing) in {time.perf_counter() - t0:.1f} s")
    else:
        console.print(f"prepared {opts.nf}'s model ({model.name}, trained offline on its own "
                      f"labelled data) in {time.perf_counter() - t0:.1f} s")
    system = LegoSystem(opts.topo, opts.target, work, model, semantics=opts.semantics, nf=opts.nf,
                        scaling=None if opts.scaling else SCALING_OFF, sla_ms=sla_ms,
                        graph={"fuse": True} if opts.fuse else None,
                        nf_options=opts.nf_extra)
    run = {"calibration": cal, "sla_ms": sla_ms, "rates": rates, "segments": segments,
           "step_s": step_s}
    done = False

    def teardown() -> None:
        nonlocal done
        if not done:
            done = True
            system.stop()

    _install_handlers(teardown)
    timeline: list[dict] = []
    recorders = None
    try:
        t0 = time.perf_counter()
        system.start()
        console.print(f"switch: {opts.target_why}; listening on {opts.topo.switch.grpc_addr} "
                      f"(device {opts.topo.switch.device_id})")
        console.print(f"{system.controller_line()} [{system.mode}]")
        if system.mode == "controller":
            sc = system.config_scaling()
            ray = system.ray
            joined = sum(ray.start_s.values()) - ray.start_s["head"]
            console.print(f"Ray: head {ray.head} ({ray.start_s['head']:.1f} s), a node in "
                          f"each of {', '.join(system.nf_host_names)} ({joined:.1f} s, one "
                          f"at a time), {ray.memory()['pss'] / 2**20:,.0f} MiB (PSS)")
            console.print(f"scaling: high "
                          f"{sc['high']}, low {sc['low']} (busy fraction), dwell {sc['dwell']} "
                          f"s, cooldown {sc['cooldown']} s, at most {sc['max_replicas']} "
                          f"replicas ({time.perf_counter() - t0:.1f} s to start everything)")
            recorders = Recorders(system, system.nf_host_names, work / "recorded")
        else:
            console.print(f"agents: {', '.join(system.agents)} ready "
                          f"({time.perf_counter() - t0:.1f} s to start everything)")
        replayer = Replayer(system.net.host(opts.topo.traffic.host), system.net.traffic_iface,
                            steps, own_timing=True)
        replayer.start()
        if opts.cli:
            from mininet.cli import CLI

            console.print("Mininet CLI (the replay runs meanwhile; `exit` to finish the run)")
            CLI(system.net.net)
        start = time.time()
        bricks_cpu: list[tuple[float, dict[str, list]]] = []
        events: list[dict] = []
        injector = FaultInjector(system, opts.faults, {h.name: h.port for h in opts.topo.nf_hosts})
        _watch(system, replayer, opts, console, timeline, start, segments, bricks_cpu, events,
               injector)
        if replayer.error:
            raise LegoError(replayer.error)
        extra: dict = {"bricks_cpu": bricks_cpu, "events": events,
                       "faults_injected": injector.done}
        if system.mode == "controller":
            final = system.status()
            extra["final"] = final
            extra["last"] = system.finish()
            want = {h: final["switch"].get("ports", {}).get(str(opts.topo.nf(h).port),
                                                          {}).get("out", 0)
                    for h in system.nf_host_names}
            t1 = time.perf_counter()
            got = recorders.stop(want)
            extra["recorded"] = {"want": want, "got": got}
            extra["reference"] = offline_reference(system, recorders.paths, opts)
            extra["reference_s"] = round(time.perf_counter() - t1, 1)
            extra["latency"] = packet_latency(system, recorders.paths,
                                              windows=opts.decl.merge == "window")
            extra["replay_lag"] = replay_lag(recorders.paths, retimed)
            extra["offline_original"] = offline_original(opts, reference)
            if reference != original:
                extra["offline_natural"] = offline_original(opts, original)
        extra["run"] = run
        extra["reference_trace"] = str(reference)
        bad = system.collect(results / "logs")
        summary = write_results(system, replayer, opts, timeline, start, bad, extra)
    finally:
        if recorders is not None:
            recorders.close()
        teardown()
    return summary


def scheduled_step(segments: list[Segment], step_s: float, elapsed: float) -> Segment | None:
    """The step of the schedule ``elapsed`` seconds into the replay (pure)."""
    i = int(elapsed // step_s) if elapsed >= 0 else -1
    return next((sg for sg in segments if sg.index == i), None)


RSS_EVERY = 4  # dashboard rounds between two reads of the Ray processes' memory


def drained(st: dict, sent: int, traffic_port: int, scaled_back: bool,
            late: bool, per_packet: bool = True) -> str | None:
    """After the replay (pure): None to keep waiting, "" when every packet is scored
    and the controller scaled back in (or ``late``: past the drain time), else why
    the run ends short. Frames that never entered the switch (its traffic port's
    ingress counter below ``sent``) will never be scored: once every frame that did
    enter is, waiting longer tells nothing. Without ``per_packet`` (an NF deciding
    per time window, its last windows decided at the drain) a packet counts once
    its replica took it."""
    scored = st["scores"] if per_packet else st.get("taken", 0)
    entered = st["switch"].get("ports", {}).get(str(traffic_port), {}).get("in", sent)
    if scored >= sent:
        return "" if scaled_back or late else None
    if scored >= entered and (scaled_back or late):
        return (f"{sent - entered:,} of {sent:,} packets never entered the switch "
                f"(its port {traffic_port} took in {entered:,})")
    if late:
        return f"{sent - scored:,} of {sent:,} packets still unscored after the drain time"
    return None


def scaled_back_to(st: dict, initial: int) -> bool:
    """The controller is back to ``initial`` FE replicas (pure): in the switch's
    replica ports and in its own graphs. A scale-out is an event (and a graph out
    of standby) before the switch writes its port, a state move later: the
    switch alone would call a run scaled back while it scales out."""
    alive = {a["host"] for a in st.get("hosts", []) if a.get("alive")}
    owning = [g for g in st.get("graphs", [])
              if not g.get("draining") and not g.get("standby") and g.get("host") in alive]
    return (len(st["switch"].get("replica_ports", [])) <= initial
            and len(owning) <= initial)


def rates(prev: dict | None, cur: dict, traffic_ports: list[int]) -> tuple[float, float]:
    """(packets/s into the switch on the traffic ports, packets/s out to the others)."""
    if not prev or not prev.get("switch", {}).get("ports") or not cur["switch"].get("ports"):
        return 0.0, 0.0
    dt = max(cur["time"] - prev["time"], 1e-3)

    def total(st: dict, key: str, want) -> int:
        return sum(v[key] for p, v in st["switch"]["ports"].items() if want(int(p)))

    tin = set(traffic_ports)
    pin = total(cur, "in", lambda p: p in tin) - total(prev, "in", lambda p: p in tin)
    pout = total(cur, "out", lambda p: p not in tin) - total(prev, "out", lambda p: p not in tin)
    return max(0.0, pin / dt), max(0.0, pout / dt)


def uln_replicas(status: dict[str, Any]) -> int:
    """Routed stateless replicas over every graph owning buckets."""
    return sum(b["replicas"] for b in status.get("bricks", [])
               if b.get("role") == "stateless" and b["state"] == "running")


def _watch(system, replayer, opts: RunOptions, console: Console, timeline: list[dict],
           start: float, segments: list[Segment],
           bricks_cpu: list[tuple[float, dict[str, list]]], events: list[dict],
           injector: FaultInjector | None = None) -> None:
    """Dashboard and timeline until the replay is done and scored (controller mode:
    and the controller scaled back in, or ``drain_s``). ``bricks_cpu``: at each row's
    ``t``, every brick's (role, CPU s, logic CPU s, frames in); ``events``: every
    controller event seen (a status holds only the newest)."""
    from lego.experiments.elastic.dashboard import render

    traffic = [opts.topo.traffic.port]
    prev = None
    machine = machine_cpu_s()
    drain_deadline = None
    initial = opts.topo.replicas  # feature-extraction replicas before the replay
    title = f"LEGO: {opts.nf} ({opts.semantics}) behind {opts.target_why.split(' (')[0]}"
    with Live(console=console, refresh_per_second=4, transient=False,
              auto_refresh=False) as live:
        while True:
            st = system.status()
            prev_cpu = (timeline[-1]["t"] + start, timeline[-1]["cpu_s"]) if timeline else None
            pin, pout = rates(prev, st, traffic)
            prev = st
            cur = replayer.current
            if injector is not None and cur is not None and not replayer.done():
                injector.tick(time.time() - cur.t_start)  # seconds into the replay
            seg = scheduled_step(segments, opts.topo.traffic.step_s,
                                 time.time() - cur.t_start) if cur else None
            if replayer.done():
                step = "replay done, draining"
            elif seg is not None:
                step = f"replay step {seg.index + 1}/{len(segments)} at {seg.pps:,} pkt/s"
            else:
                step = "replay starting"
            row = {"t": round(st["time"] - start, 2), "pps_in": round(pin, 1),
                   "pps_out": round(pout, 1),
                   "target_pps": seg.pps if seg and not replayer.done() else 0,
                   "replicas": len(st["switch"].get("replica_ports", [])),
                   "uln_replicas": uln_replicas(st),
                   "alerts": st["alerts"], "scores": st["scores"],
                   "queue_depth": sum(b["queue_depth"] for b in st["bricks"]),
                   **_cores(st, opts.topo, prev_cpu)}
            now_machine = machine_cpu_s()
            row.update(machine_busy(machine, now_machine))
            machine = now_machine
            if system.ray is not None and len(timeline) % RSS_EVERY == 0:
                mem = system.ray.memory()
                row["ray_pss_mib"] = round(mem["pss"] / 2**20)
                row["ray_rss_mib"] = round(mem["rss"] / 2**20)
            bricks_cpu.append((row["t"], {bid: [b["role"], *cpu] for b in st["bricks"]
                                          for bid, cpu in b.get("cpu", {}).items()}))
            events[:] = merge_events(events, st.get("events", []))
            for b in st["bricks"]:
                row[f"pps:{b['brick']}"] = b["pps"]
                row[f"util:{b['brick']}"] = b["utilisation"]
            timeline.append(row)
            if not opts.quiet:
                live.update(render(st, pin, pout, step, st["time"] - start, title),
                            refresh=True)
            if system.mode == "controller":
                if replayer.done():
                    drain_deadline = drain_deadline or time.monotonic() + opts.drain_s
                    why = drained(st, replayer.sent, traffic[0], scaled_back_to(st, initial),
                                  time.monotonic() > drain_deadline,
                                  per_packet=opts.decl.merge != "window")
                    if why is not None:
                        if why:  # the summary counts the loss, the command ends with it
                            log.warning("end of the run: %s", why)
                        break
                time.sleep(0.5)  # the dashboard's refresh period, not a synchronisation
                continue
            agents_done = all(not p.alive() for p in system.agents.values())
            if replayer.done():
                if agents_done:
                    break
                drain_deadline = drain_deadline or time.monotonic() + opts.drain_s
                if time.monotonic() > drain_deadline:
                    raise LegoError(f"NF hosts still busy {opts.drain_s:.0f} s after the replay")
            elif agents_done:
                raise LegoError("every NF agent exited during the replay (see results/logs)")
            time.sleep(0.5)  # the dashboard's refresh period, not a synchronisation


def _cores(st: dict, topo: Topology, prev: tuple[float, float] | None) -> dict:
    """Cores allocated (quota of every host whose graph owns buckets), the NF hosts'
    CPU seconds so far, and the cores they used since the previous row."""
    owners = {g["host"] for g in st.get("graphs", []) if not g.get("standby")
              and not g.get("draining")}
    cpu = sum(a.get("cpu_s") or 0.0 for a in st.get("hosts", []))
    used = (cpu - prev[1]) / (st["time"] - prev[0]) if prev and st["time"] > prev[0] else 0.0
    quota = {a["host"]: a.get("cores") for a in st.get("hosts", [])}  # resized ones too
    nf_hosts = {n.name for n in topo.nf_hosts}
    return {"cores": round(sum(quota.get(h) or topo.nf(h).cores for h in owners
                               if h in nf_hosts), 3),
            "cpu_s": round(cpu, 3), "cores_used": round(max(0.0, used), 3)}
