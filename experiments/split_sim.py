"""The split simulator: what K replicas of an NF see and answer, offline and exact.

The switch's decisions come from ``lego.switch.pipeline`` — the same code the
software target runs — applied to a whole trace: each packet goes to the owner of
its primary-group bucket and, under a mirror plan, is cloned to the owner of its
mirror-group bucket when that is another replica. Each replica then runs an
offline instance of the NF over its own stream (primaries and mirrors, in switch
order, with the trace's timestamps; :attr:`lego.nfs.NetworkFunction.instance`),
every replica with the one prepared model; the scores of the primaries are
merged back by sequence number (:func:`nf_split`). An NF's own package may look
deeper (Kitsune's features: :mod:`lego.nfs.kitsune.split`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lego.control.granularity import SplitPlan, Verdict
from lego.control.switch_state import GROUP_IDS
from lego.ext.batch import PacketBatch
from lego.nfs import Instance
from lego.p4src.contract import (
    GROUP_DSTIP,
    GROUP_NONE,
    GROUP_SOCKET,
    GROUP_SOCKET_SYM,
    GROUP_SRCIP,
    GROUP_SRCIP_DSTIP,
    GROUP_SRCIP_DSTIP_SYM,
    GROUP_SRCMAC_SRCIP,
    N_BUCKETS,
)
from lego.switch.parser import records_from_batch
from lego.switch.pipeline import Pipeline, PipelineState

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
#: the symmetric groups (both directions of a flow in one bucket)
SYMMETRIC = (
    SplitConfig("SrcIP-DstIP (sym)", GROUP_SRCIP_DSTIP_SYM),
    SplitConfig("Socket (sym)", GROUP_SOCKET_SYM),
)


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


def nf_split(batch: PacketBatch, new_instance: Callable[[], Instance],
             config: SplitConfig | None, owners: np.ndarray | None = None
             ) -> tuple[np.ndarray, float]:
    """Per-packet scores merged by sequence number over K replicas of any NF (each a
    fresh ``new_instance()`` over its own stream, mirrors marked), and the mirrored
    fraction. ``config=None``: one instance. A packet no replica scored is NaN."""
    scores = np.full(len(batch), np.nan)
    if config is None:
        one = batch.take(np.arange(len(batch)))
        one.seq[:] = np.arange(len(batch))
        seq, score = new_instance().process(one)
        scores[seq.astype(np.int64)] = score
        return scores, 0.0
    streams = split(batch, config, owners)
    for idx, mirror in zip(streams.index, streams.mirror, strict=True):
        if len(idx) == 0:
            continue
        sub = batch.take(idx)
        sub.mirror[:] = mirror
        sub.seq[:] = idx  # the switch's sequence number: the packet's index
        seq, score = new_instance().process(sub)
        scores[seq.astype(np.int64)] = score
    return scores, streams.mirrored_fraction


def plan_config(plan: SplitPlan) -> SplitConfig | None:
    """What the switch installs for Algorithm 1's plan (None: no exact split). A
    symmetric group maps to its simulated id (:data:`SYMMETRIC`)."""
    if plan.verdict is Verdict.NO_EXACT_SPLIT:
        return None
    primary = GROUP_IDS[plan.primary]
    mirror = GROUP_IDS[plan.mirror] if plan.mirror is not None else GROUP_NONE
    return SplitConfig(f"Algorithm 1: {plan.describe()}", primary, mirror)
