"""The controller's hands on a Ray cluster: brick actors created, told and killed.

Each brick replica is a detached, named :class:`~lego.bricks.actor.BrickActor`
(``brick:<node>/<serial>`` in the run's namespace), so that a restarted controller
finds the running bricks by name and leaves them running. Placement is Ray's:
a brick of port ``p``'s graph asks for a sliver of the custom resource ``port:p``
(the node wired to that switch port), a brick placed on another host for one of
``nf:<host>``. Ray restarts an actor whose brick died (``max_restarts``), and
tells node membership; this class only reads what Ray knows:

- :meth:`nodes`: the live NF nodes, by host name (their ``nf:<host>`` resource);
- :meth:`poll`: every brick's newest load report; a report with a new
  ``incarnation`` is a brick Ray restarted (:attr:`restarted`);
- :meth:`adopt`: the bricks already running (a controller restart).

The data path never goes through Ray: bricks read the switch port with AF_PACKET
and talk over shared memory or ZeroMQ, as in a graph file.

A fused graph (brick specs with a ``group``, :func:`~lego.control.graph_specs.fused_spec`)
is one actor and one process; each of its bricks is a name for that actor here
(:attr:`RayBricks.process_of`): a command to a member names it (``"member"``),
its loads are the process's split by member (:func:`member_load`), and the
actor ends with its last member.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lego.control.graph_specs import fused_spec, member_specs
from lego.errors import LegoError

log = logging.getLogger(__name__)

NAMESPACE = "lego"
PREFIX = "brick:"
#: what a brick actor asks of its node's custom resource (many fit on one node)
SLIVER = 0.001
CALL_TIMEOUT_S = 15.0


#: Ray's health checks of the raylets, on the head (GCS): a node is declared dead
#: after 3 checks failed 0.5 s apart (Ray's defaults: 5 checks, 3 s apart, so 15 s)
HEALTH_CHECK = {"health_check_period_ms": 500, "health_check_timeout_ms": 500,
                "health_check_failure_threshold": 3}
#: Ray's smallest object store (75 MiB and a little): objects are control messages
OBJECT_STORE_BYTES = 80 * 1024 * 1024
#: what every node leaves off: usage stats, a large object store, and the log
#: monitor (a process per node, 1 % of a core each, that streams the workers'
#: output to the driver: a brick logs to its own file, an actor's last words go to
#: its ``deaths.jsonl``)
QUIET = ["--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}",
         "--include-log-monitor=false"]


def ray_binary() -> str:
    """The ``ray`` CLI of this interpreter's environment."""
    return str(Path(sys.executable).with_name("ray"))


#: what a LEGO cluster's processes leave off (every node and driver): idle workers
#: started ahead (a brick actor is started when asked for, and the prestarted one
#: sat idle), metrics and task events (for a dashboard that is off). Together with
#: the controller's reads every 0.25 s (0.2 s before), measured idle in Mininet (six
#: nodes, ten actors): Ray's processes 22 % of a core, against 28 % without.
QUIET_ENV = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0",
             "RAY_worker_niceness": "0",  # workers keep their node's (NODE_NICENESS)
             "RAY_enable_metrics_collection": "0", "RAY_task_events_report_interval_ms": "0",
             "RAY_event_stats": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def head_env() -> dict[str, str]:
    """The environment of ``ray start --head``: :data:`QUIET_ENV` and
    :data:`HEALTH_CHECK`."""
    return {**QUIET_ENV, **{f"RAY_{k}": str(v) for k, v in HEALTH_CHECK.items()}}


def node_resources(host: str, ports: list[int]) -> dict[str, float]:
    """What an NF host's Ray node advertises: ``nf:<host>`` and ``port:<p>`` per
    switch port it is wired to (what brick actors are placed by)."""
    return {f"nf:{host}": 1.0, **{f"port:{int(p)}": 1.0 for p in ports}}


#: an NF host's Ray node (raylet, agents, and the actor workers it starts) runs at this
#: niceness from its start. Ray nices a worker itself (``worker_niceness``, 15) only
#: once its interpreter is up and ``ray`` imported (about 0.4 CPU-seconds, five workers
#: per graph, at every scale-out's new standby), so that start ran at the switch's and
#: the bricks' priority: in make run (one run each, status reads trimmed), up to 1.76 of
#: the machine's 2 cores busy at normal priority in the seconds after a scale-out, 1.31
#: at most with the node niced. A brick takes the normal priority once warm
#: (:func:`lego.bricks.main.enter_data_path`).
NODE_NICENESS = 15


