"""Bricks as Ray actors on a local Ray cluster (head + nf1 with ports 2, 3 + nf2 with
port 4): placement by the switch port's resource, restarts by Ray, adoption by
name, errors with the brick's log. A two-brick no-op graph (source -> sink)."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from lego.bricks.graph import graph_from_dict
from lego.bricks.main import BRICK_NICENESS
from lego.control.ray_bricks import NODE_NICENESS, RayBricks, node_resources, worker_argv
from lego.errors import LegoError
from lego.polling import wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def test_a_node_advertises_its_host_its_ports_and_its_cores_in_whole_cpus():
    argv = worker_argv("10.0.0.254:6380", "nf1", [2, 3], 2.5, "10.0.0.11")
    assert argv[:3] == ["nice", "-n", str(NODE_NICENESS)]  # the node's processes yield
    assert argv[4:6] == ["start", "--address=10.0.0.254:6380"]
    assert "--num-cpus=3" in argv and "--node-ip-address=10.0.0.11" in argv
    res = json.loads(next(a for a in argv if a.startswith("--resources=")).split("=", 1)[1])
    assert res == node_resources("nf1", [2, 3]) == {"nf:nf1": 1.0, "port:2": 1.0,
                                                    "port:3": 1.0}
    assert "--disable-usage-stats" in argv


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    from lego.topo.traffic_synth import generate, write_trace

    path = tmp_path_factory.mktemp("rb") / "t.pcap"
    write_trace(generate(seed=5, packets=400), path)
    return path


@pytest.fixture
def bricks(local_ray):
    """A RayBricks in a namespace of its own; every actor it made is killed after."""
    rb = RayBricks(namespace=f"t-{uuid.uuid4().hex[:8]}", max_restarts=2).connect()
    try:
        yield rb
    finally:
        rb.kill_all()


def _specs(trace: Path, port: int, source: dict | None = None) -> tuple[Path, list[dict]]:
    work = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # ipc paths stay short
    opts = {"trace": str(trace), "batch": 64, "repeat": 10**6, **(source or {})}
    g = graph_from_dict({"graph": {"name": f"t{port}", "transport": "ipc"},
                         "bricks": {f"src-{port}": {"type": "noop_source", "options": opts},
                                    f"dec-{port}": {"type": "noop_sink"}},
                         "edges": [{"from": f"src-{port}", "to": f"dec-{port}"}]})
    return work, [asdict(s) for s in g.specs(work, "ipc://unused")]


def _node_ids(rb: RayBricks) -> dict[str, str]:
    return {h: n["node_id"] for h, n in rb.nodes().items()}


def test_bricks_run_on_the_node_wired_to_their_port(bricks, trace):
    work, specs = _specs(trace, 4)
    infos = bricks.start("nf2", 4, specs, str(work))
    assert {i["state"] for i in infos} == {"running"}
    assert {i["node_id"] for i in infos} == {_node_ids(bricks)["nf2"]}
    work1, specs1 = _specs(trace, 3)
    infos1 = bricks.start("nf1", None, specs1, str(work1))  # by host: nf:nf1
    assert {i["node_id"] for i in infos1} == {_node_ids(bricks)["nf1"]}
    assert bricks.request("src-4/0", {"op": "go"})["ok"]
    wait_for(lambda: bricks.poll().get("dec-4/0", {}).get("packets_in", 0) > 0, 20,
             "packets at the sink")


def _proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a niceness needs root")
def test_a_brick_runs_at_the_normal_priority_not_at_rays_worker_niceness(bricks, trace):
    """Ray nices its workers (15): a brick warms up at its actor's niceness (a standby
    starting takes only idle CPU) and runs its data path at the normal priority (one
    inheriting 15 got a sliver of the CPU whenever the machine was busy)."""
    work, specs = _specs(trace, 4)
    bricks.start("nf2", 4, specs, str(work))
    sink = bricks._call("dec-4/0", "info")
    actor_nice = int(_proc_stat(int(_proc_stat(sink["pid"])[1]))[16])
    assert actor_nice > BRICK_NICENESS, "Ray no longer nices its workers"
    assert sink["niceness"] == actor_nice  # no data yet: still warming up
    assert bricks.request("src-4/0", {"op": "go"})["ok"]
    wait_for(lambda: bricks.poll().get("dec-4/0", {}).get("packets_in", 0) > 0, 20,
             "packets at the sink")
    for brick in ("src-4/0", "dec-4/0"):
        info = bricks._call(brick, "info")
        assert info["niceness"] == int(_proc_stat(info["pid"])[16]) == BRICK_NICENESS


def test_a_dead_brick_is_restarted_by_ray_with_its_exit_code_and_bounded(bricks, trace):
    work, specs = _specs(trace, 2)
    bricks.start("nf1", 2, specs, str(work))
    first = bricks._call("dec-2/0", "info")
    os.kill(first["pid"], signal.SIGKILL)
    wait_for(lambda: bricks.poll() is not None and bricks.restarted, 30, "the restart")
    r = bricks.restarted.pop()
    assert r["brick"] == "dec-2/0" and r["code"] == -signal.SIGKILL
    again = bricks._call("dec-2/0", "ready")
    assert again["pid"] != first["pid"] and again["node_id"] == first["node_id"]
    assert [d["pid"] for d in again["previous"]] == [first["pid"]]
    assert (first["spec"]["epoch"], again["spec"]["epoch"]) == (0, 1)  # a source's batch ids
    os.kill(again["pid"], signal.SIGKILL)  # max_restarts = 2: this restart is the last
    third = wait_for(lambda: (i := _ready(bricks)) and i["pid"] != again["pid"] and i, 30,
                     "the second restart")
    os.kill(third["pid"], signal.SIGKILL)
    wait_for(lambda: _ready(bricks) is None, 30, "the actor to stay dead")
    assert not bricks._alive("dec-2/0") and "dec-2/0" not in bricks.poll(timeout=0.5)
    bricks.start("nf1", 2, [s for s in specs if s["node"] == "dec-2"], str(work))  # anew
    assert bricks._call("dec-2/0", "info")["state"] == "running"


def _ready(bricks: RayBricks) -> dict | None:
    """The sink's info once it runs (None: its actor is dead for good)."""
    try:
        return bricks._call("dec-2/0", "ready")
    except LegoError as exc:
        if "exited" in str(exc):  # the dying incarnation answered: ask again
            return {"pid": -1}
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_killed_actor_is_restarted_by_ray_with_a_new_brick(bricks, trace):
    """ray.kill without no_restart: the actor process dies (its brick with it) and Ray
    starts both again; the restart is seen with no exit code (the brick did not die
    on its own)."""
    import ray

    work, specs = _specs(trace, 3)
    bricks.start("nf1", 3, specs, str(work))
    first = bricks._call("dec-3/0", "info")
    ray.kill(bricks.handles["dec-3/0"], no_restart=False)
    wait_for(lambda: not _alive(first["pid"]), 10, "the old brick to die with its actor")
    wait_for(lambda: bricks.poll() is not None and bricks.restarted, 30, "the restart")
    r = bricks.restarted.pop()
    assert r["brick"] == "dec-3/0" and r["code"] == -1 and r["error"] == ""
    again = bricks._call("dec-3/0", "ready")
    assert again["pid"] != first["pid"] and again["node_id"] == first["node_id"]


