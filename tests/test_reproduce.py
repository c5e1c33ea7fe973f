"""benchmarks.reproduce: a rebuild of the default against the reported training, judged by the rerun spread."""
import json
from types import SimpleNamespace

import pytest

from benchmarks import default_figures as DF
from benchmarks import reproduce as P


def _row(acc, auc, referred, tb_normal=0, ece=0.05):
    return {"accuracy": acc, "pair_auc": auc, "tb_auc": 0.99, "ece": ece,
            "refer_rule": {"referred": referred, "accuracy_not_referred": 0.93,
                           "tuberculosis_called_normal": tb_normal, "pneumonia_called_normal": 2}}


def _figs(row, n=211, sha=None, cmd="python -m benchmarks.default_figures runs/default-bundle"):
    return {"side": "test", "n": n, "films_sha256": sha, "formats": {"tflite_int8": row},
            "provenance": {"command": cmd, "machine": {"commit": "abc1234", "date": "d", "cpu": "Zen"}}}


def _cv(rows):
    return {"per_fold": {str(i): {**r, "n": 100 + i} for i, r in enumerate(rows)},
            "provenance": {"command": "python -m benchmarks.crossval", "machine": {"commit": "c0ffee0"}}}


@pytest.fixture
def spread(tmp_path):
    """Two trainings of two folds: accuracy moves by 0.02 and 0.04, NIH AUC by 0.01 and 0.03, referrals 0.05/0.1."""
    first = _cv([_row(0.84, 0.88, 0.26), _row(0.85, 0.89, 0.30)])
    again = _cv([_row(0.86, 0.89, 0.21), _row(0.89, 0.86, 0.20)])
    for name, doc in (("first.json", first), ("again.json", again)):
        (tmp_path / name).write_text(json.dumps(doc))
    return [str(tmp_path / "first.json"), str(tmp_path / "again.json")]


def test_each_figure_is_judged_against_the_largest_rerun_difference(tmp_path, spread):
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_row(0.850, 0.870, 0.20, ece=0.05))))
    text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *map(lambda s: tmp_path / s,
                                                                                ("first.json", "again.json")), "cmd")
    rows = {r["key"]: r for r in res["rows"]}
    assert rows["accuracy"]["spread"] == pytest.approx(0.04)
    assert rows["accuracy"]["verdict"] == "within"                       # |0.850 - 0.867| = 0.017 <= 0.04
    assert rows["pair_auc"]["verdict"] == "outside by 0.022"             # 0.052 against 0.03
    assert rows["referred"]["verdict"] == "outside by 0.010"             # 0.11 against 0.10
    assert rows["tb_normal"]["verdict"] == "within" and rows["tb_normal"]["count"]
    assert rows["pneumonia_sens"]["verdict"] == "not judged"             # neither side measured it
    assert res["folds"] == ["0", "1"]
    assert f"**{res['within']} of {res['judged']} judged figures within the spread**" in text
    assert "abc1234" in text and "Zen" in text


