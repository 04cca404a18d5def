"""KitNET: the reference fixture, the spec as oracle of the kernels, phases, files.

Fast (about a second in all); the fixture tests skip when ../shared/data is absent.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from lego.errors import ConfigError, ModelError
from lego.ext import require_built
from lego.ext.kitnet import FORMAT_VERSION, KitNET, fit_threshold
from lego.ext.kitnet_spec import CorrelationClusterer, KitNETSpec

_k = require_built("_kitnet")

# The reference run in ../shared/data/kitsune-reference (see its README.md).
REF = dict(max_ae=10, fm_grace=1000, ad_grace=10000, lr=0.1, hidden_ratio=0.75)
REF_TRAIN_ROWS = 11001
# Small models for the spec comparisons: 3 clusters or more, every phase.
SMALL = dict(max_ae=4, fm_grace=40, ad_grace=400)


@pytest.fixture(scope="module")
def reference(shared_data):
    d = shared_data / "kitsune-reference"
    X = np.load(d / "fx16k-features.npz")["X"]
    rmse = np.load(d / "fx16k-kitnet.npz")["rmse"]
    fmap = json.loads((d / "fx16k-feature-map.json").read_text())["feature_map"]
    return X, rmse, fmap


def correlated_rows(n_rows: int, n_features: int = 12, seed: int = 7) -> np.ndarray:
    """Rows of features driven by 3 latent signals plus noise (some heavy-tailed)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n_rows, 3)).cumsum(axis=0) * 0.1
    mix = rng.normal(size=(3, n_features)) * (rng.random((3, n_features)) < 0.5)
    X = latent @ mix + 0.05 * rng.normal(size=(n_rows, n_features))
    X[:, 0] = np.abs(X[:, 0]) ** 3  # a skewed feature
    X[:, 1] = 7.0  # a constant feature (zero variance)
    return X


def model_arrays(m: KitNET) -> dict[str, np.ndarray]:
    return dict(W=m._W, hbias=m._hbias, vbias=m._vbias, norm_min=m._norm_min,
                norm_max=m._norm_max)


def spec_arrays(s: KitNETSpec) -> dict[str, np.ndarray]:
    aes = [*s.ensemble, s.output]
    return dict(W=np.concatenate([ae.W.ravel() for ae in aes]),
                hbias=np.concatenate([ae.hbias for ae in aes]),
                vbias=np.concatenate([ae.vbias for ae in aes]),
                norm_min=np.concatenate([ae.norm_min for ae in aes]),
                norm_max=np.concatenate([ae.norm_max for ae in aes]))


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = np.maximum(np.abs(b), 1e-300)
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0


# ---------------------------------------------------------------------- the reference fixture


def test_feature_map_is_the_reference_map(reference):
    X, _, fmap = reference
    m = KitNET(X.shape[1], **REF)
    m.process(X[:REF["fm_grace"]])
    assert m.phase == "fm" and m.feature_map is None
    m.process(X[REF["fm_grace"]:REF["fm_grace"] + 1])  # the clusterer sees fm_grace + 1 rows
    assert m.phase == "ad"
    assert m.feature_map == fmap


@pytest.mark.parametrize("engine", ["blas", "kernel"])
def test_scores_match_the_reference(reference, engine):
    X, rmse, _ = reference
    m = KitNET(X.shape[1], **REF)
    scores = np.concatenate([m.process(X[:5000]), m.process(X[5000:REF_TRAIN_ROWS])])
    assert m.phase == "exec"
    scores = np.concatenate([scores, m.execute(X[REF_TRAIN_ROWS:], engine=engine)])
    assert (scores[:REF_TRAIN_ROWS] == 0.0).all()
    dev = max_rel(scores[REF_TRAIN_ROWS:], rmse[REF_TRAIN_ROWS:])
    # measured: 1.8e-14 (the numpy spec itself: 2.5e-14); the contract is 1e-9
    assert dev < 1e-9, f"max relative deviation from the reference {dev:.3g}"


def test_spec_matches_the_reference_on_a_prefix(reference):
    X, rmse, fmap = reference
    s = KitNETSpec(X.shape[1], **REF)
    out = np.array([s.process(x) for x in X[:REF_TRAIN_ROWS + 200]])
    assert s.feature_map == fmap
    assert max_rel(out[REF_TRAIN_ROWS:], rmse[REF_TRAIN_ROWS:REF_TRAIN_ROWS + 200]) < 1e-9


# ---------------------------------------------------------------------- kernels vs the spec


