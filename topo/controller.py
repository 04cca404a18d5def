"""The real controller in Mininet: its config and its status.

- :func:`controller_config` turns a topology into the dict of ``lego controller
  run --config`` (switch address, the management address for the northbound,
  the NF hosts with their switch port, dataplane interface and core budget, the
  the NF and its options, scaling watermarks), which ``tomli_w`` writes as TOML;
- :func:`dashboard_status` turns ``GetStatus`` (the JSON of ``lego controller
  status --json``) plus the switch's counters into the status shape the
  dashboard, the timeline and the tests read (:mod:`lego.topo.status`).

Both are pure; :class:`~lego.topo.system.LegoSystem` does the I/O.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lego import nfs
from lego.topo.status import event_text
from lego.topo.topology import NFHostSpec, Topology

# Watermarks are busy fractions of an NF host's CPU quota (its cgroup's CPU time
# over what the quota allows, read by its bricks' actors): scale out above 75 % for half
# a second (two load reports; a full second let the ramp's peak step start short of
# a replica), in below 30 %. ULN replicas stay one per graph: under a host quota of a
# fraction of a core a second ULN process on the same host adds no CPU, so the
# unit of scale is a whole graph on another host (the switch splits the traffic), and
# there are at most as many replicas as NF hosts.
SCALING: dict[str, Any] = {
    "high": 0.75, "low": 0.30, "dwell": 0.5, "cooldown": 2.0,
    "period": 0.25, "standby": False, "fe": True, "fe_standby": True, "stateless": False,
    "host_timeout": 0.9, "adopt_grace": 15.0, "resize": True,
}
#: the NF hosts' quotas together may grow to this share of the machine's cores (a
#: host whose load one bucket holds gets a larger quota, within it); the rest is the
#: switch's, the pacer's, the controller's and Ray's
QUOTA_BUDGET_SHARE = 0.5
GRAPH: dict[str, Any] = {"batch": 256, "flush_ms": 20, "hwm": 16, "window": 256, "stateless": 1,
                         "write_scores": True}
#: exact recovery of a dead brick: each FE brick checkpointed every second, each
#: source keeping what it sent since (lego.bricks.recovery)
RECOVERY: dict[str, Any] = {"checkpoint_s": 1.0, "log_mib": 32.0, "output_log_mib": 16.0}
#: the sources' batching delay, as a fraction of the SLA: every flushed batch wakes
#: each of a graph's five processes; at 20 ms a replica under a 0.1-core quota was
#: busy 94 % at 0.4x the capacity it has with full batches (measured), so most of
#: its quota went to wake-ups, not packets
FLUSH_SLA_FRACTION = 1 / 8


def sla_flush_ms(sla_ms: float) -> int:
    """The sources' batching delay for an SLA (pure): :data:`FLUSH_SLA_FRACTION` of
    it, never below :data:`GRAPH`'s."""
    return max(GRAPH["flush_ms"], round(sla_ms * FLUSH_SLA_FRACTION))


