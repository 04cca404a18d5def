# cython: language_level=3
"""AfterImage kernel: the ``kitsune`` feature semantics at C speed.

Private; the public API is :mod:`lego.ext.afterimage`, the specification is
:mod:`lego.ext.afterimage_spec`. This kernel performs the same floating-point
operations in the same order as the specification, per lambda, so its features
are bit-identical to it (pow, sqrt and fabs are libm's, as Python's are).

Keys are the reference's concatenated strings (tshark's text of MACs, addresses
and ports), formatted here and hashed as bytes, so colliding concatenations
share a stream exactly as in the reference. The lambdas of one key always move
together (created, decayed and inserted at the same moments), so one node holds
all five streams of a key and one pair holds all five 2-D states of two keys.
"""

from libc.math cimport NAN, fabs, isnan, pow, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset, strlen


# ------------------------------------------------------------------ layout
#
# A database maps key strings to nodes through an open-addressing table of node
# indices. A node holds the streams of its key for all lambdas (they are created,
# decayed and inserted at the same moments, so the last update time is shared);
# a pair holds the 2-D statistics of two nodes for all lambdas. Nodes and pairs
# live in growable arrays and refer to each other by index, never by pointer.

cdef enum:
    NL = 5          # lambdas (lego.ext.features.LAMBDAS)
    KEYMAX = 96     # longest key: two IPv6 texts (45 + 45)


cdef struct Node:
    double cf1[NL]
    double cf2[NL]
    double w[NL]
    double mean[NL]     # caches; NaN = not computed (decay does not reset them)
    double var[NL]
    double std[NL]
    double last_t       # last decay (or creation) time
    double last_seen    # last time a packet referred to the key (for eviction)
    uint64_t hash
    int32_t *pairs      # pair indices in registration order (a self-pair twice)
    int32_t npairs
    int32_t cap_pairs
    int32_t keylen      # -1: a free slot
    char key[KEYMAX]


cdef struct Pair:
    int32_t s[2]        # node indices in registration order; s[0] == -1: free
    double last_t3
    double cf3[NL]
    double w3[NL]
    double res0[NL]     # last residual of s[0], of s[1]
    double res1[NL]


cdef struct DB:
    Node *nodes
    int32_t n_nodes     # high-water mark of nodes[]
    int32_t cap_nodes
    int32_t *free_nodes
    int32_t n_free_nodes
    int32_t *table      # node index or -1; size mask + 1, a power of two
    uint64_t mask
    int64_t live_nodes
    Pair *pairs
    int32_t n_pairs
    int32_t cap_pairs
    int32_t *free_pairs
    int32_t n_free_pairs
    int64_t live_pairs
    int64_t evicted_nodes
    int64_t evicted_pairs
    int64_t pair_updates
    bint jitter
    # one-entry memo of decay factors: pow() is deterministic, so equal time
    # differences give equal factors (a scan decays many pairs by the same dt)
    double memo_dt
    double memo_f[NL]


cdef extern from "arpa/inet.h" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)

cdef extern from "sys/socket.h" nogil:
    int AF_INET6

from lego.ext._codes cimport F_MAC, F_NONE, F_V4, F_V6, P_ARP, P_ICMP, P_IP, P_L2, P_TCP, P_UDP

# The four databases, in feature order, and where their features start.
cdef enum:
    DB_MI = 0
    DB_H = 1
    DB_JIT = 2
    DB_HPHP = 3
    OFF_MI = 0
    OFF_HH = 15
    OFF_JIT = 50
    OFF_HPHP = 65

cdef double NEGLAM[NL]
NEGLAM[:] = [-5.0, -3.0, -1.0, -0.1, -0.01]
# what the wrapper checks against lego.ext.features.LAMBDAS (a stale build)
LAMBDAS = tuple(-NEGLAM[_l] for _l in range(NL))

# libm's pow through a pointer, so that the compiler cannot rewrite pow(x, 2)
# as x * x (the reference squares with math.pow, i.e. libm's pow).
ctypedef double (*pow_fn)(double, double) noexcept nogil
cdef pow_fn cpow = pow


