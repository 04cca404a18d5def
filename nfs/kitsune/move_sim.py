"""The state-move protocol (:mod:`lego.control.state_move`) run offline over a
trace with Kitsune's ``lego``-semantics extractor replicas: every packet's features
under a schedule of bucket moves, against one instance's (``tests/test_state_move``).

Each replica runs the feature extractor over its own stream (the switch's
decisions, :mod:`lego.switch.pipeline`, under the SrcIP + DstIP mirror plan), and
the moves follow the protocol step by step: the sources export at M and drop,
the destinations hold by the rule, import, then process what they held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lego.control.state_move import (
    HOLD_RULES,
    OWNER_BUCKETS,
    Transfer,
    check_owners,
    hold_mask,
    plan_move,
)
from lego.errors import ConfigError
from lego.experiments.split_sim import REPLICA_PORT0
from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.legostats import StateBlob
from lego.ext.legostats_spec import N_FEATURES
from lego.p4src.contract import GROUP_DSTIP, GROUP_SRCIP
from lego.switch.parser import records_from_batch
from lego.switch.pipeline import Pipeline, PipelineState


@dataclass
class MoveStats:
    """What one move cost: entries, bytes on the wire and packets held."""

    seq: int
    buckets_moved: int
    replicas_before: list[int]
    replicas_after: list[int]
    transfers: int = 0
    entries_exported: int = 0
    entries_imported: int = 0
    entries_skipped: int = 0  # identical replicated pairs already present
    entries_dropped: int = 0
    bytes: int = 0
    packets_window: int = 0  # packets the destinations received before their state
    packets_held: int = 0
    retired: dict[int, int] = field(default_factory=dict)  # replica -> keys left (0)


@dataclass
class MoveRun:
    """Merged result of :func:`simulate_moves`."""
    """Merged result of :func:`simulate_moves`."""

    features: np.ndarray  # float64[n, 115], by switch sequence number (NaN: no row)
    primary_count: np.ndarray  # int64[n]: rows each packet yielded (1 when loss-free)
    mirror_count: np.ndarray  # int64[n]: mirror copies processed
    moves: list[MoveStats]
    keys_live: dict[int, int]  # replica -> live entries at the end

    @property
    def packets_lost(self) -> int:
        return int(np.count_nonzero(self.primary_count == 0))

    @property
    def packets_duplicated(self) -> int:
        return int(np.count_nonzero(self.primary_count > 1))


def export_move(replicas: dict, transfers: list[Transfer], new: np.ndarray,
                stats: MoveStats) -> dict[int, list[bytes]]:
    """The sources' side, at M (every source has processed its packets < M):
    export and serialise each transfer, then drop what each source no longer owns.
    Returns the serialised blobs per destination."""
    out: dict[int, list[bytes]] = {}
    for t in transfers:
        if t.src not in replicas:
            continue
        blob = replicas[t.src].export_state(t.buckets, exclude=t.exclude)
        data = blob.to_bytes()
        out.setdefault(t.dst, []).append(data)
        stats.transfers += 1
        stats.entries_exported += blob.n_entries
        stats.bytes += len(data)
    for src in sorted({t.src for t in transfers}):
        if src in replicas:
            stats.entries_dropped += replicas[src].drop_state(new == src)
    return out


def import_move(replica, blobs: Sequence[bytes], stats: MoveStats) -> None:
    """The destination's side, once every blob for it has arrived."""
    for data in blobs:
        res = replica.import_state(StateBlob.from_bytes(data))
        stats.entries_imported += res.imported
        stats.entries_skipped += res.skipped


def _route(records: np.ndarray, owners: np.ndarray):
    """The switch's decisions (``lego.switch.pipeline``) under the SrcIP + DstIP
    mirror plan with replica r behind port r + REPLICA_PORT0."""
    state = PipelineState(primary_group=GROUP_SRCIP, mirror_group=GROUP_DSTIP)
    state.bucket_owner[:, :OWNER_BUCKETS] = owners + REPLICA_PORT0
    state.mirror_owner[:, :OWNER_BUCKETS] = owners + REPLICA_PORT0
    return Pipeline(state).decide(records)


