"""Mininet switch classes for P4Runtime targets: BMv2 and the software target.

Both run in the root namespace with ``simple_switch_grpc``'s command line::

    simple_switch_grpc -i 1@s1-eth1 -i 2@s1-eth2 --device-id 0 lego.json \\
        -- --grpc-server-addr 127.0.0.1:9559
    python -m lego switch -i 1@s1-eth1 -i 2@s1-eth2 --device-id 0 --p4info P4INFO \\
        -- --grpc-server-addr 127.0.0.1:9559

:func:`switch_argv` builds that argv (pure); :meth:`P4RuntimeSwitch.start`
runs it and returns only once the gRPC port listens. A failed start raises
:class:`SwitchStartError` with the reason (exit code, or nothing listening by
the deadline, or the port taken by another process) and the tail of the log.
:func:`pick_target` says which target runs (``auto``: BMv2 when
``simple_switch_grpc`` is on PATH and the compiled ``lego.json`` exists).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mininet.node import Switch

from lego.errors import LegoError
from lego.logs import log_tail
from lego.p4src.p4info import BMV2_JSON_PATH as BMV2_JSON
from lego.p4src.p4info import P4INFO_PATH

log = logging.getLogger(__name__)

BMV2_BINARY = "simple_switch_grpc"
START_TIMEOUT_S = 30.0
#: BMv2 runs SCHED_FIFO at this priority where the machine allows it. A hardware
#: switch does not share its CPU with the NF; BMv2 here shares two cores with every
#: brick, and while its port threads waited for a core the kernel ring libpcap gives
#: them filled: 178 to 1,118 of ~80,000 frames never reached its ingress in `make run
#: TARGET=bmv2` (measured), none with this priority. Its threads block when idle.
BMV2_RT_PRIORITY = 10


class SwitchStartError(LegoError):
    """The switch did not come up: the reason, then the tail of its log."""


def pick_target(requested: str) -> tuple[str, str]:
    """(target, why) for ``auto | soft | bmv2``; LegoError when bmv2 cannot run."""
    have_bmv2 = shutil.which(BMV2_BINARY) is not None
    have_json = BMV2_JSON.is_file()
    if requested == "soft":
        return "soft", "software target (asked for)"
    if requested == "bmv2":
        if not have_bmv2:
            raise LegoError(f"switch target bmv2: {BMV2_BINARY} is not on PATH "
                            "(use TARGET=soft, or install BMv2)")
        if not have_json:
            raise LegoError(f"switch target bmv2: {BMV2_JSON} is missing: run `make p4` "
                            "(needs p4c)")
        return "bmv2", f"BMv2 {shutil.which(BMV2_BINARY)} (asked for)"
    if have_bmv2 and have_json:
        return "bmv2", f"BMv2 ({shutil.which(BMV2_BINARY)} is on PATH)"
    if have_bmv2:
        return "soft", f"software target ({BMV2_BINARY} is on PATH but {BMV2_JSON.name} " \
                       "is not compiled: run `make p4`)"
    return "soft", f"software target ({BMV2_BINARY} is not on PATH)"


def switch_argv(target: str, ports: dict[int, str], device_id: int, grpc_addr: str,
                log_console: bool = True, rt_priority: int | None = None) -> list[str]:
    """The switch's command line (pure): BMv2's, or the same for the software target;
    ``rt_priority``: BMv2 under ``chrt -f`` at that priority."""
    if target == "bmv2":
        argv = ["chrt", "-f", str(rt_priority)] if rt_priority else []
        argv += [BMV2_BINARY]
    elif target == "soft":
        argv = [sys.executable, "-m", "lego", "switch"]
    else:
        raise LegoError(f"switch target: expected soft or bmv2, got {target!r}")
    for port, iface in sorted(ports.items()):
        argv += ["-i", f"{port}@{iface}"]
    argv += ["--device-id", str(device_id)]
    if log_console:  # BMv2 logs every packet's trace by default: keep its log to events
        argv += ["--log-console", "--log-level", "info"] if target == "bmv2" else \
            ["--log-console"]
    argv += [str(BMV2_JSON)] if target == "bmv2" else ["--p4info", str(P4INFO_PATH)]
    argv += ["--", "--grpc-server-addr", grpc_addr]
    return argv


def realtime_refused(priority: int) -> str | None:
    """Why a process may not run SCHED_FIFO at ``priority`` here, or None if it may."""
    if shutil.which("chrt") is None:
        return "chrt (util-linux) is not on PATH"
    done = subprocess.run(["chrt", "-f", str(priority), "true"], capture_output=True,
                          text=True, timeout=10)
    return None if done.returncode == 0 else (done.stderr.strip() or "chrt failed")


def port_listens(addr: str, timeout: float = 0.2) -> bool:
    host, port = addr.rsplit(":", 1)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


class P4RuntimeSwitch(Switch):
    """A P4Runtime switch process in the root namespace (Mininet's switch API).

    Parameters: ``target`` (soft | bmv2), ``device_id``, ``grpc_addr``,
    ``log_dir`` (the switch writes ``<name>.log`` there)."""

    def __init__(self, name: str, target: str = "soft", device_id: int = 0,
                 grpc_addr: str = "127.0.0.1:9559", log_dir: str | Path = "/tmp",
                 start_timeout: float = START_TIMEOUT_S, **params) -> None:
        params["inNamespace"] = False
        Switch.__init__(self, name, **params)
        self.target = target
        self.device_id = device_id
        self.grpc_addr = grpc_addr
        self.log_path = Path(log_dir) / f"{name}.log"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None

    def port_map(self) -> dict[int, str]:
        return {self.ports[i]: i.name for i in self.intfList() if i.name != "lo"}

    def argv(self) -> list[str]:
        rt = None
        if self.target == "bmv2":
            why = realtime_refused(BMV2_RT_PRIORITY)
            if why:
                log.warning("%s: BMv2 runs at normal priority (%s): under load it may lose "
                            "frames before its ingress", self.name, why)
            rt = None if why else BMV2_RT_PRIORITY
        return switch_argv(self.target, self.port_map(), self.device_id, self.grpc_addr,
                           rt_priority=rt)

    def start(self, controllers) -> None:  # noqa: ARG002 - Mininet's signature
        if port_listens(self.grpc_addr):
            raise SwitchStartError(f"{self.name}: {self.grpc_addr} is already in use by "
                                   "another process (a previous run? `make stop` cleans up)")
        for intf in self.intfList():
            if intf.name != "lo":
                subprocess.run(["ethtool", "-K", intf.name, "tx", "off"],
                               capture_output=True, timeout=10)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        with open(self.log_path, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + self.start_timeout
        while not port_listens(self.grpc_addr):
            code = self.proc.poll()
            if code is not None:
                raise SwitchStartError(f"{self.name}: {argv[0]} exited with code {code} "
                                       f"before listening on {self.grpc_addr}; log "
                                       f"{self.log_path}:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop_process()
                raise SwitchStartError(f"{self.name}: nothing listens on {self.grpc_addr} "
                                       f"after {self.start_timeout:.0f} s; log "
                                       f"{self.log_path}:\n{log_tail(self.log_path)}")
            time.sleep(0.05)  # polling a port up to a deadline
        log.info("%s: %s listening on %s (pid %d)", self.name, self.target, self.grpc_addr,
                 self.proc.pid)

    @property
    def pid_of_process(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_process(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace``; the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def stop(self, deleteIntfs: bool = True) -> None:  # noqa: N803 - Mininet's signature
        self.stop_process()
        Switch.stop(self, deleteIntfs)


class SoftP4Switch(P4RuntimeSwitch):
    """The software target (``lego switch``)."""

    def __init__(self, name: str, **params) -> None:
        params["target"] = "soft"
        super().__init__(name, **params)


class BMv2Switch(P4RuntimeSwitch):
    """BMv2 ``simple_switch_grpc`` with the compiled ``lego.json``."""

    def __init__(self, name: str, **params) -> None:
        params["target"] = "bmv2"
        super().__init__(name, **params)


SWITCH_CLASSES = {"soft": SoftP4Switch, "bmv2": BMv2Switch}
