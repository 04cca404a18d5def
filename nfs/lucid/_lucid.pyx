# cython: language_level=3
"""LUCID's feature extraction kernel: frames in, (flow, window) fragments out.

Private; the public API is :mod:`lego.nfs.lucid.features`, the specification
:mod:`lego.nfs.lucid.features_spec` (with :mod:`lego.nfs.lucid.dissect_spec` for
what Wireshark says of a frame). One pass over a capture's frames, in order,
without the GIL: the window clock, the dissection (headers, the application layer
by port, TCP's relative acknowledgement numbers and TLS's record state), and the
flow table, an open-addressing hash table keyed by the 5-tuple with its endpoints
ordered, so that a packet and its reply find one entry.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

include "_tls.pxi"

cdef enum:
    NF = 11  # features per packet
    TCP = 6
    UDP = 17
    ICMP = 1
    IGMP = 2
    SYN = 0x002
    ACK = 0x010

# the kinds of application layer a port leads to (lego.nfs.lucid.wireshark: PLAIN ...)
cdef enum:
    K_PLAIN = 0  # the port's dissector, whatever the payload
    K_HTTP = 1
    K_TLS = 2
    K_DNS = 3
    K_SNMP = 4
    K_NBDGM = 5
    K_OPENFLOW = 6

# protocol-vocabulary bits (dissect_spec.VOCABULARY)
cdef enum:
    B_ARP = 1 << 0
    B_DATA = 1 << 1
    B_ICMP = 1 << 5
    B_IP = 1 << 6
    B_TCP = 1 << 9
    B_UDP = 1 << 11

# highest-layer names the kernel itself gives (wireshark.BASE_NAMES, in this order)
cdef enum:
    H_TCP = 0
    H_UDP = 1
    H_ICMP = 2
    H_DATA = 3
    H_IGMP = 4
    H_SHORT = 5
    H_MALFORMED = 6
    H_SMB = 7
    H_BROWSER = 8
    H_TLS = 9
    H_TEXT_LINES = 10
    H_H1 = 11
    H_OPENFLOW = 12  # then OPENFLOW_V1, _V4, _V5, _V6


cdef struct Flow:
    uint64_t k0  # lower endpoint's address << 32 | higher endpoint's address
    uint64_t k1  # lower port << 24 | higher port << 8 | proto; 0 marks an empty slot...
    uint8_t used  # ...with this flag, since a key may be all zero
    int64_t id  # creation order (LUCID's flow order)
    double window  # the window of the open fragment (valid when frag >= 0)
    int64_t frag  # index of the flow's fragment in the current window, -1 if none
    uint32_t base[2]  # TCP base sequence number per direction (0: from the lower end)
    uint8_t base_set[2]
    uint32_t next_seq[2]  # TCP: end of the data seen per direction
    uint8_t next_set[2]
    TlsConv *tls  # the TLS conversation's state (NULL until a TLS payload)
    OpenFlowConv *of  # the OpenFlow conversation's state (NULL until one)
    int16_t owner  # 1 + the app a TCP heuristic gave the conversation (0: none)


cdef inline uint64_t mix64(uint64_t x) noexcept nogil:
    x ^= x >> 30
    x *= <uint64_t>0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= <uint64_t>0x94D049BB133111EB
    x ^= x >> 31
    return x


cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef struct Pkt:
    uint32_t src
    uint32_t dst
    uint16_t sport
    uint16_t dport
    uint8_t proto  # the key's: TCP, UDP, ICMP, or 0 for other IPv4
    uint8_t ip_proto
    bint fragment  # an IP fragment: no layer above IP is read
    int ihl
    Py_ssize_t body  # where the IP payload starts and ends in the frame
    Py_ssize_t end
    double f[NF]
    int highest
    int64_t mask


cdef class Extractor:
    """LUCID's offline extraction over a capture given in batches of frames
    (:meth:`feed`), fragments read out at the end (:meth:`fragments`)."""

    cdef double t
    cdef int n
    cdef double start
    cdef bint started
    cdef int64_t frames_seen
    cdef bint out_of_memory
    # the flow table
    cdef Flow *table
    cdef int64_t cap
    cdef int64_t count
    # flows' stored keys, by creation order
    cdef object keys
    # fragments
    cdef double *raw
    cdef int64_t *frag_flow
    cdef double *frag_window
    cdef int64_t *frag_first
    cdef int32_t *frag_n
    cdef int64_t nfrag
    cdef int64_t frag_cap
    # dissection tables (lego.nfs.lucid.wireshark.kernel_tables)
    cdef int16_t[::1] tcp_app
    cdef int16_t[::1] udp_to
    cdef int16_t[::1] udp_from
    cdef uint8_t[::1] app_kind
    cdef uint8_t[::1] app_binary
    cdef int32_t[::1] app_highest
    cdef int64_t[::1] app_mask
    cdef double[::1] name_hash

    def __cinit__(self, double t, int n, tcp_app, udp_to, udp_from, app_kind, app_binary,
                  app_highest, app_mask, name_hash):
        if not t > 0 or n < 1:
            raise ValueError(f"LUCID extractor: expected t > 0 and n >= 1, got t={t}, n={n}")
        self.t, self.n = t, n
        self.started = False
        self.cap = 1024
        self.table = <Flow *>calloc(self.cap, sizeof(Flow))
        self.frag_cap = 1024
        self.raw = <double *>calloc(self.frag_cap * n * NF, sizeof(double))
        self.frag_flow = <int64_t *>calloc(self.frag_cap, sizeof(int64_t))
        self.frag_window = <double *>calloc(self.frag_cap, sizeof(double))
        self.frag_first = <int64_t *>calloc(self.frag_cap, sizeof(int64_t))
        self.frag_n = <int32_t *>calloc(self.frag_cap, sizeof(int32_t))
        if (self.table == NULL or self.raw == NULL or self.frag_flow == NULL
                or self.frag_window == NULL or self.frag_first == NULL or self.frag_n == NULL):
            raise MemoryError()
        self.keys = []
        self.tcp_app, self.udp_to, self.udp_from = tcp_app, udp_to, udp_from
        self.app_kind, self.app_binary = app_kind, app_binary
        self.app_highest, self.app_mask = app_highest, app_mask
        self.name_hash = name_hash

    def __dealloc__(self):
        cdef int64_t i
        if self.table != NULL:
            for i in range(self.cap):
                if self.table[i].used:
                    tls_free(self.table[i].tls)
                    free(self.table[i].of)
        free(self.table)
        free(self.raw)
        free(self.frag_flow)
        free(self.frag_window)
        free(self.frag_first)
        free(self.frag_n)

    # ------------------------------------------------------------ the pass

    def feed(self, const uint8_t[::1] buffer, const int64_t[::1] offsets,
             const uint32_t[::1] caplens, const double[::1] ts, const uint16_t[::1] linktypes,
             const double[::1] windows=None, const int64_t[::1] index=None,
             int64_t[::1] flow_ids=None):
        """Take the next frames of the capture, in order. ``windows``: each frame's window
        as the switch stamped it, any increasing number (a replica sees only its share
        of the frames, so it cannot keep the clock itself); ``index``: each frame's index
        in the capture (default: counted from 0 over the frames fed); ``flow_ids``
        (filled in): the flow each frame joined, -1 for a frame that is not IPv4."""
        cdef Py_ssize_t i, m = offsets.shape[0]
        cdef Pkt p
        cdef Flow *flow
        cdef const uint8_t *fr
        cdef bint stamped = windows is not None, indexed = index is not None
        cdef bint tell = flow_ids is not None
        if ((stamped and windows.shape[0] != m) or (indexed and index.shape[0] != m)
                or (tell and flow_ids.shape[0] != m)):
            raise ValueError(f"feed: expected windows, index and flow_ids for each of the "
                             f"{m} frames")
        check_frames(buffer, offsets, caplens, linktypes, ts)
        for i in range(m):
            if tell:
                flow_ids[i] = -1
            if stamped:
                self.start, self.started = windows[i], True
            elif not self.started or ts[i] > self.start + self.t:
                self.start, self.started = ts[i], True
            fr = &buffer[offsets[i]]
            if not ipv4(fr, caplens[i], linktypes[i], &p):
                continue
            flow = self.lookup(&p)
            if flow == NULL:
                raise MemoryError()
            if p.proto == TCP:
                self.tcp(fr, flow, &p)
            elif p.proto == UDP:
                self.udp(fr, &p)
            elif p.proto == ICMP:
                self.icmp(fr, &p)
            elif p.ip_proto == IGMP and not p.fragment:
                p.highest, p.mask = H_IGMP, B_IP
            if self.out_of_memory:
                raise MemoryError()
            p.f[0] = ts[i]
            p.f[2] = self.name_hash[p.highest]
            p.f[4] = p.mask
            if not self.store(flow, &p, index[i] if indexed else self.frames_seen + i):
                raise MemoryError()
            if tell:
                flow_ids[i] = flow.id
        self.frames_seen += m

    # ------------------------------------------------------------ dissection

    cdef void tcp(self, const uint8_t *fr, Flow *flow, Pkt *p) noexcept:
        cdef const uint8_t *h = fr + p.body
        cdef uint32_t seq = be32(h + 4), ack = be32(h + 8)
        cdef int hlen = (h[12] >> 4) * 4, flags = be16(h + 12) & 0x0FFF
        cdef int d = 0 if src_is_low(p) else 1
        cdef Py_ssize_t payload = p.body + hlen
        cdef int app
        p.f[5] = max(0, <int>p.f[1] - p.ihl - hlen)
        p.f[7], p.f[8] = flags, be16(h + 14)
        if (flags & (SYN | ACK)) == SYN and flow.base_set[d] and seq != flow.base[d]:
            reset_conversation(flow)  # Wireshark: "TCP port numbers reused"
        if not flow.base_set[d]:
            flow.base[d] = seq if flags & SYN else seq - 1
            flow.base_set[d] = 1
        if flags & ACK:
            if not flow.base_set[1 - d]:
                flow.base[1 - d], flow.base_set[1 - d] = ack - 1, 1
            p.f[6] = <uint32_t>(ack - flow.base[1 - d])
        p.highest, p.mask = H_TCP, B_IP | B_TCP
        if payload < p.end and keep_alive(flow, d, seq, <uint32_t>p.f[5]):
            p.highest, p.mask = H_DATA, p.mask | B_DATA  # its byte goes to "data"
            return
        if retransmits(flow, d, seq, <uint32_t>p.f[5]):
            return  # Wireshark hands a retransmission to no application dissector
        advance(flow, d, seq, <uint32_t>p.f[5])
        if payload >= p.end:
            return
        app = flow.owner - 1 if flow.owner else self.port_app(self.tcp_app, p.sport, p.dport)
        if app < 0:
            app = self.tcp_heuristic(fr + payload, p.end - payload, p.dport)
            flow.owner = app + 1
        if app < 0:
            p.highest, p.mask = H_DATA, p.mask | B_DATA
        elif self.app_kind[app] == K_TLS:
            if not self.tls(fr + payload, p.end - payload, seq, flow, d, p):
                self.out_of_memory = True
        elif self.app_kind[app] == K_OPENFLOW:
            if not openflow(fr + payload, p.end - payload, flow, d, p):
                self.out_of_memory = True
        elif self.app_kind[app] == K_HTTP:
            self.http(fr + payload, p.end - payload, app, p)
        else:
            p.highest, p.mask = self.app_highest[app], p.mask | self.app_mask[app]

    cdef void udp(self, const uint8_t *fr, Pkt *p) noexcept:
        """The lower port's dissector, then the other's (wireshark.udp_layers)."""
        cdef int first, second
        cdef const uint8_t *pl = fr + p.body + 8
        cdef Py_ssize_t captured = p.end - p.body - 8
        cdef Py_ssize_t reported = <Py_ssize_t>be16(fr + p.body + 4) - 8
        p.f[9] = reported + 8
        p.highest, p.mask = H_UDP, B_IP | B_UDP
        if p.sport < p.dport:
            first, second = self.udp_from[p.sport], self.udp_to[p.dport]
        else:
            first, second = self.udp_to[p.dport], self.udp_from[p.sport]
        if first >= 0 and self.name_app(first, pl, captured, reported, p):
            return
        if second >= 0 and self.name_app(second, pl, captured, reported, p):
            return
        if reported > 0:
            p.highest, p.mask = H_DATA, p.mask | B_DATA

    cdef bint name_app(self, int app, const uint8_t *pl, Py_ssize_t captured,
                       Py_ssize_t reported, Pkt *p) noexcept:
        """What ``app``'s dissector names the datagram (wireshark.app_layers); False
        when it declines."""
        cdef int kind = self.app_kind[app]
        cdef Py_ssize_t need
        if kind == K_SNMP and (captured < 1 or pl[0] != 0x30):
            return False
        p.highest, p.mask = self.app_highest[app], p.mask | self.app_mask[app]
        if kind == K_NBDGM and captured >= 86 and pl[82] == 0xFF and pl[83] == 0x53 \
                and pl[84] == 0x4D and pl[85] == 0x42:
            p.highest = H_BROWSER if contains(pl, captured, b"\\MAILSLOT\\BROWSE") else H_SMB
        elif kind == K_DNS:
            need = dns_extent(pl, captured)
            if need > reported:
                p.highest = H_MALFORMED
            elif need > captured:
                p.highest = H_SHORT
        elif self.app_binary[app] and captured < reported:  # the capture cut the datagram
            p.highest = H_SHORT
        return True

    cdef inline int udp_app(self, int sport, int dport) noexcept:
        """The lower port's dissector first (wireshark.udp_apps), named by direction."""
        cdef int app
        if sport < dport:
            app = self.udp_from[sport]
            return app if app >= 0 else self.udp_to[dport]
        app = self.udp_to[dport]
        return app if app >= 0 else self.udp_from[sport]

    cdef inline int port_app(self, const int16_t[::1] table, int sport, int dport) noexcept:
        """Wireshark tries the lower port's dissector first."""
        cdef int low = min(sport, dport), high = max(sport, dport)
        return table[low] if table[low] >= 0 else table[high]

    cdef void icmp(self, const uint8_t *fr, Pkt *p) noexcept:
        """ICMP's type; an error quotes the datagram's IP header and the start of its
        payload, which Wireshark dissects too (into frame.protocols, not the highest
        layer)."""
        cdef const uint8_t *h = fr + p.body
        cdef Py_ssize_t q = p.body + 8, qihl, qend
        cdef int app, t = h[0]
        p.f[10] = t
        p.highest, p.mask = H_ICMP, B_IP | B_ICMP
        if t in (3, 4, 5, 11, 12) and p.end - q >= 20 and fr[q] >> 4 == 4:
            qihl = (fr[q] & 0x0F) * 4
            qend = q + qihl
            if fr[q + 9] == TCP and p.end - qend >= 8:
                p.mask |= B_TCP
            elif fr[q + 9] == UDP and p.end - qend >= 8:
                p.mask |= B_UDP
                if p.end > qend + 8:
                    app = self.udp_app(be16(fr + qend), be16(fr + qend + 2))
                    p.mask |= self.app_mask[app] if app >= 0 else B_DATA
                    p.highest = self.app_highest[app] if app >= 0 else H_DATA
        elif p.end > q:
            p.mask |= B_DATA

    cdef void http(self, const uint8_t *pl, Py_ssize_t m, int app, Pkt *p) noexcept:
        """An HTTP message in one segment; a body adds data-text-lines (text/*, the
        highest layer) or data (dissect_spec._http)."""
        cdef int body
        p.highest, p.mask = self.app_highest[app], p.mask | self.app_mask[app]
        if not http_start(pl, m):
            return
        body = http_body(pl, m)
        if body > 0:
            p.mask |= B_DATA
        if body == 2:
            p.highest = H_TEXT_LINES

    cdef int tcp_heuristic(self, const uint8_t *pl, Py_ssize_t m, int dport) noexcept:
        """The app a TCP heuristic claims the conversation for, or -1
        (wireshark.tcp_heuristic)."""
        cdef int length
        if dport == 6633 or dport == 6634 or dport == 6653:
            return self.tcp_app[6653]
        if m >= 5 and (pl[0] == 22 or pl[0] == 23):
            length = be16(pl + 3)
            if (be16(pl + 1) in (0x0300, 0x0301, 0x0302, 0x0303, 0x0101)
                    and 0 < length < 16384 + 2048):
                return self.tcp_app[443]
        if (m >= 46 and pl[0] == 0x80 and pl[2] == 1 and be16(pl + 5) > 0
                and be16(pl + 5) % 3 == 0 and (be16(pl + 7) == 0 or be16(pl + 7) == 16)
                and be16(pl + 9) == 32):
            return self.tcp_app[443]
        return -1

    cdef bint tls(self, const uint8_t *pl, Py_ssize_t m, uint32_t seq, Flow *flow, int d,
                  Pkt *p) noexcept:
        """TLS's layers for this segment (_tls.pxi); False when out of memory."""
        cdef uint8_t layers[TL_MAX]
        cdef int count, i
        if flow.tls == NULL:
            flow.tls = tls_new()
            if flow.tls == NULL:
                return False
        count = tls_segment(flow.tls, pl, m, <int64_t><uint32_t>(seq - flow.base[d]),
                            d == 0, layers)
        if count < 0:
            return False
        p.highest = H_TCP
        for i in range(count):
            if layers[i] == TL_DATA:
                p.mask |= B_DATA
            p.highest = (H_TLS if layers[i] == TL_TLS else H_DATA if layers[i] == TL_DATA
                         else H_MALFORMED if layers[i] == TL_MALFORMED else H_H1)
        return True

    # ------------------------------------------------------------ the flow table

    cdef Flow *lookup(self, Pkt *p) noexcept:
        """The flow's entry (created, with the packet's direction stored, if new)."""
        cdef bint low = src_is_low(p)
        cdef uint64_t k0, k1
        cdef Flow *f
        if low:
            k0 = (<uint64_t>p.src << 32) | p.dst
            k1 = (<uint64_t>p.sport << 24) | (<uint64_t>p.dport << 8) | p.proto
        else:
            k0 = (<uint64_t>p.dst << 32) | p.src
            k1 = (<uint64_t>p.dport << 24) | (<uint64_t>p.sport << 8) | p.proto
        f = self.slot(k0, k1)
        if f.used:
            return f
        if 2 * (self.count + 1) > self.cap:
            if not self.grow():
                return NULL
            f = self.slot(k0, k1)
        memset(f, 0, sizeof(Flow))
        f.used, f.k0, f.k1 = 1, k0, k1
        f.id, f.frag = self.count, -1
        self.count += 1
        self.keys.append((p.src, p.sport, p.dst, p.dport, p.proto))
        return f

    cdef inline Flow *slot(self, uint64_t k0, uint64_t k1) noexcept:
        cdef uint64_t mask = <uint64_t>self.cap - 1
        cdef uint64_t i = mix64(k0 ^ mix64(k1)) & mask
        while self.table[i].used and (self.table[i].k0 != k0 or self.table[i].k1 != k1):
            i = (i + 1) & mask
        return &self.table[i]

    cdef bint grow(self) noexcept:
        cdef Flow *old = self.table
        cdef int64_t i, n = self.cap
        cdef Flow *f
        self.table = <Flow *>calloc(2 * n, sizeof(Flow))
        if self.table == NULL:
            self.table = old
            return False
        self.cap = 2 * n
        for i in range(n):
            if old[i].used:
                f = self.slot(old[i].k0, old[i].k1)
                f[0] = old[i]
        free(old)
        return True

    cdef bint store(self, Flow *flow, Pkt *p, int64_t index) noexcept:
        """LUCID's store_packet: into the flow's fragment of this window while it holds
        fewer than n packets; a flow's first packet in a window opens its fragment."""
        cdef int64_t k
        cdef int j
        if flow.frag >= 0 and flow.window == self.start:
            k = flow.frag
            if self.frag_n[k] >= self.n:
                return True
        else:
            if self.nfrag == self.frag_cap and not self.grow_fragments():
                return False
            k = self.nfrag
            self.nfrag += 1
            flow.frag, flow.window = k, self.start
            self.frag_flow[k], self.frag_window[k], self.frag_first[k] = flow.id, self.start, index
            self.frag_n[k] = 0
        for j in range(NF):
            self.raw[(k * self.n + self.frag_n[k]) * NF + j] = p.f[j]
        self.frag_n[k] += 1
        return True

    cdef bint grow_fragments(self) noexcept:
        cdef int64_t c = 2 * self.frag_cap, rows = self.n * NF
        if not (regrow(<void **>&self.raw, c * rows * sizeof(double))
                and regrow(<void **>&self.frag_flow, c * sizeof(int64_t))
                and regrow(<void **>&self.frag_window, c * sizeof(double))
                and regrow(<void **>&self.frag_first, c * sizeof(int64_t))
                and regrow(<void **>&self.frag_n, c * sizeof(int32_t))):
            return False
        memset(self.raw + self.frag_cap * rows, 0, self.frag_cap * rows * sizeof(double))
        self.frag_cap = c
        return True

    # ------------------------------------------------------------ results

    def frame_keys(self, const uint8_t[::1] buffer, const int64_t[::1] offsets,
                   const uint32_t[::1] caplens, const uint16_t[::1] linktypes):
        """LUCID's flow key (src, sport, dst, dport, proto) of each frame as sent: the
        outer header's ports (an ICMP error's are 0, not the quoted ones); -1 rows
        for frames that are not IPv4."""
        check_frames(buffer, offsets, caplens, linktypes)
        out = np.full((offsets.shape[0], 5), -1, dtype=np.int64)
        cdef int64_t[:, ::1] o = out
        cdef Py_ssize_t i
        cdef Pkt p
        for i in range(offsets.shape[0]):
            if ipv4(&buffer[offsets[i]], caplens[i], linktypes[i], &p):
                o[i, 0], o[i, 1], o[i, 2], o[i, 3], o[i, 4] = p.src, p.sport, p.dst, p.dport, p.proto
        return out

    def clock(self, const double[::1] ts):
        """The window start of each frame (LUCID's clock, which the switch keeps): what
        :meth:`feed` takes as ``windows``. Advances this extractor's clock."""
        out = np.empty(ts.shape[0])
        cdef double[::1] o = out
        cdef Py_ssize_t i
        for i in range(ts.shape[0]):
            if not self.started or ts[i] > self.start + self.t:
                self.start, self.started = ts[i], True
            o[i] = self.start
        return out

    def fragments(self):
        """(flow id, window, first frame, packets, raw features) per fragment in LUCID's
        order (by flow, then window), the time column made relative, and the flows'
        stored keys (src, sport, dst, dport, proto) by flow id."""
        cdef int64_t F = self.nfrag
        raw = np.asarray(<double[:max(F, 1) * self.n * NF]>self.raw)[:F * self.n * NF].copy()
        raw = raw.reshape(F, self.n, NF)
        flow = np.asarray(<int64_t[:max(F, 1)]>self.frag_flow)[:F].copy()
        window = np.asarray(<double[:max(F, 1)]>self.frag_window)[:F].copy()
        first = np.asarray(<int64_t[:max(F, 1)]>self.frag_first)[:F].copy()
        npkts = np.asarray(<int32_t[:max(F, 1)]>self.frag_n)[:F].astype(np.int64)
        order = np.argsort(flow, kind="stable")
        raw = raw[order]
        rows = np.arange(self.n)[None, :] < npkts[order][:, None]
        t0 = np.where(rows, raw[:, :, 0], np.inf).min(axis=1)
        raw[:, :, 0] = np.where(rows, raw[:, :, 0] - t0[:, None], 0.0)
        return (flow[order], window[order], first[order], npkts[order], raw,
                np.array(self.keys, dtype=np.int64).reshape(-1, 5))

    # ------------------------------------------------------------ live: windows and moves

    def flow_keys(self):
        """The flows' stored keys (src, sport, dst, dport, proto), by flow id."""
        return np.array(self.keys, dtype=np.int64).reshape(-1, 5)

    def pop_fragments(self, double before):
        """The fragments of the windows before ``before`` (closed: every later frame is
        stamped ``before`` or later), removed, in the order they opened: (flow id,
        window, first frame, packets, raw features, the time column made relative).
        The flows keep their state (stored direction, TCP base numbers, TLS)."""
        cdef int64_t k, F = self.nfrag
        cdef int64_t rows = self.n * NF
        out = np.zeros(F, dtype=np.uint8)
        cdef uint8_t[::1] take = out
        for k in range(F):
            take[k] = self.frag_window[k] < before
        idx = np.flatnonzero(out)
        raw = np.asarray(<double[:max(F, 1) * rows]>self.raw)[:F * rows].reshape(F, self.n, NF)[idx]
        flow = np.asarray(<int64_t[:max(F, 1)]>self.frag_flow)[:F][idx]
        window = np.asarray(<double[:max(F, 1)]>self.frag_window)[:F][idx]
        first = np.asarray(<int64_t[:max(F, 1)]>self.frag_first)[:F][idx]
        npkts = np.asarray(<int32_t[:max(F, 1)]>self.frag_n)[:F][idx].astype(np.int64)
        if len(idx) and not self.remove_fragments(take):
            raise MemoryError()
        filled = np.arange(self.n)[None, :] < npkts[:, None]
        t0 = np.where(filled, raw[:, :, 0], np.inf).min(axis=1) if len(idx) else np.zeros(0)
        raw[:, :, 0] = np.where(filled, raw[:, :, 0] - t0[:, None], 0.0)
        return flow, window, first, npkts, raw

    cdef bint remove_fragments(self, const uint8_t[::1] gone) noexcept:
        """Drop the flagged fragments, keep the others in order, and point each flow
        at its open fragment's new place; False (nothing changed) when out of memory."""
        cdef int64_t k, j = 0, rows = self.n * NF, F = self.nfrag
        cdef int64_t *moved = <int64_t *>calloc(max(F, 1), sizeof(int64_t))
        if moved == NULL:
            return False
        for k in range(F):
            if gone[k]:
                moved[k] = -1
                continue
            moved[k] = j
            if j != k:
                memcpy(self.raw + j * rows, self.raw + k * rows, rows * sizeof(double))
                self.frag_flow[j], self.frag_window[j] = self.frag_flow[k], self.frag_window[k]
                self.frag_first[j], self.frag_n[j] = self.frag_first[k], self.frag_n[k]
            j += 1
        memset(self.raw + j * rows, 0, (F - j) * rows * sizeof(double))
        self.nfrag = j
        for k in range(self.cap):
            if self.table[k].used and self.table[k].frag >= 0:
                self.table[k].frag = moved[self.table[k].frag]
        free(moved)
        return True

    def export_flows(self, flow_ids) -> bytes:
        """The state of these flows, in this order, as one blob for
        :meth:`import_flows`: each one's entry, stored key, TLS and OpenFlow
        conversations, and every fragment it has not yet handed out (the open one and
        any of a closed window not yet popped). KeyError for an id not here."""
        order = [int(i) for i in flow_ids]
        wanted = set(order)
        slots, frags = {}, {}
        cdef int64_t k, d, rows = self.n * NF, fr
        cdef Flow f
        cdef TlsConv c
        for k in range(self.cap):
            if self.table[k].used and self.table[k].id in wanted:
                slots[self.table[k].id] = k
        for k in range(self.nfrag):
            if self.frag_flow[k] in wanted:
                frags.setdefault(self.frag_flow[k], []).append(k)
        missing = wanted - slots.keys()
        if missing:
            raise KeyError(f"LUCID extractor: no flows {sorted(missing)[:5]}")
        parts = [_BLOB_MAGIC, np.array([self.n], dtype=np.int64).tobytes()]
        for fid in order:
            k = slots[fid]
            f = self.table[k]
            f.tls, f.of = NULL, NULL
            parts.append((<char *>&f)[:sizeof(Flow)])
            parts.append(np.asarray(self.keys[f.id], dtype=np.int64).tobytes())
            parts.append(bytes([self.table[k].tls != NULL, self.table[k].of != NULL]))
            if self.table[k].tls != NULL:
                c = self.table[k].tls[0]
                for d in range(2):
                    c.dir[d].all = NULL
                    if self.table[k].tls.dir[d].all == NULL:
                        c.dir[d].all_cap = 0
                parts.append((<char *>&c)[:sizeof(TlsConv)])
                for d in range(2):
                    if c.dir[d].all_cap:
                        parts.append((<char *>self.table[k].tls.dir[d].all)[:c.dir[d].all_cap])
            if self.table[k].of != NULL:
                parts.append((<char *>self.table[k].of)[:sizeof(OpenFlowConv)])
            mine = frags.get(fid, [])
            parts.append(np.array([len(mine)], dtype=np.int64).tobytes())
            for fr in mine:
                parts.append(np.array([self.frag_window[fr]]).tobytes())
                parts.append(np.array([self.frag_first[fr], self.frag_n[fr], fr == f.frag],
                                      dtype=np.int64).tobytes())
                parts.append((<char *>(self.raw + fr * rows))[:rows * sizeof(double)])
        return b"".join(parts)

    cdef void check_blob(self, bytes blob) except *:
        """The whole blob's layout, before :meth:`import_flows` changes anything: its
        magic and n, every length inside it, each fragment's packet count."""
        cdef const uint8_t *b = blob
        cdef Py_ssize_t at = 16, end = len(blob)
        cdef int64_t d, k, nfr, npkts, rows = self.n * NF
        cdef bint has_tls, has_of
        cdef TlsConv c
        _need(0, 16, end)
        if blob[:8] != _BLOB_MAGIC:
            raise ValueError("LUCID extractor: not a flow blob (export_flows writes them)")
        blob_n = int(np.frombuffer(blob[8:16], dtype=np.int64)[0])
        if blob_n != self.n:
            raise ValueError(f"LUCID extractor: a flow blob of n={blob_n} packets per "
                             f"fragment, this extractor keeps n={self.n}")
        while at < end:
            _need(at, sizeof(Flow) + 42, end)
            at += sizeof(Flow) + 40
            has_tls, has_of = b[at], b[at + 1]
            at += 2
            if has_tls:  # the conversation, then the bytes each direction kept
                _need(at, sizeof(TlsConv), end)
                memcpy(&c, b + at, sizeof(TlsConv))
                at += sizeof(TlsConv)
                for d in range(2):
                    if c.dir[d].all_cap < 0:
                        raise ValueError(f"LUCID extractor: a flow blob with a negative "
                                         f"length at byte {at}")
                    _need(at, c.dir[d].all_cap, end)
                    at += c.dir[d].all_cap
            if has_of:
                _need(at, sizeof(OpenFlowConv), end)
                at += sizeof(OpenFlowConv)
            _need(at, 8, end)
            nfr = np.frombuffer(blob[at:at + 8], dtype=np.int64)[0]
            at += 8
            if nfr < 0:
                raise ValueError(f"LUCID extractor: a flow blob with {nfr} fragments")
            for k in range(nfr):
                _need(at, 32 + rows * sizeof(double), end)
                npkts = np.frombuffer(blob[at + 16:at + 24], dtype=np.int64)[0]
                if not 1 <= npkts <= self.n:
                    raise ValueError(f"LUCID extractor: a fragment of {npkts} packets in a "
                                     f"flow blob of n={self.n}")
                at += 32 + rows * sizeof(double)

    def import_flows(self, bytes blob):
        """Flows from :meth:`export_flows` (of an extractor with the same n), each under
        a new local id; a flow already here is left as it is. The whole blob is checked
        first (:meth:`check_blob`): a bad one changes nothing. Returns (the new ids in
        the blob's order, -1 for a skipped one)."""
        cdef const uint8_t *b = blob
        cdef Py_ssize_t at = 16, end = len(blob)
        cdef int64_t d, fr, rows = self.n * NF
        cdef Flow incoming
        cdef Flow *f
        cdef TlsConv *c
        cdef bint has_tls, has_of
        self.check_blob(blob)
        ids = []
        while at < end:
            _need(at, sizeof(Flow) + 42, end)
            memcpy(&incoming, b + at, sizeof(Flow))
            at += sizeof(Flow)
            key = tuple(int(v) for v in np.frombuffer(blob[at:at + 40], dtype=np.int64))
            at += 40
            has_tls, has_of = b[at], b[at + 1]
            at += 2
            f = self.slot(incoming.k0, incoming.k1)
            skip = f.used
            if not skip:
                if 2 * (self.count + 1) > self.cap:
                    if not self.grow():
                        raise MemoryError()
                    f = self.slot(incoming.k0, incoming.k1)
                f[0] = incoming
                f.tls, f.of = NULL, NULL  # the blob's pointers were the exporter's
                f.id, f.frag = self.count, -1
                self.count += 1
                self.keys.append(key)
                ids.append(f.id)
            else:
                ids.append(-1)
            if has_tls:
                _need(at, sizeof(TlsConv), end)
                c = <TlsConv *>calloc(1, sizeof(TlsConv))
                if c == NULL:
                    raise MemoryError()
                memcpy(c, b + at, sizeof(TlsConv))
                at += sizeof(TlsConv)
                for d in range(2):
                    c.dir[d].all = NULL
                for d in range(2):
                    if c.dir[d].all_cap:
                        if c.dir[d].all_cap < 0 or at + c.dir[d].all_cap > end:
                            tls_free(c)
                            _need(at, max(c.dir[d].all_cap, 1), -1)
                        c.dir[d].all = <uint8_t *>malloc(c.dir[d].all_cap)
                        if c.dir[d].all == NULL:
                            tls_free(c)
                            raise MemoryError()
                        memcpy(c.dir[d].all, b + at, c.dir[d].all_cap)
                        at += c.dir[d].all_cap
                if skip:
                    tls_free(c)
                else:
                    f.tls = c
            if has_of:
                _need(at, sizeof(OpenFlowConv), end)
                if not skip:
                    f.of = <OpenFlowConv *>malloc(sizeof(OpenFlowConv))
                    if f.of == NULL:
                        raise MemoryError()
                    memcpy(f.of, b + at, sizeof(OpenFlowConv))
                at += sizeof(OpenFlowConv)
            _need(at, 8, end)
            nfr = np.frombuffer(blob[at:at + 8], dtype=np.int64)[0]
            at += 8
            for _ in range(nfr):
                _need(at, 32 + rows * sizeof(double), end)
                if not skip:
                    if self.nfrag == self.frag_cap and not self.grow_fragments():
                        raise MemoryError()
                    fr = self.nfrag
                    self.nfrag += 1
                    memcpy(&self.frag_window[fr], b + at, 8)
                    first, npkts, is_open = np.frombuffer(blob[at + 8:at + 32], dtype=np.int64)
                    self.frag_first[fr], self.frag_n[fr] = first, npkts
                    self.frag_flow[fr] = f.id
                    memcpy(self.raw + fr * rows, b + at + 32, rows * sizeof(double))
                    if is_open:
                        f.frag, f.window = fr, self.frag_window[fr]
                at += 32 + rows * sizeof(double)
        return np.array(ids, dtype=np.int64)

    def drop_flows(self, flow_ids) -> int:
        """Forget these flows and their open fragments (after a move); returns how many
        were here."""
        gone = set(int(i) for i in flow_ids)
        cdef int64_t k, dropped = 0
        marks = np.zeros(max(self.nfrag, 1), dtype=np.uint8)
        cdef uint8_t[::1] frag_gone = marks
        cdef Flow *old = self.table
        cdef Flow *f
        for k in range(self.nfrag):
            frag_gone[k] = self.frag_flow[k] in gone
        self.table = <Flow *>calloc(self.cap, sizeof(Flow))
        if self.table == NULL:
            self.table = old
            raise MemoryError()
        for k in range(self.cap):
            if not old[k].used:
                continue
            if old[k].id in gone:
                tls_free(old[k].tls)
                free(old[k].of)
                dropped += 1
                continue
            f = self.slot(old[k].k0, old[k].k1)
            f[0] = old[k]
        free(old)
        if not self.remove_fragments(frag_gone):
            raise MemoryError()
        return dropped


