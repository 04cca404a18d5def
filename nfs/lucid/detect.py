"""LUCID's samples and detection: labelled fragments of a capture, the CNN trained on
them, and its figures (accuracy, F1, TPR, FPR) on another capture.

Labels come, as the capture allows, from one 0/1 label per frame (the generated
traces' ``.labels.csv``: a fragment is labelled by its first packet, and a generated
flow's packets share one label) or, as LUCID labels, from attacker/victim address
pairs (a fragment is malicious when its flow's addresses are such a pair, either
order); a capture with neither is benign.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lego.errors import ConfigError
from lego.nfs.lucid.features import extract
from lego.nfs.lucid.features_spec import Fragments


def labels_for(frags: Fragments, packet_labels: np.ndarray | None = None,
               pairs: Sequence[tuple[str, str]] = ()) -> np.ndarray:
    """0/1 per fragment (see the module's docstring)."""
    if packet_labels is not None:
        if len(frags.first_seen) and frags.first_seen.max() >= len(packet_labels):
            raise ConfigError(f"labels: {len(packet_labels)} labels for a capture with more "
                              f"frames (a fragment starts at frame {frags.first_seen.max()})")
        return packet_labels[frags.first_seen].astype(np.int64)
    if not pairs:
        return np.zeros(len(frags.window), dtype=np.int64)
    wanted = {p for a, v in pairs for p in ((a, v), (v, a))}
    return np.array([(s, d) in wanted for s, d in frags.key[:, [0, 2]]], dtype=np.int64)


def parse_pairs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """``ATTACKER:VICTIM`` strings -> address pairs."""
    pairs = []
    for text in texts:
        a, sep, v = text.partition(":")
        try:
            pairs.append((str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(v))))
        except ValueError:
            raise ConfigError(f"--pair: expected ATTACKER:VICTIM (two IPv4 addresses), got "
                              f"{text!r}") from None
    return pairs


def samples(trace: str | Path, t: float, n: int, labels: str | Path | None = None,
            pairs: Sequence[tuple[str, str]] = ()) -> tuple[Fragments, np.ndarray]:
    """A capture's fragments and their labels."""
    from lego.metrics import load_labels

    frags = extract(trace, t, n)
    packet_labels = load_labels(labels) if labels else None
    return frags, labels_for(frags, packet_labels, pairs)
