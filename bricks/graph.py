"""Brick graph files (TOML): which bricks, how many replicas, edges, transport, CPUs.

    [graph]
    name = "my-nf"
    transport = "ipc"        # ipc (one host) | tcp (across hosts: host + base_port)
    shm = true               # ipc: arrays in shared-memory slots, headers on the socket
    hwm = 4                  # batches per queue (each link is bounded; shm: slots per link)
    overflow = "block"       # block (backpressure) | drop (counted)

    [params]                 # merged into every brick's options
    nf = "my_nf"             # the NF whose brick types these are (lego.nfs; optional)
    semantics = "lego"
    model = "model.npz"

    [bricks.source]
    type = "packet_batching"
    options = { trace = "trace.pcap", batch = 8192 }
    cpus = [0]

    [bricks.scorer]
    type = "my_scorer"       # a type of the framework's catalog or of the NF's
    replicas = 2
    group = "scorer"         # bricks with one group run in one process (fusion)

    [[edges]]
    from = "source"
    to = "fq"
    route = "key"            # round_robin (default) | key

    [[edges]]
    from = "fq"
    to = "fm"
    inline = true            # each fq process also runs a replica of fm's process inline

Keys and types are declared as data and checked first (unknown keys, wrong
types), then the domain rules (:func:`check_rules`); every error is a
:class:`~lego.bricks.errors.GraphError` naming the file and the key.

Fusion (``group``): the bricks of a group form a chain ``a -> b -> c`` (each
one's only input is the previous one, each one's only output the next; same
number of replicas) and each replica of the group is one process running the
chain as function calls (:mod:`lego.bricks.chain`), with no queue or copy
between them. The graph the agent runs (:func:`graph_from_dict`'s result) has
one node per process: a group becomes a node of type ``chain``; the graph as
written stays in ``Graph.logical``.

Inline replicas (edge ``inline = true``, A -> B): each process of A also runs one
replica of B's process (B's chain when B is in a group) as function calls, and
gives it a batch only when every remote replica of B has a full queue, so the
fraction of A's core that A leaves idle does B's work, with no copy, context
switch or second process competing for the core. B's ``replicas`` counts its
own processes (0: B runs only inline); the inline ones are numbered after them
(``scorer/1`` inside ``front/0`` when the scorer has one process). Checked: B is
stateless, the edge routes round robin, it is A's only outgoing edge and B's
only input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lego.bricks.catalog import brick_type, known_types
from lego.bricks.errors import GraphError
from lego.bricks.routing import POLICIES
from lego.bricks.runtime import BrickSpec, OutletSpec
from lego.bricks.transport import OVERFLOWS, TRANSPORTS, addresses
from lego.errors import LegoError
from lego.tables import read_toml, typed_table

CHAIN = "chain"  # the brick type of a fused group (lego.bricks.chain)

MAX_REPLICAS = 64

# key -> (type(s), default); None default = required
_GRAPH_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (str, "graph"), "transport": (str, "ipc"), "host": (str, "127.0.0.1"),
    "base_port": (int, 0), "hwm": (int, 4), "overflow": (str, "block"), "shm": (bool, "auto"),
}
_BRICK_KEYS: dict[str, tuple[Any, Any]] = {
    "type": (str, None), "replicas": (int, 1), "options": (dict, {}), "cpus": (list, []),
    "group": (str, ""),
}
_EDGE_KEYS: dict[str, tuple[Any, Any]] = {
    "from": (str, None), "to": (str, None), "route": (str, "round_robin"),
    "inline": (bool, False),
}
_TOP_KEYS = ("graph", "params", "bricks", "edges")


@dataclass(frozen=True)
class Node:
    name: str
    type: str
    replicas: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    cpus: tuple[int, ...] = ()
    group: str = ""


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    route: str = "round_robin"
    inline: bool = False  # each src process runs a replica of dst inline (overflow)


@dataclass
class Graph:
    nodes: dict[str, Node]
    edges: list[Edge]
    name: str = "graph"
    transport: str = "ipc"
    host: str = "127.0.0.1"
    base_port: int = 0
    hwm: int = 4
    overflow: str = "block"
    params: dict[str, Any] = field(default_factory=dict)
    where: str = "<graph>"
    shm: bool = True
    logical: Graph | None = None  # the graph as written, when groups were fused

    @property
    def hop_transport(self) -> str:
        """How batches travel between processes: shm, ipc or tcp."""
        return "shm" if self.shm and self.transport == "ipc" else self.transport

    def role(self, node: str) -> str:
        return node_role(self.nodes[node])

    def upstream(self, node: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == node]

    def downstream(self, node: str) -> list[Edge]:
        return [e for e in self.edges if e.src == node]

    def instances(self) -> list[tuple[str, int]]:
        """(node, serial) of every brick replica, in topological order."""
        return [(n, s) for n in topo_order(self) for s in range(self.nodes[n].replicas)]

    def options(self, node: str) -> dict[str, Any]:
        return {**self.params, **self.nodes[node].options}

    def specs(self, workdir: Path, report: str) -> list[BrickSpec]:
        """The spec of every replica: addresses assigned, edges resolved."""
        port = self.base_port
        inlet: dict[tuple[str, int], str] = {}
        control: dict[tuple[str, int], str] = {}
        for n, s in self.instances():
            _, inlet[(n, s)] = addresses(self.hop_transport, workdir, f"{n}-{s}", self.host, port)
            _, control[(n, s)] = addresses(self.transport, workdir, f"{n}-{s}-ctl", self.host,
                                           port + 1 if port else 0)
            port = port + 2 if port else 0

        def outlets_of(n: str) -> list[OutletSpec]:
            return [OutletSpec(e.dst, e.route,
                               [inlet[(e.dst, r)] for r in range(self.nodes[e.dst].replicas)])
                    for e in self.downstream(n)]

        specs = []
        for n, s in self.instances():
            node = self.nodes[n]
            ups = sum(self.nodes[e.src].replicas for e in self.upstream(n))
            ups += sum(self.nodes[f.src].replicas for e in self.upstream(n)  # inline replicas
                       for f in self.upstream(e.src) if f.inline)
            outlets = outlets_of(n)
            inline = None
            for e in self.downstream(n):
                if e.inline:
                    inline = {"node": e.dst, "type": self.nodes[e.dst].type,
                              "serial": self.nodes[e.dst].replicas + s,
                              "options": self.options(e.dst),
                              "outlets": [asdict(o) for o in outlets_of(e.dst)]}
            is_source = node_role(node) == "source"
            specs.append(BrickSpec(node=n, type=node.type, serial=s, control=control[(n, s)],
                                   report=report, inlet=None if is_source else inlet[(n, s)],
                                   upstream=ups, outlets=outlets, hwm=self.hwm,
                                   overflow=self.overflow, options=self.options(n),
                                   cpus=list(node.cpus) or None, inline=inline))
        return specs


# ---------------------------------------------------------------- parsing


def load_graph(path: str | Path) -> Graph:
    """Read and check a graph file."""
    path = Path(path)
    data = read_toml(path, "graph file", GraphError)
    _resolve_paths(data, path.parent)
    return graph_from_dict(data, str(path))


PATH_OPTIONS = ("trace", "model", "out")


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in [params] and the bricks' options are relative to the
    graph file; resolved before fusion copies them into the chains' members.
    Tables of the wrong type are left for :func:`graph_from_dict` to report."""
    bricks = data.get("bricks")
    tables = [data.get("params")] + [b.get("options") for b in
                                     (bricks.values() if isinstance(bricks, dict) else ())
                                     if isinstance(b, dict)]
    for table in tables:
        if not isinstance(table, dict):
            continue
        for key in PATH_OPTIONS:
            value = table.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                table[key] = str(base / value)


