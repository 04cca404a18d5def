"""LUCID's samples and detection: labelled fragments of a capture, the CNN trained on
them, and its figures (accuracy, F1, TPR, FPR) on another capture.

Labels come, as the capture allows, from one 0/1 label per frame (the generated
traces' ``.labels.csv``: a fragment is labelled by its first packet, and a generated
flow's packets share one label) or, as LUCID labels, from attacker/victim address
pairs (a fragment is malicious when its flow's addresses are such a pair, either
order); a capture with neither is benign.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lego.errors import ConfigError
from lego.nfs.lucid.features import extract
from lego.nfs.lucid.features_spec import Fragments


def labels_for(frags: Fragments, packet_labels: np.ndarray | None = None,
               pairs: Sequence[tuple[str, str]] = ()) -> np.ndarray:
    """0/1 per fragment (see the module's docstring)."""
    if packet_labels is not None:
        if len(frags.first_seen) and frags.first_seen.max() >= len(packet_labels):
            raise ConfigError(f"labels: {len(packet_labels)} labels for a capture with more "
                              f"frames (a fragment starts at frame {frags.first_seen.max()})")
        return packet_labels[frags.first_seen].astype(np.int64)
    if not pairs:
        return np.zeros(len(frags.window), dtype=np.int64)
    wanted = {p for a, v in pairs for p in ((a, v), (v, a))}
    return np.array([(s, d) in wanted for s, d in frags.key[:, [0, 2]]], dtype=np.int64)


def parse_pairs(texts: Sequence[str]) -> list[tuple[str, str]]:
    """``ATTACKER:VICTIM`` strings -> address pairs."""
    pairs = []
    for text in texts:
        a, sep, v = text.partition(":")
        try:
            pairs.append((str(ipaddress.IPv4Address(a)), str(ipaddress.IPv4Address(v))))
        except ValueError:
            raise ConfigError(f"--pair: expected ATTACKER:VICTIM (two IPv4 addresses), got "
                              f"{text!r}") from None
    return pairs


def samples(trace: str | Path, t: float, n: int, labels: str | Path | None = None,
            pairs: Sequence[tuple[str, str]] = ()) -> tuple[Fragments, np.ndarray]:
    """A capture's fragments and their labels."""
    from lego.metrics import load_labels

    frags = extract(trace, t, n)
    packet_labels = load_labels(labels) if labels else None
    return frags, labels_for(frags, packet_labels, pairs)


def generated_samples(out: Path, seed: int, t: float, n: int) -> tuple[Fragments, np.ndarray]:
    """The generated trace of ``seed`` (written in ``out`` if missing): its fragments
    and their labels."""
    from lego.topo.traffic_synth import default_trace, labels_path

    trace = default_trace(out, seed=seed)
    return samples(trace, t, n, labels_path(trace))


def generated_model(out: Path, seed: int, t: float, n: int):
    """LUCID's CNN trained (seed 0) on the generated trace of ``seed``."""
    from lego.nfs.lucid.cnn import train

    frags, y = generated_samples(out, seed, t, n)
    return train(frags.X, y, seed=0, window=t)[0]


_PREPARED: dict[tuple[int, float, int], Any] = {}


def _run_model(options: Mapping[str, Any], workdir: Path):
    """The ``model`` option's CNN, else one trained on the generated trace of
    :data:`TRAINING_SEED` (written in ``workdir``; trained once per process: a run
    prepares it for its calibration, its replay and its offline figures)."""
    from lego.nfs.lucid.cnn import LucidCNN

    if options.get("model"):
        return LucidCNN.load(options["model"])
    key = (TRAINING_SEED, float(options["window"]), int(options["packets"]))
    if key not in _PREPARED:
        _PREPARED[key] = generated_model(workdir, *key)
    return _PREPARED[key]


def prepared_model(options: Mapping[str, Any], out: Path) -> Path:
    """The model of a run (the NF's ``train``), saved to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_model(options, out.parent).save(out)
    return out


def run_trace(trace: Path, options: Mapping[str, Any]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One instance over a capture, LUCID's own clock: (first frame of each fragment,
    probability, scored), in the order of the first frames."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lucid-train-") as tmp:
        model = _run_model(options, Path(tmp))
    frags = extract(trace, model.window, model.n)
    prob = model.forward(frags.X)
    order = np.argsort(frags.first_seen, kind="stable")
    return frags.first_seen[order], prob[order], np.ones(len(order), dtype=bool)


def figures(model, X: np.ndarray, y: np.ndarray) -> dict:
    """The model's accuracy, F1, TPR, FPR ... on fragments X labelled y."""
    from lego.nfs.lucid.cnn import metrics

    prob, decision = model.predict(X)
    return metrics(y, decision, prob)


def write_decisions(path: Path, frags: Fragments, prob: np.ndarray,
                    decision: np.ndarray) -> None:
    """One CSV line per fragment: its flow key, window, probability and decision."""
    with open(path, "w") as out:
        out.write("src,sport,dst,dport,proto,window,probability,decision\n")
        for key, w, p, d in zip(frags.key, frags.window, prob, decision, strict=True):
            out.write(",".join(key) + f",{w!r},{p:.6f},{int(d)}\n")


#: the generated trace LUCID's offline run trains on, when no model is given: another
#: seed than the default trace's, so that the run never scores its training traffic
TRAINING_SEED = 2


def offline_run(trace: Path, options: dict, packets: int, results: Path,
                labels: Path | None, quiet: bool) -> dict:
    """``lego run --nf lucid --offline``: one instance over ``trace``. LUCID is
    supervised, and a trace's prefix rarely holds both classes, so its CNN is the
    ``model`` option or one trained (seed 0) on the labelled generated trace of seed
    :data:`TRAINING_SEED`; ``packets`` (a training prefix, for unsupervised NFs) is not
    read. Writes scores.csv (one line per fragment) and alerts.jsonl (one per
    malicious fragment) in ``results``; returns the summary."""
    import json
    import time

    from lego.nfs.lucid.cnn import LucidCNN, metrics

    start = time.perf_counter()
    if options.get("model"):
        model, source = LucidCNN.load(options["model"]), str(options["model"])
    else:
        model = generated_model(results, TRAINING_SEED, options["window"], options["packets"])
        source = f"trained on the generated trace of seed {TRAINING_SEED}"
    frags, y = samples(trace, model.window, model.n, labels)
    prob, decision = model.predict(frags.X)
    write_decisions(results / "scores.csv", frags, prob, decision)
    with open(results / "alerts.jsonl", "w") as out:
        for i in np.flatnonzero(decision):
            out.write(json.dumps({"flow": list(frags.key[i]), "window": float(frags.window[i]),
                                  "first_frame": int(frags.first_seen[i]),
                                  "probability": round(float(prob[i]), 6)}) + "\n")
    summary = {"trace": str(trace), "window (s)": model.window,
               "packets per fragment": model.n, "model": source,
               "fragments": int(len(prob)), "malicious fragments": int(decision.sum()),
               "seconds": round(time.perf_counter() - start, 3)}
    if labels is not None:
        figures = metrics(y, decision, prob)
        summary.update({k: round(float(figures[k]), 4)
                        for k in ("accuracy", "f1", "tpr", "fpr")})
    return summary
