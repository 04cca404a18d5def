"""The dissector tables LUCID's features depend on: which application layer Wireshark
(tshark 4.0.17) names for a TCP or UDP port, and what it adds to ``frame.protocols``.

The kernel (:mod:`lego.nfs.lucid._lucid`) and the specification
(:mod:`lego.nfs.lucid.dissect_spec`) read these tables; docs/lucid.md lists them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: LUCID's protocol vocabulary (sklearn's CountVectorizer over ``frame.protocols``,
#: sorted): bit i of the protocols feature for name i
VOCABULARY = ("arp", "data", "dns", "ftp", "http", "icmp", "ip", "ssdp", "ssl", "tcp",
              "telnet", "udp")
BIT = {name: 1 << i for i, name in enumerate(VOCABULARY)}
#: CountVectorizer's default token pattern
TOKEN = re.compile(r"\b\w\w+\b")


def layer_hash(name: str) -> int:
    """LUCID's highest-layer feature: sha256 of pyshark's upper-case layer name, mod 10^8."""
    return int(hashlib.sha256(name.upper().encode()).hexdigest(), 16) % 10 ** 8


def protocols_mask(protocols: str) -> int:
    """LUCID's protocols feature of a ``frame.protocols`` string (or part of one)."""
    mask = 0
    for token in TOKEN.findall(protocols.lower()):
        mask |= BIT.get(token, 0)
    return mask


#: the kinds of application layer: the port's dissector whatever the payload, HTTP
#: (a body adds its media layer), TLS (records across segments), OpenFlow (messages
#: across segments, packets inside), the DNS message
#: format (DNS, mDNS, LLMNR, NBNS: malformed when its counts run past the datagram),
#: SNMP (a BER sequence, else the dissector declines), NetBIOS datagrams (an SMB
#: browser announcement inside, or not)
PLAIN, HTTP, TLS, DNS, SNMP, NBDGM, OPENFLOW = 0, 1, 2, 3, 4, 5, 6
MALFORMED, SHORT = "_WS.MALFORMED", "_WS.SHORT"


@dataclass(frozen=True)
class App:
    """What a port's dissector adds: ``layers`` to frame.protocols after tcp/udp, and
    pyshark's ``highest`` layer name; ``binary``: a dissector of fixed binary fields,
    which stops at the captured bytes of a datagram the capture cut (``_WS.SHORT``),
    where a text protocol's does not."""

    layers: str
    highest: str
    kind: int = PLAIN
    binary: bool = False


#: tshark's tcp.port table for the application layers our traces carry
TLS_PORTS = (324, 443, 465, 636, 802, 853, 993, 995, 1300, 2221, 2443, 3249, 3250, 3251, 3252,
             3496, 5061, 5671, 5684, 5868, 8883, 11207, 19999, 27017)
HTTP_PORTS = (80, 631, 1900, 2710, 2869, 3128, 3132, 3689, 5985, 8080, 8088, 11371)
TCP_PORTS = {
    21: App("ftp", "FTP"),
    23: App("telnet", "TELNET"),
    6653: App("openflow", "OPENFLOW", OPENFLOW),
    **{port: App("http", "HTTP", HTTP) for port in HTTP_PORTS},
    **{port: App("tls", "TLS", TLS) for port in TLS_PORTS},
}

def _probed_udp_ports() -> tuple[dict[int, App], dict[int, App]]:
    """wireshark_udp.tsv: the dissectors of tshark's udp.port table, as they name an
    opaque payload (the generated UDP flood's) sent to, and from, their port."""
    to, from_ = {}, {}
    path = Path(__file__).with_name("wireshark_udp.tsv")
    for line in path.read_text().splitlines():
        if line.startswith(("#", "port\t")):
            continue
        port, dst_layers, dst_highest, src_layers, src_highest = line.split("\t")
        for table, layers, highest in ((to, dst_layers, dst_highest),
                                       (from_, src_layers, src_highest)):
            if highest != "-":
                table[int(port)] = App(layers, highest)
    return to, from_


#: the well-formed protocols of our traces, by port (either direction)
UDP_WELL_FORMED = {
    53: App("dns", "DNS", DNS, binary=True),
    67: App("dhcp", "DHCP", binary=True),
    68: App("dhcp", "DHCP", binary=True),
    123: App("ntp", "NTP", binary=True),
    137: App("nbns", "NBNS", DNS, binary=True),
    138: App("nbdgm", "NBDGM", NBDGM),
    161: App("snmp", "SNMP", SNMP),
    162: App("snmp", "SNMP", SNMP),
    1900: App("ssdp", "SSDP"),
    5353: App("mdns", "MDNS", DNS, binary=True),
    5355: App("llmnr", "LLMNR", DNS, binary=True),
}
_to, _from = _probed_udp_ports()
#: what a UDP port's dissector names a datagram sent to it, and one sent from it
UDP_TO, UDP_FROM = _to | UDP_WELL_FORMED, _from | UDP_WELL_FORMED


#: the TCP heuristic dissectors our traces meet, for a payload no port claims (each
#: then owns the conversation): OpenFlow's (to one of its ports) and TLS's (a TLS
#: handshake or application-data record header, or an SSLv2 ClientHello)
OPENFLOW_HEURISTIC_PORTS = (6633, 6634, 6653)
TLS_HEURISTIC_VERSIONS = (0x0300, 0x0301, 0x0302, 0x0303, 0x0101)
TLS_MAX_RECORD = 16384 + 2048


