"""TLS over TCP port 443 as tshark 4.0.17 dissects it, one pass as pyshark runs it:
which layers a TCP segment adds after "tcp" (the pure-Python specification of
:mod:`lego.nfs.lucid._lucid`'s ``_tls.pxi``).

pyshark's ``highest_layer`` and the ``frame.protocols`` names of a segment to or from
port 443 depend on how Wireshark's TLS dissector and TCP's reassembly of
multi-segment PDUs (MSPs) treat it. With the default preferences (TCP reassembly and
TLS desegmentation on, no keys, out-of-order reassembly and heuristics-first off),
Wireshark (epan/dissectors/packet-tcp.c, packet-tls.c, packet-tls-utils.c,
packet-thrift.c, packet-h1.c) does this; a "tvb" is the bytes TCP hands to the port's
dissector:

1. TCP keeps per direction one live MSP, [start, next PDU). A segment inside it is
   added to it; if the segment ends before the next PDU, nothing is dissected (no
   layer). If it reaches it, the reassembled PDU is dissected as one tvb (through the
   end of the segment when the MSP asked for "one more segment"), then the rest of
   the segment as a new tvb. A segment outside the MSP is dissected from its start.
2. TLS first rejects a tvb of more than 4 bytes whose first 4 bytes are printable
   (0x20..0x7e): a fresh segment, the rest after a PDU, or a reassembled PDU, never
   a record further inside a tvb. The other port has no dissector (an assumption
   of this model), so the TCP heuristics run: "thrift" claims framed Thrift and asks
   for the whole frame (no layer), "h1" leaves an h1 <proto> for data starting "S5"
   but rejects it, and the "data" dissector takes the rest.
3. An accepted tvb gets one "tls" layer, however many records it holds and even if
   TLS only asks for more data. Records are read in a loop by the conversation's
   version (both directions share it; it starts unknown):
   unknown or TLS 1.3: fewer than 5 bytes left: ask for one more segment;
   byte 0 >= 0x80 and byte 2 in {0, 1, 2, 4}: an SSLv2 record; a content type
   20..25 and a record version 0300..0303 or 0101: an SSLv3/TLS record; else
   "Continuation Data", the rest of the tvb. SSLv2: SSLv2 records only.
   SSLv3, TLS 1.0-1.2, GMTLS: fewer than 5 bytes: one more segment; 80 xx 01: an
   SSLv2 record; else an SSLv3/TLS record.
4. An SSLv2 record has a 2-byte header (length 15 bits) if byte 0 has its top bit,
   else a 3-byte one (length 14 bits); an incomplete header asks for one more
   segment, an incomplete record for the bytes missing. A complete record whose
   message type is 2..8 makes an unknown version SSLv2 for good.
5. An SSLv3/TLS record: in a TLS 1.0-1.2/GMTLS conversation a bad content type is an
   "Ignored Unknown Record" (the rest of the tvb); otherwise a bad content type is
   "Continuation Data", 5 + length bytes (they may run past the tvb). An incomplete
   record asks for the bytes missing. A complete record sets an unknown version to
   its record version (0300..0304, 0101) unless it is a ClientHello or a handshake
   of an invalid type.
6. A request for more data starts an MSP at the request's offset that ends at the
   segment's end plus the missing bytes (one more segment: one byte past the end,
   taking all of the next segment). A reassembled PDU that asks again grows its MSP
   when the request's offset lies in the earlier segments, else the MSP is split
   there.
7. A read past the end of a tvb throws: the frame gets a _ws.malformed <proto>
   (pyshark's highest layer, not in frame.protocols) and the rest of the frame is not
   dissected. Zero-length records at the end of a tvb, the clear-text SSLv2 messages
   and heartbeat records can throw.
8. pyshark's highest layer is the last <proto> upper-cased; the data dissector's
   <proto> is "fake-field-wrapper", which pyshark names DATA; no layer: TCP.

What the model keeps and what it leaves out:
  * segments come in order without retransmissions (the caller drops those) and
    relative sequence numbers stay below 2**32 (a direction sending more than 4 GiB
    is out of scope);
  * a direction keeps the first HEAD bytes of its MSP (all of them for a PDU the
    strict Thrift heuristic may read whole). A reassembled PDU reads no other byte
    but the last segment's, unless the other direction set the version while it was
    pending and it now parses differently: reading a byte not kept then ends the tvb
    as if consumed, where tshark reads on (a crafted case in tests/test_lucid_tls.py;
    no capture we know reaches it);
  * a PDU Thrift claimed is claimed again when complete, since its heuristic's checks
    only pass more easily as the PDU grows: no layer, no bytes kept. (tshark would
    then run the Thrift dissector, at least 0x20202024 bytes later: not checked.)
  * TLS's clear-text handshake parser (it runs on a handshake record that does not
    look encrypted) is not modelled, and an X.509 certificate in an SSLv2
    SERVER_HELLO is taken as malformed (what garbage gives most of the time).

The rules were written from the 4.0.17 sources and checked frame by frame against
tshark on the generated trace and on crafted captures (tests/test_lucid_tls.py).
"""

