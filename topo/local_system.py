"""The system on one machine, without Mininet, for the benchmarks and the tests.

The pieces of DESIGN §3 in one place: the software target's P4Runtime server (in
process), the controller (:func:`system_config` is its config: NF hosts fed by
``frame_feed`` sources, their bricks as actors on a local Ray cluster,
:class:`lego.topo.ray_cluster.LocalRay`, one node per NF host), and a
:class:`Driver` that plays the traffic host and the switch's egress links: frames
go through the target's pipeline model and each output frame into the
``frame_feed`` source of its egress port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from lego.bricks.feed import END, feed_message
from lego.switch import pipeline as pl

#: the northbound's token of such a system (:func:`system_config` writes it)
TOKEN = "local-system-token-0123456789abcdef"


def system_config(switch: str, work: Path, model: str | Path, hosts: list[dict],
                  **sections: dict) -> dict:
    """A controller config for a feed-driven system; ``sections`` update its tables."""
    cfg: dict[str, Any] = {
        "switch": {"address": switch, "traffic_ports": [1]},
        "northbound": {"bind": "127.0.0.1:0", "token_file": str(work / "token")},
        "nf": {"semantics": "lego", "model": str(model), "results": str(work / "results"),
               "source": "feed", "fe_initial": 1},
        "graph": {"batch": 256, "flush_ms": 10, "stateless": 1},
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
    """Where such a system's bricks keep their sockets and logs (a host's, if given)."""
    return work / "bricks" / host if host else work / "bricks"


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
