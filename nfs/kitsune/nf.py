"""Kitsune through the NF boundary (:class:`lego.nfs.NetworkFunction`).

Everything the framework needs from Kitsune is declared here: its state groups
under each feature semantics (DESIGN §7), the packet fields AfterImage reads, its
five bricks (paper Table I) and their graph template, how its keyed state moves
(by owner bucket, ``lego`` semantics only), model preparation (KitNET trained on a
trace's prefix) and the offline reference (one instance over a stream).

Heavy imports (the Cython kernels) happen inside the functions, so that the
declaration imports before ``make build`` and costs ``lego --help`` nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks.catalog import BrickType
from lego.errors import ConfigError
from lego.nfs import NetworkFunction, chain_template

SEMANTICS = ("kitsune", "lego")
#: the semantics when a config or graph names none (the bricks default to it too, so
#: that Algorithm 1, which reads this declaration, and the bricks agree)
DEFAULT_SEMANTICS = "lego"
#: Kitsune's own graces (feature mapping, autoencoder training), bounds of train()'s split
FM_GRACE_MAX, FM_GRACE_MIN = 5000, 1000

#: the chain of Table I, in graph order: node name -> brick type
NODES = (("src", None), ("fq", "feature_quantization"), ("fm", "feature_mapping"),
         ("uln", "uln"), ("dec", "decision"))

BRICK_TYPES = (
    BrickType("feature_quantization", "lego.nfs.kitsune.detector:FeatureQuantization",
              "worker", "keyed", "the damped-statistics feature extractor (stateful)"),
    BrickType("feature_mapping", "lego.nfs.kitsune.detector:FeatureMapping", "worker",
              "stateless", "feature rows -> per-autoencoder normalised inputs"),
    BrickType("uln", "lego.nfs.kitsune.detector:UnsupervisedLearningNetwork", "worker",
              "stateless", "the autoencoder ensemble + output layer (inference)"),
    BrickType("decision", "lego.nfs.kitsune.detector:Decision", "sink", "single",
              "merges scores in sequence order; alerts, scores, lost batches"),
)

#: AfterImage reads every column of a PacketBatch
PACKET_FIELDS = ("ts", "frame_len", "eth_src", "eth_dst", "proto", "src_family", "dst_family",
                 "src_addr", "dst_addr", "sport", "dport", "mirror", "seq")


def state_groups(options: Mapping[str, Any]) -> list:
    from lego.ext.features import state_groups as declared

    return declared(options["semantics"])


def check(options: Mapping[str, Any], where: str) -> None:
    if options["semantics"] not in SEMANTICS:
        raise ConfigError(f"{where}: semantics: expected one of {' or '.join(SEMANTICS)}, got "
                          f"{options['semantics']!r}")


def graph(*, source: Mapping[str, Any], options: Mapping[str, Any],
          replicas: Mapping[str, int] | None = None, sink: Mapping[str, Any] | None = None,
          name: str | None = None) -> dict:
    """The five-brick graph (graph-file layout): ``source`` is the framework's source
    brick (``{"type": ..., "options": ...}``), ``options`` Kitsune's (semantics,
    model), ``replicas`` per node, ``sink`` the decision's options."""
    replicas = dict(replicas or {})
    bricks, edges = chain_template(NODES, source, replicas, sink)
    if replicas.get("fq", 1) > 1:
        edges[0]["route"] = "key"
    params = {"nf": "kitsune", "semantics": options.get("semantics", "lego")}
    if options.get("model"):
        params["model"] = str(options["model"])
    return {"graph": {"name": name or f"kitsune-{params['semantics']}"}, "params": params,
            "bricks": bricks, "edges": edges}


def train(trace: str | Path, out: str | Path, options: Mapping[str, Any], packets: int,
          batch: int = 8192) -> Path:
    """KitNET trained on the trace's first ``packets`` packets (a feature-mapping grace
    of a tenth, within Kitsune's 1,000-5,000, then autoencoder training), its
    threshold fitted log-normal on the benign training scores; saved to ``out``."""
    from lego.nfs.kitsune.graph import train_model

    return train_model(trace, out, options["semantics"], *training_graces(packets), batch=batch)


def training_graces(packets: int) -> tuple[int, int]:
    """(feature-mapping grace, autoencoder grace) for a ``packets``-long training prefix."""
    if packets < FM_GRACE_MIN + 2:
        raise ConfigError(f"kitsune: training needs more than {FM_GRACE_MIN + 1} packets, "
                          f"got {packets}")
    fm = min(FM_GRACE_MAX, max(FM_GRACE_MIN, (packets - 1) // 11))
    return fm, packets - 1 - fm


class Instance:
    """One offline Kitsune (the monolith) with a trained model: (seq, score) of a
    batch's primaries; mirror copies update the damped statistics only."""

    def __init__(self, model: str | Path, options: Mapping[str, Any]) -> None:
        from lego.ext.kitnet import KitNET
        from lego.nfs.kitsune.monolith import KitsuneNF

        self.nf = KitsuneNF(options["semantics"], KitNET.load(model), keep_training_rows=False)

    def process(self, batch) -> tuple[np.ndarray, np.ndarray]:
        s = self.nf.process(batch)
        return s.seq, s.score


def run(trace: str | Path, options: Mapping[str, Any], packets: int
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fresh instance on a trace: trained on its first ``packets`` packets, then
    scoring; (seq, score, scored by the trained model)."""
    from lego.nfs.kitsune.cli import score_trace
    from lego.nfs.kitsune.monolith import KitsuneNF

    fm, ad = training_graces(packets)
    nf = KitsuneNF.fresh(options["semantics"], fm=fm, ad=ad)
    r = score_trace(nf, Path(trace), True, fit=("lognormal", 1e-4))
    return r.seq, r.score, r.trained


def offline(trace, options, packets, results, labels, quiet) -> dict:
    from lego.nfs.kitsune.cli import offline_run

    return offline_run(Path(trace), dict(options), packets, Path(results), labels, quiet)


NF = NetworkFunction(
    name="kitsune",
    state_groups=state_groups,
    graph=graph,
    brick_types=BRICK_TYPES,
    packet_fields=PACKET_FIELDS,
    options={"semantics": (str, DEFAULT_SEMANTICS), "model": (str, None)},
    check=check,
    merge="sequence",
    train=train,
    instance=Instance,
    run=run,
    offline=offline,
    cli="lego.nfs.kitsune.cli",
    help="AfterImage damped statistics + KitNET autoencoder ensemble (unsupervised)",
)
