"""LUCID's feature extraction against LUCID's own parser (the reference fixtures of
../shared/data/lucid-reference), the kernel against its specification, the window
stamp, the dissector tables and bad input (fast, < 15 s)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from lego.errors import ConfigError, TraceError
from lego.nfs.lucid.features import extract, new_extractor
from lego.nfs.lucid.features_spec import extract_spec
from lego.nfs.lucid.wireshark import layer_hash, protocols_mask

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REFERENCE = SHARED / "lucid-reference"
SYNFLOOD = SHARED / "cic-ddos2019" / "synflood.pcap"
FIELDS = ("key", "window", "npkts", "first_seen", "raw", "X")

needs_shared = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/data is absent")


@pytest.fixture(scope="module")
def synth3(tmp_path_factory) -> Path:
    """The fixture's generated input: `lego trace synth --seed 3 --packets 30000`."""
    from lego.topo.traffic_synth import generate, write_trace

    path = tmp_path_factory.mktemp("lucid") / "synth3.pcap"
    write_trace(generate(seed=3, packets=30000), path)
    return path


def assert_fixture(frags, fixture: Path) -> None:
    ref = np.load(fixture)
    assert len(frags.window) == len(ref["window"])
    for name in FIELDS:
        got, want = getattr(frags, name), ref[name]
        assert got.shape == want.shape, name
        mismatched = np.flatnonzero((got != want).reshape(len(want), -1).any(axis=1))
        assert mismatched.size == 0, f"{name}: fragments {mismatched[:10]} differ"


@needs_shared
def test_the_cic_syn_flood_fixture_value_for_value():
    assert_fixture(extract(SYNFLOOD, 10.0, 10), REFERENCE / "cic-synflood-10t10n.npz")


@needs_shared
def test_the_generated_trace_fixture_value_for_value(synth3):
    import hashlib

    digest = hashlib.sha256(synth3.read_bytes()).hexdigest()
    assert digest == "986de80f673f8f8a612105145897cbc5422a81452fa9f275c7a8ab987351f67a"
    assert_fixture(extract(synth3, 10.0, 10), REFERENCE / "synth3_30k-10t10n.npz")


def frames_of(path: Path):
    from lego.nfs.lucid.features import load_capture

    cap = load_capture(path)
    frames = [bytes(cap.buffer[o:o + c]) for o, c in zip(cap.offsets, cap.caplens, strict=True)]
    return frames, cap.ts


@pytest.mark.parametrize("t, n", [(10.0, 10), (2.0, 5), (1.0, 100)])
def test_the_kernel_equals_its_specification(synth3, t, n):
    frames, ts = frames_of(synth3)
    spec, kernel = extract_spec(frames, ts, t, n), extract(synth3, t, n)
    for name in FIELDS:
        assert np.array_equal(getattr(spec, name), getattr(kernel, name)), name


def test_stamped_windows_equal_the_extractors_own_clock(synth3):
    from lego.nfs.lucid.features import load_capture
    from lego.nfs.lucid.split import run, switch_clock

    cap = load_capture(synth3)
    own, stamped = run(cap, 10.0, 10), run(cap, 10.0, 10, windows=switch_clock(cap, 10.0, 10))
    for a, b in zip(own, stamped, strict=True):
        assert np.array_equal(a, b)


def test_a_window_restarts_at_the_first_frame_past_start_plus_t():
    ex = new_extractor(1.0, 10)
    ts = np.array([5.0, 5.5, 6.0, 6.0000001, 6.5, 7.1, 9.0])
    assert ex.clock(ts).tolist() == [5.0, 5.0, 5.0, 6.0000001, 6.0000001, 7.1, 9.0]


def eth_ipv4_udp(src: int, dst: int, sport: int, dport: int, payload: bytes = b"") -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def test_a_flow_is_bidirectional_and_keeps_at_most_n_packets(tmp_path):
    from lego.ext.packets import write_pcap

    a, b = 0x0A000001, 0x0A000002
    frames = [eth_ipv4_udp(a, b, 1000, 2000, b"x")] * 3 + [eth_ipv4_udp(b, a, 2000, 1000)] * 3
    frames += [b"\xff" * 14 + b"arp?"]  # not IPv4: dropped, but it advances the clock
    frames += [eth_ipv4_udp(b, a, 2000, 1000)]
    ts = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 20.0, 20.5]
    write_pcap(tmp_path / "t.pcap", frames, ts)
    frags = extract(tmp_path / "t.pcap", 10.0, 4)
    assert frags.key.tolist() == [["10.0.0.1", "1000", "10.0.0.2", "2000", "17"]] * 2
    assert frags.npkts.tolist() == [4, 1]  # the 5th and 6th packets of window 0 dropped
    assert frags.window.tolist() == [0.0, 20.0]
    assert frags.first_seen.tolist() == [0, 7]
    assert frags.raw[0, :4, 9].tolist() == [9, 9, 9, 8]  # UDP lengths, both directions
    assert np.all(frags.X[0, 4:] == 0) and np.all(frags.X[1, 1:] == 0)


