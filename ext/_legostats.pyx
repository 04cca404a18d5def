# distutils: extra_compile_args = -ffp-contract=off
"""Kernel of the ``lego`` feature semantics (the definition: ``legostats_spec.py``).

Five keyed tables (MI, H, jitter: 1-D streams; channel, socket: pairs of directed
streams with their covariance), each a dense entry store with an open-addressing
index (see ``Table`` below). Keys are built here, in C, from the
batch's fixed-size fields as uint64 words whose lexicographic order is the
specification's tuple order:

- address   = [family, addr[0:8] big-endian, addr[8:16] big-endian]
- endpoint  = [proto << 8 | family, hi, lo, port (ARP: the Ethernet MAC)]
- MI        = [srcMAC << 8 | family, hi, lo]
- jitter    = src address + dst address (directed)
- channel   = the two addresses, ascending; socket = the two endpoints, ascending

Exactness: every floating-point operation follows the spec in the same order
(no fast-math, no FMA contraction), so rows are bit-identical to the spec's.
``2 ** (-lambda * dt)`` is ``pow(2.0, -lambda * dt)``, cached per ``dt``.

No allocation happens inside the nogil loop: ``LegoState.process`` reserves room
for a chunk of packets (one new key per table per packet at most) with the GIL,
then runs the chunk without it, so a MemoryError leaves the state untouched.

West-east state moves (``export_entries``, ``import_entries``, ``drop_entries``):
every entry is owned by the switch bucket of the addresses in its key (MI, H,
jitter: the source; channel, socket: both ends), ``crc32([family][16 address
bytes]) % 1024`` (``owner_bucket``, the CRC-32 of zlib, table-driven here).
"""

from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.math cimport fabs, pow, sqrt
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

import numpy as np

cdef enum:
    NL = 5            # lambdas
    S1_VW = 16        # 1-D stream: lastT, then per lambda (CF1, CF2, w)
    P_VW = 53         # pair: side 0 stream, side 1 stream, lastT3, per lambda (CF3, w3, res0, res1)
    P_T3 = 32         # offset of lastT3 in a pair
    MAX_KW = 8        # most key words (socket pair: two 4-word endpoints)
    N_TABLES = 5

# One keyed table: a dense entry store (slot e in 0..n-1 owns keys[e*kw:(e+1)*kw],
# hashes[e], vals[e*vw:(e+1)*vw], flags[e]) and an open-addressing index over it
# (linear probing; a slot holds (hash >> 32) << 32 | (e + 1), 0 when empty). State
# lives in flat arrays indexed by slot, so a set of keys can be copied out and in.
ctypedef struct Table:
    Py_ssize_t kw          # key words (uint64)
    Py_ssize_t vw          # value doubles per entry
    Py_ssize_t age_col     # column of vals holding the entry's last update time
    Py_ssize_t n           # live entries
    Py_ssize_t cap         # entry capacity
    Py_ssize_t imask       # index size - 1 (a power of two minus one)
    uint64_t* keys
    uint64_t* hashes
    double* vals
    uint8_t* flags         # pairs: bit s set when side s has seen a packet
    uint64_t* index
    Py_ssize_t sweep_pos   # cursor of the incremental idle sweep
    # monotonic counters
    uint64_t probes        # index slots examined by lookups
    uint64_t created
    uint64_t evicted
    uint64_t updates       # lookups
    uint64_t moved         # entries re-inserted by index growth
    uint64_t imported      # entries inserted by import_entries
    uint64_t dropped       # entries removed by drop_entries

cdef double W_INIT = 1e-20
cdef double[5] LAMBDA = [5.0, 3.0, 1.0, 0.1, 0.01]

# column offsets of each group in a feature row
cdef enum:
    COL_MI = 0
    COL_H = 15
    COL_CHANNEL = 30
    COL_JITTER = 65
    COL_SOCKET = 80
    N_COLS = 115
    T_MI = 0
    T_H = 1
    T_CHANNEL = 2
    T_JITTER = 3
    T_SOCKET = 4
    PROTO_ARP = 1
    CHUNK = 4096
    OWNER_BUCKETS = 1024

TABLE_NAMES = ("MI", "H", "channel", "jitter", "socket")


# ---------------------------------------------------------------- hashing ----

cdef inline uint64_t _mix(uint64_t x) noexcept nogil:
    # the splitmix64 finaliser: a bijection with full avalanche
    x ^= x >> 30
    x *= 0xbf58476d1ce4e5b9ULL
    x ^= x >> 27
    x *= 0x94d049bb133111ebULL
    x ^= x >> 31
    return x


cdef uint64_t hash_key(const uint64_t* key, Py_ssize_t kw, uint64_t seed) noexcept nogil:
    cdef uint64_t h = _mix(seed + <uint64_t>kw)
    cdef Py_ssize_t i
    for i in range(kw):
        h = _mix(h ^ key[i])
    return h