# ------------------------------------------------------------------ hashing

cdef inline uint64_t rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t mix_word(uint64_t h, uint64_t x) noexcept nogil:
    x *= <uint64_t>0x87C37B91114253D5
    x = rotl(x, 31)
    x *= <uint64_t>0x4CF5AD432745937F
    h ^= x
    return rotl(h, 27) * <uint64_t>5 + <uint64_t>0x52DCE729


cdef uint64_t hash_key(const char *k, int n) noexcept nogil:
    """A 64-bit hash of n key bytes (8 bytes per round, then a finaliser)."""
    cdef uint64_t h = <uint64_t>0x9E3779B97F4A7C15 ^ <uint64_t>n
    cdef uint64_t x
    cdef int i = 0
    while i + 8 <= n:
        memcpy(&x, k + i, 8)
        h = mix_word(h, x)
        i += 8
    if i < n:
        x = 0
        memcpy(&x, k + i, n - i)
        h = mix_word(h, x)
    h ^= h >> 33
    h *= <uint64_t>0xFF51AFD7ED558CCD
    h ^= h >> 33
    h *= <uint64_t>0xC4CEB9FE1A85EC53
    h ^= h >> 33
    return h


# ------------------------------------------------------------------ key text

cdef const char *HEX = b"0123456789abcdef"


cdef inline int fmt_mac(char *o, uint64_t mac) noexcept nogil:
    """aa:bb:cc:dd:ee:ff (17 bytes)."""
    cdef int i
    cdef uint8_t b
    for i in range(6):
        b = <uint8_t>((mac >> (40 - 8 * i)) & 0xFF)
        o[3 * i] = HEX[b >> 4]
        o[3 * i + 1] = HEX[b & 15]
        if i < 5:
            o[3 * i + 2] = b':'
    return 17


cdef inline int fmt_uint(char *o, uint32_t v) noexcept nogil:
    """Decimal without leading zeros."""
    cdef char tmp[10]
    cdef int n = 0, i
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for i in range(n):
        o[i] = tmp[n - 1 - i]
    return n


cdef int fmt_addr(char *o, uint8_t family, const uint8_t *a) noexcept nogil:
    """The derived address as text (dotted quad, inet_ntop IPv6, MAC, or '')."""
    cdef int n = 0, i
    cdef uint64_t mac = 0
    if family == F_V4:
        for i in range(4):
            n += fmt_uint(o + n, a[i])
            if i < 3:
                o[n] = b'.'
                n += 1
        return n
    if family == F_V6:
        if inet_ntop(AF_INET6, a, o, 48) == NULL:
            return 0
        return <int>strlen(o)
    if family == F_MAC:
        for i in range(6):
            mac = (mac << 8) | a[i]
        return fmt_mac(o, mac)
    return 0


cdef inline int fmt_port(char *o, uint8_t proto, uint16_t port) noexcept nogil:
    """The reference's protocol key: decimal port, 'arp', 'icmp' or ''."""
    if proto == P_TCP or proto == P_UDP:
        return fmt_uint(o, port)
    if proto == P_ARP:
        memcpy(o, b"arp", 3)
        return 3
    if proto == P_ICMP:
        memcpy(o, b"icmp", 4)
        return 4
    return 0


def key_text(uint8_t family, const uint8_t[::1] addr, uint8_t proto=P_IP,
             uint16_t port=0) -> str:
    """The kernel's text of a derived address (16 bytes) followed by its port key,
    for tests against the specification."""
    cdef char buf[64]
    if addr.shape[0] != 16:
        raise ValueError(f"key_text: addr must have 16 bytes, got {addr.shape[0]}")
    cdef int n = fmt_addr(buf, family, &addr[0])
    n += fmt_port(buf + n, proto, port)
    return buf[:n].decode("ascii")


# ------------------------------------------------------------------ storage

