"""The northbound interface: a brick registers, heartbeats and reports its load.

:class:`Northbound` is the protocol a brick talks to; two implementations:

- :class:`ZmqNorthbound`: JSON messages on a PUSH socket to the host's brick
  supervisor (its Ray actor or a graph file's runner, which keep them in a
  :class:`LoadBoard`);
- :class:`LocalNorthbound`: an in-process list (tests, single-process runs).

The controller reads them through the supervisor (or replaces ZmqNorthbound with a
gRPC client) without touching the bricks. Messages are plain dicts:
``{"op": "register" | "load" | "bye", "brick": "uln/1", ...}``; a load report
doubles as the heartbeat.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import zmq

HEARTBEAT_S = 0.25  # a brick's load report period (doubles as its heartbeat)


@dataclass
class LoadReport:
    """What a brick says about its load (cumulative counters + rates)."""

    brick: str
    pid: int
    now: float
    batches_in: int = 0  # messages taken from the input queue
    packets_in: int = 0
    packets_out: int = 0
    sent: dict[str, list[int]] = field(default_factory=dict)  # target -> per replica
    dropped: int = 0  # batches (or pieces) not delivered, all causes
    dropped_rows: int = 0
    cpu_s: float = 0.0  # process CPU time (user + system)
    busy_s: float = 0.0  # wall time spent handling batches
    logic_cpu_s: float = 0.0  # CPU time in the NF's logic (a source's: reading its input)
    stages_cpu_s: dict[str, float] = field(default_factory=dict)  # lego.bricks.stages
    blocked_s: float = 0.0  # wall time blocked on a full next-hop queue
    pps: float = 0.0  # packets in per second since the previous report
    batch_latency_ms: float = 0.0  # mean handling time per batch since the last report
    e2e_latency_ms: float = 0.0  # mean source-to-here latency since the last report
    rss_mb: float = 0.0
    state: str = "running"  # running | done
    ended_from: list[str] = field(default_factory=list)  # upstream bricks whose end arrived
    extra: dict = field(default_factory=dict)  # the logic's own counters (``logic.report()``)

    def as_dict(self) -> dict:
        return asdict(self)


class Northbound(Protocol):
    def register(self, brick: str, pid: int, inlet: str, control: str) -> None: ...

    def report(self, load: LoadReport) -> None: ...

    def bye(self, brick: str, status: str, detail: dict | None = None) -> None: ...

    def close(self) -> None: ...


def ack_message(brick: str, reply: dict) -> dict:
    """A brick's answer to a control message that asked for one (``"id"``)."""
    return {**reply, "op": "ack", "brick": brick}


class LocalNorthbound:
    """Keeps every message in ``messages`` (the supervisor's view, in process)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def register(self, brick: str, pid: int, inlet: str, control: str) -> None:
        self.messages.append({"op": "register", "brick": brick, "pid": pid, "inlet": inlet,
                              "control": control})

    def report(self, load: LoadReport) -> None:
        self.messages.append({"op": "load", **load.as_dict()})

    def bye(self, brick: str, status: str, detail: dict | None = None) -> None:
        self.messages.append({"op": "bye", "brick": brick, "status": status,
                              "detail": detail or {}})

    def ack(self, brick: str, reply: dict) -> None:
        self.messages.append(ack_message(brick, reply))

    def close(self) -> None:
        pass


class ZmqNorthbound(LocalNorthbound):
    """Sends every message to the supervisor's report socket (PUSH, never blocks long)."""

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        super().__init__()
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.connect(address)

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(json.dumps(message).encode(), zmq.NOBLOCK)
        except zmq.Again:  # the supervisor is gone or stalled: reports are best effort
            pass

    def register(self, brick: str, pid: int, inlet: str, control: str) -> None:
        self._send({"op": "register", "brick": brick, "pid": pid, "inlet": inlet,
                    "control": control})

    def report(self, load: LoadReport) -> None:
        self._send({"op": "load", **load.as_dict()})

    def bye(self, brick: str, status: str, detail: dict | None = None) -> None:
        self._send({"op": "bye", "brick": brick, "status": status, "detail": detail or {}})

    def ack(self, brick: str, reply: dict) -> None:
        self._send(ack_message(brick, reply))

    def close(self) -> None:
        self.sock.close(1000)


@dataclass
class LoadBoard:
    """A supervisor's aggregate of its bricks' reports.

    Queue depth of a brick = batches its upstream bricks report sent to it minus
    the batches it reports taken (ZeroMQ does not expose queue lengths), so it
    counts batches in the sender's queue, the kernel and the receiver's queue.
    """

    latest: dict[str, dict] = field(default_factory=dict)
    registered: dict[str, dict] = field(default_factory=dict)
    finished: dict[str, dict] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def update(self, message: dict, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        brick = message.get("brick", "?")
        self.last_seen[brick] = now
        op = message.get("op")
        if op == "register":
            self.registered[brick] = message
        elif op == "load":
            self.latest[brick] = message
        elif op == "bye":
            self.finished[brick] = message

    def queue_depth(self, brick: str, target: str, replica: int) -> int:
        """Batches sent to ``brick`` (replica ``replica`` of graph node ``target``)
        and not yet taken by it."""
        sent = sum(r.get("sent", {}).get(target, [0] * (replica + 1))[replica]
                   if len(r.get("sent", {}).get(target, [])) > replica else 0
                   for r in self.latest.values())
        taken = self.latest.get(brick, {}).get("batches_in", 0)
        return max(0, sent - taken)

    def silent(self, now: float, timeout: float = 4 * HEARTBEAT_S) -> list[str]:
        """Registered bricks not heard from for ``timeout`` seconds (and not done)."""
        return [b for b in self.registered if b not in self.finished
                and now - self.last_seen.get(b, now) > timeout]
