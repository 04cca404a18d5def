"""LUCID's CNN: the fast forward against the loop specification, the gradients against
finite differences, training on a separable problem, model files, metrics.

Fast (a few seconds in all); numpy only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lego.errors import ConfigError, ModelError
from lego.nfs.lucid.cnn import (
    LucidCNN,
    forward_spec,
    glorot_model,
    loss_and_grads,
    metrics,
    train,
)

PARAMS = ("W", "b", "w_out", "b_out")


def random_model(n: int, h: int, k: int, f: int = 11, seed: int = 0) -> LucidCNN:
    """Random weights and non-zero biases (so that ReLU cuts some filters)."""
    rng = np.random.default_rng(seed)
    return LucidCNN(n, h, rng.normal(size=(h * f, k)) * 0.3, rng.normal(size=k) * 0.3,
                    rng.normal(size=k), float(rng.normal()))


def fragments(F: int, n: int, f: int = 11, seed: int = 1) -> np.ndarray:
    """Random fragments in [0, 1), each zero-padded after a random number of packets."""
    rng = np.random.default_rng(seed)
    X = rng.random((F, n, f))
    X[np.arange(n)[None, :] >= rng.integers(1, n + 1, size=F)[:, None]] = 0.0
    return X


def separable(F: int, n: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Attack fragments carry a high column 4 and a low column 9; benign ones do not."""
    rng = np.random.default_rng(seed)
    y = (rng.random(F) < 0.5).astype(np.float64)
    X = fragments(F, n, seed=seed + 100) * 0.6
    attack = X[y == 1]
    attack[:, :, 4] = np.where(attack[:, :, 0] > 0, rng.uniform(0.6, 1.0, attack.shape[:2]), 0)
    attack[:, :, 9] *= 0.2
    X[y == 1] = attack
    return X, y


# ------------------------------------------------------------------ forward


@pytest.mark.parametrize("n,h,k", [(6, 3, 5), (3, 3, 4), (5, 1, 2), (10, 3, 16), (4, 4, 1)])
def test_forward_matches_spec_in_float64(n, h, k):
    m = random_model(n, h, k, seed=n * 10 + k)
    X = fragments(23, n)
    want = forward_spec(m, X)
    assert np.allclose(m.forward(X, dtype=np.float64), want, rtol=0, atol=1e-12)
    # blocks of a few fragments: the block edges change nothing
    assert np.allclose(m.forward(X, dtype=np.float64, block=7), want, rtol=0, atol=1e-12)
    assert np.allclose(m.forward(X), want, rtol=0, atol=1e-5)  # float32 GEMM


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fragment_scores_the_same_bits_however_fragments_are_batched(dtype):
    """Replicas score any share of the fragments, in batches of any size: each
    fragment's probability must not depend on its neighbours (one GEMM over a block
    rounds a row by where it sits)."""
    m = random_model(10, 3, 64, seed=5)
    X = fragments(700, 10, seed=9)
    whole = m.forward(X, dtype=dtype)
    for size in (1, 3, 13, 130, 699):
        parts = np.concatenate([m.forward(X[s:s + size], dtype=dtype)
                                for s in range(0, len(X), size)])
        assert np.array_equal(parts.view(np.uint64), whole.view(np.uint64)), size
    assert np.array_equal(m.forward(X, dtype=dtype, block=37).view(np.uint64),
                          whole.view(np.uint64))
    shuffled = np.random.default_rng(0).permutation(len(X))
    assert np.array_equal(m.forward(X[shuffled], dtype=dtype), whole[shuffled])


def test_forward_takes_read_only_float32_integer_and_strided_inputs():
    m = random_model(5, 3, 4)
    X = fragments(9, 5)
    want = m.forward(X, dtype=np.float64)
    ro = X.copy()
    ro.flags.writeable = False
    assert np.array_equal(m.forward(ro, dtype=np.float64), want)
    strided = np.ascontiguousarray(np.repeat(X, 2, axis=0))[::2]
    assert np.array_equal(m.forward(strided, dtype=np.float64), want)
    assert np.allclose(m.forward(X.astype(np.float32), dtype=np.float64), want, atol=1e-6)
    ints = (X > 0.5).astype(np.int64)
    assert np.allclose(m.forward(ints, dtype=np.float64), forward_spec(m, ints), atol=1e-12)
    assert m.forward(X[:0]).shape == (0,)


def test_predict_decides_above_one_half():
    m = random_model(4, 3, 3)
    prob, decision = m.predict(fragments(50, 4))
    assert prob.dtype == np.float64 and ((prob > 0) & (prob < 1)).all()
    assert np.array_equal(decision, prob > 0.5)


