"""KitNET kernels: correlation update and online training of the ensemble.

Scalar functions (one autoencoder, one sample) are ``nogil``; the ``def`` entry
points loop over the rows of a batch inside ``with nogil``. Every array is a
C-contiguous float64 (or int64) memoryview; results land in the buffers the
caller passes in (marked OUT or INOUT). The wrapper, ``kitnet.py``, checks
shapes and dtypes once per batch.

Packed model (all autoencoders in flat arrays): autoencoder ``a`` in ``0..k-1``
is the ensemble's ``a``-th, ``a == k`` is the output layer; it has
``nv = vis_off[a+1] - vis_off[a]`` inputs and ``nh = hid_off[a+1] - hid_off[a]``
hidden units. ``vbias``, ``norm_min``, ``norm_max`` are indexed from
``vis_off[a]``, ``hbias`` from ``hid_off[a]``, and its ``W`` (nv x nh, row-major)
starts at ``w_off[a]``. ``feat_idx[vis_off[a] + i]`` is the feature read by input
``i`` of ensemble member ``a`` (the concatenated feature map).

Exactness: the operations follow ``kitnet_spec.py`` in the same order. Sums
of a dot product run from the first term to the last; the mean of the squared
errors uses numpy's pairwise summation, so the RMSE is numpy's bit for bit.
"""

from libc.math cimport exp, sqrt
from libc.stdint cimport int64_t

cdef double NORM_EPS = 1e-16


cdef inline double _sigmoid(double v) noexcept nogil:
    return 1.0 / (1.0 + exp(-v))


cdef double pairwise_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """Sum of a[0..n) in the order of numpy's pairwise summation (add.reduce)."""
    cdef Py_ssize_t i, j, n2
    cdef double res
    cdef double r[8]
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        for j in range(8):
            r[j] = a[j]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2)


cdef inline double _rmse(const double* err, Py_ssize_t nv, double* sq) noexcept nogil:
    """sqrt(mean(err**2)) as numpy computes it (sq: nv doubles of scratch)."""
    cdef Py_ssize_t i
    for i in range(nv):
        sq[i] = err[i] * err[i]
    return sqrt((0.0 + pairwise_sum(sq, nv)) / <double>nv)


cdef inline void _forward(
    const double* xn, Py_ssize_t nv, Py_ssize_t nh, const double* W,
    const double* hbias, const double* vbias, double* y, double* z,
) noexcept nogil:
    """y = sigmoid(xn.W + hbias); z = sigmoid(y.W^T + vbias)."""
    cdef Py_ssize_t i, j
    cdef double acc
    cdef const double* Wi
    for j in range(nh):
        y[j] = 0.0
    for i in range(nv):
        Wi = W + i * nh
        for j in range(nh):
            y[j] += xn[i] * Wi[j]
    for j in range(nh):
        y[j] = _sigmoid(y[j] + hbias[j])
    for i in range(nv):
        Wi = W + i * nh
        acc = 0.0
        for j in range(nh):
            acc += y[j] * Wi[j]
        z[i] = _sigmoid(acc + vbias[i])


cdef double ae_train(
    const double* x,  # IN  nv: the raw input
    Py_ssize_t nv,
    Py_ssize_t nh,
    double* W,  # INOUT nv x nh
    double* hbias,  # INOUT nh
    double* vbias,  # INOUT nv
    double* norm_min,  # INOUT nv
    double* norm_max,  # INOUT nv
    double lr,
    double* xn,  # scratch nv
    double* y,  # scratch nh
    double* z,  # scratch nv
    double* lh2,  # scratch nv
    double* lh1,  # scratch nh
) noexcept nogil:
    """One SGD step of a tied-weight autoencoder; returns the RMSE before the step."""
    cdef Py_ssize_t i, j
    cdef double* Wi
    for i in range(nv):
        if x[i] > norm_max[i]:
            norm_max[i] = x[i]
        if x[i] < norm_min[i]:
            norm_min[i] = x[i]
        xn[i] = (x[i] - norm_min[i]) / (norm_max[i] - norm_min[i] + NORM_EPS)
    _forward(xn, nv, nh, W, hbias, vbias, y, z)
    for i in range(nv):
        lh2[i] = xn[i] - z[i]
    for j in range(nh):
        lh1[j] = 0.0
    for i in range(nv):
        Wi = W + i * nh
        for j in range(nh):
            lh1[j] += lh2[i] * Wi[j]
    for j in range(nh):
        lh1[j] = lh1[j] * y[j] * (1.0 - y[j])
    for i in range(nv):
        Wi = W + i * nh
        for j in range(nh):
            Wi[j] += lr * (xn[i] * lh1[j] + lh2[i] * y[j])
    for j in range(nh):
        hbias[j] += lr * lh1[j]
    for i in range(nv):
        vbias[i] += lr * lh2[i]
    return _rmse(lh2, nv, z)


