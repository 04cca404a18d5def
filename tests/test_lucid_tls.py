"""TLS over TCP port 443: the specification (lego.nfs.lucid.tls_spec) against tshark
4.0.17's output for fixed inputs, hard-coded here, and the kernel's _tls.pxi against
the specification on generated conversations (fast, < 10 s)."""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest

from lego.nfs.lucid import tls_spec
from lego.nfs.lucid._lucid import _TLS_LAYER_NAMES, _tls_layers

PORT = 443

#: tshark -T pdml on the generated trace (`lego trace synth --seed 3 --packets 30000`):
#: (frame.protocols after "tcp", pyshark's highest layer) of its 15,583 port-443
#: frames with a payload
SYNTH3_TSHARK = {("", "TCP"): 13086, ("tls:tls", "TLS"): 1378, ("tls", "TLS"): 1061,
                 ("tls:data", "DATA"): 30, ("data", "DATA"): 26, ("data:tls", "TLS"): 2}


def tcp_443(frames):
    """(conversation, from the client, relative seq, payload) of the Ethernet/IPv4
    frames to or from port 443 that carry a payload (the trace has no retransmission)."""
    bases = {}
    for frame in frames:
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800 or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        tcp = frame[14 + ihl:14 + total]
        sport, dport, seq = struct.unpack_from("!HHI", tcp)
        if PORT not in (sport, dport):
            continue
        src, dst = frame[26:30], frame[30:34]
        direction = (src, sport, dst, dport)
        if tcp[13] & 0x02:  # a SYN counts as the first byte
            bases[direction] = seq
        base = bases.setdefault(direction, (seq - 1) & 0xFFFFFFFF)
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            client = dport == PORT
            conv = direction if client else (dst, dport, src, sport)
            yield conv, client, (seq - base) & 0xFFFFFFFF, payload


def test_the_spec_gives_tsharks_layers_on_the_generated_trace():
    from lego.topo.traffic_synth import generate

    conversations, seen = {}, Counter()
    for conv, client, seq, payload in tcp_443(generate(seed=3, packets=30000).frames):
        tls = conversations.setdefault(conv, tls_spec.TlsConversation())
        layers = tls.segment(payload, seq, client)
        seen[":".join(tls_spec.protocols_tail(layers)), tls_spec.highest(layers)] += 1
    assert seen == SYNTH3_TSHARK


# ----------------------------------------------------- crafted conversations

