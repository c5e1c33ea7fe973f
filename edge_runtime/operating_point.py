"""The operating point: how a model's raw probabilities become a decision, in one place.

Training (``train.evaluate``), conversion (each artifact fitted on its own validation outputs), the device
(``Classifier.classify``), the benchmark and the study all call this module, so a threshold means the same
thing everywhere. A site profile (``edge_runtime.site``: a clinic's own thresholds) is one more input to the same decision.

Decision rule, in order (the numbers are chosen on validation data and stored in the metadata):
1. the image fails the input check          -> "out_of_scope" (no diagnosis shown)
2. P(tuberculosis) >= the TB threshold      -> "tuberculosis" (threshold fitted for 95% TB sensitivity on
                                               validation, so that unseen films keep the 90% screening bar)
3. top probability < ``refer_below``         -> "refer" (the model is unsure: refer to a clinician; the threshold
                                               fitted so that the films kept reach 90% accuracy, or, with a share
                                               (a recipe's ``[convert] refer-share``), so that that share of the
                                               validation films not flagged TB is referred)
4. otherwise the most probable class.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_runtime import metrics as M
from edge_runtime import reference as R

TB = "tuberculosis"
REFER = "refer"
OUT_OF_SCOPE = "out_of_scope"
TB_SENSITIVITY = 0.90  # the goal, WHO screening bar: sensitivity >= 90% with specificity >= 70%
# What the stored TB threshold is fitted for on validation films: a margin over the goal, since a threshold fitted
# for exactly 90% on ~40 validation TB films leaves unseen films below 90% about half the time. Measured out of fold
# (docs/cv5v, operating-point what-if, the same trainings, folds 0-2): fitted for 90%, unseen TB sensitivity 0.902
# (0.897 over 5 folds in docs/views); fitted for 95%, 0.966 at a specificity of 0.994 (from 0.998), nothing else moved.
# Bundles converted before 2026-12-03 were fitted for 90% (their metadata records no target).
TB_FIT_SENSITIVITY = 0.95
PNEUMONIA = "pneumonia"
PNEUMONIA_SENSITIVITY = 0.85  # issue 16's goal for the pneumonia operating point on unseen films (reported, not applied)
# What the stored pneumonia point is fitted for on validation films: a margin over the goal, as TB's. Fitted for 85%
# on ~50 validation pneumonia films per fold, unseen films got 0.837 (the served pair, five folds out of fold); fitted
# for 90%, 0.892 at an NIH-normal specificity of 0.643 (from 0.714) (docs/lpft/PLAN.md stage 4, docs/lpft/point90.md).
# Bundles record it (operating point report, "pneumonia", "target_sensitivity"); converted before 2026-12-05: 85%.
PNEUMONIA_FIT_SENSITIVITY = 0.90
PNEUMONIA_FIT_BEFORE = 0.85  # what the point was fitted for before 2026-12-05 (a record without its target)
REFER_TARGET_ACCURACY = 0.90  # refer images below the confidence at which accepted validation images reach this
REFER_GRID = np.round(np.arange(0.0, 0.96, 0.01), 2)  # the refer thresholds tried, lowest first


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling on probabilities (log-probabilities are logits up to a constant): logits / T.

    Always float64: a threshold fitted on float32 probabilities and applied to float64 ones (or the reverse)
    disagrees exactly where an INT8 model saturates (p = 1.0 in float32 is 0.99999997 in float64), and a TB
    threshold sitting there then flags no film at all."""
    probs = np.asarray(probs, np.float64)
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class OperatingPoint:
    """Temperature and thresholds of one artifact (``ModelMetadata.operating_point``)."""

    labels: tuple[str, ...]
    temperature: float = 1.0
    thresholds: dict = field(default_factory=dict)  # {"tuberculosis": t, "refer_below": r}

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return calibrate(raw, self.temperature)

    def decide_batch(self, probs: np.ndarray) -> np.ndarray:
        """The decision (a label, or "refer") for each row of calibrated probabilities (all in scope)."""
        return np.array([decide(p, self)[0] for p in np.asarray(probs, np.float64)], dtype=object)


