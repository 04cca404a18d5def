"""One replica's capacity under an NF host's CPU quota, measured before a run.

``lego run`` sizes its load from this number: :func:`calibrate` runs the same
brick graph an NF host runs (the NF's template: source -> keyed feature
extraction -> ... -> stateless replicas -> sink, as separate processes over ipc), fed the
trace's first packets as fast as it takes them, inside a cgroup with the
host's quota (:class:`~lego.cpu_quota.CpuQuota`), and reports packets per
second from the sources' ``go`` until every brick process has exited
(start-up, outside the quota, is not measured). The only difference from the
live graph is the source (a pcap file instead of the switch port).

The bricks' loops alone are faster: the decision's last report (its summary
written) comes at about a third of that time, and the processes' exit is the
rest (under a 0.1-core quota five interpreters' exit took some 5 s of wall
time). Both figures are printed; the ramp is sized from the first, because a
split replica costs more per scored packet than the loops: it also takes the
mirrors of its hosts' packets (1.58 frames per scored packet at a peak) and its
source reads the switch port (5.5 µs a frame of logic against 0.8 from a pcap);
the run's summary measures it (``live_bricks_peak``; docs/running.md).

The same bricks are then measured fused: one process running them as a chain of
function calls (:mod:`lego.bricks.chain`), under the same quota. The difference is
what the process hops cost (``Calibration.fused_line``); the ramp is still sized
from the processes, which is what the live replicas run.

Each brick's cost per packet comes with it (:class:`BrickCost`, from the
bricks' own last load reports): its CPU in its run loop, and the share of it
spent in the NF's logic (the rest is the runtime: receiving, decoding,
emitting, reports).

    python -m lego.experiments.elastic.calibrate GRAPH.toml PACKETS   (prints one JSON line)
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w

from lego.cpu_quota import CpuQuota
from lego.errors import LegoError
from lego.topo.agent import nf_graph

log = logging.getLogger(__name__)

#: the group (the process) of the fused calibration's bricks
FUSED = "replica"


@dataclass(frozen=True)
class BrickCost:
    """One brick's CPU per packet of the calibration (from its start, model loaded,
    to its last report)."""

    brick: str  # its node in the NF's graph (src, fq, ...)
    cpu_us: float  # CPU microseconds per packet
    logic_us: float  # of which in the NF's logic (the brick's handle/produce)
    #: all of it by stage (:data:`lego.bricks.stages.STAGES`), µs per packet
    stages_us: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        return f"{self.brick} {self.cpu_us:.1f} ({self.logic_us:.1f} logic)"


@dataclass(frozen=True)
class Calibration:
    pps: float  # one replica's packets per second under the quota (go to exit)
    cores: float  # the quota (cores)
    packets: int
    seconds: float  # from go until every brick process exited
    bricks: tuple[BrickCost, ...] = ()
    loop_seconds: float = 0.0  # from go to the decision's last report
    #: the same bricks fused in one process (function calls, :mod:`lego.bricks.chain`)
    #: under the same quota: what the processes' hops cost, measured
    fused: Calibration | None = None
    #: the live replicas run fused (``FUSE=on``): their capacity is :attr:`fused`'s
    live_fused: bool = False

    @property
    def replica_pps(self) -> float:
        """One live replica's capacity (go to exit): what the ramp is sized from."""
        return self.fused.pps if self.live_fused and self.fused is not None else self.pps

    @property
    def loop_pps(self) -> float:
        """Packets per second of the bricks' loops alone (their exit left out)."""
        return self.packets / self.loop_seconds if self.loop_seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU microseconds per packet, every brick's together."""
        return sum(b.cpu_us for b in self.bricks)

    def line(self) -> str:
        loops = (f"; the bricks' loops alone: {self.loop_pps:,.0f} pkt/s, done at "
                 f"{self.loop_seconds:.2f} s" if self.loop_seconds else "")
        return (f"one replica: {self.pps:,.0f} pkt/s at {100 * self.cores:.0f} % of a core "
                f"({self.packets:,} packets in {self.seconds:.2f} s, go to exit{loops})")

    def breakdown(self) -> str:
        """Where a packet's CPU goes, brick by brick (µs per packet)."""
        if not self.bricks:
            return ""
        logic = sum(b.logic_us for b in self.bricks)
        return (f"per brick, µs of CPU per packet: "
                f"{', '.join(b.text() for b in self.bricks)}; bricks {self.cpu_us:.1f}, "
                f"{logic:.1f} of it the NF's logic")

    def stages(self) -> dict[str, float]:
        """Every brick's CPU per packet by stage, summed (µs)."""
        out: dict[str, float] = {}
        for b in self.bricks:
            for stage, us in b.stages_us.items():
                out[stage] = out.get(stage, 0.0) + us
        return out

    def stage_breakdown(self) -> str:
        """Where a packet's CPU goes, stage by stage, every brick's together."""
        st = self.stages()
        if not st:
            return ""
        runtime = sum(us for s, us in st.items() if s != "logic")
        return (f"per stage, µs of CPU per packet, the bricks together: "
                f"{', '.join(f'{s} {us:.1f}' for s, us in st.items())} "
                f"(the runtime's share {runtime / max(sum(st.values()), 1e-9):.0%})")

    def fused_line(self, live: bool | None = None) -> str:
        """The fused replica against the five processes, both measured here, and
        which of them the live replicas run (``live``: fused; None: as set)."""
        f = self.fused
        if f is None or not f.loop_seconds:
            return ""
        live = self.live_fused if live is None else live
        return (f"the same bricks fused in one process (function calls): {f.pps:,.0f} pkt/s "
                f"go to exit, {f.loop_pps:,.0f} pkt/s the loop ({f.loop_pps / self.loop_pps:.1f}x "
                f"the processes'), {f.cpu_us:.1f} µs of CPU per packet; the live replicas "
                f"run {'fused' if live else 'as processes (FUSE=off)'}, and the ramp is sized "
                "from those")


