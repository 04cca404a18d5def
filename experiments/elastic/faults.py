"""Faults injected into a ``make run`` on demand (``FAULTS=...``), at seconds into
the replay:

- ``SECONDS:kill:ROLE@HOST``: SIGKILL the process of brick ``ROLE`` (a node of
  the NF's chain: ``fq``, ``uln``, ...) of ``HOST``'s graph; Ray restarts it;
- ``SECONDS:lose:HOST``: SIGKILL every process of ``HOST``'s Ray node (its
  raylet, its actors and their bricks): the server is gone.

A spec is checked whole before anything starts (:func:`parse_faults`: one line
naming the bad item). What each injection did is a record (time, target,
processes killed, or why nothing was); the controller's own events say what
recovery did, and the run's summary has both.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lego.errors import ConfigError

ACTIONS = ("kill", "lose")


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds into the replay
    action: str  # kill | lose
    host: str
    role: str = ""  # the brick's node in the NF's chain (kill)

    def text(self) -> str:
        what = f"{self.role}@{self.host}" if self.role else self.host
        return f"{self.at_s:g}:{self.action}:{what}"


def parse_faults(spec: str, hosts: list[str], roles: list[str]) -> list[Fault]:
    """``"20:kill:fq@nf1 40:lose:nf3"`` -> faults in time order. ConfigError (one
    line, the item and what was expected) for a bad item, host or role."""
    faults = []
    for item in spec.split():
        parts = item.split(":")
        if len(parts) != 3:
            raise ConfigError(f"FAULTS: {item!r}: expected SECONDS:ACTION:TARGET, e.g. "
                              "20:kill:fq@nf1 or 40:lose:nf3")
        at, action, target = parts
        try:
            at_s = float(at)
        except ValueError:
            at_s = -1.0
        if not at_s >= 0:
            raise ConfigError(f"FAULTS: {item!r}: expected seconds >= 0, got {at!r}")
        if action not in ACTIONS:
            raise ConfigError(f"FAULTS: {item!r}: expected an action of {', '.join(ACTIONS)}, "
                              f"got {action!r}")
        role, _, host = target.rpartition("@") if action == "kill" else ("", "", target)
        if action == "kill" and role not in roles:
            raise ConfigError(f"FAULTS: {item!r}: expected kill:ROLE@HOST with a role of "
                              f"{', '.join(roles)}")
        if host not in hosts:
            raise ConfigError(f"FAULTS: {item!r}: no NF host {host!r} (hosts: "
                              f"{', '.join(hosts)})")
        faults.append(Fault(at_s, action, host, role))
    return sorted(faults, key=lambda f: f.at_s)


class FaultInjector:
    """Injects each fault once its time into the replay has come (``tick``)."""

    def __init__(self, system, faults: list[Fault], ports: dict[str, int]) -> None:
        self.system = system
        self.pending = list(faults)
        self.ports = ports  # NF host -> its switch port (its graph's)
        self.done: list[dict] = []

    def tick(self, replay_s: float) -> None:
        while self.pending and self.pending[0].at_s <= replay_s:
            fault = self.pending.pop(0)
            record = {**asdict(fault), "spec": fault.text(), "t_replay": round(replay_s, 2),
                      "wall": time.time()}
            record.update(self._kill(fault) if fault.action == "kill" else self._lose(fault))
            self.done.append(record)

    def _kill(self, fault: Fault) -> dict:
        from lego.control.graph_specs import GROUP

        # a fused graph's bricks are one process: killing one kills them all
        node = GROUP if self.system.graph.get("fuse") else fault.role
        spec = str(self.system.brick_dir(fault.host) /
                   f"{node}-{self.ports[fault.host]}-0.json")
        for pid in self.system.ray.node_pids(fault.host):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if spec in cmdline:
                os.kill(pid, signal.SIGKILL)
                return {"killed": [pid], "result": f"SIGKILL to pid {pid}"}
        return {"killed": [], "result": f"no {fault.role} brick running on {fault.host}"}

    def _lose(self, fault: Fault) -> dict:
        n = self.system.ray.kill_node(fault.host)
        return {"killed": n, "result": f"{n} processes of {fault.host}'s Ray node killed"}
