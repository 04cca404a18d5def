"""LUCID's feature extraction: a capture -> (flow, window) fragments, value-exact to
LUCID's own parser (:mod:`lego.nfs.lucid.features_spec` is the specification; the
work is done by the Cython kernel :mod:`lego.nfs.lucid._lucid`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np

from lego.nfs.lucid.features_spec import Fragments, normalise
from lego.nfs.lucid.wireshark import BASE_NAMES, kernel_tables

#: frames per kernel call (the reader's batch)
BATCH = 65536


def new_extractor(t: float, n: int):
    """A kernel extractor with the dissector tables loaded."""
    from lego.nfs.lucid._lucid import Extractor

    tables = kernel_tables()
    if tuple(tables["names"][:len(BASE_NAMES)]) != BASE_NAMES:
        raise RuntimeError("lego.nfs.lucid.wireshark: BASE_NAMES and the kernel disagree")
    return Extractor(t, n, tables["tcp_app"], tables["udp_to_app"], tables["udp_from_app"],
                     tables["app_kind"], tables["app_binary"], tables["app_highest"],
                     tables["app_mask"], tables["name_hash"])


def extract(trace: str | Path, t: float, n: int) -> Fragments:
    """LUCID's fragments of a capture (pcap or pcapng), in LUCID's order."""
    from lego.ext.packets import open_trace

    ex = new_extractor(t, n)
    with open_trace(trace) as reader:
        if not hasattr(reader, "raw_batches"):
            raise ValueError(f"{trace}: LUCID reads frames: expected a pcap or pcapng capture")
        for raw in reader.raw_batches(BATCH):
            ex.feed(raw.buffer, raw.offsets, raw.caplens, raw.ts, raw.linktypes)
    return fragments_of(ex, t)


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
