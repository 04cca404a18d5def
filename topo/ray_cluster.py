"""Ray as the cluster engine of a Mininet run: one Ray node per NF host.

The head runs in the root namespace, bound to the management bridge's address;
each NF host runs a Ray worker node inside its own namespace, joined over the
management network. A worker advertises the host's CPU quota, rounded up to
whole CPUs (Ray counts CPUs in whole units), and two custom resources: ``port:N``,
the switch port the host is wired to, and ``nf:NAME``. An actor that asks for a
sliver of ``port:N`` runs on that host, so placement follows the wiring, not a
registry of ours. Ray carries control only; packets stay on the dataplane.

Every node and driver authenticates with one token (Ray's ``RAY_AUTH_MODE=token``,
the secret in a 0600 file, ``RAY_AUTH_TOKEN_PATH``): without it any process that
reaches the management network could run code on the NF hosts. Start-up is
bounded (:data:`START_TIMEOUT_S` per node) and timed; the dashboard and usage
stats stay off, and each node's object store is the smallest Ray allows
(``ray_bricks.OBJECT_STORE_BYTES``), since no packet goes through it.

    argv = head_argv("10.99.0.1", 6380)            # pure: the ray start command lines
    cluster = RayCluster(net, topo, Path("/tmp/lego-ray")).start()
    cluster.memory()                # Ray's processes: {'rss': bytes, 'pss': bytes}

:class:`LocalRay` is the same cluster on this machine without Mininet (Ray's
``cluster_utils``: one node per NF host, this process the driver), for the
benchmarks and the tests that run bricks as actors.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lego.control.ray_bricks import QUIET, QUIET_ENV, head_env, ray_binary, worker_argv
from lego.errors import LegoError
from lego.topo.cleanup import kill_all
from lego.topo.topology import NFHostSpec, Topology

HEAD_PORT = 6380  # GCS; not Redis' 6379, which a developer machine may already use
START_TIMEOUT_S = 30.0


def ray_missing() -> str | None:
    """Why Ray cannot run here (one line), or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install -e .)"
    if not Path(ray_binary()).is_file():
        return f"the ray CLI is not next to {sys.executable}"
    return None


def head_argv(address: str, port: int = HEAD_PORT, temp_dir: Path | None = None) -> list[str]:
    """``ray start --head`` in the root namespace (pure): no CPUs, so nothing but the
    controller's own driver is scheduled there."""
    argv = [ray_binary(), "start", "--head", f"--node-ip-address={address}",
            f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *QUIET]
    return argv + ([f"--temp-dir={temp_dir}"] if temp_dir else [])


def host_argv(head: str, host: NFHostSpec, node_ip: str) -> list[str]:
    """``ray start`` joining ``head`` from an NF host's namespace (pure)."""
    return worker_argv(head, host.name, [host.port], host.cores, node_ip)