cdef enum:
    OF_HEAD = 512  # a message's bytes kept while it spans segments


cdef struct OpenFlowConv:
    int64_t missing[2]  # bytes still missing of a message; -1: a cut header
    int32_t kept[2]
    uint8_t head[2][OF_HEAD]


cdef bint openflow(const uint8_t *pl, Py_ssize_t m, Flow *flow, int d, Pkt *p) noexcept nogil:
    """OpenFlow messages across segments (dissect_spec.OpenFlowStream); False when out
    of memory."""
    cdef OpenFlowConv *c = flow.of
    cdef Py_ssize_t at = 0, take, used
    cdef int last = -1, n, version
    if c == NULL:
        c = flow.of = <OpenFlowConv *>calloc(1, sizeof(OpenFlowConv))
        if c == NULL:
            return False
    p.highest = H_TCP
    if c.missing[d] == -1:  # a cut header: complete it from this segment
        n = c.kept[d]
        take = min(m, <Py_ssize_t>(8 - n))
        memcpy(c.head[d] + n, pl, take)
        c.kept[d] += <int32_t>take
        if c.kept[d] < 8:
            return True
        if be16(c.head[d] + 2) < 8:  # a bogus length ends the tvb
            c.missing[d], c.kept[d] = 0, 0
            return True
        c.missing[d] = be16(c.head[d] + 2) - 8
        pl, m = pl + take, m - take
        if c.missing[d] == 0:
            last = of_message(c.head[d], 8, p)
    if c.missing[d] > 0:
        take = min(<Py_ssize_t>c.missing[d], m)
        n = <int>min(take, <Py_ssize_t>(OF_HEAD - c.kept[d]))
        memcpy(c.head[d] + c.kept[d], pl, n)
        c.kept[d] += n
        c.missing[d] -= take
        if c.missing[d]:
            return True  # inside the message: nothing dissected
        last = of_message(c.head[d], c.kept[d], p)
        at = take
    version = of_messages(pl + at, m - at, c, d, p, &used)
    if version >= 0:
        last = version
    if last >= 0:
        p.highest = H_OPENFLOW + last
    return True


