"""The executable model of ``lego.p4``: one code path for the software target and
the offline split simulator.

State (:class:`PipelineState`) is what the controller writes over P4Runtime
(port roles, the selected groups, the two bucket -> replica tables, clone
sessions) plus what the dataplane keeps (the sequence register, counters).
Each owner table holds two versions of the assignment; a frame reads the one
the epoch's low bit names (``lego.p4`` set_groups).

- :func:`group_buckets` hashes a matrix of key records (:mod:`lego.switch.parser`) for
  one split group: ``crc32(fields bit-packed MSB first) % N_BUCKETS``, as BMv2's
  ``hash(..., HashAlgorithm.crc32, 0, {...}, N_BUCKETS)`` computes it. The
  symmetric groups (``SYMMETRIC_GROUPS``) hash the two-endpoint groups with the
  endpoints ordered, the symmetric Socket group on the outer header
  (:func:`~lego.switch.parser.outer_view`).
- :meth:`Pipeline.decide` turns records into per-packet decisions (bucket, owner,
  mirror bucket, clone owner) with numpy; the offline simulator calls it on a
  whole ``PacketBatch`` (``records_from_batch``) and never builds frames.
- :meth:`Pipeline.process` is the target's path: frames from one ingress port
  -> ``decide`` -> shimmed output frames, counters, sequence numbers.

The window clock, as in ``lego.p4``: with a period set, each split frame (in
arrival order, owned or not) reads the window register and opens the next window
when its ingress time exceeds the window's start + period; its window goes in the
shim, and a frame that opens one (and is not mirrored) is cloned as a window mark
to the ports of clone session ``WINDOW_MARK_SESSION``.

The frame log, as in ``lego.p4``: with ``frame_log``'s default ``log_frames``, a
primary also goes, the same bytes, to the ports of clone session
``FRAME_LOG_SESSION`` (BMv2's egress-to-egress clone); mirrors and window marks
reach the log port as a replica of their own sessions.

Decisions, as in ``lego.p4``: a frame from a port whose role is *drop* (also the
default for an unconfigured port) is dropped; *forward* sends it unchanged to
the port the role names (e.g. alerts from an NF host); *traffic* splits it. A
split frame whose primary bucket has no owner is dropped (counted
``EVENT_UNOWNED``); it is cloned to the mirror bucket's owner when a mirror group
is set, that bucket has an owner, and the owner differs from the primary owner
(or there is none); the clone goes to every replica of clone session
``owner + 1`` (none if the session is absent), truncated to the session's
``packet_length_bytes`` when that is non-zero. Counter bytes are the ingress
frame length; the port-out counter counts frames, not window marks.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lego.p4src.contract import (  # noqa: F401 (the model re-exports the contract)
    A_LOG_FRAMES,
    A_MIRROR_TO,
    A_MIRROR_UNOWNED,
    A_ROLE_DROP,
    A_ROLE_FORWARD,
    A_ROLE_TRAFFIC,
    A_SET_GROUPS,
    A_SET_WINDOW,
    A_TO_REPLICA,
    A_UNOWNED,
    C_BUCKET,
    C_EVENT,
    C_MIRROR_BUCKET,
    C_PORT_IN,
    C_PORT_OUT,
    CLONE_SESSION_BASE,
    COUNTER_SIZES,
    DROP_PORT,
    EVENT_FORWARD,
    EVENT_MIRROR,
    EVENT_PARSER_ERROR,
    EVENT_PORT_DROP,
    EVENT_RUNT,
    EVENT_UNOWNED,
    EVENT_WINDOW,
    FRAME_LOG_SESSION,
    GROUP_DSTIP,
    GROUP_NAMES,
    GROUP_NONE,
    GROUP_SLICES,
    GROUP_SOCKET,
    GROUP_SOCKET_SYM,
    GROUP_SRCIP,
    GROUP_SRCIP_DSTIP,
    GROUP_SRCIP_DSTIP_SYM,
    GROUP_SRCMAC_SRCIP,
    INITIAL_DEFAULTS,
    LEGO_ETHERTYPE,
    N_BUCKETS,
    N_EVENTS,
    N_PORTS,
    ROLE_DROP,
    ROLE_FORWARD,
    ROLE_TRAFFIC,
    SHIM_BYTES,
    SHIM_KIND_FRAME,
    SHIM_KIND_WINDOW,
    SHIM_MIRROR,
    SYMMETRIC_GROUP_NAMES,
    SYMMETRIC_GROUPS,
    T_BUCKET_OWNER,
    T_FRAME_LOG,
    T_MIRROR_OWNER,
    T_PORT_ROLE,
    T_SPLIT_GROUP,
    T_WINDOW_CLOCK,
    VERSIONS,
    WINDOW_MARK_BYTES,
    WINDOW_MARK_SESSION,
    port_cells,
)
from lego.switch.parser import (
    KEY_BYTES,
    STATUS_PARSER_ERROR,
    STATUS_RUNT,
    outer_view,
    parse_keys,
)

_SHIM = struct.Struct("!BBHQHIIIB")  # the shim less origEtherType (which is frame[12:14])
_TS_MASK = 0xFFFFFFFFFFFF  # 48-bit ingress timestamps
_LEGO_TYPE = LEGO_ETHERTYPE.to_bytes(2, "big")


# the key record's two endpoints: (family, address) slices and port slices
_SRC_ADDR, _DST_ADDR, _SPORT, _DPORT = slice(6, 23), slice(23, 40), slice(41, 43), slice(43, 45)


def ordered_endpoints(records: np.ndarray, ports: bool) -> np.ndarray:
    """Key records with each packet's endpoints ordered: where the destination
    (family, address[, port]) compares below the source's, as byte strings, the two
    swap (addresses, and ports when ``ports``), so a packet and its reply give one
    record. ``records`` is left as it is."""
    src, dst = records[:, _SRC_ADDR], records[:, _DST_ADDR]
    if ports:
        src = np.concatenate((src, records[:, _SPORT]), axis=1)
        dst = np.concatenate((dst, records[:, _DPORT]), axis=1)
    differ = src != dst
    first = differ.argmax(axis=1)  # the first byte that differs (0 where none does)
    rows = np.arange(len(records))
    swap = differ[rows, first] & (dst[rows, first] < src[rows, first])
    out = records.copy()
    out[swap, _SRC_ADDR], out[swap, _DST_ADDR] = records[swap, _DST_ADDR], records[swap, _SRC_ADDR]
    if ports:
        out[swap, _SPORT], out[swap, _DPORT] = records[swap, _DPORT], records[swap, _SPORT]
    return out


def group_buckets(records: np.ndarray, group: int) -> np.ndarray:
    """Bucket (int64[n]) of each key record under ``group``; 0 for GROUP_NONE or unknown.
    A symmetric group hashes its directed group's slice of the records with their
    endpoints ordered (:func:`ordered_endpoints`), the symmetric Socket group the
    records' outer view."""
    n = len(records)
    if group == GROUP_SOCKET_SYM:
        records = ordered_endpoints(outer_view(records), ports=True)
    elif group in SYMMETRIC_GROUPS:
        records = ordered_endpoints(records, ports=False)
    group = SYMMETRIC_GROUPS.get(group, group)
    if group not in GROUP_SLICES:
        return np.zeros(n, dtype=np.int64)
    lo, hi = GROUP_SLICES[group]
    width = hi - lo
    view = memoryview(np.ascontiguousarray(records[:, lo:hi]).tobytes())
    crc = zlib.crc32
    out = np.fromiter((crc(view[i:i + width]) for i in range(0, n * width, width)),
                      dtype=np.int64, count=n)
    return out % N_BUCKETS


