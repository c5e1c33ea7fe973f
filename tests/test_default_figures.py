"""benchmarks.default_figures: bootstrap intervals and the command's argument checks (no model needed)."""
import numpy as np
import pytest

from benchmarks.default_figures import bootstrap_ci, main

LABELS = ["normal", "pneumonia", "tuberculosis"]


def _films(n=120, noise=1.0, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    sources = np.where(y == 2, "tbx11k", "nih_dcn")
    raw = np.eye(3)[y] + rng.uniform(0, noise * 3, (n, 3))
    return y, raw / raw.sum(1, keepdims=True), sources


def test_intervals_bracket_the_point_figures_and_shrink_with_more_films():
    y, raw, src = _films()
    ci = bootstrap_ci(y, raw, src, LABELS, n=300)
    acc = float((raw.argmax(1) == y).mean())
    assert ci["accuracy"][0] <= acc <= ci["accuracy"][1] and 0 < ci["accuracy"][0] < ci["accuracy"][1] < 1
    lo, hi = ci["pair_auc"]
    assert 0.5 < lo < hi <= 1.0
    y4, raw4, src4 = _films(n=1200)
    wide = ci["accuracy"][1] - ci["accuracy"][0]
    narrow = np.diff(bootstrap_ci(y4, raw4, src4, LABELS, n=300)["accuracy"])[0]
    assert narrow < wide / 2  # ~1/sqrt(10) of the width


def test_perfect_predictions_have_degenerate_intervals():
    y = np.array([0, 1, 2] * 20)
    ci = bootstrap_ci(y, np.eye(3)[y], np.where(y == 2, "tbx11k", "nih_dcn"), LABELS, n=50)
    assert ci["accuracy"] == [1.0, 1.0] and ci["pair_auc"] == [1.0, 1.0]


def test_not_a_bundle_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err
