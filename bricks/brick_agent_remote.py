"""The brick agent of one NF host, driven by the controller over the northbound API.

    lego agent --controller HOST:PORT --token-file F --host NAME --cores N --workdir DIR

:class:`RemoteAgent` registers with the controller (host, cores, its own
management address, work directory, and the bricks it already runs, so that a
restarted controller rebuilds its registry without touching them), heartbeats
every :data:`HEARTBEAT_S` with its bricks' newest load reports (the
:class:`~lego.bricks.brick_northbound.LoadBoard`, queue depths included), and
serves the ``Agent`` service: start/stop bricks (OS processes, as
:class:`~lego.bricks.brick_agent.BrickAgent` starts them), control messages
(routing tables, upstream counts, holds), state export/import (blobs travel as
bytes over gRPC and as files in the work directory between agent and brick).

Threads: the watch loop owns the report socket and the processes (a death is
seen within :data:`WATCH_S`); the uplink thread owns the controller channel
(heartbeats, deaths reported at once, re-registration when the controller does
not know this agent: after a controller restart); gRPC threads serve commands
(control sockets are used under a lock). A dead brick: its upstream bricks here
are told to skip it at once (``remove_replica``); what else changes (restart,
downstream accounting) is the controller's decision.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import zmq

from lego.bricks.brick_agent import ONE_CORE_ENV, BrickProcess, push_control
from lego.bricks.brick_errors import BrickError
from lego.bricks.brick_northbound import LoadBoard
from lego.bricks.brick_runtime import BrickSpec
from lego.bricks.brick_types import BRICK_TYPES
from lego.cpu_quota import group_usage_s
from lego.logs import log_tail

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.25  # to the controller (the brief: <= 0.3 s)
WATCH_S = 0.05  # process watch period: a death is noticed within this
ACK_TIMEOUT_S = 10.0


class RemoteAgent:
    """One host's agent. ``start()`` then ``run(stop)`` (or ``serve_forever``);
    ``close()`` stops every brick it started."""

    def __init__(self, controller: str, token: str, host: str, cores: float, workdir: Path,
                 bind: str | None = None, env: dict[str, str] | None = None) -> None:
        from lego.control import northbound as nb

        self.nb = nb
        self.host = host
        self.cores = cores
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.incarnation = uuid.uuid4().hex[:12]
        self.token = token
        self.env = dict(os.environ, **ONE_CORE_ENV, **(env or {}))
        self.ctx = zmq.Context()
        self.report_address = f"ipc://{self.workdir / 'agent.sock'}"
        self._reports = self.ctx.socket(zmq.PULL)
        self._reports.setsockopt(zmq.LINGER, 0)
        self._reports.bind(self.report_address)
        self.board = LoadBoard()
        self.procs: dict[str, BrickProcess] = {}
        self._lock = threading.RLock()  # procs, control sockets, board
        self._ctl: dict[str, zmq.Socket] = {}
        self._acks: dict[int, tuple[threading.Event, list]] = {}
        self._ids = itertools.count(1)
        self._deaths: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.registered = False
        self.events: list[dict] = []
        self.controller = nb.controller_client(controller, token)
        self.server = nb.Server(bind or f"{local_address_towards(controller)}:0", token,
                                nb.pb_grpc.add_AgentServicer_to_server, _AgentService(self))
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> None:
        """Serve the Agent API, then start the watch and uplink threads."""
        self.server.start()
        for name, target in (("watch", self._watch_loop), ("uplink", self._uplink_loop)):
            t = threading.Thread(target=_guarded(target, self._stop), name=f"agent-{name}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        log.info("agent %s: serving on %s, controller %s", self.host, self.address,
                 self.controller.address)

    def wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.registered and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.registered

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.wait(0.2) and not self._stop.is_set():
            pass

    def close(self, grace: float = 3.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        self.server.stop()
        self.stop_all(grace)
        for s in self._ctl.values():
            s.close(0)
        self._ctl.clear()
        self._reports.close(0)
        self.ctx.term()
        self.controller.close()

    def stop_all(self, grace: float = 3.0) -> None:
        with self._lock:
            procs = list(self.procs.values())
        for p in procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    # ------------------------------------------------------------ bricks

    def start_bricks(self, specs: list[BrickSpec], timeout: float = 30.0) -> None:
        """Start brick processes; return once each registered (else BrickError)."""
        names = []
        for spec in specs:
            name = str(spec.id)
            path = self.workdir / f"{spec.node}-{spec.serial}.json"
            path.write_text(json.dumps(asdict(spec)))
            log_path = self.workdir / f"{spec.node}-{spec.serial}.log"
            with self._lock:
                old = self.procs.get(name)
                if old is not None and old.popen.poll() is None:
                    raise BrickError(f"start {name} on {self.host}: already running "
                                     f"(pid {old.popen.pid})")
                self.board.registered.pop(name, None)
                self.board.finished.pop(name, None)
                self.board.latest.pop(name, None)
                sock = self._ctl.pop(name, None)
                if sock is not None:
                    sock.close(0)
                with open(log_path, "ab") as out:
                    popen = subprocess.Popen([sys.executable, "-m", "lego.bricks.brick_main",
                                              str(path)], stdout=out, stderr=subprocess.STDOUT,
                                             env=self.env)
                self.procs[name] = BrickProcess(spec, popen, log_path)
            names.append(name)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                missing = [n for n in names if n not in self.board.registered]
                dead = [n for n in missing if self.procs[n].popen.poll() is not None]
            if not missing:
                return
            if dead:
                raise BrickError(f"brick {dead[0]} on {self.host} exited with code "
                                 f"{self.procs[dead[0]].popen.returncode} while starting: "
                                 f"{self.log_tail(dead[0])}")
            if time.monotonic() > deadline:
                raise BrickError(f"bricks {', '.join(missing)} on {self.host} did not register "
                                 f"within {timeout:.0f} s: {self.log_tail(missing[0])}")
            time.sleep(0.01)

    def stop_bricks(self, names: list[str], drain: bool) -> None:
        for name in names:
            if drain:
                self.send_control(name, {"op": "drain"})
            else:
                with self._lock:
                    p = self.procs.get(name)
                if p is not None and p.popen.poll() is None:
                    p.popen.send_signal(signal.SIGTERM)

    def send_control(self, brick: str, command: dict) -> bool:
        with self._lock:
            p = self.procs.get(brick)
            if p is None or p.popen.poll() is not None:
                return False
            return push_control(self.ctx, self._ctl, brick, p.spec.control, command, hwm=1000)

    def request(self, brick: str, command: dict, timeout: float = ACK_TIMEOUT_S) -> dict:
        """Send a control message and wait for the brick's acknowledgement."""
        cid = next(self._ids)
        done = threading.Event()
        slot: list = []
        self._acks[cid] = (done, slot)
        try:
            if not self.send_control(brick, {**command, "id": cid}):
                raise BrickError(f"control {command.get('op')} to {brick} on {self.host}: "
                                 "no such running brick")
            deadline = time.monotonic() + timeout
            while not done.wait(0.05):
                with self._lock:
                    p = self.procs.get(brick)
                    gone = p is None or p.popen.poll() is not None
                if gone:
                    raise BrickError(f"control {command.get('op')} to {brick}: the brick "
                                     "exited before answering")
                if time.monotonic() > deadline:
                    raise BrickError(f"control {command.get('op')} to {brick} on {self.host}: "
                                     f"no answer within {timeout:.1f} s")
            return slot[0]
        finally:
            self._acks.pop(cid, None)

    def inventory(self) -> list[dict]:
        with self._lock:
            out = []
            for name, p in self.procs.items():
                if p.code is not None:
                    continue
                state = "running" if name in self.board.registered else "starting"
                if name in self.board.finished:
                    state = "done"
                out.append({"id": name, "type": p.spec.type, "spec": asdict(p.spec),
                            "pid": p.popen.pid, "state": state})
            return out

    def pid(self, brick: str) -> int:
        return self.procs[brick].popen.pid

    def log_tail(self, brick: str, chars: int = 2000) -> str:
        p = self.procs.get(brick)
        return log_tail(p.log_path, chars) if p is not None else "(no log)"

    # ------------------------------------------------------------ watch loop

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            if self._reports.poll(int(WATCH_S * 1000)):
                while self._reports.poll(0):
                    message = json.loads(self._reports.recv())
                    if message.get("op") == "ack":
                        waiter = self._acks.get(message.get("id"))
                        if waiter is not None:
                            waiter[1].append(message)
                            waiter[0].set()
                        continue
                    with self._lock:
                        self.board.update(message)
            self._check_processes()
            self._release_finished()

    def _check_processes(self) -> None:
        with self._lock:
            items = list(self.procs.items())
        for name, p in items:
            if p.code is not None or p.popen.poll() is None:
                continue
            p.code = p.popen.returncode
            if p.code == 0:
                self.events.append({"kind": "exited", "brick": name, "t": time.monotonic()})
                continue
            bye = self.board.finished.get(name, {}).get("detail", {})
            log.error("brick %s (pid %d) on %s died with exit code %s%s", name, p.popen.pid,
                      self.host, p.code, f": {bye['error']}" if "error" in bye else "")
            self.events.append({"kind": "died", "brick": name, "code": p.code,
                                "t": time.monotonic()})
            self._route_around(p.spec)
            self._deaths.put((name, p.code, time.time(), {k: v for k, v in bye.items()
                                                           if k != "traceback"}))

    def _route_around(self, spec: BrickSpec) -> None:
        """Upstream bricks here stop sending to the dead one (the batches are counted)."""
        if not spec.inlet:
            return
        with self._lock:
            items = [(n, p.spec) for n, p in self.procs.items() if p.code is None]
        for name, s in items:
            for o in s.outlets:
                if spec.inlet in o.addresses:
                    self.send_control(name, {"op": "remove_replica", "target": o.target,
                                             "index": o.addresses.index(spec.inlet)})

    def _release_finished(self) -> None:
        """A finished brick may exit once each next hop here has taken its end marker
        (or is gone): closing a PUSH socket earlier can lose what is in flight."""
        with self._lock:
            for name, p in self.procs.items():
                if p.released or p.code is not None or name not in self.board.finished:
                    continue
                ok = True
                for o in p.spec.outlets:
                    for addr in o.addresses:
                        nxt = next((q for q in self.procs.values() if q.spec.inlet == addr), None)
                        if nxt is None or nxt.code is not None:
                            continue
                        nname = str(nxt.spec.id)
                        taken = self.board.latest.get(nname, {}).get("ended_from", [])
                        if name not in taken and nname not in self.board.finished:
                            ok = False
                if ok:
                    p.released = True
                    self.send_control(name, {"op": "exit"})

    # ------------------------------------------------------------ uplink

    def _uplink_loop(self) -> None:
        nb = self.nb
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if not self.registered:
                    self._register()
                while True:  # deaths first, at once
                    try:
                        name, code, t, detail = self._deaths.get_nowait()
                    except queue.Empty:
                        break
                    self.controller.call("ReportDeath", nb.pb.BrickDeath(
                        host=self.host, brick=name, code=code, noticed=t,
                        detail_json=json.dumps(detail, default=str)))
                if time.monotonic() >= next_beat:
                    cpu = group_usage_s()  # the host's bricks' CPU, when they run under a quota
                    reply = self.controller.call("Heartbeat", nb.pb.HeartbeatRequest(
                        host=self.host, incarnation=self.incarnation, now=time.time(),
                        loads=self._loads(), cpu_s=cpu or 0.0, quota=cpu is not None))
                    next_beat = time.monotonic() + HEARTBEAT_S
                    if not reply.known:
                        self.registered = False
            except nb.NorthboundError as exc:
                if self.registered:
                    log.warning("agent %s: controller unreachable (%s); will re-register",
                                self.host, exc)
                self.registered = False
                self._stop.wait(HEARTBEAT_S)
                continue
            try:
                item = self._deaths.get(timeout=max(0.0, next_beat - time.monotonic()))
                self._deaths.put(item)
            except queue.Empty:
                pass

    def _register(self) -> None:
        nb = self.nb
        bricks = [nb.pb.BrickInfo(id=b["id"], type=b["type"], spec_json=json.dumps(b["spec"]),
                                  pid=b["pid"], state=b["state"]) for b in self.inventory()]
        self.controller.call("Register", nb.pb.RegisterRequest(
            host=self.host, cores=self.cores, address=self.address, workdir=str(self.workdir),
            bricks=bricks, incarnation=self.incarnation))
        self.registered = True
        log.info("agent %s: registered with %s (%d bricks running)", self.host,
                 self.controller.address, len(bricks))

    def _loads(self) -> list:
        with self._lock:
            out = []
            for name, rep in self.board.latest.items():
                p = self.procs.get(name)
                if p is None or p.code is not None:
                    continue
                depth = 0
                if p.spec.inlet:
                    for q in self.procs.values():
                        for o in q.spec.outlets:
                            if p.spec.inlet in o.addresses:
                                i = o.addresses.index(p.spec.inlet)
                                sent = self.board.latest.get(str(q.spec.id), {}).get(
                                    "sent", {}).get(o.target, [])
                                depth += sent[i] if i < len(sent) else 0
                    depth = max(0, depth - rep.get("batches_in", 0))
                out.append(self.nb.load_to_pb({**rep, "state": rep.get("state", "running")},
                                              depth))
            return out