cdef inline uint64_t _be64(const uint8_t* p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline int _cmp_words(const uint64_t* a, const uint64_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != b[i]:
            return -1 if a[i] < b[i] else 1
    return 0


# ------------------------------------------------------------ owner bucket ----

cdef uint32_t CRC32_TABLE[256]


cdef void _crc32_init() noexcept nogil:
    # CRC-32/ISO-HDLC (zlib.crc32): reflected polynomial 0xEDB88320
    cdef uint32_t c
    cdef int i, j
    for i in range(256):
        c = <uint32_t>i
        for j in range(8):
            c = (c >> 1) ^ 0xEDB88320U if c & 1 else c >> 1
        CRC32_TABLE[i] = c


_crc32_init()


cdef inline uint32_t _crc_word(uint32_t c, uint64_t w) noexcept nogil:
    """Feed the 8 bytes of w, most significant first."""
    cdef int s
    for s in range(56, -8, -8):
        c = CRC32_TABLE[(c ^ <uint32_t>(w >> s)) & 0xFF] ^ (c >> 8)
    return c


cdef Py_ssize_t owner_bucket(uint8_t family, const uint8_t* addr) noexcept nogil:
    cdef uint32_t c = CRC32_TABLE[(0xFFFFFFFFU ^ family) & 0xFF] ^ (0xFFFFFFFFU >> 8)
    c = _crc_word(c, _be64(addr))
    c = _crc_word(c, _be64(addr + 8))
    return <Py_ssize_t>((c ^ 0xFFFFFFFFU) % OWNER_BUCKETS)


cdef inline Py_ssize_t _word_bucket(const uint64_t* a) noexcept nogil:
    """Owner bucket of an address held as key words [.. family, hi, lo]: the low
    byte of a[0] is the family (MI and endpoints keep other fields above it)."""
    cdef uint32_t c = CRC32_TABLE[(0xFFFFFFFFU ^ <uint32_t>(a[0] & 0xFF)) & 0xFF] \
        ^ (0xFFFFFFFFU >> 8)
    c = _crc_word(c, a[1])
    c = _crc_word(c, a[2])
    return <Py_ssize_t>((c ^ 0xFFFFFFFFU) % OWNER_BUCKETS)


# key word offsets of the owner addresses, per table (MI, H, channel, jitter, socket)
cdef Py_ssize_t[5] OWNERS_N = [1, 1, 2, 1, 2]
cdef Py_ssize_t[5] OWNER_OFF_1 = [0, 0, 3, 0, 4]


cdef inline bint _owned_in(const uint64_t* key, int tid, const uint8_t* mask) noexcept nogil:
    """True when an owner bucket of the key is set in mask (uint8[OWNER_BUCKETS])."""
    if mask[_word_bucket(key)]:
        return True
    return OWNERS_N[tid] == 2 and mask[_word_bucket(key + OWNER_OFF_1[tid])] != 0


# ----------------------------------------------------------------- tables ----

cdef int table_init(Table* T, Py_ssize_t kw, Py_ssize_t vw, Py_ssize_t age_col) noexcept nogil:
    memset(T, 0, sizeof(Table))
    T.kw = kw
    T.vw = vw
    T.age_col = age_col
    T.index = <uint64_t*>PyMem_RawMalloc(16 * sizeof(uint64_t))
    if T.index == NULL:
        return -1
    memset(T.index, 0, 16 * sizeof(uint64_t))
    T.imask = 15
    return 0


cdef void table_free(Table* T) noexcept nogil:
    PyMem_RawFree(T.keys)
    PyMem_RawFree(T.hashes)
    PyMem_RawFree(T.vals)
    PyMem_RawFree(T.flags)
    PyMem_RawFree(T.index)
    T.keys = NULL
    T.hashes = NULL
    T.vals = NULL
    T.flags = NULL
    T.index = NULL
    T.n = 0
    T.cap = 0


cdef inline void _index_put(Table* T, uint64_t h, Py_ssize_t e) noexcept nogil:
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>T.imask)
    while T.index[i] != 0:
        i = (i + 1) & T.imask
    T.index[i] = ((h >> 32) << 32) | <uint64_t>(e + 1)


cdef int table_reserve(Table* T, Py_ssize_t need) noexcept nogil:
    """Make room for ``need`` entries, keeping the index at most half full."""
    cdef Py_ssize_t cap, isize, e
    cdef void* p
    cdef uint64_t* index
    if need > T.cap:
        cap = T.cap if T.cap > 0 else 64
        while cap < need:
            cap *= 2
        p = PyMem_RawRealloc(T.keys, cap * T.kw * sizeof(uint64_t))
        if p == NULL:
            return -1
        T.keys = <uint64_t*>p
        p = PyMem_RawRealloc(T.hashes, cap * sizeof(uint64_t))
        if p == NULL:
            return -1
        T.hashes = <uint64_t*>p
        p = PyMem_RawRealloc(T.vals, cap * T.vw * sizeof(double))
        if p == NULL:
            return -1
        T.vals = <double*>p
        p = PyMem_RawRealloc(T.flags, cap * sizeof(uint8_t))
        if p == NULL:
            return -1
        T.flags = <uint8_t*>p
        T.cap = cap
    isize = T.imask + 1
    if 2 * need > isize:
        while 2 * need > isize:
            isize *= 2
        index = <uint64_t*>PyMem_RawMalloc(isize * sizeof(uint64_t))
        if index == NULL:
            return -1
        memset(index, 0, isize * sizeof(uint64_t))
        PyMem_RawFree(T.index)
        T.index = index
        T.imask = isize - 1
        for e in range(T.n):
            _index_put(T, T.hashes[e], e)
        T.moved += <uint64_t>T.n
    return 0


cdef Py_ssize_t table_lookup(Table* T, const uint64_t* key, uint64_t h, double t,
                             double evict_idle, bint* fresh) noexcept nogil:
    """The entry of key, added if absent (room reserved beforehand). ``fresh`` says
    that its values must be (re)initialised: new, or idle for over evict_idle."""
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>T.imask)
    cdef uint64_t tag = h >> 32
    cdef uint64_t s
    cdef Py_ssize_t e
    T.updates += 1
    while True:
        T.probes += 1
        s = T.index[i]
        if s == 0:
            break
        if (s >> 32) == tag:
            e = <Py_ssize_t>(s & 0xffffffffULL) - 1
            if memcmp(T.keys + e * T.kw, key, T.kw * sizeof(uint64_t)) == 0:
                if evict_idle > 0 and t - T.vals[e * T.vw + T.age_col] > evict_idle:
                    T.evicted += 1
                    T.created += 1
                    fresh[0] = True
                else:
                    fresh[0] = False
                return e
        i = (i + 1) & T.imask
    e = T.n
    T.n += 1
    memcpy(T.keys + e * T.kw, key, T.kw * sizeof(uint64_t))
    T.hashes[e] = h
    T.index[i] = (tag << 32) | <uint64_t>(e + 1)
    T.created += 1
    fresh[0] = True
    return e


