"""Site evaluation: how decisions under an operating point fare on one clinic's labelled films, with 95% Wilson
intervals, what the number of films supports, and the site-profile proposal (thresholds for the programme's target
TB sensitivity, refused when too small or worse than the bundle's own values on the same films).

Numpy only, on the runtime side: the workstation's ``python -m benchmarks.validate`` and the device's monitoring
page call the same code. ``films`` is ``{"y": class indices, "raw": (N, K) probabilities before the operating
point's temperature, "in_scope": bools}``.
"""
from __future__ import annotations

import numpy as np

from edge_runtime import metrics as M
from edge_runtime import operating_point as OP
from edge_runtime.operating_point import OUT_OF_SCOPE, REFER, TB, OperatingPoint

MIN_FILMS = 30  # fewer films of a class than this: too small to decide or to change its threshold
WHO_TB_SPECIFICITY = 0.70  # WHO target product profile for TB screening: specificity >= 70% at 90% sensitivity
DECIDE_HALF_WIDTH = 0.10  # an interval wider than +-10 points cannot tell a good threshold from a poor one


class ProfileRefused(RuntimeError):
    """The local data cannot support a site profile; the message says why (English: the CLI's report). ``code``
    and ``fields`` say it for other languages (the device page's ``site.refused_<code>``), ``reasons`` the
    thresholds that could not change, each ``(code, fields)`` (``site.skip_<code>``)."""

    def __init__(self, message: str, code: str = "", fields: dict | None = None, reasons: list | None = None):
        super().__init__(message)
        self.code, self.fields, self.reasons = code, dict(fields or {}), list(reasons or [])


# ----------------------------------------------------------------------------- what n films support
def half_width(k: int, n: int) -> float:
    lo, hi = M.wilson(k, n)
    return (hi - lo) / 2


def films_for(half: float, p: float) -> int:
    """The smallest number of films whose 95% Wilson interval at proportion ``p`` is at most +-``half``."""
    for n in range(1, 100_001):
        if half_width(round(p * n), n) <= half:
            return n
    return 100_000


def support(what: str, k: int, n: int, films: str) -> str:
    """One sentence on what ``n`` films say about a proportion ``k/n``."""
    if n == 0:
        return f"no {films} films: the {what} cannot be measured here"
    hw = half_width(k, n)
    line = f"{n} {films} films: the {what} interval is +-{hw * 100:.0f} points"
    if n < MIN_FILMS or hw > DECIDE_HALF_WIDTH:
        p = min(max(k / n, 0.5), 0.95)
        line += (f"; too few to decide (about {films_for(DECIDE_HALF_WIDTH, p)} films give +-10 points, "
                 f"{films_for(0.05, p)} give +-5)")
    return line


def rate(k: int, n: int) -> dict:
    return {"k": int(k), "n": int(n), "value": k / n if n else None, "ci": M.wilson(int(k), int(n))}


def decisions(films: dict, op: OperatingPoint) -> np.ndarray:
    d = op.decide_batch(op.calibrate(films["raw"])) if len(films["y"]) else np.zeros(0, object)
    d[~films["in_scope"]] = OUT_OF_SCOPE
    return d


def figures(films: dict, op: OperatingPoint) -> dict:
    """Per class and pooled figures of the decisions under ``op`` (an out-of-scope film got no diagnosis: it
    counts as missed for its class)."""
    labels = list(op.labels)
    y, dec = films["y"], decisions(films, op)
    truth = np.asarray(labels, dtype=object)[y] if len(y) else np.zeros(0, object)
    per_class = {}
    for i, lab in enumerate(labels):
        pos = y == i
        said = dec == lab
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        per_class[lab] = {
            "films": n_pos,
            "sensitivity": rate((said & pos).sum(), n_pos), "specificity": rate((~said & ~pos).sum(), n_neg),
            "referred": rate((dec[pos] == REFER).sum(), n_pos),
            # what the technician counts as found: this decision, or sent to a clinician
            "found_or_referred": rate(((said | (dec == REFER)) & pos).sum(), n_pos),
            "support": support("sensitivity", int((said & pos).sum()), n_pos, lab)}
    n = len(y)
    tb_normal = int(((dec == "normal") & (y == labels.index(TB))).sum()) if TB in labels else 0
    return {"films": n, "per_class": per_class, "tb_called_normal": tb_normal,
            "pooled": {"accuracy": rate((dec == truth).sum(), n), "referred": rate((dec == REFER).sum(), n),
                       "accuracy_not_referred": rate((dec == truth).sum(), int(((dec != REFER) & (dec != OUT_OF_SCOPE)).sum())),
                       "out_of_scope": rate((dec == OUT_OF_SCOPE).sum(), n)},
            "decisions": {str(k): int(v) for k, v in zip(*np.unique(dec.astype(str), return_counts=True))}}


