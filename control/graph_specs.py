"""The brick graph of one switch port, as the BrickSpec dicts its bricks start from.

The graph is the NF's template (:attr:`lego.nfs.NetworkFunction.graph`), a chain
whose nodes the controller knows by the role each plays (:class:`Chain`, from the
catalog's roles and replications), never by name::

    source (the port's frames) -> keyed (split by the switch) -> ... -> router
        -> stateless (x R, round robin) -> sink (merges)

For example ``src -> fq -> fm -> uln (x R) -> dec``. A brick is named
``NODE-PORT/SERIAL``. On one host every hop is ``ipc://`` in the host's work
directory. A stateless replica placed on another host (``[placement].mode =
"brick"``) takes its batches and sends its outputs over tcp, on ports fixed per
(graph port, serial) (:func:`tcp_port`): the controller's pure core cannot ask a
remote host for a free one.

With ``[graph].fuse`` the graph's bricks run as one process (:func:`fused_spec`,
:mod:`lego.bricks.chain`): each brick spec still names its brick (the
controller knows them one by one) and carries the process's name (``group``,
``replica-PORT``); the cluster engine starts the process once and answers for
its members. No hop leaves the process, so there is no source log to replay
and no output log to resend: a dead process restarts with empty state (its
keyed state reported lost); its checkpoints serve a lost host's port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lego.bricks.shm import SCHEME, is_shm
from lego.control.config import Config
from lego.errors import ConfigError

#: first tcp port of ``brick`` placement (below Linux's ephemeral range, 32768 on)
TCP_BASE = 24000
#: a fused graph's process: ``replica-PORT/0`` (:func:`fused_spec`)
GROUP = "replica"
#: the brick type of a fused graph (lego.bricks.chain; lego.bricks.graph.CHAIN)
CHAIN = "chain"


def tcp_port(port: int, serial: int) -> int:
    """The tcp port of graph ``port``'s sink (serial 0) or of its stateless replica
    ``serial`` placed on another host: 64 per graph port."""
    return TCP_BASE + 64 * (port % 128) + (0 if serial == 0 else 1 + (serial - 1) % 63)


def host_ip(address: str) -> str:
    """The host part of a management address ``HOST:PORT`` (or the bare address)."""
    return address.rpartition(":")[0] or address


@dataclass(frozen=True)
class Chain:
    """The NF's graph template as the controller uses it: its nodes in chain order,
    each node's brick type and options, and the node that plays each role."""

    nodes: tuple[str, ...]
    types: dict[str, str]
    options: dict[str, dict]
    source: str  # reads the switch port
    keyed: str  # keeps the state the switch splits (one per graph)
    router: str  # feeds the stateless replicas
    stateless: str  # replicated within a graph, fed round robin
    sink: str  # merges the replicas' outputs

    def role_of(self, node: str) -> str:
        """The role ``node`` plays (``worker`` for a node with none of the five)."""
        for role in ("source", "keyed", "stateless", "sink", "router"):
            if getattr(self, role) == node:
                return role
        return "worker"

    def upstream(self, node: str) -> str | None:
        i = self.nodes.index(node)
        return self.nodes[i - 1] if i else None


def nf_chain(cfg: Config) -> Chain:
    """The chain of the NF ``cfg`` names, its roles read off the catalog."""
    from lego import nfs

    return nf_chain_of(nfs.get(cfg.nf["name"]), cfg.nf_options)


def nf_chain_of(nf, options: dict) -> Chain:
    """The chain of NF ``nf`` (a :class:`lego.nfs.NetworkFunction`) under ``options``."""
    from lego.bricks.catalog import brick_type

    tmpl = nf.graph(source={"type": "packet_batching"}, options=options)
    bricks, edges = tmpl["bricks"], tmpl["edges"]
    order = [edges[0]["from"]] + [e["to"] for e in edges]
    where = f"NF {nf.name!r}: graph template"
    if any(e["from"] != a for e, a in zip(edges, order, strict=False)) or \
            sorted(order) != sorted(bricks):
        raise ConfigError(f"{where}: expected a chain through every brick, got edges "
                          f"{[(e['from'], e['to']) for e in edges]}")
    types = {n: bricks[n]["type"] for n in order}
    bt = {n: brick_type(t, nf.name) for n, t in types.items() if n != order[0]}
    keyed = [n for n, t in bt.items() if t.replication == "keyed"]
    stateless = [n for n in order[1:-1] if bt[n].replication == "stateless"]
    if len(keyed) != 1 or not stateless or bt[order[-1]].role != "sink" or \
            order.index(keyed[0]) > order.index(stateless[-1]):
        raise ConfigError(f"{where}: expected source -> one keyed brick -> ... -> a stateless "
                          f"brick -> a sink, got {[(n, types[n]) for n in order]}")
    params = {k: v for k, v in tmpl.get("params", {}).items()}
    options = {n: {**params, **bricks[n].get("options", {})} for n in order}
    s = stateless[-1]
    return Chain(tuple(order), types, options, order[0], keyed[0],
                 order[order.index(s) - 1], s, order[-1])


def _ipc(workdir: str, role: str, port: int, serial: int, ctl: bool = False) -> str:
    suffix = "-ctl" if ctl else ""
    return f"ipc://{Path(workdir) / f'{role}-{port}-{serial}{suffix}.sock'}"


