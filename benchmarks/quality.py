"""Quality of one format's predictions, from ``edge_runtime.metrics`` only (the one metrics module).

Every format is scored the way the device would use it: raw probabilities -> the bundle's temperature
scaling -> metrics. Agreement and the largest probability difference are on the raw probabilities, against
the float Keras model (the reference; when it is not in the run, the first float artifact that ran).
"""
from __future__ import annotations

import numpy as np

from edge_runtime import metrics as M
from edge_runtime import operating_point as OP

MIN_F1_RATIO = 0.99  # an INT8 artifact keeps at least 99% of its float parent's macro-F1
MIN_AGREEMENT = 0.98  # ... and at least 98% top-1 agreement with it


def evaluate(y, probs, sources, labels: list[str], temperature: float = 1.0, thresholds: dict | None = None) -> dict:
    """``report_by_source`` of the calibrated probabilities, plus the TB rule at the bundle's threshold
    (``tb_at_threshold``)."""
    y = np.asarray(y, int)
    cal = OP.calibrate(probs, temperature)
    rep = M.report_by_source(y, cal, sources, labels)
    return OP.add_tb_at_threshold(rep, y, cal, sources, labels, (thresholds or {}).get(OP.TB))


def flat(report: dict, labels: list[str]) -> dict:
    """The figures of one (pooled or per-source) report as flat columns."""
    out = {"n": report["n"], "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
           "macro_auc": report["macro_auc"], "ece": report["ece"]}
    for name in labels:
        pc = report["per_class"][name]
        out[f"sens_{name}"] = pc["sensitivity"]
        out[f"spec_{name}"] = pc["specificity"]
        out[f"auc_{name}"] = pc["auc"]
    op = report.get("tb_operating_point") or {}
    out["tb_spec_at_90_sens"] = op.get("specificity", float("nan"))
    dev = report.get("tb_at_threshold") or {}
    out["tb_sens_at_threshold"] = dev.get("sensitivity", float("nan"))
    out["tb_spec_at_threshold"] = dev.get("specificity", float("nan"))
    return out


def int8_flags(row: dict, reference: dict | None) -> list[str]:
    """Why an INT8 artifact falls short of its float reference (empty: it does not)."""
    if not row.get("int8") or reference is None:
        return []
    flags = []
    f1, ref_f1 = row.get("macro_f1"), reference.get("macro_f1")
    if f1 is not None and ref_f1 and not np.isnan(ref_f1) and f1 < MIN_F1_RATIO * ref_f1:
        flags.append(f"macro-F1 {f1:.3f} is {100 * f1 / ref_f1:.1f}% of float {ref_f1:.3f} (< {100 * MIN_F1_RATIO:.0f}%)")
    agree = row.get("agreement_vs_float")
    if agree is not None and not np.isnan(agree) and agree < MIN_AGREEMENT:
        flags.append(f"top-1 agreement with float {100 * agree:.1f}% (< {100 * MIN_AGREEMENT:.0f}%)")
    return flags
