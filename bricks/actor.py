"""One brick replica as a Ray actor: Ray places it, restarts it and carries its control.

The actor runs the brick as its own OS process (``python -m lego.bricks.main``,
the same runtime as a graph file's bricks), so that the brick alone joins its
host's CPU quota: Ray's worker threads stay outside it, as a starved core worker
would answer nothing. The actor's part is small and bounded:

- it starts the brick (from a long-lived thread: the brick dies with that thread,
  ``PR_SET_PDEATHSIG``, so a killed actor leaves no orphan) and takes its
  northbound messages on the brick's own report socket (:class:`LoadBoard`);
- a brick that exits non-zero after it registered takes the actor down with it
  (``os._exit``): Ray restarts the actor (``max_restarts``), which starts the
  brick again from the same spec (one that fails while starting does not: its
  error and log go back to the caller of :meth:`BrickActor.ready`). The exit is
  written to ``<node>-<serial>.deaths.jsonl`` in the work directory first, so
  the new incarnation reports what killed the old, and starts its brick in the
  next epoch (a source's batch ids: :data:`~lego.bricks.wire.EPOCH_BITS`);
- control messages, acknowledged requests and state export/import are actor
  methods (``max_concurrency`` threads: a request waiting for the brick never
  blocks a load read). Blobs travel as bytes through Ray's object store.

Nothing here decides anything: restarts, node membership and placement are Ray's,
routing and state are the controller's (:mod:`lego.control.ray_bricks`).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import zmq

from lego.bricks.errors import BrickError
from lego.bricks.main import ONE_CORE_ENV
from lego.bricks.northbound import LoadBoard
from lego.bricks.runtime import BrickSpec
from lego.bricks.transport import push_control
from lego.cpu_quota import group_usage_s, resize_own_group
from lego.logs import log_tail

WATCH_S = 0.05  # a brick's exit is noticed within this
ACK_TIMEOUT_S = 10.0
_PR_SET_PDEATHSIG = 1


def _niceness(pid: int) -> int | None:
    """A process's niceness now (None: it is gone)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except ProcessLookupError:
        return None


