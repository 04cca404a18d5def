"""The whole LEGO system in Mininet: network, switch, Ray, controller, status.

:class:`LegoSystem` starts, in order: the network and the switch
(:class:`~lego.topo.net.LegoNet`; the switch listens when it returns), a Ray
cluster (:class:`~lego.topo.ray_cluster.RayCluster`: the head in the root namespace,
one node inside each NF host, under the host's CPU quota group for its bricks),
and the controller in the root namespace, which places the bricks on the nodes
as Ray actors (returns once it has synced the switch and the first graphs run).

The mode is :func:`controller_mode`'s: ``controller`` (the default: ``lego
controller run --config FILE``, bricks on Ray, scaling and faults handled), or
``southbound`` when asked: ``lego controller --switch ...`` (the switch manager
alone: pipeline, roles, buckets, clone sessions) with graph-file bricks per host
(:mod:`lego.topo.agent`), no Ray. :meth:`LegoSystem.status` returns the same
JSON shape either way (:mod:`lego.topo.status`).

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

import tomli_w

from lego import nfs
from lego.cpu_quota import CpuQuota, mount_script
from lego.errors import LegoError
from lego.logs import log_tail
from lego.topo.agent import nf_graph
from lego.topo.net import LegoNet
from lego.topo.topology import NFHostSpec, Topology

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONTROLLER_ELECTION_ID = 10
MONITOR_ELECTION_ID = 2
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):", re.M)
_ERROR_LINE = re.compile(r"^(?:lego: error: |\w*Error: |.* ERROR )(.*)$", re.M)


def _last_error(path: Path) -> str:
    """The last error line of a log (what a one-line failure message quotes)."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    found = _ERROR_LINE.findall(text)
    if found:
        return found[-1].strip()[:300]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def controller_mode(repo: Path = REPO) -> str:
    """``controller`` (the default): ``lego controller run --config``, its bricks Ray
    actors on one node per NF host; ``southbound`` only when asked
    (``LEGO_CONTROLLER=southbound``): the switch manager + graph-file bricks, without
    scaling or faults handling."""
    asked = os.environ.get("LEGO_CONTROLLER", "controller")
    if asked not in ("controller", "southbound"):
        raise LegoError(f"LEGO_CONTROLLER: expected controller or southbound, got {asked!r}")
    return asked


