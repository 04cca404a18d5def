"""The ``lego`` feature semantics, as a small pure-Python specification.

This is the definition; ``_legostats.pyx`` implements the same operations in the
same order, so the two agree bit for bit. DESIGN §7 gives the why; here is the what.

Per packet and per lambda in ``LAMBDAS`` (5, 3, 1, 0.1, 0.01), 115 features,
group-major, then lambda, then statistic:

====== ============================ =========================== =================
group  key (typed tuple)            value                       statistics
====== ============================ =========================== =================
MI     (srcMAC, src address)        frame length                w, mean, var
H      src address                  frame length                w, mean, var
channel src address -> dst address  frame length                w, mean, var,
                                    (2-D with dst -> src)       radius, magnitude,
                                                                cov, pcc
jitter src address -> dst address   inter-arrival time          w, mean, var
socket src endpoint -> dst endpoint frame length                as channel
                                    (2-D with the reverse)
====== ============================ =========================== =================

Keys are tuples of fixed-size fields, never concatenated strings:

- address = ``(family, 16 bytes)`` (the batch's derived address: IPv4, IPv6, ARP
  sender/target protocol address, else the MAC; DESIGN §7);
- endpoint = ``(proto, address, port)``, where ``port`` is the TCP/UDP port (0 for
  other protocols), except for ARP, where it is the Ethernet MAC of that side: an
  ARP endpoint is ``(arp, sender IP, source MAC)`` -> ``(arp, target IP, dest MAC)``.
  TCP and UDP endpoints differ by ``proto``.

Every key holds the addresses that decide its owner (MI, H, jitter: the source;
channel, socket: both), which is what makes a split by address ownership exact.

1-D stream (CF1, CF2, w, lastT; w starts at 1e-20, lastT at creation time):
``insert(v, t)`` decays by ``2 ** (-lambda * dt)`` when ``dt = t - lastT > 0``
(then ``lastT = t``) and adds ``v, v*v, 1``. Outputs w, ``mean = CF1/w`` and
``var = |CF2/w - mean*mean|``. Jitter's value is ``t - lastT`` of its stream
before the insert when positive, else 0 (so 0 for the first packet).

2-D pair, one per *unordered* pair of directed streams ``{a->b, b->a}`` (the
pair's key is the two ends in ascending tuple order): CF3, w3 (1e-20), lastT3
(creation time) and the last residual of each side, per lambda. An insert into
side ``a``: insert into a's 1-D stream; decay CF3, w3 to ``t``; ``res = v -
mean_a``; ``CF3 += res * lastRes[b]``; ``w3 += 1``; ``lastRes[a] = res``. Side
``b`` is neither decayed nor touched and no other pair is updated: constant cost
per packet. Outputs for side ``a`` (own direction first):

- ``radius = sqrt(var_a**2 + var_b**2)``: Kitsune's form, a root of *squared
  variances* (not of variances), kept on purpose for comparability;
- ``magnitude = sqrt(mean_a**2 + mean_b**2)``; ``cov = CF3 / w3``;
- ``pcc = cov / (sqrt(var_a) * sqrt(var_b))``, or 0 when that product is 0.

Choices where the paper leaves room:

- A reverse stream that has seen no packet yet counts as empty: mean 0, var 0
  (so radius = var_a, magnitude = |mean_a|, pcc = 0); its last residual is 0.
- A self-pair (source end == destination end, e.g. a host talking to itself) is
  its own reverse: ``b = a``. Its radius is ``sqrt(2 var_a**2)``, its magnitude
  ``sqrt(2 mean_a**2)``, and ``CF3 += res * (previous res)``: cov is the lag-1
  autocovariance of the residuals, pcc = cov / var_a.
- Mirror packets (``batch.mirror == 1``) update only the channel and socket
  streams and pairs and yield no row.
- Idle eviction (``evict_idle`` seconds, off by default): a key whose last
  update (lastT of a stream; lastT3 of a pair) is more than ``evict_idle``
  seconds before the packet that looks it up starts afresh, as if new. The
  compiled kernel also frees such keys in the background; that is invisible when
  timestamps do not decrease (switch ingress time), so splits stay exact, and a
  replica that runs held packets late (a state move) pauses it (``pause_sweep``).

State moves (west-east, between replicas; protocol in ``lego.control.state_move``):

- The owner bucket of an address is the switch's: ``crc32([family][16 address
  bytes]) % OWNER_BUCKETS``. An MI, H or jitter entry is owned by its source
  address, a channel or socket pair by both ends (it is replicated, identically,
  at the owner of each end).
- ``export_state(buckets, exclude)``: every entry with an owner bucket in
  ``buckets`` and none in ``exclude``, raw: its key as the kernel's uint64 words
  (below) and its values in ``STATE_LAYOUT`` order, sorted by key. A stream is
  ``[lastT, (CF1, CF2, w) per lambda]``; a pair is ``[side 0 stream, side 1
  stream, lastT3, (CF3, w3, res0, res1) per lambda]`` with flags bit s set when
  side s exists (an absent side's words are 0).
- ``import_state(blob)``: absent entries are inserted; a present one must be
  bitwise identical (a replicated pair), and is skipped; any difference raises
  and imports nothing. ``drop_state(keep)``: forget the entries none of whose
  owner buckets is in ``keep``.
- Key words (their lexicographic order is the tuple order): address = ``[family,
  addr[0:8], addr[8:16]]`` (big-endian), MI = ``[srcMAC << 8 | family, hi, lo]``,
  endpoint = ``[proto << 8 | family, hi, lo, port]``; jitter, channel and socket
  keys are their two parts' words in key order.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from lego.ext.batch import PacketBatch, Proto

LAMBDAS = (5.0, 3.0, 1.0, 0.1, 0.01)
W_INIT = 1e-20
GROUPS = (("MI", 3), ("H", 3), ("channel", 7), ("jitter", 3), ("socket", 7))
STATS_1D = ("w", "mean", "var")
STATS_2D = ("w", "mean", "var", "radius", "magnitude", "cov", "pcc")
N_FEATURES = sum(len(LAMBDAS) * k for _, k in GROUPS)  # 115
OWNER_BUCKETS = 1024  # the switch's N_BUCKETS
STATE_LAYOUT = {"MI": (3, 16), "H": (3, 16), "channel": (6, 53), "jitter": (6, 16),
                "socket": (8, 53)}  # table: (key words, value words), in GROUPS order


def feature_names() -> list[str]:
    """``<group>_L<lambda>_<stat>``, in column order (group, lambda, stat)."""
    names = []
    for group, k in GROUPS:
        stats = STATS_2D if k == 7 else STATS_1D
        for lam in LAMBDAS:
            names += [f"{group}_L{lam:g}_{s}" for s in stats]
    return names


class Stream:
    """Damped 1-D statistics of one directed stream, for every lambda."""

    def __init__(self, t: float) -> None:
        self.last_t = t
        self.cf1 = [0.0] * len(LAMBDAS)
        self.cf2 = [0.0] * len(LAMBDAS)
        self.w = [W_INIT] * len(LAMBDAS)

    def insert(self, v: float, t: float) -> None:
        dt = t - self.last_t
        if dt > 0:
            for i, lam in enumerate(LAMBDAS):
                f = math.pow(2.0, -lam * dt)
                self.cf1[i] *= f
                self.cf2[i] *= f
                self.w[i] *= f
            self.last_t = t
        for i in range(len(LAMBDAS)):
            self.cf1[i] += v
            self.cf2[i] += v * v
            self.w[i] += 1.0

    def mean(self, i: int) -> float:
        return self.cf1[i] / self.w[i]

    def var(self, i: int) -> float:
        mean = self.cf1[i] / self.w[i]
        return abs(self.cf2[i] / self.w[i] - mean * mean)

    def stats(self) -> list[float]:
        out = []
        for i in range(len(LAMBDAS)):
            out += [self.w[i], self.mean(i), self.var(i)]
        return out

    def values(self) -> list[float]:
        return [self.last_t] + [x for i in range(len(LAMBDAS))
                                for x in (self.cf1[i], self.cf2[i], self.w[i])]

    @classmethod
    def from_values(cls, v) -> Stream:
        s = cls(float(v[0]))
        s.cf1, s.cf2, s.w = ([float(x) for x in v[1 + j::3]] for j in range(3))
        return s


class Pair:
    """The directed streams lo->hi (side 0) and hi->lo (side 1) and their
    covariance. A self-pair has only side 0, which is its own reverse."""

    def __init__(self, t: float) -> None:
        self.sides: list[Stream | None] = [None, None]
        self.last_t = t
        self.cf3 = [0.0] * len(LAMBDAS)
        self.w3 = [W_INIT] * len(LAMBDAS)
        self.res = [[0.0] * len(LAMBDAS), [0.0] * len(LAMBDAS)]

    def insert(self, a: int, b: int, v: float, t: float) -> None:
        """Insert v into side a, whose reverse is side b (b == a: self-pair)."""
        if self.sides[a] is None:
            self.sides[a] = Stream(t)
        sa = self.sides[a]
        sa.insert(v, t)
        dt = t - self.last_t
        if dt > 0:
            for i, lam in enumerate(LAMBDAS):
                f = math.pow(2.0, -lam * dt)
                self.cf3[i] *= f
                self.w3[i] *= f
            self.last_t = t
        for i in range(len(LAMBDAS)):
            r = v - sa.mean(i)
            self.cf3[i] += r * self.res[b][i]
            self.w3[i] += 1.0
            self.res[a][i] = r

    def values(self) -> list[float]:
        out = []
        for side in self.sides:
            out += side.values() if side is not None else [0.0] * (1 + 3 * len(LAMBDAS))
        out.append(self.last_t)
        for i in range(len(LAMBDAS)):
            out += [self.cf3[i], self.w3[i], self.res[0][i], self.res[1][i]]
        return out

    def flags(self) -> int:
        return sum(1 << s for s, side in enumerate(self.sides) if side is not None)

    @classmethod
    def from_values(cls, v, flags: int) -> Pair:
        p = cls(float(v[32]))
        p.sides = [Stream.from_values(v[16 * s:16 * s + 16]) if flags & (1 << s) else None
                   for s in range(2)]
        p.cf3, p.w3, p.res[0], p.res[1] = ([float(x) for x in v[33 + j::4]] for j in range(4))
        return p

    def stats(self, a: int, b: int) -> list[float]:
        sa, sb = self.sides[a], self.sides[b]
        out = []
        for i in range(len(LAMBDAS)):
            mean_a, var_a = sa.mean(i), sa.var(i)
            mean_b, var_b = (sb.mean(i), sb.var(i)) if sb is not None else (0.0, 0.0)
            cov = self.cf3[i] / self.w3[i]
            prod = math.sqrt(var_a) * math.sqrt(var_b)
            out += [sa.w[i], mean_a, var_a,
                    math.sqrt(var_a * var_a + var_b * var_b),
                    math.sqrt(mean_a * mean_a + mean_b * mean_b),
                    cov, cov / prod if prod != 0 else 0.0]
        return out


def address_bucket(addr: tuple[int, bytes]) -> int:
    """The owner bucket of an address ``(family, 16 bytes)``, as the switch hashes it."""
    return zlib.crc32(bytes((addr[0],)) + addr[1]) % OWNER_BUCKETS


def _words(part) -> list[int]:
    """Key words of an address (family, bytes) or an endpoint (proto, address, port)."""
    if len(part) == 3:
        proto, (fam, raw), port = part
        return [proto << 8 | fam, *_words((0, raw))[1:], port]
    fam, raw = part
    return [fam, int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")]


def _addr(w) -> tuple[int, bytes]:
    return int(w[0]) & 0xFF, int(w[1]).to_bytes(8, "big") + int(w[2]).to_bytes(8, "big")


def key_words(group: str, key) -> list[int]:
    if group == "MI":
        w = _words(key[1])
        return [key[0] << 8 | w[0]] + w[1:]
    return _words(key) if group == "H" else _words(key[0]) + _words(key[1])


def key_tuple(group: str, w) -> tuple:
    if group == "MI":
        return int(w[0]) >> 8, _addr(w)
    if group == "H":
        return _addr(w)
    if group == "socket":
        return tuple((int(e[0]) >> 8, _addr(e), int(e[3])) for e in (w[:4], w[4:]))
    return _addr(w[:3]), _addr(w[3:])


def owners(group: str, key) -> list[tuple[int, bytes]]:
    """The addresses whose buckets own an entry: the source, or both ends of a pair."""
    if group == "MI":
        return [key[1]]
    if group == "H":
        return [key]
    if group == "jitter":
        return [key[0]]
    return [key[0][1], key[1][1]] if group == "socket" else [key[0], key[1]]


class LegoSpecExtractor:
    """The ``lego`` semantics in plain Python (slow; the reference for tests)."""

    semantics = "lego"
    n_features = N_FEATURES

    def __init__(self, evict_idle: float | None = None, sweep_budget: int = 2,
                 hash_seed: int | None = None) -> None:
        # sweep_budget and hash_seed shape the compiled tables' memory only; they
        # are accepted so both extractors take the same options.
        self.evict_idle = evict_idle
        self.tables: dict[str, dict] = {g: {} for g, _ in GROUPS}
        self._counts = {"packets": 0, "mirrors": 0, "rows": 0, "keys_evicted": 0,
                        "state_exported": 0, "state_imported": 0, "state_skipped": 0,
                        "state_dropped": 0, "state_conflicts": 0}

    def feature_names(self) -> list[str]:
        return feature_names()

    def counters(self) -> dict[str, int]:
        c = dict(self._counts)
        c["keys_live"] = sum(len(t) for t in self.tables.values())
        return c

    def _get(self, group: str, key: tuple, t: float, new):
        """The entry for key; new(t) when absent or idle for over evict_idle."""
        table = self.tables[group]
        entry = table.get(key)
        if entry is not None and self.evict_idle is not None \
                and t - entry.last_t > self.evict_idle:
            entry = None
            self._counts["keys_evicted"] += 1
        if entry is None:
            entry = table[key] = new(t)
        return entry

    def _pair(self, group: str, src: tuple, dst: tuple, v: float, t: float) -> list[float]:
        a = 0 if src <= dst else 1
        b = a if src == dst else 1 - a
        pair = self._get(group, (src, dst) if a == 0 else (dst, src), t, Pair)
        pair.insert(a, b, v, t)
        return pair.stats(a, b)

    def process(self, batch: PacketBatch) -> np.ndarray:
        rows = []
        for i in range(len(batch)):
            t = float(batch.ts[i])
            v = float(batch.frame_len[i])
            proto = int(batch.proto[i])
            src = (int(batch.src_family[i]), batch.src_addr[i].tobytes())
            dst = (int(batch.dst_family[i]), batch.dst_addr[i].tobytes())
            if proto == Proto.ARP:
                sport, dport = int(batch.eth_src[i]), int(batch.eth_dst[i])
            else:
                sport, dport = int(batch.sport[i]), int(batch.dport[i])
            self._counts["packets"] += 1
            channel = self._pair("channel", src, dst, v, t)
            socket = self._pair("socket", (proto, src, sport), (proto, dst, dport), v, t)
            if batch.mirror[i]:
                self._counts["mirrors"] += 1
                continue
            mi = self._get("MI", (int(batch.eth_src[i]), src), t, Stream)
            mi.insert(v, t)
            h = self._get("H", src, t, Stream)
            h.insert(v, t)
            jit = self._get("jitter", (src, dst), t, Stream)
            gap = t - jit.last_t
            jit.insert(gap if gap > 0 else 0.0, t)
            rows.append(mi.stats() + h.stats() + channel + jit.stats() + socket)
        self._counts["rows"] += len(rows)
        return np.array(rows, dtype=np.float64).reshape(len(rows), N_FEATURES)

    # ------------------------------------------------------------ state moves ----

    def _owned(self, group: str, key, mask: np.ndarray) -> bool:
        return any(mask[address_bucket(a)] for a in owners(group, key))

    def export_state(self, buckets, exclude=()):
        """The entries with an owner bucket in ``buckets`` and none in ``exclude``."""
        from lego.ext.legostats import StateBlob, bucket_mask

        sel, exc = bucket_mask(buckets), bucket_mask(exclude)
        tables = {}
        for group, (kw, vw) in STATE_LAYOUT.items():
            rows = [(key_words(group, k), e.values(), e.flags() if group in ("channel", "socket")
                     else 0) for k, e in self.tables[group].items()
                    if self._owned(group, k, sel) and not self._owned(group, k, exc)]
            tables[group] = (np.array([r[0] for r in rows], dtype=np.uint64).reshape(-1, kw),
                             np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, vw),
                             np.array([r[2] for r in rows], dtype=np.uint8))
        blob = StateBlob.build(sel, self.evict_idle or 0.0, tables)
        self._counts["state_exported"] += blob.n_entries
        return blob

    def import_state(self, blob):
        """Insert absent entries; skip identical ones; raise (importing nothing) if
        one differs. Returns (imported, skipped)."""
        from lego.ext.legostats import ImportResult, StateConflictError, check_blob

        check_blob(blob, self.evict_idle)
        new, skipped, conflicts = [], 0, []
        for group, (keys, vals, flags) in blob.tables.items():
            for w, v, f in zip(keys, vals, flags, strict=True):
                key = key_tuple(group, w)
                entry = self.tables[group].get(key)
                if entry is None:
                    new.append((group, key, v, int(f)))
                elif (group in ("channel", "socket") and entry.flags() != f) or not np.array_equal(
                        np.array(entry.values()).view(np.uint64), v.view(np.uint64)):
                    conflicts.append((group, [int(x) for x in w]))
                else:
                    skipped += 1
        if conflicts:
            self._counts["state_conflicts"] += len(conflicts)
            group, w = conflicts[0]
            raise StateConflictError(f"import_state: {len(conflicts)} entries differ from this "
                                     f"replica's (first: table {group}, key {w}); nothing "
                                     "imported")
        for group, key, v, f in new:
            self.tables[group][key] = (Pair.from_values(v, f) if group in ("channel", "socket")
                                       else Stream.from_values(v))
        self._counts["state_imported"] += len(new)
        self._counts["state_skipped"] += skipped
        return ImportResult(len(new), skipped)

    def pause_sweep(self, paused: bool = True) -> None:
        """No background freeing here: nothing to pause."""

    def drop_state(self, keep_buckets) -> int:
        """Forget the entries none of whose owner buckets is in ``keep_buckets``."""
        from lego.ext.legostats import bucket_mask

        keep = bucket_mask(keep_buckets)
        dropped = 0
        for group, table in self.tables.items():
            for key in [k for k in table if not self._owned(group, k, keep)]:
                del table[key]
                dropped += 1
        self._counts["state_dropped"] += dropped
        return dropped