def calibration_graph(trace: Path, model: Path, out: Path, semantics: str,
                      batch: int, flush_ms: int, nf: str | None = None,
                      nf_options: dict | None = None, fused: bool = False) -> dict:
    """An NF host's graph (:func:`~lego.topo.agent.nf_graph`) read from ``trace``;
    ``fused``: its bricks in one group (one process)."""
    from lego import nfs

    graph = nf_graph("calibration", "unused", model, out, semantics=semantics, batch=batch,
                     flush_ms=flush_ms, nf=nf, nf_options=nf_options)
    chain = [graph["edges"][0]["from"]] + [e["to"] for e in graph["edges"]]
    graph["bricks"][chain[0]]["options"] = {"trace": str(trace), "batch": batch,
                                            **nfs.get(nf or nfs.DEFAULT).source_options()}
    graph["bricks"][chain[-1]]["options"]["write_scores"] = False
    if fused:  # one group: one process, the bricks as function calls (lego.bricks.chain)
        for node in chain:
            graph["bricks"][node]["group"] = FUSED
    return graph


def calibrate(trace: Path, model: Path, cores: float, workdir: Path, *, packets: int = 8192,
              semantics: str = "lego", batch: int = 256, flush_ms: int = 20,
              nf: str | None = None, nf_options: dict | None = None,
              fused: bool = True) -> Calibration:
    """Measure one replica under ``cores`` of quota on the first ``packets`` of
    ``trace``: as the live graph runs it (a process per brick), and (``fused``) as
    one process running the same bricks as function calls."""
    from lego.ext.packets import open_trace, write_pcap

    workdir.mkdir(parents=True, exist_ok=True)
    frames, ts = [], []
    for raw in open_trace(trace).raw_batches(min(packets, 65536)):
        frames.extend(raw.frame(i) for i in range(len(raw)))
        ts.extend(raw.ts.tolist())
        if len(frames) >= packets:
            break
    frames, ts = frames[:packets], ts[:packets]
    head = workdir / "calibration.pcap"
    write_pcap(head, frames, ts)

    def measure(name: str, fuse: bool) -> Calibration:
        graph = workdir / f"{name}.toml"
        graph.write_text(tomli_w.dumps(calibration_graph(
            head.resolve(), model.resolve(), (workdir / "out").resolve(), semantics, batch,
            flush_ms, nf, nf_options, fused=fuse)))
        return _run_under_quota(graph, len(frames), cores, workdir / f"{name}-bricks")

    cal = measure("calibration", False)
    if not fused:
        return cal
    try:  # a figure for the report: the run goes on without it
        return replace(cal, fused=measure("fused", True))
    except LegoError as exc:
        log.warning("the fused calibration failed: %s", exc)
        return cal


