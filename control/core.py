"""The controller's pure core: events in, commands out, time passed in as ``now``.

:class:`ControllerCore` keeps the registry (NF hosts, brick replicas, graphs) and
decides; it never sends anything. The I/O edge
(:mod:`lego.control.runtime`) feeds it northbound events and executes the
:class:`Command` records it returns, in order.

The NF is one brick graph per feature-extraction (FE) replica, and an FE replica
is a switch port that owns buckets (DESIGN §6: the FE is split by address owner
at the switch); :mod:`lego.control.graph_specs` builds a port's graph. The core
is three layers: the registry (:mod:`lego.control.registry`), the scaling
decisions over it (:mod:`lego.control.elastic`), and this module's hosts
(joins, heartbeats, deaths, losses) and rounds. The policy as a whole:

- ULN (stateless) scaling: per graph, in-host; a warm standby replica (started,
  not routed) makes a scale-out a routing change; scale-in retires the last one
  (it gets an end marker, finishes its queue, ends). On a full host,
  ``[placement].mode``: ``graph`` starts a whole graph elsewhere (FE scale-out);
  ``brick`` starts one ULN replica on another host, over tcp both ways
  (:meth:`~lego.control.elastic.ElasticDecisions._uln_remote`).
- FE scaling: a graph on a free port (its own host first, then others), then the
  switch gives it buckets with the state-move protocol (the I/O's hooks). With
  ``[scaling].fe_standby`` one graph is kept warm on a free port, started and
  owning no buckets: a scale-out is then the switch write and the state move
  (about 0.1 s, against seconds to start five brick processes), and a new
  standby is started behind it. Scale-in moves every bucket of the least loaded
  port away, then drains its graph.
- Rebalance: every ``[scaling].rebalance_s`` the FE replicas' loads over the
  last per-bucket load window (:meth:`ControllerCore.on_bucket_loads`, fed by
  the I/O) are compared; when the busiest is above ``(1 + rebalance_tolerance)``
  x the mean, a ``switch_rebalance`` moves buckets (with their state). Never
  while a switch command is under way (issued, and not yet reported done by
  :meth:`ControllerCore.on_switch_done`), never on a window that began before
  the last move ended, and not within ``cooldown`` of it (no flapping).
- Faults: a dead brick is restarted in place (by Ray) and its upstream re-routed to
  it; a host whose Ray node died (or silent for ``host_timeout``) is lost: its
  ports' buckets go to the live ports without state (the loss is counted and
  reported).
"""

from __future__ import annotations

import logging
from typing import Any

from lego.control.config import Config
from lego.control.elastic import ElasticDecisions
from lego.control.profile import update_cost
from lego.control.registry import (
    BrickRec,
    Command,
    GraphRec,
    HostRec,
    brick_name,
    parse_name,
)

log = logging.getLogger(__name__)