cdef int of_messages(const uint8_t *pl, Py_ssize_t m, OpenFlowConv *c, int d, Pkt *p,
                     Py_ssize_t *used) noexcept nogil:
    """The whole messages of ``pl``; a message cut at the end is kept for the next
    segments. Returns the last message's version code (of_message), -1 for none."""
    cdef Py_ssize_t at = 0, length, rest
    cdef int last = -1
    while at < m:
        rest = m - at
        if rest < 8:
            c.missing[d], c.kept[d] = -1, <int32_t>rest
            memcpy(c.head[d], pl + at, rest)
            break
        length = be16(pl + at + 2)
        if length < 8:  # a bogus length ends the tvb
            break
        if length > rest:
            c.missing[d] = length - rest
            c.kept[d] = <int32_t>min(rest, <Py_ssize_t>OF_HEAD)
            memcpy(c.head[d], pl + at, c.kept[d])
            break
        last = of_message(pl + at, length, p)
        at += length
    used[0] = at
    return last


cdef int of_message(const uint8_t *msg, Py_ssize_t m, Pkt *p) noexcept nogil:
    """One message: its version's code (0 OPENFLOW, 1 V1, 2 V4, 3 V5, 4 V6), and the
    packet inside a packet-in or packet-out (the arp or the data bit)."""
    cdef int version = 1 if msg[0] == 1 else 2 if msg[0] == 4 else 3 if msg[0] == 5 \
        else 4 if msg[0] == 6 else 0
    cdef Py_ssize_t inner
    if msg[0] != 4 or m < 24:
        return version
    if msg[1] == 10:
        inner = 24 + ((be16(msg + 26) if m >= 28 else 0) + 7) // 8 * 8 + 2
    elif msg[1] == 13:
        inner = 24 + be16(msg + 16)
    else:
        return version
    if m - inner >= 14:
        p.mask |= inner_packet(be16(msg + inner + 12), msg + inner + 14, m - inner - 14)
    return version