def test_correlation_kernel_is_the_spec_bit_for_bit():
    X = correlated_rows(300)
    spec = CorrelationClusterer(X.shape[1])
    for x in X:
        spec.update(x)
    n = X.shape[1]
    c, c_r, c_rs, C = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, n))
    _k.corr_update(X[:123], c, c_r, c_rs, C, np.empty(n), 0)  # two calls: N carries over
    _k.corr_update(X[123:], c, c_r, c_rs, C, np.empty(n), 123)
    for got, want in ((c, spec.c), (c_r, spec.c_r), (c_rs, spec.c_rs), (C, spec.C)):
        np.testing.assert_array_equal(got, want)


def test_training_kernel_matches_the_spec():
    X = correlated_rows(SMALL["fm_grace"] + SMALL["ad_grace"] + 300)
    spec = KitNETSpec(X.shape[1], **SMALL)
    want = np.array([spec.process(x) for x in X])
    m = KitNET(X.shape[1], **SMALL)
    got = m.process(X)
    assert m.feature_map == spec.feature_map and len(m.feature_map) >= 3
    for name, arr in spec_arrays(spec).items():
        dev = max_rel(model_arrays(m)[name], arr)
        assert dev < 1e-12, f"{name}: max relative deviation {dev:.3g}"
    np.testing.assert_array_equal(got == 0.0, want == 0.0)
    assert max_rel(got, want) < 1e-12


def test_training_with_a_given_feature_map_matches_the_spec():
    X = correlated_rows(600)
    fmap = [[0, 2, 4], [1, 3, 5, 7, 9, 11], [6, 8, 10]]
    spec = KitNETSpec(X.shape[1], feature_map=fmap, **SMALL)
    want = np.array([spec.process(x) for x in X])
    m = KitNET(X.shape[1], feature_map=fmap, **SMALL)
    assert m.phase == "ad"
    got = m.process(X)
    # with a map, fm_grace + ad_grace + 1 rows train, as in the reference
    assert (got[:SMALL["fm_grace"] + SMALL["ad_grace"] + 1] == 0).all()
    assert (got[SMALL["fm_grace"] + SMALL["ad_grace"] + 1:] > 0).all()
    assert max_rel(got, want) < 1e-12


def test_kernels_write_into_the_callers_buffers_and_accept_read_only_input():
    X = correlated_rows(500)
    m = KitNET(X.shape[1], **SMALL)
    m.process(X[:SMALL["fm_grace"] + SMALL["ad_grace"] + 1])
    X_ro = X[-50:].copy()
    X_ro.flags.writeable = False
    W_before = m._W
    out = np.full(50, -1.0)
    _k.execute_rows(X_ro, m._feat_idx, m._vis_off, m._hid_off, m._w_off, m._W, m._hbias,
                    m._vbias, m._norm_min, m._norm_max, m._work, out)
    np.testing.assert_array_equal(out, m.execute(X_ro, engine="kernel"))
    assert max_rel(out, m.execute(X_ro)) < 1e-13
    train_out = np.full(50, -1.0)
    _k.train_rows(X_ro, m._feat_idx, m._vis_off, m._hid_off, m._w_off, m._W, m._hbias,
                  m._vbias, m._norm_min, m._norm_max, m.lr, m._work, train_out)
    assert (train_out > 0).all() and m._W is W_before
    with pytest.raises(ValueError, match="work buffer"):
        _k.train_rows(X_ro, m._feat_idx, m._vis_off, m._hid_off, m._w_off, m._W, m._hbias,
                      m._vbias, m._norm_min, m._norm_max, m.lr, np.empty(3), train_out)


# ---------------------------------------------------------------------- phases and batches


def test_any_batch_split_gives_the_same_scores_and_model():
    X = correlated_rows(SMALL["fm_grace"] + SMALL["ad_grace"] + 700, seed=3)
    whole = KitNET(X.shape[1], **SMALL)
    want = whole.process(X)
    fm_end = SMALL["fm_grace"] + 1
    ad_end = fm_end + SMALL["ad_grace"]
    rng = np.random.default_rng(0)
    splits = [
        [fm_end, ad_end],  # exactly at the phase boundaries
        [fm_end - 1, fm_end + 1, ad_end - 1, ad_end + 1],
        sorted(rng.choice(np.arange(1, len(X)), size=60, replace=False)),
        list(range(1, len(X))),  # one row at a time
    ]
    for cuts in splits:
        m = KitNET(X.shape[1], **SMALL)
        got = np.concatenate([m.process(part) for part in np.split(X, cuts)])
        np.testing.assert_array_equal(got, want)
        for name, arr in model_arrays(whole).items():
            np.testing.assert_array_equal(model_arrays(m)[name], arr, err_msg=name)
        assert (m.n_trained, m.n_executed) == (whole.n_trained, whole.n_executed)


