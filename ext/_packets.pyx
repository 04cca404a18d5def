# cython: language_level=3
"""Packet kernels: scan capture records and derive Kitsune's fields from frames.

Private; the public API is :mod:`lego.ext.packets`. Every loop here runs without
the GIL over contiguous buffers; outputs are buffers the caller allocated.

Derivation (what tshark ``-E occurrence=f`` reports, then Kitsune's rule):
the first IPv4 header's addresses, else the first IPv6 header's; the first TCP
ports, else the first UDP ports (quoted headers inside ICMP/ICMPv6 errors count);
else ARP (opcode present), else ICMPv4 (type present), else L2 with the MACs when
there is no IP at all, else IP. See ``packets.py`` for the malformed-frame rules.
"""

from libc.math cimport ldexp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdio cimport snprintf
from libc.stdlib cimport strtod
from libc.string cimport memcpy, memset


cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "sys/socket.h" nogil:
    int AF_INET6

from lego.ext._codes cimport F_MAC, F_NONE, F_V4, F_V6, P_ARP, P_ICMP, P_IP, P_L2, P_TCP, P_UDP

# Per-frame flag bits (the wrapper turns them into counters).
cdef enum:
    FL_MALFORMED = 1
    FL_TRUNCATED = 2
    FL_NON_ETHERNET = 4
    FL_FRAGMENT = 8
    FL_UNKNOWN_LINK = 16

cdef enum:
    MAX_DEPTH = 8  # nesting of IP-in-IP / ICMP quotes / VLAN tags we follow


cdef struct Frame:
    # what tshark would report (first occurrence of each field)
    bint has_v4
    bint has_v6
    bint has_tcp
    bint has_udp
    bint has_icmp
    bint has_arp
    uint8_t v4_src[4]
    uint8_t v4_dst[4]
    uint8_t v6_src[16]
    uint8_t v6_dst[16]
    uint16_t tcp_sport
    uint16_t tcp_dport
    uint16_t udp_sport
    uint16_t udp_dport
    uint8_t arp_src_fam
    uint8_t arp_dst_fam
    uint8_t arp_src[4]
    uint8_t arp_dst[4]
    int flags


cdef inline uint16_t be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t rd32(const uint8_t *p, bint swapped) noexcept nogil:
    if swapped:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline uint64_t mac48(const uint8_t *p) noexcept nogil:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24)
            | (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | p[5])


cdef inline void set_ports(Frame *f, int proto, const uint8_t *p, Py_ssize_t n,
                           bint outer) noexcept nogil:
    """TCP/UDP: the ports need 4 bytes (tshark shows them from a quoted 8-byte header)."""
    if n < 4:
        if outer:
            f.flags |= FL_MALFORMED
        return
    if proto == 6 and not f.has_tcp:
        f.has_tcp = True
        f.tcp_sport = be16(p)
        f.tcp_dport = be16(p + 2)
    elif proto == 17 and not f.has_udp:
        f.has_udp = True
        f.udp_sport = be16(p)
        f.udp_dport = be16(p + 2)




cdef void parse_l4(Frame *f, int proto, const uint8_t *p, Py_ssize_t n, bint outer,
                   int depth) noexcept nogil:
    cdef uint8_t t
    if proto == 6 or proto == 17:
        set_ports(f, proto, p, n, outer)
    elif proto == 1:  # ICMPv4
        if n < 1:
            if outer:
                f.flags |= FL_MALFORMED
            return
        f.has_icmp = True
        t = p[0]
        # errors quote the offending datagram after the 8-byte ICMP header
        if (t == 3 or t == 4 or t == 5 or t == 11 or t == 12) and n > 8:
            parse_ipv4(f, p + 8, n - 8, False, depth + 1)
    elif proto == 58:  # ICMPv6: no icmp.type (Kitsune's ICMP is v4 only)
        if n >= 1 and p[0] < 128 and n > 8:  # error messages 1..4 quote IPv6
            parse_ipv6(f, p + 8, n - 8, False, depth + 1)
    elif proto == 4:
        parse_ipv4(f, p, n, outer, depth + 1)
    elif proto == 41:
        parse_ipv6(f, p, n, outer, depth + 1)


