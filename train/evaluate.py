"""Evaluation of a trained run: metrics pooled and per source (edge_runtime.metrics), thresholds chosen on
validation, confusion-matrix and ROC plots, and a printable summary."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edge_runtime import metrics as M
from edge_runtime import operating_point as OP
from train.keras_io import predict

log = logging.getLogger(__name__)


def evaluate_models(models: dict, arrays: dict, classes, out: Path) -> dict:
    """Predict val and test with each model, write ``metrics.json`` and plots, return the key figures.

    ``models``: name -> tf_keras model or None; the first non-None one is the deployed model. Each model's
    operating point (temperature, TB threshold, refer rule) is fitted on validation by ``operating_point.fit``
    (convert fits each artifact again on its own outputs) and its test figures are on calibrated outputs.
    """
    classes = list(classes)
    results, deployed, fitted = {}, None, {}
    for name, model in models.items():
        if model is None:
            continue
        deployed = deployed or name
        results[name], op = {}, None
        for side in ("val", "test"):
            a = arrays[side]
            if len(a.images) == 0:
                continue
            raw = predict(model, a.images)
            if op is None:  # validation comes first: fit there, apply the same operating point to test
                op = OP.fit(a.labels, raw, classes) if side == "val" else {"temperature": 1.0, "thresholds": {}}
                fitted[name] = op
            results[name][side] = rep = side_report(a.labels, raw, a.sources, classes, op)
            if side == "test":
                plot_run(out / "plots", name, a.labels, OP.calibrate(raw, op["temperature"]), a.sources, classes)
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    op = fitted.get(deployed) or {"temperature": 1.0, "thresholds": {}}
    return {"thresholds": op["thresholds"], "temperature": op["temperature"], "operating_point": op.get("operating_point"),
            "deployed": deployed,
            "deployed_test": results[deployed].get("test", {}), "deployed_val": results[deployed].get("val", {}),
            "all": results}


def side_report(labels, raw: np.ndarray, sources, classes, op: dict) -> dict:
    """Figures of one side (validation or test) for raw outputs under a fitted operating point (``op``:
    temperature and thresholds): metrics pooled and per source on the calibrated outputs, the raw outputs' ECE,
    the TB rule at its threshold and the refer rule (what the training run's metrics.json and a bundle's
    metadata report)."""
    classes = list(classes)
    probs = OP.calibrate(raw, op["temperature"])
    rep = M.report_by_source(labels, probs, sources, classes)
    rep["pooled"]["ece_raw"] = M.expected_calibration_error(labels, raw)
    OP.add_tb_at_threshold(rep, labels, probs, sources, classes, op["thresholds"].get(OP.TB))
    rep["pooled"]["refer_rule"] = OP.refer_rule(labels, probs, classes, op["thresholds"])
    return rep


def plot_run(folder: Path, name: str, y, probs, sources, classes) -> list[Path]:
    """Confusion matrix and one-vs-rest ROC, pooled and per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    groups = [("pooled", np.ones(len(y), bool))] + [(s, sources == s) for s in sorted(set(sources.tolist()))]
    for gname, m in groups:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
        cm = M.confusion_matrix(y[m], probs[m].argmax(1), len(classes))
        ax1.imshow(cm, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax1.text(j, i, str(cm[i, j]), ha="center", va="center",
                         color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax1.set_xticks(range(len(classes)), classes, rotation=20)
        ax1.set_yticks(range(len(classes)), classes)
        ax1.set_xlabel("predicted")
        ax1.set_ylabel("true")
        ax1.set_title(f"{name} - {gname} (n={int(m.sum())})")
        for i, c in enumerate(classes):
            yy = y[m] == i
            if yy.any() and (~yy).any():
                fpr, tpr, _ = M.roc_curve(yy, probs[m][:, i])
                ax2.plot(fpr, tpr, label=f"{c} AUC {M.binary_auc(yy, probs[m][:, i]):.3f}")
        ax2.plot([0, 1], [0, 1], "k:", lw=0.8, label="_chance")
        ax2.set_xlabel("1 - specificity")
        ax2.set_ylabel("sensitivity")
        ax2.set_title("one-vs-rest ROC")
        if len(ax2.lines) > 1:
            ax2.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        p = folder / f"{name}_test_{gname}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def _fmt(v) -> str:
    return "  -  " if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def summary_table(report: dict, classes) -> str:
    """Markdown table: one row per source plus pooled."""
    head = ["group", "n", "accuracy", "macro-F1", "macro-AUC", "ECE"]
    head += [f"{c[:4]} sens" for c in classes] + [f"{c[:4]} spec" for c in classes]
    rows = [("pooled", report["pooled"])] + sorted(report.get("by_source", {}).items())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows:
        pc = r["per_class"]
        cells = [name, str(r["n"]), _fmt(r["accuracy"]), _fmt(r["macro_f1"]), _fmt(r["macro_auc"]), _fmt(r["ece"])]
        cells += [_fmt(pc[c]["sensitivity"]) for c in classes] + [_fmt(pc[c]["specificity"]) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    op = report["pooled"].get("tb_at_threshold")
    if op:
        lines.append(f"\nTB at the validation threshold {op['threshold']:.3f} (chosen for {OP.TB_FIT_SENSITIVITY:.0%} "
                     f"sensitivity on validation): sensitivity {op['sensitivity']:.3f}, "
                     f"specificity {op['specificity']:.3f} (WHO screening bar: >= 0.90 / >= 0.70)")
    return "\n".join(lines)
