"""Packets in: captures (pcap, pcapng, Kitsune's tshark TSV) -> PacketBatch.

The frame parser is a Cython kernel (``lego.ext._packets``) that works on a batch
of frames given as one buffer plus offsets, captured lengths, original lengths and
timestamps; :func:`parse_frames` is that entry point, shared by the trace readers,
the software switch and the AF_PACKET batching brick.

Field derivation (DESIGN §7) reproduces what Kitsune derives from tshark's TSV
(``-E occurrence=f``: the first occurrence of each field anywhere in the frame):

- addresses: the first IPv4 header's ``ip.src``/``ip.dst`` if any, else the first
  IPv6 header's (an IPv4 header inside IPv6, 4in6, therefore wins over the outer
  IPv6 header, as it does in Kitsune);
- ports: the first TCP header's, else the first UDP header's, anywhere, including
  the header quoted by an ICMP (types 3, 4, 5, 11, 12) or ICMPv6 error (types
  1-4): proto TCP/UDP. Four bytes of a TCP/UDP header are enough for its ports;
- no ports: ARP (opcode present) -> proto ARP, addresses = sender/target protocol
  IPv4 addresses (family NONE, zero bytes, when the ARP is not IPv4 over 4-byte
  addresses or its bytes are cut), MACs stay the Ethernet ones; else ICMPv4 ->
  proto ICMP; else no IP at all -> proto L2, addresses = Ethernet MACs (family
  MAC); else proto IP (ICMPv6, IGMP, GRE, ...);
- Ethernet: 802.1Q/802.1ad/QinQ tags (0x8100, 0x88a8, 0x9100) are skipped; a
  type field below 1536 is an 802.3 length (LLC, STP: L2) unless the LLC is SNAP
  carrying an EtherType, which is then followed. Other EtherTypes are L2.
- IPv6 extension headers (hop-by-hop, routing, destination options, mobility,
  fragment, AH) are walked to the upper-layer header; ESP and "no next header"
  end the walk (proto IP).
- fragments: tshark reassembles IP by default and shows no upper layer on a
  fragment; only the frame completing a datagram carries its ports. We do not
  reassemble (a batch parse is stateless): every fragment (IPv4 MF set or offset
  != 0; an IPv6 fragment header with M set or offset != 0) gets its addresses and
  no upper layer (proto IP), and is counted in ``counters['fragments']``. This
  differs from tshark only on the last fragment of a reassembled datagram.
- ``ts``: pcap ``sec.usec`` -> the nearest double (``float("sec.usec")``): the
  integer ``sec*10**6+usec`` is exact in float64 so one division is correctly
  rounded; nanosecond pcap and pcapng resolutions fall back to glibc ``strtod``
  (correctly rounded) when the integer exceeds 2**53. pcapng ``if_tsoffset`` is
  added; SPBs have no timestamp (0.0). ``frame_len`` = original length.

Rules for bad input:

- A capture that cannot be trusted raises :class:`~lego.errors.TraceError`
  naming the file and, for a record, the 0-based packet index: empty file, bad
  magic, truncated file header, unsupported link type (Ethernet 1, raw IP 12/101,
  IPv4 228, IPv6 229, Linux SLL 113 and SLL2 276 are supported), a record whose
  captured length exceeds ``max(snaplen, 262144)``, a pcapng block with a bad
  length or an unknown interface id. Packets before the bad record have already
  been yielded by :meth:`TraceReader.batches`.
- A file cut inside its last record or block (a capture whose writer was killed)
  is read up to it, as tcpdump and tshark do: one warning names the offset, and
  ``cut_at`` holds it (None for a whole file).
- A malformed frame never raises: it is parsed as far as its bytes go and counted
  in ``counters['malformed']``. A header is used only if complete: Ethernet 14
  bytes, a VLAN tag 4, IPv4 20 with IHL >= 5 and total length 0 (TSO) or >= the
  header length (else it is not an IPv4 header at all, as in tshark, which stops
  before ``ip.src``), IPv6 40, ARP 8 for the opcode and the addresses as far as
  they go, TCP/UDP 4 for the ports. Bytes cut from a header quoted inside an
  ICMP error are normal and not counted. ``counters['truncated']`` counts frames
  with captured length < original length (snaplen), ``counters['non_ethernet']``
  frames of other link types (their MACs are 0).
- TSV: the header must be Kitsune's 19 column names; a header-only or empty file,
  a row without 19 columns, or an unparsable value raises TraceError with the
  line number, column name and value. When a row holds both TCP and UDP ports,
  TCP's are used (Kitsune would concatenate the two strings).
"""

