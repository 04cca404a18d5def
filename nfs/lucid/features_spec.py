"""LUCID's feature extraction, offline: the pure-Python specification of
:func:`lego.nfs.lucid.features.extract` (LUCID's ``lucid_dataset_parser.py``: its
``process_pcap`` window rule, ``store_packet``, ``apply_labels`` relative time and
``normalize_and_padding`` with ``static_min_max``; DESIGN §7b).

- One global window clock: before each frame, IP or not, if no window is open or
  the frame's time exceeds start + t, the window restarts at that frame's time.
- A packet joins the stored entry of its forward key, else of its backward key, as
  long as that entry's fragment for the current window holds fewer than n packets;
  otherwise a new fragment opens under whichever key is stored (the forward key for
  a flow never seen); later packets of a full fragment are dropped.
- Each fragment's time column is made relative to its earliest packet; every column
  is scaled as ``1 - (max - x) / max`` by LUCID's nominal maxima; rows past the
  fragment's packets are zero.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from lego.nfs.lucid.dissect_spec import Dissector

N_FEATURES = 11
#: LUCID's nominal maxima (``static_min_max``), the time column's being the window t
MAXIMA = (None, 1 << 16, 1 << 32, 1 << 16, 1 << 12, 1 << 16, 1 << 32, 1 << 16, 1 << 16,
          1 << 16, 1 << 8)


def maxima(t: float) -> np.ndarray:
    return np.array((t,) + MAXIMA[1:], dtype=np.float64)


def normalise(raw: np.ndarray, npkts: np.ndarray, t: float) -> np.ndarray:
    """LUCID's scaling (in float64, as the reference computes it: not x / max), with
    the padding rows left zero."""
    top = maxima(t)
    x = 1.0 - ((1.0 - 0.0) * (top - raw)) / (top - 0.0)
    x[np.arange(raw.shape[1])[None, :] >= npkts[:, None]] = 0.0
    return x


@dataclass
class Fragments:
    """One row per (flow, window) fragment, in LUCID's order."""

    key: np.ndarray  # (F, 5) str: src IP, src port, dst IP, dst port, proto
    window: np.ndarray  # (F,) float64: the window's start
    npkts: np.ndarray  # (F,) int64
    raw: np.ndarray  # (F, n, 11) float64, relative time
    X: np.ndarray  # (F, n, 11) float64: the CNN's input
    first_seen: np.ndarray  # (F,) int64: frame index of the fragment's first packet


def extract_spec(frames, ts, t: float, n: int, linktype: int = 1) -> Fragments:
    """LUCID's fragments of a capture (``frames``: bytes per frame, ``ts``: times)."""
    dissect = Dissector()
    flows: dict[tuple, dict[float, list]] = {}
    start = None
    for i, (frame, when) in enumerate(zip(frames, ts, strict=True)):
        when = float(when)
        if start is None or when > start + t:
            start = when
        p = dissect.packet(frame, linktype)
        if p is not None:
            _store(flows, p, p.features(when), start, n, i)
    return _fragments(flows, t, n)


def _store(flows: dict, p, row: list, window: float, n: int, index: int) -> None:
    fwd = (p.src, p.sport, p.dst, p.dport, p.proto)
    bwd = (p.dst, p.dport, p.src, p.sport, p.proto)
    for key in (fwd, bwd):
        frag = flows.get(key, {}).get(window)
        if frag is not None and len(frag) - 1 < n:
            frag.append(row)
            return
    if fwd not in flows and bwd not in flows:
        flows[fwd] = {window: [index, row]}
    elif fwd in flows and window not in flows[fwd]:
        flows[fwd][window] = [index, row]
    elif bwd in flows and window not in flows[bwd]:
        flows[bwd][window] = [index, row]


def _fragments(flows: dict, t: float, n: int) -> Fragments:
    keys, windows, counts, raws, firsts = [], [], [], [], []
    for (src, sport, dst, dport, proto), by_window in flows.items():
        for window, (first, *rows) in by_window.items():
            block = np.zeros((n, N_FEATURES))
            block[:len(rows)] = rows
            block[:len(rows), 0] -= np.amin(block[:len(rows), 0])
            keys.append((str(ipaddress.IPv4Address(src)), str(sport),
                         str(ipaddress.IPv4Address(dst)), str(dport), str(proto)))
            windows.append(window)
            counts.append(len(rows))
            raws.append(block)
            firsts.append(first)
    raw = np.array(raws).reshape(-1, n, N_FEATURES)
    npkts = np.array(counts, dtype=np.int64)
    return Fragments(np.array(keys, dtype=str).reshape(-1, 5), np.array(windows),
                     npkts, raw, normalise(raw, npkts, t), np.array(firsts, dtype=np.int64))