def graph_specs(cfg: Config, port: int, workdir: str, base: int, replicas: int,
                standby: int) -> list[dict]:
    """Every brick of port ``port``'s graph (``replicas`` routed stateless replicas and
    ``standby`` warm ones) on a host whose work directory is ``workdir``."""
    from lego import nfs

    g = cfg.graph
    chain = nf_chain(cfg)
    if cfg.nf["source"] == "feed":
        src_type, src_opts = "frame_feed", {"feed": f"ipc://{Path(workdir) / f'feed-{port}.sock'}"}
    else:
        src_type, src_opts = "packet_batching", {"interface": cfg.interface_of(port)}
    src_opts.update(batch=g["batch"], flush_ms=g["flush_ms"],
                    **nfs.get(cfg.nf["name"]).source_options())
    routed = list(range(replicas))

    def data(node: str, serial: int) -> str:
        """A brick's batch inlet: on the ipc socket, or with ``[graph].shm`` its arrays
        in shared memory (one copy into a slot, the header on the socket). Off by
        default: a killed sender's segments go with it, and a batch still queued
        from it then kills its receiver (the Mininet kill tests), where ZeroMQ's
        queue keeps the whole batch; in make run it saved no measurable CPU."""
        return (SCHEME if g["shm"] else "") + _ipc(workdir, node, port, serial)

    def spec(node: str, type_: str, serial: int, upstream: int, options: dict) -> dict:
        nxt = chain.nodes[chain.nodes.index(node) + 1] if node != chain.sink else None
        serials = routed if nxt == chain.stateless else [0]
        return {"node": f"{node}-{port}", "type": type_, "serial": serial,
                "control": _ipc(workdir, node, port, serial, ctl=True),
                "report": "",  # its actor's
                "inlet": data(node, serial) if node != chain.source else None,
                "upstream": upstream,
                "outlets": [{"target": f"{nxt}-{port}", "policy": "round_robin",
                             "addresses": [data(nxt, s) for s in serials]}]
                if nxt else [],
                "hwm": g["hwm"], "overflow": "block", "options": options, "cpus": None}

    recover = cfg.recovers
    fuse = g["fuse"]
    specs = [spec(chain.source, src_type, 0, 0, src_opts)]
    if recover and not fuse:  # what it sent, kept until a keyed checkpoint covers it
        specs[0]["replay_log_mib"] = cfg.recovery["log_mib"]
    for node in chain.nodes[1:]:
        opts = dict(chain.options[node])
        upstream = replicas if chain.upstream(node) == chain.stateless else 1
        if node == chain.keyed:
            opts["port_base"] = base
            if recover and not fuse:  # restarted, it waits for the controller's restore
                opts["recover"] = True
        if node == chain.sink:
            opts.update(out=str(Path(cfg.nf["results"]) / f"port-{port}"),
                        window=g["window"], write_scores=g["write_scores"])
        serials = range(replicas + standby) if node == chain.stateless else [0]
        specs += [spec(node, chain.types[node], s, upstream, opts) for s in serials]
        if recover and node == chain.keyed and not fuse:  # sent again when one after dies
            specs[-1]["output_log_mib"] = cfg.recovery["output_log_mib"]
    if fuse:
        for s in specs:
            s["group"] = f"{GROUP}-{port}"
    return specs


def fused_spec(members: list[dict], workdir: str) -> dict:
    """The one process of a fused graph: its bricks' specs ``members`` (chain order,
    the source first) as a source chain (:class:`lego.bricks.chain.SourceChain`);
    each member's spec travels in it (a restarted controller reads them back)."""
    head = members[0]
    port = parse_port(head["node"])
    return {"node": f"{GROUP}-{port}", "type": CHAIN, "serial": 0,
            "control": _ipc(workdir, GROUP, port, 0, ctl=True), "report": "",
            "inlet": None, "upstream": 0, "outlets": [], "hwm": head["hwm"],
            "overflow": "block", "cpus": None,
            "options": {"nf": next((m["options"]["nf"] for m in members
                                    if m["options"].get("nf")), None),
                        "members": [{"node": m["node"], "type": m["type"],
                                     "options": m["options"], "spec": m} for m in members]}}


def member_specs(spec: dict) -> list[dict]:
    """The bricks' specs a fused graph's process spec carries ([] for any other)."""
    if spec.get("type") != CHAIN:
        return []
    return [m["spec"] for m in spec["options"].get("members", []) if "spec" in m]


def parse_port(node: str) -> int:
    """The switch port of a graph node ``NODE-PORT``."""
    return int(node.rpartition("-")[2])


def node_of(spec: dict) -> str:
    """The template node a brick spec is a replica of (``NODE-PORT``'s ``NODE``)."""
    return spec["node"].rpartition("-")[0]


def replica_spec(template: dict, port: int, serial: int, workdir: str) -> dict:
    """One more replica of ``template``'s node of port ``port``'s graph on its own host."""
    node = node_of(template)
    scheme = SCHEME if is_shm(template["inlet"] or "") else ""
    return {**template, "serial": serial,
            "control": _ipc(workdir, node, port, serial, ctl=True),
            "inlet": scheme + _ipc(workdir, node, port, serial)}


def remote_replica_spec(template: dict, port: int, serial: int, workdir: str, address: str,
                        sink_tcp: str) -> dict:
    """One more stateless replica of port ``port``'s graph on another host (management
    ``address``, work directory ``workdir``): batches in on tcp, outputs to the sink's
    tcp address ``sink_tcp``; its control socket is ipc there."""
    return {**template, "serial": serial,
            "control": _ipc(workdir, node_of(template), port, serial, ctl=True),
            "report": "",  # its actor's
            "inlet": f"tcp://{host_ip(address)}:{tcp_port(port, serial)}",
            "outlets": [{**template["outlets"][0], "addresses": [sink_tcp]}]}