def shim_header(flags: int, group: int, bucket: int, seq: int, ts_us: int, orig_len: int,
                orig_ethertype: int, window: int = 0, kind: int = SHIM_KIND_FRAME) -> bytes:
    """The 29-byte shim (lego.p4 ``lego_shim_t``)."""
    ts = ts_us & _TS_MASK
    return _SHIM.pack(flags, group, bucket, seq & 0xFFFFFFFFFFFFFFFF, ts >> 32, ts & 0xFFFFFFFF,
                      orig_len, window, kind) + orig_ethertype.to_bytes(2, "big")


@dataclass(frozen=True)
class Shim:
    flags: int
    group: int
    bucket: int
    seq: int
    ts_us: int
    orig_len: int
    orig_ethertype: int
    window: int = 0
    kind: int = SHIM_KIND_FRAME

    @property
    def mark(self) -> bool:
        """A window mark (Ethernet and shim only), not a frame."""
        return self.kind == SHIM_KIND_WINDOW

    @property
    def mirror(self) -> bool:
        return bool(self.flags & SHIM_MIRROR)

    @property
    def epoch(self) -> int:
        """The assignment epoch the frame was split under (split_group's ``epoch``)."""
        return self.flags >> 1


def strip_shim(frame: bytes) -> tuple[Shim, bytes]:
    """Split a frame from the switch into its shim and the original frame."""
    if len(frame) < 14 + SHIM_BYTES - 2 or frame[12:14] != _LEGO_TYPE:
        raise ValueError("frame carries no lego shim")
    f, g, b, seq, ts_hi, ts_lo, olen, window, kind = _SHIM.unpack_from(frame, 14)
    etype = frame[14 + _SHIM.size:16 + _SHIM.size]
    shim = Shim(f, g, b, seq, (ts_hi << 32) | ts_lo, olen, int.from_bytes(etype, "big"),
                window, kind)
    return shim, frame[:12] + frame[14 + _SHIM.size:]


