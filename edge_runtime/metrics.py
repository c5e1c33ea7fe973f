"""The one metrics module (numpy only): training, the benchmark and the device's monitoring all call it.

Conventions: ``y_true`` is an int array of class indices, ``probs`` an (N, C) array of probabilities in
the metadata's class order.
"""
from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties get half credit); NaN when a class is absent."""
    y = np.asarray(y, bool)
    score = np.asarray(score, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and the thresholds (descending), as sklearn gives them."""
    y = np.asarray(y, bool)
    score = np.asarray(score, np.float64)
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(yy)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(yy.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~yy).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def threshold_for_sensitivity(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches ``target``."""
    pos = np.sort(np.asarray(score, np.float64)[np.asarray(y, bool)])[::-1]
    if len(pos) == 0:
        return float("nan")
    # round first: 0.55 * 100 is 55.000000000000007 in floating point, and its ceiling would keep one film too many
    k = int(np.ceil(round(target * len(pos), 9))) - 1
    return float(pos[min(max(k, 0), len(pos) - 1)])


def threshold_in_gap(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """A threshold with the validation sensitivity and specificity of :func:`threshold_for_sensitivity`, moved
    down to the middle of the gap between the chosen score and the next lower score of any image.

    The highest such threshold sits exactly on a validation score; with INT8 outputs many films share the
    saturated top value, and any rounding between where the threshold was fitted and where it is applied
    (another runtime, float32 against float64) then decides whether all of them pass or none. In the gap
    the validation operating point is the same and small numeric differences no longer flip it."""
    t = threshold_for_sensitivity(y, score, target)
    if not np.isfinite(t):
        return t
    score = np.asarray(score, np.float64)
    below = score[score < t]
    if not len(below):
        return t
    mid = (t + below.max()) / 2
    return float(mid) if mid > below.max() else t  # adjacent doubles: the midpoint rounds onto the lower score


def sens_spec_at(y: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    y = np.asarray(y, bool)
    pred = np.asarray(score) >= threshold
    sens = float((pred & y).sum() / y.sum()) if y.any() else float("nan")
    spec = float((~pred & ~y).sum() / (~y).sum()) if (~y).any() else float("nan")
    return sens, spec


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def confidence_gap(y_true, probs) -> float:
    """Mean top probability minus accuracy: > 0 over-confident, < 0 under-confident (ECE, unsigned, cannot say
    which). NaN without films."""
    probs = np.asarray(probs, np.float64)
    if not len(probs):
        return float("nan")
    return float(probs.max(axis=1).mean() - (probs.argmax(axis=1) == np.asarray(y_true)).mean())


def _safe_div(a, b):
    return float(a / b) if b else float("nan")


def classification_report(y_true, probs, labels: list[str], *, tb_label: str = "tuberculosis",
                          tb_sensitivity: float = 0.9) -> dict:
    """Every figure the project reports for one set of predictions, as a JSON-ready dict."""
    y_true = np.asarray(y_true, int)
    probs = np.asarray(probs, np.float64)
    c = len(labels)
    if probs.ndim != 2 or probs.shape != (len(y_true), c):
        raise ValueError(f"probs must have shape ({len(y_true)}, {c}), got {probs.shape}")
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, c)
    per_class = {}
    f1s, aucs = [], []
    for i, name in enumerate(labels):
        tp = cm[i, i]
        fn = cm[i].sum() - tp
        fp = cm[:, i].sum() - tp
        tn = cm.sum() - tp - fn - fp
        sens, spec, prec = _safe_div(tp, tp + fn), _safe_div(tn, tn + fp), _safe_div(tp, tp + fp)
        f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
        auc = binary_auc(y_true == i, probs[:, i])
        per_class[name] = {"support": int(tp + fn), "sensitivity": sens, "specificity": spec,
                           "precision": prec, "f1": f1, "auc": auc}
        if tp + fn > 0:
            f1s.append(f1)
            aucs.append(auc)
    report = {
        "n": int(len(y_true)),
        "accuracy": _safe_div((y_pred == y_true).sum(), len(y_true)),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "macro_auc": float(np.nanmean(aucs)) if aucs and not np.all(np.isnan(aucs)) else float("nan"),
        "ece": expected_calibration_error(y_true, probs) if len(y_true) else float("nan"),
        "confidence_gap": confidence_gap(y_true, probs),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if tb_label in labels:
        i = labels.index(tb_label)
        y_tb = y_true == i
        if y_tb.any() and (~y_tb).any():
            thr = threshold_for_sensitivity(y_tb, probs[:, i], tb_sensitivity)
            sens, spec = sens_spec_at(y_tb, probs[:, i], thr)
            report["tb_operating_point"] = {"target_sensitivity": tb_sensitivity, "threshold": thr,
                                            "sensitivity": sens, "specificity": spec}
    return report


def report_by_source(y_true, probs, sources, labels: list[str], **kw) -> dict:
    """``{"pooled": report, "by_source": {source: report}}``."""
    y_true, probs, sources = np.asarray(y_true), np.asarray(probs), np.asarray(sources)
    out = {"pooled": classification_report(y_true, probs, labels, **kw), "by_source": {}}
    for src in sorted(set(sources.tolist())):
        m = sources == src
        out["by_source"][src] = classification_report(y_true[m], probs[m], labels, **kw)
    return out


def agreement(probs, reference) -> dict:
    """Top-1 agreement and the largest absolute probability difference between two models' outputs on the
    same images (NaN when the shapes differ or there are no images)."""
    p, r = np.asarray(probs, np.float64), np.asarray(reference, np.float64)
    if p.shape != r.shape or not len(p):
        return {"agreement": float("nan"), "max_prob_diff": float("nan")}
    return {"agreement": float((p.argmax(1) == r.argmax(1)).mean()), "max_prob_diff": float(np.abs(p - r).max())}


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of the proportion k/n (None when n == 0): honest at small n and near 0 or 1."""
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)
