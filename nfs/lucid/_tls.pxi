# TLS over TCP as Wireshark 4.0.17 dissects it (records, SSLv2/SSLv3 detection, the
# conversation's version, TCP's multi-segment PDUs): which layers a segment adds.
# Included by _lucid.pyx; the specification, with the rules numbered, is
# lego.nfs.lucid.tls_spec, and each function here names the spec's counterpart.
#
# Interface (the kernel relies on nothing else):
#   TlsConv *tls_new()                      a conversation's state (NULL: no memory)
#   void tls_free(TlsConv *c)
#   int tls_segment(c, payload, n, seq_rel, from_client, layers)
#       the layer codes (TL_*) this segment adds after "tcp", in PDML order, written
#       to layers[0:TL_MAX]; returns how many (-1: no memory). seq_rel: the
#       segment's sequence number relative to its direction's base.
#
# Sequence numbers are int64 and taken as they come (0 <= seq_rel < 2**32): MSP ends
# may lie past 2**32 (a Thrift frame asks for up to 2**31 bytes), but a direction
# that sends more than 4 GiB, so that seq_rel wraps, is out of scope (as in the spec).
# Memory: a direction keeps the first TLS_HEAD bytes of its MSP in place; only a PDU
# the strict Thrift heuristic may read whole (at most an SSLv2 record, 16 KiB) keeps
# all its bytes, in a buffer that grows with realloc and lives until tls_free.

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy

cdef enum:
    TL_TLS = 1
    TL_DATA = 2
    TL_MALFORMED = 3  # in the PDML only (not in frame.protocols)
    TL_H1 = 4  # in the PDML only
    TL_MAX = 64

cdef enum:
    TLS_UNKNOWN = 0x0000
    TLS_SSLV2 = 0x0002
    TLS_SSLV3 = 0x0300
    TLS_TLS10 = 0x0301
    TLS_TLS11 = 0x0302
    TLS_TLS12 = 0x0303
    TLS_TLS13 = 0x0304
    TLS_GMTLS = 0x0101
    TLS_ONE_MORE = 0x0FFFFFFF  # TCP's DESEGMENT_ONE_MORE_SEGMENT
    TLS_HEAD = 160  # bytes of an MSP kept (tls_spec.HEAD)
    # what reading a byte gives besides 0..255 (the spec's exceptions)
    TLS_PAST_END = -1  # tshark throws: _ws.malformed
    TLS_NOT_KEPT = -2  # a PDU byte not kept: the tvb is taken as consumed


cdef struct TlsDir:
    # TCP's MSP state of one direction (tls_spec._Direction)
    int64_t start
    int64_t next_pdu  # -1: no MSP
    int64_t length  # bytes of the PDU so far
    bint entire  # the MSP takes all of the next segment
    bint keep_all  # all bytes are in `all` (else the first TLS_HEAD in `head`)
    bint thrift  # a PDU Thrift claimed: not dissected again, no byte needed
    uint8_t *all
    int64_t all_cap
    uint8_t head[TLS_HEAD]


cdef struct TlsConv:
    int version  # shared by both directions
    TlsDir dir[2]  # 0: from the client, 1: from the server


cdef struct TlsTvb:
    # the bytes handed to a dissector (tls_spec._Tvb): n of them, `head` from the
    # start, `tail` from tail_start to the end; a byte in between is not kept
    const uint8_t *head
    int64_t head_n
    const uint8_t *tail
    int64_t tail_start
    int64_t n


cdef struct TlsRequest:
    # a dissector's request for `more` bytes (0: none) from `at` on (tls_spec._Dissected)
    int64_t at
    int64_t more
    bint thrift


cdef TlsConv *tls_new() noexcept nogil:
    cdef TlsConv *c = <TlsConv *>calloc(1, sizeof(TlsConv))
    if c != NULL:
        c.dir[0].next_pdu = c.dir[1].next_pdu = -1
    return c


cdef void tls_free(TlsConv *c) noexcept nogil:
    if c != NULL:
        free(c.dir[0].all)
        free(c.dir[1].all)
        free(c)


# ------------------------------------------------------------------ reading a tvb

cdef inline int tls_at(const TlsTvb *t, int64_t i) noexcept nogil:
    """The byte at i, or TLS_PAST_END / TLS_NOT_KEPT."""
    if i >= t.n:
        return TLS_PAST_END
    if i < t.head_n:
        return t.head[i]
    if i >= t.tail_start:
        return t.tail[i - t.tail_start]
    return TLS_NOT_KEPT