cdef inline Py_ssize_t table_find(Table* T, const uint64_t* key, uint64_t h,
                                   Py_ssize_t* slot) noexcept nogil:
    """The entry of key or -1; ``slot``: its index slot, or the empty slot where it
    would go. No counter changes (state moves are not lookups)."""
    cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>T.imask)
    cdef uint64_t tag = h >> 32
    cdef uint64_t s
    cdef Py_ssize_t e
    while True:
        s = T.index[i]
        if s == 0:
            slot[0] = i
            return -1
        if (s >> 32) == tag:
            e = <Py_ssize_t>(s & 0xffffffffULL) - 1
            if memcmp(T.keys + e * T.kw, key, T.kw * sizeof(uint64_t)) == 0:
                slot[0] = i
                return e
        i = (i + 1) & T.imask


cdef inline bint _same_entry(const Table* T, Py_ssize_t e, const double* vals,
                             uint8_t flags) noexcept nogil:
    """Entry e holds exactly (bitwise) these values; a pair's absent side is not
    compared (its words are undefined in the table, zero in an export)."""
    cdef const double* v = T.vals + e * T.vw
    cdef int s
    if T.flags[e] != flags:
        return False
    if T.vw != P_VW:
        return memcmp(v, vals, T.vw * sizeof(double)) == 0
    for s in range(2):
        if flags & (1 << s) and memcmp(v + s * S1_VW, vals + s * S1_VW,
                                       S1_VW * sizeof(double)) != 0:
            return False
    return memcmp(v + P_T3, vals + P_T3, (P_VW - P_T3) * sizeof(double)) == 0


cdef void table_compact(Table* T, const uint8_t* keep) noexcept nogil:
    """Keep the entries e with keep[e] (in order), free the spare capacity when
    under a quarter is used, and rebuild the index."""
    cdef Py_ssize_t e, j = 0, cap, isize
    cdef void* p
    for e in range(T.n):
        if keep[e]:
            if j != e:
                memcpy(T.keys + j * T.kw, T.keys + e * T.kw, T.kw * sizeof(uint64_t))
                memcpy(T.vals + j * T.vw, T.vals + e * T.vw, T.vw * sizeof(double))
                T.hashes[j] = T.hashes[e]
                T.flags[j] = T.flags[e]
            j += 1
    T.dropped += <uint64_t>(T.n - j)
    T.n = j
    T.sweep_pos = 0
    if T.cap > 64 and 4 * T.n < T.cap:
        cap = 64
        while cap < 2 * T.n:
            cap *= 2
        # a shrinking realloc that fails leaves the larger block valid: every
        # array holds at least ``cap`` entries either way
        p = PyMem_RawRealloc(T.keys, cap * T.kw * sizeof(uint64_t))
        if p != NULL:
            T.keys = <uint64_t*>p
        p = PyMem_RawRealloc(T.hashes, cap * sizeof(uint64_t))
        if p != NULL:
            T.hashes = <uint64_t*>p
        p = PyMem_RawRealloc(T.vals, cap * T.vw * sizeof(double))
        if p != NULL:
            T.vals = <double*>p
        p = PyMem_RawRealloc(T.flags, cap * sizeof(uint8_t))
        if p != NULL:
            T.flags = <uint8_t*>p
        T.cap = cap
        isize = 16
        while isize < 2 * T.cap:
            isize *= 2
        if isize < T.imask + 1:
            p = PyMem_RawMalloc(isize * sizeof(uint64_t))
            if p != NULL:
                PyMem_RawFree(T.index)
                T.index = <uint64_t*>p
                T.imask = isize - 1
    memset(T.index, 0, (T.imask + 1) * sizeof(uint64_t))
    for e in range(T.n):
        _index_put(T, T.hashes[e], e)