cdef void parse_ipv4(Frame *f, const uint8_t *p, Py_ssize_t n, bint outer,
                     int depth) noexcept nogil:
    cdef Py_ssize_t ihl, tot
    cdef uint16_t frag
    if depth > MAX_DEPTH:
        return
    if n < 20 or (p[0] >> 4) != 4:
        if outer:
            f.flags |= FL_MALFORMED
        return
    ihl = (p[0] & 0x0F) * 4
    tot = be16(p + 2)
    if ihl < 20 or (tot != 0 and tot < ihl):  # tshark stops before ip.src
        if outer:
            f.flags |= FL_MALFORMED
        return
    if not f.has_v4:
        f.has_v4 = True
        memcpy(f.v4_src, p + 12, 4)
        memcpy(f.v4_dst, p + 16, 4)
    if ihl > n:
        if outer:
            f.flags |= FL_MALFORMED
        return
    frag = be16(p + 6)
    if frag & 0x3FFF:  # MF set or offset != 0: tshark shows no L4 on a fragment
        if outer:
            f.flags |= FL_FRAGMENT
        return
    if tot != 0 and tot < n:
        n = tot  # drop Ethernet padding
    parse_l4(f, p[9], p + ihl, n - ihl, outer, depth)


cdef void parse_ipv6(Frame *f, const uint8_t *p, Py_ssize_t n, bint outer,
                     int depth) noexcept nogil:
    cdef Py_ssize_t off, hl, plen
    cdef int nh
    cdef uint16_t frag
    if depth > MAX_DEPTH:
        return
    if n < 40 or (p[0] >> 4) != 6:
        if outer:
            f.flags |= FL_MALFORMED
        return
    if not f.has_v6:
        f.has_v6 = True
        memcpy(f.v6_src, p + 8, 16)
        memcpy(f.v6_dst, p + 24, 16)
    plen = be16(p + 4)
    if plen != 0 and plen + 40 < n:
        n = plen + 40
    nh = p[6]
    off = 40
    while True:
        if nh == 0 or nh == 43 or nh == 60 or nh == 135:  # hop-by-hop, routing, dst opts, mobility
            if off + 2 > n:
                if outer:
                    f.flags |= FL_MALFORMED
                return
            hl = (p[off + 1] + 1) * 8
        elif nh == 44:  # fragment
            if off + 8 > n:
                if outer:
                    f.flags |= FL_MALFORMED
                return
            frag = be16(p + off + 2)
            if frag & 0xFFF9:  # offset != 0 or M set
                if outer:
                    f.flags |= FL_FRAGMENT
                return
            hl = 8
        elif nh == 51:  # AH
            if off + 2 > n:
                if outer:
                    f.flags |= FL_MALFORMED
                return
            hl = (p[off + 1] + 2) * 4
        else:
            break
        if off + hl > n:
            if outer:
                f.flags |= FL_MALFORMED
            return
        nh = p[off]
        off += hl
    parse_l4(f, nh, p + off, n - off, outer, depth)