@dataclass
class CloneSession:
    replicas: list[int]  # egress ports
    packet_length_bytes: int = 0  # 0: no truncation


@dataclass
class PipelineState:
    """What P4Runtime writes and the dataplane keeps. Owners are -1 when unowned."""

    port_roles: dict[int, tuple[int, int]] = field(default_factory=dict)  # port -> (role, fwd)
    default_role: tuple[int, int] = (ROLE_DROP, 0)
    primary_group: int = GROUP_SRCIP
    mirror_group: int = GROUP_NONE
    # [version, bucket]: the version a frame reads is the epoch's low bit
    bucket_owner: np.ndarray = field(
        default_factory=lambda: np.full((VERSIONS, 1 << 16), -1, dtype=np.int32))
    mirror_owner: np.ndarray = field(
        default_factory=lambda: np.full((VERSIONS, 1 << 16), -1, dtype=np.int32))
    clone_sessions: dict[int, CloneSession] = field(default_factory=dict)
    seq: int = 0
    counters: dict[str, np.ndarray] = field(default_factory=lambda: {
        name: np.zeros((size, 2), dtype=np.uint64) for name, size in COUNTER_SIZES.items()})
    epoch: int = 0  # bumped with every bucket move, carried in the shim flags (7 bits)
    window_period_us: int = 0  # window_clock's period (0: no clock)
    window: int = 0  # the window registers: the current window (0: none yet) and its start
    window_start_us: int = 0
    frame_log: bool = False  # frame_log's default action is log_frames

    @property
    def version(self) -> int:
        """The owner tables' version frames read now (the epoch's low bit)."""
        return self.epoch & 1

    def copy(self) -> PipelineState:
        return PipelineState(
            dict(self.port_roles), self.default_role, self.primary_group, self.mirror_group,
            self.bucket_owner.copy(), self.mirror_owner.copy(),
            {k: CloneSession(list(v.replicas), v.packet_length_bytes)
             for k, v in self.clone_sessions.items()},
            self.seq, {k: v.copy() for k, v in self.counters.items()}, self.epoch,
            self.window_period_us, self.window, self.window_start_us, self.frame_log)


