# Kernels of KitNET (see _kitnet.pyx); scalar functions other kernels may cimport.

cdef double pairwise_sum(const double* a, Py_ssize_t n) noexcept nogil

cdef double ae_train(
    const double* x,
    Py_ssize_t nv,
    Py_ssize_t nh,
    double* W,
    double* hbias,
    double* vbias,
    double* norm_min,
    double* norm_max,
    double lr,
    double* xn,
    double* y,
    double* z,
    double* lh2,
    double* lh1,
) noexcept nogil

cdef double ae_execute(
    const double* x,
    Py_ssize_t nv,
    Py_ssize_t nh,
    const double* W,
    const double* hbias,
    const double* vbias,
    const double* norm_min,
    const double* norm_max,
    double* xn,
    double* y,
    double* z,
) noexcept nogil