cdef inline int tls_u16(const TlsTvb *t, int64_t i) noexcept nogil:
    cdef int hi = tls_at(t, i), lo
    if hi < 0:
        return hi
    lo = tls_at(t, i + 1)
    return lo if lo < 0 else hi << 8 | lo


cdef inline int tls_need(const TlsTvb *t, int64_t offset, int64_t length) noexcept nogil:
    """An integer or bytes field of `length` bytes at `offset` (_Tvb.need)."""
    return TLS_PAST_END if length > 0 and offset + length > t.n else 0


cdef inline int tls_need_start(const TlsTvb *t, int64_t offset, int64_t length) noexcept nogil:
    """An FT_NONE field: only a start past the end throws (_Tvb.need_start)."""
    return TLS_PAST_END if length > 0 and offset > t.n else 0


cdef inline bint tls_printable(int c) noexcept nogil:
    return 0x20 <= c <= 0x7E


cdef inline bint tls_content_type(int c) noexcept nogil:
    return 20 <= c <= 25


cdef inline bint tls_v3_dispatch(int v) noexcept nogil:
    return v == TLS_SSLV3 or v == TLS_TLS10 or v == TLS_TLS11 or v == TLS_TLS12 \
        or v == TLS_GMTLS


cdef inline bint tls_v3_ignores_unknown(int v) noexcept nogil:
    return v == TLS_TLS10 or v == TLS_TLS11 or v == TLS_TLS12 or v == TLS_GMTLS


cdef inline bint tls_v3_sets(int v) noexcept nogil:
    return tls_v3_dispatch(v) or v == TLS_TLS13


cdef inline bint tls_handshake_type(int t) noexcept nogil:
    return 0 <= t <= 2 or 4 <= t <= 6 or t == 8 or 11 <= t <= 16 or 20 <= t <= 25 \
        or t == 67


cdef bint tls_ssl_version(int v) noexcept nogil:
    """tls_spec.SSL_VERSIONS."""
    if v in (0x0002, 0x0100, 0x0101, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0xFB17,
             0xFB1A, 0xFEFD, 0xFEFF):
        return True
    if 0x7F0E <= v <= 0x7F1C:
        return True
    return (v & 0x0F0F) == 0x0A0A and (v >> 12) == ((v >> 4) & 0x0F)  # GREASE


cdef int64_t tls_repeats(int64_t count) noexcept nogil:
    """How often a guint16 `while (count > 0) count -= 3` loop runs (it wraps)."""
    cdef int64_t runs = 0, steps
    while count:
        steps = (count + 2) // 3
        runs += steps
        count = (count - 3 * steps) & 0xFFFF
    return runs


# ------------------------------------------------------ TCP heuristics (rule 2)

cdef bint tls_utf8_printable(const TlsTvb *t, int64_t offset, int64_t length) noexcept nogil:
    cdef int64_t i
    cdef int c, remaining = 0, low = 0x80, high = 0xBF
    if length <= 0:
        return True
    if t.n - offset < length:
        return False
    for i in range(offset, offset + length):
        c = tls_at(t, i)
        if c < 0:
            return False  # unreachable: the PDU's bytes are all kept here
        if remaining:
            if c < low or c > high:
                return False
            remaining, low, high = remaining - 1, 0x80, 0xBF
        elif c < 0x80:
            if not tls_printable(c):
                return False
        elif 0xC2 <= c <= 0xDF:
            remaining = 1
        elif 0xE0 <= c <= 0xEF:
            remaining = 2
            if c == 0xE0:
                low = 0xA0
            elif c == 0xED:
                high = 0x9F
        elif 0xF0 <= c <= 0xF4:
            remaining = 3
            if c == 0xF0:
                low = 0x90
        else:
            return False
    return True


cdef inline int64_t tls_remaining(int64_t n, int64_t offset) noexcept nogil:
    if offset < 0:
        offset += n
        if offset < 0:
            return -1
    return n - offset if offset <= n else -1


