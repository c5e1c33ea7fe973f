"""``benchmarks.crossval --pneumonia-point S``: every fold's reported pneumonia point, a baseline's too, fitted again
on its validation films for another sensitivity (docs/lpft/PLAN.md stage 4), and the target each fold's point was
fitted for, kept through saving and named when two recipes differ in it."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import crossval as CV
from edge_runtime import operating_point as OP
from tests.test_crossval import LABELS, _fold, _probs, _with_validation

REPO = Path(__file__).resolve().parent.parent


def _folds(seed=3, n=2):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = rng.integers(0, 3, 80)
        out.append(_with_validation(_fold(i, y, _probs(rng, y), 0.5, folds=n), rng))
    return out


def test_a_fold_refitted_for_a_higher_sensitivity_moves_only_its_pneumonia_point():
    f = _folds()[0]
    g = CV.at_pneumonia_point(f, 0.95)
    assert g.pn_target == 0.95 and f.pn_target == OP.PNEUMONIA_FIT_SENSITIVITY
    assert g.pneumonia_threshold < f.pneumonia_threshold  # a higher sensitivity needs a lower threshold
    m = np.isin(f.val_y, [0, 1])
    sens, _ = OP.M.sens_spec_at(f.val_y[m] == 1, f.val_cal[m, 1], g.pneumonia_threshold)
    assert sens >= 0.95
    assert g.thresholds == f.thresholds and np.array_equal(g.cal, f.cal)  # decisions do not move
    # the what-if with no sensitivity of its own refits at the fold's own target, not the module's
    same, _ = CV.refit(g, CV.WhatIf("check"))
    assert same.pneumonia_threshold == pytest.approx(g.pneumonia_threshold) and same.pn_target == 0.95
    with pytest.raises(CV.FoldError, match="no validation outputs"):
        CV.at_pneumonia_point(replace(f, val_cal=None, val_y=None), 0.9)


def test_the_target_survives_saving_and_two_targets_are_named(tmp_path):
    folds = [CV.at_pneumonia_point(f, 0.9) for f in _folds()]
    old = [CV.at_pneumonia_point(f, 0.85) for f in _folds()]  # converted before the margin
    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    back = CV.load_saved(saved)
    assert [f.pn_target for f in back] == [0.9, 0.9]
    assert [f.pneumonia_threshold for f in back] == [f.pneumonia_threshold for f in folds]
    res = CV.against_baseline(back, old, 20)
    assert res["pneumonia_targets"] == {"baseline": [OP.PNEUMONIA_SENSITIVITY], "this": [0.9]}
    assert "baseline 85%, this recipe 90%" in "\n".join(CV._pn_target_warning(res["pneumonia_targets"]))
    assert CV._pn_target_warning(CV.against_baseline(old, old, 20)["pneumonia_targets"]) == []


def test_the_command_refits_both_arms_and_says_so(tmp_path):
    this, base = tmp_path / "this.json", tmp_path / "base.json"
    rng = np.random.default_rng(4)
    folds = _folds(3)
    other = [replace(f, cal=_probs(rng, f.y), val_cal=_probs(rng, f.val_y)) for f in folds]  # same films
    CV.save_folds(folds, this, "tflite_int8", {}, {"command": "a", "machine": {}})
    CV.save_folds(other, base, "tflite_int8", {}, {"command": "b", "machine": {}})
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    run = subprocess.run([sys.executable, "-m", "benchmarks.crossval", str(this), "--baseline", str(base),
                          "--pneumonia-point", "0.95", "--bootstrap", "20", "--out", str(out), "--md", str(md)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    res = json.loads(out.read_text())
    assert res["pneumonia_point"] == {"refitted": True, "targets": [0.95]}
    assert res["versus_baseline"]["pneumonia_targets"] == {"baseline": [0.95], "this": [0.95]}
    want = [CV.at_pneumonia_point(f, 0.95).pneumonia_threshold for f in CV.load_saved(this)]
    assert res["pooled"]["pneumonia_at_threshold"]["threshold_per_fold"] == pytest.approx(want)
    base_want = [CV.at_pneumonia_point(f, 0.95).pneumonia_threshold for f in CV.load_saved(base)]
    assert res["versus_baseline"]["baseline_pooled"]["pneumonia_at_threshold"]["threshold_per_fold"] == \
        pytest.approx(base_want)
    assert "and the baseline's fitted again on its validation films for 95% sensitivity" in md.read_text()
    # a sensitivity outside (0, 1] is refused by the parser
    bad = subprocess.run([sys.executable, "-m", "benchmarks.crossval", str(this), "--pneumonia-point", "1.5"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "sensitivity" in bad.stderr


def test_a_record_without_its_target_reads_as_fitted_for_85(tmp_path):
    """Folds saved before the target was recorded were fitted for 85% (what convert then used)."""
    saved = tmp_path / "old.json"
    CV.save_folds(_folds(), saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    doc = json.loads(saved.read_text())
    for d in doc["folds"]:
        del d["pn_target"]
    saved.write_text(json.dumps(doc))
    assert [f.pn_target for f in CV.load_saved(saved)] == [OP.PNEUMONIA_FIT_BEFORE] * 2 == [0.85, 0.85]


def test_thresholds_fitted_again_in_each_bootstrap_draw_use_each_folds_own_target():
    """The refitted intervals fit every fold's pneumonia point again on drawn validation films: at the fold's own
    target (two folds fitted for 85% and 95% here), not at the module's."""
    a, b = _folds(7)
    folds = [CV.at_pneumonia_point(a, 0.85), CV.at_pneumonia_point(b, 0.95)]
    everything = [np.arange(len(f.val_y)) for f in folds]  # a draw that holds every validation film once
    got = CV._rule_films_refitted(folds, everything)["pn_flag"]
    want = np.concatenate([f.cal[:, 1] >= f.pneumonia_threshold for f in folds])
    assert np.array_equal(got, want)
    other = np.concatenate([f.cal[:, 1] >= CV.at_pneumonia_point(f, OP.PNEUMONIA_FIT_SENSITIVITY).pneumonia_threshold
                            for f in folds])
    assert not np.array_equal(got, other)  # the module's target would flag other films
