"""Packets in: pcap/pcapng/TSV readers and the frame-parsing kernel (fast, < 10 s)."""

from __future__ import annotations

import struct
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lego.errors import TraceError
from lego.ext.batch import Family, PacketBatch, Proto
from lego.ext.packets import (
    format_addr,
    format_mac,
    open_trace,
    parse_frames,
    read_trace,
    write_pcap,
)

scapy_all = pytest.importorskip("scapy.all")
from scapy.all import (  # noqa: E402
    ARP,
    ICMP,
    IP,
    LLC,
    STP,
    TCP,
    UDP,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    Raw,
    fragment,
)

T0 = 1_540_446_382.933899
MAC_A, MAC_B = "5c:cf:7f:05:f2:c6", "4c:09:d4:c6:12:7b"


def _assert_batches_equal(a: PacketBatch, b: PacketBatch, skip=("seq",)) -> None:
    assert len(a) == len(b)
    for f in fields(PacketBatch):
        if f.name in skip:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        bad = np.nonzero((x != y).reshape(len(x), -1).any(axis=1))[0]
        assert bad.size == 0, f"{f.name} differs at rows {bad[:10].tolist()}"


def _one(frame: bytes, linktype: int = 1, origlen: int | None = None):
    counters: dict[str, int] = {}
    batch = parse_frames(frame, [0], [len(frame)], [origlen or len(frame)], [1.5], linktype,
                         counters=counters)
    return batch, counters


def _row(batch: PacketBatch, i: int = 0) -> tuple:
    return (Proto(int(batch.proto[i])).name,
            format_addr(batch.src_family[i], batch.src_addr[i]),
            format_addr(batch.dst_family[i], batch.dst_addr[i]),
            int(batch.sport[i]), int(batch.dport[i]))


# ---------------------------------------------------------------- the key exactness test

def test_mirai_pcap_equals_tshark_tsv(shared_data):
    """Our parse of the pcap equals our parse of tshark's TSV of it, field by field."""
    pcap = read_trace(shared_data / "kitsune_mirai_first2000.pcap")
    tsv = read_trace(shared_data / "kitsune_mirai_first38363.tsv", limit=2000)
    assert len(pcap) == 2000
    _assert_batches_equal(pcap, tsv, skip=())
    # the gateway's ICMP errors carry the quoted TCP ports (then proto TCP)
    icmp_err = (pcap.sport == 21074) & (pcap.dport == 80) & (pcap.frame_len == 86)
    assert icmp_err.any() and (pcap.proto[icmp_err] == Proto.TCP).all()


def test_mirai_tsv_full_and_counters(shared_data):
    reader = open_trace(shared_data / "kitsune_mirai_first38363.tsv")
    assert reader.format == "tsv"
    batches = list(reader.batches(10000))
    assert [len(b) for b in batches] == [10000, 10000, 10000, 8363]
    batch = PacketBatch.concat(batches)
    assert np.array_equal(batch.seq, np.arange(38363, dtype=np.uint64))
    assert reader.counters["packets"] == 38363
    assert int(np.count_nonzero(batch.proto == Proto.ARP)) == 1981
    assert np.all(np.diff(batch.ts) >= 0)
    assert batch.ts[0] == float("1540446382.933899000")


def test_mirai_pcap_counters_and_batches(shared_data):
    reader = open_trace(shared_data / "kitsune_mirai_first2000.pcap")
    assert reader.format == "pcap"
    batches = list(reader.batches(300))
    assert sum(len(b) for b in batches) == 2000
    assert int(batches[-1].seq[-1]) == 1999
    assert reader.counters["packets"] == 2000
    assert reader.counters["malformed"] == 0
    # snapped to 200 bytes: frames longer than that are counted as truncated
    whole = PacketBatch.concat(batches)
    assert reader.counters["truncated"] == int(np.count_nonzero(whole.frame_len > 200))


