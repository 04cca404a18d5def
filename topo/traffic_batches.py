"""Generated traffic for tests and benchmarks: PacketBatch objects built directly
(no frames, no pcap; :mod:`lego.topo.traffic_synth` writes traces).

``mixed_traffic`` covers what the feature semantics must get right: TCP and UDP
sessions, ARP (including a host that changes its IP), ICMP echo and ICMP errors
quoting UDP ports, IPv6 with and without ports, frames without IP (MAC
addresses), a host talking to itself, repeated timestamps and a port scan.
Deterministic for a given seed. ``scan_batch`` is one host probing many addresses.
"""

from __future__ import annotations

import numpy as np

from lego.ext.batch import ADDR_BYTES, Family, PacketBatch, Proto

BROADCAST_MAC = 0xFFFFFFFFFFFF


def _ipv4(a: int, b: int, c: int, d: int) -> bytes:
    return bytes((a, b, c, d)) + bytes(ADDR_BYTES - 4)


def _ipv6_link_local(host: int) -> bytes:
    return bytes.fromhex("fe800000000000000000000000000000")[:14] + host.to_bytes(2, "big")


def _mac_addr(mac: int) -> bytes:
    return mac.to_bytes(6, "big") + bytes(ADDR_BYTES - 6)


class _Builder:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, ts, length, smac, dmac, proto, sfam, saddr, dfam, daddr, sport=0, dport=0):
        self.rows.append((ts, length, smac, dmac, int(proto), int(sfam), saddr, int(dfam), daddr,
                          sport, dport))

    def batch(self) -> PacketBatch:
        self.rows.sort(key=lambda r: r[0])  # stable: equal timestamps keep insertion order
        n = len(self.rows)
        b = PacketBatch.empty(n)
        for i, r in enumerate(self.rows):
            b.ts[i], b.frame_len[i], b.eth_src[i], b.eth_dst[i], b.proto[i] = r[:5]
            b.src_family[i] = r[5]
            b.src_addr[i] = np.frombuffer(r[6], dtype=np.uint8)
            b.dst_family[i] = r[7]
            b.dst_addr[i] = np.frombuffer(r[8], dtype=np.uint8)
            b.sport[i], b.dport[i] = r[9], r[10]
        return b


