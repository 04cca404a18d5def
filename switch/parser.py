"""The parser of ``lego.p4`` and the split-key record it fills, in Python.

A frame becomes one fixed 46-byte **key record**, the bit-packed fields every
split group hashes, laid out so that each group's field list (``lego.p4``
``GroupHash``) is one contiguous slice:

=======  =====  ==========================================================
offset   bytes  field (``lego.p4`` name)
=======  =====  ==========================================================
0        6      ``hdr.ethernet.srcAddr``
6        1      ``meta.src_family`` (``lego.ext.batch.Family``)
7        16     ``meta.src_addr``: the derived source address, left-aligned
23       1      ``meta.dst_family``
24       16     ``meta.dst_addr``
40       1      ``meta.proto`` (``lego.ext.batch.Proto``)
41       2      ``meta.sport`` (big-endian)
43       2      ``meta.dport``
45       1      ``meta.outer_proto``: the outer header's protocol class
=======  =====  ==========================================================

An ICMP error's proto and ports are those of the TCP/UDP datagram it quotes (as the
NF's parser derives them); its ``outer_proto`` is ICMP (IP for ICMPv6) and
its outer ports are 0. Everywhere else ``outer_proto`` equals ``proto`` and the
outer ports are the ports: the symmetric Socket group hashes this outer view
(:func:`outer_view`).

It is the same record :func:`records_from_batch` builds from a ``PacketBatch``,
so the software target and the offline split simulator hash identical bytes.

Parser rules (those of ``lego.p4`` on BMv2, where a parser error does not drop
the frame): a header that does not fit in the frame stays invalid, parsing
stops there and the frame's status is :data:`STATUS_PARSER_ERROR`; the frame is
classified by the headers that did parse. A frame shorter than the Ethernet
header is :data:`STATUS_RUNT` (dropped by the pipeline). An EtherType 0x0800
whose first byte is not version 4 with IHL >= 5, or 0x86DD whose version is
not 6, is not IP (split on the MACs) and not an error.

Where this (and ``lego.p4``) derives a key differently from the NF's parser
(``lego.ext.packets``), checked by ``tests/test_pipeline.py``:

- IPv6 extension headers are not walked: such a frame has proto IP and no
  ports here (only the Socket group's key differs; the addresses agree);
- IPv4 inside IPv6 (4in6): the switch uses the outer IPv6 addresses, the NF
  the inner IPv4 ones;
- 802.3 LLC/SNAP frames are split on the MACs;
- malformed only: an IPv4 header whose total length is below its header
  length (the NF: not IP), an ARP cut inside its addresses (the NF keeps the
  IPv4 family and the bytes present).
"""

from __future__ import annotations

import struct

import numpy as np

from lego.p4src.contract import LEGO_ETHERTYPE

KEY_BYTES = 46
STATUS_OK = 0
STATUS_PARSER_ERROR = 1
STATUS_RUNT = 2

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100  # also 0x88A8 and 0x9100, up to two tags
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_LEGO = LEGO_ETHERTYPE  # the shim's (the dataplane contract)

FAMILY_NONE, FAMILY_MAC, FAMILY_IPV4, FAMILY_IPV6 = 0, 1, 4, 6
PROTO_L2, PROTO_ARP, PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_IP = 0, 1, 2, 3, 4, 5

_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100))
_ICMP4_ERRORS = frozenset((3, 4, 5, 11, 12))
_ICMP6_ERRORS = frozenset((1, 2, 3, 4))
_KEY = struct.Struct("!6sB16sB16sBHHB")
assert _KEY.size == KEY_BYTES


def _pack(eth_src: bytes, src_family: int, src: bytes, dst_family: int, dst: bytes,
          proto: int, sport: int, dport: int, outer_proto: int | None = None) -> bytes:
    return _KEY.pack(eth_src, src_family, src, dst_family, dst, proto, sport, dport,
                     proto if outer_proto is None else outer_proto)


