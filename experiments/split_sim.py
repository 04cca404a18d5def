"""The split simulator: what K replicas of an NF see and answer, offline and exact.

The switch's decisions come from ``lego.switch.pipeline`` — the same code the
software target runs — applied to a whole trace: each packet goes to the owner of
its primary-group bucket and, under a mirror plan, is cloned to the owner of its
mirror-group bucket when that is another replica. Each replica then runs the
feature extractor over its own stream (primaries and mirrors, in switch order,
with the trace's timestamps) and the one trained KitNET model every replica
loads; the scores of the primaries are merged back by sequence number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET
from lego.switch.parser import records_from_batch
from lego.switch.pipeline import (
    GROUP_DSTIP,
    GROUP_NONE,
    GROUP_SOCKET,
    GROUP_SRCIP,
    GROUP_SRCIP_DSTIP,
    GROUP_SRCMAC_SRCIP,
    N_BUCKETS,
    Pipeline,
    PipelineState,
)

REPLICA_PORT0 = 1  # replica r sits behind switch port r + 1 (port 0 faces the traffic)


@dataclass(frozen=True)
class SplitConfig:
    """A way to split traffic: the primary group hashed and an optional mirror group."""

    name: str
    primary: int
    mirror: int = GROUP_NONE


GRANULARITIES = (
    SplitConfig("SrcMAC-SrcIP", GROUP_SRCMAC_SRCIP),
    SplitConfig("SrcIP", GROUP_SRCIP),
    SplitConfig("SrcIP-DstIP", GROUP_SRCIP_DSTIP),
    SplitConfig("Socket", GROUP_SOCKET),
)
MIRROR_PLAN = SplitConfig("SrcIP + DstIP mirror", GROUP_SRCIP, GROUP_DSTIP)


def round_robin_owners(k: int) -> np.ndarray:
    """bucket -> replica index, buckets dealt round robin."""
    return np.arange(N_BUCKETS) % k


@dataclass
class ReplicaStreams:
    """Which packets each replica receives: ``index[r]`` (into the trace, in order)
    and ``mirror[r]`` (1 where that packet is a mirror copy)."""

    index: list[np.ndarray]
    mirror: list[np.ndarray]

    @property
    def mirrored_fraction(self) -> float:
        n = sum(int((m == 0).sum()) for m in self.mirror)
        return sum(int(m.sum()) for m in self.mirror) / n if n else 0.0


def split(batch: PacketBatch, config: SplitConfig, owners: np.ndarray) -> ReplicaStreams:
    """Apply the dataplane to the trace: each replica's stream under ``config``."""
    k = int(owners.max()) + 1
    state = PipelineState(primary_group=config.primary, mirror_group=config.mirror)
    state.bucket_owner[:, :N_BUCKETS] = owners + REPLICA_PORT0
    state.mirror_owner[:, :N_BUCKETS] = owners + REPLICA_PORT0
    decisions = Pipeline(state).decide(records_from_batch(batch))
    index, mirror = [], []
    for r in range(k):
        port = r + REPLICA_PORT0
        primary = decisions.owner == port
        cloned = decisions.clone_owner == port
        idx = np.flatnonzero(primary | cloned)
        index.append(idx)
        mirror.append(cloned[idx].astype(np.uint8))
    return ReplicaStreams(index, mirror)


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
