"""LUCID's CNN (Doriguzzi-Corin et al., IEEE TNSM 2020) in numpy: inference, training, files.

A sample is one flow fragment, ``n`` packets by ``f`` features (11 in LUCID) in [0, 1],
zero-padded. The model is the reference's ``Conv2DModel``: k filters of h x f ("valid",
stride 1, so each filter spans every feature), ReLU, a global max over the n-h+1
positions, Dense(1) and a sigmoid; a fragment is an attack when its probability > 0.5.

:meth:`LucidCNN.forward` is the fast path: the convolution is ONE matrix product of the
unfolded windows (a strided view, ``F*(n-h+1)`` rows by ``h*f``) with the filters, in
blocks of windows that keep the temporaries in cache. It runs in float32 by default:
the precision Keras trains and serves LUCID in, and faster than float64 (make bench's
"lucid cnn inference" row; docs/lucid.md has the figure). float64 is the exact path,
which :func:`forward_spec` (loops, slow, obviously correct) checks to rounding. Bias
and ReLU are applied after the max over positions: both are monotone per filter, so
the result is the same, bit for bit, for k additions instead of (n-h+1)*k.

:func:`train` is the reference's training (binary cross-entropy, Adam with Keras's
constants, Glorot-uniform weights, zero biases, dropout on the convolution's output as
the reference places it, early stopping on validation loss), with backpropagation by
hand, in float64, reproducible from one seed.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lego.errors import ConfigError, ModelError

FORMAT_KIND, FORMAT_VERSION = "lego.lucid.cnn", 1
#: Windows per block in :meth:`LucidCNN.forward`: the unfolded block and its
#: (windows x k) product stay in cache (measured: 8x larger blocks run 1.2-1.8x slower).
BLOCK_WINDOWS = 4096
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-7  # Keras's Adam defaults


def sigmoid(s: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-s)) without overflow: exp(-log(1 + exp(-s)))."""
    return np.exp(-np.logaddexp(0.0, -s))


def _windows(X: np.ndarray, h: int) -> np.ndarray:
    """(F, n, f) -> a (F, n-h+1, h*f) view: window p of fragment i is X[i, p:p+h].ravel()."""
    F, n, f = X.shape
    return sliding_window_view(X, (h, f), axis=(1, 2))[:, :, 0].reshape(F, n - h + 1, h * f)


def _max_over_positions(Z: np.ndarray, out: np.ndarray) -> None:
    """out = Z.max(axis=1) for Z (F, P, k); a loop over the P positions, since numpy's
    reduction over a middle axis does not vectorise along k (4x slower, measured)."""
    np.copyto(out, Z[:, 0])
    for p in range(1, Z.shape[1]):
        np.maximum(out, Z[:, p], out=out)


