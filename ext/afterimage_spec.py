"""The ``kitsune`` feature semantics as a readable specification (pure Python).

This is the reference behaviour of Kitsune-py's AfterImage (DESIGN §7), written
down operation by operation so that the Cython kernel (:mod:`lego.ext.afterimage`)
can be checked against it bit for bit. It is slow (every insert into a stream
updates every pair of that stream), so it serves tests and baselines only.

Streams are keyed by *strings*, as in the reference: the text tshark prints for
an address (MAC ``aa:bb:cc:dd:ee:ff``, dotted IPv4, IPv6 as ``inet_ntop``
writes it) concatenated with a port string. Concatenation is ambiguous
(``"192.168.2.1" + "23" == "192.168.2.12" + "3"``) and the reference shares the
stream then; so does this specification.

The mirror flag of a batch is ignored: every packet is treated as a primary
packet and yields a row (the reference has no notion of mirrors).
"""

from __future__ import annotations

import math
import socket

import numpy as np

from lego.ext.batch import Family, PacketBatch, Proto
from lego.ext.features import LAMBDAS

N_FEATURES = 100
_NAN = math.nan


def mac_str(mac: int) -> str:
    """A 48-bit MAC as tshark prints it: lowercase, colon separated."""
    return ":".join(f"{(mac >> s) & 0xFF:02x}" for s in range(40, -8, -8))


def addr_str(family: int, addr: bytes) -> str:
    """The derived address as the reference's key text ('' for Family.NONE)."""
    if family == Family.IPV4:
        return socket.inet_ntop(socket.AF_INET, addr[:4])
    if family == Family.IPV6:
        return socket.inet_ntop(socket.AF_INET6, addr[:16])
    if family == Family.MAC:
        return mac_str(int.from_bytes(addr[:6], "big"))
    return ""


def port_str(proto: int, port: int) -> str:
    """The reference's protocol key: the decimal port, 'arp', 'icmp' or ''."""
    if proto in (Proto.TCP, Proto.UDP):
        return str(port)
    if proto == Proto.ARP:
        return "arp"
    if proto == Proto.ICMP:
        return "icmp"
    return ""


class Stream:
    """A damped window over one key and one lambda (the reference's incStat)."""

    __slots__ = ("ident", "lam", "jitter", "cf1", "cf2", "w", "last_t",
                 "cur_mean", "cur_var", "cur_std", "pairs")

    def __init__(self, ident: str, lam: float, t: float, jitter: bool = False) -> None:
        self.ident = ident
        self.lam = lam
        self.jitter = jitter
        self.cf1 = 0.0
        self.cf2 = 0.0
        self.w = 1e-20
        self.last_t = t
        self.cur_mean = self.cur_var = self.cur_std = _NAN  # NaN: not computed
        self.pairs: list[Pair] = []  # in registration order; a self-pair twice

    def decay(self, t: float) -> None:
        dt = t - self.last_t
        if dt > 0:
            f = math.pow(2, -self.lam * dt)
            self.cf1 *= f
            self.cf2 *= f
            self.w *= f
            self.last_t = t  # the mean/var/std cache is NOT reset here

    def insert(self, v: float, t: float) -> None:
        if self.jitter:
            dt = t - self.last_t
            v = dt if dt > 0 else 0.0
        self.decay(t)
        self.cf1 += v
        self.cf2 += math.pow(v, 2)
        self.w += 1
        self.cur_mean = self.cur_var = self.cur_std = _NAN
        for pair in self.pairs:
            pair.update(self, v, t)

    def mean(self) -> float:
        if math.isnan(self.cur_mean):
            self.cur_mean = self.cf1 / self.w
        return self.cur_mean

    def var(self) -> float:
        if math.isnan(self.cur_var):
            self.cur_var = abs(self.cf2 / self.w - math.pow(self.mean(), 2))
        return self.cur_var

    def std(self) -> float:
        if math.isnan(self.cur_std):
            self.cur_std = math.sqrt(self.var())
        return self.cur_std

    def allstats_1d(self) -> list[float]:
        """[w, mean, var]; refreshes the mean and var caches (not std)."""
        self.cur_mean = self.cf1 / self.w
        self.cur_var = abs(self.cf2 / self.w - math.pow(self.cur_mean, 2))
        return [self.w, self.cur_mean, self.cur_var]


class Pair:
    """The 2-D statistics of two streams (the reference's incStat_cov)."""

    __slots__ = ("s", "last_res", "cf3", "w3", "last_t3")

    def __init__(self, s0: Stream, s1: Stream, t: float) -> None:
        self.s = (s0, s1)
        self.last_res = [0.0, 0.0]
        self.cf3 = 0.0
        self.w3 = 1e-20
        self.last_t3 = t

    def update(self, stream: Stream, v: float, t: float) -> None:
        """``stream`` (one of the two) has just been inserted with v at t."""
        inc = 0 if stream is self.s[0] else 1
        self.s[1 - inc].decay(t)
        dt = t - self.last_t3
        if dt > 0:
            f = math.pow(2, -self.s[inc].lam * dt)
            self.cf3 *= f
            self.w3 *= f
            self.last_t3 = t
            self.last_res[inc] *= f
        res = v - self.s[inc].mean()
        self.cf3 += res * self.last_res[1 - inc]
        self.w3 += 1
        self.last_res[inc] = res

    def stats(self) -> list[float]:
        """[radius, magnitude, cov, pcc]; the radius squares the variances."""
        s0, s1 = self.s
        radius = math.sqrt(math.pow(s0.var(), 2) + math.pow(s1.var(), 2))
        magnitude = math.sqrt(math.pow(s0.mean(), 2) + math.pow(s1.mean(), 2))
        cov = self.cf3 / self.w3
        ss = s0.std() * s1.std()
        pcc = cov / ss if ss != 0 else 0.0
        return [radius, magnitude, cov, pcc]