from __future__ import annotations

from typing import NamedTuple

UNKNOWN, SSLV2, SSLV3, TLS10, TLS11, TLS12, TLS13, GMTLS = (
    0x0000, 0x0002, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x0101)
#: versions whose records go straight to the SSLv3/TLS record dissector
V3_DISPATCH = (SSLV3, TLS10, TLS11, TLS12, GMTLS)
#: versions for which a bad content type is an "Ignored Unknown Record"
V3_IGNORES_UNKNOWN = (TLS10, TLS11, TLS12, GMTLS)
#: record versions that make an unknown conversation's record look like SSLv3/TLS
V3_LOOKS = (SSLV3, TLS10, TLS11, TLS12, GMTLS)
#: record versions an unknown conversation takes on
V3_SETS = (SSLV3, TLS10, TLS11, TLS12, TLS13, GMTLS)
#: the handshake types TLS knows (ssl_is_valid_handshake_type)
HANDSHAKE_TYPES = frozenset(
    (0, 1, 2, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 67))
CLIENT_HELLO = 1
HANDSHAKE, HEARTBEAT = 22, 24
#: the ssl_versions names an SSLv2 hello's version must have (GREASE included)
SSL_VERSIONS = frozenset(
    [0x0002, 0x0100, 0x0101, 0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0xFB17, 0xFB1A,
     0xFEFD, 0xFEFF]
    + [0x7F00 | draft for draft in range(0x0E, 0x1D)]
    + [(g << 12) | 0x0A00 | (g << 4) | 0x0A for g in range(16)])

ONE_MORE_SEGMENT = 0x0FFFFFFF  # TCP's DESEGMENT_ONE_MORE_SEGMENT
HEAD = 160  # bytes of an MSP kept: more than the compact Thrift heuristic reads (139)

TLS, DATA = "tls", "data"
MALFORMED = "_ws.malformed"  # in the PDML only (not in frame.protocols)
H1 = "h1"  # in the PDML only
PDML_ONLY = (MALFORMED, H1)


class _Malformed(Exception):
    """A read past the end of the tvb: tshark throws."""


class _NotKept(Exception):
    """A read of a PDU byte the model did not keep."""


class _Tvb:
    """The bytes handed to a dissector, ``n`` of them: ``head`` from the start and
    ``tail`` up to the end (the segment's own bytes); a byte in between is not kept."""

    __slots__ = ("head", "tail", "tail_start", "n")

    def __init__(self, head: bytes, tail: bytes = b"", n: int | None = None) -> None:
        self.n = len(head) + len(tail) if n is None else n
        self.head, self.tail, self.tail_start = head, tail, self.n - len(tail)

    def __getitem__(self, i: int) -> int:
        if i >= self.n:
            raise _Malformed
        if i < len(self.head):
            return self.head[i]
        if i >= self.tail_start:
            return self.tail[i - self.tail_start]
        raise _NotKept

    def u16(self, i: int) -> int:
        return self[i] << 8 | self[i + 1]

    def need(self, offset: int, length: int) -> None:
        """An integer or bytes field (or a copy) of ``length`` bytes at ``offset``."""
        if length > 0 and offset + length > self.n:
            raise _Malformed

    def need_start(self, offset: int, length: int) -> None:
        """An FT_NONE field: clipped to the tvb, only a start past its end throws."""
        if length > 0 and offset > self.n:
            raise _Malformed