def _typed(where: str, table: Any, keys: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    return typed_table(where, table, keys, GraphError)


def graph_from_dict(data: Mapping[str, Any], where: str = "<graph>") -> Graph:
    """A checked Graph from the parsed TOML (or an equivalent dict)."""
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise GraphError(f"{where}: unknown table {unknown[0]!r} (expected "
                         f"{', '.join(_TOP_KEYS)})")
    g = _typed(f"{where}: [graph]", data.get("graph", {}), _GRAPH_KEYS)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise GraphError(f"{where}: [params]: expected a table, got {type(params).__name__}")
    bricks = data.get("bricks", {})
    if not isinstance(bricks, dict) or not bricks:
        raise GraphError(f"{where}: [bricks]: expected at least one brick table, got none")
    nodes = {}
    for name, table in bricks.items():
        if not isinstance(table, dict):
            raise GraphError(f"{where}: bricks.{name}: expected a table, got "
                             f"{type(table).__name__}")
        b = _typed(f"{where}: bricks.{name}", table, _BRICK_KEYS)
        cpus = b["cpus"]
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus):
            raise GraphError(f"{where}: bricks.{name}.cpus: expected a list of CPU numbers, "
                             f"got {cpus!r}")
        nodes[name] = Node(name, b["type"], b["replicas"], dict(b["options"]), tuple(cpus),
                           b["group"])
    edges_raw = data.get("edges", [])
    if not isinstance(edges_raw, list):
        raise GraphError(f"{where}: edges: expected an array of tables ([[edges]]), got "
                         f"{type(edges_raw).__name__}")
    edges = []
    for i, table in enumerate(edges_raw):
        if not isinstance(table, dict):
            raise GraphError(f"{where}: edges[{i}]: expected a table, got {type(table).__name__}")
        e = _typed(f"{where}: edges[{i}]", table, _EDGE_KEYS)
        edges.append(Edge(e["from"], e["to"], e["route"], e["inline"]))
    shm = g["transport"] == "ipc" if g["shm"] == "auto" else g["shm"]
    if shm and g["transport"] != "ipc":
        raise GraphError(f"{where}: graph.shm: shared memory carries same-host (ipc) hops only, "
                         f"got shm = true with transport {g['transport']!r}")
    graph = Graph(nodes, edges, g["name"], g["transport"], g["host"], g["base_port"], g["hwm"],
                  g["overflow"], dict(params), where, shm)
    check_rules(graph)
    fused = fuse(graph)
    check_inline(fused)
    return fused