@pytest.mark.parametrize("engine", ["blas", "kernel"])
def test_a_rows_score_does_not_depend_on_its_batch(engine):
    X = correlated_rows(SMALL["fm_grace"] + SMALL["ad_grace"] + 1 + 5000, seed=5)
    m = KitNET(X.shape[1], **SMALL)
    m.process(X[:SMALL["fm_grace"] + SMALL["ad_grace"] + 1])
    Xe = X[SMALL["fm_grace"] + SMALL["ad_grace"] + 1:]
    want = m.execute(Xe, engine=engine)
    for size in (1, 2, 3, 7, 17, 100, 2047, 2049):
        got = np.concatenate([m.execute(Xe[i:i + size], engine=engine)
                              for i in range(0, 4200, size)])
        np.testing.assert_array_equal(got, want[:len(got)], err_msg=f"batches of {size}")


def test_mapping_then_ensemble_is_execute_bit_for_bit():
    """The feature-mapping and ensemble bricks' halves of execute, on any split."""
    X = correlated_rows(SMALL["fm_grace"] + SMALL["ad_grace"] + 1 + 3000, seed=9)
    m = KitNET(X.shape[1], **SMALL)
    m.process(X[:SMALL["fm_grace"] + SMALL["ad_grace"] + 1])
    Xe = X[SMALL["fm_grace"] + SMALL["ad_grace"] + 1:]
    want = m.execute(Xe)
    inputs = m.map_inputs(Xe)
    assert [x.shape for x in inputs] == [(len(Xe), len(c)) for c in m.feature_map]
    assert all(x.flags.c_contiguous for x in inputs)
    for a, cluster in enumerate(m.feature_map):  # the reference's normalisation, per input
        p = m.layer(a)
        np.testing.assert_array_equal(inputs[a], (Xe[:, cluster] - p["norm_min"]) /
                                      (p["norm_max"] - p["norm_min"] + 1e-16))
    np.testing.assert_array_equal(m.score_inputs(inputs), want)
    for size in (1, 15, 2049):  # another block split, a padded last block
        got = np.concatenate([m.score_inputs([x[i:i + size] for x in inputs])
                              for i in range(0, len(Xe), size)])
        np.testing.assert_array_equal(got, want, err_msg=f"batches of {size}")


def test_mapped_inputs_of_the_wrong_shape_are_refused():
    X = correlated_rows(40)
    m = KitNET(X.shape[1], max_ae=4, fm_grace=9, ad_grace=5)
    with pytest.raises(ModelError, match="map_inputs: no feature map"):
        m.map_inputs(X[:2])
    m.process(X[:30])
    inputs = m.map_inputs(X[30:])
    with pytest.raises(ConfigError, match=f"expected {m.n_autoencoders} arrays"):
        m.score_inputs(inputs[:-1])
    bad = list(inputs)
    bad[0] = bad[0][:, :-1]
    with pytest.raises(ConfigError, match=r"inputs\[0\] of shape"):
        m.score_inputs(bad)