cdef bint tls_thrift_strict(const TlsTvb *t, int64_t frame) noexcept nogil:
    cdef int64_t name
    cdef int b7
    if t.n < 12 or frame < 13 or tls_at(t, 4) != 0x80 or tls_at(t, 5) != 0x01:
        return False
    b7 = tls_at(t, 7)
    if b7 & 0xF8 or not 1 <= b7 <= 4:
        return False
    name = <int32_t>(<uint32_t>tls_at(t, 8) << 24 | <uint32_t>tls_at(t, 9) << 16
                     | <uint32_t>tls_at(t, 10) << 8 | <uint32_t>tls_at(t, 11))
    return (frame >= 13 + name and t.n - 12 >= name and tls_utf8_printable(t, 12, name)
            and tls_remaining(t.n, 12 + name) >= 5)


cdef bint tls_thrift_compact(const TlsTvb *t, int64_t frame) noexcept nogil:
    cdef int64_t offset = 6, varint = 0, i, name
    cdef int b5
    if t.n < 9 or frame < 5 or tls_at(t, 4) != 0x82:
        return False
    b5 = tls_at(t, 5)
    if b5 & 0x1F != 1 or not 1 <= b5 >> 5 <= 4:
        return False
    for i in range(min(t.n - offset, 5)):
        if tls_at(t, offset + i) < 0x80:
            varint = i + 1
            break
    if not varint or offset + varint >= t.n:
        return False
    offset += varint
    name = <int8_t>tls_at(t, offset)
    offset += 1
    return (4 + frame >= offset + name and t.n - offset >= name
            and tls_utf8_printable(t, offset, name) and tls_remaining(t.n, offset + name) >= 1)


cdef int64_t tls_thrift_frame(const TlsTvb *t) noexcept nogil:
    """The framed PDU's length if the Thrift heuristic claims the tvb (more than 4
    bytes), else 0."""
    cdef uint32_t raw
    cdef int64_t frame
    raw = (<uint32_t>tls_at(t, 0) << 24 | <uint32_t>tls_at(t, 1) << 16
           | <uint32_t>tls_at(t, 2) << 8 | <uint32_t>tls_at(t, 3))
    frame = <int32_t>raw
    if not (tls_thrift_strict(t, frame) or tls_thrift_compact(t, frame)):
        return 0
    return 4 + <int64_t>raw


cdef inline bint tls_looks_strict_thrift(const uint8_t *head) noexcept nogil:
    return tls_printable(head[0]) and tls_printable(head[1]) and tls_printable(head[2]) \
        and tls_printable(head[3]) and head[4] == 0x80 and head[5] == 0x01


# -------------------------------------------------- clear-text messages (rule 7)

cdef int tls_ssl2_message(const TlsTvb *t, int64_t m, int msg_type, int64_t length
                          ) noexcept nogil:
    """tls_spec._ssl2_message: 0, or the first failed read (reads go up the tvb, so
    the first failure is the smallest code)."""
    cdef int version, ciphers, session, challenge, certificate, connection
    cdef int clear, encrypted, argument
    cdef int64_t o, runs
    if msg_type == 1:  # CLIENT_HELLO
        version = tls_u16(t, m + 1)
        if version < 0 or not tls_ssl_version(version):
            return min(version, 0)  # else "Encrypted Data"
        ciphers, session = tls_u16(t, m + 3), tls_u16(t, m + 5)
        if ciphers < 0 or session < 0:
            return min(ciphers, session)
        if session > 16:
            return 0
        challenge = tls_u16(t, m + 7)
        if challenge < 0:
            return challenge
        runs = tls_repeats(ciphers)
        o = m + 9 + 3 * runs
        if tls_need(t, m + 9, 3 * runs) or tls_need(t, o, session):
            return TLS_PAST_END
        o += session
        if tls_need_start(t, o, challenge) or tls_need(t, o, min(challenge, 32)):
            return TLS_PAST_END
    elif msg_type == 4:  # SERVER_HELLO
        version = tls_u16(t, m + 3)
        if version < 0 or not tls_ssl_version(version):
            return min(version, 0)
        certificate, ciphers, connection = tls_u16(t, m + 5), tls_u16(t, m + 7), \
            tls_u16(t, m + 9)
        if certificate < 0 or ciphers < 0 or connection < 0:
            return min(certificate, ciphers, connection)
        if certificate:
            return TLS_PAST_END  # the X.509 dissector on garbage (tls_spec's notes)
        runs = tls_repeats(ciphers)
        o = m + 11
        if tls_need_start(t, o, ciphers) or tls_need(t, o, 3 * runs) \
                or tls_need_start(t, o + 3 * runs, connection):
            return TLS_PAST_END
    elif msg_type == 2:  # CLIENT_MASTER_KEY
        clear, encrypted, argument = tls_u16(t, m + 4), tls_u16(t, m + 6), tls_u16(t, m + 8)
        if clear < 0 or encrypted < 0 or argument < 0:
            return min(clear, encrypted, argument)
        if clear + encrypted + argument > length:
            return 0
        o = m + 10
        if tls_need_start(t, o, clear) or tls_need_start(t, o + clear, encrypted) \
                or tls_need_start(t, o + clear + encrypted, argument):
            return TLS_PAST_END
    return 0