cdef int64_t inner_packet(int ethertype, const uint8_t *body, Py_ssize_t m) noexcept nogil:
    """The protocols bits of a packet an OpenFlow message carries
    (dissect_spec._inner_packet)."""
    cdef int transport = -1
    if ethertype == 0x0806:
        return B_ARP
    if ethertype == 0x0800 and m >= 20 and body[0] >> 4 == 4:
        transport = body[9]
    elif ethertype == 0x86DD and m >= 40:
        transport = body[6]
    else:
        return B_DATA
    return (B_IP if ethertype == 0x0800 else 0) | (
        B_TCP if transport == 6 else B_UDP if transport == 17 else B_ICMP if transport == 1
        else 0)


def check_frames(buffer, offsets, caplens, linktypes, ts=None) -> None:
    """The kernel reads without bounds checks: every array one entry per frame, every
    frame inside the buffer."""
    m = len(offsets)
    if len(caplens) != m or len(linktypes) != m or (ts is not None and len(ts) != m):
        raise ValueError(f"LUCID extractor: expected offsets, caplens, linktypes and ts of one "
                         f"length, got {m}, {len(caplens)}, {len(linktypes)}, "
                         f"{None if ts is None else len(ts)}")
    if m and (np.asarray(offsets).min() < 0 or (np.asarray(offsets)
              + np.asarray(caplens, dtype=np.int64)).max() > len(buffer)):
        raise ValueError("LUCID extractor: a frame lies outside the buffer")