def test_truncated_and_non_ip_frames_do_not_stop_the_pass(tmp_path):
    from lego.ext.packets import write_pcap

    whole = eth_ipv4_udp(0x0A000001, 0x0A000002, 53, 5353, b"\x00" * 40)
    frames = [whole[:20], whole[:34], whole[:38], b"", whole]
    write_pcap(tmp_path / "t.pcap", frames, [0.0, 0.1, 0.2, 0.3, 0.4])
    frags = extract(tmp_path / "t.pcap", 10.0, 10)
    assert frags.npkts.sum() >= 1  # the whole frame at least, nothing raised


def test_bad_windows_and_captures_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="t > 0"):
        new_extractor(0.0, 10)
    with pytest.raises(ConfigError, match="n >= 1"):
        new_extractor(10.0, 0)
    tsv = SHARED / "kitsune_mirai_first38363.tsv"
    if tsv.is_file():  # a capture of tshark's fields has no frames to dissect
        with pytest.raises(TraceError, match="LUCID reads frames: expected a pcap"):
            extract(tsv, 10.0, 10)


def test_the_protocols_feature_is_lucids_token_bitmask():
    # sklearn's CountVectorizer vocabulary, sorted: tcp (bit 9) before telnet (bit 10)
    assert protocols_mask("eth:ethertype:ip:tcp:telnet") == (1 << 6) | (1 << 9) | (1 << 10)
    assert protocols_mask("eth:ethertype:ip:tcp:http:data-text-lines") == 64 + 512 + 16 + 2
    assert protocols_mask("eth:ethertype:ip:udp:pn_rt:pn_io") == 64 + 2048
    assert protocols_mask("eth:ethertype:ip:tcp:tls:tls") == 64 + 512  # no "ssl" in 4.0
    assert layer_hash("TCP") == 78354535 and layer_hash("tls") == 18228385


REAL = ("cic-ddos2019/webddos.pcap", "netspot_wifi.pcap", "netspot_openflow.pcapng",
        "kitsune_mirai_first2000.pcap")


@needs_shared
@pytest.mark.parametrize("name", REAL)
def test_the_kernel_equals_its_specification_on_real_captures(name):
    frames, ts = frames_of(SHARED / name)
    spec, kernel = extract_spec(frames, ts, 10.0, 10), extract(SHARED / name, 10.0, 10)
    for field in FIELDS:
        assert np.array_equal(getattr(spec, field), getattr(kernel, field)), field


def eth_ipv4_tcp(src: int, dst: int, sport: int, dport: int, seq: int, payload: bytes,
                 flags: int = 0x18) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 0x50, flags, 1000, 0, 0) + payload
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def openflow(kind: int, body: bytes) -> bytes:
    return struct.pack("!BBHI", 4, kind, 8 + len(body), 7) + body


def highest_per_packet(tmp_path, frames) -> list[float]:
    from lego.ext.packets import write_pcap

    write_pcap(tmp_path / "t.pcap", frames, [0.001 * i for i in range(len(frames))])
    frags = extract(tmp_path / "t.pcap", 10.0, 100)
    spec = extract_spec(frames, [0.001 * i for i in range(len(frames))], 10.0, 100)
    assert np.array_equal(frags.raw, spec.raw)
    return [frags.raw[0, i, 2] for i in range(int(frags.npkts[0]))], frags.raw[0, :, 4]


def test_openflow_messages_across_segments_and_tcp_keep_alives(tmp_path):
    a, b = 0x0A000001, 0x0A000002
    packet_in = openflow(10, bytes(16) + struct.pack("!HH", 1, 4) + bytes(4) + bytes(2)
                         + bytes(12) + b"\x08\x06" + bytes(28))  # an ARP inside
    echo = openflow(2, b"")
    stream = echo + packet_in + echo
    cuts = [0, 5, 40, len(stream)]  # a cut header, then a message over two segments
    frames, seq = [], 100
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        frames.append(eth_ipv4_tcp(a, b, 40000, 6633, seq, stream[lo:hi]))
        seq += hi - lo
    frames.append(eth_ipv4_tcp(a, b, 40000, 6633, seq - 1, b"k", flags=0x10))  # keep-alive
    frames.append(eth_ipv4_tcp(a, b, 40000, 6633, 100, stream[:5]))  # a retransmission
    highest, protocols = highest_per_packet(tmp_path, frames)
    assert highest == [layer_hash(x) for x in ("TCP", "OPENFLOW_V4", "OPENFLOW_V4", "DATA",
                                               "TCP")]
    assert protocols[2] == protocols_mask("ip:tcp:openflow:openflow_v4:eth:ethertype:arp")