def test_pcapng_openflow_count_and_scapy_sample(shared_data):
    path = shared_data / "netspot_openflow.pcapng"
    reader = open_trace(path)
    assert reader.format == "pcapng"
    batch = PacketBatch.concat(list(reader.batches(512)))
    assert len(batch) == 1933 and reader.counters["packets"] == 1933
    packets = scapy_all.rdpcap(str(path))
    for i in range(0, 1933, 37):
        pkt = packets[i]
        assert abs(float(pkt.time) - batch.ts[i]) < 1e-6
        assert batch.frame_len[i] == pkt.wirelen or batch.frame_len[i] == len(pkt)
        assert format_mac(batch.eth_src[i]) == pkt[Ether].src
        if IP in pkt:
            assert _row(batch, i)[1:3] == (pkt[IP].src, pkt[IP].dst)
        elif IPv6 in pkt:
            assert _row(batch, i)[1:3] == (pkt[IPv6].src, pkt[IPv6].dst)
        for layer, proto in ((TCP, Proto.TCP), (UDP, Proto.UDP)):
            if layer in pkt:
                assert batch.proto[i] == proto
                assert (batch.sport[i], batch.dport[i]) == (pkt[layer].sport, pkt[layer].dport)
                break


def test_wifi_pcap_count(shared_data):
    reader = open_trace(shared_data / "netspot_wifi.pcap")
    n = sum(len(b) for b in reader.batches())
    assert n == 3957 and reader.counters["malformed"] == 0


# ---------------------------------------------------------------- crafted frames

def _eth(payload, src=MAC_A, dst=MAC_B):
    return Ether(src=src, dst=dst) / payload


CRAFTED = [
    ("tcp", _eth(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80)),
     ("TCP", "10.0.0.1", "10.0.0.2", 1234, 80)),
    ("arp", Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") /
     ARP(op=1, hwsrc=MAC_A, psrc="192.168.2.109", pdst="192.168.2.106"),
     ("ARP", "192.168.2.109", "192.168.2.106", 0, 0)),
    ("ipv6_udp", _eth(IPv6(src="fe80::1", dst="ff02::fb") / UDP(sport=5353, dport=5353)),
     ("UDP", "fe80::1", "ff02::fb", 5353, 5353)),
    ("icmp_error_quoting_udp",
     _eth(IP(src="192.168.2.1", dst="192.168.2.108") / ICMP(type=3, code=3) /
          IP(src="192.168.2.108", dst="192.168.2.1") / UDP(sport=40001, dport=1900)),
     ("UDP", "192.168.2.1", "192.168.2.108", 40001, 1900)),
    ("icmp_error_quoting_8_bytes_of_tcp",
     _eth(IP(src="192.168.2.1", dst="192.168.2.108") / ICMP(type=3, code=1) /
          Raw(bytes(IP(src="192.168.2.108", dst="52.24.43.67", proto=6, len=60))[:20] +
              struct.pack("!HHI", 21074, 80, 7))),
     ("TCP", "192.168.2.1", "192.168.2.108", 21074, 80)),
    ("icmp_echo", _eth(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()),
     ("ICMP", "10.0.0.1", "10.0.0.2", 0, 0)),
    ("icmpv6_echo", _eth(IPv6(src="fe80::1", dst="ff02::1") / ICMPv6EchoRequest()),
     ("IP", "fe80::1", "ff02::1", 0, 0)),
    ("icmpv6_error_quoting_udp",
     _eth(IPv6(src="fe80::1", dst="fe80::2") / ICMPv6DestUnreach() /
          IPv6(src="fe80::2", dst="fe80::1") / UDP(sport=546, dport=547)),
     ("UDP", "fe80::1", "fe80::2", 546, 547)),
    ("vlan", _eth(Dot1Q(vlan=7) / IP(src="10.1.1.1", dst="10.1.1.2") / UDP(sport=53, dport=99)),
     ("UDP", "10.1.1.1", "10.1.1.2", 53, 99)),
    ("qinq", _eth(Dot1AD(vlan=5) / Dot1Q(vlan=7) / IP(src="10.1.1.1", dst="10.1.1.2") /
                  TCP(sport=1, dport=2)),
     ("TCP", "10.1.1.1", "10.1.1.2", 1, 2)),
    ("stp_llc", Dot3(src="00:14:1c:28:d6:06", dst="01:80:c2:00:00:00") / LLC() / STP(),
     ("L2", "00:14:1c:28:d6:06", "01:80:c2:00:00:00", 0, 0)),
    ("loop_ethertype", Ether(src=MAC_A, dst=MAC_A, type=0x9000) / Raw(b"\x00" * 46),
     ("L2", MAC_A, MAC_A, 0, 0)),
    ("igmp", _eth(IP(src="192.168.2.5", dst="224.0.0.22", proto=2) / Raw(b"\x22" + b"\0" * 7)),
     ("IP", "192.168.2.5", "224.0.0.22", 0, 0)),
    ("ipv6_hop_by_hop_udp",
     _eth(IPv6(src="fe80::3", dst="ff02::16") / IPv6ExtHdrHopByHop() / UDP(sport=7, dport=8)),
     ("UDP", "fe80::3", "ff02::16", 7, 8)),
    ("ipv6_atomic_fragment_udp",
     _eth(IPv6(src="fe80::3", dst="fe80::4") / IPv6ExtHdrFragment(m=0, offset=0) /
          UDP(sport=9, dport=10)),
     ("UDP", "fe80::3", "fe80::4", 9, 10)),
    ("ipv4_in_ipv6_wins",
     _eth(IPv6(src="2001:db8::1", dst="2001:db8::2") / IP(src="1.2.3.4", dst="5.6.7.8") /
          UDP(sport=11, dport=12)),
     ("UDP", "1.2.3.4", "5.6.7.8", 11, 12)),
    ("arp_ipv6_protocol", Ether(src=MAC_A, dst=MAC_B, type=0x0806) /
     Raw(struct.pack("!HHBBH", 1, 0x86DD, 6, 16, 1) + b"\1" * 44),
     ("ARP", "", "", 0, 0)),
]