def test_figures_of_the_refer_threshold_are_not_judged_across_refer_rules(tmp_path, spread):
    """A rebuild converted with a refer share (the default since 2026-12-05) against a reference fitted for 90%
    kept accuracy: referrals, kept accuracy and the sick films called normal are shown, not judged."""
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_row(0.860, 0.920, 0.10) | {"refer_share": 0.32})))
    files = [tmp_path / s for s in ("first.json", "again.json")]
    text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
    rows = {r["key"]: r for r in res["rows"]}
    for key in P.REFER_KEYS:
        assert rows[key]["verdict"] == "not judged: refer rules differ"
    assert rows["referred"]["difference"] == pytest.approx(-0.21)
    assert rows["accuracy"]["verdict"] == "within" and res["judged"] == 4   # accuracy, the two AUCs, ECE
    assert "fitted by different rules" in text and "a share of 32% of the validation films" in text
    (tmp_path / "ref2.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31) | {"refer_share": 0.32})))
    _, same = P.report(tmp_path / "new.json", tmp_path / "ref2.json", None, *files, "cmd")
    assert {r["key"]: r for r in same["rows"]}["referred"]["verdict"] == "outside by 0.110"  # same rule: judged


def test_a_paired_report_serves_as_reference_by_its_bundle(tmp_path, spread):
    pair = {"a": "runs/x-bundle", "b": "runs/default-s0-op-bundle", "side": "test", "format": "tflite_int8_ptq",
            "format_b": "tflite_int8", "n": 211,
            "figures": {"A": {"accuracy": 0.5}, "B": {"accuracy": 0.867, "pair_auc": 0.92, "tb_auc": 0.99,
                                                      "ece": 0.05}},
            "rule": {"A": {}, "B": {"referred": 0.31, "tuberculosis_called_normal": 0}}}
    (tmp_path / "paired.json").write_text(json.dumps({"pairs": [pair], "provenance": {}}))
    ref = P.reference_figures(json.loads((tmp_path / "paired.json").read_text()), tmp_path / "paired.json",
                              "/elsewhere/runs/default-s0-op-bundle")
    assert ref["accuracy"] == 0.867 and ref["refer_rule"]["referred"] == 0.31 and ref["n"] == 211
    with pytest.raises(P.ReproduceError, match="--arm"):
        P.reference_figures({"pairs": [pair]}, tmp_path / "paired.json", None)
    with pytest.raises(P.ReproduceError, match="no test-side tflite_int8 pair"):
        P.reference_figures({"pairs": [pair]}, tmp_path / "paired.json", "runs/x-bundle")  # A is the PTQ file


def test_another_split_is_refused(tmp_path, spread, capsys):
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31), n=211)))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31), n=204)))
    assert P.main([str(tmp_path / "new.json"), "--reference", str(tmp_path / "ref.json"), "--spread", *spread]) == 2
    assert "not the same split" in capsys.readouterr().err
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31), sha="a" * 64)))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31), sha="b" * 64)))
    assert P.main([str(tmp_path / "new.json"), "--reference", str(tmp_path / "ref.json"), "--spread", *spread]) == 2
    assert "different test films" in capsys.readouterr().err


def test_the_cli_writes_the_report_and_its_json(tmp_path, spread):
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31))))
    out, js = tmp_path / "r" / "report.md", tmp_path / "r" / "reproduce.json"
    assert P.main([str(tmp_path / "new.json"), "--reference", str(tmp_path / "ref.json"), "--spread", *spread,
                   "--out", str(out), "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert res["within"] == res["judged"] > 0                          # identical figures: everything within
    assert "python -m benchmarks.reproduce" in out.read_text()
    assert P.main([str(tmp_path / "missing.json"), "--reference", str(tmp_path / "ref.json"),
                   "--spread", *spread]) == 2


def test_a_rebuild_without_the_deployed_format_is_refused(tmp_path, spread):
    doc = _figs(_row(0.8, 0.8, 0.2))
    doc["formats"] = {"tflite_int8": {"error": "file does not match its metadata"}}
    with pytest.raises(P.ReproduceError, match="does not match"):
        P.deployed_figures(doc, tmp_path / "new.json")


def test_the_film_fingerprint_names_the_films_not_their_folder_or_order():
    a = [SimpleNamespace(path="/data/a/nih/1.png", source="nih"), SimpleNamespace(path="/data/a/tbx/2.png",
                                                                                   source="tbx")]
    b = [SimpleNamespace(path="/mnt/tbx/2.png", source="tbx"), SimpleNamespace(path="/mnt/nih/1.png", source="nih")]
    c = [a[0], SimpleNamespace(path="/data/a/tbx/3.png", source="tbx")]
    assert DF.films_fingerprint(a) == DF.films_fingerprint(b) != DF.films_fingerprint(c)


def test_the_rebuild_is_judged_on_the_artifact_its_bundle_serves(tmp_path, spread):
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_row(0.867, 0.922, 0.31))))  # older file: no "served"
    new = _figs(_row(0.834, 0.883, 0.31))
    new["formats"]["tflite_int8_ptq"] = _row(0.858, 0.905, 0.51)
    new.update(served="tflite_int8_ptq", served_because="convert chose tflite_int8_ptq as its backend's INT8 path: x")
    (tmp_path / "new.json").write_text(json.dumps(new))
    text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, tmp_path / "first.json",
                         tmp_path / "again.json", "cmd")
    rows = {r["key"]: r for r in res["rows"]}
    assert rows["accuracy"]["rebuild"] == 0.858 and rows["referred"]["rebuild"] == 0.51  # the PTQ row, not QAT's
    assert rows["accuracy"]["reference"] == 0.867
    assert res["artifacts"] == {"rebuild": "tflite_int8_ptq", "reference": "tflite_int8"}
    assert "judged: `tflite_int8_ptq`, what its bundle serves (convert chose" in text


