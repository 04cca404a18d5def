"""``lego lucid``: LUCID on captures (features, train, score, run)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lego.cli_args import existing_file, positive_int
from lego.progress import stderr

# the kernels are imported where used, so that `lego --help` works before `make build`


def register(subparsers: argparse._SubParsersAction) -> None:
    from lego.nfs.lucid.nf import DEFAULT_PACKETS, DEFAULT_WINDOW

    lucid = subparsers.add_parser("lucid", help="run the LUCID NF on captures")
    sub = lucid.add_subparsers(dest="lucid_command", metavar="ACTION", required=True)

    p = sub.add_parser("features", help="write the (flow, window) fragments (.npz)")
    _add_input(p, "--input", "-i")
    _add_window(p, DEFAULT_WINDOW, DEFAULT_PACKETS)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.npz")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train the CNN on labelled captures, save the model")
    _add_input(p, "--input", "-i", many=True)
    _add_window(p, DEFAULT_WINDOW, DEFAULT_PACKETS)
    _add_training(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.npz")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="classify a capture's fragments with a trained model")
    _add_input(p, "--input", "-i")
    p.add_argument("--model", type=existing_file, required=True, metavar="MODEL.npz")
    p.add_argument("--decisions", type=Path, metavar="OUT.csv",
                   help="one line per fragment: key, window, probability, decision")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("run", help="train on labelled captures, then score others")
    _add_input(p, "--train", many=True)
    p.add_argument("--test", type=existing_file, nargs="+", required=True, metavar="TRACE",
                   help="captures to score (labels as for --train, by position)")
    p.add_argument("--test-labels", type=existing_file, nargs="*", default=[], metavar="CSV")
    _add_window(p, DEFAULT_WINDOW, DEFAULT_PACKETS)
    _add_training(p)
    p.add_argument("--save-model", type=Path, metavar="MODEL.npz")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="the figures, as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="the detection figures of docs/lucid.md: models "
                       "trained on generated (and CIC) traffic, tested on real captures")
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[3] / "shared",
                   metavar="DIR", help="the shared data folder (default: ../shared)")
    p.add_argument("--out", type=Path, default=Path("results"), metavar="DIR")
    p.add_argument("--epochs", type=positive_int, default=1000)
    p.set_defaults(func=cmd_evaluate)


def _add_input(p: argparse.ArgumentParser, *flags: str, many: bool = False) -> None:
    p.add_argument(*flags, dest="input", type=existing_file, required=True, metavar="TRACE",
                   nargs="+" if many else None, help="pcap or pcapng capture")
    p.add_argument("--labels", type=existing_file, nargs="*" if many else None,
                   default=[] if many else None, metavar="CSV",
                   help="one 0/1 label per frame (a generated trace's .labels.csv)")
    p.add_argument("--pair", action="append", default=[], metavar="ATTACKER:VICTIM",
                   help="label flows between these addresses malicious (LUCID's labels)")


def _add_window(p: argparse.ArgumentParser, window: float, packets: int) -> None:
    p.add_argument("--window", "-t", type=float, default=window, metavar="T",
                   help=f"time window, seconds (default {window:g})")
    p.add_argument("--packets", "-n", type=positive_int, default=packets, metavar="N",
                   help=f"packets per fragment (default {packets})")


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filters", "-k", type=positive_int, default=64, metavar="K")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=positive_int, default=1024)
    p.add_argument("--epochs", type=positive_int, default=1000)
    p.add_argument("--patience", type=positive_int, default=10)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)


def _samples(traces, labels, pairs, t: float, n: int):
    from lego.nfs.lucid.detect import parse_pairs, samples

    _one_labelling(labels, pairs)
    if labels and len(labels) != len(traces):
        raise SystemExit(f"lego lucid: {len(labels)} label files for {len(traces)} captures "
                         "(give one per capture, in order)")
    xs, ys = [], []
    for i, trace in enumerate(traces):
        frags, y = samples(trace, t, n, labels[i] if labels else None, parse_pairs(pairs))
        stderr.print(f"{trace}: {len(y):,} fragments, {int(y.sum()):,} malicious")
        xs.append(frags.X)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _one_labelling(labels, pairs) -> None:
    if labels and pairs:
        raise SystemExit("lego lucid: --labels and --pair: give one way to label, not both")


def cmd_features(args: argparse.Namespace) -> int:
    from lego.nfs.lucid.detect import labels_for, parse_pairs
    from lego.nfs.lucid.features import extract

    start = time.perf_counter()
    _one_labelling(args.labels, args.pair)
    frags = extract(args.input, args.window, args.packets)
    seconds = time.perf_counter() - start
    packet_labels = None
    if args.labels:
        from lego.metrics import load_labels

        packet_labels = load_labels(args.labels)
    label = labels_for(frags, packet_labels, parse_pairs(args.pair))
    np.savez(args.output, key=frags.key, window=frags.window, label=label, npkts=frags.npkts,
             raw=frags.raw, X=frags.X, first_seen=frags.first_seen,
             t=np.float64(args.window), n=np.int64(args.packets))
    stderr.print(f"wrote {args.output}: {len(frags.window):,} fragments of "
                 f"{len(np.unique(frags.key, axis=0)):,} flows in {seconds:.2f} s")
    return 0


def _train(args: argparse.Namespace, X: np.ndarray, y: np.ndarray):
    from lego.nfs.lucid.cnn import train

    start = time.perf_counter()
    model, history = train(X, y, k=args.filters, lr=args.lr, batch=args.batch,
                           epochs=args.epochs, patience=args.patience, dropout=args.dropout,
                           seed=args.seed, window=args.window)
    stderr.print(f"trained on {len(y):,} fragments in {time.perf_counter() - start:.1f} s: "
                 f"best epoch {history.best_epoch + 1}, validation loss "
                 f"{history.val_loss[history.best_epoch]:.4f}, accuracy "
                 f"{history.val_accuracy[history.best_epoch]:.4f}")
    return model


def cmd_train(args: argparse.Namespace) -> int:
    X, y = _samples(args.input, args.labels, args.pair, args.window, args.packets)
    _train(args, X, y).save(args.output)
    stderr.print(f"wrote {args.output}")
    return 0


def _print_figures(name: str, m: dict) -> None:
    stderr.print(f"{name}: {m['tp'] + m['fp'] + m['tn'] + m['fn']:,} fragments  "
                 + "  ".join(f"{k} = {m[k]:.4f}" for k in ("accuracy", "f1", "tpr", "fpr")))


def cmd_score(args: argparse.Namespace) -> int:
    from lego.nfs.lucid.cnn import LucidCNN
    from lego.nfs.lucid.detect import labels_for, parse_pairs, write_decisions
    from lego.nfs.lucid.features import extract

    _one_labelling(args.labels, args.pair)
    model = LucidCNN.load(args.model)
    frags = extract(args.input, model.window, model.n)
    prob, decision = model.predict(frags.X)
    if args.decisions:
        write_decisions(args.decisions, frags, prob, decision)
    stderr.print(f"{args.input}: {len(prob):,} fragments, {int(decision.sum()):,} malicious")
    if args.labels or args.pair:
        from lego.metrics import load_labels
        from lego.nfs.lucid.cnn import metrics

        truth = labels_for(frags, load_labels(args.labels) if args.labels else None,
                           parse_pairs(args.pair))
        _print_figures(str(args.input), metrics(truth, decision, prob))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lego.nfs.lucid.detect import figures

    if args.test_labels and len(args.test_labels) != len(args.test):
        raise SystemExit(f"lego lucid run: {len(args.test_labels)} --test-labels for "
                         f"{len(args.test)} --test captures (give one per capture, in order)")
    X, y = _samples(args.input, args.labels, args.pair, args.window, args.packets)
    model = _train(args, X, y)
    if args.save_model:
        model.save(args.save_model)
    report = {}
    for i, trace in enumerate(args.test):
        labels = [args.test_labels[i]] if len(args.test_labels) > i else []
        Xt, yt = _samples([trace], labels, args.pair, args.window, args.packets)
        report[str(trace)] = m = figures(model, Xt, yt)
        _print_figures(str(trace), m)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lego.nfs.lucid.evaluate import evaluate

    evaluate(args.shared, args.out, args.epochs)
    print((args.out / "lucid_detection.md").read_text())
    return 0