from __future__ import annotations

import ipaddress
import logging
import mmap
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lego.errors import BuildError, TraceError
from lego.ext.batch import ADDR_BYTES, Family, PacketBatch, Proto

try:
    from lego.ext import _packets
except ImportError as exc:  # pragma: no cover - depends on the build
    raise BuildError(
        "lego.ext._packets is not built: run `make build` "
        "(or `python setup.py build_ext --inplace`) in the repository root"
    ) from exc

log = logging.getLogger(__name__)
#: how an error about a file cut short begins (the last record is incomplete)
CUT = "file cut inside a"

__all__ = [
    "LINKTYPES",
    "RawFrames",
    "TSV_COLUMNS",
    "TraceReader",
    "format_addr",
    "format_mac",
    "open_trace",
    "parse_frames",
    "read_trace",
    "write_pcap",
]

LINKTYPES = {1: "ethernet", 12: "raw", 101: "raw", 113: "linux_sll", 228: "ipv4",
             229: "ipv6", 276: "linux_sll2"}
MAX_SNAPLEN = 262144  # libpcap's largest snapshot length
TSV_COLUMNS = (
    "frame.time_epoch", "frame.len", "eth.src", "eth.dst", "ip.src", "ip.dst",
    "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "icmp.type", "icmp.code",
    "arp.opcode", "arp.src.hw_mac", "arp.src.proto_ipv4", "arp.dst.hw_mac",
    "arp.dst.proto_ipv4", "ipv6.src", "ipv6.dst",
)
_TSV_HEADER = "\t".join(TSV_COLUMNS).encode()

# flag bits set by the kernel, per frame
_FL_MALFORMED, _FL_TRUNCATED, _FL_NON_ETHERNET, _FL_FRAGMENT, _FL_UNKNOWN_LINK = 1, 2, 4, 8, 16
COUNTER_NAMES = ("packets", "malformed", "truncated", "non_ethernet", "fragments")

