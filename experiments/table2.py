"""Table II of the paper, for both feature semantics: one instance vs K replicas.

For each semantics a KitNET model is trained once, on the trace's prefix, by one
instance (as the paper loads the same weights into every new instance). Then
the whole trace is scored by one instance and by K replicas under each split
granularity and under the mirror plan, and each split is compared with the one
instance on the packets after the training prefix.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lego.control.granularity import Verdict, plan_split
from lego.experiments.split_sim import GRANULARITIES, MIRROR_PLAN, round_robin_owners
from lego.ext.batch import PacketBatch
from lego.ext.features import state_groups
from lego.metrics import auc
from lego.nfs.kitsune.monolith import KitsuneNF
from lego.nfs.kitsune.split import run_split

CHUNK = 8192


@dataclass
class SplitRow:
    semantics: str
    method: str
    mean_score: float
    max_abs_deviation: float
    decision_flips: float  # fraction of evaluated packets whose alert decision differs
    auc: float
    mirrored_percent: float
    identical_features: bool


def grace_for(n_packets: int) -> tuple[int, int]:
    """Kitsune's FM 5,000 / AD 50,000 where the trace allows; else 1/16 and 1/2 of it."""
    if n_packets > 2 * 55_001:
        return 5000, 50000
    return max(n_packets // 16, 10), max(n_packets // 2, 10)


def train_model(batch: PacketBatch, semantics: str, fm: int, ad: int):
    nf = KitsuneNF.fresh(semantics, fm=fm, ad=ad)
    for start in range(0, len(batch), CHUNK):
        nf.process(batch.take(slice(start, start + CHUNK)))
        if nf.trained:
            break
    nf.fit_threshold("lognormal", 1e-4)
    return nf.kitnet


def table2(batch: PacketBatch, labels: np.ndarray | None, k: int, fm: int, ad: int,
           semantics: tuple[str, ...] = ("lego", "kitsune")) -> list[SplitRow]:
    window = np.arange(len(batch)) > fm + ad  # packets after the training prefix
    owners = round_robin_owners(k)
    rows = []
    for sem in semantics:
        model = train_model(batch, sem, fm, ad)
        ref_features, ref_scores, _ = run_split(batch, sem, model, None)
        ref_alerts = model.decide(ref_scores)
        plan = plan_split(state_groups(sem))
        mirror_name = MIRROR_PLAN.name + (" (Algorithm 1)" if plan.verdict is
                                          Verdict.SPLIT_AND_MIRROR else " (no exact split)")
        configs = [(c.name, c) for c in GRANULARITIES] + [(mirror_name, MIRROR_PLAN)]
        for name, config in [("one instance", None)] + configs:
            features, scores, mirrored = run_split(batch, sem, model, config, owners)
            rows.append(SplitRow(
                sem, name,
                mean_score=float(scores[window].mean()),
                max_abs_deviation=float(np.abs(scores - ref_scores)[window].max()),
                decision_flips=float((model.decide(scores) != ref_alerts)[window].mean()),
                auc=auc(scores[window], labels[window]) if labels is not None else float("nan"),
                mirrored_percent=100.0 * mirrored,
                identical_features=bool(np.array_equal(features, ref_features)),
            ))
    return rows


def algorithm1_lines(semantics: tuple[str, ...] = ("lego", "kitsune")) -> list[str]:
    """Algorithm 1's verdict for each semantics, with the features it cannot split."""
    lines = []
    for sem in semantics:
        plan = plan_split(state_groups(sem))
        line = f"Algorithm 1, {sem}: maximal groups {list(plan.maximal)}; {plan.describe()}"
        if plan.affected_features:
            line += (f" ({len(plan.affected_features)} features affected: "
                     f"{', '.join(plan.affected_features[:4])}, ...)")
        lines.append(line)
    return lines


def to_markdown(rows: list[SplitRow], title: str) -> str:
    head = ("| semantics | method | mean score | max abs deviation | decision flips | AUC "
            "| mirrored | features identical |")
    lines = [f"### {title}", "", head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r.semantics} | {r.method} | {r.mean_score:.6g} | {r.max_abs_deviation:.3g} "
            f"| {100 * r.decision_flips:.3f}% | {r.auc:.4f} | {r.mirrored_percent:.1f}% "
            f"| {'yes' if r.identical_features else 'no'} |")
    lines += [""] + [f"- {line}" for line in algorithm1_lines()]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[SplitRow], path: Path) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))


def plot(rows: list[SplitRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sems = sorted({r.semantics for r in rows}, key=[r.semantics for r in rows].index)
    fig, axes = plt.subplots(1, len(sems), figsize=(6 * len(sems), 4.2), squeeze=False)
    for ax, sem in zip(axes[0], sems, strict=True):
        mine = [r for r in rows if r.semantics == sem]
        colors = ["#555555"] + ["#2a7ab0" if r.identical_features else "#d9822b"
                                for r in mine[1:]]
        ax.bar(range(len(mine)), [r.mean_score for r in mine], color=colors)
        ax.set_xticks(range(len(mine)), [r.method.replace(" (", "\n(") for r in mine],
                      rotation=30, ha="right", fontsize=8)
        means = [r.mean_score for r in mine]
        if min(means) > 0 and max(means) / min(means) > 20:
            ax.set_yscale("log")  # one split can be off by orders of magnitude
        ax.set_ylabel("mean score (RMSE) after training")
        ax.set_title(f"{sem} features (blue: identical to one instance)", fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