class _Dissected(NamedTuple):
    """What the port's dissectors did with a tvb: the layers, and a request for
    ``more`` bytes (0: none) from ``more_at`` on (TCP's desegment offset/length)."""

    layers: tuple[str, ...]
    more_at: int = 0
    more: int = 0
    malformed: bool = False
    thrift: bool = False  # the request is Thrift's for its whole frame


def _printable(c: int) -> bool:
    return 0x20 <= c <= 0x7E


def _content_type(c: int) -> bool:
    """ChangeCipherSpec, Alert, Handshake, ApplicationData, Heartbeat, TLS12_CID."""
    return 20 <= c <= 25


def _repeats(count: int) -> int:
    """How often a guint16 ``while (count > 0) count -= 3`` loop runs (it wraps)."""
    runs = 0
    while count:
        steps = (count + 2) // 3
        runs += steps
        count = (count - 3 * steps) & 0xFFFF
    return runs


# ----------------------------------------------------- TCP heuristics (rule 2)

def _utf8_printable(tvb: _Tvb, offset: int, length: int) -> bool:
    """thrift_binary_utf8_isprint(...) >= length: printable ASCII or valid UTF-8."""
    if length <= 0:
        return True
    if tvb.n - offset < length:
        return False
    remaining, low, high = 0, 0x80, 0xBF
    for c in (tvb[i] for i in range(offset, offset + length)):
        if remaining:
            if not low <= c <= high:
                return False
            remaining, low, high = remaining - 1, 0x80, 0xBF
        elif c < 0x80:
            if not _printable(c):  # NUL included
                return False
        elif 0xC2 <= c <= 0xDF:
            remaining = 1
        elif 0xE0 <= c <= 0xEF:
            remaining = 2
            low, high = (0xA0, 0xBF) if c == 0xE0 else (0x80, 0x9F) if c == 0xED else (
                0x80, 0xBF)
        elif 0xF0 <= c <= 0xF4:
            remaining = 3
            low = 0x90 if c == 0xF0 else 0x80
        else:
            return False
    return True


def _remaining(n: int, offset: int) -> int:
    """tvb_reported_length_remaining: a negative offset counts from the end."""
    if offset < 0:
        offset += n
        if offset < 0:
            return -1
    return n - offset if offset <= n else -1


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _thrift_strict(tvb: _Tvb, frame: int) -> bool:
    """A framed strict-binary message: 80 01 00 type, a name of printable UTF-8."""
    n = tvb.n
    if n < 12 or frame < 13 or tvb[4] != 0x80 or tvb[5] != 0x01 or tvb[7] & 0xF8 \
            or not 1 <= tvb[7] <= 4:
        return False
    name = _signed(tvb[8] << 24 | tvb[9] << 16 | tvb[10] << 8 | tvb[11], 32)
    return (frame >= 13 + name and n - 12 >= name and _utf8_printable(tvb, 12, name)
            and _remaining(n, 12 + name) >= 5)


def _thrift_compact(tvb: _Tvb, frame: int) -> bool:
    """A framed compact message: 82, type << 5 | 1, a varint sequence id, a name."""
    n = tvb.n
    if n < 9 or frame < 5 or tvb[4] != 0x82 or tvb[5] & 0x1F != 1 \
            or not 1 <= tvb[5] >> 5 <= 4:
        return False
    offset = 6
    varint = next((i + 1 for i in range(min(n - offset, 5)) if tvb[offset + i] < 0x80), 0)
    if not varint or offset + varint >= n:
        return False
    offset += varint
    name = _signed(tvb[offset], 8)
    offset += 1
    return (4 + frame >= offset + name and n - offset >= name
            and _utf8_printable(tvb, offset, name) and _remaining(n, offset + name) >= 1)