# ---------------------------------------------------------------- fusion


def node_role(node: Node) -> str:
    """source | worker | sink; a chain's from its first and last member."""
    if node.type != CHAIN:
        return brick_type(node.type).role
    members = node.options["members"]
    head = brick_type(members[0]["type"], members[0].get("options", {}).get("nf")).role
    tail = brick_type(members[-1]["type"], members[-1].get("options", {}).get("nf")).role
    return "source" if head == "source" else "sink" if tail == "sink" else "worker"


def fuse(graph: Graph) -> Graph:
    """The process graph: each group's chain becomes one node of type ``chain``
    (checked: a chain, one input and one output per inner member, equal replicas)."""
    groups: dict[str, list[str]] = {}
    for name in topo_order(graph):
        if graph.nodes[name].group:
            groups.setdefault(graph.nodes[name].group, []).append(name)
    if not groups:
        return graph
    w = graph.where
    proc = {n: graph.nodes[n].group or n for n in graph.nodes}
    nodes: dict[str, Node] = {}
    for name in topo_order(graph):
        node = graph.nodes[name]
        if not node.group:
            nodes[name] = node
            continue
        if node.group in graph.nodes:
            raise GraphError(f"{w}: bricks.{name}.group: {node.group!r} is also a brick's name "
                             "(a group names a process: pick another name)")
        members = groups[node.group]
        if name != members[0]:
            continue
        for prev, nxt in zip(members, members[1:], strict=False):
            outs = [e.dst for e in graph.downstream(prev)]
            ins = [e.src for e in graph.upstream(nxt)]
            if outs != [nxt] or ins != [prev]:
                raise GraphError(f"{w}: group {node.group!r}: its bricks must form a chain "
                                 f"(each one's only output the next, each one's only input the "
                                 f"previous); {prev} -> {outs}, {ins} -> {nxt}")
            edge = next(e for e in graph.downstream(prev))
            if edge.route != "round_robin":
                raise GraphError(f"{w}: group {node.group!r}: the edge {prev} -> {nxt} inside "
                                 f"it is a function call, so it cannot route by key")
        replicas = {graph.nodes[m].replicas for m in members}
        if len(replicas) != 1:
            raise GraphError(f"{w}: group {node.group!r}: its bricks run as one process per "
                             f"replica, so they need the same replicas, got "
                             f"{ {m: graph.nodes[m].replicas for m in members} }")
        cpus = sorted({c for m in members for c in graph.nodes[m].cpus})
        spec = [{"node": m, "type": graph.nodes[m].type, "options": graph.options(m)}
                for m in members]
        nodes[node.group] = Node(node.group, CHAIN, replicas.pop(), {"members": spec},
                                 tuple(cpus))
    edges = [Edge(proc[e.src], proc[e.dst], e.route, e.inline) for e in graph.edges
             if proc[e.src] != proc[e.dst]]
    inner = [e for e in graph.edges if e.inline and proc[e.src] == proc[e.dst]]
    if inner:
        raise GraphError(f"{w}: edge {inner[0].src} -> {inner[0].dst}: inline = true inside "
                         f"group {proc[inner[0].src]!r}, where it is a function call already")
    return Graph(nodes, edges, graph.name, graph.transport, graph.host, graph.base_port,
                 graph.hwm, graph.overflow, dict(graph.params), graph.where, graph.shm,
                 logical=graph)