def test_a_fragment_shorter_than_the_filter_is_refused():
    with pytest.raises(ConfigError, match="h <= n"):
        random_model(2, 3, 4)
    m = random_model(3, 3, 4)
    with pytest.raises(ConfigError, match="at least h=3 rows"):
        m.forward(fragments(4, 2))
    with pytest.raises(ConfigError, match="at least h=3 rows"):
        forward_spec(m, fragments(4, 2))


def test_data_of_another_shape_is_refused():
    m = random_model(5, 3, 4)
    with pytest.raises(ConfigError, match="trained on n=5 packets per fragment, got n=6"):
        m.predict(fragments(4, 6))
    with pytest.raises(ConfigError, match=r"expected fragments \(F, n, 11\), got shape"):
        m.forward(fragments(4, 5, f=10))
    with pytest.raises(ConfigError, match="got shape"):
        m.forward(np.zeros((5, 11)))


# ------------------------------------------------------------------ gradients


def numeric_grads(m: LucidCNN, X, y, eps: float = 1e-6, **kw) -> dict[str, np.ndarray]:
    """Central differences of the loss w.r.t. every weight (``kw`` makes its mask)."""
    def loss() -> float:
        return loss_and_grads(m, X, y, **{k: v() for k, v in kw.items()})[0]

    out = {}
    for name in ("W", "b", "w_out"):
        p, g = getattr(m, name), np.zeros_like(getattr(m, name))
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss()
            p[i] = old - eps
            g[i] = (up - loss()) / (2 * eps)
            p[i] = old
        out[name] = g
    old = m.b_out
    m.b_out = old + eps
    up = loss()
    m.b_out = old - eps
    out["b_out"] = np.array((up - loss()) / (2 * eps))
    m.b_out = old
    return out


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), np.abs(b).max(), 1e-12))


def test_gradients_match_finite_differences():
    m = random_model(4, 3, 3, seed=5)
    X, y = fragments(5, 4, seed=6), np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    loss, grads = loss_and_grads(m, X, y)
    p = forward_spec(m, X)
    assert loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-12)
    numeric = numeric_grads(m, X, y)
    for name in PARAMS:
        assert grads[name].shape == np.shape(getattr(m, name))
        assert np.abs(grads[name]).max() > 0, name
        assert relative_error(grads[name], numeric[name]) < 1e-6, name


def test_gradients_with_a_dropout_mask_match_finite_differences():
    m = random_model(4, 3, 3, seed=7)
    X, y = fragments(5, 4, seed=8), np.array([1.0, 0.0, 1.0, 0.0, 0.0])

    def same_mask():
        return np.random.default_rng(42)

    _, grads = loss_and_grads(m, X, y, dropout=0.3, rng=same_mask())
    numeric = numeric_grads(m, X, y, dropout=lambda: 0.3, rng=same_mask)
    for name in PARAMS:
        assert relative_error(grads[name], numeric[name]) < 1e-6, name


def test_initial_weights_are_glorot_uniform_with_zero_biases():
    m = glorot_model(10, 3, 11, 64, np.random.default_rng(0))
    assert np.abs(m.W).max() <= math.sqrt(6 / (33 + 33 * 64))
    assert np.abs(m.w_out).max() <= math.sqrt(6 / 65)
    assert not m.b.any() and m.b_out == 0.0
    assert m.W.std() == pytest.approx(math.sqrt(6 / (33 + 33 * 64) / 3), rel=0.05)


# ------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def trained():
    X, y = separable(2000)
    Xv, yv = separable(600, seed=1)
    model, hist = train(X, y, k=8, batch=128, epochs=4, validation=(Xv, yv), seed=3)
    return model, hist, Xv, yv


def test_training_separates_a_separable_problem(trained):
    model, hist, Xv, yv = trained
    assert hist.val_accuracy[hist.best_epoch] > 0.95
    prob, decision = model.predict(Xv)
    assert metrics(yv, decision)["accuracy"] > 0.95
    assert np.array_equal(decision, model.forward(Xv, dtype=np.float64) > 0.5)  # float32 ok
    assert hist.val_loss[hist.best_epoch] == min(hist.val_loss)
    assert len(hist.train_loss) == len(hist.val_loss) == len(hist.val_accuracy)


def test_the_best_epoch_is_returned_and_patience_stops_training():
    X, y = separable(400)
    model, hist = train(X, y, k=4, batch=64, epochs=60, patience=2, lr=0.05, seed=1,
                        validation=0.25)
    assert len(hist.val_loss) < 60 and len(hist.val_loss) - 1 - hist.best_epoch == 2
    assert hist.val_loss[hist.best_epoch] == min(hist.val_loss)
    again, _ = train(X, y, k=4, batch=64, epochs=hist.best_epoch + 1, patience=2, lr=0.05,
                     seed=1, validation=0.25)
    assert np.array_equal(model.W, again.W) and model.b_out == again.b_out


