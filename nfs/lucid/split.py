"""LUCID split over K replicas, offline and exact (``lego experiment split --nf lucid``).

The switch's rule, applied to a whole capture by the split simulator
(:func:`lego.experiments.split_sim.split`): each frame goes to the owner of its
bucket under a split group; the window clock is the switch's (a register over every
frame, stamped on each), so each replica's extractor takes the stamped window
instead of keeping a clock over its share of the frames. The replicas' fragments,
merged by the frame that opened each, are compared with one instance's: under
Algorithm 1's plan (the symmetric 5-tuple) they are the same fragments with the
same bytes, so the same decisions; under any other single group, a flow's two
directions (or one host's flows) part, and fragments split or change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lego.nfs.lucid.features import Capture, load_capture, new_extractor


@dataclass
class Result:
    """Fragments in a canonical order (by the frame that opened each)."""

    first: np.ndarray
    raw: np.ndarray
    npkts: np.ndarray
    X: np.ndarray

    @classmethod
    def of(cls, parts: list, t: float) -> Result:
        from lego.nfs.lucid.features_spec import normalise

        if not parts:  # no frames at all
            empty = np.zeros((0, 0, 11))
            return cls(np.zeros(0, np.int64), empty, np.zeros(0, np.int64), empty)
        first = np.concatenate([p[2] for p in parts])
        raw = np.concatenate([p[4] for p in parts])
        npkts = np.concatenate([p[3] for p in parts])
        order = np.argsort(first, kind="stable")
        return cls(first[order], raw[order], npkts[order], normalise(raw[order], npkts[order], t))


def run(cap: Capture, t: float, n: int, index: np.ndarray | None = None,
        windows: np.ndarray | None = None) -> tuple:
    """One extractor over the frames ``index`` (all by default), with the switch's
    stamped ``windows`` (its own clock if None): its raw fragment tuple."""
    ex = new_extractor(t, n)
    idx = np.arange(len(cap.ts)) if index is None else index
    ex.feed(cap.buffer, cap.offsets[idx], cap.caplens[idx], cap.ts[idx], cap.linktypes[idx],
            None if windows is None else windows[idx], idx.astype(np.int64))
    return ex.fragments()


def switch_clock(cap: Capture, t: float, n: int) -> np.ndarray:
    return new_extractor(t, n).clock(cap.ts)


def as_sent(cap: Capture, batch):
    """The batch with each IPv4 frame's ports and protocol as its outer header has them.
    LUCID keys a flow by the outer 5-tuple (an ICMP error is ICMP with ports 0), as
    lego.p4's symmetric Socket group hashes it (the switch's key records keep an
    ICMP error's quoted ports for the directed groups, Kitsune's rule, and its outer
    header beside them). A batch has no outer view of its own, so the simulator
    gives it the outer header's columns."""
    from lego.ext.batch import Proto

    keys = new_extractor(1.0, 1).frame_keys(cap.buffer, cap.offsets, cap.caplens,
                                            cap.linktypes)
    out = batch.take(np.arange(len(batch)))
    ip = keys[:, 4] >= 0
    codes = {6: Proto.TCP, 17: Proto.UDP, 1: Proto.ICMP, 0: Proto.IP}
    for number, code in codes.items():
        out.proto[ip & (keys[:, 4] == number)] = code
    out.sport[ip], out.dport[ip] = keys[ip, 1], keys[ip, 3]
    return out


@dataclass
class SplitRow:
    method: str
    k: int
    fragments: int
    identical: float  # share of one instance's fragments that come out byte-identical
    decisions_changed: float | None  # share of one instance's decisions that differ
    mirrored: float


def split_rows(cap: Capture, batch, t: float, n: int, configs, ks, model=None,
               local_clock: bool = False) -> tuple[Result, list[SplitRow]]:
    """One instance, then each (config, K): how the merged fragments compare."""
    from lego.experiments.split_sim import round_robin_owners, split

    one = Result.of([run(cap, t, n)], t)
    clock = switch_clock(cap, t, n)
    base = model.predict(one.X)[1] if model is not None else None
    rows = []
    for config in configs:
        for k in ks:
            streams = split(batch, config, round_robin_owners(k))
            parts = [run(cap, t, n, idx, None if local_clock else clock)
                     for idx in streams.index if len(idx)]
            rows.append(_compare(one, Result.of(parts, t), base, model, config.name, k,
                                 streams.mirrored_fraction))
    return one, rows


