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
from edge_runtime import reference as R
from edge_runtime.metrics import wilson  # noqa: F401  (re-exported: the page and its tests use it from here)
from edge_runtime.operating_point import OUT_OF_SCOPE as OUT
from edge_runtime.operating_point import REFER


def normal_label(labels) -> str:
    for lab in labels:
        if lab.lower() in ("normal", "healthy", "no_finding"):
            return lab
    return labels[0]


def of_model(rows: list[dict], meta) -> tuple[list[dict], dict]:
    """The rows recorded under the model now served (same ``model_name`` and ``model_version``), and a count of
    the others: a kit upgrade keeps the history, and another model's probabilities, decisions and input-check
    distances say nothing about this one's (its accuracy, its drift, a site profile fitted for it)."""
    now = (meta.model_name, meta.model_version)
    mine = [r for r in rows if (r.get("model_name"), r.get("model_version")) == now]
    others = [r for r in rows if (r.get("model_name"), r.get("model_version")) != now]
    return mine, {"screenings": len(others), "confirmed": sum(1 for r in others if r.get("outcome"))}


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


# ----------------------------------------------------------------------------- drift, before outcomes show it
DRIFT_WINDOW = 50  # the last films the rolling figures cover
MIN_DRIFT_FILMS = 20  # fewer measured films in the window: no alert either way
EXPECTED_PAST = 0.02  # the input-check thresholds sit at 1.1 x the 99.5% quantile of the training films'
#                       distances, so well under 1% of films like them pass it; 2% leaves room


MIX_MIN_FILMS = 40  # in-scope decisions in the window before their mix is tested (chi-square needs counts)
MIX_ALPHA = 0.01  # the page is looked at again and again: a strict level keeps chance alerts rare


def mix_drift(rows: list[dict], reference: dict | None, window: int = DRIFT_WINDOW) -> dict:
    """The decision mix (normal / pneumonia / tuberculosis / refer) of the in-scope films among the last
    ``window`` against the mix the same operating point gave on the validation films (``metadata.reference``,
    ``edge_runtime.reference``): a chi-square test of homogeneity, both samples' noise counted, tested once
    ``MIX_MIN_FILMS`` in-scope decisions are in the window; it moves beyond chance when p < ``MIX_ALPHA``.
    A class mix that moves means other patients (a new programme, a referral clinic) or films the model reads
    differently; the referral share is part of it. Out-of-scope films are shown, not tested (validation films
    are all in scope; the input check has its own alert). ``reference`` None: no test (the bundle has none, or a
    site profile changed the rule the reference mix was counted under)."""
    recent = rows[-window:]
    scoped = [r["decision"] for r in recent if r["decision"] != OUT]
    ref = (reference or {}).get("decisions")
    out = {"n": len(scoped), "min": MIX_MIN_FILMS, "alpha": MIX_ALPHA, "available": bool(ref),
           "out_of_scope": _rate(len(recent) - len(scoped), len(recent)), "tested": False, "rows": []}
    if not ref:
        return out
    t = R.mix_test(dict(Counter(scoped)), ref)
    out.update(p=t["p"], chi2=t["chi2"], df=t["df"], n_ref=t["n_ref"], tested=len(scoped) >= MIX_MIN_FILMS)
    out["rows"] = [{"decision": c, "now": t["shares"][c], "ref": t["ref_shares"][c]} for c in t["shares"]]
    out["moved"] = out["tested"] and t["p"] < MIX_ALPHA
    return out


def drift(rows: list[dict], window: int = DRIFT_WINDOW, reference: dict | None = None) -> dict:
    """Rolling figures of the last ``window`` films (rows in the order recorded) and the alerts they raise.

    - share of films past the input-check threshold (embedding distance > 1) and the mean distance: alert when
      the share's 95% interval lies above ``EXPECTED_PAST`` (the training films themselves almost never pass);
    - mean distance, referral rate and decision mix against this device's first ``window`` films (once there
      are two windows): alert when the mean distance rose by over 25% and 3 standard errors, or when the
      referral rate's interval lies wholly above the first window's.
    - the decision mix against the validation films' (``mix_drift``; with ``reference``, the artifact's
      ``metadata.reference``): alert when it moves beyond chance.
    These move when a new X-ray unit or film processing arrives, before confirmed outcomes could show it."""
    measured = [r for r in rows if r.get("scope_distance") is not None]
    out = {"window": window, "available": bool(measured), "alerts": []}
    recent_all, first_all = rows[-window:], rows[:window] if len(rows) >= 2 * window else []
    d = np.array([r["scope_distance"] for r in measured[-window:]], np.float64)
    base = np.array([r["scope_distance"] for r in measured[:window]], np.float64) if len(measured) >= 2 * window else None
    out["past"] = _rate(int((d > 1).sum()), len(d))
    out["mean_distance"] = float(d.mean()) if len(d) else None
    out["baseline_mean_distance"] = float(base.mean()) if base is not None else None
    out["refer"] = _rate(sum(r["decision"] == REFER for r in recent_all), len(recent_all))
    out["baseline_refer"] = _rate(sum(r["decision"] == REFER for r in first_all), len(first_all)) if first_all else None
    out["mix"] = dict(Counter(r["decision"] for r in recent_all))
    if len(d) >= MIN_DRIFT_FILMS and out["past"]["ci"][0] > EXPECTED_PAST:
        out["alerts"].append(("drift.alert_past", {"share": out["past"]["value"], "n": len(d),
                                                   "lo": out["past"]["ci"][0], "hi": out["past"]["ci"][1]}))
    if base is not None and len(d) >= MIN_DRIFT_FILMS:
        se = math.sqrt(d.var(ddof=1) / len(d) + base.var(ddof=1) / len(base))
        if d.mean() > 1.25 * base.mean() and d.mean() - base.mean() > 3 * se:
            out["alerts"].append(("drift.alert_distance", {"now": float(d.mean()), "then": float(base.mean())}))
    b = out["baseline_refer"]
    if b and len(recent_all) >= MIN_DRIFT_FILMS and out["refer"]["ci"][0] > b["ci"][1]:
        out["alerts"].append(("drift.alert_refer", {"now": out["refer"]["value"], "then": b["value"]}))
    m = out["mix_vs_validation"] = mix_drift(rows, reference, window)
    if m.get("moved"):
        top = max(m["rows"], key=lambda r: abs(r["now"] - r["ref"]))
        out["alerts"].append(("drift.alert_mix", {"n": m["n"], "p": m["p"], "alpha": m["alpha"], "what": top["decision"],
                                                  "now": top["now"], "then": top["ref"]}))
    return out
