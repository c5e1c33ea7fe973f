"""``python -m benchmarks.default_report``: mean +- sd over trainings and each goal met or missed by how much."""
import json

import numpy as np
import pytest

from benchmarks.default_report import main, mean_sd, verdict


def figs(tmp_path, seed, acc, auc, referred, parity, config=None, members=0):
    run = tmp_path / f"run{seed}"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(config or {"seed": seed}))
    bundle = tmp_path / f"b{seed}"
    bundle.mkdir()
    (bundle / "metadata.json").write_text(json.dumps({"members": [{"init_seed": i} for i in range(members)]}))
    row = {"accuracy": acc, "pair_auc": auc, "tb_auc": 0.99, "ece": 0.03,
           "per_class": {"pneumonia": {"sensitivity": 0.8}},
           "tb_at_threshold": {"sensitivity": 0.95, "specificity": 0.97},
           "refer_rule": {"referred": referred, "accuracy_not_referred": 0.93},
           "agreement_vs_keras_parent_at_convert": parity,
           "by_source": {"nih": {"accuracy": acc - 0.1}, "tbx": {"accuracy": 0.99}},
           "ci95": {"accuracy": [acc - 0.05, acc + 0.04], "pair_auc": [auc - 0.05, auc + 0.03]},
           "pair_auc_by_view": {"source": "nih", "view_alone_auc": 0.6,
                                "by_view": {"AP": {"auc": auc - 0.02, "normal": 30, "pneumonia": 25}}}}
    out = {"bundle": str(bundle), "run": str(run), "side": "test", "n": 200,
           "formats": {"tflite_int8": row, "tflite_fp32": dict(row, accuracy=acc + 0.01), "onnx_int8": {"error": "x"}},
           "site_shift": {"site B": {"accuracy": 0.6, "pair_normals_called_normal": 0.4}},
           "provenance": {"command": "python -m benchmarks.default_figures b", "machine": {"commit": "abc1234",
                                                                                       "date": "d", "cpu": "c"}}}
    path = tmp_path / f"f{seed}.json"
    path.write_text(json.dumps(out))
    return path


def test_mean_sd_and_verdicts():
    assert mean_sd([0.8, 0.9, None, float("nan")]) == (pytest.approx(0.85), pytest.approx(np.std([0.8, 0.9], ddof=1)), 2)
    assert verdict(0.85, 0.01, 0.88, +1) == "missed by 0.030"
    assert verdict(0.18, 0.01, 0.20, -1) == "met by 0.020"
    assert verdict(0.875, 0.01, 0.88, +1) == "missed by 0.005 (within one sd: not settled)"
    assert verdict(float("nan"), 0.0, 0.9, +1) == "not measured"


def test_report_over_three_trainings(tmp_path, capsys):
    files = [figs(tmp_path, s, acc, auc, ref, par) for s, acc, auc, ref, par in
             [(0, 0.86, 0.92, 0.26, 0.976), (1, 0.88, 0.93, 0.22, 0.99), (2, 0.84, 0.91, 0.30, 0.98)]]
    out = tmp_path / "DEFAULT.md"
    assert main([*map(str, files), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| accuracy | >= 0.88 | 0.860 +- 0.020 | missed by 0.020 (within one sd: not settled) | 0.860, 0.880, 0.840 |" in text
    assert "| referred by the refer rule | <= 0.2 | 0.260 +- 0.040 | missed by 0.060 |" in text
    assert "| NIH normal-vs-pneumonia AUC | >= 0.9 | 0.920 +- 0.010 | met by 0.020 |" in text
    assert "| films site B: NIH normals called normal | most (> 0.5) | 0.400 +- 0.000 | missed by 0.100 |" in text
    assert "| seed 1 | 0.880 | 0.830-0.920 | 0.930 | 0.880-0.960 |" in text
    assert "| tflite_fp32 | 0.870 +- 0.020 |" in text and "onnx_int8" not in text  # a failed format has no row
    assert "| seed 2 | 0.600 | AP 0.890 (30, 25) |" in text
    assert "at commit abc1234" in text


def test_a_fold_and_an_ensemble_are_named(tmp_path):
    """A training on one of k folds is named by its fold, an ensemble bundle by its number of trainings."""
    files = [figs(tmp_path, 0, 0.86, 0.92, 0.2, 0.99),
             figs(tmp_path, 7, 0.87, 0.9, 0.2, 0.99, config={"seed": 0, "folds": 5, "fold": 2}, members=2)]
    out = tmp_path / "DEFAULT.md"
    assert main([*map(str, files), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| seed 0, fold 2 of 5, 2 trainings | 0.870 |" in text and "| seed 0 | 0.860 |" in text


def test_not_a_figures_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main([str(bad)]) == 2
    assert "not a default_figures JSON file" in capsys.readouterr().err


def test_a_verdict_is_unsettled_when_its_goal_lies_inside_either_interval():
    from benchmarks import default_report as DR

    assert DR.unsettled(0.2, [0.15, 0.25]) == " (goal inside the 95% interval: not settled)"
    assert DR.unsettled(0.2, [0.157, 0.199]) == ""  # settled with the thresholds as stored ...
    refit = DR.unsettled(0.2, [0.157, 0.199], [0.108, 0.277])  # ... but not once they are fitted again
    assert "thresholds fitted again on resampled validation patients, 0.108-0.277: not settled" in refit
    assert DR.unsettled(None, [0.0, 1.0]) == "" and DR.unsettled(0.9, [float("nan")] * 2) == ""
