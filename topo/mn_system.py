"""The whole LEGO system in Mininet: network, switch, controller, NF agents, status.

:class:`LegoSystem` starts, in order: the network and the switch
(:class:`~lego.topo.mn_net.LegoNet`; the switch listens when it returns), the
controller in the root namespace (returns once it has synced the switch), and
one brick agent per active NF host (returns once every brick registered), then
gives the traffic host's :class:`~lego.topo.mn_traffic.Replayer` a trace.

The controller is the one :func:`controller_mode` finds: ``lego controller
run --config FILE`` with the northbound when ``control/controller*.py`` and
``lego/cli_agent.py`` exist (agents: ``lego agent --controller ...``), else the
southbound ``lego controller --switch ...`` (the switch manager: pipeline,
roles, buckets, clone sessions) with agents in graph-file mode
(:mod:`lego.topo.mn_agent`). :meth:`LegoSystem.status` returns the same JSON
shape either way (:mod:`lego.topo.mn_status`).

Every process writes a log under ``workdir``; :meth:`LegoSystem.collect` copies
the logs and status to a folder and lists the tracebacks found in them (a
component that logged an exception), before :meth:`LegoSystem.stop` cleans.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lego.errors import LegoError
from lego.topo.mn_agent import graph_toml, nf_graph
from lego.topo.mn_net import LegoNet
from lego.topo.mn_switch import log_tail
from lego.topo.mn_topology import NFHostSpec, Topology

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONTROLLER_ELECTION_ID = 10
MONITOR_ELECTION_ID = 2
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.M)


def controller_mode(repo: Path = REPO) -> str:
    """``northbound`` when asked for (``LEGO_CONTROLLER=northbound``) and the
    controller's northbound and the agent CLI exist, else ``southbound`` (the
    switch manager + graph-file agents). The northbound mode is not wired in yet."""
    have_ctl = any((repo / "control").glob("controller*.py"))
    have_agent = (repo / "lego" / "cli_agent.py").is_file()
    asked = os.environ.get("LEGO_CONTROLLER", "southbound") == "northbound"
    return "northbound" if asked and have_ctl and have_agent else "southbound"


def southbound_controller_argv(topo: Topology, replica_ports: list[int],
                               semantics: str = "lego", rebalance_every: float = 0.0
                               ) -> list[str]:
    """``lego controller`` (southbound only) for this topology (pure)."""
    argv = [sys.executable, "-m", "lego", "controller", "--switch", topo.switch.grpc_addr,
            "--device-id", str(topo.switch.device_id),
            "--election-id", str(CONTROLLER_ELECTION_ID),
            "--traffic-port", str(topo.traffic.port), "--semantics", semantics]
    for p in replica_ports:
        argv += ["--replica", str(p)]
    # no rebalancing unless asked: a bucket move without its state move is inexact
    argv += ["--rebalance-every", str(rebalance_every or 86400)]
    return argv


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.popen.poll() is None


class LegoSystem:
    """Start, observe and stop one LEGO system in Mininet."""

    def __init__(self, topo: Topology, target: str, workdir: Path, model: Path, *,
                 semantics: str = "lego", idle_s: float = 8.0, batch: int = 1024) -> None:
        self.topo = topo
        self.target = target
        self.workdir = Path(workdir)
        self.model = Path(model)
        self.semantics = semantics
        self.idle_s = idle_s
        self.batch = batch
        self.mode = controller_mode()
        self.net = LegoNet(topo, target, self.workdir / "net")
        self.controller: Proc | None = None
        self.agents: dict[str, Proc] = {}
        self.replica_ports: list[int] = [h.port for h in topo.active]
        self._monitor = None
        self.util_prev: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self, agents: list[NFHostSpec] | None = None) -> None:
        self.net.start()
        try:
            self.start_controller()
            for h in (agents if agents is not None else self.topo.active):
                self.start_agent(h)
            self.wait_agents_ready()
        except BaseException:
            self.stop()
            raise

    def _popen(self, name: str, argv: list[str], host=None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            if host is None:
                popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            else:
                popen = host.popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        return Proc(name, popen, log_path, argv)

    def start_controller(self, timeout: float = 30.0) -> None:
        """Start the controller; return once it has synced the switch."""
        if self.mode == "northbound":
            raise LegoError("LEGO_CONTROLLER=northbound: `lego controller run --config` is not "
                            "wired into the Mininet run yet; unset it for the southbound mode")
        argv = southbound_controller_argv(self.topo, self.replica_ports, self.semantics)
        self.controller = p = self._popen("controller", argv)
        deadline = time.monotonic() + timeout
        while "controller: switch" not in p.log_path.read_text(errors="replace"):
            if not p.alive():
                raise LegoError(f"controller exited with code {p.popen.returncode} before "
                                f"syncing the switch; log {p.log_path}:\n{log_tail(p.log_path)}")
            if time.monotonic() > deadline:
                raise LegoError(f"controller did not sync the switch within {timeout:.0f} s; "
                                f"log {p.log_path}:\n{log_tail(p.log_path)}")
            time.sleep(0.05)  # polling the log up to a deadline

    def controller_line(self) -> str:
        """The controller's sync line (what it wrote on the switch)."""
        text = self.controller.log_path.read_text(errors="replace") if self.controller else ""
        lines = [ln for ln in text.splitlines() if ln.startswith("controller: switch")]
        return lines[-1] if lines else ""

    def kill_controller(self) -> int:
        p = self.controller
        if p is None:
            return 0
        p.popen.kill()
        return p.popen.wait()

    def agent_dir(self, host: str) -> Path:
        return self.workdir / "agents" / host

    def start_agent(self, h: NFHostSpec) -> None:
        wd = self.agent_dir(h.name)
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        graph = wd / "graph.toml"
        graph.write_text(graph_toml(nf_graph(
            h.name, self.net.nf_iface(h.name), self.model, wd / "out",
            semantics=self.semantics, idle_s=self.idle_s, batch=self.batch)))
        argv = [sys.executable, "-m", "lego.topo.mn_agent", str(graph), "--workdir", str(wd),
                "--host", h.name, "--status", str(wd / "status.json")]
        self.agents[h.name] = self._popen(f"agent-{h.name}", argv, self.net.host(h.name))

    def wait_agents_ready(self, timeout: float = 90.0) -> None:
        """Until every agent's bricks have registered (their sources are reading)."""
        deadline = time.monotonic() + timeout
        for name, p in self.agents.items():
            marker = "bricks running"
            while marker not in p.log_path.read_text(errors="replace"):
                if not p.alive():
                    raise LegoError(f"agent {name} exited with code {p.popen.returncode} "
                                    f"while starting; log {p.log_path}:\n"
                                    f"{log_tail(p.log_path)}")
                if time.monotonic() > deadline:
                    raise LegoError(f"agent {name}: bricks not running after {timeout:.0f} "
                                    f"s; log {p.log_path}:\n{log_tail(p.log_path)}")
                time.sleep(0.05)  # polling the log up to a deadline

    def wait_agents_done(self, timeout: float) -> dict[str, int | None]:
        """Until every agent exited (their sources end after ``idle_s`` of silence)."""
        deadline = time.monotonic() + timeout
        for p in self.agents.values():
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        return {n: p.popen.poll() for n, p in self.agents.items()}

    # ------------------------------------------------------------ scaling (southbound mode)

    def scale(self, replica_ports: list[int]) -> list:
        """Change the replica set (southbound mode): stop the controller, move buckets
        with the switch manager (scale_out / scale_in: few buckets move, clone
        sessions and roles follow), restart the controller, which adopts the new
        assignment and rewrites nothing. The switch forwards throughout. Returns
        the bucket moves. (Keyed state does not move here: the controller's
        state-move protocol does that.)"""
        from lego.control.granularity import plan_split
        from lego.control.p4rt_client import P4RuntimeClient
        from lego.control.switch_manager import SwitchManager
        from lego.control.switch_state import SwitchPlan
        from lego.ext.features import state_groups

        self.kill_controller()
        plan = SwitchPlan.from_split(plan_split(state_groups(self.semantics)),
                                     [self.topo.traffic.port], self.replica_ports)
        moves = []
        with P4RuntimeClient(self.topo.switch.grpc_addr, self.topo.switch.device_id,
                             CONTROLLER_ELECTION_ID) as client:
            client.reconnect()
            manager = SwitchManager(client, plan)
            manager.sync()
            for port in replica_ports:
                if port not in manager.plan.replica_ports:
                    moves += manager.scale_out(port, now=time.monotonic())
            for port in list(manager.plan.replica_ports):
                if port not in replica_ports:
                    moves += manager.scale_in(port, now=time.monotonic())
        self.replica_ports = list(replica_ports)
        self.start_controller()
        return moves

    # ------------------------------------------------------------ observing

    def monitor(self):
        from lego.topo.mn_status import SwitchMonitor

        if self._monitor is None:
            self._monitor = SwitchMonitor(self.topo.switch.grpc_addr,
                                          self.topo.switch.device_id, MONITOR_ELECTION_ID)
        return self._monitor

    def status(self) -> dict:
        from lego.topo.mn_status import build_status

        return build_status(self)

    def logs(self) -> dict[str, Path]:
        out = {"switch": self.net.switch.log_path} if self.net.net is not None else {}
        if self.controller is not None:
            out["controller"] = self.controller.log_path
        for name, p in self.agents.items():
            out[f"agent-{name}"] = p.log_path
            for brick_log in sorted(self.agent_dir(name).glob("*.log")):
                out[f"{name}/{brick_log.stem}"] = brick_log
        return out

    def collect(self, dest: Path) -> list[str]:
        """Copy every log and status file to ``dest``; the components whose logs hold a
        traceback (an exception was logged)."""
        dest.mkdir(parents=True, exist_ok=True)
        bad = []
        for name, path in self.logs().items():
            if not path.is_file():
                continue
            shutil.copy(path, dest / (name.replace("/", "_") + ".log"))
            if _TRACEBACK.search(path.read_text(errors="replace")):
                bad.append(name)
        for name in self.agents:
            st = self.agent_dir(name) / "status.json"
            if st.is_file():
                shutil.copy(st, dest / f"status-{name}.json")
        return bad

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        for p in [*self.agents.values(), *([self.controller] if self.controller else [])]:
            if p.alive():
                p.popen.terminate()
        for p in [*self.agents.values(), *([self.controller] if self.controller else [])]:
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                p.popen.kill()
        self.net.stop()