cdef int db_init(DB *db, bint jitter) noexcept nogil:
    memset(db, 0, sizeof(DB))
    db.jitter = jitter
    db.memo_dt = NAN  # never equal: the memo starts empty
    db.mask = 255
    db.table = <int32_t *>malloc((db.mask + 1) * sizeof(int32_t))
    if db.table == NULL:
        return -1
    memset(db.table, 0xFF, (db.mask + 1) * sizeof(int32_t))
    return 0


cdef void db_free(DB *db) noexcept nogil:
    cdef int32_t i
    if db.nodes != NULL:
        for i in range(db.n_nodes):
            free(db.nodes[i].pairs)
    free(db.nodes)
    free(db.free_nodes)
    free(db.table)
    free(db.pairs)
    free(db.free_pairs)
    memset(db, 0, sizeof(DB))


cdef void table_put(DB *db, int32_t idx) noexcept nogil:
    cdef uint64_t i = db.nodes[idx].hash & db.mask
    while db.table[i] >= 0:
        i = (i + 1) & db.mask
    db.table[i] = idx


cdef int table_rebuild(DB *db, uint64_t size) noexcept nogil:
    """Rehash every live node into a table of ``size`` slots (a power of two)."""
    cdef int32_t *t = <int32_t *>malloc(size * sizeof(int32_t))
    cdef int32_t i
    if t == NULL:
        return -1
    memset(t, 0xFF, size * sizeof(int32_t))
    free(db.table)
    db.table = t
    db.mask = size - 1
    for i in range(db.n_nodes):
        if db.nodes[i].keylen >= 0:
            table_put(db, i)
    return 0


cdef int32_t node_alloc(DB *db) noexcept nogil:
    cdef int32_t cap
    cdef void *p
    if db.n_free_nodes > 0:
        db.n_free_nodes -= 1
        return db.free_nodes[db.n_free_nodes]
    if db.n_nodes == db.cap_nodes:
        cap = db.cap_nodes * 2 if db.cap_nodes else 64
        p = realloc(db.nodes, cap * sizeof(Node))
        if p == NULL:
            return -1
        db.nodes = <Node *>p
        p = realloc(db.free_nodes, cap * sizeof(int32_t))  # a free stack never grows
        if p == NULL:
            return -1
        db.free_nodes = <int32_t *>p
        db.cap_nodes = cap
    db.n_nodes += 1
    return db.n_nodes - 1


cdef int32_t lookup(DB *db, const char *key, int n, double t) noexcept nogil:
    """The node of ``key``, created at time t if new; -1 when out of memory."""
    cdef uint64_t h, i
    cdef int32_t idx
    cdef Node *nd
    cdef int l
    if <uint64_t>(db.live_nodes + 1) * 2 > db.mask + 1:
        if table_rebuild(db, (db.mask + 1) * 2) < 0:
            return -1
    h = hash_key(key, n)
    i = h & db.mask
    while True:
        idx = db.table[i]
        if idx < 0:
            break
        nd = &db.nodes[idx]
        if nd.hash == h and nd.keylen == n and memcmp(nd.key, key, n) == 0:
            nd.last_seen = t
            return idx
        i = (i + 1) & db.mask
    idx = node_alloc(db)
    if idx < 0:
        return -1
    nd = &db.nodes[idx]
    for l in range(NL):
        nd.cf1[l] = 0.0
        nd.cf2[l] = 0.0
        nd.w[l] = 1e-20
        nd.mean[l] = NAN
        nd.var[l] = NAN
        nd.std[l] = NAN
    nd.last_t = t
    nd.last_seen = t
    nd.hash = h
    nd.pairs = NULL
    nd.npairs = 0
    nd.cap_pairs = 0
    nd.keylen = n
    memcpy(nd.key, key, n)
    db.table[i] = idx
    db.live_nodes += 1
    return idx


cdef int list_append(Node *nd, int32_t pi) noexcept nogil:
    cdef int32_t cap
    cdef void *p
    if nd.npairs == nd.cap_pairs:
        cap = nd.cap_pairs * 2 if nd.cap_pairs else 4
        p = realloc(nd.pairs, cap * sizeof(int32_t))
        if p == NULL:
            return -1
        nd.pairs = <int32_t *>p
        nd.cap_pairs = cap
    nd.pairs[nd.npairs] = pi
    nd.npairs += 1
    return 0


