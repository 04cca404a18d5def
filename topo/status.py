"""A system's status (:class:`~lego.topo.system.LegoSystem`), in the shape of
``lego controller status --json``.

Until the controller's northbound runs, the status is built here from what
exists: the switch's counters, read over P4Runtime by a backup client
(:class:`SwitchMonitor`; the controller stays primary), and the NF agents'
status files (:mod:`lego.topo.agent`). The shape::

    {"time": T, "switch": {"ports": {"1": {"in": N, "out": N}, ...},
                           "events": {"unowned": N, ...}, "replica_ports": [2, 3]},
     "bricks": [{"brick": "nf1/fq-2", "type": "...", "role": "keyed", "host": "nf1",
                 "replicas": 1, "utilisation": 0.4, "queue_depth": 0, "pps": 800.0,
                 "packets_in": N, "state": "running"}, ...],
     "alerts": N, "scores": N, "events": [{"t": T, "kind": "died", "what": "..."}]}

:func:`event_text` writes any controller event as plain words (the ``what`` of
each event: the live dashboard's panel).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from lego.p4src import contract as pl

log = logging.getLogger(__name__)

EVENT_NAMES = {pl.EVENT_PARSER_ERROR: "parser_error", pl.EVENT_RUNT: "runt",
               pl.EVENT_UNOWNED: "unowned", pl.EVENT_PORT_DROP: "port_drop",
               pl.EVENT_MIRROR: "mirror", pl.EVENT_FORWARD: "forward"}


def yes_no(value: bool) -> str:
    """Booleans as a person writes them."""
    return "yes" if value else "no"


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return yes_no(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return ", ".join(f"{_plain(k)} {_plain(x)}" for k, x in v.items())
    if isinstance(v, list | tuple | set):
        return ", ".join(_plain(x) for x in v)
    return str(v)


def event_text(e: dict[str, Any]) -> str:
    """``scale out: brick fq, port 3, utilisation 0.93`` (nested values flattened:
    ``export at 3 cut 26753``)."""
    skip = {"kind", "t", "t_detect", "what"}
    detail = "; ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in e.items()
                       if k not in skip)
    head = str(e.get("kind", "event")).replace("_", " ")
    return f"{head}: {detail}" if detail else head


class SwitchMonitor:
    """Reads the switch's counters as a backup client (never writes)."""

    def __init__(self, address: str, device_id: int, election_id: int,
                 ports: list[int] | None = None) -> None:
        """``ports``: the switch ports to report (their counter cells only are read);
        None: every port that counted a frame (all 512 cells read)."""
        self.ports = ports
        self.cells = None if ports is None else pl.port_cells(ports)
        self.address = address
        self.device_id = device_id
        self.election_id = election_id
        self.client = None

    def _client(self):
        from lego.control.p4rt_client import P4RuntimeClient

        if self.client is None or not self.client.connected:
            if self.client is not None:
                self.client.close()
            self.client = P4RuntimeClient(self.address, self.device_id, self.election_id,
                                          timeout=2.0)
            self.client.connect(require_primary=False)
            self.client.get_pipeline()
        return self.client

    def counters(self) -> dict:
        """{"ports": {port: {"in", "out"}}, "events": {name: n}} or {} when unreadable."""
        try:
            c = self._client().read_counters([pl.C_PORT_IN, pl.C_PORT_OUT, pl.C_EVENT],
                                             {pl.C_PORT_IN: self.cells,
                                              pl.C_PORT_OUT: self.cells})
        except Exception as exc:  # noqa: BLE001 - the switch may be restarting
            log.debug("switch counters unreadable: %s", exc)
            if self.client is not None:
                self.client.close()
                self.client = None
            return {}
        pin, pout, ev = c[pl.C_PORT_IN][:, 0], c[pl.C_PORT_OUT][:, 0], c[pl.C_EVENT]
        ports = {}
        for p in self.ports if self.ports is not None else range(len(pin)):
            cell = p % pl.N_PORTS
            if pin[cell] or pout[cell]:
                ports[str(p)] = {"in": int(pin[cell]), "out": int(pout[cell])}
        events = {EVENT_NAMES.get(i, str(i)): int(ev[i, 0]) for i in range(len(ev))}
        return {"ports": ports, "events": events}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _agent_bricks(host: str, status: dict, now: float, prev: dict) -> list[dict]:
    by_node: dict[str, list[dict]] = {}
    for b in status.get("bricks", {}).values():
        by_node.setdefault(b["node"], []).append(b)
    out = []
    for node, reps in by_node.items():
        state = "died" if any(r.get("exit_code") not in (None, 0) for r in reps) else \
            "done" if all(r.get("finished") for r in reps) else "running"
        out.append({"brick": f"{host}/{node}", "type": reps[0]["type"], "host": host,
                    "replicas": len(reps),
                    "utilisation": round(sum(_util(f"{host}/{node}/{r['serial']}", r, now, prev)
                                             for r in reps) / len(reps), 3),
                    "queue_depth": sum(r.get("queue_depth", 0) for r in reps),
                    "pps": round(sum(r.get("pps", 0.0) for r in reps), 1),
                    "packets_in": sum(r.get("packets_in", 0) for r in reps),
                    "dropped": sum(r.get("dropped_rows", 0) for r in reps),
                    "state": state})
    return out


def _util(key: str, r: dict, now: float, prev: dict) -> float:
    """Busy fraction of wall time since the previous status (time handling batches)."""
    busy = float(r.get("busy_s", 0.0))
    last = prev.get(key)
    prev[key] = (now, busy)
    if last is None or now <= last[0]:
        return 0.0
    return min(1.0, max(0.0, (busy - last[1]) / (now - last[0])))


def decision_counts(out: Path) -> tuple[int, int]:
    """(alerts, scores) a decision brick has written so far."""
    def lines(p: Path) -> int:
        try:
            with open(p, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0
    return lines(out / "alerts.jsonl"), max(0, lines(out / "scores.csv") - 1)


def build_status(system) -> dict:
    """The status of a :class:`~lego.topo.system.LegoSystem` (southbound mode)."""
    now = time.time()
    switch = system.monitor().counters()
    switch["replica_ports"] = list(system.replica_ports)
    bricks, events = [], []
    alerts = scores = 0
    for host in system.agents:
        wd = system.agent_dir(host)
        try:
            st = json.loads((wd / "status.json").read_text())
        except (FileNotFoundError, ValueError):
            st = {}
        bricks += _agent_bricks(host, st, now, system.util_prev)
        events += [{"t": st.get("time", now), "kind": e["kind"],
                    "what": f"{e['kind']}: {host}/{e['brick']}"} for e in st.get("events", [])]
        a, s = decision_counts(wd / "out")
        alerts += a
        scores += s
    return {"time": now, "mode": system.mode, "switch": switch, "bricks": bricks,
            "alerts": alerts, "scores": scores, "events": events}
