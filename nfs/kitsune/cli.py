"""``lego kitsune``: the Kitsune NF on a trace (features, train, score, run)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lego.cli_args import existing_file, non_negative_int, positive_int, probability
from lego.errors import ConfigError
from lego.ext.batch import PacketBatch
from lego.ext.features import SEMANTICS, make_extractor
from lego.metrics import labelled_detection
from lego.progress import packet_progress, stderr

# The NF and the readers import the compiled kernels: imported where used, so that
# `lego --help` works before `make build`.

BATCH = 8192


def register(subparsers: argparse._SubParsersAction) -> None:
    kit = subparsers.add_parser("kitsune", help="run the Kitsune NF on a trace")
    sub = kit.add_subparsers(dest="kitsune_command", metavar="ACTION", required=True)

    p = sub.add_parser("features", help="write the N x F feature matrix (.npy)")
    _add_input(p)
    p.add_argument("--semantics", choices=SEMANTICS, default="kitsune")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="F.npy")
    p.add_argument("--limit", type=positive_int, metavar="N", help="first N packets only")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train KitNET on a trace's prefix, save the model")
    _add_input(p)
    _add_training(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.npz")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score a trace with a trained model")
    _add_input(p)
    p.add_argument("--model", type=existing_file, required=True, metavar="MODEL.npz")
    _add_outputs(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("run", help="train on the prefix and score the rest in one pass")
    _add_input(p)
    _add_training(p)
    _add_outputs(p)
    p.add_argument("--save-model", type=Path, metavar="MODEL.npz")
    p.set_defaults(func=cmd_run)


def _add_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pcap", "--input", "-i", dest="input", type=existing_file, required=True,
                   metavar="TRACE", help="pcap, pcapng or Kitsune tshark TSV")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--semantics", choices=SEMANTICS, default="kitsune")
    p.add_argument("--fm", type=non_negative_int, default=5000, metavar="N",
                   help="feature-mapping grace, packets (default 5000)")
    p.add_argument("--ad", type=positive_int, default=50000, metavar="N",
                   help="autoencoder-training grace, packets (default 50000)")
    p.add_argument("--max-ae", type=positive_int, default=10, metavar="M",
                   help="largest autoencoder, features (default 10)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--hidden-ratio", type=float, default=0.75)
    p.add_argument("--threshold", choices=("lognormal", "max"), default="lognormal",
                   help="alert threshold fitted on benign training scores")
    p.add_argument("--p-value", type=probability, default=1e-4, metavar="P",
                   help="log-normal threshold: survival probability of a benign score")


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, metavar="SCORES.csv", help="per-packet scores")
    p.add_argument("--alerts", type=Path, metavar="ALERTS.jsonl", help="one JSON line per alert")
    p.add_argument("--labels", type=existing_file, metavar="LABELS",
                   help="0/1 per packet: prints AUC and TPR at 0.1%% and 1%% FPR")


def _batches(path: Path, quiet: bool, limit: int | None = None) -> Iterator[PacketBatch]:
    from lego.ext.packets import open_trace

    reader = open_trace(path)
    seen = 0
    with packet_progress(f"{path.name}", enabled=not quiet) as advance:
        for batch in reader.batches(BATCH):
            if limit is not None and seen + len(batch) > limit:
                batch = batch.take(slice(0, limit - seen))
            seen += len(batch)
            advance(len(batch))
            yield batch
            if limit is not None and seen >= limit:
                break
    if reader.counters.get("malformed"):
        stderr.print(f"{path}: {reader.counters['malformed']} malformed frames (parsed as far "
                     "as their bytes go)")


def cmd_features(args: argparse.Namespace) -> int:
    extractor = make_extractor(args.semantics)
    rows = [extractor.process(b) for b in _batches(args.input, args.quiet, args.limit)]
    matrix = np.concatenate(rows) if rows else np.zeros((0, extractor.n_features))
    np.save(args.output, matrix)
    stderr.print(f"wrote {args.output}: {matrix.shape[0]} x {matrix.shape[1]} float64 "
                 f"({args.semantics} semantics)")
    return 0


def _fresh_nf(args: argparse.Namespace):
    from lego.nfs.kitsune.monolith import KitsuneNF

    return KitsuneNF.fresh(args.semantics, fm=args.fm, ad=args.ad, max_ae=args.max_ae,
                           lr=args.lr, hidden_ratio=args.hidden_ratio)


def cmd_train(args: argparse.Namespace) -> int:
    nf = _fresh_nf(args)
    need = args.fm + args.ad + 1
    for batch in _batches(args.input, args.quiet, limit=need):
        nf.process(batch)
    if not nf.trained:
        raise ConfigError(f"train: {args.input} has fewer than fm + ad + 1 = {need} packets")
    threshold = nf.fit_threshold(args.threshold, args.p_value)
    nf.kitnet.meta["semantics"] = args.semantics
    nf.kitnet.save(args.output)
    stderr.print(f"wrote {args.output}: {len(nf.kitnet.feature_map)} autoencoders over "
                 f"{nf.kitnet.n_features} {args.semantics} features, threshold {threshold:.6g}")
    return 0


@dataclass
class _Collected:
    seq: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    trained: list[np.ndarray] = field(default_factory=list)

    def add(self, s) -> None:
        self.seq.append(s.seq)
        self.score.append(s.score)
        self.trained.append(s.trained)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.seq:
            return np.zeros(0, np.uint64), np.zeros(0), np.zeros(0, bool)
        return tuple(np.concatenate(x) for x in (self.seq, self.score, self.trained))


@dataclass
class TraceScores:
    seq: np.ndarray
    score: np.ndarray
    trained: np.ndarray
    alert: np.ndarray
    threshold: float
    seconds: float


def score_trace(nf, path: Path, quiet: bool, fit: tuple[str, float] | None) -> TraceScores:
    """Stream a trace through the NF; fit the threshold when training ends (``fit``)."""
    collected = _Collected()
    start = time.perf_counter()
    for batch in _batches(path, quiet):
        collected.add(nf.process(batch))
        if fit is not None and nf.trained and nf.kitnet.threshold is None:
            nf.fit_threshold(*fit)
    seconds = time.perf_counter() - start
    seq, score, trained = collected.arrays()
    if nf.kitnet.threshold is None:
        raise ConfigError(f"{path}: the trace ended before KitNET finished training "
                          f"({nf.kitnet.n_trained} of {nf.kitnet.fm_grace + nf.kitnet.ad_grace + 1}"
                          " packets)")
    alert = trained & nf.kitnet.decide(score)
    return TraceScores(seq, score, trained, alert, nf.kitnet.threshold, seconds)


def write_outputs(result: TraceScores, scores_csv: Path | None, alerts_jsonl: Path | None) -> None:
    if scores_csv:
        table = np.column_stack([result.seq, result.score, result.trained, result.alert])
        np.savetxt(scores_csv, table, fmt=["%d", "%.17g", "%d", "%d"], delimiter=",",
                   header="seq,score,trained,alert", comments="")
    if alerts_jsonl:
        with open(alerts_jsonl, "w") as out:
            for i in np.flatnonzero(result.alert):
                out.write(json.dumps({"seq": int(result.seq[i]),
                                      "score": float(result.score[i])}) + "\n")


def detection(result: TraceScores, labels_file: Path) -> dict[str, float]:
    """AUC and TPR at low FPR over the packets the trained model scored."""
    return labelled_detection(result.seq, result.score, result.trained, labels_file)


def _report(args: argparse.Namespace, result: TraceScores) -> int:
    write_outputs(result, args.output, args.alerts)
    stderr.print(f"{len(result.seq)} packets scored, {int(result.trained.sum())} by the trained "
                 f"model, {int(result.alert.sum())} alerts (threshold {result.threshold:.6g})")
    if args.labels:
        report = detection(result, args.labels)
        stderr.print("  ".join(f"{k} = {v:.4f}" for k, v in report.items()))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from lego.ext.kitnet import KitNET
    from lego.nfs.kitsune.monolith import KitsuneNF

    kitnet = KitNET.load(args.model)
    semantics = kitnet.meta.get("semantics", "kitsune")
    nf = KitsuneNF(semantics, kitnet, keep_training_rows=False)
    if not nf.trained:
        raise ConfigError(f"{args.model}: the model is not trained")
    return _report(args, score_trace(nf, args.input, args.quiet, fit=None))


def cmd_run(args: argparse.Namespace) -> int:
    nf = _fresh_nf(args)
    status = _report(args, score_trace(nf, args.input, args.quiet,
                                       fit=(args.threshold, args.p_value)))
    if args.save_model:
        nf.kitnet.meta["semantics"] = args.semantics
        nf.kitnet.save(args.save_model)
    return status


def offline_run(trace: Path, options: dict, packets: int, results: Path,
                labels: Path | None, quiet: bool) -> dict:
    """One instance over a trace, trained on its first ``packets`` (``lego run
    --offline``): scores.csv and alerts.jsonl in ``results``; the summary."""
    from lego.nfs.kitsune.monolith import KitsuneNF
    from lego.nfs.kitsune.nf import training_graces

    fm, ad = training_graces(packets)
    nf = KitsuneNF.fresh(options["semantics"], fm=fm, ad=ad)
    result = score_trace(nf, trace, quiet, fit=("lognormal", 1e-4))
    write_outputs(result, results / "scores.csv", results / "alerts.jsonl")
    summary = {
        "trace": str(trace),
        "semantics": options["semantics"],
        "packets": int(len(result.seq)),
        "training packets": packets,
        "autoencoders": len(nf.kitnet.feature_map),
        "scored by the trained model": int(result.trained.sum()),
        "threshold": result.threshold,
        "alerts": int(result.alert.sum()),
        "seconds": round(result.seconds, 3),
        "packets/s (read + features + KitNET, training included)":
            round(len(result.seq) / result.seconds),
    }
    if labels is not None:
        summary.update({k: round(v, 4) for k, v in detection(result, labels).items()})
    return summary