def _thrift_frame(tvb: _Tvb) -> int:
    """The framed PDU's length (4 + the frame length) if the Thrift heuristic claims
    the tvb, else 0; ``tvb`` has more than 4 bytes, the first printable, so the frame
    is at least 0x20202020 bytes."""
    frame = _signed(tvb[0] << 24 | tvb[1] << 16 | tvb[2] << 8 | tvb[3], 32)
    if not (_thrift_strict(tvb, frame) or _thrift_compact(tvb, frame)):
        return 0
    return 4 + (frame & 0xFFFFFFFF)


def _looks_strict_thrift(head: bytes) -> bool:
    """Whether the strict Thrift heuristic may read the whole PDU (its name)."""
    return len(head) >= 6 and all(map(_printable, head[:4])) and head[4:6] == b"\x80\x01"


# ----------------------------------------------- clear-text messages (rule 7)

def _ssl2_message(tvb: _Tvb, m: int, msg_type: int, length: int) -> None:
    """The clear-text SSLv2 message at ``m`` (its type byte): only whether reading it
    throws matters, and its fields are checked against the tvb, not the record."""
    if msg_type == 1:  # CLIENT_HELLO
        if tvb.u16(m + 1) not in SSL_VERSIONS:
            return  # "Encrypted Data"
        ciphers, session = tvb.u16(m + 3), tvb.u16(m + 5)
        if session > 16:
            return
        challenge = tvb.u16(m + 7)
        o = m + 9
        tvb.need(o, 3 * _repeats(ciphers))
        o += 3 * _repeats(ciphers)
        tvb.need(o, session)
        o += session
        tvb.need_start(o, challenge)
        tvb.need(o, min(challenge, 32))
    elif msg_type == 4:  # SERVER_HELLO
        if tvb.u16(m + 3) not in SSL_VERSIONS:
            return
        certificate, ciphers, connection = tvb.u16(m + 5), tvb.u16(m + 7), tvb.u16(m + 9)
        if certificate:
            raise _Malformed  # the X.509 dissector on garbage (see the module's notes)
        o = m + 11
        tvb.need_start(o, ciphers)
        tvb.need(o, 3 * _repeats(ciphers))
        o += 3 * _repeats(ciphers)
        tvb.need_start(o, connection)
    elif msg_type == 2:  # CLIENT_MASTER_KEY
        clear, encrypted, argument = tvb.u16(m + 4), tvb.u16(m + 6), tvb.u16(m + 8)
        if clear + encrypted + argument > length:
            return
        o = m + 10
        tvb.need_start(o, clear)
        tvb.need_start(o + clear, encrypted)
        tvb.need_start(o + clear + encrypted, argument)


def _heartbeat(tvb: _Tvb, o: int, length: int) -> None:
    """A heartbeat record's body at ``o`` (no decoder: plaintext)."""
    msg = tvb[o]
    payload = tvb.u16(o + 1)
    padding = (length - 3 - payload) & 0xFFFF
    if msg in (1, 2):  # request, response
        if 3 + payload + 16 > length:
            payload, padding = (length - 3) & 0xFFFF, 0
        if o + 3 + payload > tvb.n or padding and o + 3 + payload + padding > tvb.n:
            raise _Malformed


# ------------------------------------------------------------------ the model