cdef int32_t pair_new(DB *db, int32_t i1, int32_t i2, double t) noexcept nogil:
    """Pair [i1, i2] created at t, appended to both pair lists; -1: no memory."""
    cdef int32_t pi, cap
    cdef void *p
    cdef Pair *q
    cdef int l
    if db.n_free_pairs > 0:
        db.n_free_pairs -= 1
        pi = db.free_pairs[db.n_free_pairs]
    else:
        if db.n_pairs == db.cap_pairs:
            cap = db.cap_pairs * 2 if db.cap_pairs else 64
            p = realloc(db.pairs, cap * sizeof(Pair))
            if p == NULL:
                return -1
            db.pairs = <Pair *>p
            p = realloc(db.free_pairs, cap * sizeof(int32_t))
            if p == NULL:
                return -1
            db.free_pairs = <int32_t *>p
            db.cap_pairs = cap
        pi = db.n_pairs
        db.n_pairs += 1
    q = &db.pairs[pi]
    q.s[0] = i1
    q.s[1] = i2
    q.last_t3 = t
    for l in range(NL):
        q.cf3[l] = 0.0
        q.w3[l] = 1e-20
        q.res0[l] = 0.0
        q.res1[l] = 0.0
    if list_append(&db.nodes[i1], pi) < 0 or list_append(&db.nodes[i2], pi) < 0:
        return -1
    db.live_pairs += 1
    return pi


# ------------------------------------------------------------------ eviction

cdef void list_remove(Node *nd, int32_t pi) noexcept nogil:
    """Drop every occurrence of pair pi, keeping the order of the others."""
    cdef int32_t k = 0, j = 0
    for k in range(nd.npairs):
        if nd.pairs[k] != pi:
            nd.pairs[j] = nd.pairs[k]
            j += 1
    nd.npairs = j


cdef void node_evict(DB *db, int32_t idx) noexcept nogil:
    cdef Node *nd = &db.nodes[idx]
    cdef Pair *q
    cdef int32_t k, pi, other
    for k in range(nd.npairs):
        pi = nd.pairs[k]
        q = &db.pairs[pi]
        if q.s[0] < 0:
            continue  # the second entry of a self-pair
        other = q.s[1] if q.s[0] == idx else q.s[0]
        if other != idx:
            list_remove(&db.nodes[other], pi)
        q.s[0] = -1
        q.s[1] = -1
        db.free_pairs[db.n_free_pairs] = pi
        db.n_free_pairs += 1
        db.live_pairs -= 1
        db.evicted_pairs += 1
    free(nd.pairs)
    nd.pairs = NULL
    nd.npairs = 0
    nd.cap_pairs = 0
    nd.keylen = -1
    db.free_nodes[db.n_free_nodes] = idx
    db.n_free_nodes += 1
    db.live_nodes -= 1
    db.evicted_nodes += 1


cdef int db_sweep(DB *db, double cutoff) noexcept nogil:
    """Evict every key no packet referred to since ``cutoff``."""
    cdef int32_t i
    cdef int64_t before = db.evicted_nodes
    for i in range(db.n_nodes):
        if db.nodes[i].keylen >= 0 and db.nodes[i].last_seen < cutoff:
            node_evict(db, i)
    if db.evicted_nodes == before:
        return 0
    return table_rebuild(db, db.mask + 1)


# ------------------------------------------------------------------ statistics

cdef inline void factors(DB *db, double dt, double *f) noexcept nogil:
    """f[l] = 2 ** (-lambda_l * dt), remembered for the last dt."""
    cdef int l
    if dt != db.memo_dt:
        for l in range(NL):
            db.memo_f[l] = cpow(2.0, NEGLAM[l] * dt)
        db.memo_dt = dt
    for l in range(NL):
        f[l] = db.memo_f[l]