cdef int tls_heartbeat(const TlsTvb *t, int64_t o, int64_t length) noexcept nogil:
    """tls_spec._heartbeat: 0, or the first failed read."""
    cdef int msg = tls_at(t, o), payload
    cdef int64_t padding
    if msg < 0:
        return msg
    payload = tls_u16(t, o + 1)
    if payload < 0:
        return payload
    padding = (length - 3 - payload) & 0xFFFF
    if msg == 1 or msg == 2:  # request, response
        if 3 + payload + 16 > length:
            payload, padding = (length - 3) & 0xFFFF, 0
        if o + 3 + payload > t.n or padding and o + 3 + payload + padding > t.n:
            return TLS_PAST_END
    return 0


# ------------------------------------------------------------- records (rules 3-5)

cdef int tls_ssl2_record(TlsConv *c, const TlsTvb *t, int64_t *off, int64_t *more
                         ) noexcept nogil:
    """tls_spec._ssl2_record: moves *off to the next record, or sets *more to the bytes
    this one lacks; 0, or the first failed read."""
    cdef int b0 = tls_at(t, off[0]), b1, msg_type, header
    cdef int64_t available = t.n - off[0], length, m
    if b0 < 0:
        return b0
    header = 2 if b0 & 0x80 else 3
    if available < header:
        more[0] = TLS_ONE_MORE
        return 0
    b1 = tls_at(t, off[0] + 1)
    if b1 < 0:
        return b1
    length = (b0 & (0x7F if header == 2 else 0x3F)) << 8 | b1
    if available < header + length:
        more[0] = header + length - available
        return 0
    m = off[0] + header
    msg_type = tls_at(t, m)
    if msg_type < 0:
        return msg_type
    if c.version == TLS_UNKNOWN and 2 <= msg_type <= 8:
        c.version = TLS_SSLV2  # for good, both directions
    off[0] = m + length
    return tls_ssl2_message(t, m, msg_type, length)


cdef int tls_ssl3_record(TlsConv *c, const TlsTvb *t, int64_t *off, int64_t *more
                         ) noexcept nogil:
    """tls_spec._ssl3_record (at least 5 bytes are left)."""
    cdef int content = tls_at(t, off[0]), version, length, first
    cdef int64_t available = t.n - off[0]
    if content < 0:
        return content
    if tls_v3_ignores_unknown(c.version) and not tls_content_type(content):
        off[0] = t.n  # "Ignored Unknown Record"
        return 0
    version, length = tls_u16(t, off[0] + 1), tls_u16(t, off[0] + 3)
    if version < 0 or length < 0:
        return min(version, length)
    if not tls_content_type(content):
        off[0] += 5 + length  # "Continuation Data"
        return 0
    if available < 5 + length:
        more[0] = 5 + length - available
        return 0
    first = tls_at(t, off[0] + 5)
    if first < 0:
        return first
    if c.version == TLS_UNKNOWN and tls_v3_sets(version) and (
            content != 22 or first != 1 and tls_handshake_type(first)):
        c.version = version
    if content == 24:
        first = tls_heartbeat(t, off[0] + 5, length)
    off[0] += 5 + length
    return first if first < 0 else 0


