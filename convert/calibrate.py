"""Operating points chosen on validation data, stored in the bundle's metadata: temperature scaling, the TB
threshold for 90% sensitivity, the refer rule, and the input-check statistics of the embedding."""
from __future__ import annotations

import numpy as np

from edge_runtime import metrics as M
from edge_runtime.classifier import calibrate

TB = "tuberculosis"
TB_SENSITIVITY = 0.90
REFER_TARGET_ACCURACY = 0.90  # refer images below the confidence at which accepted validation images reach this


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """Temperature minimising the validation negative log-likelihood (grid search, robust on small sets)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))

    def nll(t):
        p = calibrate(probs, float(t))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)))
    return float(grid[int(np.argmin([nll(t) for t in grid]))])


def fit(y: np.ndarray, raw: np.ndarray, labels: list[str]) -> dict:
    """Temperature, thresholds and their validation report for one model's raw validation probabilities."""
    temperature = fit_temperature(y, raw)
    cal = calibrate(raw, temperature)
    thresholds, report = choose_operating_points(y, cal, labels)
    report["calibration"] = {"temperature": temperature,
                             "val_ece_before": M.expected_calibration_error(y, raw),
                             "val_ece_after": M.expected_calibration_error(y, cal)}
    return {"temperature": temperature, "thresholds": thresholds, "operating_point": report}


def choose_operating_points(y: np.ndarray, probs: np.ndarray, labels: list[str],
                            target_accuracy: float = REFER_TARGET_ACCURACY) -> tuple[dict, dict]:
    """(thresholds, report) from calibrated validation probabilities."""
    thresholds, report = {}, {}
    is_tb = np.zeros(len(y), bool)
    if TB in labels:
        i = labels.index(TB)
        pos = y == i
        if pos.any() and (~pos).any():
            t = M.threshold_in_gap(pos, probs[:, i], TB_SENSITIVITY)
            thresholds[TB] = t
            sens, spec = M.sens_spec_at(pos, probs[:, i], t)
            report["tb"] = {"threshold": t, "val_sensitivity": sens, "val_specificity": spec}
            is_tb = probs[:, i] >= t
    top, pred = probs.max(1), probs.argmax(1)
    rest = ~is_tb
    chosen = 0.0
    for c in np.round(np.arange(0.0, 0.96, 0.01), 2):
        keep = rest & (top >= c)
        if keep.sum() and (pred[keep] == y[keep]).mean() >= target_accuracy:
            chosen = float(c)
            break
    else:
        chosen = 0.95
    thresholds["refer_below"] = chosen
    keep = rest & (top >= chosen)
    report["refer"] = {"refer_below": chosen, "target_accuracy": target_accuracy,
                       "val_refer_fraction": float((rest & (top < chosen)).mean()),
                       "val_accuracy_not_referred": float((pred[keep] == y[keep]).mean()) if keep.any() else float("nan")}
    return thresholds, report


def head_weights(model) -> dict:
    """Classifier weights (D x K) for the class activation map, from the (possibly QAT-wrapped) Dense layer."""
    names = {layer.name for layer in model.layers}
    layer = model.get_layer("quant_probs" if "quant_probs" in names else "probs")
    kernel = next(w for w in layer.weights if "kernel" in w.name and w.shape.rank == 2).numpy()
    return {"weights": np.round(kernel, 6).tolist()}