def model_figures(films: dict, op: OperatingPoint) -> dict:
    """Threshold-free figures of the in-scope films: one-vs-rest AUC per class and the calibration error."""
    m = films["in_scope"]
    y, cal = films["y"][m], op.calibrate(films["raw"][m])
    auc = {lab: M.binary_auc(y == i, cal[:, i]) for i, lab in enumerate(op.labels)}
    return {"auc": {k: (None if np.isnan(v) else v) for k, v in auc.items()},
            "ece": M.expected_calibration_error(y, cal) if len(y) else None}


# ----------------------------------------------------------------------------- the profile proposal
def refer_rule_text(refer_share: float | None, n_read: int | None = None) -> tuple[str, dict, str]:
    """(code, fields, English sentence) of the rule a site profile fits its refer threshold by: the bundle's own
    (``ModelMetadata.refer_share``): refer that share of the local films not flagged TB, or, for a bundle fitted the
    older way, the lowest threshold at which the local films kept reach 90% accuracy."""
    if refer_share is None:
        acc = OP.REFER_TARGET_ACCURACY
        return ("accuracy", {"accuracy": acc}, f"the lowest refer threshold at which the films not referred reach "
                f"{acc:.0%} accuracy on these films (the rule the model's own threshold was fitted by)")
    why = "the share the model's own threshold was fitted to refer on its validation films"
    if n_read is not None:
        return ("share_all", {"share": float(refer_share), "n": int(n_read)}, f"refer the least confident "
                f"{refer_share:.0%} of the {n_read} in-scope films read here, outcome confirmed or not, that are not "
                f"flagged TB ({why})")
    return ("share", {"share": float(refer_share)}, f"refer the least confident {refer_share:.0%} of these films not "
            f"flagged TB ({why})")


