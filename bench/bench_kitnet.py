"""KitNET: rows/s of the feature-map, training and execution phases.

Input: the 100-feature vectors of the reference fixture
(``kitsune-reference/fx16k-features.npz``, 16,000 rows) with the reference's
settings (FM grace 1,000, AD grace 10,000, m = 10: 13 autoencoders), or, when
``../shared/data`` is absent, generated correlated rows of the same shape.

Rows (each KitNET figure is the best of a few runs on a fresh copy of the model):
- fm: the correlation update over the 1,001 feature-map rows, plus clustering;
- train: online training of the ensemble over the 10,000 AD rows;
- execute (blas): the 4,999 execution rows, 8 times over, in batches of 4,096;
- execute (kernel): the same with the per-row Cython kernel.
Each ratio is against the pure-Python spec (``kitnet_spec.py``) on the same
rows in the same run; where the spec runs on a prefix only, the row's baseline
says how many rows it timed.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from bench.common import SHARED_DATA, Row, timed
from lego.ext.kitnet import KitNET
from lego.ext.kitnet_spec import KitNETSpec

FIXTURE = SHARED_DATA / "kitsune-reference" / "fx16k-features.npz"
FM, AD, MAX_AE = 1000, 10000, 10
TRAIN_TARGET_PPS = 30_000.0
EXEC_TARGET_PPS = 200_000.0
EXEC_BATCH = 4096


def _features() -> tuple[str, np.ndarray]:
    if FIXTURE.exists():
        return "fx16k", np.load(FIXTURE)["X"]
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(16000, 8)).cumsum(axis=0)
    X = np.abs(latent @ rng.normal(size=(8, 100)) + rng.normal(size=(16000, 100)))
    return "generated", X


def _spec_pps(fn, rows: np.ndarray) -> float:
    start = time.perf_counter()
    for x in rows:
        fn(x)
    return len(rows) / (time.perf_counter() - start)


def _execute(m: KitNET, X: np.ndarray, engine: str) -> None:
    for start in range(0, len(X), EXEC_BATCH):
        m.execute(X[start:start + EXEC_BATCH], engine=engine)


def run(quick: bool) -> list[Row]:
    label, X = _features()
    n = X.shape[1]
    fm_rows, ad_rows, ex_rows = X[:FM + 1], X[FM + 1:FM + 1 + AD], X[FM + 1 + AD:]
    repeat = 2 if quick else 5
    spec_ad = 1000 if quick else AD
    spec_ex = 1000 if quick else len(ex_rows)

    # the spec: feature map, then training on a prefix, then execution on a prefix
    spec = KitNETSpec(n, MAX_AE, FM, AD)
    spec_fm_pps = _spec_pps(spec.train, fm_rows)
    spec_train_pps = _spec_pps(spec.train, ad_rows[:spec_ad])
    spec_exec_pps = _spec_pps(spec.execute, ex_rows[:spec_ex])

    fresh = KitNET(n, MAX_AE, FM, AD)
    fm_s, _ = timed(lambda: copy.deepcopy(fresh).process(fm_rows), repeat=repeat)
    after_fm = copy.deepcopy(fresh)
    after_fm.process(fm_rows)
    train_s, _ = timed(lambda: copy.deepcopy(after_fm).process(ad_rows), repeat=repeat)
    trained = copy.deepcopy(after_fm)
    trained.process(ad_rows)
    times = 2 if quick else 8
    X_exec = np.tile(ex_rows, (times, 1))
    blas_s, _ = timed(_execute, trained, X_exec, "blas", repeat=repeat)
    kernel_s, _ = timed(_execute, trained, X_exec, "kernel", repeat=repeat)

    def spec_note(rows: int, total: int) -> str:
        return f"spec, {label}" + ("" if rows == total else f", first {rows} rows")

    return [
        Row(f"kitnet fm ({label}, {n} features)", len(fm_rows), fm_s,
            spec_note(len(fm_rows), len(fm_rows)), spec_fm_pps),
        Row(f"kitnet train ({label}, {after_fm.n_autoencoders} AEs)", len(ad_rows), train_s,
            spec_note(spec_ad, len(ad_rows)), spec_train_pps, TRAIN_TARGET_PPS),
        Row(f"kitnet execute blas ({label}, batches of {EXEC_BATCH})", len(X_exec), blas_s,
            spec_note(spec_ex, len(ex_rows)), spec_exec_pps, EXEC_TARGET_PPS),
        Row(f"kitnet execute kernel ({label}, batches of {EXEC_BATCH})", len(X_exec), kernel_s,
            spec_note(spec_ex, len(ex_rows)), spec_exec_pps, EXEC_TARGET_PPS),
    ]