def _compare(one: Result, got: Result, base, model, name: str, k: int,
             mirrored: float) -> SplitRow:
    pos = {int(f): i for i, f in enumerate(got.first)}
    same = 0
    changed = 0
    decisions = model.predict(got.X)[1] if model is not None else None
    for i, f in enumerate(one.first):
        j = pos.get(int(f))
        equal = j is not None and one.npkts[i] == got.npkts[j] and np.array_equal(
            one.raw[i], got.raw[j])
        same += equal
        if base is not None:
            changed += j is None or decisions[j] != base[i]
    total = len(one.first)
    return SplitRow(name, k, len(got.first), same / total if total else 1.0,
                    changed / total if base is not None and total else None, mirrored)


def split_experiment(trace: Path, replicas: int, out: Path,
                     model_path: Path | None = None) -> list[SplitRow]:
    """``lego experiment split --nf lucid``: Algorithm 1's plan at K = 2..max(8, K), each
    single other group at K, and the plan with replica-local clocks; a table (.md,
    .csv) in ``out``. The window and fragment size are the model's (LUCID's defaults
    for the model trained when none is given)."""
    from lego import nfs
    from lego.nfs.lucid.cnn import LucidCNN
    from lego.nfs.lucid.detect import generated_model

    nf = nfs.get("lucid")
    options = nf.resolve({})
    model = (LucidCNN.load(model_path) if model_path
             else generated_model(out, 1, options["window"], options["packets"]))
    t, n = model.window, model.n
    cap = load_capture(trace)
    try:
        return _write_table(trace, replicas, out, model_path, model, cap, nf, t, n)
    finally:
        cap.close()


def _write_table(trace, replicas, out, model_path, model, cap, nf, t, n) -> list[SplitRow]:
    from lego.experiments.split_sim import GRANULARITIES, plan_config
    from lego.ext.packets import read_trace

    batch = as_sent(cap, read_trace(trace))
    plan = replace(plan_config(nf.plan()), name="Algorithm 1: Socket (sym), the switch's clock")
    _, rows = split_rows(cap, batch, t, n, [plan], range(2, max(8, replicas) + 1), model)
    _, local = split_rows(cap, batch, t, n, [plan], [replicas], model, local_clock=True)
    local[0].method = "Algorithm 1: Socket (sym), each replica's own clock"
    _, others = split_rows(cap, batch, t, n, GRANULARITIES, [replicas], model)
    rows += local + others
    title = (f"LUCID split: {trace.name}, {len(cap.ts):,} frames, t = {t:g} s, n = {n}; "
             f"Algorithm 1: {nf.plan().describe()}; decisions of "
             f"{model_path or 'a model trained on the generated trace (seed 1)'}")
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"split_lucid_{trace.stem}"
    stem.with_name(stem.name + ".md").write_text(to_markdown(rows, title))
    with open(stem.with_name(stem.name + ".csv"), "w") as f:
        f.write("method,k,fragments,identical,decisions_changed,mirrored\n")
        for r in rows:
            f.write(f"{r.method},{r.k},{r.fragments},{r.identical},"
                    f"{'' if r.decisions_changed is None else r.decisions_changed},"
                    f"{r.mirrored}\n")
    return rows


def to_markdown(rows: list[SplitRow], title: str) -> str:
    lines = [f"**{title}**", "",
             "| method | K | fragments | identical to one instance | decisions changed "
             "| mirrored |", "|---|---|---|---|---|---|"]
    for r in rows:
        changed = "-" if r.decisions_changed is None else f"{100 * r.decisions_changed:.2f}%"
        lines.append(f"| {r.method} | {r.k} | {r.fragments:,} | {100 * r.identical:.2f}% | "
                     f"{changed} | {100 * r.mirrored:.1f}% |")
    return "\n".join(lines) + "\n"
