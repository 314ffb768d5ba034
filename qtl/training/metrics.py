"""Classification metrics from labels and class probabilities (numpy only; no scikit-learn).

    labels: (N,) integer class indices in [0, C)
    probs:  (N, C) class probabilities (rows sum to 1); preds = probs.argmax(1)

`compute_metrics` bundles everything as plain Python values (JSON-safe) for the CLI and the app.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _labels(labels) -> np.ndarray:
    a = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).reshape(-1)
    return a


def _probs(probs) -> np.ndarray:
    a = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {a.shape}")
    return a


def accuracy(labels, preds) -> float:
    """Share of predictions equal to the labels; NaN for no samples."""
    y, p = _labels(labels), _labels(preds)
    if y.shape != p.shape:
        raise ValueError(f"labels and preds differ in length: {len(y)} vs {len(p)}")
    return float((y == p).mean()) if len(y) else math.nan


def confusion_matrix(labels, preds, n_classes: int) -> np.ndarray:
    """(C, C) int counts: entry [i, j] is the number of samples of true class i predicted as j."""
    y, p = _labels(labels), _labels(preds)
    if len(y) and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= n_classes):
        raise ValueError(f"labels and preds must lie in [0, {n_classes})")
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall_f1(labels, preds, n_classes: int) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (each (C,), 0 where undefined) and support (C,) true counts."""
    cm = confusion_matrix(labels, preds, n_classes).astype(np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def binary_auc(positive, scores) -> float:
    """Area under the ROC curve for boolean `positive` (N,) and real `scores` (N,); ties count one half.

    Computed as the Mann-Whitney U statistic from average ranks. NaN when one class is absent.
    """
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average rank (1-based) within each group of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_auc(labels, probs) -> float:
    """ROC-AUC: binary (score = probs[:, 1]) for C == 2, else the macro mean of one-vs-rest AUCs.

    Classes with no positive or no negative sample are left out of the mean; NaN if none is defined.
    """
    y, p = _labels(labels), _probs(probs)
    if p.shape[0] != len(y):
        raise ValueError(f"labels and probs differ in length: {len(y)} vs {p.shape[0]}")
    if p.shape[1] == 2:
        return binary_auc(y == 1, p[:, 1])
    aucs = [binary_auc(y == c, p[:, c]) for c in range(p.shape[1])]
    defined = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(defined)) if defined else math.nan


def log_loss(labels, probs, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true class (the cross-entropy loss)."""
    y, p = _labels(labels), _probs(probs)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0)).mean()) if len(y) else math.nan


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def compute_metrics(labels, probs, class_names: Sequence[str] | None = None) -> dict:
    """All metrics as plain values: accuracy, loss, roc_auc (None if undefined), macro precision /
    recall / F1, per_class {name: {precision, recall, f1, support}}, confusion_matrix (list of lists,
    rows = true class), class_names and n."""
    y, p = _labels(labels), _probs(probs)
    n_classes = p.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} probability columns")
    preds = p.argmax(1)
    prf = precision_recall_f1(y, preds, n_classes)
    return {
        "n": int(len(y)),
        "accuracy": _clean(accuracy(y, preds)),
        "loss": _clean(log_loss(y, p)),
        "roc_auc": _clean(roc_auc(y, p)),
        "macro_precision": float(prf["precision"].mean()),
        "macro_recall": float(prf["recall"].mean()),
        "macro_f1": float(prf["f1"].mean()),
        "per_class": {
            name: {
                "precision": float(prf["precision"][i]),
                "recall": float(prf["recall"][i]),
                "f1": float(prf["f1"][i]),
                "support": int(prf["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion_matrix(y, preds, n_classes).tolist(),
        "class_names": names,
    }