@pytest.mark.parametrize("name,frame,expected", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_frame(name, frame, expected):
    batch, counters = _one(bytes(frame))
    assert _row(batch) == expected
    assert counters["malformed"] == 0
    assert format_mac(batch.eth_src[0]) == frame.src
    assert format_mac(batch.eth_dst[0]) == frame.dst


def test_ipv4_fragments_carry_no_upper_layer():
    pkt = _eth(IP(src="10.0.0.1", dst="10.0.0.2", id=9) / UDP(sport=5, dport=6) /
               Raw(b"x" * 3000))
    frames = [bytes(_eth(f)) for f in fragment(pkt[IP], fragsize=1000)]
    assert len(frames) == 4
    counters: dict[str, int] = {}
    offs = np.cumsum([0] + [len(f) for f in frames[:-1]])
    lens = [len(f) for f in frames]
    batch = parse_frames(b"".join(frames), offs, lens, lens, np.zeros(4), counters=counters)
    assert [_row(batch, i) for i in range(4)] == [("IP", "10.0.0.1", "10.0.0.2", 0, 0)] * 4
    assert counters["fragments"] == 4 and counters["malformed"] == 0


def test_ipv6_non_first_fragment():
    frame = bytes(_eth(IPv6(src="fe80::3", dst="fe80::4") /
                       IPv6ExtHdrFragment(m=0, offset=100, nh=17) / Raw(b"y" * 16)))
    batch, counters = _one(frame)
    assert _row(batch) == ("IP", "fe80::3", "fe80::4", 0, 0)
    assert counters["fragments"] == 1


@pytest.mark.parametrize("cut", [0, 5, 11, 13, 14, 20, 33, 34, 37])
def test_truncated_frames_are_malformed_never_fatal(cut):
    full = bytes(_eth(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2)))
    batch, counters = _one(full[:cut], origlen=len(full))
    assert counters["truncated"] == 1
    assert counters["malformed"] == 1
    proto, src, dst, sport, dport = _row(batch)
    if cut >= 34:  # a whole IPv4 header: addresses, but no ports
        assert (proto, src, dst, sport) == ("IP", "10.0.0.1", "10.0.0.2", 0)
    else:
        assert proto == "L2" and batch.src_family[0] == Family.MAC
    assert batch.frame_len[0] == len(full)