class _Direction:
    """TCP's MSP state of one direction (at most one live MSP matters in order)."""

    __slots__ = ("start", "next_pdu", "entire", "length", "kept", "keep_all", "thrift")

    def __init__(self) -> None:
        self.start, self.next_pdu = 0, -1  # -1: no MSP
        self.entire = False  # the MSP takes all of the next segment
        self.length = 0
        self.kept = b""
        self.keep_all = self.thrift = False

    def covers(self, seq: int) -> bool:
        return self.next_pdu >= 0 and self.start <= seq < self.next_pdu

    def begin(self, seq: int, data: bytes, thrift: bool) -> None:
        self.start, self.length, self.kept, self.keep_all = seq, 0, b"", False
        self.thrift = thrift
        self.add(data)

    def add(self, data: bytes) -> None:
        if self.thrift:
            pass  # a Thrift PDU is not dissected again: no byte needed
        elif self.keep_all:
            self.kept += data
        elif self.length < HEAD:
            kept = self.kept + data[:HEAD]
            self.keep_all = _looks_strict_thrift(kept)
            self.kept = self.kept + data if self.keep_all else kept[:HEAD]
        self.length += len(data)

    def pdu(self, piece: bytes) -> _Tvb:
        """The reassembled PDU once ``piece`` (the end of a segment) is added."""
        return _Tvb(self.kept, piece, self.length + len(piece))


