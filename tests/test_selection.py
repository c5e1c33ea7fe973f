"""benchmarks.selection: the model-selection report, read from the committed lever reports."""
import json
from pathlib import Path

import pytest

from benchmarks import selection as S

REPO = Path(__file__).resolve().parent.parent


def _pair(n, acc, acc_ci, auc_ci, referred=(0.3, 0.2), unit="patient"):
    return {"n": n, "unit": unit, "side": "val", "delta": {"accuracy": {"value": acc, "ci95": acc_ci},
                                            "pair_auc": {"value": 0.01, "ci95": auc_ci},
                                            "tb_auc": {"value": 0.0, "ci95": [-0.01, 0.01]}},
            "rule": {"A": {"referred": referred[0]}, "B": {"referred": referred[1]}}}


def _fold_row(acc, auc, tb, referred):
    return {"accuracy": acc, "pair_auc": auc, "tb_auc": tb, "refer_rule": {"referred": referred}}


def test_settled_reads_the_intervals():
    assert S.settled({"ci95": [[-0.01, 0.02], [-0.03, 0.0]]}) == "tie"
    assert S.settled({"ci95": [[0.01, 0.02], [-0.03, 0.05]]}) == "up (1 of 2)"
    assert S.settled({"ci95": [[-0.04, -0.01], None]}) == "down (1 of 1)"
    assert S.settled({"ci95": [[-0.04, -0.01], [0.01, 0.02]]}) == "mixed"