# ---------------------------------------------------------------- rules


def check_inline(graph: Graph) -> None:
    """Rules of ``inline = true`` edges, on the process graph (after fusion)."""
    for node in graph.nodes.values():
        if node.replicas == 0 and not any(e.inline for e in graph.upstream(node.name)):
            raise GraphError(f"{graph.where}: bricks.{node.name}.replicas: 0 processes is "
                             "only for a brick run inline (an edge into it with inline = "
                             "true), expected 1.." + str(MAX_REPLICAS))
    for e in graph.edges:
        if not e.inline:
            continue
        where = f"{graph.where}: edge {e.src} -> {e.dst} (inline = true)"
        dst = graph.nodes[e.dst]
        types = [m["type"] for m in dst.options["members"]] if dst.type == CHAIN else [dst.type]
        stateful = [t for t in types if brick_type(t).replication != "stateless"]
        if stateful:
            raise GraphError(f"{where}: a {stateful[0]} brick keeps state or runs once, so "
                             "it cannot have a replica inline in another process")
        if e.route != "round_robin":
            raise GraphError(f"{where}: inline replicas take overflow batches, which needs "
                             f"route = \"round_robin\", got {e.route!r}")
        if len(graph.downstream(e.src)) != 1 or len(graph.upstream(e.dst)) != 1:
            raise GraphError(f"{where}: it must be {e.src}'s only outgoing edge and "
                             f"{e.dst}'s only input")
        if graph.role(e.dst) != "worker":
            raise GraphError(f"{where}: the inline brick must be a worker (it has inputs "
                             f"and outputs), {e.dst} is a {graph.role(e.dst)}")



def topo_order(graph: Graph) -> list[str]:
    """Nodes sources first; GraphError naming a cycle if there is one."""
    indeg = {n: 0 for n in graph.nodes}
    for e in graph.edges:
        indeg[e.dst] += 1
    order = [n for n, d in indeg.items() if d == 0]
    i = 0
    while i < len(order):
        for e in graph.downstream(order[i]):
            indeg[e.dst] -= 1
            if indeg[e.dst] == 0:
                order.append(e.dst)
        i += 1
    if len(order) != len(graph.nodes):
        cyclic = sorted(n for n in graph.nodes if n not in order)
        raise GraphError(f"{graph.where}: edges: the graph has a cycle through "
                         f"{', '.join(cyclic)} (a brick graph must be acyclic)")
    return order


def _owner(type_name: str) -> str | None:
    from lego import nfs

    nf = nfs.owner(type_name)
    return nf.name if nf else None


def _splits_exactly(nf_name: str, options: Mapping[str, Any]) -> bool:
    from lego import nfs

    nf = nfs.get(nf_name)
    return nf.splits_exactly({k: v for k, v in options.items() if k in nf.options})