class ControllerCore(ElasticDecisions):
    """Hosts followed, faults handled, rounds run; scaling is
    :class:`~lego.control.elastic.ElasticDecisions`', the registry
    :class:`~lego.control.registry.Registry`'s."""

    def __init__(self, cfg: Config, costs: dict[str, float] | None = None) -> None:
        """``costs``: initial per-batch cost (ms) per role, from ``lego profile``."""
        super().__init__(cfg, costs)
        self.switch: dict[str, Any] = {}
        self.pending: set[int] = set()  # ports to start a graph on once their host joins
        self.heard_until: float | None = None  # see _check_hosts

    # ------------------------------------------------------------ northbound events

    def on_host_joined(self, now: float, host: str, address: str, workdir: str, cores: float,
                    incarnation: str, bricks: list[dict]) -> list[Command]:
        """A host joined (its Ray node appeared; again after a restart: a new
        ``incarnation``) with the bricks found running on it: the registry follows."""
        if host not in {h.name for h in self.cfg.hosts}:
            self.event(now, "host_refused", host=host, reason="not in the config")
            return []
        old = self.hosts.get(host)
        self.hosts[host] = HostRec(host, address, workdir, cores, incarnation, now)
        if old is not None and old.incarnation != incarnation:
            for name in [n for n, b in self.bricks.items() if b.host == host]:
                del self.bricks[name]  # a new node: what the old one ran is gone
        for b in bricks:
            role, port, serial = parse_name(b["id"])
            if b["id"] in self.bricks or role not in self.chain.nodes:
                continue
            spec = b["spec"]
            self.bricks[b["id"]] = BrickRec(b["id"], host, port, role, spec, last_seen=now)
            g = self.graphs.get(port)
            if g is None:
                g = self.graphs[port] = GraphRec(port, host)
            if role != self.chain.stateless:  # may run on another host (brick placement)
                g.host = host
            if role == self.chain.keyed:
                g.base = int(spec["options"].get("port_base", 0))
            if role == self.chain.stateless:
                g.next_uln = max(g.next_uln, serial + 1)
        for g in self.graphs.values():  # standby = a ULN its fm does not route to
            fm = self.bricks.get(brick_name(self.chain.router, g.port))
            if fm is None:
                continue
            routed = set(fm.spec["outlets"][0]["addresses"]) if fm.spec["outlets"] else set()
            for b in self.graph_bricks(g.port, self.chain.stateless):
                b.standby = b.spec["inlet"] not in routed
        self.event(now, "host_joined", host=host, bricks=len(bricks),
                   again=old is not None)
        return []

    def on_heartbeat(self, now: float, host: str, incarnation: str,
                     loads: list[dict], cpu: tuple[float, float] | None = None) -> bool:
        """``cpu``: (host's clock, CPU seconds its quota group used), when its
        cores are an enforced quota: the host's utilisation is the CPU it used
        over what the quota allowed since the last heartbeat."""
        a = self.hosts.get(host)
        if a is None or a.incarnation != incarnation:
            return False
        a.last_seen = now
        if cpu is not None:
            if a.cpu is not None and cpu[0] > a.cpu[0]:
                a.util = max(0.0, (cpu[1] - a.cpu[1]) / ((cpu[0] - a.cpu[0]) * a.cores))
            a.cpu, a.quota = cpu, True
        if not a.alive:
            a.alive = True
            self.event(now, "host_back", host=host)
        for rep in loads:
            b = self.bricks.get(rep["brick"])
            if b is None:
                continue
            prev = b.load
            if prev and rep["now"] > prev.get("now", 0):
                dt = rep["now"] - prev["now"]
                b.util = min(1.0, max(0.0, (rep["busy_s"] - prev["busy_s"]) / dt))
                b.depth_growth = (rep["queue_depth"] - prev.get("queue_depth", 0)) / dt
            if not b.standby and rep.get("batch_latency_ms", 0.0) > 0 and \
                    rep["now"] > prev.get("now", 0):
                update_cost(self.costs, b.role, rep["batch_latency_ms"])
            b.load = rep
            b.last_seen = now
        return True

    def on_death(self, now: float, host: str, brick: str, code: int) -> list[Command]:
        """A brick Ray restarted. A fused graph's process (``[graph].fuse``) dies as
        one, told as its source's death: every member restarts empty."""
        b = self.bricks.get(brick)
        self.event(now, "brick_died", host=host, brick=brick, code=code)
        if b is None or b.retired:
            return []
        fused = self.cfg.graph["fuse"]
        died = self.graph_bricks(b.port) if fused else [b]
        for m in died:
            self._retire_counts(m)  # its successor counts from 0
        g = self.graphs.get(b.port)
        a = self.hosts.get(host)
        if g is None or g.draining or a is None or not a.alive:
            return []
        cmds = [Command("start", host, b.port, {"specs": [b.spec]})]
        if b.role == self.chain.source:
            cmds.append(Command("go", host, b.port, {"brick": brick}))
        recover = self.cfg.recovers and not fused
        keyed = next((m for m in died if m.role == self.chain.keyed), None)
        if keyed is not None and not recover:
            self.event(now, "state_lost", port=b.port, brick=keyed.id,
                       packets=keyed.load.get("packets_in", 0),
                       reason="its graph's process died (fused: no log to replay)" if fused
                       else "keyed brick died")
        for up in self.bricks.values():  # re-route its upstream to the new process
            if up.host != host or not b.spec.get("inlet"):
                continue
            for o in up.spec["outlets"]:
                if b.spec["inlet"] in o["addresses"]:
                    cmds.append(Command("control", host, b.port, {
                        "brick": up.id, "cmd": {"op": "route", "target": o["target"],
                                                "addresses": o["addresses"]}}))
        self.counters["bricks_restarted"] += 1
        self.event(now, "brick_restart", host=host, brick=brick)
        if recover:  # after the re-route: the successor is where its upstream sends
            cmds += self._recovery(now, host, b)
        return cmds

    def _recovery(self, now: float, host: str, b: BrickRec) -> list[Command]:
        """What rebuilds a dead brick's part of the stream (lego.bricks.recovery): a
        keyed brick's state from its checkpoint and its source's log; the batches in
        flight to a worker after the keyed brick, from the keyed brick's output log."""
        c = self.chain
        names = {role: brick_name(getattr(c, role), b.port)
                 for role in ("source", "keyed", "sink")}
        if b.role == c.keyed:
            return [Command("recover", host, b.port, {"brick": b.id, "source": names["source"],
                                                      "sink": names["sink"], "died": now})]
        if b.role in (c.source, c.sink):
            return []
        return [Command("resend", host, b.port, {"brick": b.id, "keyed": names["keyed"],
                                                 "sink": names["sink"], "died": now})]

    # ------------------------------------------------------------ rounds

    def start(self, now: float, owned_ports: list[int]) -> list[Command]:
        """After adoption: a graph for every port the switch (or the config) gives
        buckets to and no host reported running."""
        cmds = []
        ports = owned_ports or [p for _, p in self.free_ports()][:self.cfg.nf["fe_initial"]]
        for port in ports:
            if port in self.graphs:
                continue
            host = self.cfg.host_of_port(port).name
            if host in self.hosts and self.hosts[host].alive:
                cmds += self._add_graph(now, host, port, base=-1)
            else:  # its host has not joined yet: start it when it does
                self.pending.add(port)
                self.event(now, "graph_pending", port=port, host=host)
        return cmds + self._keep_fe_standby(now, prefer=self.cfg.host_of_port(ports[0]).name
                                            if ports else None)

    def mark_standby(self, now: float, owned_ports: list[int]) -> None:
        """After a controller restart: a graph a host runs on a port that owns no
        buckets on the switch is a warm FE standby (kept if the config wants one)."""
        if not owned_ports:
            return
        for g in self.graphs.values():
            g.standby = g.port not in owned_ports and not g.draining
            if g.standby:
                self.event(now, "fe_standby_adopted", port=g.port, host=g.host)

    def tick(self, now: float) -> list[Command]:
        cmds: list[Command] = []
        cmds += self._check_hosts(now)
        cmds += self._start_pending(now)
        cmds += self._forget_drained(now)
        self._update_deadlines()
        if self.cfg.scaling["stateless"]:
            for g in self.live_graphs():
                cmds += self._scale_uln(now, g)
        if self.cfg.scaling["fe"]:
            cmds += self._scale_fe(now)
        cmds += self._resize(now)
        switch = sum(1 for c in cmds if c.kind.startswith("switch_"))
        self.switch_busy += switch
        if not switch:
            cmds += self._rebalance(now)
        return cmds

    # ------------------------------------------------------------ hosts

    def _check_hosts(self, now: float) -> list[Command]:
        """Hosts unheard for ``host_timeout``, counted up to ``heard_until`` (the
        start of the I/O's last completed round of reads) when the I/O sets it: a
        stalled controller is no silence of the hosts."""
        cmds = []
        until = now if self.heard_until is None else self.heard_until
        for a in list(self.hosts.values()):
            if a.alive and until - a.last_seen > self.cfg.scaling["host_timeout"]:
                cmds += self.on_host_lost(now, a.host, silent_s=round(until - a.last_seen, 3))
        return cmds

    def on_host_lost(self, now: float, host: str, **why: Any) -> list[Command]:
        """The host is gone (its Ray node dead, or silent): its buckets go to live
        ports, its keyed state is lost (counted)."""
        a = self.hosts.get(host)
        if a is None or not a.alive:
            return []
        a.alive = False
        self.counters["hosts_lost"] += 1
        self.event(now, "host_lost", host=host, **why)
        return self._reassign_host(now, host)

    def _reassign_host(self, now: float, host: str) -> list[Command]:
        """The host is gone: its ports' buckets go to live ports. With the switch's
        frame log, each port's state is rebuilt on the warm standby (or a new graph)
        from its last checkpoint and the log (``recover_port``); else it is lost."""
        cmds = []
        lost = [g for g in self.graphs.values() if g.host == host and not g.draining
                and not g.standby]
        for g in lost:
            g.draining = True
            recover = self._recover_port(now, g) if self.cfg.recovers_hosts else []
            if recover:
                cmds += recover
                continue
            if not self.live_graphs():
                taken = self._successor(now, g)
                if taken is None:
                    self.event(now, "no_capacity",
                               reason=f"no live port for {g.port}'s buckets")
                    continue
                (h, p), start = taken
                cmds += start + [Command("switch_scale_out", h, p, {"transfer": False})]
            cmds.append(Command("switch_scale_in", host, g.port, {"transfer": False}))
            fq = self.bricks.get(brick_name(self.chain.keyed, g.port))
            self.event(now, "state_lost", port=g.port, host=host, reason="host lost",
                       packets=(fq.load.get("packets_in", 0) if fq else 0))
        cmds += self._lose_remote_ulns(now, host)
        for name in [n for n, b in self.bricks.items() if b.host == host]:
            del self.bricks[name]
        for g in [g for g in self.graphs.values() if g.host == host]:
            self.graphs.pop(g.port, None)
        return cmds + self._keep_fe_standby(now)

    def _successor(self, now: float, g) -> tuple[tuple[str, int], list[Command]] | None:
        """Where lost port ``g``'s buckets go when no live port takes them: the warm
        standby, else a new graph on a free port (its start commands, to come
        first); None: nowhere."""
        spare = [s for s in self.standby_graphs() if s.host != g.host]
        if spare:
            spare[0].standby = False
            return (spare[0].host, spare[0].port), []
        free = [(h, p) for h, p in self.free_ports() if h != g.host]
        if not free:
            return None
        h, p = free[0]
        return (h, p), self._add_graph(now, h, p, base=-1)

    def _recover_port(self, now: float, g) -> list[Command]:
        """Lost port ``g``'s state rebuilt on its successor (:meth:`_successor`, its
        start first); none: [] (its state is lost)."""
        taken = self._successor(now, g)
        if taken is None:
            return []
        (h, p), cmds = taken
        c = self.chain
        src = self.bricks.get(brick_name(c.source, g.port))
        sink = self.bricks.get(brick_name(c.sink, g.port))
        written = sink.load.get("extra", {}).get("next_batch") if sink else None
        if sink is not None:
            self._retire_counts(sink)  # what it wrote stays written
        return cmds + [Command("recover_port", h, p, {
            "lost_port": g.port, "lost_host": g.host, "died": now,
            "keyed": brick_name(c.keyed, p), "source": brick_name(c.source, p),
            # the dead port's frames counted once: up to its checkpoint, then the log's
            "taken": src.load.get("packets_in", 0) if src else 0,
            "written_before": written})]

    def _lose_remote_ulns(self, now: float, host: str) -> list[Command]:
        """ULN replicas on lost ``host`` of graphs on live hosts (brick placement):
        their mapping brick stops routing to them and their decision brick counts
        them as ended (what was queued there is lost, and counted by the decision)."""
        cmds = []
        for b in [b for b in self.bricks.values() if b.host == host and not b.retired
                  and b.role == self.chain.stateless]:
            g = self.graphs.get(b.port)
            fm = self.bricks.get(brick_name(self.chain.router, b.port))
            if g is None or g.host == host or fm is None or not fm.spec["outlets"]:
                continue
            b.retired = True
            out = fm.spec["outlets"][0]
            out["addresses"] = [a for a in out["addresses"] if a != b.spec["inlet"]]
            cmds += [Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                         "op": "route", "target": out["target"],
                         "addresses": out["addresses"]}}),
                     Command("control", g.host, g.port, {
                         "brick": brick_name(self.chain.sink, g.port),
                         "cmd": {"op": "upstream_dead", "brick": b.id}})]
            self.event(now, "replica_lost", brick=b.id, host=host, port=g.port)
        return cmds

    def _start_pending(self, now: float) -> list[Command]:
        """Graphs the switch plan gives buckets to whose host joined after the start."""
        cmds = []
        for port in sorted(self.pending):
            host = self.cfg.host_of_port(port).name
            if port in self.graphs:
                self.pending.discard(port)
            elif host in self.hosts and self.hosts[host].alive:
                self.pending.discard(port)
                cmds += self._add_graph(now, host, port, base=-1)
        if cmds:
            cmds += self._keep_fe_standby(now, prefer=cmds[0].host)
        return cmds

    def _forget_drained(self, now: float) -> list[Command]:
        for g in [g for g in self.graphs.values() if g.draining]:
            bricks = self.graph_bricks(g.port)
            if all(now - b.last_seen > 1.0 or b.load.get("state") in ("done", "exited")
                   for b in bricks):  # (exited: told to, once its next hops were done)
                taken = 0
                for b in bricks:  # what it took, scored and alerted stays in the totals
                    taken += self._retire_counts(b)
                    del self.bricks[b.id]
                del self.graphs[g.port]
                self.event(now, "graph_gone", port=g.port, host=g.host, taken=taken)
        return []

    def _retire_counts(self, b) -> int:
        """Move what ``b`` last reported (a source's intake, a decision's scores and
        alerts) from its load into the retired totals: its graph drained, or it died
        and its successor counts from 0. Returns the frames it took."""
        if b.role == self.chain.source:
            taken = b.load.pop("packets_in", 0)
            self.counters["retired_taken"] += taken
            return taken
        if b.role == self.chain.sink:
            extra = b.load.pop("extra", {})
            self.counters["retired_scores"] += extra.get("scores", 0)
            self.counters["retired_alerts"] += extra.get("alerts", 0)
        return 0

    # ------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        replicas: dict[str, int] = {}
        for b in self.bricks.values():
            if not b.standby and not b.retired:
                replicas[f"{b.role}-{b.port}"] = replicas.get(f"{b.role}-{b.port}", 0) + 1
        c = self.chain
        decs = [b.load.get("extra", {}) for b in self.bricks.values() if b.role == c.sink]
        taken = sum(b.load.get("packets_in", 0) for b in self.bricks.values()
                    if b.role == c.source)
        return {
            "now": now,
            "hosts": [{"host": a.host, "address": a.address, "alive": a.alive,
                        "cores": a.cores, "silent_s": round(now - a.last_seen, 3),
                        "quota": a.quota, "util": round(a.util, 4),
                        "cpu_s": round(a.cpu[1], 4) if a.cpu else None}
                       for a in self.hosts.values()],
            "graphs": [{"port": g.port, "host": g.host, "draining": g.draining,
                        "standby": g.standby}
                       for g in self.graphs.values()],
            "bricks": [{"id": b.id, "type": b.spec.get("type"), "host": b.host,
                        "role": c.role_of(b.role),
                        "replicas": replicas.get(f"{b.role}-{b.port}", 0),
                        "standby": b.standby, "retired": b.retired,
                        "utilisation": round(b.util, 4),
                        "queue_depth": b.load.get("queue_depth", 0),
                        "pps": round(b.load.get("pps", 0.0), 1),
                        "packets_in": b.load.get("packets_in", 0),
                        "cpu_s": round(b.load.get("cpu_s", 0.0), 4),
                        "logic_cpu_s": round(b.load.get("logic_cpu_s", 0.0), 4),
                        "stages_cpu_s": b.load.get("stages_cpu_s", {})}
                       for b in sorted(self.bricks.values(), key=lambda b: b.id)],
            "switch": self.switch,
            "alerts": self.counters["retired_alerts"] + sum(d.get("alerts", 0) for d in decs),
            "scores": self.counters["retired_scores"] + sum(d.get("scores", 0) for d in decs),
            "taken": self.counters["retired_taken"] + taken,  # frames the sources read
            "deadlines_ms": {k: round(v * 1e3, 3) for k, v in self.deadlines.items()},
            "costs_ms": {k: round(v, 4) for k, v in self.costs.items()},
            "counters": dict(self.counters),
            "events": self.events[-50:],
        }
