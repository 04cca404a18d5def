"""``lego lucid evaluate``: LUCID's detection figures on the data this project has.

LUCID's CNN (k = 64, h = 3, lr 0.01, batch 1024, early stopping on a 10 % validation
split, seed 0) on 10t-10n fragments, three models:

1. **generated**: trained on one generated trace (seed 1, labels per packet);
2. **+ CIC attacks**: and on the first half (by frame) of each CIC-DDoS2019 capture;
3. **+ real benign**: and on the first half of each real benign capture.

Each is tested on another generated trace (seed 2) and on the second half of every
real capture; next to them, LUCID's published figures on CIC-DDoS2019 (the reference
repository's README, its DOS2019 sample test set: 749 samples, 43.7 % DDoS), whose
benign traffic (CIC's own captures) is not available here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lego.nfs.lucid.cnn import train
from lego.nfs.lucid.detect import figures, generated_samples, samples

CIC = ("172.16.0.5", "192.168.50.4"), ("172.16.0.5", "192.168.50.1")
PUBLISHED = {"accuracy": 0.9947, "f1": 0.9939, "tpr": 0.9909, "fpr": 0.0024}


@dataclass
class TestSet:
    name: str
    X: np.ndarray
    y: np.ndarray


def _generated(seed: int, out: Path) -> tuple[np.ndarray, np.ndarray]:
    frags, y = generated_samples(out, seed, 10.0, 10)
    return frags.X, y


def _halves(path: Path) -> tuple[TestSet, TestSet]:
    """A capture's fragments cut in two by the frame that opened each."""
    frags, y = samples(path, 10.0, 10, pairs=CIC)
    first = frags.first_seen < np.median(frags.first_seen)
    return (TestSet(path.name, frags.X[first], y[first]),
            TestSet(path.name, frags.X[~first], y[~first]))


ATTACKS = ("cic-ddos2019/synflood.pcap", "cic-ddos2019/webddos.pcap")
BENIGN = ("netspot_wifi.pcap", "netspot_openflow.pcapng", "kitsune_mirai_first2000.pcap")


def evaluate(shared: Path, out: Path, epochs: int = 1000) -> dict:
    """Train the three models, score every test set; the figures (and a markdown table
    in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    Xg, yg = _generated(1, out)
    Xg2, yg2 = _generated(2, out)
    attacks = [_halves(shared / "data" / name) for name in ATTACKS]
    benign = [_halves(shared / "data" / name) for name in BENIGN]
    tests = [TestSet("generated seed 2", Xg2, yg2)] + [
        TestSet(f"{second.name}, 2nd half", second.X, second.y)
        for _, second in attacks + benign]
    training = {"generated": [], "+ CIC attacks, 1st halves": attacks,
                "+ real benign, 1st halves": attacks + benign}
    report = {}
    for name, extra in training.items():
        X = np.concatenate([Xg] + [first.X for first, _ in extra])
        y = np.concatenate([yg] + [first.y for first, _ in extra])
        model = train(X, y, epochs=epochs, seed=0, window=10.0)[0]
        report[name] = {t.name: figures(model, t.X, t.y) for t in tests}
    (out / "lucid_detection.json").write_text(json.dumps(report, indent=2, default=float))
    (out / "lucid_detection.md").write_text(to_markdown(report))
    return report


def to_markdown(report: dict) -> str:
    lines = ["| model | test set | fragments | malicious | accuracy | F1 | TPR | FPR |",
             "|---|---|---|---|---|---|---|---|"]

    def f(x: float) -> str:
        return "-" if x != x else f"{x:.4f}"

    for model, sets in report.items():
        for name, m in sets.items():
            total = m["tp"] + m["fp"] + m["tn"] + m["fn"]
            lines.append(f"| {model} | {name} | {total:,} | {m['tp'] + m['fn']:,} | "
                         f"{f(m['accuracy'])} | {f(m['f1'])} | {f(m['tpr'])} | {f(m['fpr'])} |")
    lines.append(f"| LUCID (reference README) | CIC-DDoS2019 sample test set | 749 | 327 | "
                 f"{PUBLISHED['accuracy']} | {PUBLISHED['f1']} | {PUBLISHED['tpr']} | "
                 f"{PUBLISHED['fpr']} |")
    return "\n".join(lines) + "\n"