def decide(probs: np.ndarray, op, in_scope: bool = True, scope_reason: str = "") -> tuple[str, str]:
    """(decision, reason) for calibrated probabilities; ``op`` has ``labels`` and ``thresholds`` (an
    :class:`OperatingPoint`, or a ``ModelMetadata`` resolved for its artifact). The reason is English text (the
    CLI's); :func:`decide_coded` gives the same decision with a code and its numbers, for other languages."""
    decision, code, args = decide_coded(probs, op, None if in_scope else {"code": OOS_UNKNOWN})
    if not in_scope and scope_reason:
        return decision, scope_reason
    return decision, reason_text(code, args)


OOS_UNKNOWN = "oos_unknown"
# English sentences for each reason code (the CLI and the CSV's "reason" column); the web page renders the
# same codes through its catalogues (edge_runtime/web/messages/*.json, keys "reason.<code>").
REASONS_EN = {
    "tb_at_threshold": "TB probability {p:.2f} is at or above the screening threshold {threshold:.2f} (set on "
                       "validation films to catch at least 9 in 10 TB films): refer for confirmatory testing",
    "unsure": "the model is unsure (top probability {p:.2f} < {threshold:.2f}): refer to a clinician",
    "most_probable": "most probable class ({p:.2f})",
    "oos_shape": "image shape {width}x{height} is not that of a chest radiograph",
    "oos_low_resolution": "the image is only {width}x{height} pixels (a film needs at least {min_side} on its "
                          "short side): export the film at full resolution, not a thumbnail",
    "oos_blank": "image is blank or nearly uniform",
    "oos_few_levels": "the image has only {levels} grey levels: a drawing or graphic, not a radiograph",
    "oos_saturated": "{fraction:.0%} of the image is black or white (saturated or not a radiograph)",
    "oos_orientation": "the film seems {view_text} (probability {p:.2f}): check how it was loaded or exported, "
                       "then screen it again",
    "oos_unlike_training": "the image is unlike the chest radiographs the model was trained on "
                           "(embedding distance {distance:.2f} x the threshold)",
    OOS_UNKNOWN: "not recognised as a frontal chest radiograph",
}
ORIENTATION_VIEWS = {"rotated_ccw": "rotated a quarter turn (anticlockwise)", "upside_down": "upside down",
                     "rotated_cw": "rotated a quarter turn (clockwise)", "inverted": "grey levels inverted (negative)"}


def reason_text(code: str, args: dict | None = None) -> str:
    """The English sentence of a reason code and its numbers (unknown code: the code itself)."""
    args = dict(args or {})
    if "view" in args:
        args["view_text"] = ORIENTATION_VIEWS.get(args["view"], str(args["view"]))
    try:
        return REASONS_EN[code].format(**args)
    except (KeyError, ValueError, TypeError):
        return code.replace("_", " ")


def decide_coded(probs: np.ndarray, op, problem: dict | None = None) -> tuple[str, str, dict]:
    """(decision, reason code, reason numbers) for calibrated probabilities. ``problem`` is the input check's
    finding ({"code": ..., **numbers}) or None when the image is in scope."""
    if problem is not None:
        args = {k: v for k, v in problem.items() if k != "code"}
        return OUT_OF_SCOPE, problem.get("code") or OOS_UNKNOWN, args
    labels = list(op.labels)
    thr = op.thresholds
    if TB in labels and TB in thr and probs[labels.index(TB)] >= thr[TB]:
        return TB, "tb_at_threshold", {"p": round(float(probs[labels.index(TB)]), 4), "threshold": float(thr[TB])}
    top = int(np.argmax(probs))
    if probs[top] < thr.get("refer_below", 0.0):
        return REFER, "unsure", {"p": round(float(probs[top]), 4), "threshold": float(thr["refer_below"])}
    return labels[top], "most_probable", {"p": round(float(probs[top]), 4)}