_PCAP_MAGIC = {  # first four bytes -> (big endian, decimal digits of the fraction)
    b"\xd4\xc3\xb2\xa1": (False, 6),
    b"\xa1\xb2\xc3\xd4": (True, 6),
    b"\x4d\x3c\xb2\xa1": (False, 9),
    b"\xa1\xb2\x3c\x4d": (True, 9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


def _new_counters() -> dict[str, int]:
    return dict.fromkeys(COUNTER_NAMES, 0)


def parse_frames(buffer, offsets, caplens, origlens, ts, linktype=1, *, seq0: int = 0,
                 counters: dict[str, int] | None = None) -> PacketBatch:
    """Parse n frames held in one buffer into a PacketBatch.

    ``buffer``: bytes-like (bytes, bytearray, memoryview, uint8 array, mmap);
    ``offsets`` int64, ``caplens``/``origlens`` uint32 (or anything converting to
    those), ``ts`` float64: one per frame; ``linktype``: an int or one per frame.
    ``seq`` becomes ``seq0 .. seq0+n-1``. ``counters``, if given, is incremented
    (see :data:`COUNTER_NAMES`). Raises ValueError if a frame lies outside the
    buffer or a linktype is not supported.
    """
    buf = np.frombuffer(buffer, dtype=np.uint8) if not isinstance(buffer, np.ndarray) \
        else buffer.reshape(-1).view(np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    caplens = np.ascontiguousarray(caplens, dtype=np.uint32)
    origlens = np.ascontiguousarray(origlens, dtype=np.uint32)
    n = len(offsets)
    if not (len(caplens) == len(origlens) == len(ts) == n):
        raise ValueError(f"parse_frames: offsets, caplens, origlens and ts must have one "
                         f"entry per frame, got {n}, {len(caplens)}, {len(origlens)}, {len(ts)}")
    if n and (offsets.min() < 0 or int((offsets + caplens).max()) > len(buf)):
        raise ValueError(f"parse_frames: a frame lies outside the {len(buf)}-byte buffer")
    if np.isscalar(linktype):
        linktypes = np.full(n, int(linktype), dtype=np.uint16)
    else:
        linktypes = np.ascontiguousarray(linktype, dtype=np.uint16)
        if len(linktypes) != n:
            raise ValueError(f"parse_frames: expected {n} linktypes, got {len(linktypes)}")
    bad = ~np.isin(linktypes, list(LINKTYPES))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"parse_frames: frame {i}: unsupported link type {linktypes[i]}")
    batch = PacketBatch.empty(n)
    batch.ts[:] = ts
    batch.seq += np.uint64(seq0)
    flags = np.zeros(n, dtype=np.uint8)
    if n:
        _packets.parse_into(buf, offsets, caplens, origlens, linktypes, batch.frame_len,
                            batch.eth_src, batch.eth_dst, batch.proto, batch.src_family,
                            batch.dst_family, batch.src_addr, batch.dst_addr, batch.sport,
                            batch.dport, flags)
    if counters is not None:
        _count(counters, flags)
    return batch


def _count(counters: dict[str, int], flags: np.ndarray) -> None:
    for name in COUNTER_NAMES:
        counters.setdefault(name, 0)
    counters["packets"] += len(flags)
    for name, bit in (("malformed", _FL_MALFORMED), ("truncated", _FL_TRUNCATED),
                      ("non_ethernet", _FL_NON_ETHERNET), ("fragments", _FL_FRAGMENT)):
        counters[name] += int(np.count_nonzero(flags & bit))


# ---------------------------------------------------------------- readers

class TraceReader:
    """A capture opened by :func:`open_trace`; iterate :meth:`batches`.

    ``format`` is ``"pcap"``, ``"pcapng"`` or ``"tsv"``; ``counters`` holds the
    counts of the packets read so far by the last :meth:`batches` iteration.
    """

    format = ""

    def __init__(self, path: str | Path, data: mmap.mmap):
        self.path = str(path)
        self._mm = data
        self._buf = np.frombuffer(data, dtype=np.uint8)
        self.counters: dict[str, int] = _new_counters()
        self.cut_at: int | None = None  # the offset of a cut last record, if any

    def batches(self, size: int = 65536) -> Iterator[PacketBatch]:
        """Yield consecutive PacketBatch of at most ``size`` packets; ``seq`` is the
        global packet index. Raises TraceError at the first bad record."""
        if size <= 0:
            raise ValueError(f"batches: size must be positive, got {size}")
        self.counters = _new_counters()
        yield from self._batches(size)

    def _batches(self, size: int) -> Iterator[PacketBatch]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[PacketBatch]:
        return self.batches()

    def close(self) -> None:
        self._buf = None
        try:
            self._mm.close()
        except BufferError:  # a batch still views the map; it closes when freed
            pass

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, message: str, index: int | None = None) -> TraceError:
        return TraceError(self.path, message, index)


@dataclass
class RawFrames:
    """Undecoded frames of a capture: ``buffer[offsets[i]:offsets[i] + caplens[i]]`` is
    frame ``seq0 + i``; the arrays are the arguments of :func:`parse_frames`."""

    buffer: np.ndarray
    offsets: np.ndarray
    caplens: np.ndarray
    origlens: np.ndarray
    ts: np.ndarray
    linktypes: np.ndarray
    seq0: int

    def __len__(self) -> int:
        return len(self.offsets)

    def frame(self, i: int) -> bytes:
        start = int(self.offsets[i])
        return bytes(self.buffer[start:start + int(self.caplens[i])])


class _FrameReader(TraceReader):
    """Shared batch loop of the pcap and pcapng readers."""

    def raw_batches(self, size: int = 65536) -> Iterator[RawFrames]:
        """Yield the frames undecoded (for replay), at most ``size`` at a time; the
        arrays are fresh per batch, the buffer is the mapped file."""
        if size <= 0:
            raise ValueError(f"raw_batches: size must be positive, got {size}")
        seq = 0
        pos = self._start
        self.cut_at = None
        while True:
            offsets = np.empty(size, dtype=np.int64)
            caplens = np.empty(size, dtype=np.uint32)
            origlens = np.empty(size, dtype=np.uint32)
            ts = np.empty(size, dtype=np.float64)
            linktypes = np.empty(size, dtype=np.uint16)
            n, pos, error = self._scan(pos, offsets, caplens, origlens, ts, linktypes, seq)
            if error is not None and error.startswith(CUT):  # read what is whole
                self.cut_at = pos
                log.warning("%s: %s: read the %d whole records before it", self.path,
                            error, seq + n)
                error = None
            if n:
                lt = linktypes[:n]
                bad = ~np.isin(lt, list(LINKTYPES))
                if bad.any():
                    i = int(np.argmax(bad))
                    raise self._error(f"unsupported link type {int(lt[i])}", seq + i)
                yield RawFrames(self._buf, offsets[:n], caplens[:n], origlens[:n], ts[:n], lt,
                                seq)
                seq += n
            if error is not None:
                raise self._error(error, seq)
            if n < size:
                return

    def _batches(self, size: int) -> Iterator[PacketBatch]:
        for raw in self.raw_batches(size):
            yield parse_frames(raw.buffer, raw.offsets, raw.caplens, raw.origlens, raw.ts,
                               raw.linktypes, seq0=raw.seq0, counters=self.counters)


class PcapReader(_FrameReader):
    format = "pcap"

    def __init__(self, path: str | Path, data: mmap.mmap):
        super().__init__(path, data)
        if len(data) < 24:
            raise self._error(f"truncated pcap file header: {len(data)} of 24 bytes")
        self.big_endian, self.digits = _PCAP_MAGIC[bytes(data[:4])]
        end = ">" if self.big_endian else "<"
        major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack(
            end + "HHiIII", data[4:24])
        self.version = (major, minor)
        self.snaplen = snaplen
        self.linktype = linktype & 0xFFFF  # upper bits: FCS length flags
        if self.linktype not in LINKTYPES:
            raise self._error(f"unsupported link type {self.linktype} (supported: "
                              f"{sorted(LINKTYPES)})")
        self.max_caplen = max(snaplen, MAX_SNAPLEN)
        self._start = 24

    def _scan(self, pos, offsets, caplens, origlens, ts, linktypes, seq):
        n, pos, status = _packets.scan_pcap(self._buf, pos, self.big_endian, self.digits,
                                            self.max_caplen, offsets, caplens, origlens, ts)
        linktypes[:n] = self.linktype
        error = None
        if status == 1:
            error = (f"{CUT} record header ({len(self._buf) - pos} of 16 bytes "
                     f"at offset {pos})")
        elif status == 2:
            cl = int.from_bytes(bytes(self._buf[pos + 8:pos + 12]),
                                "big" if self.big_endian else "little")
            error = (f"{CUT} record: captured length {cl} but "
                     f"{len(self._buf) - pos - 16} bytes left at offset {pos}")
        elif status == 3:
            cl = int.from_bytes(bytes(self._buf[pos + 8:pos + 12]),
                                "big" if self.big_endian else "little")
            error = (f"corrupt record at offset {pos}: captured length {cl} exceeds "
                     f"the snapshot length {self.snaplen} (at most {self.max_caplen})")
        return n, pos, error


class PcapngReader(_FrameReader):
    format = "pcapng"

    def __init__(self, path: str | Path, data: mmap.mmap):
        super().__init__(path, data)
        self._start = 0
        self.big_endian = False
        self._interfaces: list[tuple[int, int, int]] = []  # (linktype, tsres, tsoffset)
        self._if_arrays = self._interface_arrays()

    def _interface_arrays(self):
        ifs = self._interfaces
        return (np.array([i[0] for i in ifs], dtype=np.uint16),
                np.array([i[1] for i in ifs], dtype=np.int32),
                np.array([i[2] for i in ifs], dtype=np.int64))

    def _block(self, pos: int, seq: int) -> int:
        """Parse the SHB or IDB at ``pos``; return the position after it."""
        buf = self._buf
        if pos + 12 > len(buf):
            raise self._error(f"file cut inside a block header at offset {pos}", seq)
        if bytes(buf[pos:pos + 4]) == _PCAPNG_SHB:
            bom = bytes(buf[pos + 8:pos + 12])
            if bom == b"\x4d\x3c\x2b\x1a":
                self.big_endian = False
            elif bom == b"\x1a\x2b\x3c\x4d":
                self.big_endian = True
            else:
                raise self._error(f"bad pcapng byte-order magic {bom.hex()} at offset {pos}",
                                  seq)
            self._interfaces = []  # a new section starts a new interface list
        end = ">" if self.big_endian else "<"
        (blen,) = struct.unpack(end + "I", bytes(buf[pos + 4:pos + 8]))
        if blen < 12 or blen % 4 or pos + blen > len(buf):
            raise self._error(f"bad or cut block length {blen} at offset {pos}", seq)
        (btype,) = struct.unpack(end + "I", bytes(buf[pos:pos + 4]))
        if btype == 1:
            if blen < 20:
                raise self._error(f"interface description block too short ({blen} bytes) "
                                  f"at offset {pos}", seq)
            linktype, _reserved, _snaplen = struct.unpack(end + "HHI",
                                                          bytes(buf[pos + 8:pos + 16]))
            tsres, tsoffset = 6, 0
            opt = pos + 16
            while opt + 4 <= pos + blen - 4:
                code, olen = struct.unpack(end + "HH", bytes(buf[opt:opt + 4]))
                value = bytes(buf[opt + 4:opt + 4 + olen])
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    v = value[0]
                    tsres = -(v & 0x7F) if v & 0x80 else v
                    if tsres > 19:
                        raise self._error(f"unsupported if_tsresol 10^-{tsres}", seq)
                elif code == 14 and olen == 8:
                    (tsoffset,) = struct.unpack(end + "q", value)
                opt += 4 + (olen + 3) // 4 * 4
            self._interfaces.append((linktype, tsres, tsoffset))
        self._if_arrays = self._interface_arrays()
        return pos + blen

    def _scan(self, pos, offsets, caplens, origlens, ts, linktypes, seq):
        n = 0
        cap = len(offsets)
        while True:
            lt, res, toff = self._if_arrays
            k, pos, status, btype = _packets.scan_pcapng(
                self._buf, pos, self.big_endian, lt, res, toff, MAX_SNAPLEN,
                offsets[n:], caplens[n:], origlens[n:], ts[n:], linktypes[n:])
            n += k
            if status == 5:
                if pos + 12 > len(self._buf):
                    return n, pos, f"{CUT} block header at offset {pos}"
                pos = self._block(pos, seq + n)
                if n < cap:
                    continue
                return n, pos, None
            if status == 0:
                return n, pos, None
            messages = {
                1: f"{CUT} block at offset {pos}",
                2: f"bad block length in block type {btype:#x} at offset {pos}",
                3: f"corrupt packet block at offset {pos}: captured length above "
                   f"{MAX_SNAPLEN}",
                4: f"packet block at offset {pos} names an interface that was not "
                   f"described ({len(self._interfaces)} known)",
            }
            return n, pos, messages.get(status, f"scan status {status}")


class TsvReader(TraceReader):
    """Kitsune's tshark TSV (header row + 19 tab-separated columns)."""

    format = "tsv"

    def __init__(self, path: str | Path, data: mmap.mmap):
        super().__init__(path, data)
        eol = data.find(b"\n")
        header = bytes(data[: eol if eol >= 0 else len(data)]).rstrip(b"\r")
        if header != _TSV_HEADER:
            got = header.decode("utf-8", "replace").split("\t")
            raise self._error(f"not a Kitsune TSV: expected the {len(TSV_COLUMNS)} columns "
                              f"{' '.join(TSV_COLUMNS)}, got {len(got)}: {' '.join(got)[:200]}")
        self._start = eol + 1 if eol >= 0 else len(data)
        if not bytes(data[self._start:]).strip():
            raise self._error("TSV has a header but no packets")

    def _batches(self, size: int) -> Iterator[PacketBatch]:
        pos = self._start
        seq = 0
        line0 = 2  # 1-based line number of the line at pos
        while pos < len(self._buf):
            batch = PacketBatch.empty(size)
            n, new_pos, bad_line, bad_col = _packets.parse_tsv(
                self._buf, pos, batch.ts, batch.frame_len, batch.eth_src, batch.eth_dst,
                batch.proto, batch.src_family, batch.dst_family, batch.src_addr,
                batch.dst_addr, batch.sport, batch.dport)
            if bad_line >= 0:
                if n:
                    batch = batch.take(slice(0, n))
                    batch.seq += np.uint64(seq)
                    self.counters["packets"] += n
                    yield batch
                raise self._tsv_error(new_pos, line0 + bad_line, bad_col, seq + n)
            line0 += int(np.count_nonzero(self._buf[pos:new_pos] == 10))
            pos = new_pos
            if n == 0:
                return
            if n < size:
                batch = batch.take(slice(0, n))
            batch.seq += np.uint64(seq)
            seq += n
            self.counters["packets"] += n
            yield batch

    def _tsv_error(self, pos: int, line: int, col: int, index: int) -> TraceError:
        eol = self._mm.find(b"\n", pos)
        text = bytes(self._buf[pos: eol if eol >= 0 else len(self._buf)]).rstrip(b"\r")
        cells = text.decode("utf-8", "replace").split("\t")
        if col < 0:
            msg = (f"line {line}: expected {len(TSV_COLUMNS)} tab-separated columns, "
                   f"got {len(cells)}")
        else:
            value = cells[col] if col < len(cells) else ""
            msg = f"line {line}: column {TSV_COLUMNS[col]}: cannot parse {value!r}"
        return self._error(msg, index)


ETH_P_ALL = 0x0003


def packet_socket(ifname: str) -> socket.socket:
    """A raw AF_PACKET socket that receives the frames of ``ifname`` and nothing else.

    Opened with protocol 0 (it receives nothing), then bound to the interface with
    ETH_P_ALL: a socket opened with ETH_P_ALL takes every interface's frames until
    it is bound (measured: a frame of the management network's Ray traffic reached
    a brick's first batch). OSError (permission, no such interface) as raised."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((ifname, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


def open_trace(path: str | Path) -> TraceReader:
    """Open a capture, detecting its format from its first bytes (not its name)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            if path.stat().st_size == 0:
                raise TraceError(str(path), "empty file")
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise TraceError(str(path), f"cannot open: {exc.strerror or exc}") from exc
    head = bytes(data[:4])
    if head in _PCAP_MAGIC:
        return PcapReader(path, data)
    if head == _PCAPNG_SHB:
        return PcapngReader(path, data)
    if bytes(data[:len(TSV_COLUMNS[0])]) == TSV_COLUMNS[0].encode():
        return TsvReader(path, data)
    data.close()
    raise TraceError(str(path), f"unknown capture format: magic {head.hex()} is neither "
                     "pcap, pcapng nor a Kitsune TSV header")


def read_trace(path: str | Path, limit: int | None = None) -> PacketBatch:
    """The whole capture (or its first ``limit`` packets) as one PacketBatch."""
    reader = open_trace(path)
    parts: list[PacketBatch] = []
    total = 0
    size = 65536 if limit is None else max(1, min(65536, limit))
    for batch in reader.batches(size):
        if limit is not None and total + len(batch) > limit:
            batch = batch.take(slice(0, limit - total))
        parts.append(batch)
        total += len(batch)
        if limit is not None and total >= limit:
            break
    return PacketBatch.concat(parts)


def write_pcap(path: str | Path, frames: Sequence[bytes], ts: Sequence[float] | np.ndarray,
               linktype: int = 1, *, origlens: Sequence[int] | None = None,
               snaplen: int = MAX_SNAPLEN) -> None:
    """Write classic little-endian microsecond pcap. ``ts`` are epoch seconds, each
    stored as the decimal ``sec.usec`` nearest to it (so a ``float("sec.usec")``
    value round-trips exactly). ``origlens`` defaults to the frame lengths."""
    if len(ts) != len(frames):
        raise ValueError(f"write_pcap: {len(frames)} frames but {len(ts)} timestamps")
    if origlens is not None and len(origlens) != len(frames):
        raise ValueError(f"write_pcap: {len(frames)} frames but {len(origlens)} origlens")
    t = np.asarray(ts, dtype=np.float64)
    if len(t) and (not np.isfinite(t).all() or t.min() < 0):
        raise ValueError("write_pcap: timestamps must be finite and non-negative")
    sec = np.floor(t)
    usec = np.rint((t - sec) * 1e6).astype(np.int64)
    sec = sec.astype(np.int64) + (usec >= 1_000_000)
    usec = np.where(usec >= 1_000_000, usec - 1_000_000, usec)
    lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    olens = lens if origlens is None else np.asarray(origlens, dtype=np.int64)
    hdr = np.empty((len(frames), 4), dtype="<u4")
    hdr[:, 0] = sec
    hdr[:, 1] = usec
    hdr[:, 2] = lens
    hdr[:, 3] = olens
    hdr_bytes = hdr.tobytes()
    parts = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for i, frame in enumerate(frames):
        parts.append(hdr_bytes[16 * i:16 * i + 16])
        parts.append(bytes(frame))
    Path(path).write_bytes(b"".join(parts))


# ---------------------------------------------------------------- formatting

def format_mac(mac: int) -> str:
    """48-bit integer -> ``aa:bb:cc:dd:ee:ff`` (lowercase, as tshark prints it)."""
    return ":".join(f"{b:02x}" for b in int(mac).to_bytes(6, "big"))


def format_addr(family: int, addr16) -> str:
    """A derived address (family, 16 bytes) as text: dotted IPv4, compressed IPv6,
    a MAC, or ``""`` for family NONE."""
    raw = bytes(np.asarray(addr16, dtype=np.uint8).tobytes()) if not isinstance(
        addr16, bytes | bytearray) else bytes(addr16)
    if len(raw) != ADDR_BYTES:
        raise ValueError(f"format_addr: expected {ADDR_BYTES} bytes, got {len(raw)}")
    family = int(family)
    if family == Family.IPV4:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == Family.IPV6:
        return str(ipaddress.IPv6Address(raw))
    if family == Family.MAC:
        return format_mac(int.from_bytes(raw[:6], "big"))
    if family == Family.NONE:
        return ""
    raise ValueError(f"format_addr: unknown family {family}")


def proto_counts(batch: PacketBatch) -> dict[str, int]:
    """Packets per :class:`Proto` name."""
    counts = np.bincount(batch.proto, minlength=len(Proto))
    return {p.name: int(counts[p]) for p in Proto}