def propose(films: dict, bundle_op: OperatingPoint, target: float, fit_temperature: bool = False,
            refer_share: float | None = None) -> dict:
    """Thresholds (and temperature) for this site, with the figures before and after; raises ProfileRefused.
    ``refer_share``: the bundle's refer rule (``ModelMetadata.refer_share``): the refer threshold refers that share
    of the local in-scope films not flagged TB (of ``films["share_raw"]`` where given: every film read, labelled or
    not; else of the labelled films); None: the lowest threshold at which the films kept reach 90%."""
    labels = list(bundle_op.labels)
    m = films["in_scope"]
    y, raw = films["y"][m], films["raw"][m]
    counts = {lab: int((y == i).sum()) for i, lab in enumerate(labels)}
    if not len(y):
        raise ProfileRefused(f"too small: no in-scope film with a confirmed label (need {MIN_FILMS} of each class "
                             f"a threshold changes)", "no_films", {"min": MIN_FILMS})
    small = {lab: n for lab, n in counts.items() if n < MIN_FILMS}
    temperature, warnings, warning_codes = None, [], []  # codes: the same warnings for other languages
    if fit_temperature:
        if small:
            raise ProfileRefused(f"too small to fit a temperature (it changes every class): {_films(small)}; "
                                 f"need {MIN_FILMS} in-scope films of each class", "temperature_small",
                                 {"films": _films(small), "counts": dict(small), "min": MIN_FILMS})
        tfit = OP.fit_temperature_report(y, raw)
        temperature = tfit["temperature"]
        if tfit["warning"]:
            warnings.append(tfit["warning"])
            warning_codes.append((tfit["warning_code"], tfit["warning_fields"]))
    base = OperatingPoint(tuple(labels), temperature or bundle_op.temperature, dict(bundle_op.thresholds))
    chosen, rep = OP.choose_operating_points(y, base.calibrate(raw), labels, tb_sensitivity=target,
                                             refer_share=refer_share)
    changes, skipped, codes = {}, [], []
    if TB in labels:
        n_tb, n_other = counts[TB], len(y) - counts[TB]
        if n_tb >= MIN_FILMS and n_other >= MIN_FILMS and TB in chosen:
            changes[TB] = chosen[TB]
        else:
            skipped.append(f"the TB threshold needs {MIN_FILMS} TB and {MIN_FILMS} other in-scope films "
                           f"(have {n_tb} and {n_other})")
            codes.append(("tb", {"min": MIN_FILMS, "tb": n_tb, "other": n_other}))
    read = films.get("share_raw") if refer_share is not None else None  # the device: every film read here
    read = read if read is not None and len(read) else None
    if read is not None:
        pool = base.calibrate(read)  # its outcome confirmed or not
        t = changes.get(TB, bundle_op.thresholds.get(TB)) if TB in labels else None  # the TB threshold it will use
        flagged = pool[:, labels.index(TB)] >= t if t is not None else np.zeros(len(pool), bool)
        chosen["refer_below"] = OP.fit_refer_share(pool, flagged, refer_share)
    reached = refer_share is not None or rep["refer"]["val_accuracy_not_referred"] >= rep["refer"]["target_accuracy"]
    if not small and reached:
        changes["refer_below"] = chosen["refer_below"]
    elif not small:
        skipped.append(f"no refer threshold brings the films not referred to {rep['refer']['target_accuracy']:.0%} "
                       f"accuracy here, so the refer threshold stays the bundle's")
        codes.append(("refer_unreached", {"accuracy": float(rep["refer"]["target_accuracy"])}))
    else:
        skipped.append(f"the refer threshold changes every class and needs {MIN_FILMS} films of each "
                       f"(have {_films(counts)})")
        codes.append(("refer", {"min": MIN_FILMS, "films": _films(counts), "counts": dict(counts)}))
    if not changes and temperature is None:
        raise ProfileRefused("too small: " + "; ".join(skipped), "too_small", reasons=codes)
    new_op = OperatingPoint(tuple(labels), base.temperature, {**bundle_op.thresholds, **changes})
    before, after = figures(films, bundle_op), figures(films, new_op)
    if coded := worse_coded(before, after, labels, target):
        why = WORSE_EN[coded[0]].format(**coded[1])
        raise ProfileRefused(f"worse than the bundle's own values on the same films: {why}", "worse",
                             {"why": why, "why_code": coded[0], "why_fields": coded[1]})
    if changes.get("refer_below", 1.0) <= 0.0 < float(bundle_op.thresholds.get("refer_below", 0.0)):
        warnings.append(f"the refer threshold falls to {changes['refer_below']:.2f}: no film would be referred to a "
                        f"clinician as unsure (referred now: {_pct(before['pooled']['referred'])})")
        warning_codes.append(("refer_zero", {"threshold": float(changes["refer_below"]),
                                             **_rate_fields(before["pooled"]["referred"], "referred")}))
    if TB in changes:
        spec = after["per_class"][TB]["specificity"]
        if spec["value"] is not None and spec["value"] < WHO_TB_SPECIFICITY:
            warnings.append(f"at {target:.0%} TB sensitivity the TB specificity on these films is {_pct(spec)}, below "
                            f"the WHO minimum of {WHO_TB_SPECIFICITY:.0%}: the model separates TB poorly at this site")
            warning_codes.append(("tb_specificity", {"target": float(target), "minimum": WHO_TB_SPECIFICITY,
                                                     **_rate_fields(spec, "specificity")}))
    rule_code, rule_fields, rule_en = refer_rule_text(refer_share, None if read is None else len(read))
    return {"thresholds": changes, "temperature": temperature, "films": counts, "target_tb_sensitivity": target,
            "refer_rule": rule_en, "refer_rule_code": rule_code, "refer_rule_fields": rule_fields,
            "kept_from_bundle": skipped, "kept_codes": codes, "warnings": warnings, "warning_codes": warning_codes,
            "before": before, "after": after}