def southbound_controller_argv(topo: Topology, replica_ports: list[int],
                               semantics: str = "lego", rebalance_every: float = 0.0,
                               nf: str | None = None,
                               nf_options: dict | None = None) -> list[str]:
    """``lego controller`` (southbound only) for this topology (pure)."""
    argv = [sys.executable, "-m", "lego", "controller", "--switch", topo.switch.grpc_addr,
            "--device-id", str(topo.switch.device_id),
            "--election-id", str(CONTROLLER_ELECTION_ID),
            "--traffic-port", str(topo.traffic.port), "--semantics", semantics,
            "--nf", nf or nfs.DEFAULT]
    for key, value in (nf_options or {}).items():
        argv += ["--nf-option", f"{key}={value}"]
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
                 semantics: str = "lego", nf: str | None = None, idle_s: float = 8.0,
                 batch: int = 1024,
                 scaling: dict | None = None, mode: str | None = None,
                 sla_ms: float = 100.0, graph: dict | None = None,
                 nf_options: dict | None = None) -> None:
        self.topo = topo
        self.target = target
        self.workdir = Path(workdir)
        self.model = Path(model)
        self.semantics = semantics
        self.nf = nf or nfs.DEFAULT  # the NF (lego.nfs) its bricks run
        self.nf_options = dict(nf_options or {})  # its options beyond semantics and model
        self.idle_s = idle_s
        self.batch = batch
        self.mode = mode or controller_mode()
        self.scaling = dict(scaling or {})
        self.sla_ms = sla_ms
        self.graph = dict(graph or {})  # brick graph settings over lego.topo.controller.GRAPH
        self.token_file = self.workdir / "token"
        self.config_path = self.workdir / "controller.toml"
        self.results_dir = self.workdir / "nf"
        self.ray_hosts: list[NFHostSpec] = []  # the NF hosts with a Ray node
        self._ctl_client = None
        self._last_ctl: dict | None = None
        self.last_wall = 0.0
        self.net = LegoNet(topo, target, self.workdir / "net")
        self.controller: Proc | None = None
        self.agents: dict[str, Proc] = {}  # graph-file bricks (southbound mode)
        self.frame_log: Proc | None = None  # the switch's frame log (lego.switch.framelog)
        self.ray = None  # the RayCluster (controller mode)
        self.replica_ports: list[int] = [h.port for h in topo.active]
        self._monitor = None
        self.util_prev: dict[str, tuple[float, float]] = {}
        self.quotas: dict[str, CpuQuota] = {}

    # ------------------------------------------------------------ lifecycle

    def start(self, agents: list[NFHostSpec] | None = None) -> None:
        self.net.start()
        every = self.topo.nf_hosts if self.mode == "controller" else self.topo.active
        hosts = list(agents if agents is not None else every)
        try:
            if self.mode == "controller":
                self.ray_hosts = hosts or list(self.topo.nf_hosts[:self.topo.replicas])
                self.start_ray()
                self.start_frame_log()
                self.write_config()
                self.start_controller()
                return
            self.start_controller()
            for h in hosts:
                self.start_agent(h)
            self.wait_agents_ready()
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------ the real controller

    def write_config(self) -> Path:
        """The token (a fresh secret, mode 0600) and the controller's TOML config."""
        import secrets

        from lego.topo.controller import controller_config

        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.token_file.is_file():
            self.token_file.write_text(secrets.token_hex(24) + "\n")
            self.token_file.chmod(0o600)
        cfg = controller_config(self.topo, self.ray_hosts, model=self.model.resolve(),
                                results=self.results_dir, token_file=self.token_file,
                                semantics=self.semantics, nf=self.nf,
                                election_id=CONTROLLER_ELECTION_ID, scaling=self.scaling,
                                graph=self.graph, sla_ms=self.sla_ms,
                                ray_address=self.ray.head, brick_dir=self.brick_dir(),
                                nf_options=self.nf_options,
                                frame_log=self.frame_log_address if self.frame_log else "")
        self.config_path.write_text(tomli_w.dumps(cfg))
        return self.config_path

    def config_scaling(self) -> dict:
        from lego.topo.controller import SCALING

        return {**SCALING, "max_replicas": len(self.ray_hosts), **self.scaling}

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def wait_controller(self, timeout: float = 120.0) -> None:
        """Until the controller printed its start line (switch synced, the initial
        graphs' bricks registered); else one line saying why, and the log's tail."""
        p = self.controller
        deadline = time.monotonic() + timeout
        while "controller: northbound on" not in p.log_path.read_text(errors="replace"):
            if not p.alive():
                raise LegoError(f"the controller failed to start (exit code "
                                f"{p.popen.returncode}): {_last_error(p.log_path)}; log "
                                f"{p.log_path}:\n{log_tail(p.log_path)}")
            if time.monotonic() > deadline:
                raise LegoError(f"the controller did not start within {timeout:.0f} s: "
                                f"{_last_error(p.log_path)}; log {p.log_path}:\n"
                                f"{log_tail(p.log_path)}")
            time.sleep(0.05)  # polling the log up to a deadline

    def controller_status(self) -> dict | None:
        """GetStatus (what ``lego controller status --json`` prints), or None."""
        from lego.control import northbound as nb

        if self.controller is None or not self.controller.alive():
            return None
        try:
            if self._ctl_client is None:
                self._ctl_client = nb.controller_client(self.topo.management.northbound,
                                                        self.token(), timeout=2.0)
            reply = self._ctl_client.call("GetStatus", nb.pb.StatusRequest())
        except LegoError as exc:
            log.info("controller status unavailable: %s", exc)
            return None
        import json

        st = json.loads(reply.json)
        self._last_ctl = st
        return st

    def finish(self, timeout: float = 60.0) -> dict | None:
        """End of a run: the controller's last status, then its Drain (no more policy;
        every graph's source ends, its bricks finish, its decision writes its summary);
        wait for the summaries, then stop the controller. Returns the last status."""
        from lego.control import northbound as nb

        last = self.controller_status() or self._last_ctl
        self.last_wall = time.time()  # when ``last`` was taken (wall clock)
        if self._ctl_client is None:  # the controller is not answering
            log.warning("drain: no controller to ask")
        else:
            try:
                self._ctl_client.call("Drain", nb.pb.DrainRequest(), timeout=10.0)
            except LegoError as exc:
                log.warning("drain: %s", exc)
        deadline = time.monotonic() + timeout
        want = [self.results_dir / f"port-{g['port']}" / "summary.json"
                for g in (last or {}).get("graphs", [])
                if any(a["host"] == g["host"] and a["alive"] for a in last.get("hosts", []))]
        while not all(p.is_file() for p in want) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the decisions' summaries up to a deadline
        self.stop_controller()
        return last

    def score_dirs(self) -> list[Path]:
        if self.mode == "controller":
            return sorted(self.results_dir.glob("port-*"))
        return [self.agent_dir(h) / "out" for h in self.agents]

    def stop_controller(self, timeout: float = 10.0) -> None:
        p = self.controller
        if self._ctl_client is not None:
            self._ctl_client.close()
            self._ctl_client = None
        if p is None or not p.alive():
            return
        p.popen.terminate()
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()

    def _popen(self, name: str, argv: list[str], host=None,
               env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as out:
            out.write(("$ " + " ".join(argv) + "\n").encode())
            out.flush()
            if host is None:
                popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            else:
                popen = host.popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        return Proc(name, popen, log_path, argv)

    def start_controller(self, timeout: float = 30.0, wait: bool = True) -> None:
        """Start the controller; return once it has synced the switch (``wait``)."""
        if self.mode == "controller":
            if self._ctl_client is not None:
                self._ctl_client.close()
                self._ctl_client = None
            argv = [sys.executable, "-m", "lego", "controller", "run", "--config",
                    str(self.config_path)]
            self.controller = self._popen("controller", argv, env=self.ray.env())
            if wait:  # the first graphs' actors start too (new Ray workers: seconds)
                self.wait_controller(max(timeout, 120.0))
            return
        argv = southbound_controller_argv(self.topo, self.replica_ports, self.semantics,
                                          nf=self.nf, nf_options=self.nf_options)
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
        """The controller's start line (what it wrote on the switch)."""
        text = self.controller.log_path.read_text(errors="replace") if self.controller else ""
        lines = [ln for ln in text.splitlines() if ln.startswith("controller: ")]
        return lines[-1] if lines else ""

    def kill_controller(self) -> int:
        p = self.controller
        if self._ctl_client is not None:
            self._ctl_client.close()
            self._ctl_client = None
        if p is None:
            return 0
        p.popen.kill()
        return p.popen.wait()

    def agent_dir(self, host: str) -> Path:
        return self.workdir / "agents" / host

    def brick_dir(self, host: str | None = None) -> Path:
        """Where the bricks of ``host`` (on Ray) keep their sockets, specs and logs."""
        return self.workdir / "bricks" / host if host else self.workdir / "bricks"

    @property
    def frame_log_address(self) -> str:
        return f"ipc://{self.workdir / 'framelog.sock'}"

    def start_frame_log(self) -> None:
        """The frame log's keeper on its host (the topology's ``[frame_log]``): every
        frame the switch sends to an NF host, kept off them."""
        fl = self.topo.frame_log
        if fl is None:
            return
        argv = [sys.executable, "-m", "lego.switch.framelog", "--iface", f"{fl.host}-eth0",
                "--bind", self.frame_log_address, "--mib", str(fl.mib)]
        self.frame_log = p = self._popen("framelog", argv, self.net.host(fl.host))
        deadline = time.monotonic() + 30
        while "requests on" not in p.log_path.read_text(errors="replace"):
            if not p.alive() or time.monotonic() > deadline:
                raise LegoError(f"the frame log did not start: {_last_error(p.log_path)}; "
                                f"log {p.log_path}:\n{log_tail(p.log_path)}")
            time.sleep(0.05)  # polling its log up to a deadline

    def start_ray(self) -> None:
        """The head, then one node per NF host, joined one at a time (timed)."""
        import tempfile

        from lego.topo.ray_cluster import RayCluster

        self.ray = RayCluster(self.net, self.topo, Path(tempfile.mkdtemp(prefix="lego-ray-")),
                              hosts=self.ray_hosts, host_env=lambda h: self.quota(h).env())
        self.ray.start()

    def start_agent(self, h: NFHostSpec) -> None:
        """A graph-file brick runner on ``h`` (southbound mode)."""
        wd = self.agent_dir(h.name)
        if wd.exists():
            shutil.rmtree(wd)
        wd.mkdir(parents=True)
        graph = wd / "graph.toml"
        graph.write_text(tomli_w.dumps(nf_graph(
            h.name, self.net.nf_iface(h.name), self.model, wd / "out",
            semantics=self.semantics, idle_s=self.idle_s, batch=self.batch, nf=self.nf,
            nf_options=self.nf_options)))
        argv = [sys.executable, "-m", "lego.topo.agent", str(graph), "--workdir", str(wd),
                "--host", h.name, "--status", str(wd / "status.json")]
        self.agents[h.name] = self._popen(f"agent-{h.name}", argv, self.net.host(h.name))

    def quota(self, h: NFHostSpec) -> CpuQuota:
        """The host's CPU quota (its cgroup, created on first use): ``cores`` of CPU
        time per second for every brick on it (its Ray node and the actors stay
        outside: a starved raylet would miss Ray's health checks)."""
        q = self.quotas.get(h.name)
        if q is None:
            q = self.quotas[h.name] = CpuQuota(h.name, h.cores).create()
            self.net.host(h.name).cmd(mount_script())
        return q

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
        from lego.control.p4rt_client import P4RuntimeClient
        from lego.control.switch_manager import SwitchManager
        from lego.control.switch_state import SwitchPlan

        self.kill_controller()
        decl = nfs.get(self.nf)
        options = decl.pick(**{**self.nf_options, "semantics": self.semantics})
        plan = SwitchPlan.from_split(decl.plan(options), [self.topo.traffic.port],
                                     self.replica_ports, window_us=decl.window_us(options))
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
        from lego.topo.status import SwitchMonitor

        if self._monitor is None:
            ports = [self.topo.traffic.port] + [h.port for h in self.topo.nf_hosts]
            self._monitor = SwitchMonitor(self.topo.switch.grpc_addr,
                                          self.topo.switch.device_id, MONITOR_ELECTION_ID,
                                          ports)
        return self._monitor

    def status(self) -> dict:
        from lego.topo.status import build_status

        if self.mode == "controller":
            from lego.topo.controller import dashboard_status

            return dashboard_status(self.controller_status(), self.monitor().counters(),
                                    time.time())
        return build_status(self)

    def logs(self) -> dict[str, Path]:
        out = {"switch": self.net.switch.log_path} if self.net.net is not None else {}
        if self.controller is not None:
            out["controller"] = self.controller.log_path
        for name, p in self.agents.items():
            out[f"agent-{name}"] = p.log_path
            for brick_log in sorted(self.agent_dir(name).glob("*.log")):
                out[f"{name}/{brick_log.stem}"] = brick_log
        for h in self.ray_hosts if self.ray is not None else []:
            for brick_log in sorted(self.brick_dir(h.name).glob("*.log")):
                out[f"{h.name}/{brick_log.stem}"] = brick_log
        return out

    @property
    def nf_host_names(self) -> list[str]:
        """The NF hosts of the run: with a Ray node, or (southbound) with bricks."""
        return [h.name for h in self.ray_hosts] if self.mode == "controller" \
            else list(self.agents)

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
        if self._ctl_client is not None:
            self._ctl_client.close()
            self._ctl_client = None
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        procs = [*self.agents.values(), *(p for p in (self.controller, self.frame_log) if p)]
        for p in procs:
            if p.alive():
                p.popen.terminate()
        for p in procs:
            try:
                p.popen.wait(5)
            except subprocess.TimeoutExpired:
                p.popen.kill()
        if self.ray is not None:  # inside the hosts' namespaces: before the network goes
            self.ray.stop()
            shutil.rmtree(self.ray.temp_dir, ignore_errors=True)
        self.net.stop()
        for q in self.quotas.values():
            q.remove()
