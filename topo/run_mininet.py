"""``lego run`` in Mininet: the whole system over the trace, a dashboard, results/.

Order: refuse if another run is alive, clean what a dead one left; cut the
trace into the ramp's steps; train KitNET offline on the benign prefix (the
prefix re-stamped with the times the switch will give it, since the NF hosts
use the switch's timestamps); start the network, switch, controller and NF
agents; replay the steps with tcpreplay while the dashboard shows the status;
wait for the NF hosts to drain; write ``results/``; tear everything down
(``finally``, plus ``atexit`` and SIGTERM/SIGHUP handlers for the paths a
``finally`` does not cover).
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.live import Live

from lego.errors import LegoError
from lego.topo.mn_cleanup import active_run, cleanup
from lego.topo.mn_controller import scaling_events, uln_replicas
from lego.topo.mn_record import Recorders
from lego.topo.mn_status import rates
from lego.topo.mn_topology import Topology
from lego.topo.mn_traffic import Segment, ramp_segments

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    trace: Path
    labels: Path | None
    results: Path
    topo: Topology
    target: str  # soft | bmv2 (already picked)
    target_why: str
    semantics: str = "lego"
    fm: int = 5000
    ad: int = 50000
    cli: bool = False
    quiet: bool = False
    drain_s: float = 60.0


def retime(trace: Path, segments: list[Segment], out: Path) -> Path:
    """The trace with the timestamps the ramp will give it (what the switch stamps)."""
    from lego.ext.packets import open_trace, write_pcap

    frames, ts = [], []
    t = 0.0
    times = []
    for seg in segments:
        times.append(t + np.arange(seg.count) / seg.pps)
        t += seg.count / seg.pps
    for raw in open_trace(trace).raw_batches(65536):
        frames.extend(raw.frame(i) for i in range(len(raw)))
    ts = np.concatenate(times) + 1.0 if times else np.zeros(0)
    write_pcap(out, frames, ts[:len(frames)])
    return out


def _install_handlers(teardown) -> None:
    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(teardown)


def run_mininet(opts: RunOptions, console: Console) -> dict:
    from lego.bricks.kitsune_graph import train_model
    from lego.topo.mn_system import LegoSystem
    from lego.topo.mn_traffic import Replayer, split_trace, trace_frames

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
    n = trace_frames(opts.trace)
    segments = ramp_segments(n, opts.topo.traffic.pps)
    steps = list(zip(segments, split_trace(opts.trace, segments, work / "segments"),
                     strict=True))
    console.print(f"[bold]LEGO[/bold] in Mininet: {opts.trace.name} ({n:,} packets) replayed at "
                  f"{' -> '.join(str(s.pps) for s in segments)} packets/s "
                  f"({sum(s.seconds for s in segments):.0f} s)")
    t0 = time.perf_counter()
    model = train_model(retime(opts.trace, segments, work / "retimed.pcap"), work / "model.npz",
                        opts.semantics, opts.fm, opts.ad)
    console.print(f"trained KitNET offline on the first {opts.fm + opts.ad + 1:,} packets "
                  f"({opts.semantics} features) in {time.perf_counter() - t0:.1f} s")
    system = LegoSystem(opts.topo, opts.target, work, model, semantics=opts.semantics)
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
            console.print(f"agents: {', '.join(system.agents)} registered; scaling: high "
                          f"{sc['high']}, low {sc['low']} (busy fraction), dwell {sc['dwell']} "
                          f"s, cooldown {sc['cooldown']} s, at most {sc['max_replicas']} "
                          f"replicas ({time.perf_counter() - t0:.1f} s to start everything)")
            recorders = Recorders(system, list(system.agents), work / "recorded")
        else:
            console.print(f"agents: {', '.join(system.agents)} ready "
                          f"({time.perf_counter() - t0:.1f} s to start everything)")
        replayer = Replayer(system.net.host(opts.topo.traffic.host), system.net.traffic_iface,
                            steps)
        replayer.start()
        if opts.cli:
            from mininet.cli import CLI

            console.print("Mininet CLI (the replay runs meanwhile; `exit` to finish the run)")
            CLI(system.net.net)
        start = time.time()
        held = _watch(system, replayer, opts, console, timeline, start)
        if replayer.error:
            raise LegoError(replayer.error)
        extra: dict = {"held": held}
        if system.mode == "controller":
            final = system.status()
            extra["final"] = final
            extra["last"] = system.finish()
            want = {h: final["switch"].get("ports", {}).get(str(opts.topo.nf(h).port),
                                                          {}).get("out", 0)
                    for h in system.agents}
            t1 = time.perf_counter()
            got = recorders.stop(want)
            extra["recorded"] = {"want": want, "got": got}
            extra["reference"] = _reference(system, recorders.paths, opts)
            extra["reference_s"] = round(time.perf_counter() - t1, 1)
        bad = system.collect(results / "logs")
        summary = write_results(system, replayer, opts, timeline, start, bad, extra)
    finally:
        if recorders is not None:
            recorders.close()
        teardown()
    return summary


def _watch(system, replayer, opts: RunOptions, console: Console, timeline: list[dict],
           start: float) -> dict[int, int]:
    """Dashboard and timeline until the replay is done and scored (controller mode:
    and the controller scaled back in, or ``drain_s``). Returns the rows each
    state move held (index of the state_moved event -> rows)."""
    from lego.topo.dashboard import render

    traffic = [opts.topo.traffic.port]
    prev = None
    drain_deadline = None
    held_seen: dict[str, int] = {}
    held: dict[int, int] = {}
    moves_seen = 0
    initial = None
    title = f"LEGO: Kitsune ({opts.semantics}) behind {opts.target_why.split(' (')[0]}"
    with Live(console=console, refresh_per_second=4, transient=False,
              auto_refresh=False) as live:
        while True:
            st = system.status()
            pin, pout = rates(prev, st, traffic)
            prev = st
            cur = replayer.current
            step = (f"replay step {cur.segment.index + 1}/{len(replayer.steps)} at "
                    f"{cur.segment.pps} pkt/s" if cur and not replayer.done() else
                    "replay done, draining" if replayer.done() else "replay starting")
            row = {"t": round(st["time"] - start, 2), "pps_in": round(pin, 1),
                   "pps_out": round(pout, 1),
                   "target_pps": cur.segment.pps if cur and not replayer.done() else 0,
                   "replicas": len(st["switch"].get("replica_ports", [])),
                   "uln_replicas": uln_replicas(st),
                   "alerts": st["alerts"], "scores": st["scores"],
                   "queue_depth": sum(b["queue_depth"] for b in st["bricks"])}
            for b in st["bricks"]:
                row[f"pps:{b['brick']}"] = b["pps"]
                row[f"util:{b['brick']}"] = b["utilisation"]
            timeline.append(row)
            if not opts.quiet:
                live.update(render(st, pin, pout, step, st["time"] - start, title),
                            refresh=True)
            if system.mode == "controller":
                moved = [e for e in st["events"] if e["kind"] == "state_moved"]
                if len(moved) > moves_seen:
                    total = 0
                    for brick, ms in system.move_stats().items():
                        rows = int(ms.get("rows_held", 0))
                        total += max(0, rows - held_seen.get(brick, 0))
                        held_seen[brick] = max(rows, held_seen.get(brick, 0))
                    held[len(moved) - 1] = total
                    moves_seen = len(moved)
                if initial is None and st["scores"] == 0:
                    initial = (row["replicas"], row["uln_replicas"])
                if replayer.done():
                    scored = st["scores"] >= replayer.sent
                    back = initial is None or (row["replicas"], row["uln_replicas"]) <= initial
                    drain_deadline = drain_deadline or time.monotonic() + opts.drain_s
                    if scored and (back or time.monotonic() > drain_deadline):
                        break
                    if time.monotonic() > drain_deadline and not scored:
                        raise LegoError(f"{replayer.sent - st['scores']} packets still "
                                        f"unscored {opts.drain_s:.0f} s after the replay")
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
    return held


def _reference(system, pcaps: list[Path], opts: RunOptions) -> dict:
    """One offline NF instance over the recorded, switch-stamped stream vs the run."""
    from lego.topo.mn_testlib import offline_scores

    seq, score, _ = _merge_scores(system)
    ref_seq, ref_score = offline_scores(pcaps, system.model, opts.semantics)
    same_seq = len(seq) == len(ref_seq) and bool(np.array_equal(seq, ref_seq))
    return {"packets": int(len(ref_seq)), "same packets": same_seq,
            "bit-identical": same_seq and bool(np.array_equal(score.view(np.uint64),
                                                                ref_score.view(np.uint64))),
            "max abs difference": float(np.max(np.abs(score - ref_score)))
            if same_seq and len(seq) else None}


def _merge_scores(system) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seqs, scores, alerts = [], [], []
    for d in system.score_dirs():
        path = d / "scores.csv"
        if not path.is_file():
            continue
        with open(path) as f:  # a replica that scored nothing wrote only the header
            if not f.readline() or not f.readline():
                continue
        t = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        if len(t):
            seqs.append(t[:, 0].astype(np.int64))
            scores.append(t[:, 1])
            alerts.append(t[:, 3].astype(bool))
    if not seqs:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool)
    seq, score, alert = np.concatenate(seqs), np.concatenate(scores), np.concatenate(alerts)
    order = np.argsort(seq, kind="stable")
    return seq[order], score[order], alert[order]


def write_results(system, replayer, opts: RunOptions, timeline: list[dict], start: float,
                  bad_logs: list[str], extra: dict | None = None) -> dict:
    from lego.metrics import detection_report, load_labels

    extra = extra or {}
    out = opts.results
    seq, score, alert = _merge_scores(system)
    with open(out / "scores.csv", "w") as f:
        f.write("seq,score,alert\n")
        np.savetxt(f, np.column_stack([seq, score, alert]), fmt=["%d", "%.17g", "%d"],
                   delimiter=",")
    with open(out / "alerts.jsonl", "w") as f:
        for i in np.flatnonzero(alert):
            f.write(json.dumps({"seq": int(seq[i]), "score": float(score[i])}) + "\n")
    keys = list(dict.fromkeys(k for row in timeline for k in row))
    with open(out / "timeline.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(timeline)
    final = extra.get("final") or system.status()
    sw = final["switch"]
    ports = sw.get("ports", {})
    tport = str(opts.topo.traffic.port)
    switch_in = ports.get(tport, {}).get("in", 0)
    switch_out = sum(v["out"] for p, v in ports.items() if p != tport)
    if system.mode == "controller":
        brick_in = sum(n for b, n in system.packets_seen.items() if b.startswith("src-"))
        decisions = {}
        for d in system.score_dirs():
            try:
                decisions[d.name] = json.loads((d / "summary.json").read_text())
            except (FileNotFoundError, ValueError):
                decisions[d.name] = {}
    else:
        brick_in = sum(b["packets_in"] for b in final["bricks"]
                       if b["type"] == "packet_batching")
        decisions = {}
        for host in system.agents:
            try:
                decisions[host] = json.loads((system.agent_dir(host) / "out" /
                                              "summary.json").read_text())
            except (FileNotFoundError, ValueError):
                decisions[host] = {}
    last = extra.get("last") or {}
    t0 = last.get("now", 0.0) - (system.last_wall - start) if last else 0.0
    events = scaling_events(last.get("events", []), t0)
    for i, row in enumerate(e for e in events if e["brick"] == "feature extraction"):
        row["held"] = extra.get("held", {}).get(i, row["held"])
    plots = _plots(timeline, out, events)
    train_n = opts.fm + opts.ad + 1
    unique = int(len(np.unique(seq)))
    summary = {
        "trace": str(opts.trace), "packets": int(replayer.sent + replayer.failed),
        "switch": opts.target_why,
        "controller": "lego controller run --config (northbound, policy, state moves)"
        if system.mode == "controller" else "southbound only (switch manager)",
        "semantics": opts.semantics, "nf hosts": list(system.agents),
        "replay steps (packets/s)": [s.pps for s, _ in replayer.steps],
        "replay seconds": round(sum(r.t_end - r.t_start for r in replayer.results), 1),
        "tcpreplay sent": replayer.sent, "tcpreplay failed": replayer.failed,
        "switch in (traffic port)": switch_in, "switch out (NF ports)": switch_out,
        "mirrored copies": sw.get("events", {}).get("mirror", 0),
        "NF hosts received": brick_in,
        "lost between switch and bricks": switch_out - brick_in,
        "scored": int(len(seq)), "scored once each": unique == len(seq),
        "lost (sent - scored)": int(replayer.sent - unique),
        "lost in the brick graphs (rows)": sum(d.get("lost_rows", 0)
                                               for d in decisions.values()),
        "alerts": int(alert.sum()),
        "alerts after training": int(alert[seq >= train_n].sum()),
        "peak pps in": max((r["pps_in"] for r in timeline), default=0),
        "max feature-extraction replicas": max((r["replicas"] for r in timeline), default=0),
        "max ULN replicas": max((r.get("uln_replicas", 0) for r in timeline), default=0),
        "scaling events": len(events),
        "state moves": last.get("counters", {}).get("moves", 0),
        "state lost (buckets)": last.get("counters", {}).get("state_lost_buckets", 0),
        "components that logged an exception": bad_logs,
    }
    if "reference" in extra:
        summary["offline single instance on the recorded switch-stamped stream"] = \
            extra["reference"]
        summary["recorded frames per host (switch out / captured)"] = {
            h: f"{extra['recorded']['want'][h]} / {extra['recorded']['got'][h]}"
            for h in extra["recorded"]["want"]}
        summary["reference seconds"] = extra.get("reference_s")
    zero = (replayer.failed == 0 and switch_out == brick_in and unique == len(seq)
            == replayer.sent and summary["lost in the brick graphs (rows)"] == 0)
    summary["zero loss"] = zero
    if opts.labels is not None and len(seq):
        labels = load_labels(opts.labels, int(seq.max()) + 1)[seq]
        after = seq >= train_n
        if after.any() and 0 < labels[after].sum() < after.sum():
            summary.update({k: round(v, 4) for k, v in
                            detection_report(score[after], labels[after]).items()})
    summary["scaling"] = events
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    lines = ["# LEGO run summary", ""]
    lines += [f"- **{k}**: {v}" for k, v in summary.items() if k != "scaling"]
    lines += ["", "## Scaling events (decided by the controller's policy)", ""]
    if events:
        lines += ["| t (s) | event | brick | port | replicas | buckets moved | entries moved "
                  "| packets held | move (s) | why |", "|" + "---|" * 10]
        lines += [f"| {e['t']} | {e['event']} | {e['brick']} | {e['port']} | "
                  f"{e['replicas']} | {e['buckets']} | {e['entries']} | {e['held']} | "
                  f"{e['seconds']} | {e['reason']} |" for e in events]
    else:
        lines.append("none")
    ref = summary.get("offline single instance on the recorded switch-stamped stream")
    lines += ["", f"Zero loss: **{'yes' if zero else 'NO'}** (switch out {switch_out} = "
              f"bricks in {brick_in}; {unique} of {replayer.sent} sent packets scored once)."]
    if ref:
        lines.append(f"Scores equal to one offline instance on the switch-stamped stream: "
                     f"**{'yes, bit for bit' if ref['bit-identical'] else 'NO'}** "
                     f"({ref['packets']} packets).")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    (out / "summary.md").write_text("\n".join(lines))
    return summary


def _plots(timeline: list[dict], out: Path, events: list[dict] | None = None
           ) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not timeline:
        return []
    t = [r["t"] for r in timeline]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [r["pps_in"] for r in timeline], label="into the switch")
    ax.plot(t, [r["pps_out"] for r in timeline], label="out to NF hosts (incl. mirrors)")
    ax.step(t, [r["target_pps"] for r in timeline], where="post", ls="--", label="replay rate")
    ax.set_xlabel("seconds")
    ax.set_ylabel("packets/s")
    ax.legend()
    ax.set_title("throughput")
    fig.tight_layout()
    p1 = out / "throughput.png"
    fig.savefig(p1, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step(t, [r["replicas"] for r in timeline], where="post", label="feature extraction")
    ax.step(t, [r.get("uln_replicas", 0) for r in timeline], where="post", ls="--",
            label="ULN")
    for e in events or []:
        ax.axvline(e["t"], color="grey", lw=0.6, ls=":")
        ax.annotate(f"{e['event']} {'FE' if e['brick'] != 'ULN' else 'ULN'}", (e["t"], 0.2),
                    rotation=90, fontsize=7, color="grey")
    ax.set_xlabel("seconds")
    ax.set_ylabel("replicas")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("replicas over time")
    fig.tight_layout()
    p2 = out / "replicas.png"
    fig.savefig(p2, dpi=100)
    plt.close(fig)
    return [p1, p2]