def fill(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def record(content: int, version: int, body: bytes) -> bytes:
    return struct.pack("!BHH", content, version, len(body)) + body


def hello(kind: int, seed: int) -> bytes:
    """A TLS 1.2 ClientHello (1) or ServerHello (2) record."""
    if kind == 1:
        body = b"\x03\x03" + fill(32, seed) + b"\x00\x00\x04\xc0\x2f\xc0\x30\x01\x00\x00\x00"
    else:
        body = b"\x03\x03" + fill(32, seed) + b"\x00\xc0\x2f\x00\x00\x00"
    return record(22, 0x0301 if kind == 1 else 0x0303,
                  bytes([kind]) + len(body).to_bytes(3, "big") + body)


C, S = True, False
PROBE = [(C, b"\x81\x00\x04" + fill(20, 1)), (C, fill(40, 2))]
THRIFT = b"abcd\x82\x61\x05\x03xyz" + bytes(20)
TLS12 = hello(1, 3)
APP = record(23, 0x0303, fill(100, 4))
LONG = record(23, 0x0303, fill(2000, 5))

#: conversations of segments (from the client, payload), each with tshark's
#: "frame.protocols after tcp/highest layer" for its segments ("-": none)
CRAFTED = {
    "TLS 1.2, a hello split, records split and packed, text and random data": ([
        (C, TLS12[:20]), (C, TLS12[20:50]), (C, TLS12[50:]),
        (S, hello(2, 6) + record(20, 0x0303, b"\x01")),
        (C, record(23, 0x0303, fill(40, 7)) + record(23, 0x0303, fill(60, 8))),
        (C, record(23, 0x0303, fill(10, 9)) + APP[:3]), (C, APP[3:50]),
        (C, APP[50:] + LONG[:200]), (C, LONG[200:1400]), (C, LONG[1400:] + b"Hello, text"),
        (C, b"\x05" + fill(499, 10)), (C, b"plain text, no TLS\r\n"),
        (C, b"\x80\x2e\x01" + fill(46, 11))],
        "tls/TLS -/TCP tls/TLS tls/TLS tls/TLS tls/TLS tls/TLS tls:tls/TLS -/TCP"
        " tls:data/DATA tls/TLS data/DATA tls/TLS"),
    "SSLv3 from a record, then Continuation Data": ([
        (C, b"\x17\x03\x00\x00\x10" + fill(16, 12) + b"\x05" + fill(39, 13)),
        (C, b"\x30\x99\x99\x00\x05" + fill(5, 14) + b"\x17\x03\x00\x00\x03abc"
         + b"\x17\x03\x00\x01\x00" + fill(50, 15)),
        (C, fill(300, 16)), (C, b"\x41\x00\x00\x00\x02zz" + fill(30, 17)),
        (C, b"\x16\x03\x00\x00\x02\x0e\x00" + fill(30, 18))],
        "tls/TLS tls/TLS tls:tls/TLS tls/TLS tls/TLS"),
    "SSLv2 records, printable rests, 3-byte headers": ([
        (C, b"\x88\x00\x04" + fill(1200, 19)), (C, fill(850, 20) + b"ABCDxyz" + fill(30, 21)),
        (C, b"\x81\x00" + fill(100, 22)), (C, fill(158, 23) + b"\x90"),
        (C, b"\x05" + fill(300, 24)), (C, fill(2000, 25)), (C, fill(2000, 26)),
        (C, b"\x00\x10\x00" + fill(16, 27) + b"\x00\x05\x00" + fill(3, 28)),
        (C, b"\x80\x03" + fill(3, 29) + b"\x80\x04AB"), (C, b"CDEFGHIJ" + fill(20, 30)),
        (C, b"\x20\x21"), (C, b"\x22\x23" + fill(40, 31))],
        "tls/TLS tls:data/DATA tls/TLS tls:tls/TLS -/TCP -/TCP -/TCP -/TCP -/TCP -/TCP -/TCP"
        " -/TCP"),
    "the server, tiny segments": ([
        (S, b"\x9a\x01\x01"), (S, fill(700, 32)), (S, fill(700, 33)), (S, b"\x12"),
        (S, b"\x34\x56\x78\x9a\xbc\xde" + fill(10, 34)), (S, b"xyzw"), (S, b"abcdef"),
        (C, b"\x05" + fill(99, 35)), (C, b"\x85\x00\x01" + fill(20, 36)),
        (S, fill(1500, 37))],
        "tls/TLS tls/TLS -/TCP -/TCP -/TCP -/TCP -/TCP tls/TLS tls/TLS -/TCP"),
    "zero-length records": ([
        (C, b"\x80\x05\x02abcde\x80\x00"), (S, b"\x17\x03\x03\x00\x00"),
        (S, b"\x17\x03\x03\x00\x00\x05" + fill(10, 38))],
        "tls/_WS.MALFORMED tls/TLS -/TCP"),
    "Thrift after a PDU": ([
        (C, b"\x80\x10\x04" + fill(5, 39)), (C, fill(10, 40) + THRIFT), (C, fill(100, 41)),
        (C, b"\x16" + fill(100, 42))],
        "tls/TLS tls/TLS -/TCP -/TCP"),
    "Thrift in a reassembled PDU": ([(C, b"abc"), (C, THRIFT[3:]), (C, fill(50, 43))],
        "tls/TLS -/TCP -/TCP"),
    "data in a reassembled PDU": ([(C, b"abc"), (C, b"d" + fill(50, 44)),
                                   (C, b"\x05" + fill(50, 45))],
        "tls/TLS data/DATA tls/TLS"),
    "a reassembled PDU split": ([
        (C, b"\x80\x03\x04"), (C, b"\x00\x00\x00\x80\x20\x04" + fill(5, 46)),
        (C, fill(40, 47)), (C, b"\x07" + fill(40, 48))],
        "tls/TLS tls/TLS -/TCP -/TCP"),
    "the server sets SSLv2 while the client's PDU is pending": ([
        (C, b"\x17\x03\x03\x00\x10" + fill(5, 49)), (S, b"\x80\x04\x04abc"),
        (C, fill(41, 50)), (C, fill(1400, 51)), (C, fill(1400, 52)), (C, fill(1400, 53)),
        (C, fill(1400, 54)), (C, fill(1400, 55))],
        "tls/TLS tls/_WS.MALFORMED tls/TLS -/TCP -/TCP -/TCP -/TCP tls:tls/TLS"),
    "a strict Thrift name read whole from a 9 KB SSLv2 PDU": ([
        (S, b"\x80\x04\x04abc"),
        (C, b"\x80\x05\x09" + fill(4, 56) + b"ab!d\x80\x01\x00\x02\x00\x00\x02\x00"
         + b"n" * 512 + fill(400, 57))]
        + [(C, fill(1400, 58 + i)) for i in range(6)] + PROBE,
        "tls/_WS.MALFORMED tls/TLS -/TCP -/TCP -/TCP -/TCP -/TCP -/TCP -/TCP -/TCP"),
}
#: first segments: clear-text SSLv2 messages, heartbeats, "S5" and Thrift heads
FIRST_SEGMENTS = [
    b"\x80\x0b\x01\x03\x01\x00\x03\x00\x00\x00\x00abc",
    b"\x80\x0b\x01\x03\x01\x00\x04\x00\x00\x00\x00abcd",
    b"\x80\x0b\x01\x03\x01\x00\x06\x00\x00\x00\x00abc",
    b"\x80\x0b\x01\x03\x01\x00\x00\x00\x20\x00\x00abc",
    b"\x80\x0b\x01\x03\x01\x00\x00\x00\x05\x00\x00abcd",
    b"\x80\x0b\x01\x03\x01\x00\x00\x00\x00\x00\x04abc",
    b"\x80\x0b\x01\x03\x01\x00\x00\x00\x00\x00\x03abc",
    b"\x80\x0a\x01\x03\x01\x00\x00\x00\x00\x00\x02a",
    b"\x80\x0a\x01\x03\x01\x00\x00\x00\x00\x00\x28a",
    b"\x80\x29\x01\x03\x01\x00\x00\x00\x00\x00\x21" + b"a" * 32,
    b"\x80\x0c\x02abc\x00\x01\x00\x01\x00\x00ab",
    b"\x80\x0c\x02abc\x00\x01\x00\x02\x00\x00ab",
    b"\x80\x0c\x02abc\x00\x01\x00\x02\x00\x00abX",
    b"\x80\x0c\x02abc\x00\x04\x00\x01\x00\x00ab",
    b"\x80\x0c\x02abc\x00\x02\x00\x00\x00\x01ab",
    b"\x80\x03\x02abc",
    b"\x80\x01\x01\x80\x00",
    b"\x80\x04\x04\x00\x00\x03\x01",
    b"\x80\x0c\x04\x00\x00\x03\x01\x00\x00\x00\x00\x00\x00\x00",
    b"\x80\x0c\x04\x00\x00\x03\x01\x00\x00\x00\x02\x00\x00\x00",
    b"\x80\x0b\x04\x00\x00\x03\x01\x00\x00\x00\x00\x00\x04",
    b"\x80\x0b\x04\x00\x00\x03\x01\x00\x00\x00\x03\x00\x01abcd",
    b"\x80\x0c\x04\x00\x00\x03\x01\x00\x01\x00\x00\x00\x00\x00",
    b"\x80\x07\x04\x00\x00\x03\x01\x00\x00",
    b"\x18\x03\x03\x00\x00\x80",
    b"\x18\x03\x03\x00\x02\x01\x00",
    b"\x18\x03\x03\x00\x03\x01\x00\x05",
    b"\x18\x03\x03\x00\x14\x01\x00\x01" + b"h" * 17,
    b"\x18\x03\x03\x00\x03\x07\x00\x05",
    b"S5ab\x82\x61\x05\x03abc" + bytes(20),
    b"S5ab" + b"\x01" * 30,
    b"xS5a\x82\x61\x05\x03abc" + bytes(20),
    b"xyzw\x80\x01\x00\x01\x00\x00\x00\x03abc" + bytes(20),
    b"xyzw\x82\x81\x85\x85\x05\xfe" + bytes(3),
]
#: tshark's layers for each of FIRST_SEGMENTS followed by PROBE
FIRST_SEGMENTS_TSHARK = [
    "tls/TLS tls/TLS tls/TLS",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS tls/TLS",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS tls/TLS",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS tls/TLS",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/TLS tls/TLS -/TCP",
    "tls/TLS -/TCP -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS -/TCP",
    "tls/_WS.MALFORMED tls/TLS tls/TLS",
    "tls/_WS.MALFORMED tls/TLS tls/TLS",
    "tls/TLS tls/TLS tls/TLS",
    "tls/TLS tls/TLS tls/TLS",
    "tls/TLS tls/TLS tls/TLS",
    "-/TCP -/TCP -/TCP",
    "data/DATA tls/TLS -/TCP",
    "-/TCP -/TCP -/TCP",
    "-/TCP -/TCP -/TCP",
    "-/TCP -/TCP -/TCP",
]


def spec_names(segments) -> str:
    tls, out = tls_spec.TlsConversation(), []
    seq = {C: 1, S: 1}
    for client, payload in segments:
        layers = tls.segment(payload, seq[client], client)
        seq[client] += len(payload)
        out.append(f"{':'.join(tls_spec.protocols_tail(layers)) or '-'}"
                   f"/{tls_spec.highest(layers)}")
    return " ".join(out)


@pytest.mark.parametrize("name", CRAFTED)
def test_the_spec_gives_tsharks_layers_on_crafted_conversations(name):
    segments, tshark = CRAFTED[name]
    assert spec_names(segments) == tshark


@pytest.mark.parametrize("first, tshark", list(zip(FIRST_SEGMENTS, FIRST_SEGMENTS_TSHARK,
                                                   strict=True)))
def test_the_spec_gives_tsharks_layers_after_crafted_first_segments(first, tshark):
    assert spec_names([(C, first)] + PROBE) == tshark


# --------------------------------------------------- the kernel against the spec

UTF8_NAMES = [b"n" * 512, "h\u00e9llo w\u00f6rld \u20ac \U0001d11e".encode(), b"\xe0\x80\x80",
              b"\xe0\xa0\x80", b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xf0\x80\x80\x80",
              b"\xf0\x90\x80\x80", b"\xf4\xbf\xbf\xbf", b"\xf5\x80", b"\xc1\x80", b"\xc2",
              b"a\x00b", b"\x7f", b""]


def thrift_head(rng: random.Random) -> bytes:
    """A strict or compact framed Thrift head, valid or nearly so."""
    name = rng.choice(UTF8_NAMES + [fill(8, rng.random())])
    tail = fill(rng.choice([0, 1, 4, 5, 30]), rng.random())
    if rng.random() < 0.5:
        length = len(name) + rng.choice([0, 0, 1, -1, -20, -2 ** 31])
        return (b"ab!d\x80\x01\x00" + bytes([rng.choice([1, 2, 4, 5, 9])])
                + struct.pack("!i", length) + name + tail)
    varint = rng.choice([b"\x05", b"\x85\x05", b"\x85\x85\x85\x85\x05", b"\xff" * 5, b""])
    length = (len(name) + rng.choice([0, 0, 1, -1, -200])) & 0xFF
    return (rng.choice([b"ab!d", b"S5ab"]) + b"\x82" + bytes([rng.choice([0x21, 0x41, 0x81, 0x22])])
            + varint + bytes([length]) + name + tail)


def chunk(rng: random.Random) -> bytes:
    """A piece of a stream, likely to reach every rule of tls_spec."""
    k = rng.random()
    if k < 0.15:  # a TLS record, any version, heartbeats and zero-length ones too
        content = rng.choice([20, 21, 22, 23, 24, 25, 23, 23, 24])
        body = fill(rng.choice([0, 1, 2, 3, 5, 19, 30, 300, 2000, 17000]), rng.random())
        if content == 22 and body:
            body = bytes([rng.choice([1, 2, 11, 14, 16, 20, 99])]) + body[1:]
        if content == 24 and len(body) >= 3:
            body = bytes([rng.choice([1, 2, 7])]) + rng.choice(
                [b"\x00\x01", b"\x00\x20", body[1:3], struct.pack("!H", len(body) - 3)]) + body[3:]
        return record(content, rng.choice([0x0301, 0x0303, 0x0300, 0x0302, 0x0304, 0x0101,
                                           0x0203]), body)
    if k < 0.35:  # an SSLv2 record, 2- or 3-byte header
        length = rng.choice([0, 1, 3, 10, 100, 700, 1500, 5000, 20000])
        body = bytes([rng.choice([0, 1, 2, 3, 4, 5, 8, 9, 200])]) + fill(length, rng.random())
        if rng.random() < 0.7:
            return struct.pack("!H", 0x8000 | length) + body[:length]
        return struct.pack("!H", length & 0x3FFF | rng.choice([0, 0x4000])) + b"\0" \
            + body[:length]
    if k < 0.45:  # printable text
        return bytes(rng.randint(0x20, 0x7E) for _ in range(rng.choice([1, 3, 4, 5, 20])))
    if k < 0.5:  # a known first segment: SSLv2 messages, heartbeats, "S5", Thrift
        return rng.choice(FIRST_SEGMENTS + [THRIFT])
    if k < 0.55:
        return thrift_head(rng)
    return fill(rng.choice([1, 2, 4, 10, 100, 1000, 3000]), rng.random())


def pieces(rng: random.Random, stream: list[bytes], camera: bool) -> list[bytes]:
    """A direction's segments: cut anywhere, or each chunk from its start."""
    if rng.random() < 0.5:
        stream = [b"".join(stream)]
    out = []
    for data in stream:
        while data:
            size = 1398 if camera and rng.random() < 0.8 else rng.choice(
                [1, 2, 3, 4, 5, 6, 50, 500, 1398, 1460, rng.randint(1, 1460)])
            out.append(data[:size])
            data = data[size:]
    return out


def conversation(rng: random.Random) -> list[tuple[bytes, int, bool]]:
    """Segments (payload, relative seq, from the client) of both directions, in order."""
    camera = rng.random() < 0.2  # random bytes, full segments
    if camera:
        streams = {C: [fill(rng.randint(1, 200) * 1398, rng.random())],
                   S: [fill(rng.choice([0, 0, 5000]), rng.random())]}
    else:
        streams = {C: [chunk(rng) for _ in range(rng.randint(5, 40))],
                   S: [chunk(rng) for _ in range(rng.randint(0, 15) if rng.random() < 0.5 else 0)]}
    todo = {d: pieces(rng, streams[d], camera)[::-1] for d in (C, S)}
    seq = {C: rng.choice([1, 1, 2 ** 32 - 2 ** 20]), S: 1}
    segments = []
    while todo[C] or todo[S]:
        d = rng.choice([d for d in (C, S) if todo[d]])
        payload = todo[d].pop()
        segments.append((payload, seq[d], d))
        seq[d] += len(payload)
    return segments


def kernel_names(segments) -> list[tuple[str, ...]]:
    return [tuple(_TLS_LAYER_NAMES[code] for code in codes) for codes in _tls_layers(segments)]


@pytest.mark.parametrize("seed", range(8))
def test_the_kernel_equals_the_spec_on_generated_conversations(seed):
    rng = random.Random(seed)
    for _ in range(200):
        segments = conversation(rng)
        spec = tls_spec.TlsConversation()
        want = [spec.segment(*segment) for segment in segments]
        assert kernel_names(segments) == want, segments[:3]


@pytest.mark.parametrize("name", CRAFTED)
def test_the_kernel_equals_the_spec_on_crafted_conversations(name):
    seq, segments = {C: 1, S: 1}, []
    for client, payload in CRAFTED[name][0]:
        segments.append((payload, seq[client], client))
        seq[client] += len(payload)
    spec = tls_spec.TlsConversation()
    assert kernel_names(segments) == [spec.segment(*segment) for segment in segments]


@pytest.mark.parametrize("at, third", [(155, ("tls",)), (175, ("tls", "tls"))])
def test_a_pdu_byte_not_kept_ends_the_tvb(at, third):
    """The server makes the version SSLv3 while the client's 258-byte SSLv2-looking
    PDU is pending; read as SSLv3 it skips to an incomplete record at ``at``. Inside
    the 160 bytes kept, the record asks for more and the rest of the third segment
    joins it (as in tshark); past them, the PDU is taken as consumed and the rest is a
    new tvb (tshark: as at 155)."""
    first = (b"\x81\x00\x04" + struct.pack("!H", at - 5) + fill(at - 5, 1)
             + b"\x17\x03\x00\x01\x00" + fill(198 - at, 2))
    segments = [(first, 1, C), (record(23, 0x0300, b"ab"), 1, S),
                (fill(55, 3) + b"\x05" + fill(9, 4), 1 + len(first), C)]
    spec = tls_spec.TlsConversation()
    want = [spec.segment(*segment) for segment in segments]
    assert want == [("tls",), ("tls",), third]
    assert kernel_names(segments) == want


def test_a_thrift_pdu_completes_without_a_layer():
    """Thrift claims a 0x61626368-byte frame; a segment that jumps to 10 bytes before
    its end completes it (no layer) and the rest is a new tvb."""
    end = 1 + 4 + 0x61626364
    segments = [(THRIFT, 1, C), (bytes(10) + record(23, 0x0303, b"xy"), end - 10, C)]
    spec = tls_spec.TlsConversation()
    want = [spec.segment(*segment) for segment in segments]
    assert want == [(), ("tls",)]
    assert kernel_names(segments) == want
