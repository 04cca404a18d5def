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
SPIN = "import time\nt = time.time() + 4.0\nwhile time.time() < t: pass\n"


def _share(q: CpuQuota, seconds: float = 0.8) -> float:
    """The cores the group's processes got over the next ``seconds``."""
    before, t0 = q.used_s(), time.monotonic()
    time.sleep(seconds)
    return (q.used_s() - before) / (time.monotonic() - t0)


@pytest.mark.skipif(_why is not None, reason=f"cgroups: {_why}")
def test_a_resize_caps_the_running_process_at_the_new_cores(monkeypatch):
    q = CpuQuota(f"test-{os.getpid()}", 0.1).create()
    spinner = subprocess.Popen(q.wrap([sys.executable, "-c", SPIN]))
    try:
        time.sleep(0.3)  # started and spinning
        assert _share(q) <= 0.1 + 0.03
        q.resize(0.3)  # the same process, now allowed three times as much
        if (q.dirs[0] / "cpu.max").is_file():
            assert (q.dirs[0] / "cpu.max").read_text().split() == ["6000", "20000"]
        share = _share(q)
        assert 0.13 < share <= 0.3 + 0.03, share
        # a host's agent resizes its own group by the environment it was given
        monkeypatch.setenv(GROUP_ENV, os.pathsep.join(map(str, q.dirs)))
        resize_own_group(0.1)
        assert _share(q) <= 0.1 + 0.03
    finally:
        spinner.kill()
        spinner.wait()
        q.remove()


def test_a_resize_without_a_group_or_out_of_range_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(LegoError, match="no cgroup with a cpu quota"):
        resize_group([tmp_path], 0.5)
    with pytest.raises(LegoError, match="expected 0 < cores"):
        resize_group([tmp_path], 0.0)
    monkeypatch.delenv(GROUP_ENV, raising=False)
    with pytest.raises(LegoError, match="is not set"):
        resize_own_group(0.5)