def test_figures_at_the_pneumonia_point_are_not_judged_across_fit_targets(tmp_path, spread):
    """A rebuild whose pneumonia point was fitted for 90% (since 2026-12-05) against a reference fitted for 85% (a
    file without the record): its sensitivity and specificity there are shown, not judged; the same target is."""
    def with_point(row, sens, spec, target=None):
        return row | {"pneumonia_at_threshold": {"sensitivity": sens, "specificity": spec}} | (
            {} if target is None else {"pneumonia_target": target})

    files = [tmp_path / s for s in ("first.json", "again.json")]
    (tmp_path / "ref.json").write_text(json.dumps(_figs(with_point(_row(0.867, 0.922, 0.31), 0.85, 0.82))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(with_point(_row(0.867, 0.922, 0.31), 0.95, 0.60, 0.90))))
    text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
    rows = {r["key"]: r for r in res["rows"]}
    for key in P.POINT_KEYS:
        assert rows[key]["verdict"] == "not judged: pneumonia points fitted for other sensitivities"
    assert rows["pneumonia_sens_point"]["difference"] == pytest.approx(0.10)
    assert "rebuild 90%, reference 85%" in text and rows["accuracy"]["verdict"] == "within"
    (tmp_path / "ref9.json").write_text(json.dumps(_figs(with_point(_row(0.867, 0.922, 0.31), 0.85, 0.82, 0.90))))
    _, same = P.report(tmp_path / "new.json", tmp_path / "ref9.json", None, *files, "cmd")
    # the same target: judged as any figure (here "not judged" only because the spread's folds lack the figure)
    assert {r["key"]: r for r in same["rows"]}["pneumonia_sens_point"]["verdict"] == "not judged"


def _tb_row(found, tb=94, n=211):
    """A row whose TB sensitivity at the threshold is ``found`` of ``tb`` TB films, with the class counts recorded."""
    return _row(0.88, 0.92, 0.12) | {"tb_at_threshold": {"sensitivity": found / tb, "specificity": 1.0},
                                     "per_class": {"tuberculosis": {"support": tb}, "pneumonia": {"support": 60},
                                                   "normal": {"support": n - tb - 60}}}


def _tb_spread(tmp_path, misses):
    """Reruns whose TB sensitivity differs by ``misses`` film(s) of 120 on one fold: a spread of misses/120."""
    first = _cv([_tb_row(110, tb=120) | {"n": 297}])
    again = _cv([_tb_row(110 - misses, tb=120) | {"n": 297}])
    for name, doc in (("first.json", first), ("again.json", again)):
        (tmp_path / name).write_text(json.dumps(doc))
    return [tmp_path / "first.json", tmp_path / "again.json"]


def test_one_film_of_the_test_set_is_the_finest_difference_judged(tmp_path):
    """A spread of one TB film of 120 (0.008) is finer than one TB film of 94 (0.011): a rebuild that misses one
    more TB film than the reference is within it; two more are outside by the excess over one film."""
    files = _tb_spread(tmp_path, 1)
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_tb_row(91))))
    for found, verdict in ((90, "within"), (89, "outside by 0.011"), (92, "within")):
        (tmp_path / "new.json").write_text(json.dumps(_figs(_tb_row(found))))
        text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
        row = {r["key"]: r for r in res["rows"]}["tb_sens"]
        assert row["spread"] == pytest.approx(1 / 120) and row["one_film"] == pytest.approx(1 / 94)
        assert row["verdict"] == verdict and row["at_one_film"] == (verdict == "within"), found
        assert ("**Judged at one film** (TB sensitivity at the stored threshold)" in text) == (verdict == "within")
        assert ("(1 of them by one film" in text) == (verdict == "within")


