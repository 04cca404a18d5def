"""A deterministic, labelled synthetic trace: an IoT camera LAN, then a Mirai-like attack.

The benign part is what the public Mirai capture looks like from the LAN switch: a
gateway (192.168.2.1, also DNS and DHCP server, and IPv6 router fe80::1), IP
cameras streaming to cloud servers over TLS, sensors doing HTTP check-ins, and
everyone doing DNS, NTP, ARP, DHCP renewals, SSDP/mDNS multicast, ICMP (echo, and
port-unreachable errors quoting UDP) and spanning-tree BPDUs (802.3/LLC).

From packet ``attack_start * packets`` on, one camera is infected: it beacons to
a C&C server, scans random IPv4 addresses (and the LAN, with ARP) with TCP SYNs to
23/2323 (Mirai's signature: the sequence number equals the target address), brute
forces telnet logins on the other LAN devices, and finally floods a victim with
UDP. Benign traffic goes on meanwhile.

Frames are packed with ``struct`` (valid IPv4, TCP, UDP and ICMPv6 checksums) and
written with :func:`lego.ext.packets.write_pcap`; labels are one ``0``/``1`` per
line (that capture's label-file format), 1 for every packet of the attack, including
the replies it provokes. Time is kept in integer microseconds, so the pcap holds
exactly the generated times. Everything depends only on ``seed``.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lego.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SEED = 1
DEFAULT_PACKETS = 80_000
DEFAULT_ATTACK_START = 0.70  # fraction of the packets before the first attack packet
T0_US = 1_700_000_000_000_000  # 2023-11-14 22:13:20 UTC, in microseconds

GATEWAY_MAC = 0x4C09D4C6127B
GATEWAY_IP = (192, 168, 2, 1)
BROADCAST = 0xFFFFFFFFFFFF
STP_MAC = 0x0180C2000000
SWITCH_MAC = 0x00141C28D606
SSDP_IP, SSDP_MAC = (239, 255, 255, 250), 0x01005E7FFFFA
MDNS6_IP, MDNS6_MAC = bytes.fromhex("ff0200000000000000000000000000fb"), 0x3333000000FB
ALL_NODES6, ALL_NODES6_MAC = bytes.fromhex("ff020000000000000000000000000001"), 0x333300000001
CLOUD = [(52, 24, 43, 67), (52, 25, 66, 250), (34, 201, 12, 9), (13, 107, 4, 52)]
NTP_SERVERS = [(129, 6, 15, 28), (162, 159, 200, 1)]
CNC_IP = (185, 244, 25, 108)
VICTIM_IP = (93, 184, 216, 34)

Frame = tuple[bytes, int]  # (frame bytes, label)


# ---------------------------------------------------------------- frame packing

def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(m: int) -> bytes:
    return m.to_bytes(6, "big")


def ether(src: int, dst: int, etype: int, payload: bytes) -> bytes:
    frame = _mac(dst) + _mac(src) + struct.pack("!H", etype) + payload
    return frame if len(frame) >= 60 else frame + bytes(60 - len(frame))


def ipv4(src, dst, proto: int, payload: bytes, ident: int = 0, ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000,
                      ttl, proto, 0, bytes(src), bytes(dst))
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + payload


def _l4_csum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), proto)
    return _csum(pseudo + segment)


def tcp(src, dst, sport: int, dport: int, seq: int, ack: int, flags: int,
        payload: bytes = b"", window: int = 29200) -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50,
                      flags, window, 0, 0) + payload
    c = _l4_csum(bytes(src), bytes(dst), 6, seg)
    return ipv4(src, dst, 6, seg[:16] + struct.pack("!H", c) + seg[18:])


def udp(src, dst, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _l4_csum(bytes(src), bytes(dst), 17, seg) or 0xFFFF
    return ipv4(src, dst, 17, seg[:6] + struct.pack("!H", c) + seg[8:], ident)


def icmp(src, dst, itype: int, code: int, rest: bytes, body: bytes) -> bytes:
    msg = struct.pack("!BBH", itype, code, 0) + rest + body
    return ipv4(src, dst, 1, msg[:2] + struct.pack("!H", _csum(msg)) + msg[4:])


def arp(op: int, sha: int, spa, tha: int, tpa) -> bytes:
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + _mac(sha) + bytes(spa) + _mac(tha) \
        + bytes(tpa)


def ipv6(src: bytes, dst: bytes, nh: int, payload: bytes, hlim: int = 255) -> bytes:
    if nh in (17, 58):
        off = 6 if nh == 17 else 2
        c = _l4_csum(src, dst, nh, payload) or (0xFFFF if nh == 17 else 0)
        payload = payload[:off] + struct.pack("!H", c) + payload[off + 2:]
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hlim) + src + dst + payload


def stp_bpdu(bridge: int) -> bytes:
    """802.3 + LLC (0x42/0x42/UI) + a configuration BPDU: no EtherType, L2 only."""
    bpdu = struct.pack("!HBBB", 0, 0, 0, 0) + struct.pack("!H", 0x8000) + _mac(bridge) \
        + struct.pack("!I", 0) + struct.pack("!H", 0x8000) + _mac(bridge) \
        + struct.pack("!HHHHH", 0x8001, 0, 20 * 256, 2 * 256, 15 * 256)
    llc = b"\x42\x42\x03" + bpdu
    frame = _mac(STP_MAC) + _mac(bridge) + struct.pack("!H", len(llc)) + llc
    return frame + bytes(60 - len(frame))


def _link_local(mac: int) -> bytes:
    m = bytearray(_mac(mac))
    m[0] ^= 0x02
    return bytes.fromhex("fe80000000000000") + bytes(m[:3]) + b"\xff\xfe" + bytes(m[3:])


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(qid: int, name: str) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + b"\0\1\0\1"


def dns_answer(qid: int, name: str, addr) -> bytes:
    return (struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + _dns_name(name) + b"\0\1\0\1"
            + b"\xc0\x0c\0\1\0\1" + struct.pack("!IH", 300, 4) + bytes(addr))


def dhcp(op: int, xid: int, mac: int, yiaddr, msg_type: int) -> bytes:
    body = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                       bytes(yiaddr), bytes(4), bytes(4))
    body += _mac(mac) + bytes(10) + bytes(192) + b"\x63\x82\x53\x63"
    return body + bytes([53, 1, msg_type, 255]) + bytes(8)


# ---------------------------------------------------------------- the LAN

@dataclass
class Device:
    name: str
    mac: int
    ip: tuple[int, int, int, int]
    kind: str  # "camera" or "sensor"
    cloud: tuple[int, int, int, int]
    isn: int = 0
    ident: int = 0
    sport: int = 40000
    extra: dict = field(default_factory=dict)

    def next_ident(self) -> int:
        self.ident = (self.ident + 1) & 0xFFFF
        return self.ident

    def next_port(self, rng: random.Random) -> int:
        self.sport = 32768 + (self.sport - 32768 + 1 + rng.randrange(8)) % 28000
        return self.sport


Source = Iterator[tuple[int, list[Frame]]]  # yields (time in us, frames at that time)


class _Synth:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        rng = self.rng
        self.devices: list[Device] = []
        for i, host in enumerate((108, 113, 110, 115, 107, 109, 111, 112, 114, 116)):
            kind = "camera" if i < 5 else "sensor"
            mac = 0x5CCF7F000000 | rng.getrandbits(24) if kind == "sensor" else \
                0x3C3300000000 | rng.getrandbits(24)
            self.devices.append(Device(f"{kind}{i}", mac, (192, 168, 2, host), kind,
                                       CLOUD[i % len(CLOUD)], isn=rng.getrandbits(32)))
        self.infected = self.devices[2]

    # -- benign behaviours (each a generator of (time, frames)) --

    def camera_stream(self, d: Device, t: int) -> Source:
        """TLS upload: every ~0.5 s a burst of records, ACKed by the cloud."""
        rng = self.rng
        sport = d.next_port(rng)
        seq, ack = d.isn, rng.getrandbits(32)
        srv = d.cloud
        yield t, [(self._eth_from(d, tcp(d.ip, srv, sport, 443, seq, 0, 0x02)), 0)]
        t += rng.randrange(20_000, 60_000)
        yield t, [(self._eth_to(d, tcp(srv, d.ip, 443, sport, ack, seq + 1, 0x12)), 0)]
        seq += 1
        ack += 1
        while True:
            t += rng.randrange(350_000, 650_000)
            out = []
            for _ in range(rng.randrange(2, 7)):
                n = rng.choice((1398, 1398, 1398, rng.randrange(200, 1398)))
                out.append((self._eth_from(d, tcp(d.ip, srv, sport, 443, seq, ack, 0x18,
                                                  self._payload(n))), 0))
                seq += n
            yield t, out
            t += rng.randrange(15_000, 45_000)
            yield t, [(self._eth_to(d, tcp(srv, d.ip, 443, sport, ack, seq, 0x10)), 0)]

    def sensor_checkin(self, d: Device, t: int) -> Source:
        """HTTP check-in: handshake, GET, response, close, every 5-15 s."""
        rng = self.rng
        while True:
            t += rng.randrange(5_000_000, 15_000_000)
            sport = d.next_port(rng)
            c, s = rng.getrandbits(32), rng.getrandbits(32)
            srv = d.cloud
            rtt = rng.randrange(20_000, 80_000)
            req = f"GET /api/v1/status?id={d.name} HTTP/1.1\r\nHost: cloud\r\n\r\n".encode()
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + self._payload(64)
            steps = [
                (0, True, tcp(d.ip, srv, sport, 80, c, 0, 0x02)),
                (rtt, False, tcp(srv, d.ip, 80, sport, s, c + 1, 0x12)),
                (rtt + 300, True, tcp(d.ip, srv, sport, 80, c + 1, s + 1, 0x10)),
                (rtt + 500, True, tcp(d.ip, srv, sport, 80, c + 1, s + 1, 0x18, req)),
                (2 * rtt, False, tcp(srv, d.ip, 80, sport, s + 1, c + 1 + len(req), 0x18, resp)),
                (2 * rtt + 400, True, tcp(d.ip, srv, sport, 80, c + 1 + len(req),
                                          s + 1 + len(resp), 0x11)),
                (3 * rtt, False, tcp(srv, d.ip, 80, sport, s + 1 + len(resp),
                                     c + 2 + len(req), 0x11)),
            ]
            for dt, out, pkt in steps:
                frame = self._eth_from(d, pkt) if out else self._eth_to(d, pkt)
                yield t + dt, [(frame, 0)]
            t += 3 * rtt

    def dns_ntp(self, d: Device, t: int) -> Source:
        rng = self.rng
        while True:
            t += rng.randrange(10_000_000, 40_000_000)
            qid = rng.getrandbits(16)
            name = rng.choice(("api.cloudcam.example", "time.example.org", "update.iot.example"))
            sport = d.next_port(rng)
            yield t, [(self._eth_from(d, udp(d.ip, GATEWAY_IP, sport, 53, dns_query(qid, name),
                                             d.next_ident())), 0)]
            t += rng.randrange(1_000, 30_000)
            yield t, [(self._eth_to(d, udp(GATEWAY_IP, d.ip, 53, sport,
                                           dns_answer(qid, name, d.cloud))), 0)]
            if rng.random() < 0.5:
                t += rng.randrange(5_000, 50_000)
                srv = rng.choice(NTP_SERVERS)
                ntp = b"\x23" + bytes(39) + struct.pack("!Q", rng.getrandbits(64))
                yield t, [(self._eth_from(d, udp(d.ip, srv, 123, 123, ntp, d.next_ident())), 0)]
                t += rng.randrange(20_000, 90_000)
                yield t, [(self._eth_to(d, udp(srv, d.ip, 123, 123, b"\x24" + ntp[1:])), 0)]

    def arp_dhcp(self, d: Device, t: int) -> Source:
        rng = self.rng
        renew = t + rng.randrange(0, 300_000_000)
        while True:
            t += rng.randrange(30_000_000, 90_000_000)
            if t > renew:
                xid = rng.getrandbits(32)
                for j, (op, mtype, src, dst) in enumerate(
                        ((1, 3, (0, 0, 0, 0), (255, 255, 255, 255)),
                         (2, 5, GATEWAY_IP, (255, 255, 255, 255)))):
                    pkt = udp(src, dst, 68 if op == 1 else 67, 67 if op == 1 else 68,
                              dhcp(op, xid, d.mac, d.ip if op == 2 else (0, 0, 0, 0), mtype))
                    smac, dmac = (d.mac, BROADCAST) if op == 1 else (GATEWAY_MAC, BROADCAST)
                    yield t + j * rng.randrange(500, 5_000), [(ether(smac, dmac, 0x0800, pkt), 0)]
                renew = t + 600_000_000
                continue
            yield t, [(ether(d.mac, BROADCAST, 0x0806, arp(1, d.mac, d.ip, 0, GATEWAY_IP)), 0)]
            t += rng.randrange(300, 3_000)
            yield t, [(ether(GATEWAY_MAC, d.mac, 0x0806,
                             arp(2, GATEWAY_MAC, GATEWAY_IP, d.mac, d.ip)), 0)]

    def multicast(self, d: Device, t: int) -> Source:
        """SSDP M-SEARCH/NOTIFY, mDNS over IPv6 link-local, the gateway's port-unreachable."""
        rng = self.rng
        ll = _link_local(d.mac)
        while True:
            t += rng.randrange(20_000_000, 60_000_000)
            msg = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\""
                   b"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n")
            sport = d.next_port(rng)
            ssdp = udp(d.ip, SSDP_IP, sport, 1900, msg, d.next_ident())
            yield t, [(ether(d.mac, SSDP_MAC, 0x0800, ssdp), 0)]
            if rng.random() < 0.5:  # the gateway answers from a closed port: ICMP 3/3
                t += rng.randrange(500, 5_000)
                quoted = ssdp[:28]
                yield t, [(self._eth_to(d, icmp(GATEWAY_IP, d.ip, 3, 3, bytes(4), quoted)), 0)]
            t += rng.randrange(100_000, 2_000_000)
            mdns = struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + _dns_name("_http._tcp.local") \
                + b"\0\x0c\0\1"
            seg = struct.pack("!HHHH", 5353, 5353, 8 + len(mdns), 0) + mdns
            yield t, [(ether(d.mac, MDNS6_MAC, 0x86DD, ipv6(ll, MDNS6_IP, 17, seg)), 0)]

    def gateway(self, t: int) -> Source:
        """Router advertisements, pings to devices and STP BPDUs from the switch."""
        rng = self.rng
        gw_ll = bytes.fromhex("fe800000000000000000000000000001")
        next_ra, next_ping, next_stp = t, t + 1_000_000, t + 500_000
        while True:
            t = min(next_ra, next_ping, next_stp)
            if t == next_stp:
                yield t, [(stp_bpdu(SWITCH_MAC), 0)]
                next_stp += 2_000_000
            elif t == next_ra:
                ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + \
                    struct.pack("!BB", 1, 1) + _mac(GATEWAY_MAC)
                yield t, [(ether(GATEWAY_MAC, ALL_NODES6_MAC, 0x86DD,
                                 ipv6(gw_ll, ALL_NODES6, 58, ra)), 0)]
                next_ra += rng.randrange(7_000_000, 9_000_000)
            else:
                d = rng.choice(self.devices)
                ident = rng.getrandbits(16)
                body = struct.pack("!HH", ident, 1) + self._payload(56)
                yield t, [(self._eth_to(d, icmp(GATEWAY_IP, d.ip, 8, 0, b"", body)), 0)]
                echo = icmp(d.ip, GATEWAY_IP, 0, 0, b"", body)
                yield t + rng.randrange(500, 3_000), [(self._eth_from(d, echo), 0)]
                next_ping += rng.randrange(5_000_000, 15_000_000)

    # -- the attack (label 1) --

    def cnc(self, t: int) -> Source:
        rng = self.rng
        d = self.infected
        while True:
            sport = d.next_port(rng)
            c, s = rng.getrandbits(32), rng.getrandbits(32)
            rtt = rng.randrange(60_000, 150_000)
            hello = b"\x00\x00\x00\x01\x00"
            for dt, out, pkt in (
                (0, True, tcp(d.ip, CNC_IP, sport, 23, c, 0, 0x02)),
                (rtt, False, tcp(CNC_IP, d.ip, 23, sport, s, c + 1, 0x12)),
                (rtt + 200, True, tcp(d.ip, CNC_IP, sport, 23, c + 1, s + 1, 0x10)),
                (rtt + 400, True, tcp(d.ip, CNC_IP, sport, 23, c + 1, s + 1, 0x18, hello)),
                (2 * rtt, False, tcp(CNC_IP, d.ip, 23, sport, s + 1, c + 6, 0x10)),
            ):
                yield t + dt, [(self._eth_from(d, pkt) if out else self._eth_to(d, pkt), 1)]
            t += 2 * rtt + rng.randrange(8_000_000, 12_000_000)

    def scan(self, t: int) -> Source:
        """SYNs to random addresses on 23 (90%) / 2323; seq = target address."""
        rng = self.rng
        d = self.infected
        while True:
            t += rng.randrange(1_000, 9_000)
            if rng.random() < 0.06:  # a LAN target: ARP for it first
                target = (192, 168, 2, rng.randrange(2, 255))
                yield t, [(ether(d.mac, BROADCAST, 0x0806, arp(1, d.mac, d.ip, 0, target)), 1)]
                continue
            target = (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256),
                      rng.randrange(1, 255))
            dport = 23 if rng.random() < 0.9 else 2323
            sport = rng.randrange(1024, 65536)
            seq = int.from_bytes(bytes(target), "big")
            out = [(self._eth_from(d, tcp(d.ip, target, sport, dport, seq, 0, 0x02,
                                          window=rng.randrange(1, 65536))), 1)]
            yield t, out
            if rng.random() < 0.08:  # a few targets answer with a RST
                rst = tcp(target, d.ip, dport, sport, 0, seq + 1, 0x14, window=0)
                yield t + rng.randrange(30_000, 200_000), [(self._eth_to(d, rst), 1)]

    def brute_force(self, t: int) -> Source:
        """Telnet logins with the default-credential dictionary on the LAN devices."""
        rng = self.rng
        d = self.infected
        creds = [("root", "xc3511"), ("root", "vizxv"), ("admin", "admin"), ("root", "888888"),
                 ("root", "default"), ("support", "support"), ("root", "12345"),
                 ("admin", "password"), ("root", "juantech"), ("user", "user")]
        victims = [v for v in self.devices if v is not d]
        while True:
            v = rng.choice(victims)
            port = 23 if rng.random() < 0.8 else 2323
            sport = d.next_port(rng)
            c, s = rng.getrandbits(32), rng.getrandbits(32)
            user, pw = rng.choice(creds)
            steps = [(True, 0x02, b""), (False, 0x12, b""), (True, 0x10, b""),
                     (False, 0x18, b"login: "), (True, 0x18, user.encode() + b"\r\n"),
                     (False, 0x18, b"Password: "), (True, 0x18, pw.encode() + b"\r\n"),
                     (False, 0x18, b"\r\nLogin incorrect\r\n"), (True, 0x11, b""),
                     (False, 0x11, b"")]
            for out, flags, data in steps:
                t += rng.randrange(500, 20_000)
                if out:
                    pkt = tcp(d.ip, v.ip, sport, port, c, s if flags != 0x02 else 0, flags, data)
                    frame = ether(d.mac, v.mac, 0x0800, pkt)
                    c += len(data) + (1 if flags & 0x03 else 0)
                else:
                    pkt = tcp(v.ip, d.ip, port, sport, s, c, flags, data)
                    frame = ether(v.mac, d.mac, 0x0800, pkt)
                    s += len(data) + (1 if flags & 0x03 else 0)
                yield t, [(frame, 1)]
            t += rng.randrange(50_000, 400_000)

    def udp_flood(self, t: int) -> Source:
        rng = self.rng
        d = self.infected
        payload = self._payload(512)
        while True:
            t += rng.randrange(200, 1_200)
            pkt = udp(d.ip, VICTIM_IP, rng.randrange(1024, 65536), rng.randrange(1, 65536),
                      payload, d.next_ident())
            yield t, [(self._eth_from(d, pkt), 1)]

    # -- helpers --

    def _eth_from(self, d: Device, ip_packet: bytes) -> bytes:
        return ether(d.mac, GATEWAY_MAC, 0x0800, ip_packet)

    def _eth_to(self, d: Device, ip_packet: bytes) -> bytes:
        return ether(GATEWAY_MAC, d.mac, 0x0800, ip_packet)

    def _payload(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class _Monotone:
    """Reorder a source whose replies (up to ``horizon`` us later) precede its next
    events, so the merge sees non-decreasing times."""

    def __init__(self, source: Source, horizon: int = 1_000_000):
        self.source, self.horizon = source, horizon
        self.buf: list[tuple[int, int, list[Frame]]] = []
        self.k = 0
        self.last = 0

    def __iter__(self) -> _Monotone:
        return self

    def __next__(self) -> tuple[int, list[Frame]]:
        buf = self.buf
        while not buf or buf[0][0] + self.horizon > self.last:
            t, frames = next(self.source)
            self.last = t
            heapq.heappush(buf, (t, self.k, frames))
            self.k += 1
        t, _, frames = heapq.heappop(buf)
        return t, frames


@dataclass
class SynthTrace:
    frames: list[bytes]
    ts: np.ndarray  # float64 seconds, each exactly float("sec.usec")
    labels: np.ndarray  # int8, 1 = attack packet
    attack_start: int  # index of the first attack packet
    infected_ip: str


def generate(seed: int = DEFAULT_SEED, packets: int = DEFAULT_PACKETS,
             attack_start: float = DEFAULT_ATTACK_START) -> SynthTrace:
    """Generate the trace in memory (deterministic for a given seed)."""
    if packets < 100:
        raise ConfigError(f"synthetic trace: packets must be >= 100, got {packets}")
    if not 0.0 < attack_start < 1.0:
        raise ConfigError(f"synthetic trace: attack_start must be in (0, 1), got {attack_start}")
    syn = _Synth(seed)
    rng = syn.rng
    heap: list[tuple[int, int, list[Frame], Source]] = []
    counter = 0

    def add(source: Source) -> None:
        nonlocal counter
        if not isinstance(source, _Monotone):
            source = _Monotone(source)
        try:
            t, frames = next(source)
        except StopIteration:
            return
        heapq.heappush(heap, (t, counter, frames, source))
        counter += 1

    t0 = T0_US
    add(syn.gateway(t0))
    for d in syn.devices:
        start = t0 + rng.randrange(0, 3_000_000)
        add((syn.camera_stream if d.kind == "camera" else syn.sensor_checkin)(d, start))
        add(syn.dns_ntp(d, start))
        add(syn.arp_dhcp(d, start))
        add(syn.multicast(d, start))
    first_attack = int(packets * attack_start)
    flood_at = first_attack + int((packets - first_attack) * 0.6)
    phases: list[tuple[int, Callable[[int], list[Source]]]] = [
        (first_attack, lambda t: [syn.cnc(t), syn.scan(t + 2_000_000),
                                  syn.brute_force(t + 3_000_000)]),
        (flood_at, lambda t: [syn.udp_flood(t)]),
    ]
    frames: list[bytes] = []
    times: list[int] = []
    labels: list[int] = []
    attack_index = -1
    while len(frames) < packets:
        if phases and len(frames) >= phases[0][0]:
            _, start = phases.pop(0)
            for source in start(heap[0][0]):
                add(source)
        t, _, batch, source = heapq.heappop(heap)
        for frame, label in batch:
            if label and attack_index < 0:
                attack_index = len(frames)
            frames.append(frame)
            times.append(t)
            labels.append(label)
        add(source)
    del frames[packets:], times[packets:], labels[packets:]
    ts = np.array(times, dtype=np.int64)
    return SynthTrace(frames=frames, ts=ts.astype(np.float64) / 1e6,
                      labels=np.array(labels, dtype=np.int8), attack_start=attack_index,
                      infected_ip=".".join(map(str, syn.infected.ip)))


def write_trace(trace: SynthTrace, pcap: str | Path, labels: str | Path | None = None) -> None:
    """Write the pcap (and the labels, one 0/1 per line) atomically."""
    from lego.ext.packets import write_pcap

    pcap = Path(pcap)
    pcap.parent.mkdir(parents=True, exist_ok=True)
    tmp = pcap.with_name(f".{pcap.name}.{os.getpid()}.tmp")
    write_pcap(tmp, trace.frames, trace.ts)
    if labels is not None:
        labels = Path(labels)
        labels.parent.mkdir(parents=True, exist_ok=True)
        ltmp = labels.with_name(f".{labels.name}.{os.getpid()}.tmp")
        ltmp.write_text("\n".join(map(str, trace.labels.tolist())) + "\n")
        os.replace(ltmp, labels)
    os.replace(tmp, pcap)


def labels_path(pcap: str | Path) -> Path:
    """Where :func:`default_trace` keeps the labels of ``pcap``."""
    pcap = Path(pcap)
    return pcap.with_name(pcap.stem + ".labels.csv")


def default_trace(path: str | Path | None = None, *, seed: int = DEFAULT_SEED,
                  packets: int = DEFAULT_PACKETS,
                  attack_start: float = DEFAULT_ATTACK_START) -> Path:
    """The demo trace: ``path`` (default ``<repo>/results/synth_seed{seed}_{packets}.pcap``;
    ``_attack{first attack packet}`` before ``.pcap`` when ``attack_start`` is not the
    default), generated with its labels (:func:`labels_path`) if either file is missing."""
    name = f"synth_seed{seed}_{packets}" + (
        "" if attack_start == DEFAULT_ATTACK_START else f"_attack{int(packets * attack_start)}")
    if path is None:
        path = Path(__file__).resolve().parents[1] / "results" / f"{name}.pcap"
    path = Path(path)
    if path.is_dir():
        path = path / f"{name}.pcap"
    if not (path.is_file() and labels_path(path).is_file()):
        log.info("generating the synthetic trace %s (seed %d, %d packets)", path, seed, packets)
        write_trace(generate(seed, packets, attack_start), path, labels_path(path))
    return path