# ----------------------------------------------------------------------------- fitting on validation
TEMPERATURE_GRID = (0.25, 8.0)  # where a fitted temperature usually lies (121 log-spaced points)
TEMPERATURE_WIDEST = (1 / 64, 64.0)  # an optimum on the usual grid's edge is searched for out to here


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """Temperature minimising the validation negative log-likelihood (grid search, robust on small sets)."""
    return fit_temperature_report(y, probs)["temperature"]


TEMPERATURE_WARNINGS_EN = {  # fit_temperature_report's warning codes in English (the reports); a page words each
    #                           code in its reader's language from the same raw numbers (site.warn_<code>)
    "temperature_edge_flat": "the fitted temperature sits on the edge of the widest search ({temperature:.3g}; "
                             "searched {lo:.3g}-{hi:.3g}): the likelihood keeps rising as the probabilities flatten, "
                             "so these scores say little about these labels; do not rely on this temperature",
    "temperature_edge_sharp": "the fitted temperature sits on the edge of the widest search ({temperature:.3g}; "
                              "searched {lo:.3g}-{hi:.3g}): the likelihood keeps rising as the probabilities "
                              "sharpen; do not rely on this temperature",
    "temperature_outside_over": "the fitted temperature {temperature:.3g} lies outside the usual range {lo:g}-{hi:g} "
                                "(the search was widened to find it): the scores are far more confident than they "
                                "are right on these films",
    "temperature_outside_under": "the fitted temperature {temperature:.3g} lies outside the usual range {lo:g}-{hi:g} "
                                 "(the search was widened to find it): the scores are far less confident than they "
                                 "are right on these films",
}


def fit_temperature_report(y: np.ndarray, probs: np.ndarray) -> dict:
    """``fit_temperature`` with how it was found: ``{"temperature", "searched", "widened", "at_edge", "warning",
    "warning_code", "warning_fields"}`` (the warning in English, and as a code with its raw numbers).

    The NLL is searched on ``TEMPERATURE_GRID``; when its minimum lies on an edge of it (say 8.0), the search
    goes on, on that side, out to ``TEMPERATURE_WIDEST``. A temperature found out there, or still on the edge,
    comes with a warning: the scores are far more (or less) confident than they are right, and a temperature
    still on the widest edge means the NLL keeps falling as the probabilities flatten (the scores say little
    about these labels), so the number is a bound, not an estimate."""
    y = np.asarray(y, int)

    def nll(t):
        p = calibrate(probs, float(t))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)))

    def search(lo, hi, n):
        grid = np.exp(np.linspace(np.log(lo), np.log(hi), n))
        i = int(np.argmin([nll(t) for t in grid]))
        return float(grid[i]), i, n - 1

    lo, hi = TEMPERATURE_GRID
    t, i, last = search(lo, hi, 121)
    widened = edge = False
    if i == 0:  # the optimum may lie below the usual grid: search down to the widest low end
        widened, (lo, hi) = True, (TEMPERATURE_WIDEST[0], TEMPERATURE_GRID[0])
        t, i, last = search(lo, hi, 61)
        edge = i == 0
    elif i == last:
        widened, (lo, hi) = True, (TEMPERATURE_GRID[1], TEMPERATURE_WIDEST[1])
        t, i, last = search(lo, hi, 61)
        edge = i == last
    code, fields = "", {"temperature": t}
    if edge:
        code = "temperature_edge_" + ("flat" if t > 1 else "sharp")
        fields.update(lo=TEMPERATURE_WIDEST[0], hi=TEMPERATURE_WIDEST[1])
    elif widened and not TEMPERATURE_GRID[0] / 1.001 < t < TEMPERATURE_GRID[1] * 1.001:
        code = "temperature_outside_" + ("over" if t > 1 else "under")
        fields.update(lo=TEMPERATURE_GRID[0], hi=TEMPERATURE_GRID[1])
    warning = TEMPERATURE_WARNINGS_EN[code].format(**fields) if code else ""
    searched = [min(lo, TEMPERATURE_GRID[0]), max(hi, TEMPERATURE_GRID[1])]
    return {"temperature": t, "searched": searched, "widened": widened, "at_edge": bool(edge), "warning": warning,
            "warning_code": code, "warning_fields": fields if code else {}}