def test_the_report_reads_every_figure_from_the_lever_reports(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()
    prov = {"command": "python -m benchmarks.paired A B", "machine": {"commit": "abc1234", "date": "d", "cpu": "c"}}
    (docs / "lever.json").write_text(json.dumps({"provenance": prov, "pairs": [
        _pair(200, 0.02, [0.005, 0.04], [-0.02, 0.03]), _pair(210, 0.04, [-0.01, 0.09], [-0.05, 0.01], (0.4, 0.1))]}))
    per = {str(k): _fold_row(0.8 + k / 100, 0.88, 0.99, 0.3) for k in range(2)}
    cv = {"format": "tflite_int8", "n": 400, "coverage": {"present": [0, 1], "folds": 2, "seed": 0},
          "pooled": {**_fold_row(0.805, 0.88, 0.99, 0.3), "ci95": {"accuracy": [0.78, 0.83]}}, "per_fold": per,
          "provenance": {"command": "python -m benchmarks.crossval F0 F1", "machine": {"commit": "def5678"}},
          "what_if": {"class_bias": {"unit": "patient", "pooled": _fold_row(0.835, 0.88, 0.99, 0.2),
                                     "per_fold": {k: _fold_row(v["accuracy"] + 0.03, 0.88, 0.99, 0.2)
                                                  for k, v in per.items()},
                                     "delta_ci95": {"accuracy": [0.01, 0.05], "pair_auc": [0.0, 0.0]}}}}
    (docs / "cv.json").write_text(json.dumps(cv))
    levers = tmp_path / "recipes" / "levers.toml"
    levers.write_text('default = "docs/cv.json"\n[[lever]]\nname = "lever one"\nreport = "docs/lever.json"\n'
                      'decision = "kept out"\n[[lever]]\nname = "bias"\nreport = "docs/cv.json"\n'
                      'key = "what_if.class_bias"\ndecision = "no"\n')
    out = tmp_path / "SEL.md"
    assert S.main(["--levers", str(levers), "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| lever one"))
    assert "+0.030 +- 0.014" in row and "+0.005 to +0.040; -0.010 to +0.090" in row  # mean +- sd, each seed's CI
    assert "30% -> 20%, 40% -> 10%" in row and "| up (1 of 2); tie |" in row and "kept out" in row
    assert "| validation (200+210) | 2 seeds |" in row and "patients resampled" in row
    bias = next(line for line in text.splitlines() if line.startswith("| bias"))
    assert "+0.030 (+0.010 to +0.050); per fold +0.030 +- 0.000" in bias and "out of fold (400) | 2 folds" in bias
    assert "30% -> 20%" in bias and "[docs/cv.json](docs/cv.json)" in text  # links from the report's folder
    assert "| accuracy | >= 0.88 | 0.805 | 0.780-0.830 | 0.805 +- 0.007 | missed by 0.075 |" in text
    assert "at commit abc1234" in text and "**Commit:**" in text

    # a report that lacks what the levers file names is refused with a clear message
    levers.write_text('default = "docs/cv.json"\n[[lever]]\nname = "x"\nreport = "docs/cv.json"\n'
                      'key = "versus_baseline"\n')
    assert S.main(["--levers", str(levers)]) == 2
    levers.write_text('default = "docs/cv.json"\n[[lever]]\nname = "x"\nreport = "docs/missing.json"\n')
    assert S.main(["--levers", str(levers)]) == 2
    levers.write_text('default = "docs/cv.json"\n[[lever]]\nname = "x"\n')
    assert S.main(["--levers", str(levers)]) == 2 and "lever 1 has no 'report'" in capsys.readouterr().err


def test_the_repository_levers_file_names_readable_reports():
    """Every report recipes/levers.toml lists is committed and readable as the kind it is given as."""
    import tomllib

    spec = tomllib.loads((REPO / "recipes" / "levers.toml").read_text())
    assert spec["lever"]
    for lever in spec["lever"]:
        doc = json.loads((REPO / lever["report"]).read_text())
        figs = S.lever_figures(doc, lever.get("key"), Path(lever["report"]))
        assert figs["n"] >= 1 and figs["side"] in {"test", "validation", "out of fold"}
        assert all(lo <= hi for c in figs["accuracy"]["ci95"] if c for lo, hi in [c])


@pytest.mark.parametrize("text", ["not toml [", 'default = "docs/none.json"\n'])
def test_a_bad_levers_file_is_an_error(tmp_path, text, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "levers.toml").write_text(text)
    assert S.main(["--levers", str(tmp_path / "recipes" / "levers.toml")]) == 2
    assert "error:" in capsys.readouterr().err


def test_the_rerun_section_shows_how_far_an_identical_training_moved_each_figure(tmp_path):
    (tmp_path / "recipes").mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()

    def cv(per, cpu):
        return {"format": "tflite_int8", "n": 300, "coverage": {"present": [int(k) for k in per], "folds": 5,
                                                                "seed": 0},
                "pooled": next(iter(per.values())), "per_fold": per,
                "provenance": {"command": "python -m benchmarks.crossval X", "machine": {"commit": "c0ffee1", "cpu": cpu}}}

    first = {"0": {**_fold_row(0.84, 0.88, 0.99, 0.26), "refer_rule": {"referred": 0.26,
                                                                      "pneumonia_called_normal": 1}},
             "1": _fold_row(0.80, 0.85, 0.98, 0.30)}
    again = {"0": {**_fold_row(0.89, 0.91, 0.99, 0.11), "refer_rule": {"referred": 0.11,
                                                                      "pneumonia_called_normal": 9}},
             "3": _fold_row(0.70, 0.70, 0.90, 0.50)}  # fold 3 is not in the first report: left out
    (docs / "cv.json").write_text(json.dumps(cv(first, "CPU-A")))
    (docs / "again.json").write_text(json.dumps(cv(again, "CPU-B")))
    levers = tmp_path / "recipes" / "levers.toml"
    levers.write_text('default = "docs/cv.json"\nrerun = "docs/again.json"\n')
    text = S.report(levers, "cmd", tmp_path)
    section = text.split("## Run-to-run spread")[1].split("## Sources")[0]
    assert "| figure | fold 0: first -> again (difference) | largest difference |" in section
    assert "| accuracy | 0.840 -> 0.890 (+0.050) | 0.050 |" in section
    assert "| referred by the refer rule | 0.260 -> 0.110 (-0.150) | 0.150 |" in section
    assert "| pneumonia films given a normal decision | 1 -> 9 (+8) | 8 |" in section
    assert "fold 3" not in section and "0.700" not in section
    assert "scored on CPU-A and on CPU-B" in section
    assert "[docs/again.json](docs/again.json) (rerun)" in text
    # a rerun whose fold holds other films is refused, never compared
    (docs / "again.json").write_text(json.dumps(cv({"0": {**again["0"], "n": 250}}, "CPU-B")))
    with pytest.raises(S.LeverError, match="fold 0 holds 250 test films"):
        S.report(levers, "cmd", tmp_path)
    # a rerun of an earlier recipe: compared with the report it repeats, and the section says so
    (docs / "again.json").write_text(json.dumps(cv(again, "CPU-B")))
    (docs / "pair.json").write_text(json.dumps(cv({"0": _fold_row(0.95, 0.97, 0.99, 0.05)}, "CPU-C")))
    levers.write_text('default = "docs/pair.json"\nrerun = "docs/again.json"\nrerun-of = "docs/cv.json"\n')
    text = S.report(levers, "cmd", tmp_path)
    section = text.split("## Run-to-run spread")[1].split("## Sources")[0]
    assert "(measured on an earlier recipe)" in section and "not measured yet" in section
    assert "| accuracy | 0.840 -> 0.890 (+0.050) | 0.050 |" in section and "0.950" not in section
    assert "[docs/cv.json](docs/cv.json) (rerun of)" in text
    # without a rerun entry there is no such section
    levers.write_text('default = "docs/cv.json"\n')
    assert "Run-to-run" not in S.report(levers, "cmd", tmp_path)


def test_pairs_of_one_seeds_folds_are_named_folds_and_older_reports_seeds():
    fold = [{"split": {"seed": 0, "folds": 5, "fold": f}} for f in (0, 1)]
    assert S.pair_unit(fold) == "fold"
    assert S.pair_unit([{"split": {"seed": s}} for s in (0, 1)]) == "seed"
    assert S.pair_unit([{}, {}]) == "seed"  # reports written before the split was recorded
    assert S.pair_unit([{"split": {"seed": 0, "fold": 1}}, {"split": {"seed": 1, "fold": 1}}]) == "seed"
    assert S.pair_unit([{"split": {"seed": 0, "fold": 1}}, {"split": {"seed": 0, "fold": 1}}]) == "seed"
    figs = S.lever_figures({"pairs": [{**_pair(200, 0.02, [0.0, 0.04], [-0.01, 0.02]), **f} for f in fold]},
                           None, Path("x.json"))
    assert figs["unit"] == "fold" and figs["n"] == 2
    assert S._delta_cell(figs["accuracy"]).startswith("+0.020 +- 0.000 (")
    assert S._delta_cell(figs["tb_sens"]) == "-"  # a paired report holds no TB sensitivity difference


def test_a_threshold_what_if_shows_its_tb_sensitivity_difference():
    """A what-if that moves only the TB threshold ties on accuracy and the AUCs; its TB sensitivity column shows
    the pooled difference with its paired interval and the per-fold differences."""
    def row(tb):
        return {"accuracy": 0.86, "pair_auc": 0.9, "tb_auc": 0.99, "tb_at_threshold": {"sensitivity": tb},
                "refer_rule": {"referred": 0.2}}
    doc = {"n": 500, "pooled": row(0.92), "per_fold": {"0": row(0.90), "1": row(0.94)},
           "what_if": {"tb": {"pooled": row(0.98), "per_fold": {"0": row(0.97), "1": row(0.99)}, "unit": "patient",
                              "delta_ci95": {"accuracy": [0.0, 0.0], "tb_sens": [0.03, 0.09]}}}}
    figs = S.lever_figures(doc, "what_if.tb", Path("cv.json"))
    assert S._delta_cell(figs["tb_sens"]) == "+0.060 (+0.030 to +0.090); per fold +0.060 +- 0.014"
    assert S.settled(figs["accuracy"]) == "tie"


def test_a_lever_measured_on_one_fold_shows_no_spread():
    fig = {"pooled": 0.02, "values": [0.02], "ci95": [(-0.016, 0.052)]}
    assert S._delta_cell(fig) == "+0.020 (-0.016 to +0.052); one fold"
    fig = {"pooled": 0.02, "values": [0.01, 0.03], "ci95": [(-0.016, 0.052)]}
    assert S._delta_cell(fig) == "+0.020 (-0.016 to +0.052); per fold +0.020 +- 0.014"