@dataclass(eq=False)
class LucidCNN:
    """Weights W (h*f, k): column c is filter c, row i*f + j its weight for packet i of
    the window and feature j; b (k,); w_out (k,), b_out: the dense layer. ``n``: packets
    per fragment the model was trained on (predict checks the data against it);
    ``window``: the time window t (s) its inputs were extracted and scaled with."""

    n: int
    h: int
    W: np.ndarray
    b: np.ndarray
    w_out: np.ndarray
    b_out: float
    window: float = 10.0

    def __post_init__(self) -> None:
        self.W, self.b, self.w_out = (np.ascontiguousarray(a, dtype=np.float64)
                                      for a in (self.W, self.b, self.w_out))
        self.b_out = float(self.b_out)
        if not 1 <= self.h <= self.n:
            raise ConfigError(f"LucidCNN: expected 1 <= h <= n, got h={self.h}, n={self.n}")
        k = self.W.shape[1] if self.W.ndim == 2 else -1
        if k < 1 or self.W.shape[0] % self.h or self.b.shape != (k,) or self.w_out.shape != (k,):
            raise ConfigError(f"LucidCNN: expected W (h*f, k) with h={self.h}, b (k,), w_out "
                              f"(k,), got {self.W.shape}, {self.b.shape}, {self.w_out.shape}")

    @property
    def k(self) -> int:
        return self.W.shape[1]

    @property
    def n_features(self) -> int:
        return self.W.shape[0] // self.h

    def check_input(self, X: np.ndarray, who: str = "LucidCNN") -> np.ndarray:
        """X as a C-contiguous float array of shape (F, n, f); ConfigError otherwise."""
        X = np.asarray(X)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        if X.ndim != 3 or X.shape[2] != self.n_features:
            raise ConfigError(f"{who}: expected fragments (F, n, {self.n_features}), "
                              f"got shape {X.shape}")
        if X.shape[1] < self.h:
            raise ConfigError(f"{who}: a fragment needs at least h={self.h} rows (packets), "
                              f"got n={X.shape[1]}")
        if X.shape[1] != self.n:
            raise ConfigError(f"{who}: the model was trained on n={self.n} packets per "
                              f"fragment, got n={X.shape[1]}")
        return np.ascontiguousarray(X)

    def forward(self, X: np.ndarray, *, dtype: type = np.float32,
                block: int = BLOCK_WINDOWS) -> np.ndarray:
        """Probability of attack of each fragment (F,), float64; ``dtype`` of the
        convolution. A fragment's probability has the same bits however the fragments
        are batched (one product per fragment: stacked matmuls of one shape, where one
        GEMM over a whole block rounds a row by where it sits), so that replicas fed
        any share of the fragments give one instance's answers. That holds for a BLAS
        whose small products do not depend on their operands' alignment (OpenBLAS
        packs them; tests/test_lucid_cnn.py checks the one installed)."""
        X = self.check_input(X, "LucidCNN.forward")
        F, P, d, k = len(X), self.n - self.h + 1, self.W.shape[0], self.k
        rows = max(1, block // P)
        W = self.W.astype(dtype, copy=False)
        w_out = np.ascontiguousarray(self.w_out[:, None])
        U, Z = np.empty((rows, P, d), dtype), np.empty((rows, P, k), dtype)
        M, logit = np.empty((rows, k), dtype), np.empty((F, 1, 1))
        for s in range(0, F, rows):
            c = min(rows, F - s)
            np.copyto(U[:c], _windows(X[s:s + c], self.h))
            np.matmul(U[:c], W, out=Z[:c])
            _max_over_positions(Z[:c], M[:c])
            hidden = np.maximum(M[:c] + self.b, 0.0)[:, None, :]
            np.matmul(hidden, w_out, out=logit[s:s + c])
        return sigmoid(logit[:, 0, 0] + self.b_out)

    def predict(self, X: np.ndarray, *, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(probability, decision = probability > 0.5) of each fragment."""
        prob = self.forward(X, dtype=dtype)
        return prob, prob > 0.5

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as a versioned ``.npz``, atomically."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, kind=np.array(FORMAT_KIND), format_version=np.int64(FORMAT_VERSION),
                         n=np.int64(self.n), h=np.int64(self.h), W=self.W, b=self.b,
                         w_out=self.w_out, b_out=np.float64(self.b_out),
                         window=np.float64(self.window))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> LucidCNN:
        """Read a model written by :meth:`save`; ModelError naming the path otherwise."""
        try:
            with np.load(path, allow_pickle=False) as z:
                a = {name: z[name] for name in z.files}
        except FileNotFoundError as exc:
            raise ModelError(f"{path}: no such model file") from exc
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{path}: not a LUCID model file (.npz): {exc}") from exc
        kind, version = (np.asarray(a.get(key, "")).tolist() for key in ("kind", "format_version"))
        if kind != FORMAT_KIND or version != FORMAT_VERSION:
            raise ModelError(f"{path}: expected a {FORMAT_KIND!r} model of format version "
                             f"{FORMAT_VERSION}, got kind {kind!r} version {version!r}")
        missing = {"n", "h", "W", "b", "w_out", "b_out", "window"} - a.keys()
        if missing:
            raise ModelError(f"{path}: missing fields {sorted(missing)}")
        try:
            m = cls(int(a["n"]), int(a["h"]), a["W"], a["b"], a["w_out"], float(a["b_out"]),
                    float(a["window"]))
        except (ConfigError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: inconsistent model: {exc}") from exc
        if not all(np.isfinite(w).all() for w in (m.W, m.b, m.w_out, m.b_out)):
            raise ModelError(f"{path}: weights: expected finite values, got NaN or inf")
        return m


def forward_spec(model: LucidCNN, X: np.ndarray) -> np.ndarray:
    """The specification of :meth:`LucidCNN.forward`: loops over fragments, positions and
    filters, each activation an exactly rounded sum (math.fsum), ReLU before the max."""
    X = model.check_input(X, "forward_spec").astype(np.float64)
    h, f = model.h, model.n_features
    prob = np.empty(len(X))
    for i in range(len(X)):
        pooled = [0.0] * model.k
        for c in range(model.k):
            for p in range(model.n - h + 1):
                z = math.fsum([model.b[c]] + [X[i, p + r, j] * model.W[r * f + j, c]
                                              for r in range(h) for j in range(f)])
                pooled[c] = max(pooled[c], z)  # ReLU and max: pooled starts at 0
        s = math.fsum([model.b_out] + [pooled[c] * model.w_out[c] for c in range(model.k)])
        prob[i] = 1.0 / (1.0 + math.exp(-s)) if s >= 0 else math.exp(s) / (1.0 + math.exp(s))
    return prob


def loss_and_grads(model: LucidCNN, X: np.ndarray, y: np.ndarray, *, dropout: float = 0.0,
                   rng: np.random.Generator | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """Mean binary cross-entropy of (X, y) and its gradient w.r.t. W, b, w_out, b_out
    (float64). ``dropout`` > 0 zeroes each convolution output with that probability
    (and scales the rest by 1/(1 - dropout)), drawing the mask from ``rng``."""
    X = model.check_input(X, "loss_and_grads").astype(np.float64, copy=False)
    F, P, d, k = len(X), model.n - model.h + 1, model.W.shape[0], model.k
    U = _windows(X, model.h).reshape(F * P, d)  # one copy: dW needs it
    Z = (U @ model.W + model.b).reshape(F, P, k)
    mask = (rng.random(Z.shape) >= dropout) / (1.0 - dropout) if dropout > 0 else None
    if mask is not None:
        Z *= mask
    arg = Z.argmax(axis=1)[:, None, :]  # (F, 1, k): each filter's winning position
    z_max = np.take_along_axis(Z, arg, axis=1)[:, 0]
    pooled = np.maximum(z_max, 0.0)
    s = pooled @ model.w_out + model.b_out
    loss = float(np.mean(np.logaddexp(0.0, s) - y * s))
    g_s = (sigmoid(s) - y) / F
    g_pool = np.outer(g_s, model.w_out) * (z_max > 0)
    if mask is not None:  # d(masked Z)/dZ at the winning position: that element's mask
        g_pool *= np.take_along_axis(mask, arg, axis=1)[:, 0]
    dZ = np.zeros_like(Z)
    np.put_along_axis(dZ, arg, g_pool[:, None, :], axis=1)
    grads = {"W": U.T @ dZ.reshape(F * P, k), "b": g_pool.sum(axis=0),
             "w_out": pooled.T @ g_s, "b_out": np.array(g_s.sum())}
    return loss, grads


@dataclass
class History:
    """Per-epoch training loss (mean over batches, dropout on), validation loss and
    accuracy, and the epoch (0-based) whose weights :func:`train` returned."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1


def glorot_model(n: int, h: int, f: int, k: int, rng: np.random.Generator) -> LucidCNN:
    """Keras's initial model: Glorot-uniform conv (fan_in h*f, fan_out h*f*k) and dense
    (fan_in k, fan_out 1) weights, zero biases."""
    lim_conv, lim_out = math.sqrt(6.0 / (h * f + h * f * k)), math.sqrt(6.0 / (k + 1))
    W = rng.uniform(-lim_conv, lim_conv, size=(h * f, k))
    return LucidCNN(n, h, W, np.zeros(k), rng.uniform(-lim_out, lim_out, size=k), 0.0)


def _split(X, y, validation, rng) -> tuple[np.ndarray, ...]:
    if isinstance(validation, tuple):
        Xv, yv = np.asarray(validation[0]), np.asarray(validation[1], dtype=np.float64)
        if yv.shape != (len(Xv),) or not len(Xv):
            raise ConfigError(f"train.validation: expected (Xv, yv) of F > 0 fragments and F "
                              f"labels, got {Xv.shape} and {yv.shape}")
        return X, y, Xv, yv
    if not 0.0 < validation < 1.0:
        raise ConfigError(f"train.validation: expected (Xv, yv) or a fraction in (0, 1), "
                          f"got {validation!r}")
    perm = rng.permutation(len(X))
    n_val = int(round(validation * len(X)))
    if not 0 < n_val < len(X):
        raise ConfigError(f"train.validation: a fraction {validation} of {len(X)} fragments "
                          f"leaves a set empty")
    return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]


def train(X: np.ndarray, y: np.ndarray, *, k: int = 64, h: int = 3, lr: float = 0.01,
          batch: int = 1024, epochs: int = 1000, dropout: float = 0.0, seed: int = 0,
          validation: float | tuple[np.ndarray, np.ndarray] = 0.1,
          patience: int = 10, window: float = 10.0) -> tuple[LucidCNN, History]:
    """Train LUCID's CNN on fragments X (F, n, f) labelled y (1 = attack); returns the
    weights of the epoch with the lowest validation loss, and the history. Training
    stops after ``patience`` epochs without a lower validation loss (Keras's
    EarlyStopping) or after ``epochs``. The defaults are the reference's (its
    MAX epochs 1000, PATIENCE 10, k 64, h 3, lr 0.01, batch 1024; dropout off)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 3 or y.shape != (len(X),) or not np.isin(y, (0.0, 1.0)).all():
        raise ConfigError(f"train: expected X (F, n, f) and labels y (F,) of 0/1, got X "
                          f"{X.shape}, y {y.shape} with values {np.unique(y)[:4]}")
    if not 0.0 <= dropout < 1.0 or batch < 1 or epochs < 1 or patience < 1:
        raise ConfigError(f"train: expected 0 <= dropout < 1 and batch, epochs, patience >= 1,"
                          f" got {dropout}, {batch}, {epochs}, {patience}")
    rng = np.random.default_rng(seed)
    model = glorot_model(X.shape[1], h, X.shape[2], k, rng)
    Xt, yt, Xv, yv = _split(X, y, validation, rng)
    Xv = model.check_input(Xv, "train.validation").astype(np.float64)
    b_out = np.array(model.b_out)
    params = {"W": model.W, "b": model.b, "w_out": model.w_out, "b_out": b_out}
    m1 = {name: np.zeros_like(p) for name, p in params.items()}
    m2 = {name: np.zeros_like(p) for name, p in params.items()}
    hist, best, best_loss, step = History(), None, math.inf, 0
    for epoch in range(epochs):
        perm, total = rng.permutation(len(Xt)), 0.0
        for s in range(0, len(Xt), batch):
            idx = perm[s:s + batch]
            loss, grads = loss_and_grads(model, Xt[idx], yt[idx], dropout=dropout, rng=rng)
            total += loss * len(idx)
            step += 1
            a = lr * math.sqrt(1.0 - ADAM_BETA2 ** step) / (1.0 - ADAM_BETA1 ** step)
            for name, p in params.items():
                g = grads[name]
                m1[name] += (1.0 - ADAM_BETA1) * (g - m1[name])
                m2[name] += (1.0 - ADAM_BETA2) * (g * g - m2[name])
                p -= a * m1[name] / (np.sqrt(m2[name]) + ADAM_EPS)
            model.b_out = float(b_out)
        prob = model.forward(Xv, dtype=np.float64)
        val_loss = float(np.mean(_bce(prob, yv)))
        hist.train_loss.append(total / len(Xt))
        hist.val_loss.append(val_loss)
        hist.val_accuracy.append(float(np.mean((prob > 0.5) == (yv == 1))))
        if epoch == 0 or val_loss < best_loss:  # epoch 0: a model even if the loss is NaN
            best_loss, hist.best_epoch = val_loss, epoch
            best = LucidCNN(model.n, h, model.W.copy(), model.b.copy(), model.w_out.copy(),
                            model.b_out, window)
        elif epoch - hist.best_epoch >= patience:
            break
    return best, hist


def _bce(prob: np.ndarray, y: np.ndarray, eps: float = ADAM_EPS) -> np.ndarray:
    """Binary cross-entropy of probabilities, clipped to [eps, 1 - eps] as Keras does."""
    p = np.clip(prob, eps, 1.0 - eps)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def metrics(y_true: np.ndarray, decision: np.ndarray,
            prob: np.ndarray | None = None) -> dict[str, float]:
    """LUCID's report: counts, accuracy, precision (PPV), recall (TPR), FPR, TNR, FNR,
    F1 and, given the probabilities, the cross-entropy loss; a ratio whose denominator
    is 0 is NaN."""
    y, d = np.asarray(y_true).astype(bool), np.asarray(decision).astype(bool)
    if y.shape != d.shape:
        raise ConfigError(f"metrics: expected y_true and decision of one shape, got "
                          f"{y.shape} and {d.shape}")
    tp, fp = int(np.sum(y & d)), int(np.sum(~y & d))
    tn, fn = int(np.sum(~y & ~d)), int(np.sum(y & ~d))

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    out = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": ratio(tp + tn, y.size),
           "precision": precision, "recall": recall, "tpr": recall, "fpr": ratio(fp, fp + tn),
           "tnr": ratio(tn, fp + tn), "fnr": ratio(fn, tp + fn),
           "f1": ratio(2 * tp, 2 * tp + fp + fn)}
    if prob is not None:
        out["loss"] = float(np.mean(_bce(np.asarray(prob, dtype=np.float64), y)))
    return out