def _run_under_quota(graph: Path, packets: int, cores: float, bricks: Path) -> Calibration:
    """The graph file's bricks fed its trace inside a cgroup of ``cores``."""
    quota = CpuQuota("calibration", cores).create()
    try:
        argv = [sys.executable, "-m", "lego.experiments.elastic.calibrate", str(graph),
                str(packets), str(bricks)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        ready = proc.stdout.readline()  # the bricks started (outside the quota)
        if ready.strip() == "ready":
            quota.adopt(proc.pid)
        out, err = proc.communicate("go\n", timeout=300)
        done = subprocess.CompletedProcess(argv, proc.returncode, ready + out, err)
    finally:
        quota.remove()
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LegoError(f"calibration failed (exit code {done.returncode}): "
                        f"{' / '.join(tail)}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    n = res["packets"]
    costs = tuple(BrickCost(b, 1e6 * c["cpu_s"] / n, 1e6 * c["logic_cpu_s"] / n,
                            {s: 1e6 * v / n for s, v in c.get("stages_cpu_s", {}).items()})
                  for b, c in res["bricks"].items())
    return Calibration(pps=n / res["seconds"], cores=cores, packets=n,
                       seconds=res["seconds"], bricks=costs,
                       loop_seconds=res["loop_seconds"])


def _brick_costs(agent) -> dict[str, dict[str, float]]:
    """Each graph node's CPU and logic time (its replicas' last reports, summed), in
    the graph's order. The source's logic time is its reading and decoding."""
    # a sink's last report is its final one; the others report a last time at their end
    costs: dict[str, dict[str, float]] = {}
    for name, p in agent.procs.items():
        last = agent.board.latest.get(name, {})
        c = costs.setdefault(p.spec.node, {"cpu_s": 0.0, "logic_cpu_s": 0.0,
                                           "stages_cpu_s": {}})
        c["cpu_s"] += last.get("cpu_s", 0.0)
        c["logic_cpu_s"] += last.get("logic_cpu_s", 0.0)
        for stage, v in last.get("stages_cpu_s", {}).items():
            c["stages_cpu_s"][stage] = c["stages_cpu_s"].get(stage, 0.0) + v
    return costs


def main(argv: list[str] | None = None) -> int:
    from lego.bricks.agent import WATCH_S, BrickAgent
    from lego.bricks.graph import load_graph

    graph, packets, workdir = (argv or sys.argv[1:])[:3]
    with BrickAgent(load_graph(Path(graph)), Path(workdir)) as agent:
        agent.start()
        print("ready", flush=True)  # the caller moves us into the quota, then says go
        sys.stdin.readline()
        t0 = time.perf_counter()
        agent.go()
        sinks = [n for n, p in agent.procs.items() if not agent.graph.downstream(p.spec.node)]
        deadline = t0 + 240.0
        while not all(s in agent.board.finished for s in sinks) and not any(
                p.code not in (None, 0) for p in agent.procs.values()):
            if time.perf_counter() > deadline:
                print("the decision did not finish within 240 s", file=sys.stderr)
                return 1
            agent.poll(WATCH_S)  # this process is in the quota: wake no more than its watch
        loop_seconds = time.perf_counter() - t0
        agent.wait(240.0)
        seconds = time.perf_counter() - t0
        costs = _brick_costs(agent)
    died = {n: c for n, c in agent.exit_codes().items() if c != 0}
    if died:
        print(f"bricks died: {died}", file=sys.stderr)
        return 1
    print(json.dumps({"packets": int(packets), "seconds": seconds,
                      "loop_seconds": loop_seconds, "bricks": costs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
