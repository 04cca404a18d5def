"""What the controller's core keeps and what it returns: hosts, brick replicas,
graphs, the commands for the I/O edge, how bricks are named, and the queries
over them (:class:`Registry`, the base of
:class:`~lego.control.core.ControllerCore`).

A brick of the NF is named ``NODE-PORT/SERIAL``: its node in the NF's graph
template for switch port ``PORT`` and its replica serial. The controller knows a
node by the role it plays (:class:`~lego.control.graph_specs.Chain`: source,
keyed, router, stateless, sink), never by the NF's name for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from lego.control.config import Config
from lego.control.graph_specs import graph_specs, nf_chain, node_of

log = logging.getLogger(__name__)

EVENTS_KEPT = 200


@dataclass(frozen=True)
class Command:
    """One thing for the I/O edge to do. ``kind``: start_graph | start | control |
    go | switch_scale_out | switch_scale_in | switch_rebalance | drain | resize | event."""

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
    #: frames of a lost port its source sent first (lego.control.recovery): in its
    #: count, not in the port's out-packet counter
    adopted: int = 0


def brick_name(role: str, port: int, serial: int = 0) -> str:
    return f"{role}-{port}/{serial}"


def parse_name(name: str) -> tuple[str, int, int]:
    node, _, serial = name.partition("/")
    role, _, port = node.rpartition("-")
    return role, int(port), int(serial or 0)


class Registry:
    """The hosts, bricks and graphs the controller knows, its event log and
    counters, and adding a graph (the one change every decision shares)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.chain = nf_chain(cfg)  # the NF's graph template, node by role
        self.hosts: dict[str, HostRec] = {}
        self.bricks: dict[str, BrickRec] = {}
        self.graphs: dict[int, GraphRec] = {}
        self.events: list[dict[str, Any]] = []
        self.counters: dict[str, Any] = {"state_lost_buckets": 0, "bricks_restarted": 0,
                                         "hosts_lost": 0, "moves": 0,
                                         "retired_scores": 0, "retired_alerts": 0,
                                         "retired_taken": 0}

    def event(self, now: float, what: str, **detail: Any) -> None:
        if detail.get("brick") in self.chain.nodes:  # a node: say the role it plays
            detail["role"] = self.chain.role_of(detail["brick"])
        self.events.append({**detail, "t": now, "kind": what})
        del self.events[:-EVENTS_KEPT]
        log.info("event %s %s", what, detail)

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

    def _add_graph(self, now: float, host: str, port: int, base: int,
                   fe_standby: bool = False) -> list[Command]:
        standby = 1 if self.cfg.scaling["standby"] else 0
        uln = self.cfg.graph["stateless"]
        specs = graph_specs(self.cfg, port, self.hosts[host].workdir, base, uln, standby)
        self.graphs[port] = GraphRec(port, host, base, next_uln=uln + standby,
                                     standby=fe_standby)
        for s in specs:
            name = f"{s['node']}/{s['serial']}"
            self.bricks[name] = BrickRec(name, host, port, node_of(s), s, last_seen=now,
                                         standby=node_of(s) == self.chain.stateless
                                         and s["serial"] >= uln)
        self.event(now, "graph_start", host=host, port=port, uln=uln, standby=standby,
                   fe_standby=fe_standby)
        return [Command("start_graph", host, port, {"specs": specs, "fe_standby": fe_standby})]
