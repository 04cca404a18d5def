"""An NF host's brick agent in graph-file mode, with a status file for the run.

    python -m lego.topo.agent GRAPH.toml --workdir DIR --host NAME [--status FILE]

Runs the graph's bricks on this host (:class:`~lego.bricks.agent.BrickAgent`)
until they have all exited, and every half second writes the agent's view as
JSON to ``--status`` (atomically): each brick's latest load report, its queue
depth and whether it registered, finished or died, plus the agent's events.
This is what the run's dashboard and the topology tests read in the southbound
mode (no Ray: the controller keeps only the switch; with Ray the controller's
status says it). Exits 0 when every brick ended normally, 1 otherwise; SIGTERM
stops the bricks.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("lego.topo.agent")

STATUS_EVERY_S = 0.5


def nf_graph(host: str, iface: str, model: Path, out: Path, *, semantics: str = "lego",
             uln: int = 1, batch: int = 1024, flush_ms: int = 50, idle_s: float = 8.0,
             window: int = 64, nf: str | None = None,
             nf_options: dict | None = None) -> dict:
    """The NF's brick graph (its template, :attr:`lego.nfs.NetworkFunction.graph`) of
    one NF host, reading its dataplane interface; ``uln`` stateless replicas."""
    from lego import nfs
    from lego.control.graph_specs import nf_chain_of

    decl = nfs.get(nf or nfs.DEFAULT)
    options = decl.pick(**{**(nf_options or {}), "semantics": semantics, "model": str(model)})
    replicas = {nf_chain_of(decl, options).stateless: uln}
    graph = decl.graph(source={"type": "packet_batching",
                               "options": {"interface": iface, "batch": batch,
                                           "flush_ms": flush_ms, "idle_s": idle_s,
                                           "timestamps": "switch",
                                           **decl.source_options()}},
                       options=options, replicas=replicas,
                       sink={"out": str(out), "window": window}, name=f"{decl.name}-{host}")
    graph["graph"].update(transport="ipc", hwm=64)
    return graph


def agent_status(agent, host: str, now: float) -> dict:
    """The agent's view as plain data (for the status file)."""
    board = agent.board
    bricks = {}
    for name, p in agent.procs.items():
        node = p.spec.node
        latest = board.latest.get(name, {})
        ups = agent.graph.upstream(node)
        depth = board.queue_depth(name, node, p.spec.serial) if ups else 0
        bricks[name] = {
            "type": p.spec.type, "node": node, "serial": p.spec.serial,
            "registered": name in board.registered, "finished": name in board.finished,
            "exit_code": p.code, "queue_depth": depth,
            **{k: latest.get(k, 0) for k in ("packets_in", "packets_out", "pps", "busy_s",
                                             "cpu_s", "dropped", "dropped_rows",
                                             "batch_latency_ms", "e2e_latency_ms")},
        }
    return {"host": host, "time": now, "bricks": bricks,
            "events": [{"kind": e.kind, "brick": e.brick, "code": e.code}
                       for e in agent.events if e.kind != "registered"]}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lego.topo.agent")
    p.add_argument("graph", type=Path, metavar="GRAPH.toml")
    p.add_argument("--workdir", type=Path, required=True, metavar="DIR")
    p.add_argument("--host", required=True, metavar="NAME")
    p.add_argument("--status", type=Path, metavar="FILE")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                                                   "%(message)s")
    from lego.bricks.agent import BrickAgent
    from lego.bricks.graph import load_graph

    graph = load_graph(args.graph)
    status = args.status or args.workdir / "status.json"
    stopping = False

    def _term(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _term)
    agent = BrickAgent(graph, args.workdir, on_event=lambda e: log.info(
        "%s: %s%s", e.kind, e.brick, f" (exit code {e.code})" if e.code else ""))
    try:
        agent.start()
        agent.go()
        log.info("agent %s: %d bricks running", args.host, len(agent.procs))
        deadline = time.monotonic() + args.timeout
        last = 0.0
        while any(pp.code is None for pp in agent.procs.values()) and not stopping:
            agent.poll(0.1)
            now = time.monotonic()
            if now - last >= STATUS_EVERY_S:
                _write(status, agent_status(agent, args.host, time.time()))
                last = now
            if now > deadline:
                log.error("agent %s: bricks still running after %.0f s", args.host,
                          args.timeout)
                break
    finally:
        agent.stop()
        _write(status, agent_status(agent, args.host, time.time()))
    died = {n: c for n, c in agent.exit_codes().items() if c != 0}
    if died:
        log.error("agent %s: bricks ended abnormally: %s", args.host, died)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
