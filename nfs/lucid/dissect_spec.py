"""What Wireshark (tshark 4.0) says of a frame, for LUCID's 11 features: the pure-Python
specification of the kernel in :mod:`lego.nfs.lucid._lucid` (docs/lucid.md has the table).

LUCID reads packets through pyshark: its features name Wireshark's top protocol
(``highest_layer``), the protocol names of ``frame.protocols`` and the *relative*
TCP acknowledgement number. This module reproduces them for the protocols our traces
hold, one frame at a time, from the frame's bytes and the TCP conversation state
(:class:`TcpConversations`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lego.nfs.lucid.wireshark import (
    HTTP,
    OPENFLOW,
    TCP_PORTS,
    TLS,
    App,
    layer_hash,
    protocols_mask,
    tcp_heuristic,
    udp_apps,
    udp_layers,
)

ETH_IPV4, ETH_VLAN = 0x0800, (0x8100, 0x88A8, 0x9100)
TCP, UDP, ICMP, IGMP = 6, 17, 1, 2
ACK, SYN = 0x010, 0x002


@dataclass
class Packet:
    """LUCID's view of one IPv4 packet: its flow key and its features but the time."""

    src: int
    sport: int
    dst: int
    dport: int
    proto: int  # the key's protocol: 6, 17, 1, or 0 for other IPv4
    ip_len: int
    highest: str  # pyshark's highest_layer
    ip_flags: int
    layers: tuple[str, ...]  # frame.protocols from "ip" on
    tcp_len: int = 0
    tcp_ack: int = 0  # relative
    tcp_flags: int = 0
    tcp_window: int = 0
    udp_len: int = 0
    icmp_type: int = 0

    @property
    def protocols(self) -> int:
        return protocols_mask(":".join(self.layers))

    def features(self, ts: float) -> list[float]:
        return [ts, self.ip_len, layer_hash(self.highest), self.ip_flags, self.protocols,
                self.tcp_len, self.tcp_ack, self.tcp_flags, self.tcp_window, self.udp_len,
                self.icmp_type]


@dataclass
class Direction:
    """One direction of a TCP conversation: the base sequence number relative numbers
    count from, and the end of the data seen so far."""

    base: int | None = None
    next_seq: int | None = None

    def retransmits(self, seq: int, length: int) -> bool:
        """Whether a segment's payload was all seen before (Wireshark hands a
        retransmission to no application dissector)."""
        if length == 0 or self.next_seq is None:
            return False
        return ((self.next_seq - seq - length) & 0xFFFFFFFF) < 0x80000000

    def keep_alive(self, seq: int, length: int) -> bool:
        """A one-byte probe one below the data seen (Wireshark gives its byte to the
        data dissector, whatever the port)."""
        return length == 1 and self.next_seq == (seq + 1) & 0xFFFFFFFF

    def advance(self, seq: int, length: int) -> None:
        end = (seq + length) & 0xFFFFFFFF
        if self.next_seq is None or ((end - self.next_seq) & 0xFFFFFFFF) < 0x80000000:
            self.next_seq = end


@dataclass
class Conversation:
    """A TCP conversation (both directions of a 5-tuple): ``ends[0]`` is the direction
    from the endpoint that sorts first; ``app``: the application layer's state."""

    ends: tuple[Direction, Direction]
    app: object = None
    owner: App | None = None  # the dissector a heuristic gave the whole conversation