cdef inline Py_ssize_t _slot_of(Table* T, Py_ssize_t e) noexcept nogil:
    cdef Py_ssize_t i = <Py_ssize_t>(T.hashes[e] & <uint64_t>T.imask)
    while <Py_ssize_t>(T.index[i] & 0xffffffffULL) != e + 1:
        i = (i + 1) & T.imask
    return i


cdef void table_remove(Table* T, Py_ssize_t e) noexcept nogil:
    """Delete entry e: backward-shift deletion in the index, then the last entry
    moves into slot e so the store stays dense."""
    cdef Py_ssize_t i = _slot_of(T, e)
    cdef Py_ssize_t j = i
    cdef Py_ssize_t k, last
    while True:
        j = (j + 1) & T.imask
        if T.index[j] == 0:
            break
        k = <Py_ssize_t>(T.hashes[(T.index[j] & 0xffffffffULL) - 1] & <uint64_t>T.imask)
        # the entry at j may fill the hole at i unless its home lies in (i, j]
        if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
            T.index[i] = T.index[j]
            i = j
    T.index[i] = 0
    last = T.n - 1
    if e != last:
        i = _slot_of(T, last)
        T.index[i] = ((T.hashes[last] >> 32) << 32) | <uint64_t>(e + 1)
        memcpy(T.keys + e * T.kw, T.keys + last * T.kw, T.kw * sizeof(uint64_t))
        memcpy(T.vals + e * T.vw, T.vals + last * T.vw, T.vw * sizeof(double))
        T.hashes[e] = T.hashes[last]
        T.flags[e] = T.flags[last]
    T.n = last


cdef void table_sweep(Table* T, double t, double evict_idle, Py_ssize_t budget) noexcept nogil:
    """Examine up to ``budget`` entries at the cursor; free those idle for over
    evict_idle (their next lookup would start them afresh anyway)."""
    cdef Py_ssize_t k
    for k in range(budget):
        if T.n == 0:
            return
        if T.sweep_pos >= T.n:
            T.sweep_pos = 0
        if t - T.vals[T.sweep_pos * T.vw + T.age_col] > evict_idle:
            table_remove(T, T.sweep_pos)
            T.evicted += 1
        else:
            T.sweep_pos += 1


# ------------------------------------------------------------- statistics ----

ctypedef struct Decay:
    double dt
    double f[5]


cdef inline const double* _factors(Decay* d, double dt) noexcept nogil:
    cdef int i
    if dt != d.dt:
        for i in range(NL):
            d.f[i] = pow(2.0, -LAMBDA[i] * dt)
        d.dt = dt
    return d.f


cdef inline void s1_init(double* s, double t) noexcept nogil:
    cdef int i
    s[0] = t
    for i in range(NL):
        s[1 + 3 * i] = 0.0
        s[2 + 3 * i] = 0.0
        s[3 + 3 * i] = W_INIT


cdef inline void s1_insert(double* s, double v, double t, Decay* d) noexcept nogil:
    cdef int i
    cdef double dt = t - s[0]
    cdef const double* f
    if dt > 0:
        f = _factors(d, dt)
        for i in range(NL):
            s[1 + 3 * i] *= f[i]
            s[2 + 3 * i] *= f[i]
            s[3 + 3 * i] *= f[i]
        s[0] = t
    for i in range(NL):
        s[1 + 3 * i] += v
        s[2 + 3 * i] += v * v
        s[3 + 3 * i] += 1.0


cdef inline void s1_stats(const double* s, double* out) noexcept nogil:
    cdef int i
    cdef double w, mean
    for i in range(NL):
        w = s[3 + 3 * i]
        mean = s[1 + 3 * i] / w
        out[3 * i] = w
        out[3 * i + 1] = mean
        out[3 * i + 2] = fabs(s[2 + 3 * i] / w - mean * mean)


cdef inline void pair_init(double* p, double t) noexcept nogil:
    cdef int i
    p[P_T3] = t
    for i in range(NL):
        p[P_T3 + 1 + 4 * i] = 0.0
        p[P_T3 + 2 + 4 * i] = W_INIT
        p[P_T3 + 3 + 4 * i] = 0.0
        p[P_T3 + 4 + 4 * i] = 0.0