cdef inline void node_decay(DB *db, Node *nd, double t) noexcept nogil:
    cdef double dt = t - nd.last_t
    cdef double f[NL]
    cdef int l
    if dt > 0:
        factors(db, dt, f)
        for l in range(NL):
            nd.cf1[l] *= f[l]
            nd.cf2[l] *= f[l]
            nd.w[l] *= f[l]
        nd.last_t = t  # the caches are NOT reset (as in the reference)


cdef inline double node_mean(Node *nd, int l) noexcept nogil:
    if isnan(nd.mean[l]):
        nd.mean[l] = nd.cf1[l] / nd.w[l]
    return nd.mean[l]


cdef inline double node_var(Node *nd, int l) noexcept nogil:
    cdef double a
    if isnan(nd.var[l]):
        a = nd.cf2[l] / nd.w[l]
        nd.var[l] = fabs(a - cpow(node_mean(nd, l), 2.0))
    return nd.var[l]


cdef inline double node_std(Node *nd, int l) noexcept nogil:
    if isnan(nd.std[l]):
        nd.std[l] = sqrt(node_var(nd, l))
    return nd.std[l]


cdef inline void node_stats_1d(Node *nd, int l, double *o) noexcept nogil:
    """[w, mean, var]; refreshes the mean and var caches (not std)."""
    nd.mean[l] = nd.cf1[l] / nd.w[l]
    nd.var[l] = fabs(nd.cf2[l] / nd.w[l] - cpow(nd.mean[l], 2.0))
    o[0] = nd.w[l]
    o[1] = nd.mean[l]
    o[2] = nd.var[l]


cdef void pair_update(DB *db, int32_t pi, int32_t ni, double v, double t) noexcept nogil:
    """Node ni (a member of pair pi) has just been inserted with v at t."""
    cdef Pair *q = &db.pairs[pi]
    cdef int inc = 0 if q.s[0] == ni else 1
    cdef Node *me = &db.nodes[ni]
    cdef double dt, r
    cdef double f[NL]
    cdef int l
    node_decay(db, &db.nodes[q.s[1 - inc]], t)
    dt = t - q.last_t3
    if dt > 0:
        factors(db, dt, f)
        for l in range(NL):
            q.cf3[l] *= f[l]
            q.w3[l] *= f[l]
        if inc == 0:
            for l in range(NL):
                q.res0[l] *= f[l]
        else:
            for l in range(NL):
                q.res1[l] *= f[l]
        q.last_t3 = t
    if inc == 0:
        for l in range(NL):
            r = v - node_mean(me, l)
            q.cf3[l] += r * q.res1[l]
            q.w3[l] += 1.0
            q.res0[l] = r
    else:
        for l in range(NL):
            r = v - node_mean(me, l)
            q.cf3[l] += r * q.res0[l]
            q.w3[l] += 1.0
            q.res1[l] = r
    db.pair_updates += 1


cdef void node_insert(DB *db, int32_t ni, double v, double t) noexcept nogil:
    cdef Node *nd = &db.nodes[ni]
    cdef double dt, v2
    cdef int32_t k
    cdef int l
    if db.jitter:
        dt = t - nd.last_t
        v = dt if dt > 0 else 0.0
    node_decay(db, nd, t)
    v2 = cpow(v, 2.0)
    for l in range(NL):
        nd.cf1[l] += v
        nd.cf2[l] += v2
        nd.w[l] += 1.0
        nd.mean[l] = NAN
        nd.var[l] = NAN
        nd.std[l] = NAN
    for k in range(nd.npairs):  # every pair of the stream, in registration order
        pair_update(db, nd.pairs[k], ni, v, t)


cdef inline void pair_stats(DB *db, Pair *q, int l, double *o) noexcept nogil:
    """[radius, magnitude, cov, pcc]; the radius squares the variances."""
    cdef Node *a = &db.nodes[q.s[0]]
    cdef Node *b = &db.nodes[q.s[1]]
    cdef double x, cov, ss
    x = cpow(node_var(a, l), 2.0)
    o[0] = sqrt(x + cpow(node_var(b, l), 2.0))
    x = cpow(node_mean(a, l), 2.0)
    o[1] = sqrt(x + cpow(node_mean(b, l), 2.0))
    cov = q.cf3[l] / q.w3[l]
    o[2] = cov
    ss = node_std(a, l) * node_std(b, l)
    o[3] = cov / ss if ss != 0 else 0.0