_BLOB_MAGIC = b"LUCIDFL1"  # export_flows' blobs: this, then n, then the flows


cdef inline void _need(Py_ssize_t at, Py_ssize_t size, Py_ssize_t end) except *:
    if end < 0 or at + size > end:
        raise ValueError(f"LUCID extractor: a flow blob cut short (byte {at} of {end})")


cdef bint regrow(void **block, size_t size) noexcept nogil:
    """realloc in place; False (the block untouched) when out of memory."""
    cdef void *r = realloc(block[0], size)
    if r == NULL:
        return False
    block[0] = r
    return True


cdef inline bint src_is_low(Pkt *p) noexcept nogil:
    return p.src < p.dst or (p.src == p.dst and p.sport <= p.dport)


cdef inline bint retransmits(Flow *f, int d, uint32_t seq, uint32_t length) noexcept nogil:
    """Whether a segment's payload was all seen before (dissect_spec.Direction)."""
    if length == 0 or not f.next_set[d]:
        return False
    return <uint32_t>(f.next_seq[d] - seq - length) < 0x80000000u


cdef inline void advance(Flow *f, int d, uint32_t seq, uint32_t length) noexcept nogil:
    cdef uint32_t end = seq + length
    if not f.next_set[d] or <uint32_t>(end - f.next_seq[d]) < 0x80000000u:
        f.next_seq[d], f.next_set[d] = end, 1


