"""What ``lego run`` reports, as plain data and plain sentences (pure functions).

- :func:`scaling_events`: the controller's scaling events with their state moves,
  as records (``summary.json``'s ``scaling_events``);
- :func:`event_sentence`: one scaling event as one sentence a person reads;
- :func:`sla_figures`: per-second latency rows -> the SLA's figures (overall and
  at the peak step);
- :func:`core_seconds`: cores allocated over the run against a static
  allocation sized for the peak.

Any controller event as plain words (the live dashboard's panel) is the status's
(:func:`lego.topo.status.event_text`).
"""

from __future__ import annotations

import re
from typing import Any

from lego.topo.controller import SCALING

#: the policy's "for 0.5s", written "for 0.5 s" in a sentence
_SECONDS = re.compile(r"for ([0-9.]+)s\b")

SCALE_KINDS = ("scale_out", "scale_in", "scale_up", "scale_down")
RESIZE_KINDS = ("scale_up", "scale_down")
_UTIL = re.compile(r"utilisation (\d+(?:\.\d+)?)")


def scaling_events(events: list[dict[str, Any]], t0: float,
                   scaling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The controller's scaling events with their state moves, as records: time since
    ``t0`` (controller clock), brick, replicas before and after, the utilisation
    and watermarks behind it, buckets and entries moved, packets held, why."""
    sc = {**SCALING, **(scaling or {})}
    rows = []
    for i, e in enumerate(events):
        if e["kind"] not in SCALE_KINDS:
            continue
        to = int(e.get("replicas", 0))
        frm = to - 1 if e["kind"] == "scale_out" else to + 1
        if e["kind"] in RESIZE_KINDS:  # one host's quota: the replicas stay
            frm = to = None
        m = _UTIL.search(e.get("reason", ""))
        row = {"t": round(e["t"] - t0, 2), "event": e["kind"].replace("_", "-"),
               "brick": "feature extraction" if e.get("role") == "keyed" else
               f"{e.get('brick', '?')} (stateless)",
               "port": e.get("port"), "host": e.get("host", ""), "replicas_before": frm,
               "replicas_after": to, "utilisation": float(m.group(1)) if m else None,
               "high": sc["high"], "low": sc["low"], "buckets": 0, "entries": 0, "held": 0,
               "seconds": 0.0, "lost_buckets": 0, "reason": e.get("reason", ""),
               **({"cores_before": e.get("cores_before"), "cores_after": e.get("cores")}
                  if e["kind"] in RESIZE_KINDS else {})}
        if e.get("role") == "keyed" and e["kind"] not in RESIZE_KINDS:
            for f in events[i + 1:]:
                if f["kind"] == "state_moved":
                    row.update(buckets=f.get("buckets", 0), entries=f.get("entries", 0),
                               held=f.get("held", 0), seconds=f.get("seconds", 0.0),
                               lost_buckets=f.get("lost_buckets", 0),
                               boost=f.get("boost", {}))
                    break
                if f["kind"] in ("scale_out", "scale_in") and f.get("role") == "keyed":
                    break
        rows.append(row)
    return rows


def _num(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}".rstrip("0").rstrip(".")


def event_sentence(e: dict[str, Any]) -> str:
    """``12.1 s: feature extraction 1 -> 2 replicas on nf2 (utilisation 0.83 > 0.75 for
    1.0 s); 452 buckets, 27,944 entries moved in 0.25 s, 0 lost``, or for a resize
    ``40.2 s: feature extraction on nf3: CPU quota 0.1 -> 0.2 cores, in place (...)``."""
    where = f" on {e['host']}" if e.get("host") else f" (port {e['port']})" \
        if e.get("port") is not None else ""
    if "cores_after" in e:
        text = (f"{e['t']:.1f} s: {e['brick']}{where}: CPU quota {_num(e['cores_before'])} "
                f"-> {_num(e['cores_after'])} cores, in place")
    else:
        text = (f"{e['t']:.1f} s: {e['brick']} {e['replicas_before']} -> "
                f"{e['replicas_after']} replicas{where}")
    if e.get("reason"):  # the policy writes "for 0.5s"
        text += " (" + _SECONDS.sub(r"for \1 s", e["reason"]) + ")"
    if e.get("buckets"):
        text += (f"; {_count(e['buckets'], 'bucket')}, {_count(e['entries'], 'entry')} "
                 f"moved in {float(e['seconds']):.2f} s, {_count(e.get('held', 0), 'packet')} "
                 f"held, {_count(e.get('lost_buckets', 0), 'bucket')} lost")
        if e.get("boost"):
            text += (" (CPU quota while the move waited on them: " + ", ".join(
                f"{h} {_num(c)} cores" for h, c in sorted(e["boost"].items())) + ")")
    return text


#: the events a run reports as faults and failures (its first lines say how many)
FAULT_KINDS = ("brick_died", "brick_restart", "host_lost", "host_back", "replica_lost",
               "state_lost", "state_recovered", "batches_resent", "command_failed",
               "switch_recover", "switch_resync", "no_capacity")
#: of them, the ones that mean something went wrong (the rest: recovery, limits)
FAILURES = ("brick_died", "host_lost", "replica_lost", "state_lost", "command_failed",
            "switch_recover")


def _fault_text(e: dict[str, Any]) -> str:
    k = e["kind"]
    if k == "brick_died":
        return f"brick {e.get('brick')} on {e.get('host')} died (exit code {e.get('code')})"
    if k == "brick_restart":
        return f"Ray restarted brick {e.get('brick')} on {e.get('host')}"
    if k == "host_lost":
        why = "; ".join(f"{a} {b}" for a, b in e.items() if a not in ("t", "kind", "host"))
        return f"host {e.get('host')} lost" + (f" ({why})" if why else "")
    if k == "host_back":
        return f"host {e.get('host')} answers again"
    if k == "replica_lost":
        return f"replica {e.get('brick')} lost with its host {e.get('host')}"
    if k == "state_lost":
        built = f"; {_num(e['packets'])} packets had built it" if "packets" in e else ""
        return f"the keyed state of port {e.get('port')} lost ({e.get('reason')}{built})"
    if k == "state_recovered" and e.get("from_frame_log"):
        return (f"the keyed state of port {e.get('port')} (lost with host {e.get('host')}) "
                f"rebuilt on port {e.get('to_port')}: its checkpoint "
                f"({_count(e.get('entries', 0), 'entry')}, {e.get('checkpoint_age_s')} s old) "
                f"+ {_count(e.get('frames', 0), 'frame')}"
                f"{' and ' + _count(e['marks'], 'window mark') if e.get('marks') else ''}"
                f" from the switch's frame log, "
                f"{_count(e.get('buckets', 0), 'bucket')} moved, "
                f"{e.get('seconds')} s after the host was lost")
    if k == "state_recovered":
        return (f"the keyed state of port {e.get('port')} rebuilt in {e.get('brick')}: its "
                f"checkpoint ({_count(e.get('entries', 0), 'entry')}, "
                f"{e.get('checkpoint_age_s')} s old) + {_count(e.get('batches', 0), 'batch')} "
                f"({_count(e.get('frames', 0), 'frame')}) replayed from its source's log, "
                f"under way {e.get('seconds')} s after the restart was seen")
    if k == "batches_resent":
        return (f"{_count(e.get('batches', 0), 'batch')} in flight to {e.get('brick')} sent "
                f"again by {e.get('sender')} (from batch {e.get('from_batch')}), "
                f"{e.get('seconds')} s after the restart was seen")
    if k == "command_failed":
        return (f"command {e.get('command')} on {e.get('host')} port {e.get('port')} failed: "
                f"{e.get('error')}")
    if k == "switch_recover":
        return f"the switch stopped answering ({e.get('reason')}); the controller reconnects"
    if k == "switch_resync":
        pushed = ", the pipeline pushed again" if e.get("pipeline_pushed") else ""
        return f"the switch answers again: {_num(e.get('changes', 0))} table writes{pushed}"
    return f"no capacity for {e.get('brick', '?')}: {e.get('reason')}"


def merge_events(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events seen in several status reads (each holds the controller's newest 50),
    once each, in time order."""
    seen: dict[tuple, dict[str, Any]] = {}
    for events in lists:
        for e in events:
            key = (e["t"], e["kind"], e.get("brick"), e.get("port"), e.get("host"),
                   e.get("reason"), e.get("command"))
            seen.setdefault(key, {k: v for k, v in e.items() if k != "what"})
    return sorted(seen.values(), key=lambda e: e["t"])


def fault_events(events: list[dict[str, Any]], t0: float) -> list[dict[str, Any]]:
    """The run's faults, failures and refusals, each with its time since ``t0``
    (controller clock) and a sentence: ``23.1 s: brick fq-2/0 on nf1 died (exit
    code -9)``."""
    return [{"t": round(e["t"] - t0, 2), "kind": e["kind"],
             "failure": e["kind"] in FAILURES,
             "sentence": f"{e['t'] - t0:.1f} s: {_fault_text(e)}",
             **{k: v for k, v in e.items() if k not in ("t", "kind", "what")}}
            for e in events if e["kind"] in FAULT_KINDS]


def _count(n: float, noun: str) -> str:
    """``1 bucket``, ``2 buckets``, ``1 entry``, ``27,944 entries``."""
    n = int(n)
    plural = noun[:-1] + "ies" if noun.endswith("y") else \
        noun + "es" if noun.endswith(("ch", "sh", "s")) else noun + "s"
    return f"{_num(n)} {noun if n == 1 else plural}"


def sla_figures(rows: list[dict[str, Any]], sla_ms: float,
                peak: tuple[float, float] | None,
                attack: tuple[float, float] | None = None) -> dict[str, Any]:
    """The SLA's figures from per-second rows (``t``, ``p99_ms``): every second, the
    seconds inside ``peak`` and those inside ``attack`` (each: start, end, seconds
    since the replay began; a second is inside when its middle is)."""
    def frac(rs: list[dict[str, Any]]) -> float | None:
        return round(sum(r["p99_ms"] <= sla_ms for r in rs) / len(rs), 3) if rs else None

    def inside(span: tuple[float, float] | None) -> list[dict[str, Any]]:
        return [r for r in rows if span and span[0] <= r["t"] + 0.5 <= span[1]]

    at_peak, in_attack = inside(peak), inside(attack)
    return {
        "sla_ms": sla_ms,
        "seconds_within_sla_fraction": frac(rows),
        "seconds_within_sla_fraction_peak": frac(at_peak),
        "p99_latency_ms_peak": max((r["p99_ms"] for r in at_peak), default=None),
        "p99_latency_ms_max": max((r["p99_ms"] for r in rows), default=None),
        "peak_seconds": len(at_peak),
        "seconds_within_sla_fraction_attack": frac(in_attack),
        "p99_latency_ms_attack": max((r["p99_ms"] for r in in_attack), default=None),
        "attack_seconds": len(in_attack),
    }


#: a machine this busy at normal priority (fraction of all its cores) had no CPU to
#: spare: whatever waited for one waited on the others, not on its own quota
SATURATED = 0.95


def machine_busy(prev: tuple[float, float, float], cur: tuple[float, float, float]
                 ) -> dict[str, float | None]:
    """Two readings of :func:`~lego.cpu_quota.machine_cpu_s` -> the fraction of all
    cores busy between them, and busy at normal priority (niced time left out: it
    yields to everything else). None where no time passed."""
    span = cur[2] - prev[2]
    if span <= 0:
        return {"machine_busy": None, "machine_busy_normal": None}
    busy = (cur[0] - prev[0]) / span
    return {"machine_busy": round(busy, 3),
            "machine_busy_normal": round(busy - (cur[1] - prev[1]) / span, 3)}


def machine_figures(timeline: list[dict[str, Any]], cores: int) -> dict[str, float]:
    """Over the replay's rows (``target_pps`` > 0): the machine's cores busy on
    average (all, and at normal priority), and the seconds every core was busy at
    normal priority (a row covers the time since the previous one)."""
    busy = normal = sat = span = 0.0
    for a, b in zip(timeline, timeline[1:], strict=False):
        if not b.get("target_pps") or b.get("machine_busy") in (None, ""):
            continue
        dt = b["t"] - a["t"]
        span += dt
        busy += b["machine_busy"] * dt
        normal += b["machine_busy_normal"] * dt
        sat += dt if b["machine_busy_normal"] >= SATURATED else 0.0
    return {"machine_cores": cores,
            "machine_cores_busy_replay": round(busy / span * cores, 2) if span else None,
            "machine_cores_busy_normal_replay": round(normal / span * cores, 2)
            if span else None,
            "machine_saturated_s": round(sat, 1), "machine_replay_s": round(span, 1)}


def core_seconds(timeline: list[dict[str, Any]]) -> dict[str, float]:
    """Cores allocated (the quota of every NF host owning buckets) integrated over
    the timeline, against the most ever allocated held for the whole time."""
    if len(timeline) < 2:
        return {"core_seconds": 0.0, "core_seconds_static_peak": 0.0}
    used = sum(a["cores"] * (b["t"] - a["t"]) for a, b in zip(timeline, timeline[1:], strict=False))
    span = timeline[-1]["t"] - timeline[0]["t"]
    peak = max(r["cores"] for r in timeline)
    return {"core_seconds": round(used, 2), "core_seconds_static_peak": round(peak * span, 2)}