def _l4(frame: bytes, off: int, n: int, ipproto: int, v6: bool
        ) -> tuple[int, int, int, int, int | None]:
    """(proto class, sport, dport, status, outer proto class where it differs: an ICMP
    error quoting TCP/UDP) of the L4 header at ``off``."""
    if ipproto == 6 or ipproto == 17:  # ports (4 bytes), then the rest of the header
        if off + 4 > n:
            return PROTO_IP, 0, 0, STATUS_PARSER_ERROR, None
        return PROTO_TCP if ipproto == 6 else PROTO_UDP, (frame[off] << 8) | frame[off + 1], \
            (frame[off + 2] << 8) | frame[off + 3], \
            STATUS_OK if off + (20 if ipproto == 6 else 8) <= n else STATUS_PARSER_ERROR, None
    if (ipproto == 1 and not v6) or (ipproto == 58 and v6):
        base = PROTO_IP if v6 else PROTO_ICMP
        if off + 8 > n:
            return PROTO_IP, 0, 0, STATUS_PARSER_ERROR, None
        icmp_type = frame[off]
        off += 8
        if icmp_type not in (_ICMP6_ERRORS if v6 else _ICMP4_ERRORS):
            return base, 0, 0, STATUS_OK, None
        if off >= n:  # the lookahead does not fit
            return base, 0, 0, STATUS_PARSER_ERROR, None
        if v6:
            if frame[off] >> 4 != 6:
                return base, 0, 0, STATUS_OK, None
            if off + 40 > n:
                return base, 0, 0, STATUS_PARSER_ERROR, None
            inner = frame[off + 6]
            off += 40
        else:
            if frame[off] != 0x45:
                return base, 0, 0, STATUS_OK, None
            if off + 20 > n:
                return base, 0, 0, STATUS_PARSER_ERROR, None
            frag = ((frame[off + 6] & 0x3F) << 8) | frame[off + 7]  # MF, offset
            inner = frame[off + 9] if frag == 0 else -1
            off += 20
        if inner not in (6, 17):
            return base, 0, 0, STATUS_OK, None
        if off + 4 > n:
            return base, 0, 0, STATUS_PARSER_ERROR, None
        return PROTO_TCP if inner == 6 else PROTO_UDP, (frame[off] << 8) | frame[off + 1], \
            (frame[off + 2] << 8) | frame[off + 3], STATUS_OK, base
    return PROTO_IP, 0, 0, STATUS_OK, None