cdef inline bint keep_alive(Flow *f, int d, uint32_t seq, uint32_t length) noexcept nogil:
    """A one-byte probe one below the data seen (dissect_spec.Direction.keep_alive)."""
    return length == 1 and f.next_set[d] and f.next_seq[d] == seq + 1


cdef inline void reset_conversation(Flow *f) noexcept nogil:
    f.base_set[0] = f.base_set[1] = 0
    f.next_set[0] = f.next_set[1] = 0
    tls_free(f.tls)
    f.tls = NULL
    free(f.of)
    f.of = NULL
    f.owner = 0


cdef bint ipv4(const uint8_t *fr, Py_ssize_t caplen, int linktype, Pkt *p) noexcept nogil:
    """The frame's IPv4 header into ``p`` (key, lengths, flags); False if it has none."""
    cdef Py_ssize_t at = 0
    cdef int etype
    if linktype == 1:
        if caplen < 14:
            return False
        at, etype = 14, be16(fr + 12)
        while (etype == 0x8100 or etype == 0x88A8 or etype == 0x9100) and caplen >= at + 4:
            etype, at = be16(fr + at + 2), at + 4
        if etype != 0x0800:
            return False
    elif linktype == 113 or linktype == 276:  # Linux cooked captures (v1, v2)
        at = 16 if linktype == 113 else 20
        if caplen < at or be16(fr + (14 if linktype == 113 else 0)) != 0x0800:
            return False
    elif linktype != 228 and linktype != 12 and linktype != 101:
        return False
    if caplen < at + 20 or fr[at] >> 4 != 4 or (fr[at] & 0x0F) < 5:
        return False
    memset(p, 0, sizeof(Pkt))
    p.ihl = (fr[at] & 0x0F) * 4
    p.f[1] = be16(fr + at + 2)
    p.f[3] = fr[at + 6] >> 5
    p.src, p.dst = be32(fr + at + 12), be32(fr + at + 16)
    p.ip_proto = fr[at + 9]
    p.highest, p.mask = H_DATA, B_IP | B_DATA
    p.body = at + p.ihl
    p.end = min(caplen, at + max(<Py_ssize_t>p.f[1], p.ihl))
    if be16(fr + at + 6) & 0x3FFF:  # an IP fragment: Wireshark reassembles, we do not
        p.fragment = True
        return True
    if p.ip_proto == TCP and p.end - p.body >= 20:
        p.proto, p.sport, p.dport = TCP, be16(fr + p.body), be16(fr + p.body + 2)
    elif p.ip_proto == UDP and p.end - p.body >= 8:
        p.proto, p.sport, p.dport = UDP, be16(fr + p.body), be16(fr + p.body + 2)
    elif p.ip_proto == ICMP and p.end - p.body >= 4:
        p.proto = ICMP
    return True