cdef int tls_records(TlsConv *c, const TlsTvb *t, TlsRequest *r) noexcept nogil:
    """tls_spec._records: the records of an accepted tvb; 0, or the first failed read."""
    cdef int64_t off = 0
    cdef int b0, b2, status
    while off < t.n:
        if c.version == TLS_SSLV2:
            status = tls_ssl2_record(c, t, &off, &r.more)
        elif t.n - off < 5:
            status, r.more = 0, TLS_ONE_MORE
        else:
            b0, b2 = tls_at(t, off), tls_at(t, off + 2)
            if b0 < 0 or b2 < 0:
                return min(b0, b2)
            if tls_v3_dispatch(c.version):
                if b0 == 0x80 and b2 == 0x01:
                    status = tls_ssl2_record(c, t, &off, &r.more)
                else:
                    status = tls_ssl3_record(c, t, &off, &r.more)
            elif b0 >= 0x80 and (b2 == 0 or b2 == 1 or b2 == 2 or b2 == 4):
                status = tls_ssl2_record(c, t, &off, &r.more)
            elif tls_content_type(b0) and tls_v3_dispatch(tls_u16(t, off + 1)):
                # the record versions that look SSLv3/TLS are those dispatched so
                status = tls_ssl3_record(c, t, &off, &r.more)
            else:
                off = t.n  # "Continuation Data"
                status = 0
        if status < 0:
            return status
        if r.more:
            r.at = off
            return 0
    return 0


cdef inline void tls_emit(uint8_t *layers, int *count, int code) noexcept nogil:
    """Append a layer; past TL_MAX (never seen: a segment gives a few) the last wins."""
    if count[0] < TL_MAX:
        count[0] += 1
    layers[count[0] - 1] = code


cdef bint tls_dissect(TlsConv *c, const TlsTvb *t, TlsRequest *r, uint8_t *layers,
                      int *count) noexcept nogil:
    """tls_spec._dissect: TCP's port then heuristic dissectors on a tvb (rule 2); its
    layers are appended, a request for more data set in *r. False: malformed (the
    frame's dissection ends)."""
    cdef int status
    r.at, r.more, r.thrift = 0, 0, False
    if t.n > 4 and tls_printable(tls_at(t, 0)) and tls_printable(tls_at(t, 1)) \
            and tls_printable(tls_at(t, 2)) and tls_printable(tls_at(t, 3)):
        r.more = tls_thrift_frame(t)
        if r.more:
            r.more -= t.n
            r.thrift = True
            return True
        if tls_at(t, 0) == 0x53 and tls_at(t, 1) == 0x35:  # "S5"
            tls_emit(layers, count, TL_H1)
        tls_emit(layers, count, TL_DATA)
        return True
    tls_emit(layers, count, TL_TLS)
    status = tls_records(c, t, r)
    if status == TLS_PAST_END:
        tls_emit(layers, count, TL_MALFORMED)
        return False
    if status == TLS_NOT_KEPT:
        r.at, r.more = 0, 0  # taken as consumed (tls_spec's notes)
    return True


# ------------------------------------------------------ TCP's MSPs (rules 1 and 6)

cdef bint tls_store(TlsDir *d, int64_t at, const uint8_t *data, int64_t n) noexcept nogil:
    """Copy into the keep-all buffer at `at`, growing it; False: no memory."""
    cdef int64_t cap = d.all_cap
    cdef uint8_t *grown
    if at + n > cap:
        cap = max(2 * cap, at + n, 4096)
        grown = <uint8_t *>realloc(d.all, cap)
        if grown == NULL:
            return False
        d.all, d.all_cap = grown, cap
    memcpy(d.all + at, data, n)
    return True


cdef bint tls_add(TlsDir *d, const uint8_t *data, int64_t n) noexcept nogil:
    """_Direction.add: a piece of the PDU; False: no memory."""
    cdef int64_t k
    if d.thrift:
        pass  # a Thrift PDU is not dissected again: no byte needed
    elif d.keep_all:
        if not tls_store(d, d.length, data, n):
            return False
    elif d.length < TLS_HEAD:
        k = min(n, TLS_HEAD - d.length)
        memcpy(d.head + d.length, data, k)
        if d.length + k >= 6 and tls_looks_strict_thrift(d.head):
            # the strict Thrift heuristic may read the whole PDU: keep it all
            d.keep_all = True
            if not tls_store(d, 0, d.head, d.length) or not tls_store(d, d.length, data, n):
                return False
    d.length += n
    return True


cdef bint tls_begin(TlsDir *d, int64_t seq, const uint8_t *data, int64_t n, bint thrift
                    ) noexcept nogil:
    """_Direction.begin: a new MSP from seq with its first bytes; False: no memory."""
    d.start, d.length, d.keep_all, d.thrift = seq, 0, False, thrift
    return tls_add(d, data, n)


cdef void tls_pdu(TlsDir *d, const uint8_t *piece, int64_t take, TlsTvb *t
                  ) noexcept nogil:
    """_Direction.pdu: the reassembled PDU once `piece` ends it."""
    if d.keep_all:
        t.head, t.head_n = d.all, d.length
    else:
        t.head, t.head_n = &d.head[0], min(d.length, TLS_HEAD)
    t.tail, t.tail_start, t.n = piece, d.length, d.length + take


