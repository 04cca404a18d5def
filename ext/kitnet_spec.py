"""KitNET, the anomaly detector of Kitsune: the pure-Python specification.

One sample at a time, in numpy, with the operations of the public reference
(Kitsune-py) in the same order, so that this module reproduces its feature map
exactly and its scores to float64 rounding. It is readable on purpose: it is the
baseline for the benchmarks and the oracle for the Cython kernels
(``_kitnet.pyx``); the fast public class is :class:`lego.ext.kitnet.KitNET`.

Phases, counted by ``n_trained`` (DESIGN §7):

- ``n_trained <= fm_grace``: the correlation clusterer sees the sample (so it
  sees ``fm_grace + 1`` samples); at ``n_trained == fm_grace`` the feature map is
  built and the autoencoders are created;
- ``fm_grace < n_trained <= fm_grace + ad_grace``: online training of the
  ensemble and of the output layer (``ad_grace`` samples);
- afterwards: execution. ``process`` returns 0.0 for every training sample.

:func:`correlation_distance` and :func:`cluster_features` are shared with the
fast implementation: they run once per model, not once per sample.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.cluster.hierarchy import linkage, to_tree

#: Added to the min/max range before dividing (the reference's constant).
NORM_EPS = 1e-16
#: Seed of every autoencoder's weight initialisation (a new generator per AE).
SEED = 1234


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def n_hidden_for(n_visible: int, hidden_ratio: float) -> int:
    """Hidden units of an autoencoder over ``n_visible`` inputs."""
    return int(math.ceil(n_visible * hidden_ratio))


def initial_weights(n_visible: int, n_hidden: int) -> np.ndarray:
    """W (n_visible x n_hidden), uniform in +-1/n_visible from RandomState(1234)."""
    rng = np.random.RandomState(SEED)
    a = 1.0 / n_visible
    return np.array(rng.uniform(low=-a, high=a, size=(n_visible, n_hidden)))


# --------------------------------------------------------------------------- feature map


def correlation_distance(C: np.ndarray, c_rs: np.ndarray) -> np.ndarray:
    """1 - correlation from the clusterer's sums, clipped at 0 (n x n)."""
    s = np.sqrt(c_rs)
    S = np.outer(s, s)
    S[S == 0] = 1e-100
    D = 1 - C / S
    D[D < 0] = 0
    return D


def cluster_features(D: np.ndarray, max_size: int) -> list[list[int]]:
    """Single-linkage clusters of the features, split top-down to <= max_size.

    A dendrogram node with at most ``max_size`` leaves is one cluster, its
    leaves in pre-order; a larger node yields its left clusters, then its right
    ones. Ties break as scipy breaks them.
    """
    n = D.shape[0]
    max_size = min(max(int(max_size), 1), n)
    if n == 1:
        return [[0]]
    Z = linkage(D[np.triu_indices(n, 1)])
    clusters: list[list[int]] = []
    stack = [to_tree(Z)]  # iterative, so a chain-like dendrogram cannot overflow
    while stack:
        node = stack.pop()
        if node.count <= max_size:
            clusters.append([int(i) for i in node.pre_order()])
        else:
            stack.append(node.get_right())
            stack.append(node.get_left())
    return clusters


class CorrelationClusterer:
    """Incremental correlation of n features (sums of residuals)."""

    def __init__(self, n: int):
        self.n = n
        self.c = np.zeros(n)  # sum of the samples
        self.c_r = np.zeros(n)  # sum of the residuals
        self.c_rs = np.zeros(n)  # sum of the squared residuals
        self.C = np.zeros((n, n))  # sum of the residuals' outer products
        self.N = 0

    def update(self, x: np.ndarray) -> None:
        self.N += 1
        self.c += x
        c_rt = x - self.c / self.N
        self.c_r += c_rt
        self.c_rs += c_rt**2
        self.C += np.outer(c_rt, c_rt)

    def cluster(self, max_size: int) -> list[list[int]]:
        return cluster_features(correlation_distance(self.C, self.c_rs), max_size)


# --------------------------------------------------------------------------- autoencoder


