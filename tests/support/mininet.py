"""The declarative base of the Mininet tests (the harness, apart from the tests).

A test class states its network and config as class attributes::

    class TestTwoReplicas(LegoMininetTest):
        REPLICAS = 2
        AGENTS = ("nf1", "nf2")
        RATES = (1000, 2000, 1000)

and :meth:`LegoMininetTest.system` (a fixture) builds it: the topology from
``topo/default.toml`` with those overrides, the software target, the
southbound controller, one agent per NF host in ``AGENTS``. Teardown collects
evidence first (every log and status file into ``<tmp>/evidence``), then
stops and cleans, then fails if a component logged an exception or if any
interface or process of the run is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np

from lego.polling import wait_for
from lego.topo.cleanup import MARKER, link_exists, marked_processes
from lego.topo.net import mininet_available
from lego.topo.topology import load_topology
from lego.topo.traffic import Replayer, ramp_segments, split_trace

TEST_PACKETS = 6000
TEST_FM, TEST_AD = 500, 2500


def skip_reason() -> str | None:
    """Why the Mininet tests cannot run here (None: they can)."""
    why = mininet_available()
    if why is not None:
        return f"{why}; run as root on a host where tools/setup-host installed Mininet"
    return None


def small_trace(out: Path, packets: int = TEST_PACKETS) -> Path:
    """The first ``packets`` packets of the embedded synthetic trace."""
    from lego.ext.packets import open_trace, write_pcap
    from lego.topo.traffic_synth import default_trace

    full = default_trace(out)
    raw = next(open_trace(full).raw_batches(packets))
    path = out / f"small-{packets}.pcap"
    write_pcap(path, [raw.frame(i) for i in range(len(raw))], raw.ts)
    return path


class LegoMininetTest:
    """Base class: subclasses state the network; the ``system`` fixture builds it."""

    REPLICAS = 2
    AGENTS: tuple[str, ...] = ("nf1", "nf2")
    RATES: tuple[int, ...] = (1500,)
    IDLE_S = 4.0
    ALLOW_DEAD: tuple[str, ...] = ()  # components allowed to log an exception
    MODE = "controller"  # the real controller; "southbound": switch manager + graph files
    SCALING: dict = {"high": 0.99, "low": 0.0, "dwell": 3600.0}  # no scaling unless asked
    CORES: float | None = None  # each NF host's CPU quota (None: the topology's)
    SLA_MS = 100.0  # the controller's SLA (the sources flush after an eighth of it, 20 ms at least)

    def build(self, tmp: Path, model: Path):
        from lego.topo.system import LegoSystem

        topo = load_topology().with_replicas(self.REPLICAS)
        if self.CORES is not None:  # another CPU quota per NF host than the default's
            topo = replace(topo, nf_hosts=tuple(replace(h, cores=self.CORES)
                                                for h in topo.nf_hosts))
        self.tmp = tmp
        self.system = LegoSystem(topo, "soft", tmp / "run", model, idle_s=self.IDLE_S,
                                 scaling=self.SCALING, mode=self.MODE, sla_ms=self.SLA_MS)
        self.system.start(agents=[topo.nf(n) for n in self.AGENTS])
        return self.system

    def replay(self, trace: Path, rates: tuple[int, ...] | None = None,
               packets: int | None = None) -> Replayer:
        from lego.topo.traffic import trace_frames

        n = packets or trace_frames(trace)
        segs = ramp_segments(n, list(rates or self.RATES))
        steps = list(zip(segs, split_trace(trace, segs, self.tmp / "segments"), strict=True))
        r = Replayer(self.system.net.host(self.system.topo.traffic.host),
                     self.system.net.traffic_iface, steps)
        r.start()
        return r

    def teardown_system(self) -> None:
        s = self.system
        run_id = s.net.run_id
        if s.mode == "controller" and s.controller is not None:
            s.finish(timeout=20)  # evidence: decisions' summaries, final brick logs
        bad = s.collect(self.tmp / "evidence")
        s.stop()
        left = [n for n in s.topo.interface_names() if link_exists(n)]
        procs = marked_processes(run_id)
        bad = [b for b in bad if not any(b.startswith(a) for a in self.ALLOW_DEAD)]
        os.environ.pop(MARKER, None)
        assert not bad, f"components logged an exception: {bad} (evidence in {self.tmp})"
        assert not left, f"interfaces left behind: {left}"
        assert not procs, f"processes left behind: {procs}"

    # ------------------------------------------------------------ evidence helpers

    def decision(self, host: str) -> dict:
        import json

        return json.loads((self.system.agent_dir(host) / "out" / "summary.json").read_text())

    def host_scores(self) -> tuple[np.ndarray, np.ndarray]:
        from lego.experiments.elastic.results import merge_scores

        seq, score, _ = merge_scores(self.system)
        return seq, score

    def record(self, host: str) -> tuple[subprocess.Popen, Path]:
        """tcpdump on ``host``'s dataplane interface; returns once it listens."""
        path = self.tmp / f"recorded-{host}.pcap"
        err = self.tmp / f"tcpdump-{host}.log"
        with open(err, "wb") as f:
            p = self.system.net.host(host).popen(
                ["tcpdump", "-i", self.system.net.nf_iface(host), "-w", str(path), "-U",
                 "-B", "16384", "--immediate-mode"], stdout=f, stderr=subprocess.STDOUT)
        wait_for(lambda: "listening on" in err.read_text(errors="replace"), 20,
                 f"tcpdump on {host}")
        return p, path


def copy_evidence(src: Path, dest: Path) -> None:
    if src.exists():
        shutil.copytree(src, dest, dirs_exist_ok=True)
