"""The device's own running figures, so a clinic sees drift early.

Two views of the screenings that have a confirmed outcome (out-of-scope images are left out: they got no result):
- *Screening* figures from the decision the technician saw: for a disease class, a screening is positive when the
  decision is that class or "refer" (a referral sends the patient to a clinician, which is what a positive
  screen does). "Any abnormal" treats every decision other than the normal class as positive.
- *Model* figures from the probabilities (argmax), by ``edge_runtime.metrics.classification_report``: the same
  code as training and the benchmark, so the numbers are comparable with the model page.
Each proportion carries a 95% Wilson interval: with a few dozen confirmed cases the interval is wide, and the
page says so rather than show a bare percentage.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict
from datetime import date, timedelta

import numpy as np

from edge_runtime import metrics
from edge_runtime.metrics import wilson  # noqa: F401  (re-exported: the page and its tests use it from here)
from edge_runtime.operating_point import OUT_OF_SCOPE as OUT
from edge_runtime.operating_point import REFER


def normal_label(labels) -> str:
    for lab in labels:
        if lab.lower() in ("normal", "healthy", "no_finding"):
            return lab
    return labels[0]


def _rate(k: int, n: int) -> dict:
    return {"k": k, "n": n, "value": (k / n) if n else None, "ci": wilson(k, n)}


def _screen_figures(y: np.ndarray, flagged: np.ndarray) -> dict:
    sens, spec = metrics.sens_spec_at(y, flagged.astype(float), 0.5)
    tp, fn = int((flagged & y).sum()), int((~flagged & y).sum())
    tn, fp = int((~flagged & ~y).sum()), int((flagged & ~y).sum())
    out = {"sensitivity": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp)}
    # the values come from the shared metrics module; the counts give the interval
    out["sensitivity"]["value"] = None if math.isnan(sens) else sens
    out["specificity"]["value"] = None if math.isnan(spec) else spec
    return out


def shares(rows: list[dict]) -> dict:
    n = len(rows)
    c = Counter(r["decision"] for r in rows)
    return {"n": n, "refer": _rate(c[REFER], n), "out_of_scope": _rate(c[OUT], n), "decisions": dict(c)}


def weekly(rows: list[dict], weeks: int = 8) -> list[dict]:
    """Share referred / out of scope per ISO week, newest first (the last ``weeks`` weeks with data)."""
    by = OrderedDict()
    for r in rows:
        y, w, _ = date.fromisoformat(r["created"][:10]).isocalendar()
        by.setdefault(f"{y}-W{w:02d}", []).append(r)
    out = [{"week": k, **shares(v)} for k, v in by.items()]
    return sorted(out, key=lambda d: d["week"], reverse=True)[:weeks]


def summarize(rows: list[dict], labels, today: date | None = None) -> dict:
    labels = list(labels)
    today = today or date.today()
    normal = normal_label(labels)
    recent = {d: [r for r in rows if r["created"][:10] >= (today - timedelta(days=d)).isoformat()]
              for d in (7, 30)}
    confirmed = [r for r in rows if r["outcome"] and r["in_scope"]]
    out = {
        "labels": labels, "normal": normal, "total": len(rows),
        "periods": {"7": shares(recent[7]), "30": shares(recent[30]), "all": shares(rows)},
        "weekly": weekly(rows),
        "confirmed": len(confirmed),
        "outcomes": dict(Counter(r["outcome"] for r in confirmed)),
        "screening": {}, "model": None,
    }
    if confirmed:
        outcome = np.array([r["outcome"] for r in confirmed])
        decision = np.array([r["decision"] for r in confirmed])
        y_any = outcome != normal
        out["screening"]["any_abnormal"] = _screen_figures(y_any, decision != normal)
        for lab in labels:
            if lab != normal:
                out["screening"][lab] = _screen_figures(outcome == lab, (decision == lab) | (decision == REFER))
    # model figures: confirmed outcomes within the current model's classes, scored by the current class order
    usable = [r for r in confirmed if r["outcome"] in labels and list(r["labels"]) == labels
              and all(k in r["probs"] for k in labels)]
    if len(usable) >= 2:
        y = np.array([labels.index(r["outcome"]) for r in usable])
        p = np.array([[r["probs"][k] for k in labels] for r in usable], np.float64)
        rep = metrics.classification_report(y, p, labels)
        out["model"] = {"n": rep["n"], "accuracy": rep["accuracy"], "macro_auc": rep["macro_auc"],
                        "per_class": rep["per_class"]}
    return out
