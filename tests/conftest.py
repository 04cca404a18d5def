"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from lego.p4src.p4info import load_p4info
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: the NF hosts of the tests' local Ray cluster: their switch ports and CPUs
RAY_TEST_NODES = {"nf1": {"ports": [2, 3], "cpus": 2}, "nf2": {"ports": [4], "cpus": 2}}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real traces in ../shared/data (skips the test when absent)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real traces not found at {SHARED_DATA}: place the shared data "
                    "folder next to the repository to run this test")
    return SHARED_DATA


@pytest.fixture
def servers():
    """start(with_pipeline=False, port=0) -> a started software-target P4Runtime
    server (in process); all are stopped at teardown."""
    started: list[P4RuntimeServer] = []

    def start(with_pipeline: bool = False, port: int = 0) -> P4RuntimeServer:
        srv = P4RuntimeServer(pl.Pipeline(), device_id=0,
                              p4info=load_p4info() if with_pipeline else None,
                              address=f"127.0.0.1:{port}")
        srv.start()
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster (head + nf1 with ports 2, 3 + nf2 with port 4) for the
    tests of a module that run bricks as actors (each test in its own namespace);
    stopped after the module, so that its processes load no later test."""
    from lego.topo.ray_cluster import LocalRay

    ray = LocalRay(RAY_TEST_NODES)
    try:
        yield ray
    finally:
        ray.shutdown()