cdef inline void pair_insert(double* p, uint8_t* flags, int a, int b, double v, double t,
                             Decay* d) noexcept nogil:
    cdef double* sa = p + S1_VW * a
    cdef double* c
    cdef double dt, r
    cdef const double* f
    cdef int i
    if not (flags[0] & (1 << a)):
        s1_init(sa, t)
        flags[0] |= <uint8_t>(1 << a)
    s1_insert(sa, v, t, d)
    dt = t - p[P_T3]
    if dt > 0:
        f = _factors(d, dt)
        for i in range(NL):
            p[P_T3 + 1 + 4 * i] *= f[i]
            p[P_T3 + 2 + 4 * i] *= f[i]
        p[P_T3] = t
    for i in range(NL):
        c = p + P_T3 + 1 + 4 * i  # CF3, w3, res side 0, res side 1
        r = v - sa[1 + 3 * i] / sa[3 + 3 * i]
        c[0] += r * c[2 + b]
        c[1] += 1.0
        c[2 + a] = r


cdef inline void pair_stats(const double* p, uint8_t flags, int a, int b,
                            double* out) noexcept nogil:
    cdef const double* sa = p + S1_VW * a
    cdef const double* sb = p + S1_VW * b
    cdef bint has_b = (flags & (1 << b)) != 0
    cdef double w, mean_a, var_a, mean_b, var_b, cov, prod
    cdef int i
    for i in range(NL):
        w = sa[3 + 3 * i]
        mean_a = sa[1 + 3 * i] / w
        var_a = fabs(sa[2 + 3 * i] / w - mean_a * mean_a)
        if has_b:
            mean_b = sb[1 + 3 * i] / sb[3 + 3 * i]
            var_b = fabs(sb[2 + 3 * i] / sb[3 + 3 * i] - mean_b * mean_b)
        else:
            mean_b = 0.0
            var_b = 0.0
        cov = p[P_T3 + 1 + 4 * i] / p[P_T3 + 2 + 4 * i]
        prod = sqrt(var_a) * sqrt(var_b)
        out[7 * i] = w
        out[7 * i + 1] = mean_a
        out[7 * i + 2] = var_a
        out[7 * i + 3] = sqrt(var_a * var_a + var_b * var_b)
        out[7 * i + 4] = sqrt(mean_a * mean_a + mean_b * mean_b)
        out[7 * i + 5] = cov
        out[7 * i + 6] = cov / prod if prod != 0 else 0.0


# ----------------------------------------------------------------- packets ---

ctypedef struct Ctx:
    Table* tables
    uint64_t seed
    double evict_idle      # <= 0: off
    Py_ssize_t sweep_budget
    bint sweep_paused      # while a state move holds packets (they run later, at earlier times)
    Decay decay


cdef inline void _pair_update(Ctx* C, int tid, const uint64_t* src, const uint64_t* dst,
                              Py_ssize_t w, double v, double t, double* out) noexcept nogil:
    """Insert into the directed stream src->dst of its pair; stats to out if not NULL."""
    cdef Table* T = &C.tables[tid]
    cdef uint64_t key[MAX_KW]
    cdef int c = _cmp_words(src, dst, w)
    cdef int a = 0 if c <= 0 else 1
    cdef int b = a if c == 0 else 1 - a
    cdef bint fresh
    cdef Py_ssize_t e
    cdef double* p
    if a == 0:
        memcpy(key, src, w * sizeof(uint64_t))
        memcpy(key + w, dst, w * sizeof(uint64_t))
    else:
        memcpy(key, dst, w * sizeof(uint64_t))
        memcpy(key + w, src, w * sizeof(uint64_t))
    e = table_lookup(T, key, hash_key(key, 2 * w, C.seed), t, C.evict_idle, &fresh)
    p = T.vals + e * P_VW
    if fresh:
        T.flags[e] = 0
        pair_init(p, t)
    pair_insert(p, &T.flags[e], a, b, v, t, &C.decay)
    if out != NULL:
        pair_stats(p, T.flags[e], a, b, out)


cdef inline double* _stream(Ctx* C, int tid, const uint64_t* key, Py_ssize_t kw,
                            double t) noexcept nogil:
    cdef Table* T = &C.tables[tid]
    cdef bint fresh
    cdef Py_ssize_t e = table_lookup(T, key, hash_key(key, kw, C.seed), t, C.evict_idle,
                                     &fresh)
    cdef double* s = T.vals + e * S1_VW
    if fresh:
        T.flags[e] = 0
        s1_init(s, t)
    return s