def test_phase_counters_and_explicit_train():
    X = correlated_rows(50)
    m = KitNET(X.shape[1], max_ae=4, fm_grace=9, ad_grace=5)
    assert m.phase == "fm" and m.n_autoencoders == 0
    with pytest.raises(ModelError, match="no feature map"):
        m.execute(X[:2])
    out = m.train(X[:30])  # train() keeps training past ad_grace, as the reference's does
    assert (out[:10] == 0).all() and (out[10:] > 0).all()
    assert m.n_trained == 30 and m.phase == "exec"
    assert m.process(X[30:32]).shape == (2,) and m.n_executed == 2
    assert m.process(X[32]).shape == (1,)  # one row as a 1-D array


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_features=0), "n_features"),
    (dict(n_features=3.5), "n_features"),
    (dict(n_features=4, max_ae=0), "max_ae"),
    (dict(n_features=4, fm_grace=-1), "fm_grace"),
    (dict(n_features=4, lr=0.0), "lr"),
    (dict(n_features=4, hidden_ratio=float("nan")), "hidden_ratio"),
    (dict(n_features=4, feature_map=[[0, 4]]), "feature_map"),
    (dict(n_features=4, feature_map=[[]]), "feature_map"),
])
def test_bad_configuration_is_refused(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        KitNET(**kwargs)


def test_bad_input_shape_is_refused():
    m = KitNET(5)
    with pytest.raises(ConfigError, match=r"rows x 5 features, got shape \(3, 4\)"):
        m.process(np.zeros((3, 4)))


# ---------------------------------------------------------------------- model files


@pytest.mark.parametrize("rows_before_save", [20, SMALL["fm_grace"] + 100, 1000])
def test_save_load_round_trip_continues_identically(tmp_path, rows_before_save):
    X = correlated_rows(1400, seed=11)
    m = KitNET(X.shape[1], **SMALL)
    m.process(X[:rows_before_save])
    if m.phase == "exec":
        m.fit_threshold(m.execute(X[rows_before_save:rows_before_save + 100]))
    path = tmp_path / "model.npz"
    m.save(path)
    loaded = KitNET.load(path)
    assert loaded.phase == m.phase and loaded.feature_map == m.feature_map
    assert loaded.threshold == m.threshold and loaded.threshold_method == m.threshold_method
    np.testing.assert_array_equal(loaded.process(X[rows_before_save:]),
                                  m.process(X[rows_before_save:]))
    assert (loaded.n_trained, loaded.n_executed) == (m.n_trained, m.n_executed)


@pytest.fixture
def saved(tmp_path):
    X = correlated_rows(600)
    m = KitNET(X.shape[1], **SMALL)
    m.process(X)
    path = tmp_path / "model.npz"
    m.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return path, arrays


def rewrite(path, arrays, **changes):
    arrays = dict(arrays, **changes)
    for name, value in changes.items():
        if value is None:
            del arrays[name]
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize("change, message", [
    (dict(format_version=np.array(FORMAT_VERSION + 1)),
     f"'format_version': expected {FORMAT_VERSION}, got {FORMAT_VERSION + 1}"),
    (dict(kind=np.array("something.else")), "'kind': expected 'lego.kitnet'"),
    (dict(ae1_W=None), "'ae1_W': expected an array .* got none"),
    (dict(out_vbias=None), "'out_vbias'"),
    (dict(ae0_W=np.zeros((2, 2))), r"'ae0_W': expected float64 of shape \(\d+, \d+\), "
                                   r"got float64 of shape \(2, 2\)"),
    (dict(ae0_hbias=np.array([np.nan, 0, 0])), "'ae0_hbias'"),
    (dict(map_features=np.array([0, 1])), "'map_features'"),
    (dict(map_sizes=np.array([0, 3])), "'map_sizes'"),
    (dict(lr=np.array("fast")), "'lr': expected a float scalar"),
    (dict(n_features=np.array(-3)), "hyper-parameters"),
])
def test_a_corrupted_model_file_raises_model_error(saved, change, message):
    path, arrays = saved
    if "ae0_hbias" in change:
        change["ae0_hbias"] = np.full(arrays["ae0_hbias"].shape, np.nan)
        message = r"'ae0_hbias': expected no NaN or inf, got \d+ such values"
    rewrite(path, arrays, **change)
    with pytest.raises(ModelError, match=message):
        KitNET.load(path)


def test_nan_in_a_weight_is_named(saved):
    path, arrays = saved
    W = arrays["out_W"].copy()
    W[1, 0] = np.nan
    rewrite(path, arrays, out_W=W)
    with pytest.raises(ModelError, match=r"'out_W': .* \(first at \(1, 0\)\)"):
        KitNET.load(path)


def test_unreadable_model_files(tmp_path, saved):
    with pytest.raises(ModelError, match="no such model file"):
        KitNET.load(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not a model")
    with pytest.raises(ModelError, match="not a KitNET model file"):
        KitNET.load(tmp_path / "text.npz")
    path, _ = saved
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not a KitNET model file"):
        KitNET.load(tmp_path / "cut.npz")
    assert zipfile.is_zipfile(path)


# ---------------------------------------------------------------------- thresholds


def test_lognormal_threshold_on_a_known_distribution():
    from scipy.stats import norm

    rng = np.random.default_rng(1)
    mu, sigma, p = -3.0, 0.5, 1e-3
    scores = np.exp(rng.normal(mu, sigma, size=200_000))
    t = fit_threshold(scores, "lognormal", p_value=p)
    assert t == pytest.approx(np.exp(mu + sigma * norm.isf(p)), rel=0.01)
    # the fraction of fresh benign scores above it is about p
    fresh = np.exp(rng.normal(mu, sigma, size=1_000_000))
    assert np.mean(fresh > t) == pytest.approx(p, rel=0.15)


def test_max_threshold_and_decide():
    m = KitNET(4)
    assert m.fit_threshold(np.array([0.1, 0.3, 0.2]), method="max") == 0.3
    np.testing.assert_array_equal(m.decide([0.29, 0.3, 0.31]), [False, False, True])
    assert m.threshold_method == "max"


@pytest.mark.parametrize("scores, kwargs, message", [
    ([0.1, 0.0, 0.2], {}, "scores > 0"),
    ([0.1, np.inf], {}, "finite"),
    ([], {}, "at least one"),
    ([0.5], {}, ">= 2 scores"),
    ([0.1, 0.2], dict(method="mean"), "method"),
    ([0.1, 0.2], dict(p_value=1.5), "p_value"),
])
def test_bad_threshold_input_is_refused(scores, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        fit_threshold(np.array(scores), **kwargs)


def test_decide_without_a_threshold_is_a_model_error():
    with pytest.raises(ModelError, match="fit_threshold"):
        KitNET(3).decide([1.0])