cdef void parse_arp(Frame *f, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t hlen, plen
    if n < 8:
        f.flags |= FL_MALFORMED
        return
    f.has_arp = True
    hlen = p[4]
    plen = p[5]
    if be16(p + 2) != 0x0800 or plen != 4:
        return  # arp.*.proto_ipv4 absent: empty addresses
    if 8 + hlen + 4 <= n:
        f.arp_src_fam = F_V4
        memcpy(f.arp_src, p + 8 + hlen, 4)
    else:
        f.flags |= FL_MALFORMED
    if 8 + 2 * hlen + 8 <= n:
        f.arp_dst_fam = F_V4
        memcpy(f.arp_dst, p + 8 + 2 * hlen + 4, 4)
    else:
        f.flags |= FL_MALFORMED


cdef void parse_ethertype(Frame *f, int etype, const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef int depth = 0
    while True:
        if etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:  # VLAN tags
            if n < 4:
                f.flags |= FL_MALFORMED
                return
            etype = be16(p + 2)
            p += 4
            n -= 4
            depth += 1
            if depth > MAX_DEPTH:
                return
            continue
        if etype < 0x0600:  # 802.3 length field: LLC, follow only SNAP encapsulation
            if n >= 8 and p[0] == 0xAA and p[1] == 0xAA and p[2] == 0x03:
                if etype >= 8 and etype < n:
                    n = etype
                etype = be16(p + 6)
                if etype < 0x0600:
                    return
                p += 8
                n -= 8
                continue
            return
        break
    if etype == 0x0800:
        parse_ipv4(f, p, n, True, 0)
    elif etype == 0x86DD:
        parse_ipv6(f, p, n, True, 0)
    elif etype == 0x0806:
        parse_arp(f, p, n)


cdef void parse_one(const uint8_t *p, Py_ssize_t n, uint32_t origlen, int linktype,
                    Frame *f, uint64_t *esrc, uint64_t *edst) noexcept nogil:
    memset(f, 0, sizeof(Frame))
    esrc[0] = 0
    edst[0] = 0
    if <Py_ssize_t>origlen > n:
        f.flags |= FL_TRUNCATED
    if linktype == 1:  # Ethernet
        if n >= 6:
            edst[0] = mac48(p)
        if n >= 12:
            esrc[0] = mac48(p + 6)
        if n < 14:
            f.flags |= FL_MALFORMED
            return
        parse_ethertype(f, be16(p + 12), p + 14, n - 14)
        return
    f.flags |= FL_NON_ETHERNET
    if linktype == 113:  # Linux cooked capture v1: 16-byte header, protocol last
        if n < 16:
            f.flags |= FL_MALFORMED
            return
        parse_ethertype(f, be16(p + 14), p + 16, n - 16)
    elif linktype == 276:  # Linux cooked capture v2: protocol first, 20 bytes
        if n < 20:
            f.flags |= FL_MALFORMED
            return
        parse_ethertype(f, be16(p), p + 20, n - 20)
    elif linktype == 101 or linktype == 12:  # raw IP: version nibble decides
        if n < 1:
            f.flags |= FL_MALFORMED
        elif (p[0] >> 4) == 4:
            parse_ipv4(f, p, n, True, 0)
        elif (p[0] >> 4) == 6:
            parse_ipv6(f, p, n, True, 0)
        else:
            f.flags |= FL_MALFORMED
    elif linktype == 228:
        parse_ipv4(f, p, n, True, 0)
    elif linktype == 229:
        parse_ipv6(f, p, n, True, 0)
    else:
        f.flags |= FL_UNKNOWN_LINK


cdef inline void put_addr(uint8_t *dst, const uint8_t *src, int nbytes) noexcept nogil:
    memset(dst, 0, 16)
    memcpy(dst, src, nbytes)


cdef inline void put_mac(uint8_t *dst, uint64_t mac) noexcept nogil:
    cdef int i
    memset(dst, 0, 16)
    for i in range(6):
        dst[i] = <uint8_t>((mac >> (40 - 8 * i)) & 0xFF)


def parse_into(const uint8_t[::1] buf, const int64_t[::1] offsets, const uint32_t[::1] caplens,
               const uint32_t[::1] origlens, const uint16_t[::1] linktypes,
               uint32_t[::1] frame_len, uint64_t[::1] eth_src, uint64_t[::1] eth_dst,
               uint8_t[::1] proto, uint8_t[::1] src_family, uint8_t[::1] dst_family,
               uint8_t[:, ::1] src_addr, uint8_t[:, ::1] dst_addr,
               uint16_t[::1] sport, uint16_t[::1] dport, uint8_t[::1] flags) -> None:
    """Derive the PacketBatch fields of n frames (IN: buf, offsets, caplens, origlens,
    linktypes; OUT: the rest, length n). Bounds are checked by the wrapper."""
    cdef Py_ssize_t i, n = offsets.shape[0]
    cdef Frame f
    cdef uint64_t es, ed
    cdef const uint8_t *base = &buf[0] if buf.shape[0] > 0 else NULL
    with nogil:
        for i in range(n):
            parse_one(base + offsets[i], caplens[i], origlens[i], linktypes[i], &f, &es, &ed)
            frame_len[i] = origlens[i]
            eth_src[i] = es
            eth_dst[i] = ed
            flags[i] = <uint8_t>f.flags
            sport[i] = 0
            dport[i] = 0
            if f.has_v4:
                src_family[i] = F_V4
                dst_family[i] = F_V4
                put_addr(&src_addr[i, 0], f.v4_src, 4)
                put_addr(&dst_addr[i, 0], f.v4_dst, 4)
            elif f.has_v6:
                src_family[i] = F_V6
                dst_family[i] = F_V6
                put_addr(&src_addr[i, 0], f.v6_src, 16)
                put_addr(&dst_addr[i, 0], f.v6_dst, 16)
            else:
                src_family[i] = F_NONE
                dst_family[i] = F_NONE
                memset(&src_addr[i, 0], 0, 16)
                memset(&dst_addr[i, 0], 0, 16)
            if f.has_tcp:
                proto[i] = P_TCP
                sport[i] = f.tcp_sport
                dport[i] = f.tcp_dport
            elif f.has_udp:
                proto[i] = P_UDP
                sport[i] = f.udp_sport
                dport[i] = f.udp_dport
            elif f.has_arp:
                proto[i] = P_ARP
                src_family[i] = f.arp_src_fam
                dst_family[i] = f.arp_dst_fam
                put_addr(&src_addr[i, 0], f.arp_src, 4 if f.arp_src_fam else 0)
                put_addr(&dst_addr[i, 0], f.arp_dst, 4 if f.arp_dst_fam else 0)
            elif f.has_icmp:
                proto[i] = P_ICMP
            elif f.has_v4 or f.has_v6:
                proto[i] = P_IP
            else:
                proto[i] = P_L2
                src_family[i] = F_MAC
                dst_family[i] = F_MAC
                put_mac(&src_addr[i, 0], es)
                put_mac(&dst_addr[i, 0], ed)


# ---------------------------------------------------------------- timestamps

cdef double exact_decimal(uint64_t whole, uint64_t frac, int digits) noexcept nogil:
    """The nearest double to ``whole.frac`` (frac with ``digits`` decimals), via
    glibc strtod (correctly rounded), for integers too large for one division."""
    cdef char text[48]
    snprintf(text, 48, "%llu.%0*llu", <unsigned long long>whole, digits,
             <unsigned long long>frac)
    return strtod(text, NULL)


cdef double POW10[20]
POW10[0] = 1.0
for _k in range(1, 20):
    POW10[_k] = POW10[_k - 1] * 10.0


cdef inline double decimal_ts(uint64_t units, int digits) noexcept nogil:
    """units * 10**-digits rounded once: exact division when units < 2**53."""
    cdef uint64_t scale
    cdef int k
    if digits == 0:
        return <double>units
    if units < (<uint64_t>1 << 53):
        return (<double>units) / POW10[digits]
    scale = 1
    for k in range(digits):
        scale *= 10
    return exact_decimal(units // scale, units % scale, digits)


# ---------------------------------------------------------------- classic pcap

def scan_pcap(const uint8_t[::1] buf, Py_ssize_t pos, bint swapped, int digits,
              uint32_t max_caplen, int64_t[::1] offsets, uint32_t[::1] caplens,
              uint32_t[::1] origlens, double[::1] ts):
    """Scan up to len(offsets) records from ``pos``. Returns (n, pos, status):
    0 = ok (output full or clean end of file), 1 = file ends inside a record
    header, 2 = file ends inside record data, 3 = caplen above ``max_caplen``."""
    cdef Py_ssize_t size = buf.shape[0], cap = offsets.shape[0], n = 0
    cdef const uint8_t *p
    cdef uint32_t sec, frac, cl
    cdef int status = 0
    cdef uint64_t scale = 1000000 if digits == 6 else 1000000000
    with nogil:
        while n < cap and pos < size:
            if pos + 16 > size:
                status = 1
                break
            p = &buf[pos]
            sec = rd32(p, swapped)
            frac = rd32(p + 4, swapped)
            cl = rd32(p + 8, swapped)
            if cl > max_caplen:
                status = 3
                break
            if pos + 16 + <Py_ssize_t>cl > size:
                status = 2
                break
            offsets[n] = pos + 16
            caplens[n] = cl
            origlens[n] = rd32(p + 12, swapped)
            ts[n] = decimal_ts(<uint64_t>sec * scale + frac, digits)
            pos += 16 + cl
            n += 1
    return n, pos, status


# ---------------------------------------------------------------- pcapng

def scan_pcapng(const uint8_t[::1] buf, Py_ssize_t pos, bint swapped,
                const uint16_t[::1] if_linktype, const int32_t[::1] if_tsres,
                const int64_t[::1] if_tsoffset, uint32_t max_caplen,
                int64_t[::1] offsets, uint32_t[::1] caplens, uint32_t[::1] origlens,
                double[::1] ts, uint16_t[::1] linktypes):
    """Scan EPB/SPB blocks from ``pos`` (other packet-less blocks are skipped).
    ``if_tsres``: >= 0 decimal digits, < 0 minus the binary exponent.
    Returns (n, pos, status, block_type): 0 = ok, 1 = file ends inside a block,
    2 = bad block length, 3 = caplen above max_caplen, 4 = unknown interface,
    5 = stop at an SHB/IDB (the wrapper parses it, then calls again)."""
    cdef Py_ssize_t size = buf.shape[0], cap = offsets.shape[0], n = 0
    cdef Py_ssize_t nif = if_linktype.shape[0]
    cdef const uint8_t *p
    cdef uint32_t btype = 0, blen, cl, ol, iface
    cdef uint64_t units
    cdef int status = 0, res
    with nogil:
        while n < cap and pos < size:
            if pos + 12 > size:
                status = 1
                break
            p = &buf[pos]
            btype = rd32(p, swapped)
            blen = rd32(p + 4, swapped)
            if btype == 0x0A0D0D0A or btype == 1:
                status = 5
                break
            if blen < 12 or blen % 4 != 0:
                status = 2
                break
            if pos + <Py_ssize_t>blen > size:
                status = 1
                break
            if btype == 6:  # enhanced packet block
                if blen < 32:
                    status = 2
                    break
                iface = rd32(p + 8, swapped)
                cl = rd32(p + 20, swapped)
                ol = rd32(p + 24, swapped)
                if iface >= nif:
                    status = 4
                    break
                if cl > max_caplen:
                    status = 3
                    break
                if 28 + <Py_ssize_t>cl + 4 > blen:
                    status = 2
                    break
                units = ((<uint64_t>rd32(p + 12, swapped)) << 32) | rd32(p + 16, swapped)
                res = if_tsres[iface]
                if res >= 0:
                    ts[n] = decimal_ts(units, res) + if_tsoffset[iface]
                else:
                    ts[n] = ldexp(<double>units, res) + if_tsoffset[iface]
                offsets[n] = pos + 28
                caplens[n] = cl
                origlens[n] = ol
                linktypes[n] = if_linktype[iface]
                n += 1
            elif btype == 3:  # simple packet block: interface 0, no timestamp
                if blen < 16:
                    status = 2
                    break
                if nif < 1:
                    status = 4
                    break
                ol = rd32(p + 8, swapped)
                cl = blen - 16
                if ol < cl:
                    cl = ol
                if cl > max_caplen:
                    status = 3
                    break
                offsets[n] = pos + 12
                caplens[n] = cl
                origlens[n] = ol
                ts[n] = 0.0
                linktypes[n] = if_linktype[0]
                n += 1
            pos += blen
    return n, pos, status, btype


# ---------------------------------------------------------------- Kitsune TSV

cdef inline int parse_uint(const uint8_t *s, Py_ssize_t n, uint64_t limit,
                           uint64_t *out) noexcept nogil:
    cdef uint64_t v = 0
    cdef Py_ssize_t i
    if n == 0 or n > 20:
        return -1
    for i in range(n):
        if s[i] < 48 or s[i] > 57:
            return -1
        v = v * 10 + (s[i] - 48)
    if v > limit:
        return -1
    out[0] = v
    return 0


cdef inline int hexval(uint8_t c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef int parse_mac(const uint8_t *s, Py_ssize_t n, uint64_t *out) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i, a, b
    if n != 17:
        return -1
    for i in range(6):
        a = hexval(s[3 * i])
        b = hexval(s[3 * i + 1])
        if a < 0 or b < 0 or (i < 5 and s[3 * i + 2] != 58):
            return -1
        v = (v << 8) | <uint64_t>(a * 16 + b)
    out[0] = v
    return 0


cdef int parse_ipv4_text(const uint8_t *s, Py_ssize_t n, uint8_t *out) noexcept nogil:
    cdef int part = 0, digits = 0, v = 0
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] == 46:
            if digits == 0 or part == 3:
                return -1
            out[part] = <uint8_t>v
            part += 1
            digits = 0
            v = 0
        elif 48 <= s[i] <= 57:
            v = v * 10 + (s[i] - 48)
            digits += 1
            if digits > 3 or v > 255:
                return -1
        else:
            return -1
    if part != 3 or digits == 0:
        return -1
    out[3] = <uint8_t>v
    return 0


cdef int parse_ipv6_text(const uint8_t *s, Py_ssize_t n, uint8_t *out) noexcept nogil:
    cdef char text[64]
    if n >= 64:
        return -1
    memcpy(text, s, n)
    text[n] = 0
    return 0 if inet_pton(AF_INET6, text, out) == 1 else -1


cdef enum:
    NCOL = 19


def parse_tsv(const uint8_t[::1] buf, Py_ssize_t pos, double[::1] ts, uint32_t[::1] frame_len,
              uint64_t[::1] eth_src, uint64_t[::1] eth_dst, uint8_t[::1] proto,
              uint8_t[::1] src_family, uint8_t[::1] dst_family, uint8_t[:, ::1] src_addr,
              uint8_t[:, ::1] dst_addr, uint16_t[::1] sport, uint16_t[::1] dport):
    """Parse up to len(ts) data lines of Kitsune's 19-column TSV from ``pos``.
    Returns (n, pos, bad_line, bad_col): bad_line = -1 when all lines parsed,
    else the 0-based line (relative to ``pos``) and column (-1: wrong column count)."""
    cdef Py_ssize_t size = buf.shape[0], cap = ts.shape[0], n = 0, line = 0
    cdef Py_ssize_t start[NCOL]
    cdef Py_ssize_t length[NCOL]
    cdef Py_ssize_t i, col, eol, ls
    cdef const uint8_t *b = &buf[0] if size > 0 else NULL
    cdef const uint8_t *s
    cdef uint64_t v
    cdef uint8_t tmp4[4]
    cdef uint8_t tmp16[16]
    cdef char numtext[64]
    cdef char *endp
    cdef int bad = -2, bad_col = 0
    cdef bint has_v4, has_v6, has_tcp, has_udp
    with nogil:
        while n < cap and pos < size:
            # split one line into columns
            eol = pos
            while eol < size and b[eol] != 10:
                eol += 1
            ls = eol
            if ls > pos and b[ls - 1] == 13:
                ls -= 1
            if ls == pos:  # blank line: skip
                pos = eol + 1
                line += 1
                continue
            col = 0
            start[0] = pos
            for i in range(pos, ls):
                if b[i] == 9:
                    length[col] = i - start[col]
                    col += 1
                    if col >= NCOL:
                        break
                    start[col] = i + 1
            if col != NCOL - 1:
                bad, bad_col = 1, -1
                break
            length[col] = ls - start[col]
            # frame.time_epoch: strtod is correctly rounded, like float()
            if length[0] == 0 or length[0] >= 64:
                bad, bad_col = 1, 0
                break
            memcpy(numtext, b + start[0], length[0])
            numtext[length[0]] = 0
            ts[n] = strtod(numtext, &endp)
            if endp != numtext + length[0]:
                bad, bad_col = 1, 0
                break
            if parse_uint(b + start[1], length[1], 0xFFFFFFFF, &v) < 0:
                bad, bad_col = 1, 1
                break
            frame_len[n] = <uint32_t>v
            eth_src[n] = 0
            eth_dst[n] = 0
            if length[2] and parse_mac(b + start[2], length[2], &eth_src[n]) < 0:
                bad, bad_col = 1, 2
                break
            if length[3] and parse_mac(b + start[3], length[3], &eth_dst[n]) < 0:
                bad, bad_col = 1, 3
                break
            memset(&src_addr[n, 0], 0, 16)
            memset(&dst_addr[n, 0], 0, 16)
            src_family[n] = F_NONE
            dst_family[n] = F_NONE
            sport[n] = 0
            dport[n] = 0
            has_v4 = length[4] > 0 or length[5] > 0
            has_v6 = length[17] > 0 or length[18] > 0
            if has_v4:
                if parse_ipv4_text(b + start[4], length[4], &src_addr[n, 0]) < 0:
                    bad, bad_col = 1, 4
                    break
                if parse_ipv4_text(b + start[5], length[5], &dst_addr[n, 0]) < 0:
                    bad, bad_col = 1, 5
                    break
                src_family[n] = F_V4
                dst_family[n] = F_V4
            elif has_v6:
                if parse_ipv6_text(b + start[17], length[17], &src_addr[n, 0]) < 0:
                    bad, bad_col = 1, 17
                    break
                if parse_ipv6_text(b + start[18], length[18], &dst_addr[n, 0]) < 0:
                    bad, bad_col = 1, 18
                    break
                src_family[n] = F_V6
                dst_family[n] = F_V6
            has_tcp = length[6] > 0
            has_udp = length[8] > 0
            if has_tcp or has_udp:
                col = 6 if has_tcp else 8
                if parse_uint(b + start[col], length[col], 65535, &v) < 0:
                    bad, bad_col = 1, col
                    break
                sport[n] = <uint16_t>v
                if parse_uint(b + start[col + 1], length[col + 1], 65535, &v) < 0:
                    bad, bad_col = 1, col + 1
                    break
                dport[n] = <uint16_t>v
                proto[n] = P_TCP if has_tcp else P_UDP
            elif length[12] > 0:  # ARP: sender/target protocol addresses
                proto[n] = P_ARP
                memset(&src_addr[n, 0], 0, 16)
                memset(&dst_addr[n, 0], 0, 16)
                src_family[n] = F_NONE
                dst_family[n] = F_NONE
                if length[14] > 0:
                    if parse_ipv4_text(b + start[14], length[14], &src_addr[n, 0]) < 0:
                        bad, bad_col = 1, 14
                        break
                    src_family[n] = F_V4
                if length[16] > 0:
                    if parse_ipv4_text(b + start[16], length[16], &dst_addr[n, 0]) < 0:
                        bad, bad_col = 1, 16
                        break
                    dst_family[n] = F_V4
            elif length[10] > 0:
                proto[n] = P_ICMP
            elif has_v4 or has_v6:
                proto[n] = P_IP
            else:
                proto[n] = P_L2
                src_family[n] = F_MAC
                dst_family[n] = F_MAC
                put_mac(&src_addr[n, 0], eth_src[n])
                put_mac(&dst_addr[n, 0], eth_dst[n])
            n += 1
            line += 1
            pos = eol + 1
    if bad == 1:
        return n, pos, line, bad_col
    return n, pos, -1, 0