class TcpConversations:
    """Wireshark's TCP conversations, as far as LUCID's features read them. A
    direction's base is its first segment's sequence number (minus one when that is
    not a SYN), or, when the other side's ACK comes first, that ACK number minus one.
    A SYN whose sequence number differs from its direction's base starts a new
    conversation (Wireshark's "port numbers reused")."""

    def __init__(self) -> None:
        self.conversations: dict[tuple, Conversation] = {}

    def segment(self, src, sport, dst, dport, seq: int, ack: int, flags: int
                ) -> tuple[int, Conversation, int]:
        """(relative ack, the conversation, this segment's direction: 0 or 1)."""
        a, b = (src, sport), (dst, dport)
        d = 0 if a <= b else 1
        key = (a, b) if d == 0 else (b, a)
        conv = self.conversations.get(key)
        if conv is None or ((flags & (SYN | ACK)) == SYN and conv.ends[d].base is not None
                            and seq != conv.ends[d].base):
            conv = self.conversations[key] = Conversation((Direction(), Direction()))
        fwd, rev = conv.ends[d], conv.ends[1 - d]
        if fwd.base is None:
            fwd.base = seq if flags & SYN else (seq - 1) & 0xFFFFFFFF
        if not flags & ACK:
            return 0, conv, d
        if rev.base is None:
            rev.base = (ack - 1) & 0xFFFFFFFF
        return (ack - rev.base) & 0xFFFFFFFF, conv, d


class Dissector:
    """One capture's frames, in order, as pyshark shows them to LUCID's parser:
    :meth:`packet` gives a frame's :class:`Packet`, or None for a frame that is not
    IPv4 (it still advances LUCID's window clock, which is the caller's)."""

    def __init__(self) -> None:
        self.tcp = TcpConversations()

    @staticmethod
    def tls(conv: Conversation, d: int, payload: bytes, seq: int) -> tuple[list, str]:
        """TLS's layers for a segment (lego.nfs.lucid.tls_spec), with the TLS state kept
        in the TCP conversation (its two directions as the endpoints sort)."""
        from lego.nfs.lucid import tls_spec

        if conv.app is None:
            conv.app = tls_spec.TlsConversation()
        layers = conv.app.segment(payload, (seq - conv.ends[d].base) & 0xFFFFFFFF, d == 0)
        return list(tls_spec.protocols_tail(layers)), tls_spec.highest(layers)

    def packet(self, frame: bytes, linktype: int = 1) -> Packet | None:
        ip = _ipv4_offset(frame, linktype)
        if ip is None:
            return None
        ihl = (frame[ip] & 0x0F) * 4
        ip_len, frag, proto = struct.unpack_from("!H2xHxB", frame, ip + 2)
        src, dst = struct.unpack_from("!II", frame, ip + 12)
        p = Packet(src, 0, dst, 0, 0, ip_len, "DATA", frame[ip + 6] >> 5, ("ip", "data"))
        end = min(len(frame), ip + max(ip_len, ihl))
        body = ip + ihl
        if frag & 0x3FFF:  # an IP fragment: Wireshark reassembles, we do not
            return p
        if proto == TCP and end - body >= 20:
            self._tcp(p, frame, body, end, ihl)
        elif proto == UDP and end - body >= 8:
            self._udp(p, frame, body, end)
        elif proto == ICMP and end - body >= 4:
            self._icmp(p, frame, body, end)
        elif proto == IGMP:
            p.layers, p.highest = ("ip", "igmp"), "IGMP"
        return p

    def _tcp(self, p: Packet, frame: bytes, at: int, end: int, ihl: int) -> None:
        sport, dport, seq, ack, off_flags, win = struct.unpack_from("!HHIIHH", frame, at)
        hlen = (off_flags >> 12) * 4
        p.proto, p.sport, p.dport = TCP, sport, dport
        p.tcp_len = max(0, p.ip_len - ihl - hlen)
        p.tcp_flags, p.tcp_window = off_flags & 0x0FFF, win
        p.tcp_ack, conv, d = self.tcp.segment(p.src, sport, p.dst, dport, seq, ack,
                                              p.tcp_flags)
        payload = frame[at + hlen:end]
        p.layers, p.highest = ("ip", "tcp"), "TCP"
        direction = conv.ends[d]
        if direction.keep_alive(seq, p.tcp_len) and payload:
            p.layers, p.highest = ("ip", "tcp", "data"), "DATA"
            return
        if direction.retransmits(seq, p.tcp_len):
            return
        direction.advance(seq, p.tcp_len)
        if not payload:
            return
        app = conv.owner or _by_port(TCP_PORTS, sport, dport)
        if app is None:
            app = conv.owner = tcp_heuristic(dport, payload)
        if app is None:
            tail, p.highest = ("data",), "DATA"
        elif app.kind == TLS:
            tail, p.highest = self.tls(conv, d, payload, seq)
        elif app.kind == OPENFLOW:
            if conv.app is None:
                conv.app = OpenFlowStream()
            tail, p.highest = conv.app.segment(d, payload)
        else:
            tail, p.highest = app.layers.split(":"), app.highest
            if app.kind == HTTP and payload.startswith(HTTP_STARTS):
                tail, p.highest = _http(payload, tail, p.highest)
        p.layers = ("ip", "tcp", *tail)

    def _udp(self, p: Packet, frame: bytes, at: int, end: int) -> None:
        sport, dport, length = struct.unpack_from("!HHH", frame, at)
        p.proto, p.sport, p.dport, p.udp_len = UDP, sport, dport, length
        payload = frame[at + 8:end]
        tail, p.highest = udp_layers(sport, dport, payload, length - 8)
        p.layers = ("ip", "udp", *tail)

    def _icmp(self, p: Packet, frame: bytes, at: int, end: int) -> None:
        """An error quotes the datagram's IP header and the start of its payload, which
        Wireshark dissects too: the quoted headers nest inside ICMP, a quoted UDP
        payload's layer does not (it is the highest)."""
        p.proto, p.icmp_type, p.highest = ICMP, frame[at], "ICMP"
        q = at + 8
        p.layers = ("ip", "icmp", "data") if end > q else ("ip", "icmp")
        if p.icmp_type not in (3, 4, 5, 11, 12) or end - q < 20 or frame[q] >> 4 != 4:
            return
        inner = q + (frame[q] & 0x0F) * 4
        p.layers = ("ip", "icmp", "ip")
        if frame[q + 9] == TCP and end - inner >= 8:
            p.layers += ("tcp",)
        elif frame[q + 9] == UDP and end - inner >= 8:
            p.layers += ("udp",)
            if end > inner + 8:
                apps = udp_apps(*struct.unpack_from("!HH", frame, inner))
                app = apps[0] if apps else None  # quoted: named by its port only
                p.layers += (app.layers,) if app is not None else ("data",)
                p.highest = app.highest if app is not None else "DATA"


