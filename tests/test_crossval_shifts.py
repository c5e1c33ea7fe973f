"""Simulated site changes in the cross-validation report (``benchmarks.crossval --shifts``, docs/harmonise/PLAN.md):
every named change per fold, and simulated site B fold by fold against a baseline's saved figures."""
import argparse
from dataclasses import replace

import pytest

from benchmarks import crossval as CV
from benchmarks.study import evaluate as E
from tests.test_refer_pooled import _fold


def _site(acc, tb_normal, pn_normal, tb_sens=0.5, nih_normal=0.9):
    return {"accuracy": acc, "refer_rule": {"tuberculosis_called_normal": tb_normal, "pneumonia_called_normal": pn_normal},
            "tb_at_threshold": {"sensitivity": tb_sens}, "pair_normals_called_normal": nih_normal}


def test_shift_names_are_checked_and_all_means_every_change():
    assert CV._shift_names("all") == tuple(E.SHIFTS)
    assert CV._shift_names("low contrast, blur + noise") == ("low contrast", "blur + noise", E.SITE_B)  # B always
    with pytest.raises(argparse.ArgumentTypeError, match="unknown simulated change 'rot90'"):
        CV._shift_names("low contrast,rot90")
    with pytest.raises(SystemExit):
        CV.main(["docs/served/folds.json", "--shifts", "nope"])


def test_site_b_against_the_baseline_fold_by_fold_with_the_sick_films_called_normal_summed(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    base = [_fold(i, rng) for i in range(3)]
    this = list(base)  # the same films (the outputs do not matter here)
    base = [replace(f, site_shift={E.SITE_B: _site(0.4, 30 + i, 10)}) for i, f in enumerate(base)]
    this = [replace(f, site_shift={E.SITE_B: _site(0.5 - 0.2 * (i == 2), 5, 12 + i, nih_normal=0.8),
                                   "low contrast": _site(0.7, 1, 2)}) for i, f in enumerate(this)]
    pb, pt = tmp_path / "base.json", tmp_path / "this.json"
    CV.save_folds(base, pb, "tflite_int8", {f.fold: {"site_shift": f.site_shift} for f in base}, {"command": "b", "machine": {}})
    CV.save_folds(this, pt, "tflite_int8", {f.fold: {"site_shift": f.site_shift} for f in this}, {"command": "t", "machine": {}})
    res = CV.crossval([pt], n_boot=20, log=lambda m: None, baseline=[pb])
    sb = res["versus_baseline"]["site_b"]
    assert sorted(sb) == [0, 1, 2]
    assert [sb[k]["baseline"]["tuberculosis_called_normal"] for k in range(3)] == [30, 31, 32]
    assert [sb[k]["this"]["pneumonia_called_normal"] for k in range(3)] == [12, 13, 14]
    text = CV.table(res)
    assert "| TB films given a normal decision | 93 (30, 31, 32) | 15 (5, 5, 5) | 0 of 3 |" in text
    assert "| accuracy | 0.400, 0.400, 0.400 | 0.500, 0.500, 0.300 | 2 of 3 |" in text
    assert "| films site B (all of it): TB films given a normal decision | - | 15 (sum) |" in text
    # every change the folds hold comes in its own table once there is more than site B
    line = next(x for x in text.splitlines() if x.startswith("| low contrast |"))
    assert line.split(" | ")[3:5] == ["3", "6"]  # TB and pneumonia films called normal, summed over the folds
    only_b = [replace(f, site_shift={E.SITE_B: f.site_shift[E.SITE_B]}) for f in this]
    assert CV._shift_table([{"site_shift": f.site_shift} for f in only_b]) == []