@pytest.mark.parametrize("patch,what", [(b"\x43", "IHL 3"), (b"\x45\x00\x00\x10", "len 16")])
def test_bad_ipv4_header_is_not_ip(patch, what):
    frame = bytearray(bytes(_eth(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))))
    frame[14:14 + len(patch)] = patch
    batch, counters = _one(bytes(frame))
    assert counters["malformed"] == 1, what
    assert _row(batch)[0] == "L2"


def test_raw_ip_and_sll_link_types():
    ip4 = bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=3, dport=4))
    ip6 = bytes(IPv6(src="::1", dst="::2") / TCP(sport=5, dport=6))
    for frame, lt, want in ((ip4, 101, "1.1.1.1"), (ip6, 101, "::1"), (ip4, 228, "1.1.1.1"),
                            (ip6, 229, "::1")):
        batch, counters = _one(frame, lt)
        assert _row(batch)[1] == want and counters["non_ethernet"] == 1
        assert batch.eth_src[0] == 0
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\xaa" * 6 + b"\0\0", 0x0800) + ip4
    batch, _ = _one(sll, 113)
    assert _row(batch) == ("UDP", "1.1.1.1", "2.2.2.2", 3, 4)


# ---------------------------------------------------------------- round trips

def _crafted_capture(tmp_path):
    frames = [bytes(c[1]) for c in CRAFTED]
    ts = T0 + np.arange(len(frames)) * 0.001001
    path = tmp_path / "crafted.pcap"
    write_pcap(path, frames, ts)
    return path, frames, ts


def test_write_pcap_round_trip(tmp_path):
    path, frames, ts = _crafted_capture(tmp_path)
    batch = read_trace(path)
    assert len(batch) == len(CRAFTED)
    for i, (_, _, expected) in enumerate(CRAFTED):
        assert _row(batch, i) == expected
    expected_ts = [float(f"{int(t)}.{round((t - int(t)) * 1e6):06d}") for t in ts]
    assert batch.ts.tolist() == expected_ts
    again = scapy_all.rdpcap(str(path))
    assert [bytes(p.original) for p in again] == frames


def test_write_pcap_truncated_records(tmp_path):
    frame = bytes(_eth(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) /
                       Raw(b"z" * 500)))
    write_pcap(tmp_path / "t.pcap", [frame[:60]], [T0], origlens=[len(frame)], snaplen=60)
    reader = open_trace(tmp_path / "t.pcap")
    batch = PacketBatch.concat(list(reader.batches()))
    assert batch.frame_len[0] == len(frame) and reader.counters["truncated"] == 1
    assert _row(batch) == ("UDP", "10.0.0.1", "10.0.0.2", 1, 2)


def _to_big_endian_nsec(data: bytes, nsec: bool, big: bool) -> bytes:
    """Rewrite a little-endian usec pcap (as write_pcap makes it) in another variant."""
    end = ">" if big else "<"
    magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(end + "I", magic), struct.pack(end + "HHiIII",
                                                      *struct.unpack("<HHiIII", data[4:24]))]
    pos = 24
    while pos < len(data):
        sec, usec, cl, ol = struct.unpack("<IIII", data[pos:pos + 16])
        frac = usec * 1000 + 123 if nsec else usec
        out.append(struct.pack(end + "IIII", sec, frac, cl, ol))
        out.append(data[pos + 16:pos + 16 + cl])
        pos += 16 + cl
    return b"".join(out)


