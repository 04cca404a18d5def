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
    """Kitsune's template (:func:`lego.nfs.kitsune.nf.graph`) read from a trace:
    src -> fq (x fq, key-routed when > 1) -> fm (x fm) -> uln (x uln) -> dec.

    ``groups``: brick -> group (bricks of a group run fused in one process, e.g.
    ``{"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}``, where
    ``fm`` then takes ``uln``'s replicas); ``shm``: shared-memory hops (default:
    with ``ipc``); ``preload``: the source parses the trace before the run;
    ``inline``: each extractor process also runs a feature-mapping (+ fused
    ensemble) replica inline, fed the batches its remote replicas have no room for."""
    from lego.nfs.kitsune.nf import NF

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
    data = NF.graph(source={"type": "packet_batching", "options": src_opts},
                    options={"semantics": semantics, "model": str(model)},
                    replicas={"fq": fq, "fm": fm, "uln": uln},
                    sink={"window": window, "out": str(out), "write_scores": write_scores,
                          "write_alerts": write_alerts})
    bricks = data["bricks"]
    bricks["uln"]["options"].update(uln_options or {})
    for name, c in cpus.items():
        bricks[name]["cpus"] = list(c)
    for name, group in groups.items():
        bricks[name]["group"] = group
    data["edges"][1]["inline"] = inline  # fq -> fm
    data["graph"].update(transport=transport, hwm=hwm, base_port=base_port)
    if shm is not None:
        data["graph"]["shm"] = shm
    return graph_from_dict(data, f"<kitsune graph {semantics}>")


def read_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(seq, score) from a decision brick's scores.csv."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2,
                       dtype=[("seq", np.uint64), ("score", np.float64), ("trained", np.int8),
                              ("alert", np.int8), ("decided", np.float64)])
    return table["seq"].ravel(), table["score"].ravel()


def monolith_scores(trace: str | Path, model: str | Path, semantics: str, batch: int = 8192,
                    limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seq, score) of one offline instance (the NF's reference, the monolith) over
    the trace's first ``limit`` packets."""
    from lego.ext.packets import open_trace
    from lego.nfs.kitsune.nf import NF

    def prefix():
        seen = 0
        for b in open_trace(trace).batches(batch):
            if limit is not None and seen + len(b) > limit:
                b = b.take(slice(0, limit - seen))
            seen += len(b)
            yield b
            if limit is not None and seen >= limit:
                return

    return NF.reference(prefix(), model, {"semantics": semantics})


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
