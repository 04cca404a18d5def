"""Leave nothing behind: the processes, namespaces and interfaces of a Mininet run.

Every process a run starts inherits the environment variable ``LEGO_MN_RUN``
(the orchestrator sets it on itself first, so Mininet's host shells and
everything started inside them carry it too). A run also records what it made
in a state file (:data:`STATE_PATH`): its own pid, the network namespaces of its
hosts (by inode) and the root-namespace interfaces and bridge. :func:`cleanup`
is ``mn -c`` for our own names only: it kills every process that carries the
marker (or sits in one of the recorded namespaces), then deletes the recorded
interfaces and the topology's, then the state file. It never touches another
program's Mininet, switch or namespaces.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lego.cpu_quota import remove_stale as remove_stale_quotas

log = logging.getLogger(__name__)

MARKER = "LEGO_MN_RUN"
STATE_PATH = Path(os.environ.get("LEGO_MN_STATE", "/run/lego-mn/state.json"))


@dataclass
class RunState:
    run_id: str
    pid: int  # the orchestrator
    interfaces: list[str] = field(default_factory=list)
    netns_inodes: list[int] = field(default_factory=list)
    sysctls: dict[str, int] = field(default_factory=dict)  # changed for the run: old values
    started: float = field(default_factory=time.time)

    def save(self, path: Path = STATE_PATH) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = STATE_PATH) -> RunState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def marked_processes(run_id: str | None = None, netns: Iterable[int] = ()) -> list[int]:
    """Pids that carry the marker (of ``run_id``, or any) or live in one of ``netns``,
    except this process and its ancestors."""
    spare = _ancestors(os.getpid())
    inodes = set(netns)
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in spare:
            continue
        mark = _environ(pid).get(MARKER)
        if (mark is not None and (run_id is None or mark == run_id)) or \
                (inodes and netns_inode(pid) in inodes):
            out.append(pid)
    return out


def kill_all(pids: list[int], grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL what is left after ``grace``; how many were signalled."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = list(pids)
    while left and time.monotonic() < deadline:
        left = [p for p in left if pid_alive(p) and not _zombie(p)]
        if left:
            time.sleep(0.05)  # polling process exit up to a deadline
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def delete_links(names: Iterable[str]) -> list[str]:
    gone = []
    for name in names:
        if link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=20)
            gone.append(name)
    return gone


@dataclass
class CleanupReport:
    processes: int
    links: list[str]
    previous_run: str | None

    def describe(self) -> str:
        if not self.processes and not self.links:
            return "nothing to clean"
        return (f"stopped {self.processes} processes, deleted {len(self.links)} interfaces"
                + (f" ({', '.join(self.links)})" if self.links else ""))


def cleanup(interfaces: Iterable[str] = (), run_id: str | None = None,
            state_path: Path = STATE_PATH) -> CleanupReport:
    """Stop every process of our runs (or of ``run_id``), delete their interfaces."""
    state = RunState.load(state_path)
    netns = state.netns_inodes if state is not None and \
        (run_id is None or state.run_id == run_id) else []
    pids = marked_processes(run_id, netns)
    n = kill_all(pids) if pids else 0
    names = list(interfaces) + (state.interfaces if state is not None else [])
    links = delete_links(dict.fromkeys(names))
    remove_stale_quotas()
    if state is not None and (run_id is None or state.run_id == run_id):
        for key, old in state.sysctls.items():
            try:
                (Path("/proc/sys") / key.replace(".", "/")).write_text(str(old))
            except OSError as exc:
                log.warning("cannot restore %s=%s: %s", key, old, exc)
        state_path.unlink(missing_ok=True)
    return CleanupReport(n, links, state.run_id if state is not None else None)


def active_run(state_path: Path = STATE_PATH) -> RunState | None:
    """The recorded run whose orchestrator is still alive (and not us), if any."""
    state = RunState.load(state_path)
    if state is None or state.pid == os.getpid() or not pid_alive(state.pid):
        return None
    if _environ(state.pid).get(MARKER) != state.run_id:
        return None  # the pid was reused by an unrelated process
    return state