def test_one_seed_gives_identical_weights():
    X, y = separable(300)
    kw = dict(k=4, batch=64, epochs=2, dropout=0.2, validation=0.2)
    (a, ha), (b, hb) = train(X, y, seed=9, **kw), train(X, y, seed=9, **kw)
    for name in PARAMS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert ha == hb
    c, _ = train(X, y, seed=10, **kw)
    assert not np.array_equal(a.W, c.W)


@pytest.mark.parametrize("kw,match", [
    (dict(y=np.full(10, 2.0)), "0/1"),
    (dict(dropout=1.0), "dropout"),
    (dict(validation=1.5), "fraction in"),
    (dict(validation=0.01), "leaves a set empty"),
    (dict(h=6), "h <= n"),
    (dict(validation=(np.zeros((3, 5, 11)), np.zeros(2))), "F labels"),
])
def test_bad_training_arguments_are_refused(kw, match):
    X, y = separable(10, n=5)
    with pytest.raises(ConfigError, match=match):
        train(X, kw.pop("y", y), epochs=1, **kw)


# ------------------------------------------------------------------ files


def test_a_saved_model_loads_identical(tmp_path):
    m = random_model(6, 3, 5)
    m.save(tmp_path / "m.npz")
    back = LucidCNN.load(tmp_path / "m.npz")
    assert (back.n, back.h, back.k, back.n_features) == (6, 3, 5, 11)
    for name in PARAMS:
        assert np.array_equal(getattr(back, name), getattr(m, name)), name
    X = fragments(8, 6)
    assert np.array_equal(back.forward(X), m.forward(X))
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left


def test_bad_model_files_are_refused_with_their_path(tmp_path):
    with pytest.raises(ModelError, match="missing.npz: no such model file"):
        LucidCNN.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="junk.npz: not a LUCID model file"):
        LucidCNN.load(tmp_path / "junk.npz")
    m = random_model(6, 3, 5)
    good = dict(kind=np.array("lego.lucid.cnn"), format_version=np.int64(1), n=np.int64(6),
                h=np.int64(3), W=m.W, b=m.b, w_out=m.w_out, b_out=np.float64(m.b_out),
                window=np.float64(10.0))
    for change, match in [(dict(kind=np.array("lego.kitnet")), "expected a 'lego.lucid.cnn'"),
                          (dict(format_version=np.int64(2)), "format version 1"),
                          (dict(b=m.b[:4]), "inconsistent model"),
                          (dict(h=np.int64(7)), "inconsistent model"),
                          (dict(W=np.full_like(m.W, np.nan)), "finite")]:
        np.savez(tmp_path / "bad.npz", **{**good, **change})
        with pytest.raises(ModelError, match=match) as exc:
            LucidCNN.load(tmp_path / "bad.npz")
        assert "bad.npz" in str(exc.value)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in good.items() if k != "w_out"})
    with pytest.raises(ModelError, match=r"missing fields \['w_out'\]"):
        LucidCNN.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------ metrics


def test_metrics_on_a_hand_counted_example():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    d = np.array([1, 1, 0, 0, 0, 1, 0, 1], dtype=bool)  # tp 3, fn 1, fp 1, tn 3
    prob = np.where(d, 0.8, 0.2)
    r = metrics(y, d, prob)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (3, 1, 3, 1)
    assert r["accuracy"] == 6 / 8 and r["precision"] == 3 / 4 and r["recall"] == 3 / 4
    assert r["tpr"] == 3 / 4 and r["fpr"] == 1 / 4 and r["tnr"] == 3 / 4 and r["fnr"] == 1 / 4
    assert r["f1"] == pytest.approx(3 / 4)
    assert r["loss"] == pytest.approx(-(6 * math.log(0.8) + 2 * math.log(0.2)) / 8)


def test_metrics_report_nan_for_an_empty_denominator():
    r = metrics(np.zeros(4), np.zeros(4))  # no attacks, none flagged
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (0, 0, 4, 0)
    assert r["accuracy"] == 1.0 and r["fpr"] == 0.0
    assert all(math.isnan(r[key]) for key in ("precision", "recall", "fnr", "f1"))
    assert math.isnan(metrics(np.zeros(0), np.zeros(0))["accuracy"])
    with pytest.raises(ConfigError, match="one shape"):
        metrics(np.zeros(3), np.zeros(4))