cdef Py_ssize_t dns_extent(const uint8_t *pl, Py_ssize_t n) noexcept nogil:
    """How many bytes a DNS-format message claims (wireshark.dns_extent)."""
    cdef Py_ssize_t at = 12
    cdef int section, size
    cdef long count, i
    if n < 12:
        return 12
    for section in range(4):
        count = be16(pl + 4 + 2 * section)
        for i in range(count):
            while True:  # the name
                if at >= n:
                    return n + 1
                size = pl[at]
                if size == 0:
                    at += 1
                    break
                if size & 0xC0 == 0xC0:
                    at += 2
                    break
                at += 1 + (size & 0x3F)
            if at > n:
                return at
            at += 4 if section == 0 else 10
            if section and at <= n:
                at += be16(pl + at - 2)
            if at > n:
                return at
    return at


cdef bint contains(const uint8_t *pl, Py_ssize_t n, const char *word) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n):
        j = 0
        while word[j] != 0 and i + j < n and pl[i + j] == <uint8_t>word[j]:
            j += 1
        if word[j] == 0:
            return True
    return False


cdef bint starts(const uint8_t *pl, Py_ssize_t m, const char *word) noexcept nogil:
    cdef Py_ssize_t i = 0
    while word[i] != 0:
        if i >= m or pl[i] != <uint8_t>word[i]:
            return False
        i += 1
    return True


