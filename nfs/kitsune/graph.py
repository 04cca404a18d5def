"""The Kitsune brick graph, built in code (tests, ``lego experiment bricks``) and
the monolith's scores to compare it with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.graph import Graph, graph_from_dict


def kitsune_graph(trace: str | Path, model: str | Path, out: str | Path, *,
                  semantics: str, fq: int = 1, fm: int = 1, uln: int = 1, batch: int = 8192,
                  limit: int | None = None, repeat: int = 1, hwm: int = 4,
                  transport: str = "ipc", base_port: int = 0, window: int = 32,
                  write_scores: bool = True, write_alerts: bool = True,
                  shm: bool | None = None, preload: bool = False,
                  groups: dict[str, str] | None = None, inline: bool = False,
                  cpus: dict[str, list[int]] | None = None,
                  source_options: dict[str, Any] | None = None,
                  uln_options: dict[str, Any] | None = None) -> Graph:
    """source -> fq (x fq, key-routed when > 1) -> fm (x fm) -> uln (x uln) -> decision.

    ``groups``: brick -> group (bricks of a group run fused in one process, e.g.
    ``{"source": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}``, where
    ``fm`` then takes ``uln``'s replicas); ``shm``: shared-memory hops (default:
    with ``ipc``); ``preload``: the source parses the trace before the run;
    ``inline``: each extractor process also runs a feature-mapping (+ fused
    ensemble) replica inline, fed the batches its remote replicas have no room for."""
    cpus = cpus or {}
    groups = groups or {}
    if groups.get("fm") and groups.get("fm") == groups.get("uln"):
        fm = uln  # fused: one feature mapping per ensemble replica
    src_opts: dict[str, Any] = {"trace": str(trace), "batch": batch, "repeat": repeat}
    if preload:
        src_opts["preload"] = True
    if limit is not None:
        src_opts["limit"] = limit
    src_opts.update(source_options or {})

    def node(kind: str, replicas: int = 1, **options: Any) -> dict[str, Any]:
        d: dict[str, Any] = {"type": kind, "replicas": replicas, "options": options}
        return d

    bricks = {
        "source": node("packet_batching", **src_opts),
        "fq": node("feature_quantization", fq),
        "fm": node("feature_mapping", fm),
        "uln": node("uln", uln, **(uln_options or {})),
        "decision": node("decision", window=window, out=str(out),
                         write_scores=write_scores, write_alerts=write_alerts),
    }
    for name, c in cpus.items():
        bricks[name]["cpus"] = list(c)
    for name, group in groups.items():
        bricks[name]["group"] = group
    edges = [{"from": "source", "to": "fq", "route": "key" if fq > 1 else "round_robin"},
             {"from": "fq", "to": "fm", "inline": inline}, {"from": "fm", "to": "uln"},
             {"from": "uln", "to": "decision"}]
    settings: dict[str, Any] = {"name": f"kitsune-{semantics}", "transport": transport,
                                "hwm": hwm, "base_port": base_port}
    if shm is not None:
        settings["shm"] = shm
    data = {"graph": settings,
            "params": {"semantics": semantics, "model": str(model)},
            "bricks": bricks, "edges": edges}
    return graph_from_dict(data, f"<kitsune graph {semantics}>")


def read_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(seq, score) from a decision brick's scores.csv."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2,
                       dtype=[("seq", np.uint64), ("score", np.float64), ("trained", np.int8),
                              ("alert", np.int8), ("decided", np.float64)])
    return table["seq"].ravel(), table["score"].ravel()


def monolith_scores(trace: str | Path, model: str | Path, semantics: str, batch: int = 8192,
                    limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seq, score) of the monolithic KitsuneNF over the same trace and model."""
    from lego.ext.kitnet import KitNET
    from lego.ext.packets import open_trace
    from lego.nfs.kitsune.monolith import KitsuneNF

    nf = KitsuneNF(semantics, KitNET.load(model), keep_training_rows=False)
    seqs, scores = [], []
    seen = 0
    for b in open_trace(trace).batches(batch):
        if limit is not None and seen + len(b) > limit:
            b = b.take(slice(0, limit - seen))
        seen += len(b)
        s = nf.process(b)
        seqs.append(s.seq)
        scores.append(s.score)
        if limit is not None and seen >= limit:
            break
    return np.concatenate(seqs), np.concatenate(scores)


def train_model(trace: str | Path, out: str | Path, semantics: str, fm: int, ad: int,
                batch: int = 8192) -> Path:
    """Train KitNET on the trace's prefix (FM + AD + 1 packets), save MODEL.npz."""
    from lego.ext.packets import open_trace
    from lego.nfs.kitsune.monolith import KitsuneNF

    nf = KitsuneNF.fresh(semantics, fm=fm, ad=ad)
    for b in open_trace(trace).batches(batch):
        nf.process(b)
        if nf.trained:
            break
    nf.fit_threshold("lognormal", 1e-4)
    nf.kitnet.meta["semantics"] = semantics
    nf.kitnet.save(out)
    return Path(out)