class TlsConversation:
    """The TLS state of one TCP conversation: the version, shared by both directions,
    and each direction's MSP."""

    __slots__ = ("version", "_client", "_server")

    def __init__(self) -> None:
        self.version = UNKNOWN
        self._client, self._server = _Direction(), _Direction()

    def segment(self, payload: bytes, seq_rel: int, from_client: bool) -> tuple[str, ...]:
        """The PDML <proto> names after "tcp" for a segment, in order: e.g. (),
        ("tls",), ("tls", "tls"), ("tls", "data"), ("data",), ("tls", MALFORMED),
        (H1, "data"). ``seq_rel``: the segment's sequence number relative to its
        direction's base (below 2**32)."""
        d = self._client if from_client else self._server
        layers: list[str] = []
        offset, seq, end = 0, seq_rel, seq_rel + len(payload)
        while offset < len(payload):
            if not d.covers(seq):
                self._fresh(d, payload, offset, seq, end, layers)
                break
            if d.entire:  # the PDU takes all of this segment
                take = len(payload) - offset
            else:
                take = min(end, d.next_pdu) - seq
            piece = payload[offset:offset + take]
            if end < d.next_pdu:
                d.add(piece)  # incomplete: no dissector runs
                break
            if not self._reassembled(d, piece, seq, end, layers):
                break
            offset, seq = offset + take, seq + take
        return tuple(layers)

    def _fresh(self, d: _Direction, payload: bytes, offset: int, seq: int, end: int,
               layers: list[str]) -> None:
        """A tvb from ``offset`` to the end of the segment (rules 1 and 6)."""
        r = self._dissect(_Tvb(payload[offset:]))
        layers.extend(r.layers)
        if r.more and not r.malformed:
            d.begin(seq + r.more_at, payload[offset + r.more_at:], r.thrift)
            d.entire = r.more == ONE_MORE_SEGMENT
            d.next_pdu = end + 1 if d.entire else end + r.more

    def _reassembled(self, d: _Direction, piece: bytes, seq: int, end: int,
                     layers: list[str]) -> bool:
        """The MSP's PDU completed by ``piece`` (rules 1 and 6); False: the frame's
        dissection ends."""
        if d.entire:
            d.entire, d.next_pdu = False, max(d.next_pdu, end)
        prior = d.length
        if d.thrift:  # claimed again, whole: no layer, no request (see the notes)
            return True
        r = self._dissect(d.pdu(piece))
        layers.extend(r.layers)
        if r.malformed:
            return False
        if r.more:
            if r.more_at <= prior:  # the same MSP grows
                d.add(piece)
                if r.thrift:  # its bytes are no longer needed
                    d.thrift, d.keep_all, d.kept = True, False, b""
            else:  # split: a new MSP from the request on
                d.begin(d.start + r.more_at, piece[r.more_at - prior:], r.thrift)
            if r.more == ONE_MORE_SEGMENT:
                d.entire, d.next_pdu = True, max(end, d.next_pdu) + 1
            else:  # counted from the PDU's end, where the piece ends
                d.next_pdu = seq + len(piece) + r.more
        return True

    # ---------------------------------------------------------------- a tvb

    def _dissect(self, tvb: _Tvb) -> _Dissected:
        """TCP's port then heuristic dissectors on a tvb (rule 2)."""
        if tvb.n > 4 and all(_printable(tvb[i]) for i in range(4)):
            frame = _thrift_frame(tvb)
            if frame:
                return _Dissected((), 0, frame - tvb.n, thrift=True)
            return _Dissected((H1, DATA) if tvb[0] == 0x53 and tvb[1] == 0x35 else (DATA,))
        try:
            return self._records(tvb)
        except _Malformed:
            return _Dissected((TLS, MALFORMED), malformed=True)
        except _NotKept:
            return _Dissected((TLS,))  # taken as consumed (see the notes)

    def _records(self, tvb: _Tvb) -> _Dissected:
        """dissect_ssl: the records of an accepted tvb (rule 3)."""
        off = 0
        while off < tvb.n:
            if self.version == SSLV2:
                off, more = self._ssl2_record(tvb, off)
            elif tvb.n - off < 5:
                return _Dissected((TLS,), off, ONE_MORE_SEGMENT)
            elif self.version in V3_DISPATCH:
                if tvb[off] == 0x80 and tvb[off + 2] == 0x01:
                    off, more = self._ssl2_record(tvb, off)
                else:
                    off, more = self._ssl3_record(tvb, off)
            elif tvb[off] >= 0x80 and tvb[off + 2] in (0, 1, 2, 4):
                off, more = self._ssl2_record(tvb, off)
            elif _content_type(tvb[off]) and tvb.u16(off + 1) in V3_LOOKS:
                off, more = self._ssl3_record(tvb, off)
            else:
                off, more = tvb.n, 0  # "Continuation Data"
            if more:
                return _Dissected((TLS,), off, more)
        return _Dissected((TLS,))

    def _ssl2_record(self, tvb: _Tvb, off: int) -> tuple[int, int]:
        """(where the next record starts, or this one with the bytes it lacks)."""
        header = 2 if tvb[off] & 0x80 else 3
        available = tvb.n - off
        if available < header:
            return off, ONE_MORE_SEGMENT
        length = (tvb[off] & (0x7F if header == 2 else 0x3F)) << 8 | tvb[off + 1]
        if available < header + length:
            return off, header + length - available
        m = off + header
        msg_type = tvb[m]
        if self.version == UNKNOWN and 2 <= msg_type <= 8:
            self.version = SSLV2
        _ssl2_message(tvb, m, msg_type, length)
        return m + length, 0

    def _ssl3_record(self, tvb: _Tvb, off: int) -> tuple[int, int]:
        available = tvb.n - off
        content = tvb[off]
        if self.version in V3_IGNORES_UNKNOWN and not _content_type(content):
            return tvb.n, 0  # "Ignored Unknown Record"
        version, length = tvb.u16(off + 1), tvb.u16(off + 3)
        if not _content_type(content):
            return off + 5 + length, 0  # "Continuation Data"
        if available < 5 + length:
            return off, 5 + length - available
        first = tvb[off + 5]
        if self.version == UNKNOWN and version in V3_SETS and (
                content != HANDSHAKE or first != CLIENT_HELLO and first in HANDSHAKE_TYPES):
            self.version = version
        if content == HEARTBEAT:
            _heartbeat(tvb, off + 5, length)
        return off + 5 + length, 0


def protocols_tail(layers: tuple[str, ...]) -> tuple[str, ...]:
    """frame.protocols after "tcp": the layers less the PDML-only ones."""
    return tuple(name for name in layers if name not in PDML_ONLY)


def highest(layers: tuple[str, ...]) -> str:
    """pyshark's highest_layer for a segment with these layers."""
    if not layers:
        return "TCP"
    return layers[-1].upper()