cdef bint http_start(const uint8_t *pl, Py_ssize_t m) noexcept nogil:
    """A request line or a status line (dissect_spec.HTTP_STARTS)."""
    return (starts(pl, m, b"GET ") or starts(pl, m, b"POST ") or starts(pl, m, b"PUT ")
            or starts(pl, m, b"HEAD ") or starts(pl, m, b"DELETE ")
            or starts(pl, m, b"OPTIONS ") or starts(pl, m, b"HTTP/"))


cdef int http_body(const uint8_t *pl, Py_ssize_t m) noexcept nogil:
    """0: no body after the header; 1: a body; 2: a body whose (last) Content-Type is
    text/* (dissect_spec._http)."""
    cdef Py_ssize_t i, line = 0, value
    cdef bint text = False
    for i in range(m - 1):
        if pl[i] != 13 or pl[i + 1] != 10:
            continue
        if i == line and line > 0:  # the empty line ending the header
            return 0 if i + 2 >= m else (2 if text else 1)
        if line > 0:
            value = header_value(pl + line, i - line, b"content-type")
            if value >= 0:
                text = lower_is(pl + line + value, i - line - value, b"text/")
        line = i + 2
    return 0


cdef inline uint8_t ascii_lower(uint8_t c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef bint lower_is(const uint8_t *p, Py_ssize_t n, const char *word) noexcept nogil:
    """Whether ``p`` starts with ``word`` (lower case), ASCII case-insensitively."""
    cdef Py_ssize_t i = 0
    while word[i] != 0:
        if i >= n or ascii_lower(p[i]) != <uint8_t>word[i]:
            return False
        i += 1
    return True


cdef Py_ssize_t header_value(const uint8_t *p, Py_ssize_t n, const char *name) noexcept nogil:
    """Where a header line's value starts if its name is ``name`` (case-insensitive,
    blanks allowed before the colon and skipped after it), else -1."""
    cdef Py_ssize_t i = 0
    while name[i] != 0:
        if i >= n or ascii_lower(p[i]) != <uint8_t>name[i]:
            return -1
        i += 1
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    if i >= n or p[i] != 58:
        return -1
    i += 1
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    return i
