"""LUCID's feature extraction: a capture -> (flow, window) fragments, value-exact to
LUCID's own parser (:mod:`lego.nfs.lucid.features_spec` is the specification; the
work is done by the Cython kernel :mod:`lego.nfs.lucid._lucid`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lego.errors import ConfigError, TraceError
from lego.nfs.lucid.features_spec import Fragments, normalise
from lego.nfs.lucid.wireshark import BASE_NAMES, kernel_tables

#: frames per kernel call (the reader's batch)
BATCH = 65536


def new_extractor(t: float, n: int):
    """A kernel extractor with the dissector tables loaded."""
    from lego.nfs.lucid._lucid import Extractor

    if not t > 0 or n < 1:
        raise ConfigError(f"lucid: expected a window t > 0 s and n >= 1 packets, got t={t}, "
                          f"n={n}")
    tables = kernel_tables()
    if tuple(tables["names"][:len(BASE_NAMES)]) != BASE_NAMES:
        raise RuntimeError("lego.nfs.lucid.wireshark: BASE_NAMES and the kernel disagree")
    return Extractor(t, n, tables["tcp_app"], tables["udp_to_app"], tables["udp_from_app"],
                     tables["app_kind"], tables["app_binary"], tables["app_highest"],
                     tables["app_mask"], tables["name_hash"])


def _frame_reader(trace: str | Path):
    from lego.ext.packets import open_trace

    reader = open_trace(trace)
    if not hasattr(reader, "raw_batches"):
        reader.close()
        raise TraceError(trace, "LUCID reads frames: expected a pcap or pcapng capture, "
                                "not tshark's fields")
    return reader


def extract(trace: str | Path, t: float, n: int) -> Fragments:
    """LUCID's fragments of a capture (pcap or pcapng), in LUCID's order."""
    ex = new_extractor(t, n)
    with _frame_reader(trace) as reader:
        for raw in reader.raw_batches(BATCH):
            ex.feed(raw.buffer, raw.offsets, raw.caplens, raw.ts, raw.linktypes)
    return fragments_of(ex, t)


@dataclass
class Capture:
    """A whole capture's frames in memory (the mapped file, absolute offsets) and
    times: what the split simulator hands each replica a share of."""

    buffer: np.ndarray
    offsets: np.ndarray
    caplens: np.ndarray
    ts: np.ndarray
    linktypes: np.ndarray
    reader: object = None  # the open reader whose mapped file ``buffer`` is

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def load_capture(trace: str | Path) -> Capture:
    """The capture's frames; ``close()`` it when done (``buffer`` maps the file)."""
    reader = _frame_reader(trace)
    parts = list(reader.raw_batches(BATCH))
    if not parts:
        reader.close()
        return Capture(np.zeros(0, np.uint8), *(np.zeros(0, d) for d in
                       (np.int64, np.uint32, np.float64, np.uint16)))
    return Capture(parts[0].buffer, *(np.concatenate([getattr(p, f) for p in parts])
                                      for f in ("offsets", "caplens", "ts", "linktypes")),
                   reader=reader)


def fragments_of(ex, t: float) -> Fragments:
    flow, window, first, npkts, raw, keys = ex.fragments()
    return Fragments(key_strings(keys[flow]), window, npkts, raw, normalise(raw, npkts, t),
                     first)


def key_strings(keys: np.ndarray) -> np.ndarray:
    """(F, 5) stored keys as LUCID writes them: dotted addresses, decimal numbers."""
    addr = {int(a): str(ipaddress.IPv4Address(int(a))) for a in np.unique(keys[:, [0, 2]])}
    out = np.empty(keys.shape, dtype=object)
    out[:, 0] = [addr[int(a)] for a in keys[:, 0]]
    out[:, 2] = [addr[int(a)] for a in keys[:, 2]]
    for c in (1, 3, 4):
        out[:, c] = keys[:, c].astype(str)
    return out.astype(str).reshape(-1, 5)