def tcp_heuristic(dport: int, payload: bytes) -> App | None:
    if dport in OPENFLOW_HEURISTIC_PORTS:
        return TCP_PORTS[6653]
    if len(payload) >= 5 and payload[0] in (22, 23) and \
            int.from_bytes(payload[1:3], "big") in TLS_HEURISTIC_VERSIONS and \
            0 < int.from_bytes(payload[3:5], "big") < TLS_MAX_RECORD:
        return TCP_PORTS[443]
    return TCP_PORTS[443] if _sslv2_client_hello(payload) else None


def _sslv2_client_hello(payload: bytes) -> bool:
    if len(payload) < 46 or payload[0] != 0x80 or payload[2] != 1:
        return False
    specs, session, challenge = (int.from_bytes(payload[i:i + 2], "big") for i in (5, 7, 9))
    return specs > 0 and specs % 3 == 0 and session in (0, 16) and challenge == 32


def udp_apps(sport: int, dport: int) -> list[App]:
    """The dissectors Wireshark tries, in order: the lower port's first, then the
    other's (each named as it names a datagram to, or from, its port)."""
    first, second = ((UDP_FROM.get(sport), UDP_TO.get(dport)) if sport < dport
                     else (UDP_TO.get(dport), UDP_FROM.get(sport)))
    return [a for a in (first, second) if a is not None]


def dns_extent(payload: bytes) -> int:
    """How many bytes a DNS-format message claims (header, questions, records with
    their data), parsed as far as ``payload`` goes: past its end means the message
    runs past the bytes there are."""
    n = len(payload)
    if n < 12:
        return 12
    counts = [int.from_bytes(payload[i:i + 2], "big") for i in range(4, 12, 2)]
    at = 12
    for section, count in enumerate(counts):
        for _ in range(count):
            at = _name_end(payload, at)
            if at > n:
                return at
            at += 4 if section == 0 else 10
            if section and at <= n:
                at += int.from_bytes(payload[at - 2:at], "big")
            if at > n:
                return at
    return at


def _name_end(payload: bytes, at: int) -> int:
    n = len(payload)
    while at < n:
        size = payload[at]
        if size == 0:
            return at + 1
        if size & 0xC0 == 0xC0:  # a compression pointer ends the name
            return at + 2
        at += 1 + (size & 0x3F)
    return n + 1


def app_layers(app: App, payload: bytes, reported: int) -> tuple[list[str], str] | None:
    """What ``app``'s dissector adds for ``payload`` (``reported``: the datagram's
    payload length on the wire): (layers, highest), or None when it declines."""
    layers = app.layers.split(":") if app.layers else []
    if app.kind == SNMP:
        return (layers, app.highest) if payload[:1] == b"\x30" else None
    if app.kind == NBDGM and payload[82:86] == b"\xffSMB":
        browse = b"\\MAILSLOT\\BROWSE" in payload
        return layers + ["smb", "browser"] if browse else layers + ["smb"], \
            "BROWSER" if browse else "SMB"
    highest = app.highest
    if app.kind == DNS:
        need = dns_extent(payload)
        highest = MALFORMED if need > reported else SHORT if need > len(payload) else highest
    elif app.binary and len(payload) < reported:  # the capture cut the datagram
        highest = SHORT
    return layers, highest


def udp_layers(sport: int, dport: int, payload: bytes, reported: int) -> tuple[list[str], str]:
    """frame.protocols after "udp", and the highest layer, of a UDP datagram."""
    for app in udp_apps(sport, dport):
        named = app_layers(app, payload, reported)
        if named is not None:
            return named
    return (["data"], "DATA") if reported > 0 else ([], "UDP")


#: names the kernel gives by itself, in the kernel's order (H_TCP ...)
BASE_NAMES = ("TCP", "UDP", "ICMP", "DATA", "IGMP", SHORT, MALFORMED, "SMB", "BROWSER", "TLS",
              "DATA-TEXT-LINES", "H1", "OPENFLOW", "OPENFLOW_V1", "OPENFLOW_V4", "OPENFLOW_V5",
              "OPENFLOW_V6")


def kernel_tables() -> dict[str, np.ndarray]:
    """The tables as the kernel takes them: port -> app index (-1: none) per transport,
    each app's kind, highest-name index and protocols bits, and each name's hash."""
    names = list(BASE_NAMES)
    apps: list[App] = []
    index: dict[App, int] = {}

    def app_id(app: App) -> int:
        if app not in index:
            index[app] = len(apps)
            apps.append(app)
            if app.highest not in names:
                names.append(app.highest)
        return index[app]

    tables = {}
    for proto, ports in (("tcp", TCP_PORTS), ("udp_to", UDP_TO), ("udp_from", UDP_FROM)):
        table = np.full(65536, -1, dtype=np.int16)
        for port, app in ports.items():
            table[port] = app_id(app)
        tables[f"{proto}_app"] = table
    tables["app_kind"] = np.array([a.kind for a in apps], dtype=np.uint8)
    tables["app_binary"] = np.array([a.binary for a in apps], dtype=np.uint8)
    tables["app_highest"] = np.array([names.index(a.highest) for a in apps], dtype=np.int32)
    tables["app_mask"] = np.array([protocols_mask(a.layers) for a in apps], dtype=np.int64)
    tables["name_hash"] = np.array([layer_hash(n) for n in names], dtype=np.float64)
    tables["names"] = np.array(names)
    return tables
