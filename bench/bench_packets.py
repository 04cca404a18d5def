"""Packets in: pcap/pcapng/TSV -> PacketBatch, against per-packet Python parsers.

Baselines, measured in the same run on the same packets: scapy dissecting each
frame (``Ether(raw)``) and deriving the same fields, for the captures; Python's
``csv`` module plus per-field conversion (what Kitsune-py does per row) for the TSV.
The scapy baseline is timed on the first ``SCAPY_SAMPLE`` packets (it runs at a few
tens of thousands of packets/s), so its rate is per packet of the same trace.
"""

from __future__ import annotations

import csv
import ipaddress
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, Row, timed
from lego.ext.packets import open_trace, read_trace

SCAPY_SAMPLE = 2000
TARGET_PCAP_PPS = 1_000_000


def _read_all(path: Path) -> int:
    reader = open_trace(path)
    n = sum(len(b) for b in reader.batches())
    reader.close()
    return n


def _scapy_parse(frames: list[bytes]) -> int:
    """Per-packet scapy dissection deriving the PacketBatch fields (the baseline)."""
    from scapy.all import ARP, ICMP, IP, TCP, UDP, Ether, IPv6

    n = len(frames)
    sport = np.zeros(n, dtype=np.uint16)
    dport = np.zeros(n, dtype=np.uint16)
    src = [b""] * n
    dst = [b""] * n
    proto = np.zeros(n, dtype=np.uint8)
    for i, raw in enumerate(frames):
        pkt = Ether(raw)
        if IP in pkt:
            src[i], dst[i] = pkt[IP].src, pkt[IP].dst
        elif IPv6 in pkt:
            src[i], dst[i] = pkt[IPv6].src, pkt[IPv6].dst
        if TCP in pkt:
            sport[i], dport[i], proto[i] = pkt[TCP].sport, pkt[TCP].dport, 3
        elif UDP in pkt:
            sport[i], dport[i], proto[i] = pkt[UDP].sport, pkt[UDP].dport, 4
        elif ARP in pkt:
            src[i], dst[i], proto[i] = pkt[ARP].psrc, pkt[ARP].pdst, 1
        elif ICMP in pkt:
            proto[i] = 2
    return n


def _raw_frames(path: Path, limit: int) -> list[bytes]:
    from scapy.utils import RawPcapReader

    frames = []
    for raw, _meta in RawPcapReader(str(path)):
        frames.append(raw)
        if len(frames) >= limit:
            break
    return frames


def _csv_parse(path: Path) -> int:
    """Kitsune-py style: csv rows, then per-field conversion in Python."""
    n = 0
    addrs: list[tuple[bytes, bytes]] = []
    with open(path, newline="") as fh:
        rows = csv.reader(fh, delimiter="\t")
        next(rows)
        for row in rows:
            float(row[0])
            int(row[1])
            for mac in row[2:4]:
                if mac:
                    int(mac.replace(":", ""), 16)
            if row[4]:
                addrs.append((ipaddress.IPv4Address(row[4]).packed,
                              ipaddress.IPv4Address(row[5]).packed))
            elif row[17]:
                addrs.append((ipaddress.IPv6Address(row[17]).packed,
                              ipaddress.IPv6Address(row[18]).packed))
            ports = row[6] + row[8]
            if ports:
                int(row[6] or row[8])
                int(row[7] or row[9])
            n += 1
    return n


def _pcap_rows(name: str, path: Path, repeat: int) -> list[Row]:
    seconds, n = timed(_read_all, path, repeat=repeat)
    frames = _raw_frames(path, SCAPY_SAMPLE)
    base_s, base_n = timed(_scapy_parse, frames)
    return [Row(name=name, packets=n, seconds=seconds, baseline="scapy per packet",
                baseline_pps=base_n / base_s, target_pps=TARGET_PCAP_PPS)]


def run(quick: bool) -> list[Row]:
    from lego.topo.traffic_synth import generate, write_trace

    rows: list[Row] = []
    repeat = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        synth = Path(tmp) / "synth.pcap"
        write_trace(generate(seed=1, packets=20_000 if quick else 80_000), synth)
        rows += _pcap_rows("packets: pcap parse, synthetic trace", synth, repeat)
    mirai = SHARED_DATA / "kitsune_mirai_first2000.pcap"
    if mirai.is_file():
        rows += _pcap_rows("packets: pcap parse, Mirai 2000 (snap 200)", mirai, repeat * 4)
    pcapng = SHARED_DATA / "netspot_openflow.pcapng"
    if pcapng.is_file():
        seconds, n = timed(_read_all, pcapng, repeat=repeat * 4)
        frames = _raw_frames(pcapng, SCAPY_SAMPLE)
        base_s, base_n = timed(_scapy_parse, frames)
        rows.append(Row(name="packets: pcapng parse, openflow", packets=n, seconds=seconds,
                        baseline="scapy per packet", baseline_pps=base_n / base_s))
    tsv = SHARED_DATA / "kitsune_mirai_first38363.tsv"
    if tsv.is_file():
        seconds, batch = timed(read_trace, tsv, repeat=repeat)
        base_s, base_n = timed(_csv_parse, tsv)
        rows.append(Row(name="packets: TSV parse, Mirai 38363", packets=len(batch),
                        seconds=seconds, baseline="csv + Python per row",
                        baseline_pps=base_n / base_s))
    return rows