class StatDB:
    """The streams of one database for one lambda, keyed by their ID string."""

    def __init__(self, lam: float, jitter: bool = False) -> None:
        self.lam = lam
        self.jitter = jitter
        self.streams: dict[str, Stream] = {}
        self.n_pairs = 0

    def stream(self, ident: str, t: float) -> Stream:
        s = self.streams.get(ident)
        if s is None:
            s = self.streams[ident] = Stream(ident, self.lam, t, self.jitter)
        return s

    def update_1d(self, ident: str, t: float, v: float) -> list[float]:
        s = self.stream(ident, t)
        s.insert(v, t)
        return s.allstats_1d()

    def pair(self, s1: Stream, ident2: str, t: float) -> Pair:
        """The first pair of s1 that holds the stream ident2, else a new one.
        (For ident2 == s1's own ID that is s1's first pair, whatever it is.)"""
        s2 = self.stream(ident2, t)
        for p in s1.pairs:
            if p.s[0] is s2 or p.s[1] is s2:
                return p
        p = Pair(s1, s2, t)
        s1.pairs.append(p)
        s2.pairs.append(p)
        self.n_pairs += 1
        return p

    def update_1d2d(self, id1: str, id2: str, t: float, v: float) -> list[float]:
        s1 = self.stream(id1, t)
        s1.insert(v, t)  # updates every existing pair of s1
        stats = s1.allstats_1d()
        p = self.pair(s1, id2, t)
        p.update(s1, v, t)  # so an existing pair is updated twice
        return stats + p.stats()


def feature_names() -> list[str]:
    names: list[str] = []
    one = ("weight", "mean", "variance")
    two = one + ("radius", "magnitude", "covariance", "pcc")
    for group, stats in (("MI_dir", one), ("HH", two), ("HH_jit", one), ("HpHp", two)):
        names += [f"{group}_L{lam:g}_{s}" for lam in LAMBDAS for s in stats]
    return names


class KitsuneSpecExtractor:
    """Extractor (see :mod:`lego.ext.features`) of the reference semantics."""

    semantics = "kitsune"
    n_features = N_FEATURES

    def __init__(self) -> None:
        self._mi = [StatDB(lam) for lam in LAMBDAS]
        self._h = [StatDB(lam) for lam in LAMBDAS]
        self._jit = [StatDB(lam, jitter=True) for lam in LAMBDAS]
        self._hphp = [StatDB(lam) for lam in LAMBDAS]
        self._packets = 0
        self._mirrors = 0

    def feature_names(self) -> list[str]:
        return feature_names()

    def packet(self, t: float, v: float, src_mac: str, dst_mac: str, src_ip: str,
               dst_ip: str, src_port: str, dst_port: str, arp: bool) -> list[float]:
        """One packet's 100 features from its key strings (the reference's
        netStat.updateGetStats)."""
        row: list[float] = []
        for db in self._mi:
            row += db.update_1d(src_mac + src_ip, t, v)
        for db in self._h:
            row += db.update_1d2d(src_ip, dst_ip, t, v)
        for db in self._jit:
            row += db.update_1d(src_ip + dst_ip, t, 0.0)
        a, b = (src_mac, dst_mac) if arp else (src_ip + src_port, dst_ip + dst_port)
        for db in self._hphp:
            row += db.update_1d2d(a, b, t, v)
        return row

    def process(self, batch: PacketBatch) -> np.ndarray:
        n = len(batch)
        out = np.empty((n, N_FEATURES), dtype=np.float64)
        for i in range(n):
            proto = int(batch.proto[i])
            out[i] = self.packet(
                float(batch.ts[i]), float(batch.frame_len[i]),
                mac_str(int(batch.eth_src[i])), mac_str(int(batch.eth_dst[i])),
                addr_str(int(batch.src_family[i]), batch.src_addr[i].tobytes()),
                addr_str(int(batch.dst_family[i]), batch.dst_addr[i].tobytes()),
                port_str(proto, int(batch.sport[i])), port_str(proto, int(batch.dport[i])),
                proto == Proto.ARP)
        self._packets += n
        self._mirrors += int(np.count_nonzero(batch.mirror))
        return out

    def counters(self) -> dict[str, int]:
        dbs = {"mi": self._mi, "h": self._h, "jit": self._jit, "hphp": self._hphp}
        out = {"packets": self._packets, "mirrors": self._mirrors}
        for name, per_lambda in dbs.items():
            out[f"keys_{name}"] = len(per_lambda[0].streams)
        for name in ("h", "hphp"):
            out[f"pairs_{name}"] = dbs[name][0].n_pairs
        return out