def controller_config(topo: Topology, hosts: list[NFHostSpec], *, model: Path, results: Path,
                      token_file: Path, semantics: str = "lego", nf: str | None = None,
                      election_id: int = 10,
                      scaling: dict[str, Any] | None = None,
                      graph: dict[str, Any] | None = None,
                      sla_ms: float = 100.0, ray_address: str = "",
                      brick_dir: Path | None = None,
                      nf_options: dict[str, Any] | None = None,
                      frame_log: str = "") -> dict[str, Any]:
    """The controller's config (pure): ``hosts`` are the NF hosts with a Ray node
    (``ray_address``: the head); the first ``topo.replicas`` of them own buckets at
    the start. Each host's bricks keep their sockets and logs in ``brick_dir``/host;
    their sources flush after :func:`sla_flush_ms` unless ``graph`` says otherwise.
    ``frame_log``: the address of the switch's frame log (a lost host's recovery)."""
    own = sum(float(h.cores) for h in hosts)
    sc = {**SCALING, "max_replicas": len(hosts),
          "quota_budget": round(max(own, QUOTA_BUDGET_SHARE * (os.cpu_count() or 1)), 3),
          **(scaling or {})}
    fe_initial = max(1, min(topo.replicas, len(hosts)))
    decl = nfs.get(nf or nfs.DEFAULT)
    options = decl.pick(**{**(nf_options or {}), "semantics": semantics, "model": str(model)})
    if not decl.splits_exactly(options):
        sc["fe"] = False  # Algorithm 1 finds no exact split: one keyed replica
        fe_initial = 1
    return {
        "switch": {"address": topo.switch.grpc_addr, "device_id": topo.switch.device_id,
                   "election_id": election_id, "traffic_ports": [topo.traffic.port]},
        "northbound": {"bind": topo.management.northbound, "token_file": str(token_file)},
        "nf": {"name": decl.name, **options, "results": str(results),
               "source": "interface", "fe_initial": fe_initial},
        "graph": {**GRAPH, "flush_ms": sla_flush_ms(sla_ms), **(graph or {})},
        "sla": {"latency_ms": float(sla_ms)},
        "scaling": sc,
        "placement": {"mode": "graph"},
        "recovery": {**RECOVERY, **({"frame_log": frame_log, "log_port": topo.frame_log.port}
                                    if frame_log and topo.frame_log else {})},
        "ray": {"address": ray_address, "namespace": "lego",
                **({"workdir": str(brick_dir)} if brick_dir else {})},
        "hosts": [{"name": h.name, "ports": [h.port], "interfaces": [f"{h.name}-eth0"],
                   "cores": float(h.cores)} for h in hosts],
    }


def dashboard_status(ctl: dict[str, Any] | None, switch: dict[str, Any], now: float,
                     mode: str = "controller") -> dict[str, Any]:
    """GetStatus (``ctl``; None while the controller is down) and the switch's
    counters (``{"ports": {port: {"in", "out"}}, "events": {...}}``) -> the
    dashboard's status. Bricks are grouped per node (``fq-2``: every replica)."""
    ctl = ctl or {}
    graphs = {g["port"]: g for g in ctl.get("graphs", [])}
    hosts = {b["id"]: b["host"] for b in ctl.get("bricks", [])}
    nodes: dict[str, list[dict]] = {}
    for b in ctl.get("bricks", []):
        nodes.setdefault(b["id"].partition("/")[0], []).append(b)
    bricks = []
    for node, reps in sorted(nodes.items(), key=lambda kv: (kv[0].split("-")[-1], kv[0])):
        port = int(node.rpartition("-")[2])
        g = graphs.get(port, {})
        active = [r for r in reps if not r.get("standby") and not r.get("retired")]
        use = active or reps
        state = "draining" if g.get("draining") else "standby" if g.get("standby") else \
            "running"
        if reps and not active:
            state = "standby"
        bricks.append({
            "brick": f"{hosts.get(reps[0]['id'], '?')}/{node}", "type": reps[0]["type"],
            "role": reps[0].get("role", ""),
            "host": hosts.get(reps[0]["id"], "?"), "port": port, "replicas": len(active),
            "standby": sum(1 for r in reps if r.get("standby")),
            "utilisation": round(sum(r["utilisation"] for r in use) / len(use), 3),
            "queue_depth": sum(r["queue_depth"] for r in reps),
            "pps": round(sum(r["pps"] for r in reps), 1),
            "packets_in": sum(r["packets_in"] for r in reps),
            "ids": {r["id"]: r["packets_in"] for r in reps},
            "cpu": {r["id"]: [r.get("cpu_s", 0.0), r.get("logic_cpu_s", 0.0), r["packets_in"],
                              r.get("stages_cpu_s", {})]
                    for r in reps}, "state": state})
    sw = dict(switch)
    sw["replica_ports"] = list(ctl.get("switch", {}).get("replica_ports",
                                                         switch.get("replica_ports", [])))
    events = [{**e, "what": event_text(e)} for e in ctl.get("events", [])]
    return {"time": now, "mode": mode if ctl else f"{mode} (not answering)", "switch": sw,
            "bricks": bricks, "alerts": ctl.get("alerts", 0), "scores": ctl.get("scores", 0),
            "taken": ctl.get("taken", 0),
            "events": events, "hosts": ctl.get("hosts", []),
            "counters": ctl.get("counters", {}), "moves": ctl.get("moves", []),
            "graphs": list(graphs.values()), "controller_now": ctl.get("now")}