def test_a_killed_actor_leaves_no_brick_process(bricks, trace):
    work, specs = _specs(trace, 3)
    infos = bricks.start("nf1", 3, specs, str(work))
    pids = [i["pid"] for i in infos]
    bricks.kill_all()
    wait_for(lambda: not any(_alive(p) for p in pids), 10, "the brick processes to end")


def test_a_new_controller_adopts_the_running_bricks_by_name(bricks, trace):
    work, specs = _specs(trace, 4)
    before = {i["id"]: (i["pid"], i["incarnation"]) for i in
              bricks.start("nf2", 4, specs, str(work))}
    other = RayBricks(namespace=bricks.namespace).connect()
    found = {i["id"]: (i["pid"], i["incarnation"]) for i in other.adopt()}
    assert found == before
    assert set(other.poll()) == set(before)


def test_a_brick_that_cannot_start_fails_with_its_own_error(bricks, trace):
    work, specs = _specs(trace, 2, source={"trace": "/nonexistent.pcap"})
    with pytest.raises(LegoError, match="nonexistent"):
        bricks.start("nf1", 2, specs, str(work), timeout=20)


def test_without_an_address_a_local_ray_serves_every_configured_host():
    """``[ray].address = ""``: the controller starts a local Ray, one node that
    advertises every host and port of its config (a process of its own here: this
    one already joined the test cluster)."""
    import subprocess
    import sys

    code = ("import json, ray\n"
            "from lego.control.ray_bricks import RayBricks\n"
            "rb = RayBricks(local_hosts={'nf1': [2, 3], 'nf2': [4]}).connect()\n"
            "print(json.dumps({h: sorted(n['resources']) for h, n in rb.nodes().items()}))\n"
            "ray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    nodes = json.loads(out)
    assert sorted(nodes) == ["nf1", "nf2"]
    assert {"nf:nf1", "nf:nf2", "port:2", "port:3", "port:4"} <= set(nodes["nf1"])
