"""Ray in Mininet: the head in the root namespace, a worker node inside each NF
host's namespace, work placed on a host by the switch port it is wired to."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lego.topo.ray_cluster import START_TIMEOUT_S, RayCluster, head_argv, host_argv, ray_missing
from lego.topo.topology import load_topology
from tests.support.mininet import skip_reason


def test_ray_start_command_lines_name_the_quota_and_the_port():
    topo = load_topology()
    head = head_argv("10.99.0.1", 6380)
    assert head[1:3] == ["start", "--head"] and "--num-cpus=0" in head
    assert "--include-dashboard=false" in head and "--disable-usage-stats" in head
    nf = topo.nf_hosts[0]
    w = host_argv("10.99.0.1:6380", nf, nf.mgmt_ip)
    assert "--address=10.99.0.1:6380" in w and f"--node-ip-address={nf.mgmt_ip}" in w
    assert "--num-cpus=1" in w  # 0.1 core, in whole CPUs
    resources = json.loads(next(a for a in w if a.startswith("--resources")).split("=", 1)[1])
    assert resources == {f"port:{nf.port}": 1.0, f"nf:{nf.name}": 1.0}


_why = skip_reason() or ray_missing()

#: the driver, a separate process as the controller will be: the number of live
#: nodes, and for each switch port the interfaces a task placed by it sees
_PROBE = """
import json, sys
from pathlib import Path
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=0)
def interfaces():
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":")[0].strip() for line in lines)

ports = [int(p) for p in sys.argv[2:]]
got = {p: ray.get(interfaces.options(resources={f"port:{p}": 0.001}).remote()) for p in ports}
print(json.dumps({"nodes": sum(n["Alive"] for n in ray.nodes()), "interfaces": got}))
"""


@pytest.mark.mininet
@pytest.mark.slow
@pytest.mark.skipif(_why is not None, reason=f"mininet/ray: {_why}")
def test_ray_nodes_join_from_every_nf_host_and_tasks_land_by_port():
    from lego.topo.net import LegoNet

    # three NF hosts, as the cluster: each Ray node costs ~0.25 GiB resident
    topo = dataclasses.replace(load_topology(), nf_hosts=load_topology().nf_hosts[:3])
    work = Path(tempfile.mkdtemp(prefix="lgray-"))  # Ray's socket paths must stay short
    net = LegoNet(topo, "soft", work / "net")
    cluster = RayCluster(net, topo, work / "ray")
    try:
        net.start()
        cluster.start()
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PROBE, cluster.head,
                               *[str(h.port) for h in topo.nf_hosts]],
                              capture_output=True, text=True, timeout=120, env=cluster.env())
        assert done.returncode == 0, done.stderr[-2000:]
        probe_s = time.perf_counter() - t0
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["nodes"] == 1 + len(topo.nf_hosts)
        for h in topo.nf_hosts:  # inside the host's namespace: its own interfaces only
            assert sorted(out["interfaces"][str(h.port)]) == \
                sorted(["lo", f"{h.name}-eth0", f"{h.name}-mgmt"]), out
        mem = cluster.memory()
        assert 0 < mem["pss"] <= mem["rss"]
        print(f"ray: head {cluster.start_s['head']:.1f} s, all nodes "
              f"{sum(cluster.start_s.values()):.1f} s, a task on each of "
              f"{len(topo.nf_hosts)} hosts in {probe_s:.1f} s (driver start-up included), "
              f"Ray processes {mem['pss'] / 2**20:.0f} MiB (PSS; RSS summed "
              f"{mem['rss'] / 2**20:.0f} MiB)")
        assert max(cluster.start_s.values()) < START_TIMEOUT_S
    finally:
        cluster.stop()
        net.stop()
    assert not cluster.pids(), "Ray processes outlived the cluster's stop"


@pytest.mark.parametrize("why", ["The current node timed out during startup.",
                                 "Timed out waiting for file /tmp/ray/session_x/gcs_server_port"])
def test_a_local_ray_head_that_timed_out_is_cleared_and_started_once_more(why):
    """Ray's head sometimes never registers its raylet (a bare Exception after
    30 s) or never writes its GCS port (a RuntimeError): the processes that
    attempt started are killed and it starts again; any other failure, or a
    second timeout, is raised."""
    from lego.topo.ray_cluster import start_again_once

    left = []

    def start():
        if not left:  # the first attempt leaves a process behind, then times out
            left.append(subprocess.Popen(["sleep", "60"]))
            raise RuntimeError(why)
        return "head"

    assert start_again_once(start) == "head"
    assert left[0].wait(5) == -9
    with pytest.raises(ValueError):
        start_again_once(lambda: (_ for _ in ()).throw(ValueError("bad config")))

    def always():
        raise RuntimeError(why)

    with pytest.raises(RuntimeError, match="(?i)timed out"):
        start_again_once(always)