@dataclass
class Decisions:
    """Per-packet split decisions of :meth:`Pipeline.decide` (numpy, one row a packet)."""

    bucket: np.ndarray  # int64, primary bucket
    owner: np.ndarray  # int32, primary replica port or -1
    mirror_bucket: np.ndarray  # int64 (0 when no mirror group)
    clone_owner: np.ndarray  # int32, replica the packet is cloned to, or -1


def _count(counter: np.ndarray, index: np.ndarray, nbytes: np.ndarray) -> None:
    np.add.at(counter[:, 0], index, np.uint64(1))
    np.add.at(counter[:, 1], index, nbytes.astype(np.uint64))


class Pipeline:
    """``lego.p4`` on a :class:`PipelineState`. Thread-safe through ``lock``."""

    def __init__(self, state: PipelineState | None = None):
        self.state = state or PipelineState()
        self.lock = threading.RLock()

    def decide(self, records: np.ndarray) -> Decisions:
        """Split decisions for key records (no counters, no sequence numbers)."""
        if records.ndim != 2 or records.shape[1] != KEY_BYTES or records.dtype != np.uint8:
            raise ValueError(f"key records: expected uint8[n, {KEY_BYTES}], got "
                             f"{records.dtype}{list(records.shape)}")
        s = self.state
        bucket = group_buckets(records, s.primary_group)
        owner = s.bucket_owner[s.version, bucket]
        if s.mirror_group == GROUP_NONE:
            mb = np.zeros(len(records), dtype=np.int64)
            clone = np.full(len(records), -1, dtype=np.int32)
        else:
            mb = group_buckets(records, s.mirror_group)
            mo = s.mirror_owner[s.version, mb]
            clone = np.where((mo >= 0) & (mo != owner), mo, -1).astype(np.int32)
        return Decisions(bucket, owner, mb, clone)

    def process(self, frames: Sequence[bytes], ingress_port: int,
                now_us: int | Sequence[int]) -> list[tuple[int, bytes]]:
        """Frames that entered on ``ingress_port`` at ``now_us`` (one time for all, or
        one per frame) -> [(egress port, frame)]."""
        with self.lock:
            return self._process(frames, ingress_port, now_us)

    def _process(self, frames: Sequence[bytes], port: int,
                 now_us: int | Sequence[int]) -> list[tuple[int, bytes]]:
        s = self.state
        n = len(frames)
        if n == 0:
            return []
        c = s.counters
        lens = np.fromiter((len(f) for f in frames), dtype=np.int64, count=n)
        port_idx = port % N_PORTS
        c[C_PORT_IN][port_idx, 0] += np.uint64(n)
        c[C_PORT_IN][port_idx, 1] += np.uint64(int(lens.sum()))
        role, fwd_port = s.port_roles.get(port, s.default_role)
        if role == ROLE_FORWARD:
            self._event(EVENT_FORWARD, n, lens)
            self._count_out(np.full(n, fwd_port, dtype=np.int64), lens)
            return [(fwd_port, bytes(f)) for f in frames]
        if role != ROLE_TRAFFIC:
            self._event(EVENT_PORT_DROP, n, lens)
            return []
        records, status = parse_keys(frames)
        runt = status == STATUS_RUNT
        if runt.any():
            self._event(EVENT_RUNT, int(runt.sum()), lens[runt])
        perr = status == STATUS_PARSER_ERROR
        if perr.any():
            self._event(EVENT_PARSER_ERROR, int(perr.sum()), lens[perr])
        ok = np.flatnonzero(~runt)
        if len(ok) == 0:
            return []
        if len(ok) < n:
            records, lens_ok = records[ok], lens[ok]
        else:
            lens_ok = lens
        d = self.decide(records)
        seq0 = s.seq
        s.seq = (s.seq + len(ok)) & 0xFFFFFFFFFFFFFFFF
        _count(c[C_BUCKET], d.bucket, lens_ok)
        unowned = d.owner < 0
        if unowned.any():
            self._event(EVENT_UNOWNED, int(unowned.sum()), lens_ok[unowned])
        cloned = d.clone_owner >= 0
        if cloned.any():
            _count(c[C_MIRROR_BUCKET], d.mirror_bucket[cloned], lens_ok[cloned])
            self._event(EVENT_MIRROR, int(cloned.sum()), lens_ok[cloned])
        out: list[tuple[int, bytes]] = []
        out_ports: list[int] = []
        out_lens: list[int] = []
        pg, mg = s.primary_group, s.mirror_group
        flags = (s.epoch & 0x7F) << 1
        shim = _SHIM.pack
        stamps = [now_us] * n if isinstance(now_us, int) else now_us
        windows, opened = self._windows([stamps[i] & _TS_MASK for i in ok.tolist()])
        if opened:
            self._event(EVENT_WINDOW, len(opened), lens_ok[opened])
        owners = d.owner.tolist()
        buckets = d.bucket.tolist()
        clones = d.clone_owner.tolist()
        mbuckets = d.mirror_bucket.tolist()
        sessions = s.clone_sessions
        marking = set(opened)
        log_sess = sessions.get(FRAME_LOG_SESSION) if s.frame_log else None

        def send(ports: list[int], frame: bytes, flen: int, counted: bool = True) -> None:
            for p in ports:
                out.append((p, frame))
                if counted:  # port_out_counter counts frames, not window marks
                    out_ports.append(p)
                    out_lens.append(flen)

        for j, i in enumerate(ok.tolist()):
            f = frames[i]
            flen = len(f)
            seq = (seq0 + j) & 0xFFFFFFFFFFFFFFFF
            ts = stamps[i] & _TS_MASK
            ts_hi, ts_lo, w = ts >> 32, ts & 0xFFFFFFFF, windows[j]
            o = owners[j]
            if o >= 0:
                p = b"".join((f[:12], _LEGO_TYPE, shim(flags, pg, buckets[j], seq, ts_hi, ts_lo,
                                                       flen, w, SHIM_KIND_FRAME), f[12:]))
                send([o], p, flen)
                if log_sess is not None:  # its E2E clone, as its replica got it
                    send(log_sess.replicas, p[:log_sess.packet_length_bytes or None], flen)
            co = clones[j]
            if co >= 0:  # one clone per pass: a mirrored frame carries no window mark
                sess = sessions.get(co + CLONE_SESSION_BASE)
                if sess is not None:
                    m = b"".join((f[:12], _LEGO_TYPE,
                                  shim(flags | SHIM_MIRROR, mg, mbuckets[j], seq, ts_hi, ts_lo,
                                       flen, w, SHIM_KIND_FRAME), f[12:]))
                    send(sess.replicas, m[:sess.packet_length_bytes or None], flen)
            elif j in marking and WINDOW_MARK_SESSION in sessions:
                sess = sessions[WINDOW_MARK_SESSION]
                m = b"".join((f[:12], _LEGO_TYPE,
                              shim(flags, GROUP_NONE, 0, seq, ts_hi, ts_lo, flen, w,
                                   SHIM_KIND_WINDOW), f[12:14]))  # cut to WINDOW_MARK_BYTES
                send(sess.replicas, m[:sess.packet_length_bytes or None], flen, counted=False)
        if out_ports:
            self._count_out(np.asarray(out_ports, dtype=np.int64),
                            np.asarray(out_lens, dtype=np.int64))
        return out

    def _windows(self, stamps: list[int]) -> tuple[list[int], list[int]]:
        """Each frame's window under the window clock (in arrival order), and the
        indices of the frames that opened one; all 0 and none without a clock."""
        s = self.state
        period = s.window_period_us
        if not period:
            return [0] * len(stamps), []
        window, start = s.window, s.window_start_us
        windows, opened = [], []
        for j, ts in enumerate(stamps):
            if window == 0 or ts > start + period:
                window, start = window + 1, ts
                opened.append(j)
            windows.append(window)
        s.window, s.window_start_us = window & 0xFFFFFFFF, start
        return windows, opened

    def _event(self, event: int, n: int, lens: np.ndarray) -> None:
        ctr = self.state.counters[C_EVENT]
        ctr[event, 0] += np.uint64(n)
        ctr[event, 1] += np.uint64(int(lens.sum()))

    def _count_out(self, ports: np.ndarray, lens: np.ndarray) -> None:
        _count(self.state.counters[C_PORT_OUT], ports % N_PORTS, lens)