cdef void process_packet(Ctx* C, double t, double v, uint64_t mac_src, uint64_t mac_dst,
                         uint8_t proto, uint8_t sfam, uint8_t dfam, const uint8_t* saddr,
                         const uint8_t* daddr, uint16_t sport, uint16_t dport,
                         double* row) noexcept nogil:
    """One packet; ``row`` is NULL for a mirror (pair state only, no features)."""
    cdef uint64_t sa[3]
    cdef uint64_t da[3]
    cdef uint64_t se[4]
    cdef uint64_t de[4]
    cdef uint64_t key[6]
    cdef double* s
    cdef double gap
    cdef int k
    sa[0] = sfam
    sa[1] = _be64(saddr)
    sa[2] = _be64(saddr + 8)
    da[0] = dfam
    da[1] = _be64(daddr)
    da[2] = _be64(daddr + 8)
    se[0] = (<uint64_t>proto << 8) | sfam
    de[0] = (<uint64_t>proto << 8) | dfam
    se[1] = sa[1]
    se[2] = sa[2]
    de[1] = da[1]
    de[2] = da[2]
    if proto == PROTO_ARP:
        se[3] = mac_src
        de[3] = mac_dst
    else:
        se[3] = sport
        de[3] = dport
    if C.evict_idle > 0 and not C.sweep_paused:
        for k in range(N_TABLES):
            table_sweep(&C.tables[k], t, C.evict_idle, C.sweep_budget)
    _pair_update(C, T_CHANNEL, sa, da, 3, v, t, row + COL_CHANNEL if row != NULL else NULL)
    _pair_update(C, T_SOCKET, se, de, 4, v, t, row + COL_SOCKET if row != NULL else NULL)
    if row == NULL:
        return
    key[0] = (mac_src << 8) | sfam
    key[1] = sa[1]
    key[2] = sa[2]
    s = _stream(C, T_MI, key, 3, t)
    s1_insert(s, v, t, &C.decay)
    s1_stats(s, row + COL_MI)
    s = _stream(C, T_H, sa, 3, t)
    s1_insert(s, v, t, &C.decay)
    s1_stats(s, row + COL_H)
    memcpy(key, sa, 3 * sizeof(uint64_t))
    memcpy(key + 3, da, 3 * sizeof(uint64_t))
    s = _stream(C, T_JITTER, key, 6, t)
    gap = t - s[0]
    s1_insert(s, gap if gap > 0 else 0.0, t, &C.decay)
    s1_stats(s, row + COL_JITTER)


# ------------------------------------------------------------------ state ----

