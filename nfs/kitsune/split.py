"""Kitsune under the split simulator, feature by feature: each replica's feature
rows and KitNET scores merged by sequence number (Table II, the tests of exact
splitting), beside the NF-generic :func:`lego.experiments.split_sim.nf_split`."""

from __future__ import annotations

import numpy as np

from lego.experiments.split_sim import SplitConfig, split
from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET


def replica_features(batch: PacketBatch, semantics: str) -> np.ndarray:
    """Feature rows of a replica's primaries (a fresh extractor over its stream).

    The ``kitsune`` semantics has no notion of mirrors: mirror copies update its
    state as any packet does and their rows are dropped here."""
    rows = make_extractor(semantics).process(batch)
    if len(rows) == len(batch) and batch.mirror.any():
        rows = rows[batch.mirror == 0]
    return rows


def run_split(batch: PacketBatch, semantics: str, model: KitNET, config: SplitConfig | None,
              owners: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-packet (features, scores) merged over the replicas, and the mirrored
    fraction. ``config=None``: one instance."""
    if config is None:
        features = replica_features(batch, semantics)
        return features, model.execute(features), 0.0
    streams = split(batch, config, owners)
    features = np.empty((len(batch), model.n_features))
    scores = np.empty(len(batch))
    for idx, mirror in zip(streams.index, streams.mirror, strict=True):
        if len(idx) == 0:
            continue
        sub = batch.take(idx)
        sub.mirror[:] = mirror
        rows = replica_features(sub, semantics)
        primaries = idx[mirror == 0]  # merge by sequence number
        features[primaries] = rows
        scores[primaries] = model.execute(rows)
    return features, scores, streams.mirrored_fraction
