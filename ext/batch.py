"""PacketBatch: the struct-of-arrays that flows between every stage of an NF.

A batch holds n packets as parallel numpy arrays, never one Python object per
packet. Fields are the ones the NF derives from a frame (DESIGN §7):

- ``ts`` float64: capture time in seconds (for pcap: the nearest double to the
  decimal ``sec.usec``, i.e. what ``float("sec.usec")`` gives, as tshark prints it).
- ``frame_len`` uint32: original frame length on the wire (pcap ``orig_len``).
- ``eth_src``, ``eth_dst`` uint64: the Ethernet MACs as 48-bit big-endian integers.
- ``proto`` uint8 (:class:`Proto`): what decides the per-packet "protocol" key.
- ``src_family``, ``dst_family`` uint8 (:class:`Family`) and ``src_addr``,
  ``dst_addr`` uint8[n, 16]: the *derived* addresses: IPv4 (first 4 bytes), else
  IPv6, ARP sender/target protocol address (IPv4), else the MACs (first 6
  bytes) for frames without IP. Unused bytes are zero.
- ``sport``, ``dport`` uint16: TCP/UDP ports (first occurrence, as tshark reports
  them, so an ICMP error quoting a UDP header carries the quoted ports); 0 when
  ``proto`` is not TCP or UDP.
- ``mirror`` uint8: 1 for a packet the switch cloned to the owner of its
  destination (updates pair state only, yields no feature vector); 0 otherwise.
- ``seq`` uint64: the switch sequence number (the packet index for offline input).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np


class Proto(IntEnum):
    """How a frame's protocol key is derived (Kitsune's ``srcproto`` rule)."""

    L2 = 0  # no IP and no ARP: the addresses are the MACs, no protocol key
    ARP = 1  # key 'arp'; addresses are ARP sender/target protocol addresses
    ICMP = 2  # ICMPv4 without quoted ports; key 'icmp'
    TCP = 3  # ports from a TCP header
    UDP = 4  # ports from a UDP header
    IP = 5  # IP without ports and not ICMPv4 (ICMPv6, IGMP, ...): empty key


class Family(IntEnum):
    """Which kind of address ``src_addr``/``dst_addr`` hold."""

    NONE = 0  # empty (e.g. ARP over a non-IPv4 protocol)
    MAC = 1
    IPV4 = 4
    IPV6 = 6


ADDR_BYTES = 16

FIELD_DTYPES = {  # every PacketBatch field and its dtype
    "ts": np.float64,
    "frame_len": np.uint32,
    "eth_src": np.uint64,
    "eth_dst": np.uint64,
    "proto": np.uint8,
    "src_family": np.uint8,
    "dst_family": np.uint8,
    "src_addr": np.uint8,
    "dst_addr": np.uint8,
    "sport": np.uint16,
    "dport": np.uint16,
    "mirror": np.uint8,
    "seq": np.uint64,
}


@dataclass
class PacketBatch:
    ts: np.ndarray
    frame_len: np.ndarray
    eth_src: np.ndarray
    eth_dst: np.ndarray
    proto: np.ndarray
    src_family: np.ndarray
    dst_family: np.ndarray
    src_addr: np.ndarray
    dst_addr: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    mirror: np.ndarray
    seq: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for f in fields(self):
            arr = getattr(self, f.name)
            want = FIELD_DTYPES[f.name]
            if not isinstance(arr, np.ndarray) or arr.dtype != want:
                raise TypeError(f"PacketBatch.{f.name}: expected numpy {np.dtype(want)}, "
                                f"got {getattr(arr, 'dtype', type(arr).__name__)}")
            shape = (n, ADDR_BYTES) if f.name.endswith("_addr") else (n,)
            if arr.shape != shape:
                raise ValueError(f"PacketBatch.{f.name}: expected shape {shape}, got {arr.shape}")
            if not arr.flags.c_contiguous:
                setattr(self, f.name, np.ascontiguousarray(arr))

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls, n: int) -> PacketBatch:
        """A zeroed batch of n packets (seq = 0..n-1), for readers to fill in."""
        arrays = {}
        for name, dtype in FIELD_DTYPES.items():
            shape = (n, ADDR_BYTES) if name.endswith("_addr") else (n,)
            arrays[name] = np.zeros(shape, dtype=dtype)
        arrays["seq"] = np.arange(n, dtype=np.uint64)
        return cls(**arrays)

    def take(self, index) -> PacketBatch:
        """A new batch of copies of the selected rows (slice, boolean mask or index
        array): writing to it never changes this batch."""
        return PacketBatch(**{f.name: np.array(getattr(self, f.name)[index], order="C")
                              for f in fields(self)})

    @classmethod
    def concat(cls, batches: list[PacketBatch]) -> PacketBatch:
        if not batches:
            return cls.empty(0)
        return cls(**{f.name: np.concatenate([getattr(b, f.name) for b in batches])
                      for f in fields(cls)})

    def split(self, size: int):
        """Yield consecutive sub-batches of at most ``size`` packets."""
        for start in range(0, len(self), size):
            yield self.take(slice(start, start + size))
