"""A real CPU quota for an NF host: one Linux cgroup per host, CFS bandwidth control.

An NF host's ``cores`` (topology) is a hard cap on the CPU time its processes
(the agent and every brick it starts) may use: ``cores`` x period of CPU time
per period, enforced by the kernel's CFS bandwidth controller. Both cgroup
layouts are handled:

- cgroup v2 (unified): ``<root>/lego/<name>/cpu.max`` = "quota period", usage
  from ``cpu.stat`` (``usage_usec``);
- cgroup v1: ``<cpu>/lego/<name>/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``,
  usage from ``<cpuacct>/lego/<name>/cpuacct.usage`` (nanoseconds).

A process joins the group before it runs anything (:meth:`CpuQuota.wrap`: a
shell writes its own pid into ``cgroup.procs``, then execs the command), so
every child inherits the cap with no window outside it. :meth:`CpuQuota.used_s`
is the group's CPU time: its delta over the quota's delta is the host's real
busy fraction (what the controller's watermarks compare).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from lego.errors import LegoError

log = logging.getLogger(__name__)

#: CFS period: short, so a throttled host waits at most ~period for its next slice
#: (latency), long enough that the kernel's 1 ms minimum quota allows 0.05 core
PERIOD_US = 20_000
MIN_QUOTA_US = 1_000


def _mounts() -> dict[str, Path]:
    """cgroup mount points: ``unified`` (v2) and each v1 controller by name."""
    out: dict[str, Path] = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _, where, kind, opts, *_ = line.split()
            if kind == "cgroup2":
                out.setdefault("unified", Path(where))
            elif kind == "cgroup":
                for o in opts.split(","):
                    if o in ("cpu", "cpuacct"):
                        out.setdefault(o, Path(where))
    return out


def quota_support() -> str | None:
    """Why a CPU quota cannot be set here (one line), or None when it can."""
    if os.geteuid() != 0:
        return "CPU quotas need root (cgroups)"
    m = _mounts()
    if "cpu" in m and "cpuacct" in m:
        return None
    controllers = m["unified"] / "cgroup.controllers" if "unified" in m else None
    if controllers is not None and controllers.is_file() and \
            "cpu" in controllers.read_text().split():
        return None
    return "no cgroup with the cpu controller is mounted (cgroup v2 cpu, or v1 cpu + cpuacct)"


@dataclass
class CpuQuota:
    """The cgroup of one NF host: ``cores`` of CPU time per wall second."""

    name: str
    cores: float
    period_us: int = PERIOD_US
    dirs: list[Path] = field(default_factory=list)
    _usage: Path | None = None
    _v2: bool = False

    @property
    def quota_us(self) -> int:
        return max(MIN_QUOTA_US, round(self.cores * self.period_us))

    def create(self) -> CpuQuota:
        why = quota_support()
        if why:
            raise LegoError(f"CPU quota for {self.name}: {why}")
        if not 0 < self.cores <= os.cpu_count():
            raise LegoError(f"CPU quota for {self.name}: expected 0 < cores <= "
                            f"{os.cpu_count()}, got {self.cores}")
        m = _mounts()
        if "cpu" in m and "cpuacct" in m:
            cpu, acct = m["cpu"] / "lego" / self.name, m["cpuacct"] / "lego" / self.name
            for d in dict.fromkeys((cpu, acct)):
                d.mkdir(parents=True, exist_ok=True)
                self.dirs.append(d)
            (cpu / "cpu.cfs_period_us").write_text(str(self.period_us))
            (cpu / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            self._usage = acct / "cpuacct.usage"
        else:
            root = m["unified"]
            lego = root / "lego"
            lego.mkdir(exist_ok=True)
            for parent in (root, lego):  # delegate the cpu controller down to the hosts
                (parent / "cgroup.subtree_control").write_text("+cpu")
            d = lego / self.name
            d.mkdir(exist_ok=True)
            self.dirs.append(d)
            (d / "cpu.max").write_text(f"{self.quota_us} {self.period_us}")
            self._usage, self._v2 = d / "cpu.stat", True
        log.info("CPU quota %s: %.3f cores (%d us per %d us) in %s", self.name, self.cores,
                 self.quota_us, self.period_us, ", ".join(map(str, self.dirs)))
        return self

    def resize(self, cores: float) -> None:
        """A new quota for the group's processes, applied by the kernel at once (an
        in-place resize: nothing restarts)."""
        self.cores = cores
        resize_group(self.dirs, cores, self.period_us)

    def env(self) -> dict[str, str]:
        """The environment that makes an agent's bricks join this group."""
        return {GROUP_ENV: os.pathsep.join(map(str, self.dirs))}

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the group from its first instruction."""
        join = "; ".join(f"echo $$ > {d / 'cgroup.procs'}" for d in self.dirs)
        return ["sh", "-c", f'{join} && exec "$@"', f"lego-quota-{self.name}", *argv]

    def adopt(self, pid: int) -> int:
        """Move ``pid`` and all its descendants into the group (after a start-up the
        quota should not slow down; children forked later inherit it). Returns how
        many processes moved."""
        moved: set[int] = set()
        for _ in range(2):  # a second pass catches a child forked during the first
            for p in _tree(pid) - moved:
                try:
                    for d in self.dirs:
                        (d / "cgroup.procs").write_text(str(p))
                    moved.add(p)
                except OSError:  # it exited meanwhile
                    pass
        return len(moved)

    def used_s(self) -> float:
        """CPU seconds the group's processes have used since it was created."""
        if self._usage is None:
            return 0.0
        text = self._usage.read_text()
        if self._v2:
            for line in text.splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    return int(v) / 1e6
            return 0.0
        return int(text) / 1e9

    def remove(self) -> None:
        """Move any straggler to the parent group and delete the group (idempotent)."""
        for d in reversed(self.dirs):
            if not d.is_dir():
                continue
            procs = d / "cgroup.procs"
            try:
                for pid in procs.read_text().split():
                    (d.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
            try:
                d.rmdir()
            except OSError as exc:
                log.warning("CPU quota %s: %s not removed: %s", self.name, d, exc)
        self.dirs.clear()


def _tree(pid: int) -> set[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += children.get(p, [])
    return out


#: where an NF host's agent finds its host's quota group: the group's directories,
#: ``os.pathsep``-separated. The agent itself stays outside (a starved agent would
#: miss its heartbeats); every brick it starts joins the group first thing.
GROUP_ENV = "LEGO_CPU_GROUP"


def join_group() -> bool:
    """Move this process into the group named by :data:`GROUP_ENV`, if any."""
    dirs = [d for d in os.environ.get(GROUP_ENV, "").split(os.pathsep) if d]
    for d in dirs:
        (Path(d) / "cgroup.procs").write_text(str(os.getpid()))
    return bool(dirs)


def resize_group(dirs: list[Path], cores: float, period_us: int = PERIOD_US) -> None:
    """Write ``cores`` as the quota of the group in ``dirs`` (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us``). LegoError when there is no such group or ``cores`` is
    out of range."""
    if not 0 < cores <= (os.cpu_count() or 1):
        raise LegoError(f"CPU quota: expected 0 < cores <= {os.cpu_count()}, got {cores}")
    quota = max(MIN_QUOTA_US, round(cores * period_us))
    for d in dirs:
        try:
            if (d / "cpu.max").is_file():
                (d / "cpu.max").write_text(f"{quota} {period_us}")
                return
            if (d / "cpu.cfs_quota_us").is_file():
                (d / "cpu.cfs_period_us").write_text(str(period_us))
                (d / "cpu.cfs_quota_us").write_text(str(quota))
                return
        except OSError as exc:
            raise LegoError(f"CPU quota {d}: {exc}") from None
    raise LegoError(f"CPU quota: no cgroup with a cpu quota in {', '.join(map(str, dirs))}")


def resize_own_group(cores: float) -> None:
    """Resize the group named by :data:`GROUP_ENV` (a host's agent resizing its own
    host); LegoError when this process has none."""
    dirs = [Path(d) for d in os.environ.get(GROUP_ENV, "").split(os.pathsep) if d]
    if not dirs:
        raise LegoError(f"no CPU quota group here ({GROUP_ENV} is not set)")
    resize_group(dirs, cores)


def group_usage_s() -> float | None:
    """CPU seconds used by the group named by :data:`GROUP_ENV` (None: no quota)."""
    for d in (Path(x) for x in os.environ.get(GROUP_ENV, "").split(os.pathsep) if x):
        if (d / "cpuacct.usage").is_file():
            return int((d / "cpuacct.usage").read_text()) / 1e9
        if (d / "cpu.stat").is_file() and not (d / "cpu.cfs_quota_us").exists():
            for stat in (d / "cpu.stat").read_text().splitlines():
                k, _, v = stat.partition(" ")
                if k == "usage_usec":
                    return int(v) / 1e6
    return None


def remove_stale() -> int:
    """Delete every ``lego/*`` group a killed run left (their processes are gone or
    move to the parent group). Returns how many were removed."""
    n = 0
    for root in dict.fromkeys(_mounts().values()):
        lego = root / "lego"
        if not lego.is_dir():
            continue
        for d in sorted(p for p in lego.iterdir() if p.is_dir()):
            CpuQuota(d.name, 1.0, dirs=[d]).remove()
            n += not d.exists()
    return n


def mount_script() -> str:
    """Shell commands that show this machine's cgroup hierarchies inside a Mininet
    host (``mnexec`` gives a host a fresh sysfs, which hides /sys/fs/cgroup), so its
    bricks can join their group and its agent can read the group's CPU."""
    cmds = []
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[:4] for line in f]
    for _, where, kind, _ in mounts:
        if kind == "tmpfs" and where == "/sys/fs/cgroup":
            cmds.append("mount -t tmpfs cgroup_root /sys/fs/cgroup")
    for dev, where, kind, opts in mounts:
        if kind == "cgroup":
            ctl = ",".join(o for o in opts.split(",") if o not in ("rw", "relatime", "ro"))
            cmds.append(f"mkdir -p {where} && mount -t cgroup -o {ctl} {dev} {where}")
        elif kind == "cgroup2":
            cmds.append(f"mkdir -p {where} && mount -t cgroup2 {dev} {where}")
    return "; ".join(cmds)


def machine_cpu_s() -> tuple[float, float, float]:
    """(busy, of it niced, all) CPU seconds of the whole machine since boot, every
    core summed (``/proc/stat``; idle and iowait are not busy): what everything on
    it used, the NF hosts' quotas, the switch, the controller and Ray alike. Niced
    time is the NF hosts' Ray nodes and warming bricks (niceness 15): it yields to
    the rest."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return (total - fields[3] - fields[4]) / hz, fields[1] / hz, total / hz
