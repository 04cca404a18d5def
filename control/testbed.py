"""A live controller system on one machine, for tests and benchmarks.

The pieces of DESIGN §3 without Mininet: the software target's P4Runtime server
(in process), the controller (in process, or ``lego controller run`` in a
process of its own so that it can be killed), its bricks as actors on a local
Ray cluster (:class:`lego.testing.LocalRay`, one node per NF host), and a
:class:`Driver` that plays the traffic host and the switch's egress links:
frames go through the target's pipeline model and each output frame into the
``frame_feed`` source of its egress port.

Every start blocks until the piece listens (or registered) and fails with its
log; every wait polls up to a deadline (:func:`wait_for`); ``close`` stops what
was started, by process id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from lego.bricks.feed import END, feed_message
from lego.errors import LegoError
from lego.switch import pipeline as pl
from lego.testing import wait_for  # noqa: F401  (re-exported for the tests)

TOKEN = "testbed-token-0123456789abcdef"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a server that must come back on it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def toml_text(data: dict) -> str:
    """A controller config dict as TOML (tables of scalars and lists, [[hosts]])."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return repr(v)

    lines = []
    for name, table in data.items():
        rows = table if isinstance(table, list) else [table]
        for row in rows:
            lines.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in row.items()]
            lines.append("")
    return "\n".join(lines)


def system_config(switch: str, work: Path, model: str | Path, hosts: list[dict],
                  **sections: dict) -> dict:
    """A controller config for a feed-driven system; ``sections`` update its tables."""
    cfg: dict[str, Any] = {
        "switch": {"address": switch, "traffic_ports": [1]},
        "northbound": {"bind": "127.0.0.1:0", "token_file": str(work / "token")},
        "nf": {"semantics": "lego", "model": str(model), "results": str(work / "results"),
               "source": "feed", "fe_initial": 1},
        "graph": {"batch": 256, "flush_ms": 10, "uln": 1},
        "scaling": {"fe": False, "standby": False, "high": 0.99, "low": 0.0001,
                    "dwell": 1000.0, "adopt_grace": 0.3},
        "placement": {"mode": "graph"},
        "sla": {"latency_ms": 100.0},
        # the bricks of this system in a namespace of their own
        "ray": {"namespace": work.name, "workdir": str(brick_dir(work))},
        "hosts": hosts,
    }
    for name, table in sections.items():
        cfg[name] = {**cfg.get(name, {}), **table}
    work.mkdir(parents=True, exist_ok=True)
    (work / "token").write_text(TOKEN)
    return cfg


def brick_dir(work: Path, host: str | None = None) -> Path:
    """Where a test system's bricks keep their sockets and logs (a host's, if given)."""
    return work / "bricks" / host if host else work / "bricks"


class Proc:
    """A ``python -m lego ...`` process in its own session (a kill takes its
    children too), its output in ``log``."""

    def __init__(self, argv: list[str], log: Path, ready: str, timeout: float = 30.0) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.popen = subprocess.Popen([sys.executable, "-m", "lego", *argv], stdout=self._out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: ready in self.text() or self.popen.poll() is not None, timeout,
                     f"{' '.join(argv[:2])} to start")
        except LegoError as exc:
            self.kill()
            raise LegoError(f"{exc}: {self.text()[-2000:]}") from None
        if self.popen.poll() is not None:
            raise LegoError(f"lego {' '.join(argv[:2])} exited with {self.popen.returncode}: "
                            f"{self.text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole session (the process and what it started), then reap."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self._kill_group_leftovers()
        self._out.close()

    def _kill_group_leftovers(self) -> None:
        """Children of the session still alive after the leader exited (SIGKILL)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL after 10 s."""
        self.kill(signal.SIGTERM)


def controller_process(config: dict, work: Path, name: str = "controller") -> Proc:
    path = work / f"{name}.toml"
    path.write_text(toml_text(config))
    return Proc(["controller", "run", "--config", str(path)], work / f"{name}.log",
                "controller: northbound on")


class Driver:
    """Plays the traffic host (ingress port ``traffic``) and the switch's egress
    links: ``send`` puts trace frames through the target's pipeline model, and
    each output frame goes to the feed of its egress port (``feeds``: port ->
    the directory of the bricks of that port's host). ``server`` may be
    replaced (a switch restart); its sequence numbers then start again, so frame
    times are looked up from ``seq_base`` on."""

    def __init__(self, server, trace, feeds: dict[int, Path], traffic: int = 1,
                 linger_ms: int = 5000) -> None:
        self.server, self.trace, self.traffic = server, trace, traffic
        self.ctx = zmq.Context()
        self.linger_ms = linger_ms
        self.feeds: dict[int, zmq.Socket] = {}
        for p, workdir in feeds.items():
            s = self.ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, linger_ms)
            s.connect(f"ipc://{workdir / f'feed-{p}.sock'}")
            self.feeds[p] = s
        self.pos = 0
        self.seq_base = 0
        self.sent = {p: 0 for p in feeds}
        self.dropped = 0  # frames the pipeline sent nowhere we feed
        self.lock = threading.Lock()

    def restart_switch(self, server) -> None:
        with self.lock:
            self.server = server
            self.seq_base = self.pos

    def send(self, upto: int, chunk: int = 64, pause: Callable[[], None] | None = None,
             stop: threading.Event | None = None) -> None:
        while self.pos < upto and not (stop is not None and stop.is_set()):
            with self.lock:
                frames = self.trace.frames[self.pos:min(upto, self.pos + chunk)]
                out = self.server.service.pipeline.process(frames, self.traffic, 1000)
                by_port: dict[int, list] = {}
                for port, f in out:
                    shim, _ = pl.strip_shim(f)
                    by_port.setdefault(port, []).append(
                        (f, self.trace.ts[self.seq_base + shim.seq]))
                for port, items in by_port.items():
                    if port not in self.feeds:
                        self.dropped += len(items)
                        continue
                    self.feeds[port].send_multipart(feed_message(
                        [f for f, _ in items], np.array([t for _, t in items])))
                    self.sent[port] += len(items)
                self.pos += len(frames)
            if pause:
                pause()

    def end(self, ports) -> None:
        for p in ports:
            self.feeds[p].send_multipart(END)

    def close(self) -> None:
        for s in self.feeds.values():
            s.close(self.linger_ms)
        self.ctx.term()
