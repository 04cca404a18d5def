"""End to end: trace file -> packets -> features -> KitNET -> decision, one core.

Input: the real Mirai benign prefix (``kitsune_mirai_first38363.tsv``, 38,363
packets) when ``../shared/data`` is present, else the generated synthetic trace.
A model is trained once on the trace's prefix (FM 2,000 + AD 15,000 packets);
then the timed rows, for each feature semantics:
- execute: a fresh extractor and the trained model over the whole trace, from
  opening the file to the alert decisions;
- train + execute: ``lego kitsune run``'s single pass (training included).
Baseline: the in-project pure-Python specs (feature extractor and KitNET, with
the same trained parameters) on the first packets of the same trace, in the same
run, reading with the same parser.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, Row
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET
from lego.ext.kitnet_spec import KitNETSpec
from lego.ext.packets import open_trace, read_trace
from lego.nfs.kitsune.monolith import KitsuneNF

FM, AD = 2000, 15000
BATCH = 8192
TARGET_EXEC_PPS = 100_000.0


def _trace() -> tuple[str, Path]:
    real = SHARED_DATA / "kitsune_mirai_first38363.tsv"
    if real.exists():
        return "Mirai prefix", real
    from lego.topo.traffic_synth import default_trace

    return "synthetic", default_trace()


def _train(semantics: str, path: Path, model_file: Path) -> int:
    nf = KitsuneNF.fresh(semantics, fm=FM, ad=AD)
    packets = 0
    for batch in open_trace(path).batches(BATCH):
        nf.process(batch)
        packets += len(batch)
        if nf.trained:
            break
    nf.fit_threshold("lognormal", 1e-4)
    nf.kitnet.save(model_file)
    return packets


def _execute_pass(semantics: str, path: Path, model_file: Path) -> tuple[int, float]:
    start = time.perf_counter()
    nf = KitsuneNF(semantics, KitNET.load(model_file), keep_training_rows=False)
    packets = 0
    for batch in open_trace(path).batches(BATCH):
        scored = nf.process(batch)
        nf.kitnet.decide(scored.score)
        packets += len(batch)
    return packets, time.perf_counter() - start


def _train_execute_pass(semantics: str, path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    nf = KitsuneNF.fresh(semantics, fm=FM, ad=AD)
    packets = 0
    for batch in open_trace(path).batches(BATCH):
        nf.process(batch)
        if nf.trained and nf.kitnet.threshold is None:
            nf.fit_threshold("lognormal", 1e-4)
        packets += len(batch)
    return packets, time.perf_counter() - start


def _spec_pps(semantics: str, path: Path, model_file: Path, n: int) -> float:
    """The pure-Python pipeline, packet by packet, executing the same trained model."""
    start = time.perf_counter()
    batch = read_trace(path, limit=n)
    extractor = make_extractor(semantics, spec=True)
    kitnet = KitNETSpec.from_model(KitNET.load(model_file))
    threshold = KitNET.load(model_file).threshold
    for i in range(len(batch)):
        x = extractor.process(batch.take(slice(i, i + 1)))
        for row in x:
            bool(kitnet.execute(row) > threshold)
    return len(batch) / (time.perf_counter() - start)


def run(quick: bool) -> list[Row]:
    name, path = _trace()
    n_spec = 1000 if quick else 3000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for semantics in ("kitsune", "lego"):
            model_file = Path(tmp) / f"{semantics}.npz"
            _train(semantics, path, model_file)
            base = _spec_pps(semantics, path, model_file, n_spec)
            baseline = f"pure-Python specs, first {n_spec} packets"
            packets, seconds = min((_execute_pass(semantics, path, model_file)
                                    for _ in range(1 if quick else 3)), key=lambda r: r[1])
            rows.append(Row(f"end to end execute, {semantics} ({name})", packets, seconds,
                            baseline, base, TARGET_EXEC_PPS))
            packets, seconds = _train_execute_pass(semantics, path)
            rows.append(Row(f"end to end train+execute, {semantics} ({name}, FM {FM} AD {AD})",
                            packets, seconds, baseline, base))
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(r.name, f"{r.pps:,.0f} pkt/s", f"x{r.ratio:.0f}", np.round(r.seconds, 3))
