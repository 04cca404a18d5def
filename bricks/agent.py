"""The brick agent of one host: starts and stops bricks as OS processes.

Told by a graph file (``lego bricks run``, Figure 4, the calibration, the
southbound mode of ``lego run``; the controller places bricks as Ray actors
instead, :mod:`lego.bricks.actor`), the agent writes one
:class:`~lego.bricks.runtime.BrickSpec` per replica, starts
``python -m lego.bricks.main`` for each (pinned to its CPUs), collects
their northbound messages in a :class:`~lego.bricks.northbound.LoadBoard`
and watches the processes.

Failure semantics: a brick process that exits non-zero (an exception, a signal)
is reported as an :class:`AgentEvent` ``died`` with its exit code within
:data:`WATCH_S` (logged at ERROR). The agent then routes around it: every
upstream brick is told to remove the replica from its routing table (what was
queued for it is dropped and counted there), and every downstream brick is told
that this upstream has ended, so the graph drains instead of hanging. Batches
lost on the way are counted by the decision brick, which knows every batch id
and sequence range (see ``Decision``): nothing is lost silently. (We count
rather than replay: replay needs acknowledgements from the merger and a replay
buffer at the source, and a replayed batch would reach a stateful extractor out
of order.)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from lego.bricks.errors import BrickError
from lego.bricks.graph import Graph
from lego.bricks.main import ONE_CORE_ENV
from lego.bricks.northbound import LoadBoard
from lego.bricks.runtime import BrickSpec
from lego.bricks.shm import run_id, unlink_run
from lego.bricks.transport import push_control
from lego.logs import log_tail

log = logging.getLogger(__name__)

WATCH_S = 0.1  # how often the agent checks its processes (deaths reported within ~this)


@dataclass
class AgentEvent:
    kind: str  # registered | exited | died | reported
    brick: str
    t: float  # time.monotonic() when the agent noticed
    code: int | None = None
    detail: dict = field(default_factory=dict)


@dataclass
class BrickProcess:
    """One brick process an agent started (local or remote agent)."""

    spec: BrickSpec
    popen: subprocess.Popen
    log_path: Path
    code: int | None = None  # exit status, once noticed
    released: bool = False  # told to exit (its next hops have exited)


class BrickAgent:
    """Runs one graph's bricks on this host. Use as a context manager, or call
    :meth:`stop` in a ``finally``: it never leaves processes behind."""

    def __init__(self, graph: Graph, workdir: Path, *,
                 on_event: Callable[[AgentEvent], None] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.graph = graph
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.on_event = on_event
        self.env = dict(os.environ, **ONE_CORE_ENV, **(env or {}))
        self.ctx = zmq.Context()
        self.board = LoadBoard()
        self.events: list[AgentEvent] = []
        self.procs: dict[str, BrickProcess] = {}
        self._ctl: dict[str, zmq.Socket] = {}
        self._reports = self.ctx.socket(zmq.PULL)
        self._reports.setsockopt(zmq.LINGER, 0)
        if graph.transport == "ipc":
            self.report_address = f"ipc://{self.workdir / 'agent.sock'}"
        else:
            self.report_address = f"tcp://{graph.host}:{graph.base_port + 2 * 256}"
        self._reports.bind(self.report_address)
        self.specs = graph.specs(self.workdir, self.report_address)

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> None:
        """Start every brick and return once all registered; else BrickError with
        the reason and the tail of the failed brick's log."""
        for spec in self.specs:
            path = self.workdir / f"{spec.node}-{spec.serial}.json"
            path.write_text(json.dumps(_spec_dict(spec)))
            log_path = self.workdir / f"{spec.node}-{spec.serial}.log"
            with open(log_path, "wb") as out:
                popen = subprocess.Popen([sys.executable, "-m", "lego.bricks.main",
                                          str(path)], stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env)
            self.procs[str(spec.id)] = BrickProcess(spec, popen, log_path)
        deadline = time.monotonic() + timeout
        while len(self.board.registered) < len(self.procs):
            self.poll(0.05)
            dead = [e for e in self.events if e.kind in ("died", "exited")]
            if dead:
                raise BrickError(f"brick {dead[0].brick} exited with code {dead[0].code} "
                                 f"while starting: {self.log_tail(dead[0].brick)}")
            if time.monotonic() > deadline:
                missing = sorted(set(self.procs) - set(self.board.registered))
                raise BrickError(f"bricks {', '.join(missing)} did not register within "
                                 f"{timeout:.0f} s: {self.log_tail(missing[0])}")

    def go(self) -> None:
        """Tell the sources to start reading."""
        for name, p in self.procs.items():
            if p.spec.inlet is None:
                self.send_control(name, {"op": "go"})

    def run(self, timeout: float) -> list[AgentEvent]:
        """start + go + wait: the whole graph over its input."""
        self.start()
        self.go()
        self.wait(timeout)
        return self.events

    def wait(self, timeout: float) -> None:
        """Until every brick process has exited; BrickError on timeout."""
        deadline = time.monotonic() + timeout
        while any(p.code is None for p in self.procs.values()):
            if time.monotonic() > deadline:
                running = sorted(n for n, p in self.procs.items() if p.code is None)
                raise BrickError(f"bricks {', '.join(running)} still running after "
                                 f"{timeout:.0f} s")
            self.poll(WATCH_S)

    def stop(self, grace: float = 3.0) -> None:
        """Stop every brick still running: SIGTERM, then SIGKILL after ``grace``."""
        for p in self.procs.values():
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs.values():
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
            if p.code is None:
                p.code = p.popen.returncode
        for s in self._ctl.values():
            s.close(0)
        self._ctl.clear()
        self._reports.close(0)
        self.ctx.term()
        unlink_run(run_id(self.workdir))  # shared memory a crashed brick left behind

    def __enter__(self) -> BrickAgent:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ watching

    def poll(self, timeout: float) -> list[AgentEvent]:
        """Take reports for up to ``timeout`` s, then check the processes."""
        new: list[AgentEvent] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._reports.poll(max(0, int(left * 1000))):
                while self._reports.poll(0):
                    message = json.loads(self._reports.recv())
                    self.board.update(message)
                    if message.get("op") == "register":
                        new.append(self._event("registered", message["brick"]))
            if time.monotonic() >= deadline:
                break
        for name, p in self.procs.items():
            if p.code is None and p.popen.poll() is not None:
                p.code = p.popen.returncode
                if p.code == 0:
                    new.append(self._event("exited", name, 0))
                else:
                    new.append(self._died(name, p))
        self._release_finished()
        return new

    def _release_finished(self) -> None:
        """Tell a finished brick to exit once all of its next hops have exited."""
        for name, p in self.procs.items():
            if p.code is not None or p.released or name not in self.board.finished:
                continue
            nxt = [f"{e.dst}/{s}" for e in self.graph.downstream(p.spec.node)
                   for s in range(self.graph.nodes[e.dst].replicas)]
            if p.spec.inline:  # the inline replica's next hops are this process's too
                nxt += [f"{o['target']}/{s}" for o in p.spec.inline["outlets"]
                        for s in range(len(o["addresses"]))]
            if all(self.procs[n].code is not None for n in nxt):
                p.released = True
                self.send_control(name, {"op": "exit"})

    def _event(self, kind: str, brick: str, code: int | None = None,
               detail: dict | None = None) -> AgentEvent:
        event = AgentEvent(kind, brick, time.monotonic(), code, detail or {})
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _died(self, name: str, p: BrickProcess) -> AgentEvent:
        bye = self.board.finished.get(name, {}).get("detail", {})
        log.error("brick %s (pid %d) died with exit code %s%s", name, p.popen.pid, p.code,
                  f": {bye['error']}" if "error" in bye else "")
        event = self._event("died", name, p.code, {"pid": p.popen.pid, **bye})
        self._route_around(p.spec)
        return event

    def _route_around(self, spec: BrickSpec) -> None:
        for e in self.graph.upstream(spec.node):
            for s in range(self.graph.nodes[e.src].replicas):
                self.send_control(f"{e.src}/{s}", {"op": "remove_replica", "target": spec.node,
                                                   "index": spec.serial})
        for e in self.graph.downstream(spec.node):
            for s in range(self.graph.nodes[e.dst].replicas):
                self.send_control(f"{e.dst}/{s}", {"op": "upstream_dead",
                                                   "brick": str(spec.id)})
        if spec.inline:  # the replica it ran inline died with it
            inline = f"{spec.inline['node']}/{spec.inline['serial']}"
            for o in spec.inline["outlets"]:
                for s in range(len(o["addresses"])):
                    self.send_control(f"{o['target']}/{s}", {"op": "upstream_dead",
                                                             "brick": inline})

    # ------------------------------------------------------------ helpers

    def send_control(self, brick: str, command: dict) -> None:
        p = self.procs.get(brick)
        if p is None or p.code is not None:
            return
        push_control(self.ctx, self._ctl, brick, p.spec.control, command, hwm=100)

    def pid(self, brick: str) -> int:
        return self.procs[brick].popen.pid

    def exit_codes(self) -> dict[str, int | None]:
        return {n: p.code for n, p in self.procs.items()}

    def log_tail(self, brick: str, chars: int = 2000) -> str:
        p = self.procs.get(brick)
        return log_tail(p.log_path, chars) if p is not None else "(no log)"


def _spec_dict(spec: BrickSpec) -> dict:
    from dataclasses import asdict

    return asdict(spec)