@pytest.mark.parametrize("big,nsec", [(True, False), (False, True), (True, True)])
def test_pcap_variants(tmp_path, big, nsec):
    path, frames, _ = _crafted_capture(tmp_path)
    base = read_trace(path)
    raw = path.read_bytes()
    variant = tmp_path / "variant.pcap"
    variant.write_bytes(_to_big_endian_nsec(raw, nsec, big))
    other = read_trace(variant)
    _assert_batches_equal(base, other, skip=("ts",))
    pos, want = 24, []
    while pos < len(raw):
        sec, usec, cl, _ = struct.unpack("<IIII", raw[pos:pos + 16])
        want.append(float(f"{sec}.{usec * 1000 + 123:09d}") if nsec else
                    float(f"{sec}.{usec:06d}"))
        pos += 16 + cl
    assert other.ts.tolist() == want


def _pcapng(frames, ts_units, big=False, tsresol=6, spb=False):
    """A pcapng with two Ethernet interfaces (the second with ``tsresol``)."""
    e = ">" if big else "<"

    def block(btype, body):
        blen = 12 + len(body)
        return struct.pack(e + "II", btype, blen) + body + struct.pack(e + "I", blen)

    def pad(b):
        return b + b"\0" * (-len(b) % 4)

    out = [block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(block(1, struct.pack(e + "HHI", 1, 0, 0)))
    opt = struct.pack(e + "HH", 9, 1) + pad(bytes([tsresol])) + struct.pack(e + "HH", 0, 0)
    out.append(block(1, struct.pack(e + "HHI", 1, 0, 0) + opt))
    for i, (frame, units) in enumerate(zip(frames, ts_units, strict=True)):
        iface = i % 2
        body = struct.pack(e + "IIIII", iface, units >> 32, units & 0xFFFFFFFF, len(frame),
                           len(frame)) + pad(frame)
        out.append(block(6, body))
        out.append(block(5, b"\0" * 8))  # an interface statistics block to skip
    if spb:
        out.append(block(3, struct.pack(e + "I", len(frames[0])) + pad(frames[0])))
    return b"".join(out)


@pytest.mark.parametrize("big", [False, True])
def test_pcapng_blocks_interfaces_and_resolutions(tmp_path, big):
    frames = [bytes(c[1]) for c in CRAFTED]
    units = []
    for i in range(len(frames)):
        if i % 2 == 0:
            units.append(1_540_446_382_933_899 + i)  # interface 0: microseconds
        else:
            units.append(1_540_446_382_933_899_123_456 // 1000 + i)  # 10^-9 on interface 1
    path = tmp_path / "x.pcapng"
    path.write_bytes(_pcapng(frames, units, big=big, tsresol=9, spb=True))
    reader = open_trace(path)
    batch = PacketBatch.concat(list(reader.batches(5)))
    assert len(batch) == len(frames) + 1
    for i, (_, _, expected) in enumerate(CRAFTED):
        assert _row(batch, i) == expected
    for i, u in enumerate(units):
        digits = 6 if i % 2 == 0 else 9
        s = str(u)
        assert batch.ts[i] == float(s[:-digits] + "." + s[-digits:])
    assert batch.ts[-1] == 0.0 and _row(batch, len(frames)) == CRAFTED[0][2]


# ---------------------------------------------------------------- bad captures

def test_empty_file(tmp_path):
    (tmp_path / "e.pcap").write_bytes(b"")
    with pytest.raises(TraceError, match="empty file"):
        open_trace(tmp_path / "e.pcap")


def test_bad_magic(tmp_path):
    (tmp_path / "m.pcap").write_bytes(b"\x01\x02\x03\x04" + b"\0" * 40)
    with pytest.raises(TraceError, match="unknown capture format"):
        open_trace(tmp_path / "m.pcap")


def test_unknown_linktype(tmp_path):
    write_pcap(tmp_path / "l.pcap", [b"\0" * 20], [T0], linktype=147)
    with pytest.raises(TraceError, match="unsupported link type 147"):
        open_trace(tmp_path / "l.pcap")


def test_unknown_linktype_pcapng_names_packet(tmp_path):
    frames = [bytes(CRAFTED[0][1])] * 3
    data = bytearray(_pcapng(frames, [1, 2, 3]))
    # the second IDB (interface 1, used by packet 1) gets link type 147
    idb2 = data.find(struct.pack("<II", 1, 32))
    data[idb2 + 8:idb2 + 10] = struct.pack("<H", 147)
    (tmp_path / "l.pcapng").write_bytes(bytes(data))
    with pytest.raises(TraceError, match="packet 1: unsupported link type 147"):
        read_trace(tmp_path / "l.pcapng")


def test_a_file_cut_inside_its_last_record_is_read_up_to_it(tmp_path, caplog):
    path, frames, _ = _crafted_capture(tmp_path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    first_two = 24 + 16 * 2 + len(frames[0]) + len(frames[1])
    for length, what in ((first_two + 16 + 5, "record: captured length"),
                         (first_two + 7, "record header (7 of 16 bytes")):
        cut.write_bytes(raw[:length])
        caplog.clear()
        reader = open_trace(cut)
        with caplog.at_level("WARNING", logger="lego.ext.packets"):
            got = sum(len(b) for b in reader.batches())
        assert got == 2 and reader.cut_at == first_two
        warned = [r.getMessage() for r in caplog.records]
        assert len(warned) == 1 and f"file cut inside a {what}" in warned[0]
        assert f"offset {first_two}" in warned[0] and "2 whole records" in warned[0]
    assert open_trace(path).cut_at is None and len(read_trace(path)) == len(frames)


def test_absurd_record_length(tmp_path):
    path, frames, _ = _crafted_capture(tmp_path)
    raw = bytearray(path.read_bytes())
    pos = 24 + 16 + len(frames[0])
    raw[pos + 8:pos + 12] = struct.pack("<I", 50_000_000)
    path.write_bytes(bytes(raw))
    with pytest.raises(TraceError, match=r"packet 1: corrupt record"):
        read_trace(path)


def test_truncated_file_header(tmp_path):
    (tmp_path / "h.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 10)
    with pytest.raises(TraceError, match="truncated pcap file header"):
        open_trace(tmp_path / "h.pcap")


def test_pcapng_cut_inside_its_last_block_is_read_up_to_it(tmp_path, caplog):
    frames = [bytes(CRAFTED[0][1])] * 4
    data = _pcapng(frames, [1, 2, 3, 4])
    (tmp_path / "c.pcapng").write_bytes(data[:-30])
    with caplog.at_level("WARNING", logger="lego.ext.packets"):
        assert len(read_trace(tmp_path / "c.pcapng")) == 3
    assert "file cut inside a block at offset" in caplog.text


TSV_HEADER = ("frame.time_epoch\tframe.len\teth.src\teth.dst\tip.src\tip.dst\ttcp.srcport\t"
              "tcp.dstport\tudp.srcport\tudp.dstport\ticmp.type\ticmp.code\tarp.opcode\t"
              "arp.src.hw_mac\tarp.src.proto_ipv4\tarp.dst.hw_mac\tarp.dst.proto_ipv4\t"
              "ipv6.src\tipv6.dst\n")
TSV_ROW = "1.5\t60\t{mac}\t{mac}\t10.0.0.1\t10.0.0.2\t1\t2" + "\t" * 11 + "\n"


@pytest.mark.parametrize("text,match", [
    ("", "empty file"),
    (TSV_HEADER, "header but no packets"),
    ("frame.time_epoch\tframe.len\n1\t2\n", "not a Kitsune TSV"),
    (TSV_HEADER + TSV_ROW.format(mac="aa:bb:cc:dd:ee:ff") + TSV_ROW.format(mac="aa:bb:cc:dd:ee"),
     r"packet 1: line 3: column eth.src: cannot parse 'aa:bb:cc:dd:ee'"),
    (TSV_HEADER + "1.5\t60\n", "line 2: expected 19 tab-separated columns, got 2"),
    (TSV_HEADER + TSV_ROW.format(mac="aa:bb:cc:dd:ee:ff").replace("10.0.0.2", "10.0.0.256"),
     "column ip.dst"),
])
def test_bad_tsv(tmp_path, text, match):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(TraceError, match=match):
        read_trace(path)


def test_tsv_ipv6_and_uppercase_mac(tmp_path):
    row = ("2.25\t86\tAA:BB:CC:DD:EE:FF\t33:33:00:00:00:01" + "\t" * 14 +
           "fe80::1\tff02::1\n")
    path = tmp_path / "ok.tsv"
    path.write_text(TSV_HEADER + row)
    batch = read_trace(path)
    assert _row(batch) == ("IP", "fe80::1", "ff02::1", 0, 0)
    assert format_mac(batch.eth_src[0]) == "aa:bb:cc:dd:ee:ff" and batch.ts[0] == 2.25


# ---------------------------------------------------------------- fuzz

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=600),
       cuts=st.lists(st.integers(0, 600), max_size=12),
       linktype=st.sampled_from([1, 101, 113, 228, 229, 276]),
       ethertype=st.sampled_from([None, 0x0800, 0x86DD, 0x0806, 0x8100]))
def test_fuzz_parse_frames(data, cuts, linktype, ethertype):
    if ethertype is not None and linktype == 1 and len(data) >= 14:
        data = data[:12] + struct.pack("!H", ethertype) + data[14:]
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    offsets = np.array(bounds[:-1], dtype=np.int64)
    caplens = np.diff(bounds).astype(np.uint32)
    counters: dict[str, int] = {}
    batch = parse_frames(data, offsets, caplens, caplens + 1, np.arange(len(offsets), dtype=float),
                         linktype, seq0=10, counters=counters)
    n = len(offsets)
    assert len(batch) == n == counters["packets"] == counters["truncated"]
    assert 0 <= counters["malformed"] <= n
    assert counters["non_ethernet"] == (0 if linktype == 1 else n)
    assert set(np.unique(batch.proto)) <= {int(p) for p in Proto}
    assert set(np.unique(batch.src_family)) <= {int(f) for f in Family}
    no_ports = (batch.proto != Proto.TCP) & (batch.proto != Proto.UDP)
    assert not batch.sport[no_ports].any() and not batch.dport[no_ports].any()
    assert np.array_equal(batch.seq, np.arange(10, 10 + n, dtype=np.uint64))
    assert np.array_equal(batch.frame_len, caplens + 1)


def test_parse_frames_rejects_out_of_bounds():
    with pytest.raises(ValueError, match="outside"):
        parse_frames(b"\0" * 10, [5], [6], [6], [0.0])


def test_format_helpers():
    assert format_mac(0x5CCF7F05F2C6) == "5c:cf:7f:05:f2:c6"
    assert format_addr(Family.IPV4, bytes([192, 168, 2, 1]) + bytes(12)) == "192.168.2.1"
    assert format_addr(Family.IPV6, bytes.fromhex("fe80" + "00" * 13 + "01")) == "fe80::1"
    assert format_addr(Family.NONE, bytes(16)) == ""


def test_raw_batches_give_the_frames(tmp_path):
    path, frames, ts = _crafted_capture(tmp_path)
    reader = open_trace(path)
    raws = list(reader.raw_batches(4))
    assert [r.seq0 for r in raws] == list(range(0, len(frames), 4))
    got = [r.frame(i) for r in raws for i in range(len(r))]
    assert got == frames
    again = PacketBatch.concat([parse_frames(r.buffer, r.offsets, r.caplens, r.origlens, r.ts,
                                             r.linktypes, seq0=r.seq0) for r in raws])
    _assert_batches_equal(again, read_trace(path), skip=())