cdef int update_1d(DB *db, const char *key, int n, double t, double v,
                   double *o) noexcept nogil:
    """Insert into the stream of ``key``; o[3 * l ...] = [w, mean, var]."""
    cdef int32_t ni = lookup(db, key, n, t)
    cdef int l
    if ni < 0:
        return -1
    node_insert(db, ni, v, t)
    for l in range(NL):
        node_stats_1d(&db.nodes[ni], l, o + 3 * l)
    return 0


cdef int update_1d2d(DB *db, const char *k1, int n1, const char *k2, int n2, double t,
                     double v, double *o) noexcept nogil:
    """Insert into stream k1, then update its pair with k2 (once more);
    o[7 * l ...] = [w, mean, var, radius, magnitude, cov, pcc]."""
    cdef int32_t i1, i2, pi = -1, k
    cdef Node *nd
    cdef Pair *q
    cdef int l
    i1 = lookup(db, k1, n1, t)
    if i1 < 0:
        return -1
    node_insert(db, i1, v, t)
    for l in range(NL):
        node_stats_1d(&db.nodes[i1], l, o + 7 * l)
    i2 = lookup(db, k2, n2, t)  # may move db.nodes
    if i2 < 0:
        return -1
    nd = &db.nodes[i1]
    for k in range(nd.npairs):  # the first pair of k1 that holds k2
        q = &db.pairs[nd.pairs[k]]
        if q.s[0] == i2 or q.s[1] == i2:
            pi = nd.pairs[k]
            break
    if pi < 0:
        pi = pair_new(db, i1, i2, t)
        if pi < 0:
            return -1
    pair_update(db, pi, i1, v, t)
    q = &db.pairs[pi]
    for l in range(NL):
        pair_stats(db, q, l, o + 7 * l + 3)
    return 0


# ------------------------------------------------------------------ the extractor

