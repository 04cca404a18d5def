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
(:data:`OBJECT_STORE_BYTES`), since no packet goes through it.

    argv = head_argv("10.99.0.1", 6380)            # pure: the ray start command lines
    cluster = RayCluster(net, topo, Path("/tmp/lego-ray")).start()
    cluster.rss_bytes()                            # every Ray process of this cluster
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lego.errors import LegoError
from lego.topo.mn_cleanup import kill_all
from lego.topo.mn_topology import NFHostSpec, Topology

HEAD_PORT = 6380  # GCS; not Redis' 6379, which a developer machine may already use
START_TIMEOUT_S = 30.0
#: Ray's smallest object store (75 MiB and a little): objects are control messages
OBJECT_STORE_BYTES = 80 * 1024 * 1024
#: what every node leaves off
_QUIET = ["--disable-usage-stats", f"--object-store-memory={OBJECT_STORE_BYTES}"]


def ray_binary() -> str:
    """The ``ray`` CLI of this interpreter's environment."""
    return str(Path(sys.executable).with_name("ray"))


def ray_missing() -> str | None:
    """Why Ray cannot run here (one line), or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install -e .)"
    if not Path(ray_binary()).is_file():
        return f"the ray CLI is not next to {sys.executable}"
    return None


def port_resource(port: int) -> str:
    """The custom resource naming the switch port a node is wired to."""
    return f"port:{int(port)}"


def head_argv(address: str, port: int = HEAD_PORT, temp_dir: Path | None = None) -> list[str]:
    """``ray start --head`` in the root namespace (pure): no CPUs, so nothing but the
    controller's own driver is scheduled there."""
    argv = [ray_binary(), "start", "--head", f"--node-ip-address={address}",
            f"--port={port}", "--num-cpus=0", "--include-dashboard=false", *_QUIET]
    return argv + ([f"--temp-dir={temp_dir}"] if temp_dir else [])


def worker_argv(head: str, host: NFHostSpec, node_ip: str) -> list[str]:
    """``ray start`` joining ``head`` from an NF host's namespace (pure)."""
    resources = json.dumps({port_resource(host.port): 1, f"nf:{host.name}": 1})
    return [ray_binary(), "start", f"--address={head}", f"--node-ip-address={node_ip}",
            f"--num-cpus={max(1, math.ceil(host.cores))}", f"--resources={resources}",
            *_QUIET]


@dataclass
class RayCluster:
    """The head in the root namespace, a worker in each NF host of a running
    :class:`~lego.topo.mn_net.LegoNet`."""

    net: object  # LegoNet (host(name) -> Mininet host)
    topo: Topology
    temp_dir: Path
    port: int = HEAD_PORT
    token_file: Path | None = None  # default: a new token in temp_dir
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
        self._run("head", head_argv(self.topo.management.controller_ip, self.port, self.temp_dir))
        self.start_s["head"] = time.perf_counter() - t0
        for h in self.topo.nf_hosts:  # one at a time: six at once hung past 30 s
            t = time.perf_counter()
            self._wait(h.name, self.net.host(h.name).popen(
                worker_argv(self.head, h, h.mgmt_ip), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=self.env()))
            self.start_s[h.name] = time.perf_counter() - t
        return self

    def _run(self, what: str, argv: list[str]) -> None:
        self._wait(what, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, env=self.env()))

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
        marks = (str(self.temp_dir), self.head)
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

    def rss_bytes(self) -> int:
        """Resident memory of every process of this cluster."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop this cluster's processes, and only them (``ray stop`` would stop every
        Ray process of the machine, a user's own cluster too)."""
        kill_all(self.pids(), grace_s)

    def env(self) -> dict[str, str]:
        """The environment of every node and driver of this cluster."""
        return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                    RAY_AUTH_TOKEN_PATH=str(self.token_file))
