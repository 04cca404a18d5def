"""One replica's capacity under an NF host's CPU quota, measured before a run.

``lego run`` sizes its load from this number: :func:`calibrate` runs the same
brick graph an NF host runs (the NF's template: source -> keyed feature
extraction -> ... -> stateless replicas -> sink, as separate processes over ipc), fed the
trace's first packets as fast as it takes them, inside a cgroup with the
host's quota (:class:`~lego.cpu_quota.CpuQuota`), and reports packets per
second from the sources' ``go`` to the decision's end (start-up, outside the
quota, is not measured). The only difference
from the live graph is the source (a pcap file instead of the switch port).

    python -m lego.experiments.elastic.calibrate GRAPH.toml PACKETS   (prints one JSON line)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from lego.cpu_quota import CpuQuota
from lego.errors import LegoError
from lego.topo.agent import nf_graph


@dataclass(frozen=True)
class Calibration:
    pps: float  # one replica's packets per second under the quota
    cores: float  # the quota (cores)
    packets: int
    seconds: float
    cpu_s: float  # CPU time the group used (all its processes)

    @property
    def busy(self) -> float:
        """The quota's fraction the calibration used (about 1: it was the bound)."""
        return self.cpu_s / (self.cores * self.seconds) if self.seconds else 0.0

    def line(self) -> str:
        return (f"one replica: {self.pps:,.0f} pkt/s at {100 * self.cores:.0f} % of a core "
                f"({self.packets:,} packets in {self.seconds:.2f} s, quota "
                f"{100 * self.busy:.0f} % used)")


def calibration_graph(trace: Path, model: Path, out: Path, semantics: str,
                      batch: int, flush_ms: int, nf: str | None = None,
                      nf_options: dict | None = None) -> dict:
    """An NF host's graph (:func:`~lego.topo.agent.nf_graph`) read from ``trace``."""
    from lego import nfs

    graph = nf_graph("calibration", "unused", model, out, semantics=semantics, batch=batch,
                     flush_ms=flush_ms, nf=nf, nf_options=nf_options)
    chain = [graph["edges"][0]["from"]] + [e["to"] for e in graph["edges"]]
    graph["bricks"][chain[0]]["options"] = {"trace": str(trace), "batch": batch,
                                            **nfs.get(nf or nfs.DEFAULT).source_options()}
    graph["bricks"][chain[-1]]["options"]["write_scores"] = False
    return graph


def calibrate(trace: Path, model: Path, cores: float, workdir: Path, *, packets: int = 8192,
              semantics: str = "lego", batch: int = 256, flush_ms: int = 20,
              nf: str | None = None, nf_options: dict | None = None) -> Calibration:
    """Measure one replica under ``cores`` of quota on the first ``packets`` of ``trace``."""
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
    graph = workdir / "calibration.toml"
    graph.write_text(tomli_w.dumps(calibration_graph(head.resolve(), model.resolve(),
                                                     (workdir / "out").resolve(), semantics,
                                                     batch, flush_ms, nf, nf_options)))
    quota = CpuQuota("calibration", cores).create()
    try:
        argv = [sys.executable, "-m", "lego.experiments.elastic.calibrate", str(graph),
                str(len(frames)), str(workdir / "bricks")]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        ready = proc.stdout.readline()  # the bricks started (outside the quota)
        if ready.strip() == "ready":
            quota.adopt(proc.pid)
        cpu0 = quota.used_s()
        out, err = proc.communicate("go\n", timeout=300)
        cpu = quota.used_s() - cpu0
        done = subprocess.CompletedProcess(argv, proc.returncode, ready + out, err)
    finally:
        quota.remove()
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LegoError(f"calibration failed (exit code {done.returncode}): "
                        f"{' / '.join(tail)}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    return Calibration(pps=res["packets"] / res["seconds"], cores=cores,
                       packets=res["packets"], seconds=res["seconds"], cpu_s=cpu)


def main(argv: list[str] | None = None) -> int:
    from lego.bricks.agent import BrickAgent
    from lego.bricks.graph import load_graph

    graph, packets, workdir = (argv or sys.argv[1:])[:3]
    with BrickAgent(load_graph(Path(graph)), Path(workdir)) as agent:
        agent.start()
        print("ready", flush=True)  # the caller moves us into the quota, then says go
        sys.stdin.readline()
        t0 = time.perf_counter()
        agent.go()
        agent.wait(240.0)
        seconds = time.perf_counter() - t0
    died = {n: c for n, c in agent.exit_codes().items() if c != 0}
    if died:
        print(f"bricks died: {died}", file=sys.stderr)
        return 1
    print(json.dumps({"packets": int(packets), "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