class OpenFlowStream:
    """OpenFlow over TCP as Wireshark cuts it (tcp_dissect_pdus: 8-byte headers, the
    length at offset 2): per direction, the bytes still missing of a message that
    spans segments, and its first bytes. A message adds ``openflow_<version>`` (the
    highest layer) and, for a packet-in or packet-out, the packet inside: ``eth``,
    ``ethertype`` and ``arp`` or ``data`` (other EtherTypes are not dissected further
    here; an IP packet adds its IP and transport layers, not the application's)."""

    HEAD = 512  # a message's bytes kept while it spans segments (its packet's start)
    VERSIONS = {1: "openflow_v1", 4: "openflow_v4", 5: "openflow_v5", 6: "openflow_v6"}

    def __init__(self) -> None:
        self.missing = [0, 0]  # -1: an incomplete header, the next segment completes it
        self.head = [b"", b""]

    def segment(self, d: int, payload: bytes) -> tuple[list, str]:
        layers: list[str] = []
        at = 0
        if self.missing[d] == -1:  # the header was cut: read again from its start
            payload, self.missing[d] = self.head[d] + payload, 0
        elif self.missing[d]:
            take = min(self.missing[d], len(payload))
            self.head[d] = (self.head[d] + payload[:take])[:self.HEAD]
            self.missing[d] -= take
            if self.missing[d]:
                return [], "TCP"  # inside the message: nothing dissected
            layers += ["openflow"] + self._message(self.head[d])
            at = take
        while at < len(payload):
            rest = payload[at:]
            if len(rest) < 8:
                self.missing[d], self.head[d] = -1, rest
                break
            length = int.from_bytes(rest[2:4], "big")
            if length < 8:  # a bogus length ends the tvb
                break
            if length > len(rest):
                self.missing[d], self.head[d] = length - len(rest), rest[:self.HEAD]
                break
            layers += (["openflow"] if not layers else []) + self._message(rest[:length])
            at += length
        names = [x for x in layers if x.startswith("openflow_")]
        return layers, (names[-1].upper() if names else "OPENFLOW" if layers else "TCP")

    def _message(self, msg: bytes) -> list[str]:
        layers = [self.VERSIONS.get(msg[0], "openflow")]
        if msg[0] != 4 or len(msg) < 24:
            return layers
        if msg[1] == 10:  # packet-in: header, buffer, length, reason, table, cookie, match
            match = int.from_bytes(msg[26:28], "big") if len(msg) >= 28 else 0
            inner = 24 + (match + 7) // 8 * 8 + 2
        elif msg[1] == 13:  # packet-out: header, buffer, in port, actions length, pad
            inner = 24 + int.from_bytes(msg[16:18], "big")
        else:
            return layers
        frame = msg[inner:]
        if len(frame) < 14:
            return layers
        return layers + ["eth", "ethertype"] + _inner_packet(frame[12:14], frame[14:])