def worker_argv(head: str, host: str, ports: list[int], cores: float,
                node_ip: str | None = None) -> list[str]:
    """``ray start`` joining ``head`` as NF host ``host``, at :data:`NODE_NICENESS`
    (pure). Ray counts whole CPUs: the host's cores rounded up (the real cap is its
    CPU quota, not Ray's count)."""
    argv = ["nice", "-n", str(NODE_NICENESS), ray_binary(), "start", f"--address={head}",
            f"--num-cpus={max(1, math.ceil(cores))}",
            f"--resources={json.dumps(node_resources(host, ports))}", *QUIET]
    return argv + ([f"--node-ip-address={node_ip}"] if node_ip else [])


def brick_actor_name(brick: str) -> str:
    return PREFIX + brick


def placement(host: str, port: int | None) -> dict[str, float]:
    """The custom resource that pins a brick: its graph's switch port, or the host."""
    return {f"port:{port}" if port is not None else f"nf:{host}": SLIVER}


@dataclass
class RayBricks:
    """Brick actors on a Ray cluster (``address``: "auto", HOST:PORT, or "" for a
    local Ray started in this process, one node advertising every host of
    ``local_hosts``; a Ray this process already joined is used as it is)."""

    address: str = ""
    namespace: str = NAMESPACE
    max_restarts: int = 3
    env: dict[str, str] = field(default_factory=dict)
    #: a local Ray (no ``address``) is one node for every NF host: host -> ports
    local_hosts: dict[str, list[int]] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)  # brick -> actor handle
    incarnations: dict[str, str] = field(default_factory=dict)
    restarted: list[dict] = field(default_factory=list)  # taken by the caller
    #: a fused graph's brick -> its process's brick name (``replica-PORT/0``)
    process_of: dict[str, str] = field(default_factory=dict)
    #: a fused graph's process -> its bricks' specs (chain order)
    fused: dict[str, list[dict]] = field(default_factory=dict)
    _actor_class: Any = None

    def connect(self) -> RayBricks:
        import ray

        from lego.bricks.actor import BrickActor

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": self.namespace, "log_to_driver": False,
                                      "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                resources: dict[str, float] = {}
                for host, ports in self.local_hosts.items():
                    resources.update(node_resources(host, ports))
                ray.init(address="local",  # a new one, even where a cluster runs
                         include_dashboard=False, num_cpus=os.cpu_count(),
                         resources=resources, object_store_memory=OBJECT_STORE_BYTES,
                         _system_config=HEALTH_CHECK, **kwargs)
        self._actor_class = ray.remote(BrickActor)
        return self

    # ------------------------------------------------------------ membership

    def nodes(self) -> dict[str, dict]:
        """Live NF nodes by host name: {"node_id", "ip", "resources"}."""
        import ray

        out = {}
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            for r in n.get("Resources", {}):
                if r.startswith("nf:"):
                    out[r[3:]] = {"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                                  "resources": n["Resources"]}
        return out

    def adopt(self) -> list[dict]:
        """The brick actors running in this namespace (their info), e.g. after a
        controller restart; each becomes a handle of this object."""
        import ray

        found = []
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] != self.namespace or not name.startswith(PREFIX):
                continue
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
                info = ray.get(handle.info.remote(), timeout=CALL_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a dead or restarting actor: skip it
                log.warning("brick actor %s not adopted: %s", name, exc)
                continue
            brick = name[len(PREFIX):]
            members = member_specs(info["spec"])
            if members:  # a fused graph: its bricks are what the controller knows
                self.fused[brick] = members
                for m in members:
                    found.append(self._alias(brick, m, handle, info))
                continue
            self.handles[brick] = handle
            self.incarnations[brick] = info["incarnation"]
            found.append(info)
        return found

    def _alias(self, process: str, member: dict, handle: Any, info: dict) -> dict:
        """``member`` (a brick spec) of fused process ``process``: a name for its
        actor; returns the member's info."""
        brick = f"{member['node']}/{member['serial']}"
        self.handles[brick] = handle
        self.process_of[brick] = process
        self.incarnations[brick] = info["incarnation"]
        return {**info, "id": brick, "type": member["type"], "spec": member}

    # ------------------------------------------------------------ lifecycle

    def start(self, host: str, port: int | None, specs: list[dict], workdir: str,
              timeout: float = 30.0) -> list[dict]:
        """One actor per spec on ``host``'s node (``port``: its graph's switch port,
        None: any node of the host); returns once each brick registered, else
        LegoError with the failed brick's log. A brick whose actor is alive is left
        as it is (Ray restarted it already)."""
        import ray

        new: list[str] = []
        groups: dict[str, list[dict]] = {}
        for s in specs:
            if s.get("group"):  # a fused graph's brick: its process is started once
                groups.setdefault(f"{s['group']}/0", []).append(s)
                continue
            brick = f"{s['node']}/{s['serial']}"
            if not self._alive(brick):
                self.handles[brick] = self._actor(brick, host, port, s, workdir)
                new.append(brick)
        for process, members in groups.items():
            if self._alive(f"{members[0]['node']}/{members[0]['serial']}"):
                continue  # Ray restarted it already
            stored = self.fused.get(process, [])
            if len(members) < len(stored):  # one member restarted: its whole graph
                members = stored
            self.fused[process] = members
            handle = self._actor(process, host, port, fused_spec(members, workdir), workdir)
            for m in members:
                self._alias(process, m, handle, {"incarnation": ""})
            new.append(f"{members[0]['node']}/{members[0]['serial']}")
        try:
            infos = ray.get([self.handles[b].ready.remote(timeout) for b in new],
                            timeout=timeout + 30.0)
        except Exception as exc:
            for b in new:  # none of this start stays half up
                for m in self._members(b):
                    self.kill(m)
            raise LegoError(f"start on {host}: {_reason(exc)}") from None
        out = []
        for b, info in zip(new, infos, strict=True):
            process = self.process_of.get(b)
            if process is None:
                self.incarnations[info["id"]] = info["incarnation"]
                out.append(info)
                continue
            out += [self._alias(process, m, self.handles[b], info)
                    for m in self.fused[process]]
        return out

    def _actor(self, name: str, host: str, port: int | None, spec: dict, workdir: str) -> Any:
        return self._actor_class.options(
            name=brick_actor_name(name), namespace=self.namespace, lifetime="detached",
            max_restarts=self.max_restarts, max_task_retries=0, max_concurrency=16,
            num_cpus=0, resources=placement(host, port),
        ).remote(spec, workdir, self.env)

    def _members(self, brick: str) -> list[str]:
        """The bricks sharing ``brick``'s process (itself alone where not fused)."""
        process = self.process_of.get(brick)
        if process is None:
            return [brick]
        return [b for b, p in self.process_of.items() if p == process]

    def _alive(self, brick: str) -> bool:
        import ray

        h = self.handles.get(brick)
        if h is None:
            return False
        try:
            return ray.get(h.info.remote(), timeout=CALL_TIMEOUT_S)["state"] != "exited"
        except Exception:  # noqa: BLE001 - dead for good (restarts spent) or unreachable
            return False

    def kill(self, brick: str) -> None:
        """End a brick's actor for good (no restart); a fused graph's with its last
        member."""
        import ray

        h = self.handles.pop(brick, None)
        self.incarnations.pop(brick, None)
        process = self.process_of.pop(brick, None)
        if process is not None:
            if process in self.process_of.values():
                return  # its other members still run in it
            self.fused.pop(process, None)
        if h is not None:
            try:
                ray.kill(h, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - already gone
                log.debug("kill %s: %s", brick, exc)

    def kill_all(self) -> None:
        for brick in list(self.handles):
            self.kill(brick)

    # ------------------------------------------------------------ control

    def _call(self, brick: str, method: str, *args, timeout: float = CALL_TIMEOUT_S):
        import ray

        h = self.handles.get(brick)
        if h is None:
            raise LegoError(f"{method} {brick}: no such brick")
        if brick in self.process_of and args and isinstance(args[0], dict):
            args = ({**args[0], "member": brick.rpartition("/")[0]}, *args[1:])
        try:
            return ray.get(getattr(h, method).remote(*args), timeout=timeout)
        except Exception as exc:
            raise LegoError(f"{method} {brick}: {_reason(exc)}") from None

    def send(self, brick: str, command: dict) -> bool:
        return bool(self._call(brick, "send", command))

    def set_cores(self, brick: str, cores: float) -> float:
        """Resize the CPU quota of ``brick``'s host (its actor writes the cgroup)."""
        return float(self._call(brick, "set_cores", cores))

    def request(self, brick: str, command: dict, timeout: float = 5.0) -> dict:
        return self._call(brick, "request", command, timeout, timeout=timeout + 5.0)

    def export_state(self, brick: str, command: dict, timeout: float = 10.0) -> tuple[dict, bytes]:
        return self._call(brick, "export_state", command, timeout, timeout=timeout + 5.0)

    def import_state(self, brick: str, blobs: list[bytes], timeout: float = 10.0) -> dict:
        return self._call(brick, "import_state", blobs, timeout, timeout=timeout + 5.0)

    def restore_state(self, brick: str, blob: bytes | None, position: dict,
                      timeout: float = 10.0) -> dict:
        return self._call(brick, "restore_state", blob, position, timeout,
                          timeout=timeout + 5.0)

    def request_with_file(self, brick: str, command: dict, blob: bytes,
                          timeout: float = 10.0) -> dict:
        return self._call(brick, "request_with_file", command, blob, timeout,
                          timeout=timeout + 5.0)

    # ------------------------------------------------------------ loads

    def poll(self, timeout: float = 1.0) -> dict[str, dict]:
        """Every brick's newest load; a brick that did not answer within ``timeout``
        (restarting, its node gone, or slow) is left out. A new incarnation is
        appended to :attr:`restarted` with what ended the old one."""
        import ray

        # (snapshots: the command thread starts and the watch thread kills bricks)
        handles, process_of = dict(self.handles), dict(self.process_of)
        reads: dict[str, list[str]] = {}  # one read per actor: a fused graph's bricks
        for b in handles:
            reads.setdefault(process_of.get(b, b), []).append(b)
        refs = {handles[bs[0]].load.remote(): bs for bs in reads.values()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        out = {}
        for ref in ready:
            try:
                whole = ray.get(ref)
            except Exception:  # noqa: BLE001 - its actor died under the call
                continue
            bricks = refs[ref]
            for i, brick in enumerate(bricks):
                fused = brick in process_of
                load = member_load(whole, brick) if fused else whole
                # a fused graph's process is one death, told as its head's (its source)
                self._take_load(brick, load, out, tell=not fused or i == 0)
        return out

    def _take_load(self, brick: str, load: dict, out: dict[str, dict], tell: bool) -> None:
        """``brick``'s load into ``out``; a new incarnation noted as a restart
        (``tell``: in :attr:`restarted`)."""
        old = self.incarnations.get(brick)
        if tell and old and load["incarnation"] != old:
            death = load.get("last_death") or {}
            self.restarted.append({"brick": brick, "t": time.monotonic(),
                                   "code": death.get("code", -1),
                                   "error": death.get("error", "")})
        self.incarnations[brick] = load["incarnation"]
        out[brick] = load


def member_load(load: dict, brick: str) -> dict:
    """A fused graph's brick's share of its process's load: its own CPU and rows
    (the chain's ``extra.members``, in chain order), the process's busy time and
    state (they are one replica's). The head (the source) also carries the
    runtime's CPU and the stages, so the members' CPU adds up to the process's
    once."""
    node = brick.rpartition("/")[0]
    members = load.get("extra", {}).get("members", {})
    head = node == next(iter(members), None)
    own = members.get(node, {})
    cpu = float(own.get("cpu_s", 0.0))
    out = {**load, "brick": brick, "packets_in": int(own.get("packets_in", 0)),
           "cpu_s": cpu, "logic_cpu_s": cpu, "stages_cpu_s": {}}
    if head:
        rest = float(load.get("cpu_s", 0.0)) - sum(float(m.get("cpu_s", 0.0))
                                                  for m in members.values())
        out["cpu_s"] = cpu + max(0.0, rest)
        out["stages_cpu_s"] = load.get("stages_cpu_s", {})
    taken = int(members.get(next(iter(members), ""), {}).get("packets_in", 0))
    if "pps" in load and taken:
        out["pps"] = load["pps"] * out["packets_in"] / taken
    return out


def _reason(exc: BaseException) -> str:
    """What a Ray error says: the brick's own error (with its log) where it raised
    one, else the last line of Ray's message."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, LegoError):
        return str(cause)
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(exc).__name__