cdef double ae_execute(
    const double* x,  # IN nv: the raw input
    Py_ssize_t nv,
    Py_ssize_t nh,
    const double* W,  # IN nv x nh
    const double* hbias,  # IN nh
    const double* vbias,  # IN nv
    const double* norm_min,  # IN nv
    const double* norm_max,  # IN nv
    double* xn,  # scratch nv
    double* y,  # scratch nh
    double* z,  # scratch nv
) noexcept nogil:
    """RMSE of the reconstruction of x with the learned normalisation."""
    cdef Py_ssize_t i
    for i in range(nv):
        xn[i] = (x[i] - norm_min[i]) / (norm_max[i] - norm_min[i] + NORM_EPS)
    _forward(xn, nv, nh, W, hbias, vbias, y, z)
    for i in range(nv):
        z[i] = xn[i] - z[i]
    return _rmse(z, nv, z)


def corr_update(
    const double[:, ::1] X,  # IN  rows x n
    double[::1] c,  # INOUT n: sum of the samples
    double[::1] c_r,  # INOUT n: sum of the residuals
    double[::1] c_rs,  # INOUT n: sum of the squared residuals
    double[:, ::1] C,  # INOUT n x n: sum of the residuals' outer products
    double[::1] c_rt,  # scratch n
    int64_t n_seen,  # samples seen before X
) -> None:
    """The correlation clusterer's update, once per row of X."""
    cdef Py_ssize_t rows = X.shape[0], n = X.shape[1], r, i, j
    cdef double N, ri
    with nogil:
        for r in range(rows):
            N = <double>(n_seen + r + 1)
            for i in range(n):
                c[i] += X[r, i]
                c_rt[i] = X[r, i] - c[i] / N
                c_r[i] += c_rt[i]
                c_rs[i] += c_rt[i] * c_rt[i]
            for i in range(n):
                ri = c_rt[i]
                for j in range(n):
                    C[i, j] += ri * c_rt[j]


def train_rows(
    const double[:, ::1] X,  # IN  rows x n_features
    const int64_t[::1] feat_idx,  # IN  concatenated feature map
    const int64_t[::1] vis_off,  # IN  k + 2
    const int64_t[::1] hid_off,  # IN  k + 2
    const int64_t[::1] w_off,  # IN  k + 2
    double[::1] W,  # INOUT
    double[::1] hbias,  # INOUT
    double[::1] vbias,  # INOUT
    double[::1] norm_min,  # INOUT
    double[::1] norm_max,  # INOUT
    double lr,
    double[::1] work,  # scratch: 4 * max_nv + 2 * max_nh + k
    double[::1] out,  # OUT rows: the output layer's training RMSE
) -> None:
    """Online training: every ensemble member, then the output layer, per row."""
    cdef Py_ssize_t k = vis_off.shape[0] - 2
    cdef Py_ssize_t rows = X.shape[0], r, a, i, nv, nh, v0, h0
    cdef Py_ssize_t max_v = 0, max_h = 0
    for a in range(k + 1):
        max_v = max(max_v, vis_off[a + 1] - vis_off[a])
        max_h = max(max_h, hid_off[a + 1] - hid_off[a])
    if work.shape[0] < 4 * max_v + 2 * max_h + k:
        raise ValueError("train_rows: work buffer too small")
    cdef double* xg = &work[0]
    cdef double* xn = xg + max_v
    cdef double* z = xn + max_v
    cdef double* lh2 = z + max_v
    cdef double* y = lh2 + max_v
    cdef double* lh1 = y + max_h
    cdef double* S = lh1 + max_h
    with nogil:
        for r in range(rows):
            for a in range(k + 1):
                v0 = vis_off[a]
                h0 = hid_off[a]
                nv = vis_off[a + 1] - v0
                nh = hid_off[a + 1] - h0
                if a < k:
                    for i in range(nv):
                        xg[i] = X[r, feat_idx[v0 + i]]
                    S[a] = ae_train(xg, nv, nh, &W[w_off[a]], &hbias[h0], &vbias[v0],
                                    &norm_min[v0], &norm_max[v0], lr, xn, y, z, lh2, lh1)
                else:
                    out[r] = ae_train(S, nv, nh, &W[w_off[a]], &hbias[h0], &vbias[v0],
                                      &norm_min[v0], &norm_max[v0], lr, xn, y, z, lh2, lh1)