def mixed_traffic(n: int = 3000, seed: int = 7, n_hosts: int = 12,
                  scan_packets: int = 300) -> PacketBatch:
    """About ``n`` packets of varied LAN traffic followed by a port scan."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    macs = [0x020000000000 + i for i in range(n_hosts + 1)]  # index 0: the gateway
    ips = [_ipv4(192, 168, 2, 1)] + [_ipv4(192, 168, 2, 100 + i) for i in range(n_hosts)]
    servers = [_ipv4(52, 24, 43, 67), _ipv4(8, 8, 8, 8), _ipv4(13, 107, 4, 52)]
    t = 1_540_446_382.933899
    kinds = ["tcp", "udp", "dns", "arp", "icmp", "icmp_err", "ipv6", "icmpv6", "l2", "self"]
    weights = np.array([30, 20, 10, 8, 5, 5, 5, 3, 3, 1], dtype=float)
    weights /= weights.sum()
    for _ in range(n):
        # repeated timestamps: 15% of packets share the previous packet's time
        if rng.random() > 0.15:
            t += float(rng.exponential(0.02))
        h = int(rng.integers(1, n_hosts + 1))
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        length = int(rng.integers(60, 1500))
        out = rng.random() < 0.5  # direction host -> peer, else peer -> host
        if kind in ("tcp", "udp", "dns"):
            peer = servers[int(rng.integers(len(servers)))] if kind != "dns" else ips[0]
            proto = Proto.UDP if kind != "tcp" else Proto.TCP
            hport = 40000 + int(rng.integers(0, 8))
            pport = {"tcp": 443, "udp": 123, "dns": 53}[kind]
            if out:
                b.add(t, length, macs[h], macs[0], proto, Family.IPV4, ips[h], Family.IPV4, peer,
                      hport, pport)
            else:
                b.add(t, length, macs[0], macs[h], proto, Family.IPV4, peer, Family.IPV4, ips[h],
                      pport, hport)
        elif kind == "arp":
            # host 1 sometimes announces a second IP (an IP change / spoof)
            sender = ips[h] if not (h == 1 and rng.random() < 0.3) else _ipv4(192, 168, 2, 250)
            if out:
                b.add(t, 60, macs[h], BROADCAST_MAC, Proto.ARP, Family.IPV4, sender,
                      Family.IPV4, ips[0])
            else:
                b.add(t, 60, macs[0], macs[h], Proto.ARP, Family.IPV4, ips[0], Family.IPV4, sender)
        elif kind == "icmp":
            peer = ips[int(rng.integers(0, n_hosts + 1))]
            b.add(t, 98, macs[h], macs[0], Proto.ICMP, Family.IPV4, ips[h], Family.IPV4, peer)
        elif kind == "icmp_err":
            # the gateway reports an unreachable port: the quoted UDP ports show
            b.add(t, 86, macs[0], macs[h], Proto.UDP, Family.IPV4, ips[0], Family.IPV4, ips[h],
                  40001, 1900)
        elif kind == "ipv6":
            b.add(t, length, macs[h], macs[0], Proto.UDP, Family.IPV6, _ipv6_link_local(h),
                  Family.IPV6, _ipv6_link_local(1), 546, 547)
        elif kind == "icmpv6":
            b.add(t, 86, macs[h], macs[0], Proto.IP, Family.IPV6, _ipv6_link_local(h),
                  Family.IPV6, _ipv6_link_local(0xffff))
        elif kind == "l2":
            b.add(t, 60, macs[h], 0x0180C2000000, Proto.L2, Family.MAC, _mac_addr(macs[h]),
                  Family.MAC, _mac_addr(0x0180C2000000))
        else:  # a host talking to itself
            b.add(t, length, macs[h], macs[h], Proto.UDP, Family.IPV4, ips[h], Family.IPV4, ips[h],
                  5000, 5000)
    # port scan: host 1 probes many addresses and ports
    for i in range(scan_packets):
        t += 0.0005
        dst = _ipv4(10, 0, (i // 250) % 256, i % 250 + 1)
        b.add(t, 60, macs[1], macs[0], Proto.TCP, Family.IPV4, ips[1], Family.IPV4, dst,
              50000 + i % 7, (23, 2323, 80, 8080)[i % 4])
        if i % 5 == 0:  # some answers come back
            b.add(t + 0.0001, 60, macs[0], macs[1], Proto.TCP, Family.IPV4, dst, Family.IPV4,
                  ips[1], (23, 2323, 80, 8080)[i % 4], 50000 + i % 7)
    return b.batch()


def scan_batch(n_dst: int, answered_every: int = 10, t0: float = 1_540_446_400.0,
               gap: float = 1e-5) -> PacketBatch:
    """One host (192.168.2.108) probing ``n_dst`` distinct IPv4 addresses on TCP/23,
    every ``answered_every``-th probe answered; about 1.1 x n_dst packets."""
    i = np.arange(n_dst)
    probe = PacketBatch.empty(n_dst)
    probe.ts[:] = t0 + i * gap
    probe.frame_len[:] = 60
    probe.eth_src[:] = 0x5CCF7F05F2C6
    probe.eth_dst[:] = 0x4C09D4C6127B
    probe.proto[:] = Proto.TCP
    probe.src_family[:] = probe.dst_family[:] = Family.IPV4
    probe.src_addr[:, :4] = (192, 168, 2, 108)
    probe.dst_addr[:, 0] = 10
    probe.dst_addr[:, 1] = i >> 16
    probe.dst_addr[:, 2] = (i >> 8) & 0xFF
    probe.dst_addr[:, 3] = i & 0xFF
    probe.sport[:] = 40000 + i % 1000
    probe.dport[:] = 23
    ans = probe.take(i[::answered_every])
    ans.ts += gap / 2
    ans.eth_src, ans.eth_dst = ans.eth_dst.copy(), ans.eth_src.copy()
    ans.src_addr, ans.dst_addr = ans.dst_addr.copy(), ans.src_addr.copy()
    ans.sport, ans.dport = ans.dport.copy(), ans.sport.copy()
    both = PacketBatch.concat([probe, ans])
    return both.take(np.argsort(both.ts, kind="stable"))