def parse_key(frame: bytes) -> tuple[bytes, int]:
    """The 46-byte key record of one frame and its status (see the module doc)."""
    n = len(frame)
    if n < 14:
        return bytes(KEY_BYTES), STATUS_RUNT
    eth_src = frame[6:12]
    etype = (frame[12] << 8) | frame[13]
    off = 14
    status = STATUS_OK
    for _ in range(2):  # up to two VLAN tags
        if etype not in _VLAN_TYPES:
            break
        if off + 4 > n:
            return _pack(eth_src, FAMILY_MAC, eth_src, FAMILY_MAC, frame[0:6], PROTO_L2,
                             0, 0), STATUS_PARSER_ERROR
        etype = (frame[off + 2] << 8) | frame[off + 3]
        off += 4
    if etype == ETHERTYPE_IPV4:
        if off >= n:
            status = STATUS_PARSER_ERROR
        else:
            vihl = frame[off]
            if 0x45 <= vihl <= 0x4F:
                if off + 20 > n:
                    status = STATUS_PARSER_ERROR
                else:
                    src = frame[off + 12:off + 16]
                    dst = frame[off + 16:off + 20]
                    frag = ((frame[off + 6] & 0x3F) << 8) | frame[off + 7]  # MF, offset
                    ipproto = frame[off + 9]
                    off += (vihl & 0x0F) * 4
                    if off > n:  # options do not fit
                        return _pack(eth_src, FAMILY_IPV4, src, FAMILY_IPV4, dst, PROTO_IP,
                                         0, 0), STATUS_PARSER_ERROR
                    if frag != 0:
                        proto, sport, dport, outer = PROTO_IP, 0, 0, None
                    else:
                        proto, sport, dport, status, outer = _l4(frame, off, n, ipproto, False)
                    return _pack(eth_src, FAMILY_IPV4, src, FAMILY_IPV4, dst, proto,
                                 sport, dport, outer), status
    elif etype == ETHERTYPE_IPV6:
        if off >= n:
            status = STATUS_PARSER_ERROR
        elif frame[off] >> 4 == 6:
            if off + 40 > n:
                status = STATUS_PARSER_ERROR
            else:
                src = frame[off + 8:off + 24]
                dst = frame[off + 24:off + 40]
                proto, sport, dport, status, outer = _l4(frame, off + 40, n, frame[off + 6],
                                                         True)
                return _pack(eth_src, FAMILY_IPV6, src, FAMILY_IPV6, dst, proto,
                             sport, dport, outer), status
    elif etype == ETHERTYPE_ARP:
        if off + 8 > n:  # no ARP header: split on the MACs
            status = STATUS_PARSER_ERROR
        else:
            if frame[off + 2:off + 6] == b"\x08\x00\x06\x04":
                if off + 28 > n:
                    status = STATUS_PARSER_ERROR
                else:
                    return _pack(eth_src, FAMILY_IPV4, frame[off + 14:off + 18], FAMILY_IPV4,
                                     frame[off + 24:off + 28], PROTO_ARP, 0, 0), STATUS_OK
            return _pack(eth_src, FAMILY_NONE, b"", FAMILY_NONE, b"", PROTO_ARP, 0, 0), \
                status
    return _pack(eth_src, FAMILY_MAC, eth_src, FAMILY_MAC, frame[0:6], PROTO_L2, 0, 0), \
        status


def parse_keys(frames: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Key records (uint8[n, 46]) and statuses (uint8[n]) of a list of frames."""
    keys = []
    status = bytearray(len(frames))
    for i, frame in enumerate(frames):
        k, s = parse_key(frame)
        keys.append(k)
        status[i] = s
    rec = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(frames), KEY_BYTES)
    return rec, np.frombuffer(bytes(status), dtype=np.uint8)


def records_from_batch(batch) -> np.ndarray:
    """Key records (uint8[n, 46]) of a ``lego.ext.batch.PacketBatch``, vectorised.

    The batch's derived fields are exactly the record's: ``eth_src``, families,
    16-byte addresses, ``proto``, ports. A batch does not say which ports an ICMP
    error quoted: its ``outer_proto`` is its ``proto`` (a batch whose columns hold
    the outer header gives the outer view).
    """
    n = len(batch)
    rec = np.zeros((n, KEY_BYTES), dtype=np.uint8)
    shifts = np.arange(40, -8, -8, dtype=np.uint64)
    rec[:, 0:6] = ((batch.eth_src[:, None] >> shifts) & np.uint64(0xFF)).astype(np.uint8)
    rec[:, 6] = batch.src_family
    rec[:, 7:23] = batch.src_addr
    rec[:, 23] = batch.dst_family
    rec[:, 24:40] = batch.dst_addr
    rec[:, 40] = batch.proto
    rec[:, 41] = batch.sport >> 8
    rec[:, 42] = batch.sport & 0xFF
    rec[:, 43] = batch.dport >> 8
    rec[:, 44] = batch.dport & 0xFF
    rec[:, 45] = batch.proto
    return rec


def outer_view(records: np.ndarray) -> np.ndarray:
    """Key records with each frame's outer header in the proto and port fields (a
    copy): where ``outer_proto`` differs from ``proto`` (an ICMP error quoting a
    datagram) the proto becomes the outer one and the ports 0."""
    out = records.copy()
    quoted = records[:, 45] != records[:, 40]
    out[quoted, 40] = records[quoted, 45]
    out[quoted, 41:45] = 0
    return out