# --------------------------------------------------------------------------- control plane
# What a P4Runtime entry does to the state, by P4Info names (the server validates
# entries against the P4Info first; these trust their arguments).


def apply_entry(state: PipelineState, table: str, key: dict[str, int], action: str,
                params: dict[str, int]) -> None:
    """Install (or modify) one match entry."""
    if table == T_PORT_ROLE:
        role = {A_ROLE_TRAFFIC: ROLE_TRAFFIC, A_ROLE_FORWARD: ROLE_FORWARD,
                A_ROLE_DROP: ROLE_DROP}[action]
        state.port_roles[key["standard_metadata.ingress_port"]] = (role, params.get("port", 0))
    elif table == T_BUCKET_OWNER:
        state.bucket_owner[key["meta.version"], key["meta.bucket"]] = \
            params["port"] if action == A_TO_REPLICA else -1
    elif table == T_MIRROR_OWNER:
        state.mirror_owner[key["meta.version"], key["meta.mirror_bucket"]] = \
            params["port"] if action == A_MIRROR_TO else -1
    else:
        raise KeyError(table)


def remove_entry(state: PipelineState, table: str, key: dict[str, int]) -> None:
    if table == T_PORT_ROLE:
        state.port_roles.pop(key["standard_metadata.ingress_port"], None)
    elif table == T_BUCKET_OWNER:
        state.bucket_owner[key["meta.version"], key["meta.bucket"]] = -1
    elif table == T_MIRROR_OWNER:
        state.mirror_owner[key["meta.version"], key["meta.mirror_bucket"]] = -1
    else:
        raise KeyError(table)