def simulate_moves(batch: PacketBatch, semantics: str = "lego", k: int = 1,
                   moves: Sequence[tuple[int, np.ndarray]] = (), *, lag: int = 256,
                   transfer: bool = True, hold: str = "closure", spec: bool = False,
                   initial: np.ndarray | None = None, **options) -> MoveRun:
    """Run feature-extraction replicas over ``batch`` (seq = packet index) through a
    schedule of assignment changes ``moves = [(M, new owners int[1024]), ...]``,
    starting from ``initial`` (default: buckets dealt round robin over ``k``).

    ``lag``: packets (of switch sequence) between M and the arrival of the state at
    the destinations; moves must be at least ``lag`` apart. ``transfer=False``
    moves buckets without their state (to show that it matters); ``hold``: see the
    module doc; ``spec``: run the pure-Python specification; ``options``: the
    extractor's. Returns the features merged by sequence number and the cost of
    each move."""
    if semantics != "lego":
        raise ConfigError(f"simulate_moves semantics: expected 'lego' (the kitsune "
                          f"semantics couples a host with every peer, so its state has no "
                          f"owner bucket), got {semantics!r}")
    if hold not in HOLD_RULES:
        raise ConfigError(f"simulate_moves hold: expected one of {HOLD_RULES}, got {hold!r}")
    if not (isinstance(lag, int) and lag >= 0):
        raise ConfigError(f"simulate_moves lag: expected packets >= 0, got {lag!r}")
    n = len(batch)
    owners = check_owners(np.arange(OWNER_BUCKETS) % k if initial is None else initial,
                           "simulate_moves initial")
    schedule = []
    last = -lag
    for i, (m, new) in enumerate(moves):
        if not (isinstance(m, (int, np.integer)) and last + lag <= m <= n):
            raise ConfigError(f"simulate_moves moves[{i}] seq: expected an int in "
                              f"[{last + lag}, {n}] (after the previous move's state has "
                              f"arrived), got {m!r}")
        schedule.append((int(m), check_owners(new, f"simulate_moves moves[{i}] owners")))
        last = int(m)
    records = records_from_batch(batch)
    features = np.full((n, N_FEATURES), np.nan)
    primary_count = np.zeros(n, dtype=np.int64)
    mirror_count = np.zeros(n, dtype=np.int64)
    replicas: dict = {}

    def feed(r: int, seqs: np.ndarray, mirror: np.ndarray) -> None:
        if len(seqs) == 0:
            return
        if r not in replicas:
            replicas[r] = make_extractor(semantics, spec=spec, **options)
        sub = batch.take(seqs)
        sub.mirror[:] = mirror
        rows = replicas[r].process(sub)
        prim = seqs[~mirror]
        features[prim] = rows
        primary_count[prim] += 1
        mirror_count[seqs[mirror]] += 1

    def segment(lo: int, hi: int, assignment: np.ndarray, incoming: dict | None = None,
                blobs: dict | None = None, stats: MoveStats | None = None) -> None:
        """Packets lo..hi-1 under ``assignment``; destinations in ``incoming`` hold
        per ``hold`` and import their ``blobs`` before processing the held packets."""
        d = _route(records[lo:hi], assignment)
        for r in sorted(set(assignment.tolist()) | set((incoming or {}).keys())):
            port = r + REPLICA_PORT0
            mir = d.clone_owner == port
            idx = np.flatnonzero((d.owner == port) | mir)
            seqs, m = idx + lo, mir[idx]
            if incoming is None or r not in incoming:
                feed(r, seqs, m)
                continue
            held = hold_mask(d.bucket[idx], d.mirror_bucket[idx], m, incoming[r], hold)
            stats.packets_window += len(idx)
            stats.packets_held += int(held.sum())
            if r not in replicas:
                replicas[r] = make_extractor(semantics, spec=spec, **options)
            replicas[r].pause_sweep(True)
            feed(r, seqs[~held], m[~held])
            import_move(replicas[r], blobs.get(r, []), stats)
            feed(r, seqs[held], m[held])
            replicas[r].pause_sweep(False)

    stats_all: list[MoveStats] = []
    pos = 0
    for m, new in schedule:
        segment(pos, m, owners)
        before = sorted(set(owners.tolist()))
        stats = MoveStats(m, int((owners != new).sum()), before, sorted(set(new.tolist())))
        transfers = plan_move(owners, new)
        if transfer:
            blobs = export_move(replicas, transfers, new, stats)
            incoming = {t.dst: np.zeros(OWNER_BUCKETS, dtype=bool) for t in transfers}
            for t in transfers:
                incoming[t.dst] |= t.buckets
        else:
            blobs, incoming = {}, None
            for src in sorted({t.src for t in transfers}):
                if src in replicas:
                    stats.entries_dropped += replicas[src].drop_state(new == src)
        for r in sorted(set(before) - set(stats.replicas_after)):
            if r in replicas:  # scaled in: nothing is left
                stats.retired[r] = replicas.pop(r).counters()["keys_live"]
        end = min(m + lag, n)
        segment(m, end, new, incoming, blobs, stats)
        stats_all.append(stats)
        owners, pos = new, end
    segment(pos, n, owners)
    return MoveRun(features, primary_count, mirror_count, stats_all,
                   {r: e.counters()["keys_live"] for r, e in sorted(replicas.items())})