def execute_rows(
    const double[:, ::1] X,  # IN  rows x n_features
    const int64_t[::1] feat_idx,  # IN  concatenated feature map
    const int64_t[::1] vis_off,  # IN  k + 2
    const int64_t[::1] hid_off,  # IN  k + 2
    const int64_t[::1] w_off,  # IN  k + 2
    const double[::1] W,  # IN
    const double[::1] hbias,  # IN
    const double[::1] vbias,  # IN
    const double[::1] norm_min,  # IN
    const double[::1] norm_max,  # IN
    double[::1] work,  # scratch: 4 * max_nv + 2 * max_nh + k
    double[::1] out,  # OUT rows: the score (output layer's RMSE)
) -> None:
    """Execution, one row at a time (the per-row form of the batched numpy path)."""
    cdef Py_ssize_t k = vis_off.shape[0] - 2
    cdef Py_ssize_t rows = X.shape[0], r, a, i, nv, nh, v0, h0
    cdef Py_ssize_t max_v = 0, max_h = 0
    for a in range(k + 1):
        max_v = max(max_v, vis_off[a + 1] - vis_off[a])
        max_h = max(max_h, hid_off[a + 1] - hid_off[a])
    if work.shape[0] < 4 * max_v + 2 * max_h + k:
        raise ValueError("execute_rows: work buffer too small")
    cdef double* xg = &work[0]
    cdef double* xn = xg + max_v
    cdef double* z = xn + max_v
    cdef double* y = z + 2 * max_v
    cdef double* S = y + 2 * max_h
    with nogil:
        for r in range(rows):
            for a in range(k + 1):
                v0 = vis_off[a]
                h0 = hid_off[a]
                nv = vis_off[a + 1] - v0
                nh = hid_off[a + 1] - h0
                if a < k:
                    for i in range(nv):
                        xg[i] = X[r, feat_idx[v0 + i]]
                    S[a] = ae_execute(xg, nv, nh, &W[w_off[a]], &hbias[h0], &vbias[v0],
                                      &norm_min[v0], &norm_max[v0], xn, y, z)
                else:
                    out[r] = ae_execute(S, nv, nh, &W[w_off[a]], &hbias[h0], &vbias[v0],
                                        &norm_min[v0], &norm_max[v0], xn, y, z)


def map_rows(
    const double[:, ::1] X,  # IN  rows x n_features
    const int64_t[::1] feat_idx,  # IN  concatenated feature map (ensemble members only)
    const int64_t[::1] vis_off,  # IN  k + 1 (or more: only the first k members are mapped)
    const double[::1] norm_min,  # IN  indexed like feat_idx
    const double[::1] denom,  # IN  norm_max - norm_min + NORM_EPS, indexed like feat_idx
    double[::1] out,  # OUT rows * vis_off[k]: member a's block (rows x nv_a) from rows * vis_off[a]
) -> None:
    """Feature mapping: each ensemble member's min-max normalised inputs, one pass
    over the rows (gather and normalise fused; ``(x - min) / denom`` as numpy)."""
    cdef Py_ssize_t k = vis_off.shape[0] - 1
    cdef Py_ssize_t rows = X.shape[0], r, a, i, nv, v0
    cdef double* block
    if feat_idx.shape[0] < vis_off[k] or norm_min.shape[0] < vis_off[k] \
            or denom.shape[0] < vis_off[k] or out.shape[0] < rows * vis_off[k]:
        raise ValueError("map_rows: arrays shorter than the feature map")
    for i in range(vis_off[k]):
        if not 0 <= feat_idx[i] < X.shape[1]:
            raise ValueError(f"map_rows: feature id {feat_idx[i]} out of range")
    with nogil:
        for r in range(rows):
            for a in range(k):
                v0 = vis_off[a]
                nv = vis_off[a + 1] - v0
                block = &out[rows * v0 + r * nv]
                for i in range(nv):
                    block[i] = (X[r, feat_idx[v0 + i]] - norm_min[v0 + i]) / denom[v0 + i]