INNER_TRANSPORT = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


def _inner_packet(ethertype: bytes, body: bytes) -> list[str]:
    """The layers of a packet an OpenFlow message carries, as far as LUCID's vocabulary
    tells them apart: ARP, IPv4/IPv6 and their transport, else data."""
    if ethertype == b"\x08\x06":
        return ["arp"]
    if ethertype == b"\x08\x00" and len(body) >= 20 and body[0] >> 4 == 4:
        return ["ip"] + ([INNER_TRANSPORT[body[9]]] if body[9] in INNER_TRANSPORT else [])
    if ethertype == b"\x86\xdd" and len(body) >= 40:
        return ["ipv6"] + ([INNER_TRANSPORT[body[6]]] if body[6] in INNER_TRANSPORT else [])
    return ["data"]


def _by_port(table: dict, sport: int, dport: int) -> App | None:
    low, high = sorted((sport, dport))
    return table.get(low) or table.get(high)


HTTP_STARTS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"HTTP/")


def _http(payload: bytes, tail: list, highest: str) -> tuple[list, str]:
    """An HTTP message in one segment: a body adds Wireshark's media layer, line-based
    text (``data-text-lines``, the highest layer) for a text/* content type, else
    ``data`` (nested in HTTP)."""
    head, sep, body = payload.partition(b"\r\n\r\n")
    if not sep or not body:
        return tail, highest
    text = False
    for line in head.split(b"\r\n")[1:]:  # the last Content-Type counts
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() == b"content-type":
            text = value.lstrip(b" \t").lower().startswith(b"text/")
    if text:
        return tail + ["data-text-lines"], "DATA-TEXT-LINES"
    return tail + ["data"], highest


def _ipv4_offset(frame: bytes, linktype: int) -> int | None:
    """Where the IPv4 header starts, or None if the frame carries none LUCID reads."""
    if linktype in (228, 12, 101):
        at = 0
    elif linktype in (113, 276):  # Linux cooked captures (v1, v2)
        at, kind = (16, frame[14:16]) if linktype == 113 else (20, frame[0:2])
        if kind != b"\x08\x00":
            return None
    elif linktype == 1:
        at, etype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while etype in ETH_VLAN and len(frame) >= at + 4:
            etype, at = int.from_bytes(frame[at + 2:at + 4], "big"), at + 4
        if etype != ETH_IPV4:
            return None
    else:
        return None
    if len(frame) < at + 20 or frame[at] >> 4 != 4 or (frame[at] & 0x0F) < 5:
        return None
    return at