def check_rules(graph: Graph) -> None:
    w = graph.where
    nf = graph.params.get("nf")
    if nf is not None:
        from lego import nfs

        try:
            nfs.get(nf)
        except LegoError as exc:
            raise GraphError(f"{w}: params.nf: {exc}") from exc
    if graph.transport not in TRANSPORTS:
        raise GraphError(f"{w}: graph.transport: expected one of {TRANSPORTS}, "
                         f"got {graph.transport!r}")
    if graph.transport == "tcp" and not 0 < graph.base_port < 65536 - 2 * 256:
        raise GraphError(f"{w}: graph.base_port: tcp needs a first port in 1..65023, "
                         f"got {graph.base_port}")
    if graph.hwm < 1:
        raise GraphError(f"{w}: graph.hwm: expected an int >= 1, got {graph.hwm}")
    if graph.overflow not in OVERFLOWS:
        raise GraphError(f"{w}: graph.overflow: expected one of {OVERFLOWS}, "
                         f"got {graph.overflow!r}")
    allowed_cpus = os.sched_getaffinity(0)
    for node in graph.nodes.values():
        where = f"{w}: bricks.{node.name}"
        if brick_type(node.type, nf) is None or node.type == CHAIN:
            raise GraphError(f"{where}.type: unknown brick type {node.type!r} (expected one "
                             f"of {', '.join(sorted(set(known_types(nf)) - {CHAIN}))})")
        if not 0 <= node.replicas <= MAX_REPLICAS:  # 0: only inline (check_inline)
            raise GraphError(f"{where}.replicas: expected 1..{MAX_REPLICAS}, "
                             f"got {node.replicas}")
        bt = brick_type(node.type, nf)
        if bt.replication == "single" and node.replicas != 1:
            raise GraphError(f"{where}.replicas: a {node.type} brick runs as one replica, "
                             f"got {node.replicas}")
        bad = [c for c in node.cpus if c not in allowed_cpus]
        if bad:
            raise GraphError(f"{where}.cpus: CPU {bad[0]} is not available here (allowed: "
                             f"{sorted(allowed_cpus)})")
    seen = set()
    for i, e in enumerate(graph.edges):
        where = f"{w}: edges[{i}]"
        for end, name in (("from", e.src), ("to", e.dst)):
            if name not in graph.nodes:
                raise GraphError(f"{where}.{end}: no brick named {name!r} (bricks: "
                                 f"{', '.join(sorted(graph.nodes))})")
        if e.route not in POLICIES:
            raise GraphError(f"{where}.route: expected one of {POLICIES}, got {e.route!r}")
        if (e.src, e.dst) in seen:
            raise GraphError(f"{where}: duplicate edge {e.src} -> {e.dst}")
        seen.add((e.src, e.dst))
        if e.route == "key" and not brick_type(graph.nodes[e.src].type, nf).role == "source":
            raise GraphError(f"{where}.route: key routing splits rows by address owner, which "
                             f"only a packet source can do; {e.src} is a "
                             f"{graph.nodes[e.src].type}")
    topo_order(graph)
    for node in graph.nodes.values():
        where = f"{w}: bricks.{node.name}"
        role = brick_type(node.type, nf).role
        ins, outs = graph.upstream(node.name), graph.downstream(node.name)
        if role == "source" and ins:
            raise GraphError(f"{where}: a {node.type} brick is a source, but the edge from "
                             f"{ins[0].src} leads into it")
        if role != "source" and not ins:
            raise GraphError(f"{where}: no edge leads into this {node.type} brick")
        if role == "sink" and outs:
            raise GraphError(f"{where}: a {node.type} brick is a sink, but has an edge to "
                             f"{outs[0].dst}")
        if role != "sink" and not outs:
            raise GraphError(f"{where}: this {node.type} brick has no outgoing edge")
        if brick_type(node.type, nf).replication == "keyed" and node.replicas > 1:
            if any(e.route != "key" for e in ins):
                raise GraphError(f"{where}.replicas: {node.replicas} replicas of a stateful "
                                 f"{node.type} brick need key-routed input edges "
                                 f"(route = \"key\"), got {[e.route for e in ins]}")
            nf_name = graph.options(node.name).get("nf") or _owner(node.type)
            if nf_name is None or not _splits_exactly(nf_name, graph.options(node.name)):
                raise GraphError(f"{where}.replicas: NF {nf_name!r} with these options has "
                                 f"no exact split (Algorithm 1), so its {node.type} runs as "
                                 f"one replica, got {node.replicas}")
    if not any(brick_type(n.type, nf).role == "source" for n in graph.nodes.values()):
        raise GraphError(f"{w}: bricks: expected at least one source brick, got none")
