"""The hot spot (DESIGN §8): each replica's share of the load under a one-host attack.

An NF's Algorithm-1 plan (:meth:`lego.nfs.NetworkFunction.plan`) is applied to a
trace by the switch's own decisions (:func:`lego.experiments.split_sim.split`), the
buckets dealt to K replicas round robin. A replica's load is every frame the switch
sends it: its primaries plus the mirror copies it receives, all frames alike (the
switch splits every frame, whatever the NF then keeps: an NF that reads only IPv4
frames still receives the others). Its share is that count over the frames all
replicas receive, so the shares sum to 1 and an even split gives each 1/K.

A host-keyed split (the source's owner, plus a mirror to the destination's) puts all
of one attacking host's frames on one replica and their mirrors on its victim's; a
flow-keyed split (the symmetric 5-tuple) spreads an attack of many flows over all of
them. Nothing here knows an NF: each is named
by the caller and planned through its declaration.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lego.errors import ConfigError
from lego.experiments.split_sim import plan_config, round_robin_owners, split
from lego.ext.batch import PacketBatch
from lego.nfs import NetworkFunction

REPLICAS = (2, 4, 8)


@dataclass(frozen=True)
class HotspotRow:
    """One NF at one K: what each replica receives."""

    nf: str
    plan: str  # Algorithm 1's plan, as the switch applies it
    k: int
    frames: int  # frames in the trace
    received: tuple[int, ...]  # per replica: primaries + mirror copies

    @property
    def total(self) -> int:
        return sum(self.received)

    @property
    def shares(self) -> tuple[float, ...]:
        total = self.total
        return tuple(r / total if total else 0.0 for r in self.received)

    @property
    def max_share(self) -> float:
        return max(self.shares)

    @property
    def imbalance(self) -> float:
        """The busiest replica's load over the mean (1 = even, K = all on one)."""
        return self.max_share * self.k

    @property
    def busiest(self) -> float:
        """The busiest replica's frames over the trace's: 1 = it processes as much as
        one instance would, the split relieved it of nothing."""
        return max(self.received) / self.frames if self.frames else 0.0

    @property
    def mirrored(self) -> float:
        """Mirror copies per trace frame."""
        return (self.total - self.frames) / self.frames if self.frames else 0.0


def replica_load(nf: NetworkFunction, batch: PacketBatch, k: int,
                 options: Mapping[str, Any] | None = None) -> HotspotRow:
    """Each of ``k`` replicas' load when the switch applies ``nf``'s plan (a
    :class:`lego.nfs.NetworkFunction`, its ``options`` resolved, defaults where
    none) to ``batch`` with the buckets dealt round robin."""
    if k < 1:
        raise ConfigError(f"hot spot: replicas: expected K >= 1, got {k}")
    plan = nf.plan(options)
    config = plan_config(plan)
    if config is None:
        raise ConfigError(f"hot spot: NF {nf.name!r} has no exact split with these options "
                          f"(Algorithm 1: {plan.describe()}); pick options that split exactly")
    streams = split(batch, config, round_robin_owners(k))
    received = tuple(len(idx) for idx in streams.index)
    return HotspotRow(nf.name, plan.describe(), k, len(batch), received)


def hotspot(nfs: Sequence[NetworkFunction], batch: PacketBatch,
            replicas: Sequence[int] = REPLICAS) -> list[HotspotRow]:
    """:func:`replica_load` for every NF (with its default options) and K."""
    return [replica_load(nf, batch, k) for nf in nfs for k in replicas]


def title_for(trace: str, frames: int, start: int = 0) -> str:
    part = f"frames {start:,}.. ({frames:,})" if start else f"{frames:,} frames"
    return (f"Hot spot: {trace}, {part}; each replica's share of the frames the "
            "switch sends the replicas (primaries + mirror copies; every frame counted, also "
            "those the NF then skips), buckets dealt round robin")


def _shares(row: HotspotRow) -> str:
    return " / ".join(f"{s:.3f}" for s in row.shares)


def to_markdown(rows: Sequence[HotspotRow], title: str) -> str:
    lines = [f"### {title}", "",
             "| NF | K | replica shares (0..K-1) | max share | max/mean | busiest/trace "
             "| mirrored |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.nf} | {r.k} | {_shares(r)} | {r.max_share:.3f} "
                     f"| {r.imbalance:.2f} | {100 * r.busiest:.1f}% | {100 * r.mirrored:.1f}% |")
    lines += ["", "max/mean: the busiest replica over the mean (1 = even, K = all on one); "
              "busiest/trace: its frames over the trace's (100% = no relief); mirrored: "
              "mirror copies per trace frame.", ""]
    for nf in dict.fromkeys(r.nf for r in rows):
        plan = next(r.plan for r in rows if r.nf == nf)
        lines.append(f"- {nf}: Algorithm 1: {plan}")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[HotspotRow], path: Path, trace: str) -> None:
    """One line per (NF, K, replica)."""
    with open(path, "w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["trace", "nf", "k", "replica", "received", "share", "max_share",
                    "imbalance", "busiest", "mirrored", "frames", "plan"])
        for r in rows:
            for i, (got, share) in enumerate(zip(r.received, r.shares, strict=True)):
                w.writerow([trace, r.nf, r.k, i, got, f"{share:.6f}", f"{r.max_share:.6f}",
                            f"{r.imbalance:.4f}", f"{r.busiest:.6f}", f"{r.mirrored:.6f}",
                            r.frames, r.plan])


def plot(rows: Sequence[HotspotRow], path: Path, title: str) -> None:
    """Grouped bars: one panel per K, a group per NF, a bar per replica; 1/K dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r.k for r in rows})
    names = list(dict.fromkeys(r.nf for r in rows))
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 4.2), squeeze=False,
                             sharey=True)
    cmap = plt.get_cmap("tab10")
    for ax, k in zip(axes[0], ks, strict=True):
        width = 0.8 / k
        for g, nf in enumerate(names):
            row = next((r for r in rows if r.nf == nf and r.k == k), None)
            if row is None:
                continue
            x = g + (np.arange(k) - (k - 1) / 2) * width
            ax.bar(x, row.shares, width=width * 0.95, color=cmap(g % 10), edgecolor="black",
                   linewidth=0.3)
        ax.axhline(1 / k, color="black", linestyle="--", linewidth=1, label=f"1/K = {1 / k:.3f}")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"K = {k}")
        ax.set_ylim(0, 1)
        ax.legend(loc="upper right", fontsize=8)
    axes[0][0].set_ylabel("replica's share of the frames received")
    fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: Sequence[HotspotRow], out: Path, trace: str | Path,
                  start: int = 0) -> Path:
    """``hotspot_<trace>[_from<start>].md``, ``.csv`` and ``.png`` under ``out`` (the
    rows of the trace's frames from ``start`` on); the stem returned."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (f"hotspot_{Path(trace).stem}" + (f"_from{start}" if start else ""))
    title = title_for(Path(trace).name, rows[0].frames if rows else 0, start)
    stem.with_name(stem.name + ".md").write_text(to_markdown(rows, title))
    write_csv(rows, stem.with_name(stem.name + ".csv"), Path(trace).name)
    plot(rows, stem.with_name(stem.name + ".png"), title)
    return stem