def apply_default(state: PipelineState, table: str, action: str, params: dict[str, int]) -> None:
    """Set a table's default action (for the owner tables only their drop action exists)."""
    if table == T_SPLIT_GROUP:
        state.primary_group = params["primary"]
        state.mirror_group = params["mirror"]
        state.epoch = params.get("epoch", 0)
    elif table == T_WINDOW_CLOCK:
        state.window_period_us = params["period"]
    elif table == T_FRAME_LOG:
        state.frame_log = action == A_LOG_FRAMES
    elif table == T_PORT_ROLE:
        role = {A_ROLE_TRAFFIC: ROLE_TRAFFIC, A_ROLE_FORWARD: ROLE_FORWARD,
                A_ROLE_DROP: ROLE_DROP}[action]
        state.default_role = (role, params.get("port", 0))
    elif table not in (T_BUCKET_OWNER, T_MIRROR_OWNER):
        raise KeyError(table)


def reset_default(state: PipelineState, table: str) -> None:
    """Back to the program's initial default action."""
    fresh = PipelineState()
    if table == T_SPLIT_GROUP:
        state.primary_group, state.mirror_group = fresh.primary_group, fresh.mirror_group
        state.epoch = fresh.epoch
    elif table == T_WINDOW_CLOCK:
        state.window_period_us = fresh.window_period_us
    elif table == T_FRAME_LOG:
        state.frame_log = fresh.frame_log
    elif table == T_PORT_ROLE:
        state.default_role = fresh.default_role


def set_clone_session(state: PipelineState, session_id: int, replicas: list[int],
                      packet_length_bytes: int) -> None:
    state.clone_sessions[session_id] = CloneSession(list(replicas), packet_length_bytes)


def remove_clone_session(state: PipelineState, session_id: int) -> None:
    state.clone_sessions.pop(session_id, None)