class _AgentService:
    """The ``Agent`` gRPC service over a :class:`RemoteAgent` (errors -> ok=false)."""

    def __init__(self, agent: RemoteAgent) -> None:
        self.a = agent
        self.pb = agent.nb.pb

    def _ack(self, fn) -> object:
        try:
            fn()
            return self.pb.Ack(ok=True)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, logged here
            log.warning("agent %s: %s", self.a.host, exc)
            return self.pb.Ack(ok=False, detail=str(exc))

    def Start(self, request, context):
        specs = [BrickSpec.from_dict(json.loads(s)) for s in request.spec_json]
        for s in specs:
            if s.type not in BRICK_TYPES:
                return self.pb.Ack(ok=False, detail=f"unknown brick type {s.type!r}")
        return self._ack(lambda: self.a.start_bricks(specs, request.timeout_s or 30.0))

    def Stop(self, request, context):
        return self._ack(lambda: self.a.stop_bricks(list(request.bricks), request.drain))

    def Control(self, request, context):
        cmd = json.loads(request.command_json)
        try:
            if request.wait_ack:
                reply = self.a.request(request.brick, cmd, request.timeout_s or ACK_TIMEOUT_S)
                return self.pb.ControlReply(ok=bool(reply.get("ok", True)),
                                            reply_json=json.dumps(reply))
            ok = self.a.send_control(request.brick, cmd)
            return self.pb.ControlReply(ok=ok, reply_json="{}")
        except BrickError as exc:
            return self.pb.ControlReply(ok=False, reply_json=json.dumps({"error": str(exc)}))

    def ExportState(self, request, context):
        cmd = json.loads(request.command_json)
        path = self.a.workdir / f"export-{uuid.uuid4().hex[:10]}.blob"
        cmd.update(op="export", path=str(path))
        try:
            reply = self.a.request(request.brick, cmd, request.timeout_s or ACK_TIMEOUT_S)
            blob = path.read_bytes() if reply.get("ok") else b""
        except (BrickError, OSError) as exc:
            return self.pb.ExportReply(reply_json=json.dumps({"ok": False, "error": str(exc)}))
        finally:
            path.unlink(missing_ok=True)
        return self.pb.ExportReply(blob=blob, reply_json=json.dumps(reply))

    def ImportState(self, request, context):
        paths = []
        try:
            for blob in request.blobs:
                path = self.a.workdir / f"import-{uuid.uuid4().hex[:10]}.blob"
                path.write_bytes(blob)
                paths.append(path)
            reply = self.a.request(request.brick, {"op": "import",
                                                   "paths": [str(p) for p in paths]},
                                   request.timeout_s or ACK_TIMEOUT_S)
            return self.pb.ControlReply(ok=bool(reply.get("ok")), reply_json=json.dumps(reply))
        except (BrickError, OSError) as exc:
            return self.pb.ControlReply(ok=False, reply_json=json.dumps({"error": str(exc)}))
        finally:
            for p in paths:
                p.unlink(missing_ok=True)

    def Status(self, request, context):
        return self.pb.AgentStatus(bricks=[
            self.pb.BrickInfo(id=b["id"], type=b["type"], spec_json=json.dumps(b["spec"]),
                              pid=b["pid"], state=b["state"]) for b in self.a.inventory()])


def local_address_towards(address: str) -> str:
    """The local IP this host uses to reach ``HOST:PORT`` (its management address)."""
    host, _, port = address.rpartition(":")
    s = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET,
                      socket.SOCK_DGRAM)
    try:
        s.connect((host.strip("[]"), int(port or 9)))
        return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        s.close()


def _guarded(fn, stop: threading.Event):
    """A dead worker thread makes noise: log the traceback and stop the agent."""

    def run() -> None:
        try:
            fn()
        except BaseException:
            log.exception("agent thread %s died; stopping the agent",
                          threading.current_thread().name)
            stop.set()

    return run
