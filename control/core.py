"""The controller's pure core: events in, commands out, time passed in as ``now``.

:class:`ControllerCore` keeps the registry (NF hosts, brick replicas, graphs) and
decides; it never sends anything. The I/O edge
(:mod:`lego.control.runtime`) feeds it northbound events and executes the
:class:`Command` records it returns, in order.

The NF is one brick graph per feature-extraction (FE) replica, and an FE replica
is a switch port that owns buckets (DESIGN §6: the FE is split by address owner
at the switch). The graph of port ``p`` on its host:

    src-p (the port's frames) -> fq-p (FE) -> fm-p -> uln-p (x R) -> dec-p

- ULN (stateless) scaling: per graph, in-host; a warm standby replica (started,
  not routed) makes a scale-out a routing change; scale-in retires the last one
  (it gets an end marker, finishes its queue, ends). On a full host,
  ``[placement].mode``: ``graph`` starts a whole graph elsewhere (FE scale-out);
  ``brick`` starts one ULN replica on another host, over tcp both ways
  (:meth:`ControllerCore._uln_remote`).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lego.control.config import Config, HostConfig
from lego.control.policy_placement import Host, place_replica
from lego.control.policy_scaling import Action, ScalingConfig, ScalingPolicy, brick_deadlines
from lego.control.profile import update_cost
from lego.errors import ConfigError

log = logging.getLogger(__name__)

ROLES = ("src", "fq", "fm", "uln", "dec")
EVENTS_KEPT = 200


@dataclass(frozen=True)
class Command:
    """One thing for the I/O edge to do. ``kind``: start_graph | start | control |
    go | switch_scale_out | switch_scale_in | switch_rebalance | drain | event."""

    kind: str
    host: str = ""
    port: int = -1
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostRec:
    host: str
    address: str
    workdir: str
    cores: float
    incarnation: str
    last_seen: float
    alive: bool = True
    quota: bool = False  # ``cores`` is an enforced CPU quota: ``util`` is real
    util: float = 0.0  # CPU used / quota over the last heartbeat interval
    cpu: tuple[float, float] | None = None  # (host's clock, CPU seconds) last reported


@dataclass
class BrickRec:
    id: str
    host: str
    port: int
    role: str
    spec: dict[str, Any]
    load: dict[str, Any] = field(default_factory=dict)
    util: float = 0.0
    depth_growth: float = 0.0
    last_seen: float = 0.0
    standby: bool = False
    retired: bool = False


@dataclass
class GraphRec:
    port: int
    host: str
    base: int = 0  # the port's out-packet counter when its source started
    draining: bool = False
    next_uln: int = 0
    standby: bool = False  # started, owns no buckets: the next FE scale-out's target


#: first tcp port of ``brick`` placement (below Linux's ephemeral range, 32768 on)
TCP_BASE = 24000


def tcp_port(port: int, serial: int) -> int:
    """The tcp port of graph ``port``'s decision brick (serial 0) or of its ULN
    replica ``serial`` placed on another host: 64 per graph port."""
    return TCP_BASE + 64 * (port % 128) + (0 if serial == 0 else 1 + (serial - 1) % 63)


def host_ip(address: str) -> str:
    """The host part of a management address ``HOST:PORT`` (or the bare address)."""
    return address.rpartition(":")[0] or address


def brick_name(role: str, port: int, serial: int = 0) -> str:
    return f"{role}-{port}/{serial}"


def parse_name(name: str) -> tuple[str, int, int]:
    node, _, serial = name.partition("/")
    role, _, port = node.partition("-")
    return role, int(port), int(serial or 0)


class ControllerCore:
    def __init__(self, cfg: Config, costs: dict[str, float] | None = None) -> None:
        """``costs``: initial per-batch cost (ms) per role, from ``lego profile``."""
        self.cfg = cfg
        sc = cfg.scaling
        self.policy = ScalingPolicy(ScalingConfig(
            high=sc["high"], low=sc["low"], dwell=sc["dwell"], cooldown=sc["cooldown"],
            max_replicas=sc["max_replicas"]))
        self.hosts: dict[str, HostRec] = {}
        self.bricks: dict[str, BrickRec] = {}
        self.graphs: dict[int, GraphRec] = {}
        self.events: list[dict[str, Any]] = []
        self.deadlines: dict[str, float] = {}
        self.costs: dict[str, float] = dict(costs or {})
        self.counters: dict[str, Any] = {"state_lost_buckets": 0, "bricks_restarted": 0,
                                         "hosts_lost": 0, "moves": 0,
                                         "retired_scores": 0, "retired_alerts": 0}
        self.switch: dict[str, Any] = {}
        self.pending: set[int] = set()  # ports to start a graph on once their host joins
        self.heard_until: float | None = None  # see _check_hosts
        # rebalance: the last load window (start, end, load per replica port), switch
        # commands issued and not yet done, when the last one ended, the next check
        self.bucket_window: tuple[float, float, dict[int, float]] | None = None
        self.switch_busy = 0
        self.last_move_t: float | None = None
        self.next_rebalance = 0.0
        self.window_used = float("-inf")

    # ------------------------------------------------------------ helpers

    def event(self, now: float, what: str, **detail: Any) -> None:
        self.events.append({**detail, "t": now, "kind": what})
        del self.events[:-EVENTS_KEPT]
        log.info("event %s %s", what, detail)

    def host_cfg(self, host: str) -> HostConfig:
        return next(h for h in self.cfg.hosts if h.name == host)

    def live_graphs(self) -> list[GraphRec]:
        """Graphs owning buckets (or about to) on live hosts: not draining, no standby."""
        return [g for g in self.graphs.values() if not g.draining and not g.standby
                and self.hosts.get(g.host) is not None and self.hosts[g.host].alive]

    def standby_graphs(self, prefer: str | None = None) -> list[GraphRec]:
        """Warm FE standby graphs on live hosts, ``prefer``'s host first."""
        out = [g for g in self.graphs.values() if g.standby and not g.draining
               and self.hosts.get(g.host) is not None and self.hosts[g.host].alive]
        return sorted(out, key=lambda g: (g.host != prefer, g.port))

    def graph_bricks(self, port: int, role: str | None = None) -> list[BrickRec]:
        return [b for b in self.bricks.values() if b.port == port
                and (role is None or b.role == role)]

    def free_ports(self, prefer: str | None = None) -> list[tuple[str, int]]:
        """(host, port) without a graph, on live hosts; ``prefer``'s first."""
        out = []
        for h in self.cfg.hosts:
            a = self.hosts.get(h.name)
            if a is None or not a.alive:
                continue
            out += [(h.name, p) for p in h.ports if p not in self.graphs]
        return sorted(out, key=lambda hp: (hp[0] != prefer, hp[1]))

    # ------------------------------------------------------------ specs

    def graph_specs(self, port: int, host: str, base: int, uln: int, standby: int) -> list[dict]:
        """Every brick of port ``port``'s graph (``uln`` routed ULN replicas and
        ``standby`` warm ones), as BrickSpec dicts."""
        a = self.hosts[host]
        w = Path(a.workdir)
        cfg, g = self.cfg, self.cfg.graph

        def addr(role: str, serial: int, ctl: bool = False) -> str:
            suffix = "-ctl" if ctl else ""
            return f"ipc://{w / f'{role}-{port}-{serial}{suffix}.sock'}"

        common = {"semantics": cfg.nf["semantics"], "model": cfg.nf["model"]}
        if cfg.nf["source"] == "feed":
            src_type, src_opts = "frame_feed", {"feed": f"ipc://{w / f'feed-{port}.sock'}"}
        else:
            src_type, src_opts = "packet_batching", {"interface": cfg.interface_of(port)}
        src_opts.update(batch=g["batch"], flush_ms=g["flush_ms"])
        routed = list(range(uln))
        specs = []

        def spec(role: str, type_: str, serial: int, inlet: bool, upstream: int,
                 outlets: list[tuple[str, list[int]]], options: dict) -> dict:
            return {"node": f"{role}-{port}", "type": type_, "serial": serial,
                    "control": addr(role, serial, True), "report": "",  # its actor's
                    "inlet": addr(role, serial) if inlet else None, "upstream": upstream,
                    "outlets": [{"target": f"{t}-{port}", "policy": "round_robin",
                                 "addresses": [addr(t, s) for s in ss]} for t, ss in outlets],
                    "hwm": g["hwm"], "overflow": "block", "options": options, "cpus": None}

        specs.append(spec("src", src_type, 0, False, 0, [("fq", [0])], src_opts))
        specs.append(spec("fq", "feature_quantization", 0, True, 1, [("fm", [0])],
                          {**common, "port_base": base}))
        specs.append(spec("fm", "feature_mapping", 0, True, 1, [("uln", routed)], common))
        for s in range(uln + standby):
            specs.append(spec("uln", "uln", s, True, 1, [("dec", [0])], common))
        out = str(Path(cfg.nf["results"]) / f"port-{port}")
        specs.append(spec("dec", "decision", 0, True, uln, [],
                          {**common, "out": out, "window": g["window"],
                           "write_scores": g["write_scores"]}))
        return specs

    def _add_graph(self, now: float, host: str, port: int, base: int,
                   fe_standby: bool = False) -> list[Command]:
        standby = 1 if self.cfg.scaling["standby"] else 0
        uln = self.cfg.graph["uln"]
        specs = self.graph_specs(port, host, base, uln, standby)
        self.graphs[port] = GraphRec(port, host, base, next_uln=uln + standby,
                                     standby=fe_standby)
        for s in specs:
            name = f"{s['node']}/{s['serial']}"
            self.bricks[name] = BrickRec(name, host, port, s["node"].split("-")[0], s,
                                         last_seen=now,
                                         standby=s["type"] == "uln" and s["serial"] >= uln)
        self.event(now, "graph_start", host=host, port=port, uln=uln, standby=standby,
                   fe_standby=fe_standby)
        return [Command("start_graph", host, port, {"specs": specs, "fe_standby": fe_standby})]

    def _keep_fe_standby(self, now: float, prefer: str | None = None) -> list[Command]:
        """Start a warm FE standby graph on a free port unless one exists (or FE
        scaling or the standby is off, or no host has a free port and the cores)."""
        sc = self.cfg.scaling
        if not (sc["fe"] and sc["fe_standby"]) or self.standby_graphs():
            return []
        for host, port in self.free_ports(prefer=prefer):
            if self._fits_graph(host):
                return self._add_graph(now, host, port, base=-1, fe_standby=True)
        return []

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
            if b["id"] in self.bricks or role not in ROLES:
                continue
            spec = b["spec"]
            self.bricks[b["id"]] = BrickRec(b["id"], host, port, role, spec, last_seen=now)
            g = self.graphs.get(port)
            if g is None:
                g = self.graphs[port] = GraphRec(port, host)
            if role != "uln":  # a ULN may run on another host than its graph (brick mode)
                g.host = host
            if role == "fq":
                g.base = int(spec["options"].get("port_base", 0))
            if role == "uln":
                g.next_uln = max(g.next_uln, serial + 1)
        for g in self.graphs.values():  # standby = a ULN its fm does not route to
            fm = self.bricks.get(brick_name("fm", g.port))
            if fm is None:
                continue
            routed = set(fm.spec["outlets"][0]["addresses"]) if fm.spec["outlets"] else set()
            for b in self.graph_bricks(g.port, "uln"):
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
        b = self.bricks.get(brick)
        self.event(now, "brick_died", host=host, brick=brick, code=code)
        if b is None or b.retired:
            return []
        g = self.graphs.get(b.port)
        a = self.hosts.get(host)
        if g is None or g.draining or a is None or not a.alive:
            return []
        cmds = [Command("start", host, b.port, {"specs": [b.spec]})]
        if b.role == "src":
            cmds.append(Command("go", host, b.port, {"brick": brick}))
        if b.role == "fq":
            self.event(now, "state_lost", port=b.port, brick=brick,
                       packets=b.load.get("packets_in", 0), reason="feature brick died")
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
        return cmds

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
        if self.cfg.scaling["uln"]:
            for g in self.live_graphs():
                cmds += self._scale_uln(now, g)
        if self.cfg.scaling["fe"]:
            cmds += self._scale_fe(now)
        switch = sum(1 for c in cmds if c.kind.startswith("switch_"))
        self.switch_busy += switch
        if not switch:
            cmds += self._rebalance(now)
        return cmds

    # ------------------------------------------------------------ rebalance

    def on_bucket_loads(self, start: float, end: float, loads: dict[int, float]) -> None:
        """The FE replicas' loads (packets, mirrors weighted) over [start, end], by
        switch port, under the assignment the switch held then."""
        self.bucket_window = (start, end, {int(p): float(v) for p, v in loads.items()})

    def on_switch_done(self, now: float, kind: str, moved: int = 0) -> None:
        """The I/O finished (or failed) a switch command: the cooldown starts now."""
        self.switch_busy = max(0, self.switch_busy - 1)
        self.last_move_t = now

    def _rebalance(self, now: float) -> list[Command]:
        sc = self.cfg.scaling
        if sc["rebalance_s"] <= 0 or self.switch_busy or now < self.next_rebalance \
                or self.bucket_window is None:
            return []
        start, end, loads = self.bucket_window
        if end <= self.window_used:
            return []  # this window was judged already
        if self.last_move_t is not None and (start < self.last_move_t or
                                             now - self.last_move_t < sc["cooldown"]):
            return []  # measured (partly) under an older assignment, or cooling down
        live = {g.port for g in self.live_graphs()}
        if len(loads) < 2 or not set(loads) <= live or any(g.draining for g in self.graphs.values()
                                                           if g.port in loads):
            return []  # a single replica, or a scale operation under way
        self.window_used = end
        self.next_rebalance = now + sc["rebalance_s"]
        total = sum(loads.values())
        mean = total / len(loads)
        hi = max(loads, key=lambda p: (loads[p], -p))
        if total <= 0 or loads[hi] <= (1.0 + sc["rebalance_tolerance"]) * mean:
            return []
        self.switch_busy += 1
        self.event(now, "rebalance", port=hi, ratio=round(loads[hi] / mean, 3),
                   loads={str(p): round(v, 1) for p, v in sorted(loads.items())})
        return [Command("switch_rebalance", self.graphs[hi].host, hi,
                        {"tolerance": sc["rebalance_tolerance"]})]

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
        """The host is gone: its ports' buckets go to live ports, their state is lost."""
        cmds = []
        lost = [g for g in self.graphs.values() if g.host == host and not g.draining
                and not g.standby]
        for g in lost:
            g.draining = True
            live = self.live_graphs()
            if not live:
                spare = self.standby_graphs()
                if spare:
                    h, p = spare[0].host, spare[0].port
                    spare[0].standby = False
                else:
                    free = self.free_ports()
                    if not free:
                        self.event(now, "no_capacity",
                                   reason=f"no live port for {g.port}'s buckets")
                        continue
                    h, p = free[0]
                    cmds += self._add_graph(now, h, p, base=-1)
                cmds.append(Command("switch_scale_out", h, p, {"transfer": False}))
            cmds.append(Command("switch_scale_in", host, g.port, {"transfer": False}))
            fq = self.bricks.get(brick_name("fq", g.port))
            self.event(now, "state_lost", port=g.port, host=host, reason="host lost",
                       packets=(fq.load.get("packets_in", 0) if fq else 0))
        cmds += self._lose_remote_ulns(now, host)
        for name in [n for n, b in self.bricks.items() if b.host == host]:
            del self.bricks[name]
        for g in [g for g in self.graphs.values() if g.host == host]:
            self.graphs.pop(g.port, None)
        return cmds + self._keep_fe_standby(now)

    def _lose_remote_ulns(self, now: float, host: str) -> list[Command]:
        """ULN replicas on lost ``host`` of graphs on live hosts (brick placement):
        their mapping brick stops routing to them and their decision brick counts
        them as ended (what was queued there is lost, and counted by the decision)."""
        cmds = []
        for b in [b for b in self.bricks.values() if b.host == host and b.role == "uln"
                  and not b.retired]:
            g = self.graphs.get(b.port)
            fm = self.bricks.get(brick_name("fm", b.port))
            if g is None or g.host == host or fm is None or not fm.spec["outlets"]:
                continue
            b.retired = True
            out = fm.spec["outlets"][0]
            out["addresses"] = [a for a in out["addresses"] if a != b.spec["inlet"]]
            cmds += [Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                         "op": "route", "target": out["target"],
                         "addresses": out["addresses"]}}),
                     Command("control", g.host, g.port, {"brick": brick_name("dec", g.port),
                                                         "cmd": {"op": "upstream_dead",
                                                                 "brick": b.id}})]
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
            if all(now - b.last_seen > 1.0 or b.load.get("state") == "done" for b in bricks):
                for b in bricks:
                    if b.role == "dec":  # its scores and alerts stay in the totals
                        extra = b.load.get("extra", {})
                        self.counters["retired_scores"] += extra.get("scores", 0)
                        self.counters["retired_alerts"] += extra.get("alerts", 0)
                    del self.bricks[b.id]
                del self.graphs[g.port]
                self.event(now, "graph_gone", port=g.port, host=g.host)
        return []

    def _update_deadlines(self) -> None:
        """SLA split by per-batch cost: the profile's at first (``lego profile``),
        folded with each live report since (exponential average, on_heartbeat)."""
        if self.costs and sum(self.costs.values()) > 0:
            self.deadlines = brick_deadlines(self.cfg.sla["latency_ms"] / 1e3, self.costs)

    def _scale_uln(self, now: float, g: GraphRec) -> list[Command]:
        ulns = [b for b in self.graph_bricks(g.port, "uln") if not b.standby and not b.retired]
        if not ulns or any(not b.load for b in ulns):
            return []
        growth = sum(b.depth_growth for b in ulns)
        d = self.policy.observe(f"uln@{g.port}", now, [b.util for b in ulns], growth)
        if d is None:
            return []
        fm = self.bricks[brick_name("fm", g.port)]
        out = fm.spec["outlets"][0]
        dec = brick_name("dec", g.port)
        if d.action is Action.SCALE_OUT:
            spare = [b for b in self.graph_bricks(g.port, "uln") if b.standby]
            cmds, warm = [], bool(spare)
            if not spare:
                if self._used(g.host) + 1.0 > self.hosts[g.host].cores + 1e-9:
                    return self._uln_elsewhere(now, g, d.reason)
                spec = self._uln_spec(g)
                b = self.bricks[f"{spec['node']}/{spec['serial']}"] = BrickRec(
                    f"{spec['node']}/{spec['serial']}", g.host, g.port, "uln", spec,
                    last_seen=now)
                cmds.append(Command("start", g.host, g.port, {"specs": [spec]}))
                spare = [b]
            new = spare[0]
            new.standby = False
            out["addresses"] = out["addresses"] + [new.spec["inlet"]]
            cmds += [Command("control", g.host, g.port, {"brick": dec, "cmd": {
                         "op": "add_upstream", "n": 1}}),
                     Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                         "op": "route", "target": out["target"],
                         "addresses": out["addresses"]}}, )]
            self.event(now, "scale_out", brick="uln", port=g.port, replicas=len(ulns) + 1,
                       reason=d.reason, t_detect=now, replica=new.id, warm=warm)
            if self.cfg.scaling["standby"] and self._used(g.host) + 1.0 <= \
                    self.hosts[g.host].cores + 1e-9:
                spec = self._uln_spec(g)
                self.bricks[f"{spec['node']}/{spec['serial']}"] = BrickRec(
                    f"{spec['node']}/{spec['serial']}", g.host, g.port, "uln", spec,
                    last_seen=now, standby=True)
                cmds.append(Command("start", g.host, g.port, {"specs": [spec]}))
            return cmds
        return self._retire_uln(now, g, ulns[-1], d.reason)

    def _retire_uln(self, now: float, g: GraphRec, victim: BrickRec,
                    reason: str) -> list[Command]:
        """Scale-in: the mapping brick stops routing to ``victim`` and sends it an
        end marker (it finishes its queue, sends its end to the decision, ends),
        on this host or another (``brick`` placement) alike."""
        fm = self.bricks[brick_name("fm", g.port)]
        out = fm.spec["outlets"][0]
        victim.retired = True
        out["addresses"] = [a for a in out["addresses"] if a != victim.spec["inlet"]]
        self.event(now, "scale_in", brick="uln", port=g.port, host=victim.host,
                   replicas=len(out["addresses"]), reason=reason, replica=victim.id)
        return [Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
            "op": "route", "target": out["target"], "addresses": out["addresses"],
            "retire": [victim.spec["inlet"]]}})]

    def _uln_spec(self, g: GraphRec) -> dict:
        template = next(b.spec for b in self.graph_bricks(g.port, "uln"))
        serial = g.next_uln
        g.next_uln += 1
        w = Path(self.hosts[g.host].workdir)
        return {**template, "serial": serial,
                "control": f"ipc://{w / f'uln-{g.port}-{serial}-ctl.sock'}",
                "inlet": f"ipc://{w / f'uln-{g.port}-{serial}.sock'}"}

    def _used(self, host: str) -> float:
        """Cores in use on a host: one per ULN or FE replica, the rest share one."""
        n = sum(1 for b in self.bricks.values() if b.host == host and not b.retired
                and b.role in ("uln", "fq"))
        return n + 0.5 * len([g for g in self.graphs.values() if g.host == host])

    def _fits_graph(self, host: str) -> bool:
        """Room for one more graph: a host's first graph always fits (it gets the
        whole host, a quota of a fraction of a core included), a further one needs
        two free cores."""
        return not any(g.host == host for g in self.graphs.values()) or \
            self._used(host) + 2.0 <= self.hosts[host].cores + 1e-9

    def fe_util(self, g: GraphRec) -> float:
        """An FE replica's load: its host's CPU over its quota when the host has one
        (the graph's bricks share that quota, so that is what runs out), else the
        feature brick's busy fraction."""
        a = self.hosts[g.host]
        if a.quota and sum(1 for h in self.live_graphs() if h.host == g.host) == 1:
            return a.util
        return self.bricks[brick_name("fq", g.port)].util

    def _scale_fe(self, now: float) -> list[Command]:
        live = self.live_graphs()
        fqs = [self.bricks.get(brick_name("fq", g.port)) for g in live]
        if not fqs or any(b is None or not b.load for b in fqs):
            return []
        util = {g.port: self.fe_util(g) for g in live}
        d = self.policy.observe("fe", now, list(util.values()))
        if d is None:
            return []
        if d.action is Action.SCALE_OUT:
            return self._fe_scale_out(now, live[0].host, d.reason, len(fqs) + 1)
        victim = min(live, key=lambda g: (util[g.port], -g.port))
        victim.draining = True
        self.event(now, "scale_in", brick="fq", port=victim.port, replicas=len(fqs) - 1,
                   reason=d.reason)
        return [Command("switch_scale_in", victim.host, victim.port, {"transfer": True}),
                Command("drain", victim.host, victim.port,
                        {"brick": brick_name("src", victim.port)})]

    def _fe_scale_out(self, now: float, home: str, reason: str, replicas: int,
                      away: bool = False, brick: str = "fq") -> list[Command]:
        """One more FE replica (a whole graph): the warm standby if any, else a graph
        on a free port, ``home``'s first (``away``: never on ``home``, it is full)."""
        spare = [g for g in self.standby_graphs(prefer=home) if not (away and g.host == home)]
        if spare:  # warm: the switch write and the state move only
            g = spare[0]
            g.standby = False
            self.event(now, "scale_out", brick=brick, port=g.port, host=g.host,
                       replicas=replicas, reason=reason, t_detect=now, warm=True, graph=True)
            return [Command("switch_scale_out", g.host, g.port, {"transfer": True})] + \
                self._keep_fe_standby(now, prefer=home)
        free = [(h, p) for h, p in self.free_ports(prefer=home) if not (away and h == home)]
        if self.cfg.placement["mode"] == "graph" or away:
            free = [(h, p) for h, p in free
                    if self._fits_graph(h) or h == home]
        if not free:
            self.event(now, "no_capacity", brick=brick, reason="no free switch port"
                       + (" on a host with room" if away else ""))
            return []
        host, port = free[0]
        self.event(now, "scale_out", brick=brick, port=port, host=host,
                   replicas=replicas, reason=reason, t_detect=now, warm=False, graph=True)
        return self._add_graph(now, host, port, base=-1) + [
            Command("switch_scale_out", host, port, {"transfer": True})]

    def _uln_elsewhere(self, now: float, g: GraphRec, reason: str) -> list[Command]:
        """ULN overload on a full host, by ``[placement].mode``: ``graph``: a whole
        new graph on another host (the FE scale-out path: the switch splits the
        traffic); ``brick``: one ULN replica on the other host with the most free
        cores (:meth:`_uln_remote`, batches and scores over tcp); when no host
        has a core for it, reported (``placement_fallback``) and as ``graph``."""
        if self.cfg.placement["mode"] == "brick":
            hosts = [Host(a.host, a.cores, self._used(a.host)) for a in self.hosts.values()
                     if a.alive]
            try:
                target = place_replica(hosts, g.host, "uln", 1.0, {}, "brick").starts[0][0]
            except ConfigError:
                target = None
            if target is not None and target != g.host:
                return self._uln_remote(now, g, target, reason)
            self.event(now, "placement_fallback", brick="uln", port=g.port, host=g.host,
                       mode="brick", target=target, to="graph",
                       reason="no other host has a free core for a ULN replica")
        if not (self.cfg.scaling["fe"] and self.cfg.nf["semantics"] == "lego"):
            self.event(now, "no_capacity", host=g.host, brick="uln", port=g.port,
                       reason="host full and FE scaling off: no new graph")
            return []
        return self._fe_scale_out(now, g.host, reason, len(self.live_graphs()) + 1,
                                  away=True, brick="uln")

    def _uln_remote(self, now: float, g: GraphRec, target: str, reason: str) -> list[Command]:
        """``brick`` placement: one ULN replica of ``g`` on host ``target``.

        Its inlet is ``tcp://<target host's address>:<port>`` (copying transport: no
        shared memory across hosts), its control socket and report address are
        ipc in ``target``'s work directory. The graph's
        decision brick binds one tcp address more on its input queue (control op
        ``bind``, once per graph, kept in its spec so that a restart binds it
        again): the remote ULN sends its scores there, the local ULNs go on over
        ipc, and the decision merges both in batch order as before. Then the
        decision waits for one more ``end`` and the mapping brick adds the tcp
        address to its round robin. Scale-in retires it like a local one (the
        mapping brick sends it an end marker; it finishes its queue and ends).

        Ports are fixed per (graph port, serial) (:func:`tcp_port`): the pure core
        cannot ask a remote host for a free one; a bind that fails (the port taken)
        fails the command (``command_failed``)."""
        fm = self.bricks[brick_name("fm", g.port)]
        dec = self.bricks[brick_name("dec", g.port)]
        out = fm.spec["outlets"][0]
        dec_tcp = f"tcp://{host_ip(self.hosts[g.host].address)}:{tcp_port(g.port, 0)}"
        cmds = []
        if dec_tcp not in dec.spec.get("binds", []):
            dec.spec["binds"] = dec.spec.get("binds", []) + [dec_tcp]
            cmds.append(Command("control", g.host, g.port, {"brick": dec.id, "cmd": {
                "op": "bind", "address": dec_tcp}}))
        template = next(b.spec for b in self.graph_bricks(g.port, "uln"))
        serial = g.next_uln
        g.next_uln += 1
        w = Path(self.hosts[target].workdir)
        spec = {**template, "serial": serial,
                "control": f"ipc://{w / f'uln-{g.port}-{serial}-ctl.sock'}",
                "report": "",  # its actor's
                "inlet": f"tcp://{host_ip(self.hosts[target].address)}:"
                         f"{tcp_port(g.port, serial)}",
                "outlets": [{**template["outlets"][0], "addresses": [dec_tcp]}]}
        name = f"{spec['node']}/{serial}"
        self.bricks[name] = BrickRec(name, target, g.port, "uln", spec, last_seen=now)
        out["addresses"] = out["addresses"] + [spec["inlet"]]
        cmds += [Command("start", target, g.port, {"specs": [spec]}),
                 Command("control", g.host, g.port, {"brick": dec.id, "cmd": {
                     "op": "add_upstream", "n": 1}}),
                 Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                     "op": "route", "target": out["target"], "addresses": out["addresses"]}})]
        replicas = len([b for b in self.graph_bricks(g.port, "uln")
                        if not b.standby and not b.retired])
        self.event(now, "scale_out", brick="uln", port=g.port, host=target, replicas=replicas,
                   reason=reason, t_detect=now, replica=name, warm=False, placement="brick",
                   inlet=spec["inlet"])
        return cmds

    # ------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        replicas: dict[str, int] = {}
        for b in self.bricks.values():
            if not b.standby and not b.retired:
                replicas[f"{b.role}-{b.port}"] = replicas.get(f"{b.role}-{b.port}", 0) + 1
        decs = [b.load.get("extra", {}) for b in self.bricks.values() if b.role == "dec"]
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
                        "replicas": replicas.get(f"{b.role}-{b.port}", 0),
                        "standby": b.standby, "retired": b.retired,
                        "utilisation": round(b.util, 4),
                        "queue_depth": b.load.get("queue_depth", 0),
                        "pps": round(b.load.get("pps", 0.0), 1),
                        "packets_in": b.load.get("packets_in", 0)}
                       for b in sorted(self.bricks.values(), key=lambda b: b.id)],
            "switch": self.switch,
            "alerts": self.counters["retired_alerts"] + sum(d.get("alerts", 0) for d in decs),
            "scores": self.counters["retired_scores"] + sum(d.get("scores", 0) for d in decs),
            "deadlines_ms": {k: round(v * 1e3, 3) for k, v in self.deadlines.items()},
            "costs_ms": {k: round(v, 4) for k, v in self.costs.items()},
            "counters": dict(self.counters),
            "events": self.events[-50:],
        }
