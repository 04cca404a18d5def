"""Detection metrics over per-packet scores and labels (no scikit-learn needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lego.errors import ConfigError


def load_labels(path: str | Path, n: int | None = None) -> np.ndarray:
    """Read one 0/1 label per line (Kitsune's label files; CRLF and a missing final
    newline are fine; a non-numeric first line is taken as a header)."""
    text = Path(path).read_text().split()
    if text and not text[0].lstrip("-").isdigit():
        text = text[1:]
    try:
        labels = np.array([int(v) for v in text], dtype=np.int8)
    except ValueError as exc:
        raise ConfigError(f"labels file {path}: expected one integer per line ({exc})") from None
    if not np.isin(labels, (0, 1)).all():
        raise ConfigError(f"labels file {path}: expected labels 0 or 1")
    if n is not None:
        if len(labels) < n:
            raise ConfigError(f"labels file {path}: expected at least {n} labels, "
                              f"got {len(labels)}")
        labels = labels[:n]
    return labels


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN if one class."""
    from scipy.stats import rankdata  # imported where used: it costs the CLI 0.5 s

    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """True-positive rate when the threshold lets a fraction ``fpr`` of benign through
    as alerts (threshold = the benign scores' (1 - fpr) quantile, strict >)."""
    benign, malicious = scores[labels == 0], scores[labels == 1]
    if len(benign) == 0 or len(malicious) == 0:
        return float("nan")
    threshold = np.quantile(benign, 1.0 - fpr, method="higher")
    return float((malicious > threshold).mean())


def detection_report(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(scores, labels),
        "tpr@0.1%fpr": tpr_at_fpr(scores, labels, 0.001),
        "tpr@1%fpr": tpr_at_fpr(scores, labels, 0.01),
    }


def labelled_detection(seq: np.ndarray, score: np.ndarray, scored: np.ndarray,
                       labels_file: str | Path) -> dict[str, float]:
    """:func:`detection_report` over the packets ``scored`` marks, each labelled by its
    sequence number (its index in the trace) from ``labels_file``."""
    n = int(seq.max()) + 1 if len(seq) else 0
    labels = load_labels(labels_file, n)[seq.astype(np.int64)]
    return detection_report(score[scored], labels[scored])


def decision_report(decision: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """TPR, FPR, precision and F1 of yes/no decisions against 0/1 labels (NaN where a
    denominator is empty)."""
    d, y = np.asarray(decision, dtype=bool), np.asarray(labels, dtype=bool)
    tp, fp = int((d & y).sum()), int((d & ~y).sum())
    fn, tn = int((~d & y).sum()), int((~d & ~y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"tpr": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn),
            "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "positives": tp + fn, "negatives": fp + tn}