def test_a_spread_wider_than_one_film_is_the_tolerance(tmp_path):
    files = _tb_spread(tmp_path, 3)                                      # 3 of 120 = 0.025 > 1 of 94
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_tb_row(91))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(_tb_row(89))))   # 2 of 94 = 0.021: within 0.025
    text, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
    row = {r["key"]: r for r in res["rows"]}["tb_sens"]
    assert row["verdict"] == "within" and not row["at_one_film"] and row["tolerance"] == pytest.approx(3 / 120)
    assert "Judged at one film" not in text and "by one film" not in text


def test_without_class_counts_a_class_rate_is_judged_by_the_spread_alone(tmp_path):
    """Files written before the class counts were recorded: no step for a class's rate, the spread decides."""
    files = _tb_spread(tmp_path, 1)
    bare = {k: v for k, v in _tb_row(90).items() if k != "per_class"}
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_tb_row(91))))
    (tmp_path / "new.json").write_text(json.dumps(_figs(bare)))
    _, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
    row = {r["key"]: r for r in res["rows"]}["tb_sens"]
    assert row["one_film"] is None and row["verdict"].startswith("outside by")


def test_one_film_is_counted_over_the_films_the_figure_divides_by():
    fig = _tb_row(90) | {"n": 211}                                       # 94 TB films, 12% referred
    assert P.one_film("accuracy", fig) == pytest.approx(1 / 211)
    assert P.one_film("tb_spec", fig) == pytest.approx(1 / (211 - 94))
    assert P.one_film("pneumonia_sens", fig) == pytest.approx(1 / 60)
    assert P.one_film("pneumonia_spec_point", fig) == pytest.approx(1 / 57)
    assert P.one_film("acc_kept", fig) == pytest.approx(1 / round(211 * 0.88))
    assert P.one_film("tb_normal", fig) is None and P.one_film("pn_normal", fig) is None   # whole films already
    assert P.one_film("pair_auc", fig) is None and P.one_film("ece", fig) is None


def test_a_count_of_films_gets_no_one_film_step(tmp_path):
    """TB films given a normal decision: reruns that never differ (spread 0) leave no room for one more."""
    files = _tb_spread(tmp_path, 1)
    (tmp_path / "ref.json").write_text(json.dumps(_figs(_tb_row(91))))
    new = _tb_row(91)
    new["refer_rule"] = {**new["refer_rule"], "tuberculosis_called_normal": 1}
    (tmp_path / "new.json").write_text(json.dumps(_figs(new)))
    _, res = P.report(tmp_path / "new.json", tmp_path / "ref.json", None, *files, "cmd")
    row = {r["key"]: r for r in res["rows"]}["tb_normal"]
    assert row["spread"] == 0 and row["one_film"] is None and row["verdict"] == "outside by 1"


def test_the_figures_record_each_class_s_film_count_for_its_one_film_step():
    import numpy as np

    from benchmarks.study import evaluate as E

    labels = ["normal", "pneumonia", "tuberculosis"]
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    raw = np.eye(3)[[0, 1, 0, 1, 1, 2, 2, 0, 2]] * 0.9 + 0.1 / 3
    fig = E.summarise(y, raw, np.array(["nih_dcn"] * 5 + ["tbx11k"] * 4), labels)
    assert {c: fig["per_class"][c]["support"] for c in labels} == {"normal": 3, "pneumonia": 2, "tuberculosis": 4}
    assert P.one_film("tb_spec", fig) == pytest.approx(1 / 5) and P.one_film("pneumonia_sens", fig) == 0.5