def _die_with_parent_thread() -> None:
    """In the child, before exec: SIGKILL when the thread that forked it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class BrickActor:
    """One brick process under Ray. Created by :class:`~lego.control.ray_bricks.RayBricks`
    as a detached, named actor pinned to its host's node."""

    def __init__(self, spec: dict, workdir: str, env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = BrickSpec.from_dict(spec)
        self.name = str(base.id)
        self.stem = self.workdir / f"{base.node}-{base.serial}"
        self.report_address = f"ipc://{self.stem}-report.sock"
        self.incarnation = uuid.uuid4().hex[:12]  # new at every Ray restart
        self.previous = _read_deaths(self.stem)  # what ended the earlier incarnations
        self.spec = BrickSpec.from_dict({**asdict(base), "report": self.report_address,
                                         "epoch": len(self.previous)})
        self.log_path = Path(f"{self.stem}.log")
        self.env = dict(os.environ, **ONE_CORE_ENV, **(env or {}))
        self.ctx = zmq.Context()
        self.board = LoadBoard()
        self.code: int | None = None
        self.pid = 0
        self._lock = threading.Lock()  # control sockets
        self._ctl: dict[str, zmq.Socket] = {}
        self._acks: dict[int, tuple[threading.Event, list]] = {}
        self._next_id = 0
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"brick-{self.name}",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(30.0):
            raise BrickError(f"brick {self.name}: its process did not start within 30 s")

    # ------------------------------------------------------------ the brick process

    def _run(self) -> None:
        reports = self.ctx.socket(zmq.PULL)
        reports.setsockopt(zmq.LINGER, 0)
        Path(self.report_address[len("ipc://"):]).unlink(missing_ok=True)
        reports.bind(self.report_address)
        path = Path(f"{self.stem}.json")
        path.write_text(json.dumps(asdict(self.spec)))
        with open(self.log_path, "ab") as out:
            popen = subprocess.Popen([sys.executable, "-m", "lego.bricks.main", str(path)],
                                     stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=_die_with_parent_thread)
        self.pid = popen.pid
        self._started.set()
        while self.code is None:
            if reports.poll(int(WATCH_S * 1000)):
                while reports.poll(0):
                    self._take(json.loads(reports.recv()))
            if popen.poll() is not None:
                while reports.poll(0):
                    self._take(json.loads(reports.recv()))
                self.code = popen.returncode
        if self.code != 0 and not self._stop.is_set() and self.name in self.board.registered:
            self._die(self.code)  # a brick that never registered: ready() says why

    def _take(self, message: dict) -> None:
        if message.get("op") == "ack":
            waiter = self._acks.get(message.get("id"))
            if waiter is not None:
                waiter[1].append(message)
                waiter[0].set()
            return
        self.board.update(message)

    def _die(self, code: int) -> None:
        """The brick died: record why, and take the actor down so that Ray restarts it."""
        bye = self.board.finished.get(self.name, {}).get("detail", {})
        record = {"t": time.time(), "code": code, "pid": self.pid, "incarnation":
                  self.incarnation, "error": bye.get("error", "")}
        with open(f"{self.stem}.deaths.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"brick {self.name} (pid {self.pid}) died with exit code {code}"
              f"{': ' + record['error'] if record['error'] else ''}; the actor exits "
              "for Ray to restart it", file=sys.stderr, flush=True)
        os._exit(1)

    # ------------------------------------------------------------ what the controller calls

    def ready(self, timeout: float = 30.0) -> dict:
        """Once the brick registered: its info; BrickError (with its log) if it exited."""
        deadline = time.monotonic() + timeout
        while self.name not in self.board.registered:
            if self.code is not None:
                raise BrickError(f"brick {self.name} exited with code {self.code} while "
                                 f"starting: {log_tail(self.log_path, 2000)}")
            if time.monotonic() > deadline:
                raise BrickError(f"brick {self.name} did not register within {timeout:.0f} s: "
                                 f"{log_tail(self.log_path, 2000)}")
            time.sleep(0.01)
        return self.info()

    def _state(self) -> str:
        if self.code is not None:
            return "exited"
        if self.name in self.board.finished:
            return "done"
        return "running" if self.name in self.board.registered else "starting"

    def info(self) -> dict:
        return {"id": self.name, "type": self.spec.type, "spec": asdict(self.spec),
                "pid": self.pid, "niceness": _niceness(self.pid),
                "incarnation": self.incarnation, "state": self._state(),
                "code": self.code, "previous": self.previous, "node_id": _node_id()}

    def load(self) -> dict:
        """The brick's newest load report, its state, and the host's quota CPU time."""
        cpu = group_usage_s()
        return {**self.board.latest.get(self.name, {}), "brick": self.name,
                "incarnation": self.incarnation, "state": self._state(),
                "host_cpu": (time.time(), cpu) if cpu is not None else None,
                "last_death": self.previous[-1] if self.previous else None}

    def set_cores(self, cores: float) -> float:
        """Resize this host's CPU quota (every brick on the host shares it): what a
        node agent does for an in-place resize. Returns the cores now allowed."""
        resize_own_group(cores)
        return cores

    def send(self, command: dict) -> bool:
        """A control message, not acknowledged (False: the brick is gone or its queue
        is full)."""
        if self.code is not None:
            return False
        with self._lock:
            return push_control(self.ctx, self._ctl, self.name, self.spec.control, command,
                                hwm=1000)

    def request(self, command: dict, timeout: float = ACK_TIMEOUT_S) -> dict:
        """A control message and the brick's acknowledgement (BrickError without one)."""
        with self._lock:
            self._next_id += 1
            cid = self._next_id
        done, slot = threading.Event(), []
        self._acks[cid] = (done, slot)
        try:
            if not self.send({**command, "id": cid}):
                raise BrickError(f"control {command.get('op')} to {self.name}: the brick is "
                                 "not running")
            deadline = time.monotonic() + timeout
            while not done.wait(0.05):
                if self.code is not None:
                    raise BrickError(f"control {command.get('op')} to {self.name}: the brick "
                                     "exited before answering")
                if time.monotonic() > deadline:
                    raise BrickError(f"control {command.get('op')} to {self.name}: no answer "
                                     f"within {timeout:.1f} s")
            return slot[0]
        finally:
            self._acks.pop(cid, None)

    def export_state(self, command: dict, timeout: float = ACK_TIMEOUT_S) -> tuple[dict, bytes]:
        """The keyed state of ``command["buckets"]`` as a blob (the brick writes it to a
        file in the work directory, the actor returns its bytes); ``command["op"]``
        ``checkpoint``: all of it, with its position (lego.bricks.recovery)."""
        path = self.workdir / f"export-{uuid.uuid4().hex[:10]}.blob"
        try:
            reply = self.request({"op": "export", **command, "path": str(path)}, timeout)
            return reply, (path.read_bytes() if reply.get("ok") else b"")
        finally:
            path.unlink(missing_ok=True)

    def restore_state(self, blob: bytes | None, position: dict, timeout: float = ACK_TIMEOUT_S
                      ) -> dict:
        """A restarted keyed brick's state: a checkpoint's blob at its ``position``
        (``{"position", "epoch"}``), or none (it goes on with empty state)."""
        if blob is None:
            return self.request({"op": "restore"}, timeout)
        return self.request_with_file({"op": "restore", **position}, blob, timeout)

    def request_with_file(self, command: dict, blob: bytes,
                          timeout: float = ACK_TIMEOUT_S) -> dict:
        """A control message whose bytes travel in a file of the work directory
        (``command["path"]``), removed once the brick answered."""
        path = self.workdir / f"{command.get('op')}-{uuid.uuid4().hex[:10]}.blob"
        try:
            path.write_bytes(blob)
            return self.request({**command, "path": str(path)}, timeout)
        finally:
            path.unlink(missing_ok=True)

    def import_state(self, blobs: list[bytes], timeout: float = ACK_TIMEOUT_S) -> dict:
        paths = []
        try:
            for blob in blobs:
                paths.append(self.workdir / f"import-{uuid.uuid4().hex[:10]}.blob")
                paths[-1].write_bytes(blob)
            return self.request({"op": "import", "paths": [str(p) for p in paths]}, timeout)
        finally:
            for p in paths:
                p.unlink(missing_ok=True)

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM the brick (SIGKILL after ``grace``); its exit code. The actor stays
        until the controller kills it."""
        self._stop.set()
        if self.code is None and self.pid:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.code is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.code is None:
                os.kill(self.pid, signal.SIGKILL)
                self._thread.join(2.0)
        return self.code

    def log_tail(self, chars: int = 2000) -> str:
        return log_tail(self.log_path, chars)


def _read_deaths(stem: Path) -> list[dict]:
    try:
        lines = Path(f"{stem}.deaths.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in lines if x.strip()]


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