def test_the_packet_inside_an_openflow_message_sets_its_protocol_bits(tmp_path):
    # pyshark 0.6 / tshark 4.0.17 on these frames: highest OPENFLOW_V4 for each, and
    # frame.protocols ...:openflow_v4:eth:ethertype:arp / :data / :ip:udp
    a, b = 0x0A000001, 0x0A000002
    head = bytes(16) + struct.pack("!HH", 1, 4) + bytes(4) + bytes(2) + bytes(12)
    udp = bytes.fromhex("450000300000400040110000c0a80001c0a80002") + bytes(28)
    messages = [openflow(10, head + b"\x08\x06" + bytes(28)),
                openflow(10, head + b"\x89\x99" + bytes(28)),
                openflow(10, head + b"\x08\x00" + udp)]
    frames, seq = [], 100
    for m in messages:
        frames.append(eth_ipv4_tcp(a, b, 40000, 6633, seq, m))
        seq += len(m)
    highest, protocols = highest_per_packet(tmp_path, frames)
    assert highest == [layer_hash("OPENFLOW_V4")] * 3
    assert protocols[:3].tolist() == [
        protocols_mask(f"eth:ethertype:ip:tcp:openflow:openflow_v4:eth:ethertype:{inner}")
        for inner in ("arp", "data", "ip:udp")]


def mutated(frames: list[bytes], rng) -> list[bytes]:
    """Frames with headers damaged the ways captures are: bytes flipped in the first 80,
    cut short, IP fragment bits and odd protocol numbers."""
    out = []
    for f in frames:
        f = bytearray(f)
        for _ in range(rng.integers(0, 4)):
            f[rng.integers(0, min(len(f), 80))] = rng.integers(0, 256)
        if rng.random() < 0.2:
            f = f[:rng.integers(0, len(f) + 1)]
        if rng.random() < 0.05 and len(f) > 23:
            f[20] |= 0x20  # more fragments
            f[23] = rng.choice([2, 6, 17, 1, 47])
        out.append(bytes(f))
    return out


def http_frames() -> list[bytes]:
    a, b = 0x0A000001, 0x0A000002
    bodies = [b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>",
              b"HTTP/1.1 200 OK\r\nContent-Type: text/x\r\nContent-Type: image/png\r\n\r\nx",
              b"HTTP/1.1 200 OK\r\ncontent-TYPE :\ttext/plain\r\n\r\nx",
              b"HTTP/1.1 200 OK\r\nContent-Type:: text/html\r\n\r\nx",
              b"HTTP/1.1 200 OK\r\n Content-Type: text/html\r\n\r\nx",
              b"HTTP/1.1 200 OK\r\nContent-Type: TEXT/html\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
    return [eth_ipv4_tcp(a, b, 80, 40000 + i, 1000, body) for i, body in enumerate(bodies)]


@pytest.mark.parametrize("linktype", [1, 113, 276, 228])
def test_the_kernel_equals_its_specification_on_damaged_frames(synth3, tmp_path, linktype):
    from lego.ext.packets import write_pcap

    frames, ts = frames_of(synth3)
    rng = np.random.default_rng(linktype)
    pick = np.sort(rng.choice(len(frames), 3000, replace=False))
    chosen = [frames[i] for i in pick] + http_frames()
    if linktype == 113:  # Linux cooked v1: 16 bytes, the protocol at 14
        chosen = [bytes(14) + f[12:] for f in chosen]
    elif linktype == 276:  # v2: 20 bytes, the protocol first
        chosen = [f[12:14] + bytes(18) + f[14:] for f in chosen]
    elif linktype == 228:  # raw IPv4
        chosen = [f[14:] for f in chosen]
    damaged = mutated(chosen, rng)
    times = np.arange(len(damaged)) * 0.01
    write_pcap(tmp_path / "d.pcap", damaged, times, linktype)
    _, stored = frames_of(tmp_path / "d.pcap")  # the times as the capture holds them
    kernel = extract(tmp_path / "d.pcap", 2.0, 10)
    spec = extract_spec(damaged, stored, 2.0, 10, linktype)
    assert len(kernel.window) > 100
    for field in FIELDS:
        assert np.array_equal(getattr(spec, field), getattr(kernel, field)), field