def _rate_fields(r: dict, name: str) -> dict:
    """A proportion with its interval as raw numbers for a catalogue sentence (``{name:.1%} ({lo:.0%}-{hi:.0%},
    {k}/{n})``, as :func:`_pct` writes it in English): the page writes them as its reader's language does."""
    lo, hi = r["ci"]
    return {name: float(r["value"]), "lo": float(lo), "hi": float(hi), "k": int(r["k"]), "n": int(r["n"])}


def _films(counts: dict) -> str:
    return ", ".join(f"{n} {lab}" for lab, n in counts.items())


WORSE_EN = {  # why_coded's codes in English (the CLI's report, the stored text); the page words them per language
    "tb_normal": "{after} TB film(s) given a normal decision, where the bundle's own values give {before}",
    "tb_found": "TB films called TB or referred to a clinician fall from {before:.1%} to {after:.1%}, below the target "
                "{target:.0%}",
    "tb_target": "TB sensitivity falls below the target {target:.0%} ({before:.1%} -> {after:.1%})",
    "tb_neither": "TB sensitivity {before:.1%} -> {after:.1%} and specificity {spec_before:.1%} -> {spec_after:.1%}: "
                  "neither improves",
    "kept_accuracy": "accuracy of the decisions not referred {before:.1%} -> {after:.1%} with no fewer referrals "
                     "({ref_before:.1%} -> {ref_after:.1%})",
    "no_change": "it changes no decision on these films",
}


def worse_coded(before: dict, after: dict, labels: list[str], target: float) -> tuple[str, dict] | None:
    """Why ``after`` is worse than ``before`` on the same films, as (code, fields: raw numbers, worded by
    ``WORSE_EN`` or the page's ``site.why_<code>``), None when it is not. First
    what a patient would feel: more TB films given a normal decision, or fewer TB films either called TB or
    referred to a clinician (a referral reaches a clinician: fewer referrals must not buy a higher TB-decision
    count with missed films)."""
    pc = float  # a share, raw: the reader's language writes it
    if TB in labels:
        if after.get("tb_called_normal", 0) > before.get("tb_called_normal", 0):
            return "tb_normal", {"after": after["tb_called_normal"], "before": before["tb_called_normal"]}
        bf, af = (before["per_class"][TB].get("found_or_referred", {}).get("value"),
                  after["per_class"][TB].get("found_or_referred", {}).get("value"))
        if bf is not None and af is not None and af < bf and af < target:
            return "tb_found", {"before": pc(bf), "after": pc(af), "target": float(target)}
        b, a = before["per_class"][TB], after["per_class"][TB]
        bs, as_ = b["sensitivity"]["value"], a["sensitivity"]["value"]
        bp, ap = b["specificity"]["value"], a["specificity"]["value"]
        if bs is not None and as_ is not None:
            if bs >= target > as_:
                return "tb_target", {"target": float(target), "before": pc(bs), "after": pc(as_)}
            if bp is not None and as_ <= bs and ap <= bp and (as_, ap) != (bs, bp):
                return "tb_neither", {"before": pc(bs), "after": pc(as_), "spec_before": pc(bp), "spec_after": pc(ap)}
    ba, aa = (before["pooled"]["accuracy_not_referred"]["value"], after["pooled"]["accuracy_not_referred"]["value"])
    br, ar = before["pooled"]["referred"]["value"], after["pooled"]["referred"]["value"]
    if ba is not None and aa is not None and aa < ba and ar >= br:
        return "kept_accuracy", {"before": pc(ba), "after": pc(aa), "ref_before": pc(br), "ref_after": pc(ar)}
    if before["decisions"] == after["decisions"] and before["pooled"]["accuracy"] == after["pooled"]["accuracy"]:
        return "no_change", {}
    return None


def worse(before: dict, after: dict, labels: list[str], target: float) -> str:
    """:func:`worse_coded` in English ('' when ``after`` is not worse)."""
    got = worse_coded(before, after, labels, target)
    return WORSE_EN[got[0]].format(**got[1]) if got else ""


def _pct(r: dict) -> str:
    if r["value"] is None:
        return "-"
    lo, hi = r["ci"]
    return f"{r['value']:.1%} ({lo:.0%}-{hi:.0%}, {r['k']}/{r['n']})"
