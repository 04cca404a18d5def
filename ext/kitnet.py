"""KitNET, the anomaly detector of Kitsune: fast, batched, exact to the reference.

:class:`KitNET` keeps the per-row semantics of the reference (``kitnet_spec.py``,
DESIGN §7) for any batch split: ``process`` walks a batch through the phases
('fm' -> 'ad' -> 'exec') row by row, but each run of rows within one phase goes
to one call: the correlation update and the online training of the ensemble run
in the Cython kernels of ``_kitnet.pyx``, execution runs batched in numpy.

Execution is two steps, also offered apart (the feature-mapping and ensemble
bricks): :meth:`KitNET.map_inputs` gathers and normalises each autoencoder's
inputs in one Cython pass, :meth:`KitNET.score_inputs` multiplies whole blocks
of rows by each autoencoder's weights (numpy, BLAS); blocks are padded so that a
row's score does not depend on the batch it came in. Scores match the reference
to float64 rounding.

A model is saved as a versioned ``.npz`` (:meth:`KitNET.save`,
:meth:`KitNET.load`), validated on load; a threshold fitted on benign scores
(:meth:`KitNET.fit_threshold`) is stored with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from lego.errors import ConfigError, ModelError
from lego.ext import require_built
from lego.ext.kitnet_spec import (
    NORM_EPS,
    cluster_features,
    correlation_distance,
    initial_weights,
    n_hidden_for,
)

_k = require_built("_kitnet")

#: Version of the ``.npz`` model format written by :meth:`KitNET.save`.
FORMAT_VERSION = 1
FORMAT_KIND = "lego.kitnet"
#: Rows per block in batched execution (keeps the temporaries in cache).
EXEC_BLOCK = 2048
#: Blocks are padded to a multiple of this many rows (see KitNET._score_block).
EXEC_PAD = 16
EXEC_ENGINES = ("blas", "kernel")

THRESHOLD_METHODS = ("lognormal", "max")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"KitNET.{name}: expected an int >= {minimum}, "
                          f"got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(f"KitNET.{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ConfigError(f"KitNET.{name}: expected a positive number, "
                          f"got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"KitNET.{name}: expected a positive finite number, got {value}")
    return float(value)


def _check_map(feature_map: Sequence[Sequence[int]], n_features: int) -> list[list[int]]:
    clusters = [list(c) for c in feature_map]
    if not clusters:
        raise ConfigError("KitNET.feature_map: expected at least one cluster, got none")
    for a, c in enumerate(clusters):
        if not c:
            raise ConfigError(f"KitNET.feature_map[{a}]: expected a non-empty cluster, got []")
        for i in c:
            is_int = isinstance(i, int | np.integer) and not isinstance(i, bool)
            if not is_int or not 0 <= i < n_features:
                raise ConfigError(f"KitNET.feature_map[{a}]: expected feature ids in "
                                  f"[0, {n_features}), got {i!r}")
    return [[int(i) for i in c] for c in clusters]


class KitNET:
    """An ensemble of small autoencoders over correlated feature clusters.

    ``KitNET(n_features, max_ae, fm_grace, ad_grace, lr, hidden_ratio)`` as in
    the reference: the first ``fm_grace + 1`` rows learn the feature map, the
    next ``ad_grace`` rows train the autoencoders, and every later row is
    scored. ``feature_map`` skips the first phase (then ``fm_grace + ad_grace
    + 1`` rows train, as in the reference). One instance is not thread-safe
    (the kernels release the GIL but update the model in place).
    """

    def __init__(
        self,
        n_features: int,
        max_ae: int = 10,
        fm_grace: int = 5000,
        ad_grace: int = 50000,
        lr: float = 0.1,
        hidden_ratio: float = 0.75,
        feature_map: Sequence[Sequence[int]] | None = None,
    ):
        self.n_features = _check_int("n_features", n_features, 1)
        self.max_ae = _check_int("max_ae", max_ae, 1)
        self.fm_grace = _check_int("fm_grace", fm_grace, 0)
        self.ad_grace = _check_int("ad_grace", ad_grace, 0)
        self.lr = _check_positive("lr", lr)
        self.hidden_ratio = _check_positive("hidden_ratio", hidden_ratio)
        self.n_trained = 0
        self.n_executed = 0
        self.threshold: float | None = None
        self.threshold_method: str | None = None
        # free-form strings saved with the model (e.g. the feature semantics)
        self.meta: dict[str, str] = {}
        self._map: list[list[int]] | None = None
        n = self.n_features
        # the correlation clusterer (phase 'fm' only)
        self._c = np.zeros(n)
        self._c_r = np.zeros(n)
        self._c_rs = np.zeros(n)
        self._C = np.zeros((n, n))
        if feature_map is not None:
            self._set_map(_check_map(feature_map, n))

    # ------------------------------------------------------------------ model layout

    def _set_map(self, clusters: list[list[int]]) -> None:
        """Create the autoencoders for a feature map (fresh weights, empty norms)."""
        self._map = clusters
        k = len(clusters)
        nv = [len(c) for c in clusters] + [k]
        nh = [n_hidden_for(v, self.hidden_ratio) for v in nv]
        self._nv, self._nh = nv, nh
        self._vis_off = np.concatenate([[0], np.cumsum(nv)]).astype(np.int64)
        self._hid_off = np.concatenate([[0], np.cumsum(nh)]).astype(np.int64)
        self._w_off = np.concatenate([[0], np.cumsum([v * h for v, h in zip(nv, nh, strict=True)])]
                                     ).astype(np.int64)
        self._feat_idx = np.array([i for c in clusters for i in c], dtype=np.int64)
        self._W = np.concatenate([initial_weights(v, h).ravel()
                                  for v, h in zip(nv, nh, strict=True)])
        self._hbias = np.zeros(int(self._hid_off[-1]))
        self._vbias = np.zeros(int(self._vis_off[-1]))
        self._norm_min = np.full(int(self._vis_off[-1]), np.inf)
        self._norm_max = np.full(int(self._vis_off[-1]), -np.inf)
        self._work = np.empty(4 * max(nv) + 2 * max(nh) + k)
        # the clusterer is done with
        self._c = self._c_r = self._c_rs = np.zeros(0)
        self._C = np.zeros((0, 0))

    def _ae_slices(self, a: int) -> tuple[slice, slice, slice]:
        """Slices of autoencoder a into the visible, hidden and weight arrays."""
        return (slice(int(self._vis_off[a]), int(self._vis_off[a + 1])),
                slice(int(self._hid_off[a]), int(self._hid_off[a + 1])),
                slice(int(self._w_off[a]), int(self._w_off[a + 1])))

    def _W_of(self, a: int) -> np.ndarray:
        """W of autoencoder a (n_visible x n_hidden), a view into the packed weights."""
        return self._W[self._ae_slices(a)[2]].reshape(self._nv[a], self._nh[a])

    def layer(self, a: int) -> dict[str, np.ndarray]:
        """Copies of autoencoder ``a``'s parameters (``a == n_autoencoders``: the
        output layer): W, hbias, vbias, norm_min, norm_max."""
        if self._map is None or not 0 <= a <= len(self._map):
            raise ConfigError(f"KitNET.layer: expected 0 <= a <= {self.n_autoencoders}, got {a}")
        vs, hs, _ = self._ae_slices(a)
        return {"W": self._W_of(a).copy(), "hbias": self._hbias[hs].copy(),
                "vbias": self._vbias[vs].copy(), "norm_min": self._norm_min[vs].copy(),
                "norm_max": self._norm_max[vs].copy()}

    # ------------------------------------------------------------------ properties

    @property
    def phase(self) -> str:
        """'fm' (learning the feature map), 'ad' (training) or 'exec' (scoring)."""
        if self._map is None:
            return "fm"
        if self.n_trained <= self.fm_grace + self.ad_grace:
            return "ad"
        return "exec"

    @property
    def feature_map(self) -> list[list[int]] | None:
        """The clusters of feature ids, one per autoencoder (None before it is built)."""
        return None if self._map is None else [list(c) for c in self._map]

    @property
    def n_autoencoders(self) -> int:
        return 0 if self._map is None else len(self._map)

    # ------------------------------------------------------------------ input

    def _rows(self, X: np.ndarray, who: str) -> np.ndarray:
        """X as C-contiguous float64 rows x n_features (a 1-D X is one row)."""
        arr = np.asarray(X)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ConfigError(f"KitNET.{who}: expected rows x {self.n_features} features, "
                              f"got shape {np.shape(X)}")
        return np.ascontiguousarray(arr, dtype=np.float64)

    # ------------------------------------------------------------------ phases

    def process(self, X: np.ndarray) -> np.ndarray:
        """Train on or score each row, as the reference's ``process`` does per row.

        Returns one score per row: 0.0 for the rows spent training, the output
        layer's RMSE for the rows scored. Any split of the rows into batches
        gives the same scores and the same model.
        """
        X = self._rows(X, "process")
        scores = np.zeros(X.shape[0])
        last_train = self.fm_grace + self.ad_grace  # n_trained of the last training row
        train_rows = max(0, min(X.shape[0], last_train + 1 - self.n_trained))
        if train_rows:
            self._train(X[:train_rows])
        if train_rows < X.shape[0]:
            scores[train_rows:] = self.execute(X[train_rows:])
        return scores

    def train(self, X: np.ndarray) -> np.ndarray:
        """Train on every row, whatever the phase (the reference's ``train``).

        Rows that feed the correlation clusterer give 0.0; the others give the
        output layer's reconstruction RMSE before its SGD step.
        """
        return self._train(self._rows(X, "train"))

    def _train(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros(X.shape[0])
        start = 0
        if self._map is None:
            fm_rows = min(X.shape[0], self.fm_grace + 1 - self.n_trained)
            c_rt = np.empty(self.n_features)
            _k.corr_update(X[:fm_rows], self._c, self._c_r, self._c_rs, self._C, c_rt,
                           self.n_trained)
            self.n_trained += fm_rows
            start = fm_rows
            if self.n_trained == self.fm_grace + 1:
                D = correlation_distance(self._C, self._c_rs)
                self._set_map(cluster_features(D, self.max_ae))
        if start < X.shape[0]:
            _k.train_rows(X[start:], self._feat_idx, self._vis_off, self._hid_off, self._w_off,
                          self._W, self._hbias, self._vbias, self._norm_min, self._norm_max,
                          self.lr, self._work, out[start:])
            self.n_trained += X.shape[0] - start
        return out

    def execute(self, X: np.ndarray, engine: str = "blas") -> np.ndarray:
        """Score every row with the current model (no learning).

        ``engine="blas"``: feature mapping (:meth:`map_inputs`) then the ensemble
        (:meth:`score_inputs`), block by block, one matrix product per autoencoder
        over a block of rows (the fast path). ``engine="kernel"``: the Cython
        kernel, one row at a time, each product summed first term to last.
        Either way a row's score does not depend on the batch it comes in; the
        two agree with each other and with the reference to float64 rounding.
        """
        X = self._rows(X, "execute")
        if engine not in EXEC_ENGINES:
            raise ConfigError(f"KitNET.execute.engine: expected one of {EXEC_ENGINES}, "
                              f"got {engine!r}")
        self._need_map("execute")
        scores = np.empty(X.shape[0])
        if engine == "kernel":
            _k.execute_rows(X, self._feat_idx, self._vis_off, self._hid_off, self._w_off,
                            self._W, self._hbias, self._vbias, self._norm_min, self._norm_max,
                            self._work, scores)
        else:
            layers, norm = self._exec_layers(), self._map_norm()
            for start in range(0, X.shape[0], EXEC_BLOCK):  # blocks keep the temporaries in cache
                block = X[start:start + EXEC_BLOCK]
                scores[start:start + len(block)] = self._score_block(
                    self._map_rows(block, norm), layers)
        self.n_executed += X.shape[0]
        return scores

    def map_inputs(self, X: np.ndarray) -> list[np.ndarray]:
        """Feature mapping at inference: for each autoencoder of the ensemble,
        its min-max normalised inputs (rows x its features, C-contiguous; views
        of one buffer). What :meth:`score_inputs` takes; Kitsune's "feature
        mapping" brick."""
        X = self._rows(X, "map_inputs")
        self._need_map("map_inputs")
        return self._map_rows(X, self._map_norm())

    def score_inputs(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble and the output layer on mapped inputs (:meth:`map_inputs`):
        the scores, bit-identical to :meth:`execute` of the unmapped rows."""
        self._need_map("score_inputs")
        k = len(self._map)
        if len(inputs) != k:
            raise ConfigError(f"KitNET.score_inputs: expected {k} arrays (one per "
                              f"autoencoder), got {len(inputs)}")
        n = len(inputs[0]) if k else 0
        for a, x in enumerate(inputs):
            if np.shape(x) != (n, self._nv[a]):
                raise ConfigError(f"KitNET.score_inputs: expected inputs[{a}] of shape "
                                  f"({n}, {self._nv[a]}), got {np.shape(x)}")
        layers = self._exec_layers()
        scores = np.empty(n)
        for start in range(0, n, EXEC_BLOCK):
            block = [np.ascontiguousarray(x[start:start + EXEC_BLOCK], dtype=np.float64)
                     for x in inputs]
            scores[start:start + len(block[0])] = self._score_block(block, layers)
        self.n_executed += n
        return scores

    def _need_map(self, who: str) -> None:
        if self._map is None:
            raise ModelError(f"KitNET.{who}: no feature map yet (phase 'fm', "
                             f"{self.n_trained} of {self.fm_grace + 1} rows seen)")

    def _exec_layers(self) -> list[tuple[np.ndarray, ...]]:
        """Per autoencoder (the last: the output layer): norm_min, denominator of
        the normalisation, W, hbias, vbias."""
        layers = []
        for a in range(len(self._map) + 1):
            vs, hs, _ = self._ae_slices(a)
            nmin = self._norm_min[vs]
            layers.append((nmin, self._norm_max[vs] - nmin + NORM_EPS, self._W_of(a),
                           self._hbias[hs], self._vbias[vs]))
        return layers

    def _map_norm(self) -> tuple[np.ndarray, np.ndarray]:
        """norm_min and the normalisation's denominator of the ensemble's inputs
        (packed like feat_idx; the output layer's are not needed)."""
        end = int(self._vis_off[len(self._map)])
        nmin = self._norm_min[:end]
        return nmin, self._norm_max[:end] - nmin + NORM_EPS

    def _map_rows(self, X: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
        """Mapped inputs of rows X, one pass (the Cython kernel)."""
        k = len(self._map)
        n, off = X.shape[0], self._vis_off
        out = np.empty(n * int(off[k]))
        _k.map_rows(X, self._feat_idx, off[:k + 1], *norm, out)
        return [out[n * off[a]:n * off[a + 1]].reshape(n, self._nv[a]) for a in range(k)]

    def _score_block(self, inputs: list[np.ndarray], layers: list[tuple[np.ndarray, ...]]
                     ) -> np.ndarray:
        """Scores of one block of mapped rows (at most EXEC_BLOCK).

        The block is padded to a multiple of EXEC_PAD rows (with the mapping of a
        zero row): BLAS rounds a lone row (gemv) and the odd last row of a
        product differently from the others, so without the padding a row's
        score would depend on where the batch was split.
        """
        k = len(inputs)
        rows = len(inputs[0])
        extra = -rows % EXEC_PAD
        S = np.empty((rows + extra, k))
        for a in range(k):
            nmin, denom, W, hb, vb = layers[a]
            xn = inputs[a]
            if extra:
                xn = np.concatenate([xn, np.broadcast_to((0.0 - nmin) / denom, (extra, len(nmin)))])
            S[:, a] = _ensemble_rmse(xn, W, hb, vb)
        nmin, denom, W, hb, vb = layers[k]
        return _ensemble_rmse((S - nmin) / denom, W, hb, vb)[:rows]

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (a versioned ``.npz``), atomically."""
        from lego.ext.kitnet_io import save_model

        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> KitNET:
        """Read a model written by :meth:`save`; ModelError if it is not one."""
        from lego.ext.kitnet_io import load_model

        return load_model(path)

    # ------------------------------------------------------------------ threshold

    def fit_threshold(self, benign_scores: np.ndarray, method: str = "lognormal",
                      p_value: float = 1e-4) -> float:
        """Fit and store the alert threshold from benign scores; returns it.

        ``lognormal``: fit a normal distribution to log(scores) (mean and
        standard deviation) and take the score whose survival probability is
        ``p_value``. ``max``: the largest benign score.
        """
        self.threshold = fit_threshold(benign_scores, method, p_value)
        self.threshold_method = method
        return self.threshold

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """True for each score above the stored threshold (an alert)."""
        if self.threshold is None:
            raise ModelError("KitNET.decide: no threshold; call fit_threshold(benign_scores) first")
        return np.asarray(scores, dtype=np.float64) > self.threshold


# ---------------------------------------------------------------------- numpy helpers


def _ensemble_rmse(xn: np.ndarray, W: np.ndarray, hbias: np.ndarray,
                   vbias: np.ndarray) -> np.ndarray:
    """Reconstruction RMSE of each normalised row by one autoencoder (the reference's ops)."""
    y = xn @ W
    y += hbias
    _sigmoid(y)
    z = y @ W.T
    z += vbias
    _sigmoid(z)
    np.subtract(xn, z, out=z)
    np.multiply(z, z, out=z)
    return np.sqrt(z.mean(axis=1))


def _sigmoid(v: np.ndarray) -> None:
    """v = 1 / (1 + exp(-v)), in place (exp overflows to inf, giving 0, as intended)."""
    np.negative(v, out=v)
    with np.errstate(over="ignore"):
        np.exp(v, out=v)
    v += 1.0
    np.divide(1.0, v, out=v)


def fit_threshold(benign_scores: np.ndarray, method: str = "lognormal",
                  p_value: float = 1e-4) -> float:
    """The alert threshold for benign scores (see :meth:`KitNET.fit_threshold`)."""
    scores = np.asarray(benign_scores, dtype=np.float64).ravel()
    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"fit_threshold.method: expected one of {THRESHOLD_METHODS}, "
                          f"got {method!r}")
    if scores.size == 0:
        raise ConfigError("fit_threshold.benign_scores: expected at least one score, got none")
    if not np.isfinite(scores).all():
        raise ConfigError(f"fit_threshold.benign_scores: expected finite scores, got "
                          f"{int((~np.isfinite(scores)).sum())} non-finite")
    if method == "max":
        return float(scores.max())
    if not 0.0 < p_value < 1.0:
        raise ConfigError(f"fit_threshold.p_value: expected 0 < p_value < 1, got {p_value}")
    if (scores <= 0).any():
        raise ConfigError(f"fit_threshold.benign_scores: the lognormal fit needs scores > 0, got "
                          f"{int((scores <= 0).sum())} <= 0 (leave out the training rows' 0.0)")
    if scores.size < 2:
        raise ConfigError("fit_threshold.benign_scores: the lognormal fit needs >= 2 scores, got 1")
    from scipy.stats import norm

    logs = np.log(scores)
    return float(np.exp(norm.isf(p_value, loc=logs.mean(), scale=logs.std())))


# ---------------------------------------------------------------------- model files
