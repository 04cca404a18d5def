"""The brick runtime: identity, queues, routing, northbound, lifecycle.

A brick replica is one OS process running :class:`Brick`:

- identifier :class:`BrickId` (graph node = brick type instance, serial = replica);
- a bounded input queue (:class:`~lego.bricks.transport.Inlet`) and a
  control socket;
- one routing table per outgoing edge (:class:`~lego.bricks.routing.RoutingTable`);
- a northbound client (:class:`~lego.bricks.northbound.Northbound`);
- its logic (a :class:`Logic`), which holds its state in a separate object
  (``logic.state``) so that a keyed brick's state can be exported and imported by
  owner bucket (:class:`lego.nfs.KeyedState`, moved by :mod:`lego.bricks.moves`).

Lifecycle, as in openNetVM's nflib: :meth:`Brick.init` (sockets, register),
:meth:`Brick.run` (the loop, with the logic as handler), :meth:`Brick.stop`.

Semantics of a run (the brick's supervisor: its Ray actor,
:mod:`lego.bricks.actor`, or a graph file's runner,
:class:`~lego.bricks.agent.BrickAgent`): a source brick waits for ``go``
from its supervisor, then emits
batches and finally an ``end`` marker to every next-hop replica. Any other brick
handles each batch in arrival order and finishes when it has an ``end`` from each
of its upstream replicas (the supervisor sends ``upstream_dead`` for one that died,
so a failure drains the graph instead of hanging it); it then flushes its logic
and forwards ``end``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zmq

from lego.bricks import recovery
from lego.bricks.northbound import HEARTBEAT_S, LoadReport, Northbound
from lego.bricks.routing import RoutingTable, Splitter
from lego.bricks.shm import socket_address
from lego.bricks.stages import SOURCE_READ, StageClock
from lego.bricks.transport import Control, Inlet, Outlet, rows_of
from lego.bricks.wire import Message, encode, epoch_start

log = logging.getLogger(__name__)

HOLD_S = 30.0  # longest a finished brick waits for its supervisor's `exit`
_DONE = object()  # the end of a source's batches


@dataclass(frozen=True)
class BrickId:
    """Type (graph node) + serial (replica index): ``"uln/1"``."""

    node: str
    serial: int

    def __str__(self) -> str:
        return f"{self.node}/{self.serial}"


@dataclass
class OutletSpec:
    target: str
    policy: str
    addresses: list[str]


@dataclass
class BrickSpec:
    """Everything a brick process needs, as JSON-able data (built by its supervisor)."""

    node: str
    type: str
    serial: int
    control: str
    report: str
    inlet: str | None = None
    upstream: int = 0  # upstream replicas whose `end` this brick waits for
    outlets: list[OutletSpec] = field(default_factory=list)
    hwm: int = 8
    overflow: str = "block"
    options: dict[str, Any] = field(default_factory=dict)
    cpus: list[int] | None = None
    #: more addresses the input queue binds (the one PULL socket, so ipc and tcp
    #: senders feed one queue): a decision brick whose ULN replica runs on another
    #: host takes its scores over tcp (:meth:`Brick.bind`)
    binds: list[str] = field(default_factory=list)
    #: a replica of the next hop run in this process (graph edge ``inline = true``):
    #: {node, type, serial, options, outlets}; see :class:`InlineReplica`
    inline: dict[str, Any] | None = None
    #: earlier incarnations of this brick (its supervisor restarted it): a source
    #: numbers its batches from this epoch (:data:`~lego.bricks.wire.EPOCH_BITS`)
    epoch: int = 0
    #: a source: MiB of the batches it sent kept for a replay (0: none), and a
    #: worker: of its output batches kept to be sent again (lego.bricks.recovery)
    replay_log_mib: float = 0.0
    output_log_mib: float = 0.0

    @property
    def id(self) -> BrickId:
        return BrickId(self.node, self.serial)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BrickSpec:
        d = dict(d)
        d["outlets"] = [OutletSpec(**o) for o in d.get("outlets", [])]
        return cls(**d)


class Logic(Protocol):
    """What a brick does; ``state`` is a separate object holding what it keeps. A
    logic may also have ``resume()``: called when it starts as a restarted
    incarnation (``spec.epoch`` > 0), whose input stream is already under way."""

    state: Any

    def handle(self, msg: Message) -> list[Message]: ...

    def finish(self, meta: dict[str, Any]) -> list[Message]: ...


class SourceLogic(Logic, Protocol):
    def produce(self) -> Iterator[Message]: ...


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class Brick:
    """One brick replica: queues, routing tables and northbound around a logic."""

    def __init__(self, spec: BrickSpec, logic: Logic, northbound: Northbound,
                 ctx: zmq.Context | None = None) -> None:
        self.spec = spec
        self.id = spec.id
        self.logic = logic
        if spec.epoch and hasattr(logic, "resume"):
            logic.resume()
        self.northbound = northbound
        self.ctx = ctx or zmq.Context.instance()
        self.inlet: Inlet | None = None
        self.control: Control | None = None
        self.outlets: dict[str, Outlet] = {}
        self.started = False
        self.stopping = False
        self.exiting = False
        self.draining = False
        self._deferred: list[dict] = []
        self.ends = 0
        self.dead_upstream: list[str] = []
        self.ended_from: list[str] = []
        self.end_meta: dict[str, Any] = {}
        # load accounting
        self.packets_in = 0
        self.packets_out = 0
        self.busy_s = 0.0
        self.clock = StageClock()  # CPU per stage (reset once the brick is up)
        self._count_due: str | None = None  # a source owes this next hop its count
        #: called once, after the first data batch (the process's one-time warm-up)
        self.warm_hook: Callable[[], Any] | None = None
        self._batches_since = 0
        self._busy_since = 0.0
        self._lat_sum = 0.0
        self._lat_n = 0
        self._last_report = 0.0
        self._packets_at_report = 0
        self.first_in = 0.0  # wall clock of the first data batch (scale-out latency)
        self.inline: InlineReplica | None = None
        # exact recovery (lego.bricks.recovery): what this brick sent, kept to send again
        mib = spec.replay_log_mib or spec.output_log_mib
        self.sent_log = recovery.SentLog(mib) if mib > 0 else None
        self._again: list[Message] = []  # a replay or resend due, sent from the loop
        self._emitting = False  # inside a send (control is served while it blocks)
        self._ends_held: list[Message] = []  # source ends the logic cannot take yet

    # ------------------------------------------------------------ lifecycle

    def init(self) -> None:
        """Bind the queues, connect the next hops, register northbound."""
        if self.spec.inlet:
            self.inlet = Inlet(self.ctx, self.spec.inlet, self.spec.hwm)
            for address in self.spec.binds:
                self.inlet.sock.bind(socket_address(address))
        self.control = Control(self.ctx, self.spec.control)
        for o in self.spec.outlets:
            table = RoutingTable(o.target, o.addresses, o.policy)
            self.outlets[o.target] = Outlet(self.ctx, table, self.spec.hwm, self.spec.overflow)
        if self.spec.inline:
            self.inline = InlineReplica(self.spec.inline, self.ctx, self.spec.hwm,
                                        self.spec.overflow)
        if len(self.outlets) == 1 and hasattr(self.logic, "bind_output"):
            # the logic may write its output straight into the next hop's slot
            self.logic.bind_output(next(iter(self.outlets.values())).lend)
        self.northbound.register(str(self.id), os.getpid(), self.spec.inlet or "",
                                 self.spec.control)
        self._last_report = time.monotonic()
        self.clock = StageClock()  # CPU from here on: not imports or model loading

    def run(self, handler: Logic | None = None) -> None:
        """Process until the input ends (or ``stop``); the logic is the handler."""
        if handler is not None:
            self.logic = handler
        if hasattr(self.logic, "produce"):
            self._run_source()
        else:
            self._run_worker()
        self._report(final=True)
        self.northbound.bye(str(self.id), "stopped" if self.stopping else "done",
                            {"dead_upstream": self.dead_upstream})
        self._hold()

    def _hold(self) -> None:
        """Keep the sockets open until the supervisor says ``exit`` (it does once every
        next hop has exited): closing a PUSH socket early can lose the messages
        still in flight at the receiver, whatever the linger."""
        if not self.outlets or self.stopping:
            return
        deadline = time.monotonic() + HOLD_S
        self.exiting = False
        while not self.exiting and not self.stopping and time.monotonic() < deadline:
            if self.control.sock.poll(int(HEARTBEAT_S * 1000)):
                self._control(self.control.recv())
            self._send_again()  # a replay asked for after the end
        if not self.exiting and not self.stopping:
            log.warning("%s: no exit from the supervisor within %.0f s; leaving", self.id, HOLD_S)

    def stop(self) -> None:
        """Leave the loop at the next batch boundary (no flush, no end marker)."""
        self.stopping = True

    def close(self) -> None:
        for o in self.outlets.values():
            o.close()
        if self.inline is not None:
            self.inline.close()
        if self.inlet is not None:
            self.inlet.close()
        if self.control is not None:
            self.control.close()
        self.northbound.close()

    # ------------------------------------------------------------ loops

    def _run_source(self) -> None:
        while not self.started and not self.stopping:
            if self.control.sock.poll(1000):
                self._control(self.control.recv())
            self._maybe_report()
        if self.stopping:
            return
        batch0 = epoch_start(self.spec.epoch)
        # a fused graph (lego.bricks.chain.SourceChain) numbers its head's batches and
        # counts what its head took: what it yields is its tail's output
        fused = hasattr(self.logic, "rows_taken")
        if fused:
            self.logic.batch0 = batch0
        batches = self.logic.produce()
        while True:
            if self._count_due:  # between batches: never inside a send (see _control)
                self._send_count(self.outlets[self._count_due])
            self._send_again()
            with self.clock.stage("logic"):  # CPU, not wall: the source sleeps in its reads
                msg = next(batches, _DONE)
            if msg is _DONE:
                break
            self._serve_control()
            self._retry_deferred()  # (a fused graph's keyed member defers exports too)
            if self.stopping:
                batches.close()
                return
            if fused:
                self.packets_in = self.logic.rows_taken
            elif msg is not None:  # (one produced as the drain came is sent: it is counted)
                msg.batch += batch0
                self.packets_in += msg.n
            if self.packets_in and not self.first_in:
                self.first_in = time.time()
            if msg is not None:
                self._emit([msg])
                if self.sent_log is not None:
                    self.sent_log.append(msg)
            if self.draining:
                batches.close()  # its last counters (kernel drops) before the end meta
                break
            self._maybe_report()
        meta = {**getattr(self.logic, "end_meta", lambda: {})(), "batch0": batch0}
        self._emit(self.logic.finish(meta))
        self._emit([Message(kind="end", src=str(self.id), meta=meta)])
        if self.inline is not None:
            self.inline.finish(meta, self._serve_control)

    def _run_worker(self) -> None:
        poller = zmq.Poller()
        poller.register(self.inlet.sock, zmq.POLLIN)
        poller.register(self.control.sock, zmq.POLLIN)
        while self.ends < self.spec.upstream and not self.stopping:
            events = dict(poller.poll(int(HEARTBEAT_S * 1000)))
            if self.control.sock in events:
                self._control(self.control.recv())
            if self.inlet.sock in events:
                with self.clock.stage("receive"):
                    msg = self.inlet.recv()
                self._one(msg)
            self._retry_deferred()
            self._send_again()
            self._maybe_report()
        if self.stopping:
            return
        self._emit(self.logic.finish(self.end_meta))
        self._emit([Message(kind="end", src=str(self.id), meta=self.end_meta)])
        if self.inline is not None:
            self.inline.finish(self.end_meta, self._serve_control)

    def _one(self, msg: Message) -> None:
        log.debug("%s: got %s batch %d part %d/%d from %s", self.id, msg.kind, msg.batch,
                  msg.part, msg.parts, msg.src)
        if msg.kind == "count":  # a source's frame count (a keyed brick counts from it)
            getattr(self.logic, "count", lambda m: None)(msg)
            return
        if msg.kind == "end":
            if not getattr(self.logic, "end_ready", lambda meta: True)(msg.meta):
                self._ends_held.append(msg)  # frames a replay owes come first
                return
            self.ends += 1
            self.ended_from.append(msg.src)
            log.info("%s: end from %s (%d of %d)", self.id, msg.src, self.ends, self.spec.upstream)
            for k, v in msg.meta.items():
                if isinstance(v, int | float) and k in self.end_meta and k != "batches":
                    self.end_meta[k] = max(self.end_meta[k], v)
                else:
                    self.end_meta.setdefault(k, v)
            return
        t = time.perf_counter()
        if not self.first_in:
            self.first_in = time.time()
        self.packets_in += rows_of(msg)
        with self.clock.stage("logic"):
            outs = self.logic.handle(msg)
        dt = time.perf_counter() - t
        if self.warm_hook is not None:
            self.warm_hook, hook = None, self.warm_hook
            hook()
        self.busy_s += dt
        self._busy_since += dt
        self._batches_since += 1
        if msg.t0:
            self._lat_sum += time.time() - msg.t0
            self._lat_n += 1
        self._emit(outs)

    def _emit(self, msgs: list[Message]) -> None:
        for msg in msgs:
            if msg.kind == "data":
                self.packets_out += msg.n
                if self.sent_log is not None and self.spec.output_log_mib > 0:
                    self.sent_log.append(msg, copy=True)
        self._emitting = True
        try:
            with self.clock.stage("send"):
                emit(self.outlets, msgs, getattr(self.logic, "split", None),
                     self._serve_control, str(self.id), self.inline)
        finally:
            self._emitting = False

    # ------------------------------------------------------------ control

    def _serve_control(self) -> None:
        while self.control.sock.poll(0):
            self._control(self.control.recv())

    def _control(self, cmd: dict) -> None:
        with self.clock.stage("control"):
            self._control_op(cmd)

    def _control_op(self, cmd: dict) -> None:
        op = cmd.get("op")
        reply: dict | None = {"ok": True}
        if op == "go":
            self.started = True
        elif op == "exit":
            self.exiting = True
        elif op == "stop":
            self.stopping = True
        elif op == "drain":  # a source: end the input now; the graph drains behind it
            self.draining = True
        elif op == "remove_replica":
            outlet = self.outlets.get(cmd.get("target", "")) or \
                (self.inline.outlets.get(cmd.get("target", "")) if self.inline else None)
            if outlet is not None:
                log.warning("%s: next hop %s/%s removed", self.id, cmd["target"], cmd["index"])
                outlet.kill(int(cmd["index"]))
        elif op == "route":
            outlet = self.outlets.get(cmd.get("target", ""))
            if outlet is None and cmd.get("target") in getattr(self.logic, "names", ()):
                reply = {"ok": True, "fused": True}  # a hop inside this process: a call
            elif outlet is not None:
                if cmd.get("addresses") is not None:
                    reroute(outlet, cmd["addresses"], cmd.get("owner"),
                            retire=cmd.get("retire", ()), src=str(self.id))
                    if hasattr(self.logic, "produce"):
                        # sent by the source's loop, not here: this can run inside a
                        # blocked send, whose pending batch would then go twice
                        self._count_due = cmd["target"]
                else:
                    outlet.table.update(None, cmd.get("owner"))
            else:
                reply = {"ok": False, "error": f"no outlet to {cmd.get('target')!r}"}
        elif op == "bind":  # one more address for the input queue (e.g. tcp)
            reply = self.bind(cmd.get("address", ""))
        elif op == "add_upstream":  # a replica added upstream: wait for its end too
            self.spec.upstream += int(cmd.get("n", 1))
        elif op in ("trim", "replay", "resend"):
            reply = self._log_op(cmd)
        elif op in ("pause_frames", "inject_frames") and hasattr(self.logic, "pause"):
            reply = self._inject_op(cmd)
        elif op == "checkpoint" and self._emitting:
            # not inside a blocked send: the state would cover outputs not yet sent
            self._deferred.append(cmd)
            reply = None
        elif op == "upstream_dead":
            self.ends += 1
            self.dead_upstream.append(cmd.get("brick", "?"))
            log.warning("%s: upstream %s died; treating it as ended", self.id, cmd.get("brick"))
        elif hasattr(self.logic, "control"):
            reply, outs = self.logic.control(cmd, self.packets_in)
            if reply is None:  # not yet (e.g. an export waiting for its packets)
                self._deferred.append(cmd)
            self._emit(outs)
        else:
            log.warning("%s: unknown control op %r ignored", self.id, op)
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        if reply is not None and "id" in cmd and hasattr(self.northbound, "ack"):
            self.northbound.ack(str(self.id), {**reply, "id": cmd["id"], "command": op})

    def _log_op(self, cmd: dict) -> dict:
        """The sent log (lego.bricks.recovery): ``trim`` what a checkpoint covers
        (``upto``: a position), ``replay`` the source batches from a position,
        ``resend`` the output batches from a batch id. What goes again is sent from
        the loop, between batches (this can run inside a blocked send)."""
        log_ = self.sent_log
        if log_ is None:
            return {"ok": False, "error": f"{self.id} keeps no log of what it sent"}
        op = cmd["op"]
        if op == "trim":
            if cmd.get("epoch") is not None and int(cmd["epoch"]) != self.spec.epoch:
                return {"ok": False, "error": "a checkpoint of another incarnation's frames"}
            upto = int(cmd["upto"])
            return {"ok": True, "trimmed": log_.trim(
                lambda m: recovery.position(m) + m.n > upto), **log_.report()}
        if op == "replay":
            if any(len(o.socks) > 1 for o in self.outlets.values()):
                return {"ok": False, "error": f"{self.id} splits its batches over several "
                        "keyed replicas: a replay would reach them all"}
            msgs, first = recovery.replayable(log_, int(cmd["from"]))
        else:
            b = int(cmd["from_batch"])
            msgs = log_.select(lambda m: m.batch >= b)
            first = log_.entries[0][0].batch if log_.entries else None
        self._again += msgs
        return {"ok": True, "batches": len(msgs), "rows": sum(m.n for m in msgs),
                "first": first, "epoch": self.spec.epoch, "sent": self.packets_in,
                **log_.report()}

    def _inject_op(self, cmd: dict) -> dict:
        """A lost port's frames ahead of this port's own (lego.control.recovery):
        ``pause_frames`` (where they will start: a position in this source's
        incarnation ``epoch``), then ``inject_frames`` (from the file at ``path``:
        the frames back to back, their lengths in ``lens``)."""
        if cmd["op"] == "pause_frames":
            return {**self.logic.pause(), "epoch": self.spec.epoch}
        data = Path(cmd["path"]).read_bytes()
        lens = np.asarray(cmd["lens"], dtype=np.int64)
        if int(lens.sum()) != len(data):
            return {"ok": False, "error": f"{len(data)} bytes injected, the lengths say "
                    f"{int(lens.sum())}"}
        ends = np.cumsum(lens).tolist()
        starts = [0, *ends][:len(ends)]
        return self.logic.inject([data[a:b] for a, b in zip(starts, ends, strict=True)])

    def _send_again(self) -> None:
        """Send what a replay or resend asked for, in order, on every outgoing edge
        (not counted as output again), then take any source end held for it."""
        while self._again:
            msg = self._again.pop(0)
            for outlet in self.outlets.values():
                for index, part in outlet.table.route(msg, getattr(self.logic, "split", None)):
                    outlet.send(index, part, self._serve_control)
        if self._ends_held and self.logic is not None:
            held, self._ends_held = self._ends_held, []
            for msg in held:
                self._one(msg)

    def _send_count(self, outlet: Outlet) -> None:
        """A source re-routed to its one next hop (restarted, it may hold no count):
        the frames it has sent so far, in order with its batches (lego.bricks.moves).
        A source that splits by key sends none: its count is no replica's."""
        self._count_due = None
        if len(outlet.socks) == 1:
            outlet.send(0, Message(kind="count", src=str(self.id),
                                   meta={"taken0": self.packets_in}), self._serve_control)

    def bind(self, address: str) -> dict:
        """Bind the input queue to one more address (idempotent): a ZeroMQ socket
        binds several endpoints and fair-queues their senders, so the brick still
        reads one queue in arrival order."""
        if self.inlet is None:
            return {"ok": False, "error": "a source brick has no input queue"}
        if address == self.spec.inlet or address in self.spec.binds:
            return {"ok": True, "address": address}
        try:
            self.inlet.sock.bind(socket_address(address))
        except zmq.ZMQError as exc:
            return {"ok": False, "error": f"bind {address}: {exc}"}
        self.spec.binds.append(address)
        return {"ok": True, "address": address}

    def _retry_deferred(self) -> None:
        """Control messages the logic could not answer yet, tried after each batch."""
        if not self._deferred:
            return
        waiting, self._deferred = self._deferred, []
        for cmd in waiting:
            self._control(cmd)

    # ------------------------------------------------------------ northbound

    def _maybe_report(self) -> None:
        if time.monotonic() - self._last_report >= HEARTBEAT_S:
            self._report()

    def load(self) -> LoadReport:
        now = time.monotonic()
        span = max(now - self._last_report, 1e-9)
        stages = self.clock.seconds(float(getattr(self.logic, SOURCE_READ, 0.0)))
        return LoadReport(
            brick=str(self.id), pid=os.getpid(), now=time.time(),
            batches_in=self.inlet.received if self.inlet else 0,
            packets_in=self.packets_in, packets_out=self.packets_out,
            sent={t: list(o.sent) for t, o in self.outlets.items()},
            dropped=sum(o.dropped for o in self.outlets.values()),
            dropped_rows=sum(o.dropped_rows for o in self.outlets.values()),
            cpu_s=time.process_time() - self.clock.process0,
            busy_s=self.busy_s + float(getattr(self.logic, "busy_s", 0.0)),
            logic_cpu_s=stages["logic"] + stages["receive"] if self.inlet is None
            else stages["logic"], stages_cpu_s=stages,
            blocked_s=sum(o.blocked_s for o in self.outlets.values()),
            pps=(self.packets_in - self._packets_at_report) / span,
            batch_latency_ms=1e3 * self._busy_since / max(self._batches_since, 1),
            e2e_latency_ms=1e3 * self._lat_sum / max(self._lat_n, 1),
            rss_mb=_rss_mb(), ended_from=list(self.ended_from),
            extra={**getattr(self.logic, "report", dict)(), **recovery.report(self.logic),
                   **({"first_in": self.first_in} if self.first_in else {}),
                   **self._shm_kept(),
                   **({"inline": self.inline.report()} if self.inline else {})})

    def _shm_kept(self) -> dict[str, int]:
        """Shared-memory slots whose arrays outlived their message (each costs the
        sender a fresh segment, page faults included): 0 in a healthy graph."""
        out = {}
        if self.inlet is not None and self.inlet.shared.kept:
            out["shm_kept_in"] = self.inlet.shared.kept
        sent = sum(getattr(s, "kept", 0) for o in self.outlets.values() for s in o.socks if s)
        if sent:
            out["shm_kept_out"] = sent
        return out

    def _report(self, final: bool = False) -> None:
        with self.clock.stage("report"):
            report = self.load()
            if final:
                report.state = "done"
            self.northbound.report(report)
        self._last_report = time.monotonic()
        self._packets_at_report = self.packets_in
        self._batches_since = 0
        self._busy_since = 0.0
        self._lat_sum = 0.0
        self._lat_n = 0