def fit_class_bias(y: np.ndarray, probs: np.ndarray, steps: int = 3000, lr: float = 0.5) -> np.ndarray:
    """Per-class log-prior correction ``b`` (``b[0] = 0``) minimising the validation NLL of
    ``apply_class_bias(probs, b)``: moves the top-class boundaries where the validation films put them (a model
    trained with class weights over-calls the classes it was weighted towards). Convex; plain gradient descent.
    Measured as a what-if (``benchmarks.crossval --class-bias``); the device does not apply it."""
    y = np.asarray(y, int)
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0))
    onehot = np.eye(logp.shape[1])[y]
    b = np.zeros(logp.shape[1])
    for _ in range(steps):
        z = logp + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        b -= lr * (p - onehot).mean(0)
        b -= b[0]
    return b


def apply_class_bias(probs: np.ndarray, bias) -> np.ndarray:
    """Probabilities with ``bias`` added to their logarithms, renormalised."""
    z = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)) + np.asarray(bias, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def fit(y: np.ndarray, raw: np.ndarray, labels: list[str], refer_share: float | None = None) -> dict:
    """Temperature, thresholds and their validation report for one model's raw validation probabilities, and the
    summary of its calibrated scores and decisions there (``edge_runtime.reference``: what a site is compared with).
    ``refer_share``: the refer threshold refers that share of the films (``choose_operating_points``)."""
    y = np.asarray(y, int)
    tfit = fit_temperature_report(y, raw)
    temperature = tfit["temperature"]
    cal = calibrate(raw, temperature)
    thresholds, report = choose_operating_points(y, cal, labels, refer_share=refer_share)
    report["calibration"] = {"temperature": temperature, "temperature_warning": tfit["warning"],
                             "val_ece_before": M.expected_calibration_error(y, raw),
                             "val_ece_after": M.expected_calibration_error(y, cal)}
    decisions = OperatingPoint(tuple(labels), temperature, thresholds).decide_batch(cal)
    return {"temperature": temperature, "thresholds": thresholds, "operating_point": report,
            "reference": R.summarize(y, cal, labels, decisions)}


def choose_operating_points(y: np.ndarray, probs: np.ndarray, labels: list[str],
                            target_accuracy: float = REFER_TARGET_ACCURACY,
                            tb_sensitivity: float = TB_FIT_SENSITIVITY,
                            refer_share: float | None = None,
                            pneumonia_sensitivity: float = PNEUMONIA_FIT_SENSITIVITY) -> tuple[dict, dict]:
    """(thresholds, report) from calibrated validation probabilities: the TB threshold for ``tb_sensitivity``
    (in the gap below the chosen score), then the lowest refer threshold (0.00, 0.01, ... 0.95) at which the
    images neither flagged TB nor referred reach ``target_accuracy``; with ``refer_share``, the refer threshold
    that refers that share of the images not flagged TB instead (``fit_refer_share``: a quantile, steadier;
    docs/refer-share)."""
    y = np.asarray(y, int)
    thresholds, report = {}, {}
    is_tb = np.zeros(len(y), bool)
    if TB in labels:
        i = labels.index(TB)
        pos = y == i
        if pos.any() and (~pos).any():
            t = M.threshold_in_gap(pos, probs[:, i], tb_sensitivity)
            thresholds[TB] = t
            sens, spec = M.sens_spec_at(pos, probs[:, i], t)
            report["tb"] = {"threshold": t, "target_sensitivity": tb_sensitivity, "val_sensitivity": sens,
                            "val_specificity": spec}
            is_tb = probs[:, i] >= t
    if (pn := pneumonia_point(y, probs, labels, pneumonia_sensitivity)) is not None:
        report["pneumonia"] = pn
    top, pred = probs.max(1), probs.argmax(1)
    rest = ~is_tb
    chosen = fit_refer_below(y, probs, is_tb, target_accuracy) if refer_share is None else \
        fit_refer_share(probs, is_tb, refer_share)
    thresholds["refer_below"] = chosen
    keep = rest & (top >= chosen)
    report["refer"] = {"refer_below": chosen, "target_accuracy": target_accuracy,
                       **({} if refer_share is None else {"target_share": float(refer_share)}),
                       "val_refer_fraction": float((rest & (top < chosen)).mean()),
                       "val_accuracy_not_referred": float((pred[keep] == y[keep]).mean()) if keep.any() else float("nan")}
    return thresholds, report


def fit_refer_below(y: np.ndarray, probs: np.ndarray, is_tb: np.ndarray,
                    target_accuracy: float = REFER_TARGET_ACCURACY) -> float:
    """The lowest refer threshold of ``REFER_GRID`` at which the films not flagged TB (``is_tb`` False) and not
    referred reach ``target_accuracy`` (0.95 when none does). ``probs`` are calibrated; the films may come from
    several models, each calibrated by its own temperature and flagged by its own TB threshold (a refer threshold
    fitted once for a recipe on a cross-validation's pooled validation films, ``benchmarks.crossval --refer-pooled``)."""
    y, probs = np.asarray(y, int), np.asarray(probs, np.float64)
    top, right, rest = probs.max(1), probs.argmax(1) == y, ~np.asarray(is_tb, bool)
    for c in REFER_GRID:
        keep = rest & (top >= c)
        if keep.any() and right[keep].mean() >= target_accuracy:
            return float(c)
    return float(REFER_GRID[-1])


def refer_share(probs: np.ndarray, is_tb: np.ndarray, refer_below: float) -> float:
    """The share of the films not flagged TB whose top probability lies below ``refer_below`` (referred)."""
    top = np.asarray(probs, np.float64).max(1)[~np.asarray(is_tb, bool)]
    return float((top < refer_below).mean()) if len(top) else 0.0


def fit_refer_share(probs: np.ndarray, is_tb: np.ndarray, share: float) -> float:
    """The refer threshold that refers ``share`` of the films not flagged TB: the ``share`` quantile of their top
    probability. A quantile moves smoothly with the films (its error shrinks as 1/sqrt(n)), where
    ``fit_refer_below``'s crossing of a flat kept-accuracy curve can jump (docs/refer-share/PLAN.md)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a share of films is between 0 and 1, got {share}")
    top = np.asarray(probs, np.float64).max(1)[~np.asarray(is_tb, bool)]
    return float(np.quantile(top, share)) if len(top) else 0.0


def pneumonia_point(y, probs, labels, sensitivity: float = PNEUMONIA_FIT_SENSITIVITY) -> dict | None:
    """The P(pneumonia) threshold for ``sensitivity`` among the normal and pneumonia films (in the gap below the
    chosen score, as TB's), with its validation sensitivity and specificity. Stored in the operating-point report
    and scored on test films by the benchmarks; the device's decision rule does not apply it (``applied``: False):
    flagging pneumonia that low, or refusing a normal decision above it, was measured to cost referrals or
    accuracy of the decisions kept (issue 16 notes)."""
    labels = list(labels)
    if PNEUMONIA not in labels or "normal" not in labels:
        return None
    y, probs = np.asarray(y, int), np.asarray(probs, np.float64)
    m = np.isin(y, [labels.index("normal"), labels.index(PNEUMONIA)])
    pos = y[m] == labels.index(PNEUMONIA)
    if not pos.any() or pos.all():
        return None
    score = probs[m, labels.index(PNEUMONIA)]
    t = M.threshold_in_gap(pos, score, sensitivity)
    sens, spec = M.sens_spec_at(pos, score, t)
    return {"threshold": t, "target_sensitivity": sensitivity, "val_sensitivity": sens, "val_specificity": spec,
            "among": "normal and pneumonia films", "applied": False}


def pneumonia_at_threshold(y, probs, labels, threshold) -> dict | None:
    """Sensitivity/specificity of P(pneumonia) >= ``threshold`` among the normal and pneumonia films."""
    labels = list(labels)
    if threshold is None or PNEUMONIA not in labels or "normal" not in labels:
        return None
    y, probs = np.asarray(y, int), np.asarray(probs, np.float64)
    m = np.isin(y, [labels.index("normal"), labels.index(PNEUMONIA)])
    sens, spec = M.sens_spec_at(y[m] == labels.index(PNEUMONIA), probs[m, labels.index(PNEUMONIA)], threshold)
    return {"threshold": float(threshold), "sensitivity": sens, "specificity": spec}


# ----------------------------------------------------------------------------- scoring a stored operating point
def tb_at_threshold(y, probs, labels, threshold) -> dict | None:
    """Sensitivity/specificity of the TB rule (P(TB) >= ``threshold``) on calibrated probabilities."""
    if TB not in labels or threshold is None:
        return None
    i = list(labels).index(TB)
    sens, spec = M.sens_spec_at(np.asarray(y) == i, np.asarray(probs)[:, i], threshold)
    return {"threshold": float(threshold), "sensitivity": sens, "specificity": spec}


def add_tb_at_threshold(report: dict, y, probs, sources, labels, threshold) -> dict:
    """Add ``tb_at_threshold`` to a ``metrics.report_by_source`` result, pooled and per source (in place)."""
    y, probs, sources = np.asarray(y), np.asarray(probs), np.asarray(sources)
    report["pooled"]["tb_at_threshold"] = tb_at_threshold(y, probs, labels, threshold)
    for src, r in report["by_source"].items():
        m = sources == src
        r["tb_at_threshold"] = tb_at_threshold(y[m], probs[m], labels, threshold)
    return report


def refer_rule(y, probs, labels, thresholds: dict) -> dict | None:
    """How the whole rule (TB first, then refer) treats calibrated probabilities: the share referred and the
    accuracy of the decisions not referred (a TB flag counts as right when the film is TB)."""
    if "refer_below" not in thresholds:
        return None
    decisions = OperatingPoint(tuple(labels), 1.0, dict(thresholds)).decide_batch(np.asarray(probs, np.float64))
    return rule_figures(y, decisions, labels, thresholds["refer_below"])


def rule_figures(y, decisions, labels, refer_below) -> dict:
    """The refer rule's figures from its decisions (a label or "refer" per film) and the true class indices ``y``:
    the share referred, the accuracy of the decisions kept, and how many films of each other class were called
    normal. Decisions of several models (cross-validation folds, each at its own threshold) pool here."""
    y, decisions = np.asarray(y, int), np.asarray(decisions, dtype=object)
    truth = np.asarray(labels, dtype=object)[y] if len(y) else np.zeros(0, object)
    kept = decisions != REFER
    sick_normal = {f"{c}_called_normal": int(((decisions == "normal") & (truth == c)).sum())
                   for c in labels if c != "normal"} if "normal" in labels else {}
    return {"refer_below": float(refer_below), "referred": float((~kept).mean()) if len(y) else float("nan"),
            "accuracy_not_referred": float((decisions[kept] == truth[kept]).mean()) if kept.any() else float("nan"),
            **sick_normal}
