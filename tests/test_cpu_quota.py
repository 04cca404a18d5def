"""A host's CPU quota resized in place: the kernel applies the new cap to the
processes already in the group (needs root and a cgroup with the cpu controller)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lego.cpu_quota import GROUP_ENV, CpuQuota, quota_support, resize_group, resize_own_group
from lego.errors import LegoError

_why = quota_support()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"cgroups: {_why}")

SPIN = "import time\nt = time.time() + 1.0\nwhile time.time() < t: pass\n"


def _cpu_share(q: CpuQuota) -> float:
    """The cores a busy process inside ``q`` got over one second."""
    p = subprocess.Popen(q.wrap([sys.executable, "-c", SPIN]))
    before, t0 = q.used_s(), time.monotonic()
    p.wait(10)
    return (q.used_s() - before) / (time.monotonic() - t0)


def test_a_resized_quota_caps_its_running_processes_at_the_new_cores():
    q = CpuQuota(f"test-{os.getpid()}", 0.1).create()
    try:
        assert _cpu_share(q) <= 0.1 + 0.03
        q.resize(0.3)
        if (q.dirs[0] / "cpu.max").is_file():
            assert (q.dirs[0] / "cpu.max").read_text().split() == ["6000", "20000"]
        share = _cpu_share(q)
        assert 0.13 < share <= 0.3 + 0.03, share
        os.environ[GROUP_ENV] = os.pathsep.join(map(str, q.dirs))
        try:  # a host's agent resizes its own group by the environment it was given
            resize_own_group(0.1)
        finally:
            del os.environ[GROUP_ENV]
        assert _cpu_share(q) <= 0.1 + 0.03
    finally:
        q.remove()


def test_a_resize_without_a_group_or_out_of_range_is_a_clear_error(tmp_path):
    with pytest.raises(LegoError, match="no cgroup with a cpu quota"):
        resize_group([tmp_path], 0.5)
    with pytest.raises(LegoError, match="expected 0 < cores"):
        resize_group([tmp_path], 0.0)
    with pytest.raises(LegoError, match="is not set"):
        resize_own_group(0.5)