cdef int tls_fresh(TlsConv *c, TlsDir *d, const uint8_t *data, int64_t n, int64_t seq,
                   int64_t end, uint8_t *layers, int *count) noexcept nogil:
    """TlsConversation._fresh: a tvb from `data` to the end of the segment; -1: no
    memory."""
    cdef TlsTvb t
    cdef TlsRequest r
    t.head, t.head_n, t.tail, t.tail_start, t.n = data, n, data + n, n, n
    if tls_dissect(c, &t, &r, layers, count) and r.more:
        if not tls_begin(d, seq + r.at, data + r.at, n - r.at, r.thrift):
            return -1
        d.entire = r.more == TLS_ONE_MORE
        d.next_pdu = end + 1 if d.entire else end + r.more
    return 0


cdef int tls_reassembled(TlsConv *c, TlsDir *d, const uint8_t *piece, int64_t take,
                         int64_t seq, int64_t end, uint8_t *layers, int *count
                         ) noexcept nogil:
    """TlsConversation._reassembled: the MSP's PDU completed by `piece`; 1: go on,
    0: the frame's dissection ends (malformed), -1: no memory."""
    cdef TlsTvb t
    cdef TlsRequest r
    cdef int64_t prior = d.length
    if d.entire:
        d.entire, d.next_pdu = False, max(d.next_pdu, end)
    if d.thrift:
        return 1  # claimed again, whole: no layer, no request
    tls_pdu(d, piece, take, &t)
    if not tls_dissect(c, &t, &r, layers, count):
        return 0
    if r.more:
        if r.at <= prior:  # the same MSP grows
            if not tls_add(d, piece, take):
                return -1
            if r.thrift:
                d.thrift, d.keep_all = True, False
        elif not tls_begin(d, d.start + r.at, piece + (r.at - prior), take - (r.at - prior),
                           r.thrift):  # split: a new MSP from the request on
            return -1
        if r.more == TLS_ONE_MORE:
            d.entire, d.next_pdu = True, max(end, d.next_pdu) + 1
        else:
            d.next_pdu = seq + take + r.more
    return 1


cdef int tls_segment(TlsConv *c, const uint8_t *payload, Py_ssize_t n, int64_t seq_rel,
                     bint from_client, uint8_t *layers) noexcept nogil:
    """TlsConversation.segment: the layer codes written to layers, how many (-1: no
    memory)."""
    cdef TlsDir *d = &c.dir[0 if from_client else 1]
    cdef int count = 0, status
    cdef int64_t offset = 0, seq = seq_rel, end = seq_rel + n, take
    while offset < n:
        if not (d.next_pdu >= 0 and d.start <= seq < d.next_pdu):
            if tls_fresh(c, d, payload + offset, n - offset, seq, end, layers, &count) < 0:
                return -1
            break
        take = n - offset if d.entire else min(end, d.next_pdu) - seq
        if end < d.next_pdu:  # incomplete: no dissector runs
            if not tls_add(d, payload + offset, take):
                return -1
            break
        status = tls_reassembled(c, d, payload + offset, take, seq, end, layers, &count)
        if status < 0:
            return -1
        if status == 0:
            break
        offset += take
        seq += take
    return count


# ------------------------------------------------------------------ the test hook

#: the layer codes' names in tls_spec
_TLS_LAYER_NAMES = {TL_TLS: "tls", TL_DATA: "data", TL_MALFORMED: "_ws.malformed",
                    TL_H1: "h1"}


def _tls_layers(segments):
    """The layer codes of each segment of ONE conversation, given as (payload: bytes,
    seq_rel: int, from_client: bool) (tests/test_lucid_tls.py)."""
    cdef TlsConv *c = tls_new()
    cdef uint8_t layers[TL_MAX]
    cdef const uint8_t[::1] view
    cdef int count
    cdef list out = []
    if c == NULL:
        raise MemoryError()
    try:
        for payload, seq_rel, from_client in segments:
            view = bytes(payload) if payload else b"\0"
            count = tls_segment(c, &view[0], len(payload), seq_rel, from_client, layers)
            if count < 0:
                raise MemoryError()
            out.append(tuple(layers[i] for i in range(count)))
    finally:
        tls_free(c)
    return out
