"""``benchmarks.crossval`` against a baseline gives ECE, pooled and as the mean of the folds' own, a paired
interval (basic bootstrap over the threshold rows' patient resamples): a per-fold ECE on a few hundred films moves
with the films drawn about as much as two recipes differ (docs/lpft/SMOOTH.md), and the report says when the
difference is a tie. One recipe's own ECE gets no interval (recomputed on draws it is biased upward)."""
from dataclasses import replace

import numpy as np
from benchmarks import crossval as CV
from edge_runtime import metrics as M
from tests.test_crossval import _fold, _probs


def _folds(seed=5, n=3, films=150):
    rng = np.random.default_rng(seed)
    return [_fold(i, (y := rng.integers(0, 3, films)), _probs(rng, y), 0.5, folds=n) for i in range(n)]


def _powered(folds, power):
    """The same folds and decisions, every output raised to ``power`` and renormalised (< 1: flatter, less confident;
    these synthetic outputs are already under-confident, so flatter is worse calibrated)."""
    out = []
    for f in folds:
        p = f.cal ** power
        out.append(replace(f, cal=p / p.sum(1, keepdims=True)))
    return out


def _ece_fold_mean(folds):
    return float(np.mean([M.expected_calibration_error(f.y, f.cal) for f in folds]))


def test_identical_recipes_differ_by_exactly_zero():
    folds = _folds()
    ci = CV.versus(folds, folds, n_boot=50)["delta_ci95"]
    assert ci["ece"] == [0.0, 0.0] and ci["ece_fold_mean"] == [0.0, 0.0]


def test_a_flatter_recipe_is_worse_calibrated_by_an_interval_that_holds_its_difference():
    base = _folds()
    flat = _powered(base, 0.5)
    diff = _ece_fold_mean(flat) - _ece_fold_mean(base)
    assert diff > 0.05  # the construction does what it says
    cmp = CV.versus(base, flat, n_boot=200)
    lo, hi = cmp["delta_ci95"]["ece_fold_mean"]
    assert 0 < lo <= diff <= hi  # paired draws: the whole interval above 0, around the observed difference
    pooled = M.expected_calibration_error(np.concatenate([f.y for f in base]), np.concatenate([f.cal for f in flat])) \
        - M.expected_calibration_error(np.concatenate([f.y for f in base]), np.concatenate([f.cal for f in base]))
    lo, hi = cmp["delta_ci95"]["ece"]
    assert lo <= pooled <= hi
    lines = CV._ece_fold_lines({f.fold: CV.fold_row(f) for f in base}, cmp)
    assert len(lines) == 2 and f"difference {diff:+.3f}" in lines[1] and "a tie" not in lines[1]


def test_a_small_difference_is_called_a_tie():
    base = _folds(seed=11)
    near = _powered(base, 1.03)
    cmp = CV.versus(base, near, n_boot=200)
    lo, hi = cmp["delta_ci95"]["ece_fold_mean"]
    assert lo <= 0 <= hi
    text = CV._ece_fold_lines({f.fold: CV.fold_row(f) for f in base}, cmp)[1]
    assert "a tie" in text and "mean over the 3 folds" in text


def test_the_report_line_reads_per_fold_rows_keyed_as_saved():
    """Saved reports key per-fold rows by strings; the line reads them so, and stays silent without an interval."""
    base = _folds()
    cmp = CV.versus(base, _powered(base, 2.0), n_boot=50)
    cmp["per_fold"] = {str(k): v for k, v in cmp["per_fold"].items()}
    base_per = {str(f.fold): CV.fold_row(f) for f in base}
    assert sorted(cmp["per_fold"]) == ["0", "1", "2"] and CV._ece_fold_lines(base_per, cmp)
    del cmp["delta_ci95"]["ece_fold_mean"]
    assert CV._ece_fold_lines(base_per, cmp) == []


def test_one_recipe_gets_no_ece_interval_and_the_observed_difference_lies_inside_its_own():
    """``rule_intervals`` (one recipe's goal verdicts) leaves ECE out: a percentile interval of ECE recomputed on
    draws lies above the figure itself (review34); the paired difference's basic interval holds its estimate."""
    base = _folds(seed=7)
    units = np.concatenate([np.asarray(f.files) for f in base])
    assert not {"ece", "ece_fold_mean"} & set(CV.rule_intervals(base, units, 50))
    other = _powered(base, 0.8)
    lo, hi = CV.rule_deltas(base, other, units, 300)["ece_fold_mean"]
    assert lo <= _ece_fold_mean(other) - _ece_fold_mean(base) <= hi