class Autoencoder:
    """A denoising-free autoencoder with tied weights, trained by online SGD."""

    def __init__(self, n_visible: int, hidden_ratio: float = 0.75, lr: float = 0.1):
        self.n_visible = n_visible
        self.n_hidden = n_hidden_for(n_visible, hidden_ratio)
        self.lr = lr
        self.n = 0
        self.norm_max = np.full(n_visible, -np.inf)
        self.norm_min = np.full(n_visible, np.inf)
        self.W = initial_weights(n_visible, self.n_hidden)
        self.hbias = np.zeros(self.n_hidden)
        self.vbias = np.zeros(n_visible)

    def _normalise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.norm_min) / (self.norm_max - self.norm_min + NORM_EPS)

    def train(self, x: np.ndarray) -> float:
        """One SGD step on x; returns the RMSE of its reconstruction before the step."""
        self.n += 1
        grow = x > self.norm_max
        self.norm_max[grow] = x[grow]
        shrink = x < self.norm_min
        self.norm_min[shrink] = x[shrink]
        x = self._normalise(x)
        y = sigmoid(np.dot(x, self.W) + self.hbias)
        z = sigmoid(np.dot(y, self.W.T) + self.vbias)
        L_h2 = x - z
        L_h1 = np.dot(L_h2, self.W) * y * (1 - y)
        L_W = np.outer(x, L_h1) + np.outer(L_h2, y)
        self.W += self.lr * L_W
        self.hbias += self.lr * L_h1
        self.vbias += self.lr * L_h2
        return float(np.sqrt(np.mean(L_h2**2)))

    def execute(self, x: np.ndarray) -> float:
        """RMSE of the reconstruction of x (no learning, no clipping)."""
        x = self._normalise(x)
        y = sigmoid(np.dot(x, self.W) + self.hbias)
        z = sigmoid(np.dot(y, self.W.T) + self.vbias)
        return float(np.sqrt(np.mean((x - z) ** 2)))


# --------------------------------------------------------------------------- KitNET


class KitNETSpec:
    """The reference KitNET, one sample per call."""

    def __init__(
        self,
        n_features: int,
        max_ae: int = 10,
        fm_grace: int = 5000,
        ad_grace: int = 50000,
        lr: float = 0.1,
        hidden_ratio: float = 0.75,
        feature_map: list[list[int]] | None = None,
    ):
        self.n_features = n_features
        self.max_ae = max_ae
        self.fm_grace = fm_grace
        self.ad_grace = ad_grace
        self.lr = lr
        self.hidden_ratio = hidden_ratio
        self.n_trained = 0
        self.n_executed = 0
        self.clusterer = CorrelationClusterer(n_features)
        self.feature_map: list[list[int]] | None = None
        self.ensemble: list[Autoencoder] = []
        self.output: Autoencoder | None = None
        if feature_map is not None:
            self.feature_map = [list(c) for c in feature_map]
            self._create_autoencoders()

    @classmethod
    def from_model(cls, model) -> KitNETSpec:
        """A spec instance with a trained :class:`lego.ext.kitnet.KitNET`'s parameters."""
        spec = cls(model.n_features, model.max_ae, model.fm_grace, model.ad_grace, model.lr,
                   model.hidden_ratio, feature_map=model.feature_map)
        for a, ae in enumerate([*spec.ensemble, spec.output]):
            for name, value in model.layer(a).items():
                setattr(ae, name, value)
        spec.n_trained, spec.n_executed = model.n_trained, model.n_executed
        return spec

    def _create_autoencoders(self) -> None:
        assert self.feature_map is not None
        self.ensemble = [Autoencoder(len(c), self.hidden_ratio, self.lr) for c in self.feature_map]
        self.output = Autoencoder(len(self.feature_map), self.hidden_ratio, self.lr)

    def process(self, x: np.ndarray) -> float:
        if self.n_trained > self.fm_grace + self.ad_grace:
            return self.execute(x)
        self.train(x)
        return 0.0

    def train(self, x: np.ndarray) -> None:
        if self.n_trained <= self.fm_grace and self.feature_map is None:
            self.clusterer.update(x)
            if self.n_trained == self.fm_grace:
                self.feature_map = self.clusterer.cluster(self.max_ae)
                self._create_autoencoders()
        else:
            assert self.output is not None and self.feature_map is not None
            S = np.zeros(len(self.ensemble))
            for a, ae in enumerate(self.ensemble):
                S[a] = ae.train(x[self.feature_map[a]])
            self.output.train(S)
        self.n_trained += 1

    def execute(self, x: np.ndarray) -> float:
        assert self.output is not None and self.feature_map is not None
        self.n_executed += 1
        S = np.zeros(len(self.ensemble))
        for a, ae in enumerate(self.ensemble):
            S[a] = ae.execute(x[self.feature_map[a]])
        return self.output.execute(S)