cdef class AfterImage:
    """The four databases of the reference (MI, H, jit, HpHp) and their state.

    ``evict_idle`` > 0 drops keys that no packet referred to for that many
    seconds (checked every ``evict_idle`` seconds of trace time), with their
    pairs; 0 keeps every key, as the reference does.
    """

    cdef DB dbs[4]
    cdef double evict_idle
    cdef double next_sweep
    cdef int64_t packets
    cdef int64_t mirrors
    cdef int64_t sweeps

    def __cinit__(self, double evict_idle=0.0):
        cdef int d
        for d in range(4):
            memset(&self.dbs[d], 0, sizeof(DB))
        for d in range(4):
            if db_init(&self.dbs[d], d == DB_JIT) < 0:
                raise MemoryError("AfterImage: cannot allocate the hash tables")
        self.evict_idle = evict_idle
        self.next_sweep = NAN
        self.packets = 0
        self.mirrors = 0
        self.sweeps = 0

    def __dealloc__(self):
        cdef int d
        for d in range(4):
            db_free(&self.dbs[d])

    cdef int sweep(self, double t) noexcept nogil:
        cdef int d
        if isnan(self.next_sweep):
            self.next_sweep = t + self.evict_idle
            return 0
        if not (t >= self.next_sweep):
            return 0
        self.sweeps += 1
        self.next_sweep = t + self.evict_idle
        for d in range(4):
            if db_sweep(&self.dbs[d], t - self.evict_idle) < 0:
                return -1
        return 0

    cdef int packet(self, double t, double v, uint64_t smac, uint64_t dmac, uint8_t proto,
                    uint8_t sfam, const uint8_t *saddr, uint8_t dfam, const uint8_t *daddr,
                    uint16_t sport, uint16_t dport, double *o) noexcept nogil:
        cdef char smac_s[17]
        cdef char dmac_s[17]
        cdef char sip[48]
        cdef char dip[48]
        cdef char k1[KEYMAX]
        cdef char k2[KEYMAX]
        cdef int nsip, ndip, n1, n2
        if self.evict_idle > 0 and self.sweep(t) < 0:
            return -1
        fmt_mac(smac_s, smac)
        nsip = fmt_addr(sip, sfam, saddr)
        ndip = fmt_addr(dip, dfam, daddr)
        # MI: srcMAC + srcIP
        memcpy(k1, smac_s, 17)
        memcpy(k1 + 17, sip, nsip)
        if update_1d(&self.dbs[DB_MI], k1, 17 + nsip, t, v, o + OFF_MI) < 0:
            return -1
        # HH: srcIP, paired with dstIP
        if update_1d2d(&self.dbs[DB_H], sip, nsip, dip, ndip, t, v, o + OFF_HH) < 0:
            return -1
        # HH_jit: srcIP + dstIP, value = inter-arrival time
        memcpy(k1, sip, nsip)
        memcpy(k1 + nsip, dip, ndip)
        if update_1d(&self.dbs[DB_JIT], k1, nsip + ndip, t, 0.0, o + OFF_JIT) < 0:
            return -1
        # HpHp: srcIP + srcport <-> dstIP + dstport; ARP: srcMAC <-> dstMAC
        if proto == P_ARP:
            fmt_mac(dmac_s, dmac)
            return update_1d2d(&self.dbs[DB_HPHP], smac_s, 17, dmac_s, 17, t, v,
                               o + OFF_HPHP)
        memcpy(k1, sip, nsip)
        n1 = nsip + fmt_port(k1 + nsip, proto, sport)
        memcpy(k2, dip, ndip)
        n2 = ndip + fmt_port(k2 + ndip, proto, dport)
        return update_1d2d(&self.dbs[DB_HPHP], k1, n1, k2, n2, t, v, o + OFF_HPHP)

    def process(self, const double[::1] ts, const uint32_t[::1] frame_len,
                const uint64_t[::1] eth_src, const uint64_t[::1] eth_dst,
                const uint8_t[::1] proto, const uint8_t[::1] src_family,
                const uint8_t[::1] dst_family, const uint8_t[:, ::1] src_addr,
                const uint8_t[:, ::1] dst_addr, const uint16_t[::1] sport,
                const uint16_t[::1] dport, const uint8_t[::1] mirror,
                double[:, ::1] out) -> None:
        """Update the state with n packets in order (IN: the PacketBatch columns,
        length n, addresses n x 16; OUT: ``out``, n x 100). Shapes are checked by
        the wrapper. Raises MemoryError (state then unusable) when out of memory."""
        cdef Py_ssize_t i, n = ts.shape[0]
        cdef int rc = 0
        cdef int64_t nm = 0
        with nogil:
            for i in range(n):
                rc = self.packet(ts[i], <double>frame_len[i], eth_src[i], eth_dst[i],
                                 proto[i], src_family[i], &src_addr[i, 0], dst_family[i],
                                 &dst_addr[i, 0], sport[i], dport[i], &out[i, 0])
                if rc < 0:
                    break
                if mirror[i]:
                    nm += 1
        if rc < 0:
            raise MemoryError("AfterImage: out of memory while adding keys or pairs")
        self.packets += n
        self.mirrors += nm

    def counters(self) -> dict:
        """packets, mirrors, sweeps, and per database (mi, h, jit, hphp): keys
        live and evicted; for h and hphp also pairs live, evicted and updates."""
        cdef int d
        out = {"packets": self.packets, "mirrors": self.mirrors, "sweeps": self.sweeps}
        names = ("mi", "h", "jit", "hphp")
        for d in range(4):
            out[f"keys_{names[d]}"] = self.dbs[d].live_nodes
            out[f"keys_evicted_{names[d]}"] = self.dbs[d].evicted_nodes
            if d == DB_H or d == DB_HPHP:
                out[f"pairs_{names[d]}"] = self.dbs[d].live_pairs
                out[f"pairs_evicted_{names[d]}"] = self.dbs[d].evicted_pairs
                out[f"pair_updates_{names[d]}"] = self.dbs[d].pair_updates
        return out
