"""The live system's harness for the tests (:mod:`lego.topo.local_system` is the
system: its config, the :class:`~lego.topo.local_system.Driver` of its traffic).

Here: the controller as ``lego controller run`` in a process of its own, so that it
can be killed (:func:`controller_process`, :class:`Proc`), its config written as
TOML (:func:`toml_text`), and a port to bring a server back on
(:func:`free_tcp_port`). Every start blocks until the piece listens (or
registered) and fails with its log; every wait polls up to a deadline
(:func:`lego.polling.wait_for`); ``close`` stops what was started, by process id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lego.errors import LegoError
from lego.polling import wait_for


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


