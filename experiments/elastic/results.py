"""What ``lego run`` writes to ``results/``: the scores merged in switch order, the
offline references they are held against, per-packet latency, summary.json and
summary.md, and the timeline plot.

:func:`write_results` is called once, after the run drained
(:mod:`lego.experiments.elastic.run`); the sentences and figures of the summary are
:mod:`lego.experiments.elastic.report`'s pure functions.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lego.control.registry import parse_name
from lego.experiments.elastic.record import (
    capture_epoch_s,
    ingress_times,
    offline_scores,
    recorded_frames,
    switch_frames,
    window_opens,
)
from lego.experiments.elastic.report import (
    core_seconds,
    event_sentence,
    fault_events,
    machine_figures,
    merge_events,
    scaling_events,
    sla_figures,
)
from lego.topo.status import yes_no

if TYPE_CHECKING:  # the run's options, for annotations only (the run imports us)
    from lego.experiments.elastic.run import RunOptions


def offline_reference(system, pcaps: list[Path], opts: RunOptions) -> dict:
    """One offline NF instance over the recorded, switch-stamped stream vs the run."""
    rescored: dict[str, int] = {}
    seq, score, _ = merge_scores(system, stats=rescored)
    ref_seq, ref_score = offline_scores(pcaps, system.model, opts.decl, opts.nf_options)
    same_seq = len(seq) == len(ref_seq) and bool(np.array_equal(seq, ref_seq))
    return {"packets": int(len(ref_seq)), "same packets": same_seq,
            "bit-identical": same_seq and not rescored.get("rescored_differ")
            and bool(np.array_equal(score.view(np.uint64), ref_score.view(np.uint64))),
            "max abs difference": float(np.max(np.abs(score - ref_score)))
            if same_seq and len(seq) else None}


def switch_epoch_s(system) -> float | None:
    """The wall-clock time of the switch's timestamp 0 where the switch logs it (the
    software target), else None (BMv2: estimated from the captures instead)."""
    import re

    log_path = getattr(system.net.switch, "log_path", None)
    text = log_path.read_text(errors="replace") if log_path and log_path.is_file() else ""
    m = re.search(r"clock epoch (\d+) us", text)
    return int(m.group(1)) / 1e6 if m else None


def packet_latency(system, pcaps: list[Path], windows: bool = False
                   ) -> dict[str, np.ndarray] | None:
    """Per scored packet: its switch ingress (wall clock, from the shim's timestamp)
    and its latency to the decision that scored it (seconds). ``windows`` (an NF that
    decides per time window): per decided fragment, the close of its window instead
    (:func:`window_latency`)."""
    epoch = switch_epoch_s(system) or capture_epoch_s(pcaps)
    seq, _, _, decided = merge_scores(system, with_decided=True)
    if epoch is None or not len(seq):
        return None
    if windows:
        return window_latency(seq, decided, epoch, pcaps)
    iseq, its = ingress_times(pcaps)
    pos = np.searchsorted(iseq, seq)
    ok = (pos < len(iseq)) & (iseq[np.minimum(pos, len(iseq) - 1)] == seq)
    ingress = epoch + its[np.minimum(pos, len(iseq) - 1)]
    return {"seq": seq[ok], "ingress": ingress[ok], "latency": (decided - ingress)[ok]}


def window_latency(seq: np.ndarray, decided: np.ndarray, epoch: float, pcaps: list[Path]
                   ) -> dict[str, np.ndarray]:
    """Per fragment (``seq``: its first frame): when its window closed, the switch
    stamping the first frame of the next one (wall clock), and the time from there
    to its decision. A window the stream ended in never closed: its fragments,
    decided at the drain, are counted in ``open_window_fragments``, not timed."""
    recorded = recorded_frames(pcaps)  # read once: the frames, then the windows' openings
    frames = switch_frames(pcaps, recorded)
    if not len(frames) or "window" not in frames.arrays:
        return {"seq": seq[:0], "ingress": np.zeros(0), "latency": np.zeros(0),
                "windows": np.zeros(0, np.int64), "window_latency": np.zeros(0),
                "open_window_fragments": 0}
    pos = np.minimum(np.searchsorted(frames.seq, seq), len(frames) - 1)
    known = frames.seq[pos] == seq
    opens = window_opens(pcaps, recorded)
    window = frames.arrays["window"][pos].astype(np.int64)
    close = np.array([opens.get(int(w) + 1, np.nan) for w in window])
    ok = known & np.isfinite(close)
    ingress = epoch + close
    latency = decided - ingress
    ids, at = np.unique(window[ok], return_inverse=True)
    last = np.full(len(ids), -np.inf)
    np.maximum.at(last, at, latency[ok])  # a window is decided with its last fragment
    return {"seq": seq[ok], "ingress": ingress[ok], "latency": latency[ok],
            "windows": ids, "window_latency": last,
            "open_window_fragments": int((known & ~np.isfinite(close)).sum())}


def window_figures(lat: dict | None, sla_ms: float) -> dict:
    """Per window (close at the switch -> its last decision): how many, the share
    within the SLA, p50/p99/max (ms)."""
    x = 1e3 * np.asarray((lat or {}).get("window_latency", []), dtype=np.float64)
    if not len(x):
        return {"windows_decided": 0, "windows_within_sla_fraction": None}
    return {"windows_decided": int(len(x)),
            "windows_within_sla_fraction": round(float(np.mean(x <= sla_ms)), 3),
            **{f"window_latency_ms_{k}": round(float(np.percentile(x, q)), 1)
               for k, q in (("p50", 50), ("p99", 99), ("max", 100))},
            "fragments_in_windows_open_at_the_end": (lat or {}).get("open_window_fragments")}


def replay_lag(pcaps: list[Path], replayed: Path) -> dict[str, float] | None:
    """How late the switch stamped the replay's frames against the replayed trace's
    clock (:func:`lag_figures`)."""
    from lego.ext.packets import open_trace

    seq, stamps = ingress_times(pcaps)
    ts = [np.asarray(b.ts, dtype=np.float64) for b in open_trace(replayed).raw_batches(65536)]
    return lag_figures(seq, stamps, np.concatenate(ts) if ts else np.zeros(0))


def lag_figures(seq: np.ndarray, stamps: np.ndarray, trace_ts: np.ndarray
                ) -> dict[str, float] | None:
    """p50/p99/max (ms) of each frame's switch stamp minus its time in the trace, less
    the smallest such difference (the pacer never sends a frame early). A lag that
    varies between frames is timing the live NF sees and one offline instance on the
    trace does not: it is what can set their detection apart. None where the switch
    numbered frames the replay did not send (pure)."""
    if not len(seq) or seq.min() < 0 or seq.max() >= len(trace_ts):
        return None
    lag = stamps - (trace_ts[seq] - trace_ts[0])
    lag = 1e3 * (lag - lag.min())
    return {k: round(float(np.percentile(lag, q)), 2) for k, q in
            (("p50", 50), ("p99", 99), ("max", 100))}


def latency_per_second(lat: dict[str, np.ndarray], start: float, sla_s: float
                       ) -> list[dict]:
    """p50/p99 latency of the packets that entered the switch in each second since
    ``start`` (pure)."""
    sec = np.floor(lat["ingress"] - start).astype(np.int64)
    rows = []
    for t in np.unique(sec):
        x = lat["latency"][sec == t]
        p99 = float(np.percentile(x, 99))
        rows.append({"t": int(t), "packets": int(len(x)), "p50_ms": round(1e3 * float(
            np.percentile(x, 50)), 1), "p99_ms": round(1e3 * p99, 1),
                     "within_sla": bool(p99 <= sla_s)})
    return rows


def offline_original(opts: RunOptions, original: Path) -> dict:
    """One offline NF instance on the original trace (its own timing; the packets
    the replay covers), trained on the same prefix: the detection the live system
    should match."""
    from lego.metrics import labelled_detection

    if opts.labels is None:
        return {}
    from lego.metrics import decision_report, load_labels

    seq, score, scored = opts.decl.run(original, opts.nf_options, opts.train_packets)
    out = labelled_detection(seq, score, scored, opts.labels)
    if opts.decl.decision_threshold is not None and len(seq):
        labels = load_labels(opts.labels, int(seq.max()) + 1)[seq.astype(np.int64)]
        decided = decision_report(score[scored] > opts.decl.decision_threshold,
                                  labels[scored])
        out.update({f"decisions_{k}": v for k, v in decided.items()})
    return out


def merge_scores(system, with_decided: bool = False, stats: dict | None = None) -> tuple:
    """Every decision brick's scores, in switch sequence order: (seq, score, alert),
    plus the wall-clock time each was decided (``with_decided``). A packet a lost
    host's decision wrote (its directory has no summary: it died with the host) and
    its successor's replay from a checkpoint wrote again is kept once, the
    successor's; ``stats`` gets how many (``rescored``) and how many of them
    differ in score or alert, bit for bit (``rescored_differ``: 0 when exact). Any
    other packet scored twice stays twice."""
    seqs, scores, alerts, decided, lost = [], [], [], [], []
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
            decided.append(t[:, 4] if t.shape[1] > 4 else np.full(len(t), np.nan))
            lost.append(np.full(len(t), not (d / "summary.json").is_file()))
    if not seqs:
        out = (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool), np.zeros(0))
        return out if with_decided else out[:3]
    seq, from_lost = np.concatenate(seqs), np.concatenate(lost)
    order = np.lexsort((~from_lost, seq))  # a packet's lost-host copy first
    out = tuple(np.concatenate(a)[order] for a in (seqs, scores, alerts, decided))
    from_lost = from_lost[order]
    again = np.flatnonzero((out[0][1:] == out[0][:-1]) & from_lost[:-1])  # the lost copies
    if stats is not None:
        s, a = out[1].view(np.uint64), out[2]
        stats["rescored"] = int(len(again))
        stats["rescored_differ"] = int(np.count_nonzero(
            (s[again] != s[again + 1]) | (a[again] != a[again + 1])))
    if len(again):
        keep = np.ones(len(out[0]), dtype=bool)
        keep[again] = False
        out = tuple(x[keep] for x in out)
    return out if with_decided else out[:3]


def fused_figures(cal) -> dict:
    """The calibration's fused replica (one process) against its five processes."""
    f = cal.fused if cal is not None else None
    if f is None or not f.loop_seconds or not cal.loop_seconds:
        return {}
    return {"calibration_fused": cal.fused_line(),
            "capacity_one_replica_fused_pps": round(f.pps),
            "capacity_one_replica_fused_loop_pps": round(f.loop_pps),
            "capacity_one_replica_loop_pps": round(cal.loop_pps),
            "fused_cpu_us_per_packet": round(f.cpu_us, 2)}


def write_results(system, replayer, opts: RunOptions, timeline: list[dict], start: float,
                  bad_logs: list[str], extra: dict | None = None) -> dict:
    from lego.metrics import decision_report, detection_report, load_labels

    extra = extra or {}
    out = opts.results
    rescored: dict[str, int] = {}
    seq, score, alert = merge_scores(system, stats=rescored)
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
        brick_in = final.get("taken", 0)
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
    seen = merge_events(extra.get("events") or [], last.get("events", []))
    events = scaling_events(seen, t0, system.config_scaling())
    faults = fault_events(seen, t0)
    run = extra.get("run", {})
    cal = run.get("calibration")
    sla_ms = float(run.get("sla_ms", 100.0))
    segs = run.get("segments") or [r.segment for r in replayer.results]
    step_s = run.get("step_s") or 0.0
    rates = run.get("rates") or [sg.pps for sg in segs]
    peak_step = int(np.argmax(rates)) if rates else -1  # the step the profile peaks in
    peak_pps, peak = 0, None
    t_replay = replayer.results[0].t_start - start if replayer.results else 0.0
    for sg in segs:  # the peak step, in seconds since the replay began
        if sg.index == peak_step:
            peak_pps = sg.pps
            peak = (t_replay + sg.index * step_s, t_replay + (sg.index + 1) * step_s)
    lat = extra.get("latency")
    per_second = latency_per_second(lat, start, sla_ms / 1e3) if lat else []
    attack = attack_span(opts.labels, segs, t_replay, step_s)
    sla = sla_figures(per_second, sla_ms, peak, attack)
    windows = opts.decl.merge == "window"  # one decision per (flow, window) fragment
    if windows:
        sla.update(window_figures(lat, sla_ms), window_s=opts.nf_options.get("window"))
    _attach_seconds(timeline, per_second)
    train_n = opts.train_packets if opts.decl.prefix_training else 0
    unique = int(len(np.unique(seq)))
    lost_rows = sum(d.get("lost_rows", 0) for d in decisions.values())
    lost_batches = sum(d.get("lost_batches", 0) for d in decisions.values())
    ref = extra.get("reference", {})
    mirrored = sw.get("events", {}).get("mirror", 0)
    if windows:  # every frame to a replica and taken, every fragment decided once
        zero = (replayer.failed == 0 and switch_in == replayer.sent
                and switch_out == switch_in + mirrored == brick_in and unique == len(seq)
                and lost_batches == 0 and (not ref or ref.get("packets") == len(seq)))
    else:
        zero = (replayer.failed == 0 and switch_out == brick_in and unique == len(seq)
                == replayer.sent and lost_rows == 0)
    live, live_decisions = {}, {}
    if opts.labels is not None and len(seq):
        labels = load_labels(opts.labels, int(seq.max()) + 1)[seq]
        after = seq >= train_n
        if after.any() and 0 < labels[after].sum() < after.sum():
            live = detection_report(score[after], labels[after])
            live_decisions = decision_report(alert[after], labels[after])
    off = extra.get("offline_original", {})
    nat = extra.get("offline_natural", {})
    lag = extra.get("replay_lag") or {}
    summary = {
        "trace": str(opts.trace), "switch": opts.target_why, "nf": opts.nf,
        "nf_options": {k: v for k, v in opts.nf_options.items() if k != "model"},
        "scaling_policy": yes_no(opts.scaling), "nf_hosts": system.nf_host_names,
        "nf_host_cores": {h.name: h.cores for h in opts.topo.nf_hosts},
        **ray_figures(system, timeline),
        "capacity_one_replica_pps": round(cal.replica_pps) if cal else None,
        "live_replica": ("fused" if cal.live_fused else "processes") if cal else None,
        "calibration": (cal.fused if cal.live_fused else cal).line() if cal else None,
        "calibration_bricks": {b.brick: {"cpu_us_per_packet": round(b.cpu_us, 2),
                                         "logic_us_per_packet": round(b.logic_us, 2),
                                         "stages_us_per_packet": {
                                             k: round(v, 2) for k, v in b.stages_us.items()}}
                               for b in cal.bricks} if cal else None,
        "calibration_stages": cal.stage_breakdown() if cal else None,
        **fused_figures(cal),
        "live_bricks_peak": live_brick_costs(extra.get("bricks_cpu") or [], peak),
        "replay_steps_pps": [sg.pps for sg in segs], "peak_offered_pps": peak_pps,
        "peak_offered_capacities": round(peak_pps / cal.replica_pps, 2) if cal else None,
        "replay_seconds": round(sum(r.t_end - r.t_start for r in replayer.results), 1),
        "pacer_scheduling": replayer.results[0].scheduling if replayer.results else None,
        **{f"replay_lag_ms_{k}": lag.get(k) for k in ("p50", "p99", "max")},
        "packets_sent": replayer.sent, "tcpreplay_failed": replayer.failed,
        "switch_in": switch_in, "switch_out": switch_out,
        "mirrored": mirrored, "nf_hosts_received": brick_in,
        "lost_before_switch": replayer.sent - switch_in,
        "lost_switch_to_bricks": switch_out - brick_in, "packets_scored": int(len(seq)),
        "decides_per": "fragment (flow, window)" if windows else "packet",
        "scored_once_each": unique == len(seq), "lost_sent_minus_scored":
            None if windows else int(replayer.sent - unique),
        "lost_in_brick_graphs": lost_batches if windows else lost_rows,
        "zero_loss": zero, "rescored_after_recovery": rescored.get("rescored", 0),
        "rescored_differ": rescored.get("rescored_differ", 0), "alerts": int(alert.sum()),
        "alerts_after_training": int(alert[seq >= train_n].sum()),
        **sla, **core_seconds(timeline), **machine_figures(timeline, os.cpu_count() or 1),
        "max_fe_replicas": max((r["replicas"] for r in timeline), default=0),
        "auc_live": _r(live.get("auc")), "auc_offline_original": _r(off.get("auc")),
        "tpr_0_1pct_live": _r(live.get("tpr@0.1%fpr")),
        "tpr_0_1pct_offline_original": _r(off.get("tpr@0.1%fpr")),
        "tpr_1pct_live": _r(live.get("tpr@1%fpr")),
        "tpr_1pct_offline_original": _r(off.get("tpr@1%fpr")),
        **{f"{k}_live": _r(live_decisions.get(k)) for k in ("tpr", "fpr", "f1")},
        **{f"{k}_offline_original": _r(off.get(f"decisions_{k}")) for k in ("tpr", "fpr", "f1")},
        "offline_original_trace": extra.get("reference_trace"),
        "auc_offline_natural_clock": _r(nat.get("auc")),
        "tpr_1pct_offline_natural_clock": _r(nat.get("tpr@1%fpr")),
        "bit_identical_to_offline": bool(ref.get("bit-identical")) if ref else None,
        "offline_reference_packets": ref.get("packets"),
        "state_moves": last.get("counters", {}).get("moves", 0),
        "state_lost_buckets": last.get("counters", {}).get("state_lost_buckets", 0),
        "checkpoints": checkpoint_figures(last.get("checkpoints")),
        "components_with_exceptions": bad_logs,
        "scaling_events": events,
        "faults": faults,
        "faults_injected": [{k: v for k, v in f.items() if k != "wall"}
                            for f in extra.get("faults_injected") or []],
        "failures": sum(1 for f in faults if f["failure"]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    with open(out / "latency.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "packets", "p50_ms", "p99_ms", "within_sla"])
        w.writeheader()
        w.writerows(per_second)
    plots = _plots(timeline, out, events, sla_ms, summary["machine_cores"], windows,
                   [f for f in faults if f["failure"]])
    (out / "summary.md").write_text(summary_markdown(summary, plots))
    return summary


def attack_span(labels: Path | None, segs: list, t_replay: float, step_s: float
                ) -> tuple[float, float] | None:
    """From the step holding the trace's first attack packet to the replay's end, in
    seconds since the replay began (None without labels or attack)."""
    from lego.metrics import load_labels

    if labels is None or not segs or not step_s:
        return None
    first = np.flatnonzero(load_labels(labels))
    ends = np.cumsum([sg.count for sg in segs])
    if not len(first) or first[0] >= ends[-1]:
        return None
    step = int(np.searchsorted(ends, first[0], side="right"))
    return t_replay + step * step_s, t_replay + len(segs) * step_s


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _attach_seconds(timeline: list[dict], per_second: list[dict]) -> None:
    """Each timeline row gets the p99 latency of its second (for the plot)."""
    by_t = {r["t"]: r["p99_ms"] for r in per_second}
    for row in timeline:
        row["p99_ms"] = by_t.get(int(row["t"]), "")


def live_brick_costs(snapshots: list[tuple[float, dict[str, list]]],
                     window: tuple[float, float] | None
                     ) -> dict[str, dict[str, float]] | None:
    """What the live replicas' bricks cost over ``window`` (the peak step; seconds as
    the timeline's ``t``), from the snapshots of each brick's (role, CPU s, logic CPU
    s, frames in, CPU s by stage): CPU per frame their sources took, summed over the
    graphs whose source took frames then (a standby's idle polling is not a frame's
    cost), of it the NF's logic, and all of it by stage (:mod:`lego.bricks.stages`):
    ``{"fq": {"cpu_us_per_frame", "logic_us_per_frame", "stages_us_per_frame"}}``.
    The bricks add up to one frame's cost to its replica."""
    if not snapshots or window is None:
        return None
    before = [s for t, s in snapshots if t <= window[0]]
    after = [s for t, s in snapshots if t <= window[1]]
    if not before or len(after) <= len(before):
        return None
    a, b = before[-1], after[-1]

    def delta(bid: str, i: int) -> float:
        old = a.get(bid)
        return b[bid][i] - (old[i] if old and old[i] <= b[bid][i] else 0.0)

    port = {bid: parse_name(bid)[1] for bid in b}
    busy = {port[bid] for bid, c in b.items() if c[0] == "source" and delta(bid, 3) > 0}
    frames = sum(delta(bid, 3) for bid, c in b.items() if c[0] == "source" and port[bid] in busy)
    if not frames:
        return None
    out: dict[str, list] = {}
    for bid in b:
        if port[bid] in busy:
            acc = out.setdefault(parse_name(bid)[0], [0.0, 0.0, {}])
            acc[0] += delta(bid, 1)
            acc[1] += delta(bid, 2)
            old = a.get(bid)
            was = old[4] if old and len(old) > 4 and old[1] <= b[bid][1] else {}
            for stage, v in (b[bid][4] if len(b[bid]) > 4 else {}).items():
                acc[2][stage] = acc[2].get(stage, 0.0) + v - was.get(stage, 0.0)
    return {n: {"cpu_us_per_frame": round(1e6 * c / frames, 2),
                "logic_us_per_frame": round(1e6 * lg / frames, 2),
                "stages_us_per_frame": {k: round(1e6 * v / frames, 2) for k, v in st.items()}}
            for n, (c, lg, st) in out.items()}


def checkpoint_figures(stats: dict | None) -> dict | None:
    """The controller's checkpoint counters -> the run's figures (None: none taken)."""
    if not stats or not stats.get("taken"):
        return None
    return {"taken": stats["taken"], "busy": stats["busy"], "failed": stats["failed"],
            "mean_ms": round(stats["ms_sum"] / stats["taken"], 1),
            "max_ms": round(stats["ms_max"], 1), "max_kib": round(stats["bytes_max"] / 1024),
            "max_entries": stats["entries_max"]}


def summary_markdown(summary: dict, plots: list[Path]) -> str:
    """summary.md: the figures a person looks for first, then each event as a sentence."""
    s = summary
    lines = ["# LEGO run summary", ""]
    faults = s.get("faults") or []
    if faults:  # a run that had any says so first
        lines.append(f"- **faults and failures: {s.get('failures', 0)}** "
                     f"({len(faults)} fault events with the recoveries and refusals; "
                     "see Faults below)")
    else:
        lines.append("- faults and failures: none (no brick died, no host or state was "
                     "lost, no command failed)")
    if s["calibration"]:
        lines.append(f"- {s['calibration']}; peak offered {s['peak_offered_pps']:,} pkt/s "
                     f"({s['peak_offered_capacities']}x one replica)")
        if s.get("calibration_bricks"):
            costs = ", ".join(f"{b} {c['cpu_us_per_packet']:.1f} ({c['logic_us_per_packet']:.1f} "
                              "logic)" for b, c in s["calibration_bricks"].items())
            lines.append(f"- the calibration's CPU per packet, brick by brick (µs): {costs}")
        if s.get("calibration_stages"):
            lines.append(f"- the calibration's {s['calibration_stages']}")
        if s.get("calibration_fused"):
            lines.append(f"- {s['calibration_fused']}")
    if s.get("live_bricks_peak"):
        live = s["live_bricks_peak"]
        costs = ", ".join(f"{b} {c['cpu_us_per_frame']:.1f} ({c['logic_us_per_frame']:.1f} "
                          "logic)" for b, c in live.items())
        total = sum(c["cpu_us_per_frame"] for c in live.values())
        lines.append(f"- live at the peak, CPU per frame a replica took, brick by brick (µs): "
                     f"{costs}; {total:.1f} in all")
        stages: dict[str, float] = {}
        for c in live.values():
            for k, v in c.get("stages_us_per_frame", {}).items():
                stages[k] = stages.get(k, 0.0) + v
        if stages:
            lines.append("- live at the peak, by stage, the bricks together (µs per frame): "
                         + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    per_window = s.get("decides_per", "packet") != "packet"
    lines += [
        f"- scaling policy: {s['scaling_policy']}; most feature-extraction replicas: "
        f"{s['max_fe_replicas']}",
        *(_window_lines(s) if per_window else [
            f"- zero loss: {yes_no(s['zero_loss'])} ({s['packets_sent']:,} sent, "
            f"{s['switch_out']:,} frames to the NF hosts ({s['mirrored']:,} mirrors), "
            f"{s['packets_scored']:,} scored, {s['lost_sent_minus_scored']:,} lost"
            + (f", {s['lost_before_switch']:,} of them before the switch's ingress"
               if s.get("lost_before_switch") else "") + ")",
            f"- SLA p99 <= {s['sla_ms']:g} ms (switch ingress to decision): held in "
            f"{_pct(s['seconds_within_sla_fraction_peak'])} of the {s['peak_seconds']} "
            f"seconds at the peak (worst p99 {s['p99_latency_ms_peak']} ms), "
            f"{_pct(s['seconds_within_sla_fraction'])} of all seconds"
            + (f", {_pct(s['seconds_within_sla_fraction_attack'])} of the "
               f"{s['attack_seconds']} seconds of the attack (worst p99 "
               f"{s['p99_latency_ms_attack']} ms)" if s.get("attack_seconds") else "")]),
        f"- core-seconds: {s['core_seconds']} allocated, against "
        f"{s['core_seconds_static_peak']} for a static allocation sized for the peak",
        *([f"- the machine ({s['machine_cores']} cores, shared by the switch, the "
           f"controller, Ray and the NF hosts' quotas): {s['machine_cores_busy_replay']} "
           f"cores busy on average over the replay, "
           f"{s['machine_cores_busy_normal_replay']} at normal priority (the NF hosts' Ray "
           f"nodes and warming bricks run niced); every core busy at normal priority for "
           f"{s['machine_saturated_s']} of its {s['machine_replay_s']} s"]
          if s.get("machine_cores_busy_replay") is not None else []),
        *([f"- Ray: {s['ray_nodes']} NF-host nodes joined in {s['ray_join_s']} s; its "
           f"processes (head, raylets, actors; not the bricks) took at most "
           f"{s['ray_pss_mib_peak']:,} MiB (PSS; their resident sets summed "
           f"{s['ray_rss_mib_peak']:,} MiB)"] if s.get("ray_nodes") else []),
        *([f"- detection (decisions): live TPR {s['tpr_live']}, FPR {s['fpr_live']}, F1 "
           f"{s['f1_live']}; one offline instance on the original trace: TPR "
           f"{s['tpr_offline_original']}, FPR {s['fpr_offline_original']}, F1 "
           f"{s['f1_offline_original']}"] if s.get("tpr_offline_original") is not None
          else []),
        f"- detection after training: live AUC {s['auc_live']}, TPR {s['tpr_0_1pct_live']} at "
        f"0.1 % FPR, {s['tpr_1pct_live']} at 1 % FPR; one offline instance on the original "
        f"trace: AUC {s['auc_offline_original']}, TPR {s['tpr_0_1pct_offline_original']} / "
        f"{s['tpr_1pct_offline_original']}" + (
            f" (the same packets at the generator's constant-rate clock: AUC "
            f"{s['auc_offline_natural_clock']}, TPR {s['tpr_1pct_offline_natural_clock']} at "
            "1 % FPR)" if s.get("auc_offline_natural_clock") is not None else ""),
        *([f"- the replay's timing as the switch stamped it: frames late against the "
           f"trace's clock by {s['replay_lag_ms_p50']} ms (p50), {s['replay_lag_ms_p99']} "
           f"ms (p99), {s['replay_lag_ms_max']} ms at most (the pacer's scheduling: "
           f"{s['pacer_scheduling']})"] if s.get("replay_lag_ms_p99") is not None
          else []),
        f"- scores bit-identical to one offline instance on the switch-stamped stream: "
        f"{yes_no(bool(s['bit_identical_to_offline']))} "
        f"({s['offline_reference_packets'] or 0:,} {'fragments' if per_window else 'packets'})",
        "", "## Scaling events (decided by the controller's policy)", ""]
    lines += [f"- {event_sentence(e)}" for e in s["scaling_events"]] or ["none"]
    lines += ["", "## Faults (deaths, losses, failed commands, refusals, recoveries)", ""]
    lines += [f"- injected {f['t_replay']:.1f} s into the replay: {f['spec']}: {f['result']}"
              for f in s.get("faults_injected") or []]
    cp = s.get("checkpoints")
    if cp and cp["taken"]:
        lines.append(f"- checkpoints of the feature-extraction bricks (kept by the controller, "
                     f"for an exact recovery): {cp['taken']:,} taken, {cp['mean_ms']} ms on "
                     f"average and {cp['max_ms']} ms at most (export and transfer), the "
                     f"largest {cp['max_kib']:,} KiB ({cp['max_entries']:,} entries); "
                     f"{cp['busy']} skipped (a move or a restore under way, or no frame "
                     "taken yet)")
    lines += [f"- {f['sentence']}" for f in faults] or ["- no fault"]
    lines += ["", "## Everything else", ""]
    lines += [f"- {k}: {yes_no(v) if isinstance(v, bool) else v}" for k, v in s.items()
              if k not in ("scaling_events", "faults", "faults_injected")]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots), ""]
    return "\n".join(lines)


def _window_lines(s: dict) -> list[str]:
    """summary.md's loss and SLA lines for an NF that decides per time window."""
    return [
        f"- zero loss: {yes_no(s['zero_loss'])} ({s['packets_sent']:,} sent, "
        f"{s['switch_in']:,} into the switch, {s['switch_out']:,} frames to the NF hosts, "
        f"{s['nf_hosts_received']:,} taken by their replicas; {s['packets_scored']:,} "
        f"fragments of {s.get('window_s')} s windows decided, each once"
        + (f"; lost in the brick graphs: {s['lost_in_brick_graphs']:,}"
           if s.get("lost_in_brick_graphs") else "") + ")",
        f"- SLA <= {s['sla_ms']:g} ms from a window's close at the switch to its last "
        f"decision: held for {_pct(s.get('windows_within_sla_fraction'))} of the "
        f"{s.get('windows_decided', 0)} windows that closed (p50 "
        f"{s.get('window_latency_ms_p50')} ms, p99 {s.get('window_latency_ms_p99')} ms, max "
        f"{s.get('window_latency_ms_max')} ms); the "
        f"{s.get('fragments_in_windows_open_at_the_end') or 0:,} fragments of the windows "
        "the stream ended in were decided at the drain"]


def ray_figures(system, timeline: list[dict]) -> dict:
    """The Ray cluster's start-up and memory over the run (controller mode)."""
    ray = getattr(system, "ray", None)
    if ray is None:
        return {}
    mem = [r for r in timeline if "ray_pss_mib" in r]
    return {"ray_nodes": len(ray.start_s) - 1, "ray_head_s": round(ray.start_s["head"], 1),
            "ray_join_s": round(sum(ray.start_s.values()) - ray.start_s["head"], 1),
            "ray_pss_mib_peak": max((r["ray_pss_mib"] for r in mem), default=0),
            "ray_rss_mib_peak": max((r["ray_rss_mib"] for r in mem), default=0)}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _plots(timeline: list[dict], out: Path, events: list[dict], sla_ms: float,
           cores: int, per_window: bool = False, faults: list[dict] = ()) -> list[Path]:
    """timeline.png: offered load and throughput, p99 latency against the SLA, and
    replicas / cores (``cores``: the machine's, for its busy fraction), on one time
    axis ending when the run's scoring ended; a red line at each fault."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not timeline:
        return []
    busy = max((r["t"] for r in timeline if r["pps_in"] > 0 or r["target_pps"] > 0),
               default=timeline[-1]["t"])
    end = max([busy, *(e["t"] for e in events)]) + 1.0  # the run ends with its last event
    rows = [r for r in timeline if r["t"] <= end]
    t = [r["t"] for r in rows]
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    a1.step(t, [r["target_pps"] for r in rows], where="post", ls="--", label="offered")
    a1.plot(t, [r["pps_in"] for r in rows], label="into the switch")
    a1.plot(t, [r["pps_out"] for r in rows], label="to the NF hosts (with mirrors)")
    a1.set_ylabel("packets/s")
    a1.legend(fontsize=8)
    lat = [(r["t"], r["p99_ms"]) for r in rows if r.get("p99_ms") != ""]
    if lat:
        a2.plot([x for x, _ in lat], [y for _, y in lat], marker="o" if per_window else None,
                label="window close to decision (p99)" if per_window else "p99 latency")
    a2.axhline(sla_ms, color="red", ls=":", label=f"SLA {sla_ms:g} ms")
    a2.set_yscale("log")
    a2.set_ylabel("ms")
    a2.legend(fontsize=8)
    a3.step(t, [r["replicas"] for r in rows], where="post", label="FE replicas (graphs)")
    a3.step(t, [r["cores"] for r in rows], where="post", ls="--", label="cores allocated")
    a3.plot(t, [r["cores_used"] for r in rows], lw=0.8, label="cores used (NF hosts)")
    machine = [r for r in rows if r.get("machine_busy") not in (None, "")]
    if machine:
        a3.plot([r["t"] for r in machine], [r["machine_busy"] * cores for r in machine],
                lw=0.6, color="grey", label=f"cores busy, whole machine ({cores})")
        a3.plot([r["t"] for r in machine], [r["machine_busy_normal"] * cores for r in machine],
                lw=0.6, color="black", label="of them at normal priority")
    for e in events:
        a3.axvline(e["t"], color="grey", lw=0.6, ls=":")
    for i, f in enumerate(faults):  # a marker per fault, on every panel
        for ax in fig.axes:
            ax.axvline(f["t"], color="red", lw=0.8, ls="--",
                       label="fault" if i == 0 and ax is a3 else None)
    a3.set_ylabel("replicas / cores")
    a3.set_xlabel("seconds since the replay began")
    a3.set_ylim(bottom=0)
    a3.legend(fontsize=8)
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