def emit(outlets: dict[str, Outlet], msgs: list[Message], split: Splitter | None,
         serve_control: Callable[[], None], src: str,
         inline: InlineReplica | None = None) -> None:
    """Send messages on every outgoing edge, each routed by its table. A data
    batch for the next hop that runs a replica inline goes to a remote replica
    with room, else to the inline one (which never waits)."""
    for msg in msgs:
        for outlet in outlets.values():
            for index, part in outlet.table.route(msg, split):
                log.debug("%s: send %s batch %d part %d to %s/%d", src, part.kind, part.batch,
                          part.part, outlet.table.target, index)
                if inline is not None and part.kind == "data" and \
                        outlet.table.target == inline.id.node:
                    if not outlet.try_send(index, part):
                        inline.handle(part, serve_control)
                else:
                    outlet.send(index, part, serve_control)


class InlineReplica:
    """A replica of a stateless next-hop brick run inside this brick's process
    (graph edge ``inline = true``): batches the remote replicas have no room for
    go through its logic as a function call, and its output goes to its own next
    hops. It has its own identity (its serial follows the remote replicas'),
    sends its own ``end`` after its host's, and reports its work in the host's
    load report (``extra.inline``)."""

    def __init__(self, spec: dict[str, Any], ctx: zmq.Context, hwm: int, overflow: str) -> None:
        from lego.bricks.catalog import make_logic

        self.id = BrickId(spec["node"], int(spec["serial"]))
        self.logic = make_logic(spec["type"], spec["options"], self.id)
        self.outlets = {o["target"]: Outlet(ctx, RoutingTable(o["target"], o["addresses"],
                                                               o["policy"]), hwm, overflow)
                        for o in spec["outlets"]}
        self.batches = 0
        self.packets = 0
        self.cpu_s = 0.0

    def handle(self, msg: Message, serve_control: Callable[[], None]) -> None:
        t = time.thread_time()
        outs = self.logic.handle(msg)
        self.cpu_s += time.thread_time() - t
        self.batches += 1
        self.packets += msg.n
        emit(self.outlets, outs, getattr(self.logic, "split", None), serve_control, str(self.id))

    def finish(self, meta: dict[str, Any], serve_control: Callable[[], None]) -> None:
        outs = self.logic.finish(meta) + [Message(kind="end", src=str(self.id), meta=meta)]
        emit(self.outlets, outs, getattr(self.logic, "split", None), serve_control, str(self.id))

    def report(self) -> dict[str, Any]:
        extra = getattr(self.logic, "report", dict)()
        return {"brick": str(self.id), "batches": self.batches, "packets": self.packets,
                "cpu_s": round(self.cpu_s, 6), **extra}

    def close(self) -> None:
        for o in self.outlets.values():
            o.close()


def reroute(outlet: Outlet, addresses: list[str], owner=None, retire=(), src: str = "") -> None:
    """Replace an outlet's replica list without losing what is queued: sockets to
    addresses that stay are kept (dead ones reconnected), new addresses are
    connected, and a removed one is sent an ``end`` marker when it is in
    ``retire`` (it finishes its queue and ends) and closed with linger."""
    old = {a: (sock, sent) for a, sock, sent in
           zip(outlet.table.addresses, outlet.socks, outlet.sent, strict=True)}
    outlet.table.update(list(addresses), owner)
    socks, sent = [], []
    for a in addresses:
        sock, n = old.pop(a, (None, 0))
        socks.append(sock if sock is not None else outlet._connect(a))
        sent.append(n)
    outlet.socks, outlet.sent = socks, sent
    for a, (sock, _) in old.items():
        if sock is None:
            continue
        if a in retire:
            for frame in [encode(Message(kind="end", src=src))]:
                sock.send_multipart(frame, copy=False)
        sock.close(2000)


def workdir_ok(path: Path) -> Path:
    """The work directory for ipc sockets, created if needed."""
    path.mkdir(parents=True, exist_ok=True)
    return path
