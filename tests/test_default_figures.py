"""benchmarks.default_figures: bootstrap intervals and the command's argument checks (no model needed)."""
import numpy as np
import pytest

from benchmarks.default_figures import bootstrap_ci, main, patients
from train.data import Sample

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


def test_patients_are_resampled_whole():
    """Each patient's films go into a resample together: with every patient's two films scored alike, the
    interval is about sqrt(2) wider than one that treats the films as independent."""
    y, raw, src = _films(n=120)
    twice = np.repeat(np.arange(120), 2)  # every patient has two films, scored alike
    y2, raw2, src2 = y[twice], raw[twice], src[twice]
    grouped = bootstrap_ci(y2, raw2, src2, LABELS, n=300, groups=twice)
    films = bootstrap_ci(y2, raw2, src2, LABELS, n=300)
    assert grouped["unit"] == "patient" and films["unit"] == "film"
    assert np.diff(grouped["accuracy"])[0] > 1.2 * np.diff(films["accuracy"])[0]  # ~sqrt(2) wider


def test_the_resampling_unit_is_what_kept_a_patient_on_one_side_of_the_split():
    samples = [Sample("a.png", "normal", "nih", "p1"), Sample("b.png", "normal", "nih", "p1"),
               Sample("c.png", "normal", "nih", "p2", group="family"), Sample("d.png", "normal", "tbx", "")]
    assert patients(samples).tolist() == ["p1", "p1", "family", "d.png"]


def test_not_a_bundle_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_view_figures_read_the_manifest_and_split_the_auc_by_view(tmp_path):
    from types import SimpleNamespace

    from benchmarks.default_figures import manifest_column, pair_auc_by_view

    (tmp_path / "normal").mkdir()
    (tmp_path / "manifest.csv").write_text("file,class,view_position\nnormal/a.png,normal,AP\nnormal/b.png,normal,PA\n")
    samples = [SimpleNamespace(path=str(tmp_path / "normal" / n)) for n in ("a.png", "b.png", "c.png")]
    samples.append(SimpleNamespace(path=str(tmp_path / "elsewhere" / "x" / "d.png")))  # no manifest there
    assert manifest_column(samples) == ["AP", "PA", "", ""]

    labels = ["normal", "pneumonia", "tuberculosis"]
    # 8 NIH films, 2 normal + 2 pneumonia in each view; the scores rank perfectly within PA only
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1, 2])
    views = ["AP", "AP", "AP", "AP", "PA", "PA", "PA", "PA", ""]
    sources = ["nih"] * 8 + ["tbx"]
    p_pneu = np.array([0.6, 0.4, 0.5, 0.3, 0.1, 0.2, 0.8, 0.9, 0.0])  # AP: 1 of 4 pairs right; PA: all right
    cal = np.stack([1 - p_pneu, p_pneu, np.zeros(9)], 1)
    cal[8] = [0, 0, 1]
    out = pair_auc_by_view(y, cal, sources, views, labels)
    assert out["source"] == "nih"
    assert out["by_view"]["PA"] == {"normal": 2, "pneumonia": 2, "auc": 1.0}
    assert out["by_view"]["AP"]["auc"] == pytest.approx(0.25)
    assert out["view_alone_auc"] == pytest.approx(0.5)  # two of each class in each view: the view says nothing
    assert pair_auc_by_view(y, cal, sources, [""] * 9, labels) == {}


def test_why_another_artifact_is_served():
    from benchmarks.default_figures import why_served

    rows = {"tflite_int8": {"agreement": 0.979}, "tflite_int8_ptq": {"agreement": 0.99}, "tflite_fp32": {}}
    assert why_served({"formats": rows}, "tflite_int8") == ""
    assert why_served({"formats": rows, "failed_formats": ["tflite_int8"]}, "tflite_fp32") == \
        "tflite_int8 failed its parity check at convert (97.9% top-1 agreement with its Keras parent)"
    chose = {"litert": {"chosen": "tflite_int8_ptq", "why": "closer to the float model"}}
    assert why_served({"formats": rows, "int8_choice": chose}, "tflite_int8_ptq") == \
        "convert chose tflite_int8_ptq as its backend's INT8 path: closer to the float model"
    assert why_served({"formats": {"tflite_fp32": {}}}, "tflite_fp32") == "the bundle holds no tflite_int8"


@pytest.mark.slow
def test_the_figures_judge_the_artifact_the_device_serves(tiny_bundle, tmp_path, capsys):
    """A bundle whose tflite_int8 failed its parity check is served, and so judged, as another artifact: the
    intervals, site B and the table's verdict lines belong to it, and default_report and reproduce read it."""
    import json
    import shutil

    from benchmarks import default_figures as DF
    from benchmarks import default_report as R
    from edge_runtime import bundle as B

    copy = shutil.copytree(tiny_bundle, tmp_path / "b")
    status = json.loads((copy / "bundle.json").read_text())
    status["failed_formats"] = sorted(set(status.get("failed_formats", [])) | {"tflite_int8"})
    (copy / "bundle.json").write_text(json.dumps(status))
    B.write_sums(copy)
    want = B.resolve(copy).key  # what Classifier.from_bundle(copy) serves
    assert want not in (None, "tflite_int8")
    res = DF.figures(copy, "test", n_boot=20)
    assert res["served"] == want and R.judged(res) == want
    assert "failed its parity check" in res["served_because"]
    assert "ci95" in res["formats"][want] and "ci95" not in res["formats"]["tflite_int8"]
    assert res["formats"]["tflite_int8"]["accuracy"] is not None  # every artifact still has its row
    text = DF.table(res)
    assert f"The device serves {want} from this bundle (not tflite_int8: tflite_int8 failed" in text
    assert f"{want} 95% bootstrap intervals" in text
    report = R.report([res], "python -m benchmarks.default_report x.json")
    assert f"## {want} (what the device serves from each bundle)" in report
    acc = R._f(res["formats"][want]["accuracy"])
    assert f"| accuracy | >= 0.88 | {acc} (one training) |" in report