cdef class LegoState:
    """The tables of one extractor and the kernel that runs batches through them.
    Not thread-safe: one batch at a time (the wrapper, ``legostats.py``, checks
    the batch)."""

    cdef Table tables[N_TABLES]
    cdef Ctx ctx
    cdef bint busy
    cdef public uint64_t packets, mirrors, rows

    def __cinit__(self, uint64_t seed, double evict_idle, Py_ssize_t sweep_budget):
        cdef Py_ssize_t kw[5]
        cdef Py_ssize_t vw[5]
        cdef int k
        kw[:] = [3, 3, 6, 6, 8]
        vw[:] = [S1_VW, S1_VW, P_VW, S1_VW, P_VW]
        for k in range(N_TABLES):
            if table_init(&self.tables[k], kw[k], vw[k], P_T3 if vw[k] == P_VW else 0) != 0:
                raise MemoryError("lego feature tables")
        self.ctx.tables = self.tables
        self.ctx.seed = seed
        self.ctx.evict_idle = evict_idle
        self.ctx.sweep_budget = sweep_budget
        self.ctx.decay.dt = float("nan")

    def __dealloc__(self):
        cdef int k
        for k in range(N_TABLES):
            table_free(&self.tables[k])

    def process(self,
                const double[::1] ts,
                const uint32_t[::1] frame_len,
                const uint64_t[::1] eth_src,
                const uint64_t[::1] eth_dst,
                const uint8_t[::1] proto,
                const uint8_t[::1] src_family,
                const uint8_t[::1] dst_family,
                const uint8_t[:, ::1] src_addr,
                const uint8_t[:, ::1] dst_addr,
                const uint16_t[::1] sport,
                const uint16_t[::1] dport,
                const uint8_t[::1] mirror,
                double[:, ::1] out) -> int:
        """Run every packet in order; the rows of non-mirror packets land in
        ``out`` (OUT, one row each, in order). Returns the number of rows."""
        cdef Py_ssize_t n = ts.shape[0]
        cdef Py_ssize_t i
        cdef double* base = NULL
        cdef Py_ssize_t need = 0
        for name, length in (("frame_len", frame_len.shape[0]), ("eth_src", eth_src.shape[0]),
                             ("eth_dst", eth_dst.shape[0]), ("proto", proto.shape[0]),
                             ("src_family", src_family.shape[0]),
                             ("dst_family", dst_family.shape[0]),
                             ("src_addr", src_addr.shape[0]), ("dst_addr", dst_addr.shape[0]),
                             ("sport", sport.shape[0]), ("dport", dport.shape[0]),
                             ("mirror", mirror.shape[0])):
            if length != n:
                raise ValueError(f"{name}: expected {n} packets (as ts), got {length}")
        if src_addr.shape[1] != 16 or dst_addr.shape[1] != 16:
            raise ValueError(f"src_addr, dst_addr: expected 16 bytes per packet, got "
                             f"{src_addr.shape[1]}, {dst_addr.shape[1]}")
        for i in range(n):
            need += mirror[i] == 0
        if out.shape[1] != N_COLS or out.shape[0] < need:
            raise ValueError(f"out: expected float64[>={need}, {N_COLS}], "
                             f"got shape ({out.shape[0]}, {out.shape[1]})")
        if need:
            base = &out[0, 0]
        if self.busy:
            raise RuntimeError("LegoState.process: already running in another thread")
        self.busy = True
        try:
            self._run(ts, frame_len, eth_src, eth_dst, proto, src_family, dst_family,
                      src_addr, dst_addr, sport, dport, mirror, base)
        finally:
            self.busy = False
        self.rows += <uint64_t>need
        return need

    cdef _run(self,
              const double[::1] ts,
              const uint32_t[::1] frame_len,
              const uint64_t[::1] eth_src,
              const uint64_t[::1] eth_dst,
              const uint8_t[::1] proto,
              const uint8_t[::1] src_family,
              const uint8_t[::1] dst_family,
              const uint8_t[:, ::1] src_addr,
              const uint8_t[:, ::1] dst_addr,
              const uint16_t[::1] sport,
              const uint16_t[::1] dport,
              const uint8_t[::1] mirror,
              double* base):
        cdef Py_ssize_t n = ts.shape[0]
        cdef Py_ssize_t start, stop, i, r = 0
        cdef int k
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            for k in range(N_TABLES):
                if table_reserve(&self.tables[k], self.tables[k].n + stop - start) != 0:
                    raise MemoryError(f"lego feature table {TABLE_NAMES[k]}: "
                                      f"{self.tables[k].n + stop - start} keys")
            with nogil:
                for i in range(start, stop):
                    process_packet(&self.ctx, ts[i], <double>frame_len[i], eth_src[i],
                                   eth_dst[i], proto[i], src_family[i], dst_family[i],
                                   &src_addr[i, 0], &dst_addr[i, 0], sport[i], dport[i],
                                   NULL if mirror[i] else base + r * N_COLS)
                    if mirror[i]:
                        self.mirrors += 1
                    else:
                        r += 1
            self.packets += <uint64_t>(stop - start)

    def table_counters(self) -> dict:
        """Per table: keys (live), created, evicted, updates, probes, moved,
        imported, dropped (live = created + imported - evicted - dropped)."""
        cdef int k
        cdef Table* T
        res = {}
        for k in range(N_TABLES):
            T = &self.tables[k]
            res[TABLE_NAMES[k]] = {"keys": T.n, "created": T.created, "evicted": T.evicted,
                                   "updates": T.updates, "probes": T.probes,
                                   "moved": T.moved, "imported": T.imported,
                                   "dropped": T.dropped}
        return res

    def table_arrays(self, str name):
        """Copies of one table's live state: (keys uint64[n, kw], vals float64[n, vw],
        flags uint8[n]), rows in slot order. For inspection and tests."""
        cdef int k = TABLE_NAMES.index(name)
        cdef Table* T = &self.tables[k]
        keys = np.empty((T.n, T.kw), dtype=np.uint64)
        vals = np.empty((T.n, T.vw), dtype=np.float64)
        flags = np.empty(T.n, dtype=np.uint8)
        cdef uint64_t[:, ::1] kv = keys
        cdef double[:, ::1] vv = vals
        cdef uint8_t[::1] fv = flags
        if T.n:
            memcpy(&kv[0, 0], T.keys, T.n * T.kw * sizeof(uint64_t))
            memcpy(&vv[0, 0], T.vals, T.n * T.vw * sizeof(double))
            memcpy(&fv[0], T.flags, T.n * sizeof(uint8_t))
        return keys, vals, flags

    # ------------------------------------------------------- state moves ----
    # The wrapper (legostats.py) turns these per-table arrays into a StateBlob.

    @property
    def sweep_paused(self) -> bool:
        return self.ctx.sweep_paused

    @sweep_paused.setter
    def sweep_paused(self, bint paused) -> None:
        self.ctx.sweep_paused = paused

    cdef Table* _table(self, int k) except NULL:
        if not 0 <= k < N_TABLES:
            raise ValueError(f"table: expected 0..{N_TABLES - 1}, got {k}")
        if self.busy:
            raise RuntimeError("LegoState: a batch is running in another thread")
        return &self.tables[k]

    def export_entries(self, int k, const uint8_t[::1] select, const uint8_t[::1] exclude):
        """Copies of the entries of table k with an owner bucket set in ``select``
        and none set in ``exclude`` (both uint8[1024]): (keys uint64[n, kw], vals
        float64[n, vw], flags uint8[n]) in slot order. A pair's absent side is zero."""
        cdef Table* T = self._table(k)
        cdef Py_ssize_t e, j = 0, cnt = 0, s
        if select.shape[0] != OWNER_BUCKETS or exclude.shape[0] != OWNER_BUCKETS:
            raise ValueError(f"select, exclude: expected uint8[{OWNER_BUCKETS}], got "
                             f"{select.shape[0]}, {exclude.shape[0]}")
        mark = np.zeros(T.n, dtype=np.uint8)
        cdef uint8_t[::1] mv = mark
        with nogil:
            for e in range(T.n):
                if _owned_in(T.keys + e * T.kw, k, &select[0]) \
                        and not _owned_in(T.keys + e * T.kw, k, &exclude[0]):
                    mv[e] = 1
                    cnt += 1
        keys = np.empty((cnt, T.kw), dtype=np.uint64)
        vals = np.empty((cnt, T.vw), dtype=np.float64)
        flags = np.empty(cnt, dtype=np.uint8)
        cdef uint64_t[:, ::1] kv = keys
        cdef double[:, ::1] vv = vals
        cdef uint8_t[::1] fv = flags
        with nogil:
            for e in range(T.n):
                if mv[e]:
                    memcpy(&kv[j, 0], T.keys + e * T.kw, T.kw * sizeof(uint64_t))
                    memcpy(&vv[j, 0], T.vals + e * T.vw, T.vw * sizeof(double))
                    fv[j] = T.flags[e]
                    if T.vw == P_VW:
                        for s in range(2):
                            if not (T.flags[e] & (1 << s)):
                                memset(&vv[j, s * S1_VW], 0, S1_VW * sizeof(double))
                    j += 1
        return keys, vals, flags

    def import_entries(self, int k, const uint64_t[:, ::1] keys, const double[:, ::1] vals,
                       const uint8_t[::1] flags, bint apply):
        """Insert the absent entries of table k (only when ``apply``); entries
        already present are compared bitwise. Returns (absent, identical,
        conflicting, index of the first conflict or -1). The wrapper checks every
        table with apply=False first, so a conflict changes nothing."""
        cdef Table* T = self._table(k)
        cdef Py_ssize_t n = keys.shape[0]
        cdef Py_ssize_t i, e, slot, absent = 0, same = 0, bad = 0, first = -1
        cdef uint64_t h
        if keys.shape[1] != T.kw or vals.shape[1] != T.vw or vals.shape[0] != n \
                or flags.shape[0] != n:
            raise ValueError(f"table {TABLE_NAMES[k]}: expected keys uint64[n, {T.kw}], "
                             f"vals float64[n, {T.vw}], flags uint8[n]; got "
                             f"[{n}, {keys.shape[1]}], [{vals.shape[0]}, {vals.shape[1]}], "
                             f"[{flags.shape[0]}]")
        if n == 0:
            return 0, 0, 0, -1
        if apply and table_reserve(T, T.n + n) != 0:
            raise MemoryError(f"lego feature table {TABLE_NAMES[k]}: {T.n + n} keys")
        with nogil:
            for i in range(n):
                h = hash_key(&keys[i, 0], T.kw, self.ctx.seed)
                e = table_find(T, &keys[i, 0], h, &slot)
                if e < 0:
                    absent += 1
                    if apply:
                        e = T.n
                        T.n += 1
                        memcpy(T.keys + e * T.kw, &keys[i, 0], T.kw * sizeof(uint64_t))
                        memcpy(T.vals + e * T.vw, &vals[i, 0], T.vw * sizeof(double))
                        T.hashes[e] = h
                        T.flags[e] = flags[i]
                        T.index[slot] = ((h >> 32) << 32) | <uint64_t>(e + 1)
                        T.imported += 1
                elif _same_entry(T, e, &vals[i, 0], flags[i]):
                    same += 1
                else:
                    bad += 1
                    if first < 0:
                        first = i
        return absent, same, bad, first

    def drop_entries(self, int k, const uint8_t[::1] keep) -> int:
        """Forget the entries of table k none of whose owner buckets is set in
        ``keep`` (uint8[1024]); spare memory is freed. Returns how many."""
        cdef Table* T = self._table(k)
        cdef Py_ssize_t e, n0 = T.n
        if keep.shape[0] != OWNER_BUCKETS:
            raise ValueError(f"keep: expected uint8[{OWNER_BUCKETS}], got {keep.shape[0]}")
        mark = np.zeros(T.n, dtype=np.uint8)
        cdef uint8_t[::1] mv = mark
        cdef Py_ssize_t kept = 0
        with nogil:
            for e in range(T.n):
                if _owned_in(T.keys + e * T.kw, k, &keep[0]):
                    mv[e] = 1
                    kept += 1
            if kept < n0:
                table_compact(T, &mv[0])
        return n0 - kept

    def memory_bytes(self) -> dict:
        """Bytes allocated per table (entry store at capacity + index)."""
        cdef int k
        cdef Table* T
        res = {}
        for k in range(N_TABLES):
            T = &self.tables[k]
            res[TABLE_NAMES[k]] = (T.cap * (T.kw * 8 + 8 + T.vw * 8 + 1)
                                   + (T.imask + 1) * 8)
        return res


def address_buckets(const uint8_t[::1] family, const uint8_t[:, ::1] addr,
                    int64_t[::1] out) -> None:
    """Owner bucket of each address: crc32([family][16 bytes]) % 1024 (OUT: out)."""
    cdef Py_ssize_t i, n = family.shape[0]
    if addr.shape[0] != n or addr.shape[1] != 16 or out.shape[0] != n:
        raise ValueError(f"address_buckets: expected family uint8[{n}], addr uint8[{n}, 16], "
                         f"out int64[{n}]; got addr [{addr.shape[0]}, {addr.shape[1]}], "
                         f"out [{out.shape[0]}]")
    with nogil:
        for i in range(n):
            out[i] = owner_bucket(family[i], &addr[i, 0])