@dataclass
class RayCluster:
    """The head in the root namespace, a worker in each NF host of a running
    :class:`~lego.topo.net.LegoNet`."""

    net: object  # LegoNet (host(name) -> Mininet host)
    topo: Topology
    temp_dir: Path
    port: int = HEAD_PORT
    token_file: Path | None = None  # default: a new token in temp_dir
    hosts: list[NFHostSpec] | None = None  # the NF hosts with a node (default: all)
    #: more environment for a host's node (its raylet and every process Ray starts
    #: there inherit it): e.g. the CPU quota group its bricks join
    host_env: Callable[[NFHostSpec], dict[str, str]] | None = None
    start_s: dict[str, float] = field(default_factory=dict)  # node -> seconds to join

    @property
    def head(self) -> str:
        return f"{self.topo.management.controller_ip}:{self.port}"

    def start(self) -> RayCluster:
        why = ray_missing()
        if why:
            raise LegoError(f"Ray cluster: {why}")
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if self.token_file is None:
            self.token_file = self.temp_dir / "auth_token"
            self.token_file.touch(mode=0o600)
            self.token_file.write_text(secrets.token_hex(32))
        t0 = time.perf_counter()
        self._run("head", head_argv(self.topo.management.controller_ip, self.port, self.temp_dir),
                  head_env())
        self.start_s["head"] = time.perf_counter() - t0
        for h in self.nodes:  # one at a time: six at once hung past 30 s
            t = time.perf_counter()
            env = {**self.env(), **(self.host_env(h) if self.host_env else {})}
            self._wait(h.name, self.net.host(h.name).popen(
                host_argv(self.head, h, h.mgmt_ip), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env))
            self.start_s[h.name] = time.perf_counter() - t
        return self

    @property
    def nodes(self) -> list[NFHostSpec]:
        return list(self.topo.nf_hosts if self.hosts is None else self.hosts)

    def node_pids(self, host: str) -> list[int]:
        """The processes of ``host``'s node: those bound to its management address
        (raylet, its agents) and their descendants (Ray's workers, the bricks)."""
        return _with_descendants(self.topo.nf(host).mgmt_ip + " ")

    def alive(self, host: str) -> bool:
        return bool(self.node_pids(host))

    def kill_node(self, host: str) -> int:
        """SIGKILL every process of ``host``'s node: the server is gone. Returns how many."""
        pids = self.node_pids(host)
        kill_all(pids, 0.0)
        return len(pids)

    def _run(self, what: str, argv: list[str], env: dict[str, str]) -> None:
        self._wait(what, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env={**self.env(), **env}))

    @staticmethod
    def _wait(what: str, proc: subprocess.Popen) -> None:
        try:
            out, _ = proc.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            tail = " / ".join((out or b"").decode(errors="replace").strip().splitlines()[-3:])
            raise LegoError(f"Ray {what}: `ray start` did not finish in "
                            f"{START_TIMEOUT_S:g} s: {tail}") from None
        if proc.returncode != 0:
            tail = " / ".join((out or b"").decode(errors="replace").strip().splitlines()[-3:])
            raise LegoError(f"Ray {what}: `ray start` exited with code {proc.returncode}: "
                            f"{tail}")

    def pids(self) -> list[int]:
        """Every process of this cluster: those whose command line names its temp dir
        or head address (GCS, raylets, agents), and their descendants (Ray's workers,
        whose command lines name neither)."""
        return _with_descendants(str(self.temp_dir), self.head)

    def memory(self) -> dict[str, int]:
        """Memory of Ray's own processes (GCS, raylets, agents, actor workers; not the
        brick processes the actors start): ``rss`` sums each one's resident set,
        counting the pages they share (libraries) once per process; ``pss`` shares
        them out, so it is what the cluster really takes. Bytes."""
        total = {"rss": 0, "pss": 0}
        for pid in self.pids():
            try:
                if b"lego.bricks.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            except OSError:
                continue
            for line in rollup:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    total[key.lower()] += int(rest.split()[0]) * 1024
        return total

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop this cluster's processes, and only them (``ray stop`` would stop every
        Ray process of the machine, a user's own cluster too)."""
        kill_all(self.pids(), grace_s)

    def env(self) -> dict[str, str]:
        """The environment of every node and driver of this cluster."""
        return dict(os.environ, **QUIET_ENV, RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(self.token_file))


def _with_descendants(*marks: str) -> list[int]:
    """Processes whose command line (arguments joined by spaces, one after the last)
    contains one of ``marks``, and all their descendants."""
    parent, ours = {}, set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
        if any(m in cmd for m in marks):
            ours.add(int(pid))
    grown = True
    while grown:
        more = {p for p, pp in parent.items() if pp in ours} - ours
        ours |= more
        grown = bool(more)
    return sorted(ours)


# ---------------------------------------------------------------- a local Ray cluster

#: what Ray raises when a node's raylet does not register within 30 s, or its GCS
#: server does not write its port file
RAY_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


def start_again_once(start: Callable[[], Any]) -> Any:
    """``start()``; if Ray's head timed out starting (once in about ten runs of the
    suite here: its raylet never writing a log, or its GCS server never writing
    its port), kill the processes that attempt left (this process's new children:
    Ray keeps no handle on a head that failed) and start once more."""
    before = child_pids()
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception
        if not any(why in str(exc) for why in RAY_START_TIMEOUTS):
            raise
        for pid in child_pids() - before:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return start()


def child_pids() -> set[int]:
    """This process's children (from /proc)."""
    me, out = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == me:
            out.add(int(stat.parent.name))
    return out


class LocalRay:
    """A Ray cluster on this machine (``ray.cluster_utils.Cluster``), without Mininet:
    a head with no CPUs and one node per NF host (``nodes``: host -> its switch
    ``ports`` and ``cpus``), this process connected as the driver. Nodes can be added
    and removed (a lost server)."""

    def __init__(self, nodes: dict[str, dict]) -> None:
        import ray
        from ray.cluster_utils import Cluster

        from lego.control.ray_bricks import HEALTH_CHECK, OBJECT_STORE_BYTES

        self.cluster = start_again_once(lambda: Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": HEALTH_CHECK}))
        self.nodes: dict[str, Any] = {}
        for host, n in nodes.items():
            self.add(host, n["ports"], n["cpus"])
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, namespace="lego-tests", log_to_driver=False)

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, host: str, ports: list[int], cpus: int = 2) -> None:
        from lego.control.ray_bricks import OBJECT_STORE_BYTES, node_resources

        self.nodes[host] = self.cluster.add_node(
            num_cpus=cpus, resources=node_resources(host, ports),
            object_store_memory=OBJECT_STORE_BYTES)

    def remove(self, host: str) -> None:
        """The node goes away (its raylet and every worker on it are killed)."""
        self.cluster.remove_node(self.nodes.pop(host), allow_graceful=False)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
