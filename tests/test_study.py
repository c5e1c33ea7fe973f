"""The model-selection study (benchmarks.study): its plan, its figures, and one small end-to-end run on the
synthetic phantoms (the tiny QAT run stands in for the first candidate; the study trains a border-only control,
converts, measures and writes the report)."""
import json
import math
import shutil

import numpy as np
import pytest

from benchmarks.study import evaluate as SE
from benchmarks.study.plan import MODELS, Experiment, plan
from benchmarks.study.run import main

LABELS = ["normal", "pneumonia", "tuberculosis"]


def test_plan_puts_the_key_measurements_first_and_honours_the_options():
    names = [e.name for e in plan("crop-clahe", ["crop-clahe", "plain"], [m[0] for m in MODELS])]
    assert names[:5] == ["mnv2-0.35_crop-clahe", "control-border_crop-clahe", "mnv2-0.35_plain",
                         "control-border_plain", "control-centre_crop-clahe"]
    assert names[-1] == "control-centre_plain" and "lite0-imagenet_crop-clahe" in names and len(names) == 13
    with_site = plan("crop-clahe", ["crop-clahe", "crop-clahe-site"], ["mnv2-0.35", "mnv3-small"],
                     extra=("mnv3-small:crop-clahe-site", "mnv3-small:crop-clahe"))  # the second one is planned
    assert [(e.name, e.role) for e in with_site] == [
        ("mnv2-0.35_crop-clahe", "model"), ("control-border_crop-clahe", "control"),
        ("mnv2-0.35_crop-clahe-site", "recipe"), ("control-border_crop-clahe-site", "control"),
        ("control-centre_crop-clahe", "control"), ("mnv3-small_crop-clahe", "model"),
        ("mnv3-small_crop-clahe-site", "model"), ("control-centre_crop-clahe-site", "control")]
    small = plan("plain", ["plain"], ["mnv2-0.35"], controls=("border",))
    assert [(e.name, e.role) for e in small] == [("mnv2-0.35_plain", "model"), ("control-border_plain", "control")]


def test_experiment_arguments_reach_the_training_cli():
    from train.__main__ import build_parser

    exp = Experiment("c", "control", "mobilenet_v2", 0.35, recipe="crop-clahe", keep="border")
    args = build_parser().parse_args(["--data", "x", *exp.train_args(8, 1)])
    assert (args.alpha, args.crop, args.equalize, args.keep, args.qat_epochs, args.epochs) == \
        (0.35, 0.1, "clahe", "border", 0, 8)  # a control is never quantised: it is a measurement
    site = Experiment("s", "model", "mobilenet_v3_small", recipe="crop-clahe-site")
    args = build_parser().parse_args(["--data", "x", *site.train_args(8, 1)])
    assert (args.site_augment, args.crop, args.equalize, args.qat_epochs) == (0.5, 0.1, "clahe", 1)
    assert (args.lr, args.head_epochs, args.weights) == (1e-3, 0, "none")  # the study's schedule, not the CLI's
    plain = build_parser().parse_args(["--data", "x", *exp.train_args(8, 1)])
    assert plain.site_augment == 0.0  # the train CLI's default (0.5) is not the study's
    lite = Experiment("l", "model", "efficientnet_lite0", weights="imagenet")
    args = build_parser().parse_args(["--data", "x", *lite.train_args(8, 1)])
    assert (args.weights, args.head_epochs, args.site_augment) == ("imagenet", 0, 0.0)
    random = Experiment("r", "model", "efficientnet_lite0")  # lite0-random stays random (the CLI's auto would not)
    assert build_parser().parse_args(["--data", "x", *random.train_args(8, 1)]).weights == "none"
    assert lite.label == "efficientnet_lite0 (ImageNet)"


def test_summarise_rules_and_pair_auc():
    y = np.array([0, 0, 1, 1, 2, 2])
    raw = np.array([[.8, .1, .1], [.4, .35, .25], [.3, .6, .1], [.6, .3, .1], [.1, .1, .8], [.5, .2, .3]])
    src = np.array(["nih_dcn"] * 4 + ["tbx11k"] * 2)
    s = SE.summarise(y, raw, src, LABELS, 1.0, {"tuberculosis": 0.3, "refer_below": 0.5})
    assert s["tb_at_threshold"]["sensitivity"] == 1.0 and s["tb_at_threshold"]["specificity"] == 1.0
    # referred: films not flagged TB whose top probability is under 0.5: rows 1 only (0.40)
    assert s["refer_rule"]["referred"] == pytest.approx(1 / 6)
    # accepted: rows 0, 2, 3 by their top class (right, right, wrong) and rows 4, 5 flagged TB (right): 4/5
    assert s["refer_rule"]["accuracy_not_referred"] == pytest.approx(4 / 5)
    assert s["by_source"]["nih_dcn"]["n"] == 4 and s["accuracy"] == pytest.approx(4 / 6)  # rows 3, 5 wrong
    # NIH normal vs pneumonia: pneumonia share p1/(p0+p1): normals .111, .467; pneumonias .667, .333 -> 3 of 4 pairs
    assert s["pair_source"] == "nih_dcn" and s["pair_auc"] == pytest.approx(0.75)  # the one source with both
    assert math.isnan(SE.pair_auc(y[:2], raw[:2], LABELS))  # one class only


def test_choose_default_prefers_validation_auc_then_speed():
    def row(auc, ms):
        return {"val": {"macro_auc": auc}, "latency_ms_1thread": {"p50": ms}}
    rows = {"a": row(0.90, 30), "b": row(0.905, 80), "c": row(0.85, 5), "d": row(float("nan"), 1)}
    assert SE.choose_default(rows, ["a", "b", "c", "d"]) == "a"  # a is within 0.01 of b and faster
    rows["b"] = row(0.95, 80)
    assert SE.choose_default(rows, ["a", "b", "c"]) == "b"
    assert SE.choose_default(rows, ["zzz"]) is None
    # with the validation films under simulated site B, the score is the mean of both AUCs
    rows["a"]["val_site_b"] = {"macro_auc": 0.60}
    rows["c"]["val_site_b"] = {"macro_auc": 0.84}
    assert SE.selection_score(rows["a"]) == pytest.approx(0.75) and SE.selection_score(rows["b"]) == 0.95
    rows["b"]["val_site_b"] = {"macro_auc": 0.50}  # 0.725: the site-robust c (0.845) now wins
    assert SE.choose_default(rows, ["a", "b", "c"]) == "c"


def test_site_changes_keep_the_film_a_grayscale_uint8_image():
    img = (np.random.default_rng(0).random((256, 240)) * 255).astype(np.uint8)
    for name, fn in SE.SHIFTS.items():
        out = fn(img, 0)
        assert out.dtype == np.uint8 and out.shape == img.shape, name
    assert np.array_equal(SE.SHIFTS["none"](img, 0), img)
    assert (SE.SHIFTS["black collimation border"](img, 0)[:10] == 0).all()
    assert not np.array_equal(SE.SHIFTS["burnt-in markers"](img, 0), img)


def test_study_refuses_missing_data_and_unknown_names(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such data folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path), "--models", "resnet152"])


def test_heatmap_of_a_cropped_recipe_lies_over_the_centre_of_the_film(tiny_bundle, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr("edge_runtime.heatmap.MIN_CELLS", 1)  # the tiny model's 2x2 map: drawn here for geometry
    from edge_runtime import bundle as B
    from edge_runtime.classifier import Classifier
    from edge_runtime.preprocess import decode_image, resize, PreprocessConfig
    from train import data as D

    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    meta = json.loads((b / "metadata.json").read_text())
    meta["preprocess"].update(crop=0.1, equalize="clahe")
    meta.update(scope={}, orientation={})  # input checks off: this test is about geometry
    (b / "metadata.json").write_text(json.dumps(meta))
    B.write_sums(b)
    film = D.load_split(tiny_run / "split.csv")["test"][0].path
    img = resize(decode_image(film), PreprocessConfig(200))
    s = Classifier.from_bundle(b, num_threads=1).classify(img)
    assert s.heatmap is not None, s.reason
    assert s.heatmap.shape == (80, 80)  # 64 px model input = the central 80% of the film
    assert s.heatmap[:8].max() == 0 and s.heatmap[:, -8:].max() == 0


@pytest.mark.slow
def test_small_study_end_to_end(tiny_run, synthetic_data, tmp_path, monkeypatch):
    # the tiny model's 64 px input gives a 2x2 feature map, which the device does not draw; the report's
    # heatmap figure is an engineer's view, drawn here so the figure's code path runs
    monkeypatch.setattr("edge_runtime.heatmap.MIN_CELLS", 1)
    """The study on the phantoms: the tiny run is the first candidate (linked in as done); the study trains
    the border-only control (64 px, 2 epochs), converts the candidate, scores both, simulates site changes,
    writes the report and publishes it."""
    out = tmp_path / "study"
    (out / "train").mkdir(parents=True)
    (out / "train" / "mnv2-0.35_plain").symlink_to(tiny_run, target_is_directory=True)
    rc = main(["--data", str(synthetic_data), "--out", str(out), "--recipe", "plain", "--recipes", "plain",
               "--models", "mnv2-0.35", "--controls", "border", "--image-size", "64", "--epochs", "2",
               "--no-benchmark", "--extra", "", "--publish", str(tmp_path / "pub")])
    assert rc == 0
    res = json.loads((out / "study.json").read_text())
    assert res["default"] == "mnv2-0.35_plain"
    cand, ctrl = res["rows"]["mnv2-0.35_plain"], res["rows"]["control-border_plain"]
    assert cand["artifact"] == "tflite_int8" and ctrl["artifact"] == "keras (float)"
    assert (out / "train" / "control-border_plain" / "metadata.json").is_file()
    ctrl_meta = json.loads((out / "train" / "control-border_plain" / "metadata.json").read_text())
    assert ctrl_meta["preprocess"]["keep"] == "border" and ctrl_meta["preprocess"]["image_size"] == 64
    # the figures are the runtime's: recompute the candidate's test accuracy from the INT8 model
    from edge_runtime.classifier import Classifier
    from edge_runtime.metadata import ModelMetadata
    from train import data as D

    bundle = out / "bundles" / "mnv2-0.35_plain"
    meta = ModelMetadata.load(bundle / "metadata.json")
    test = D.load_arrays(D.load_split(tiny_run / "split.csv")["test"], meta.labels, meta.preprocess)
    probs = Classifier.from_bundle(bundle / "model_tflite_int8.tflite", num_threads=1).predict_batch(test.images)
    assert cand["test"]["accuracy"] == pytest.approx(float((probs.argmax(1) == test.labels).mean()))
    assert cand["test"]["accuracy"] > 0.5  # the tiny model is far above chance (1/3)
    assert set(cand["shift"]) == set(SE.SHIFTS) and cand["shift"]["none"]["accuracy"] == cand["test"]["accuracy"]
    # the default was chosen on validation films, as they are and under simulated site B
    assert cand["val_site_b"]["n"] == cand["val"]["n"] and 0 <= cand["val_site_b"]["macro_auc"] <= 1
    assert SE.selection_score(cand) == pytest.approx((cand["val"]["macro_auc"] + cand["val_site_b"]["macro_auc"]) / 2)
    hm = res["heatmaps"]
    assert 0 < hm["frame_area_share"] < 1 and sum(hm["n_by_class"].values()) == cand["test"]["n"]
    assert not (tmp_path / "pub" / "MODEL_SELECTION.md").exists()  # make selection's report is never overwritten
    report = (tmp_path / "pub" / "STUDY.md").read_text()
    for section in ("## Verdict", "## Shortcut audit", "## Robustness to a site change", "## What this data can"):
        assert section in report
    assert f"{cand['test']['accuracy']:.3f}" in report and res["meta"]["commit"] in report
    # the header tells what the study costs from scratch: the trainings' own wall time, summed
    walls = [json.loads((out / "train" / n / "train_config.json").read_text())["wall_seconds"]
             for n in ("mnv2-0.35_plain", "control-border_plain")]
    assert res["meta"]["train_minutes"] > 0
    assert res["meta"]["train_minutes"] == pytest.approx(sum(walls) / 60, abs=0.06)
    assert f"took {res['meta']['train_minutes']} min of training in all" in report
    for png in ("frontier.png", "shortcut_audit.png", "site_shift.png", "heatmaps.png"):
        assert (tmp_path / "pub" / "model_selection" / png).stat().st_size > 1000
    # a second run resumes: nothing is retrained or reconverted
    mtime = (bundle / "bundle.json").stat().st_mtime
    assert main(["--data", str(synthetic_data), "--out", str(out), "--recipe", "plain", "--recipes", "plain",
                 "--models", "mnv2-0.35", "--controls", "border", "--image-size", "64", "--epochs", "2",
                 "--no-benchmark", "--extra", ""]) == 0
    assert (bundle / "bundle.json").stat().st_mtime == mtime


def test_source_probe_finds_a_planted_source_signal(tmp_path):
    """Two 'sources' differing only by a bright frame: the border-frame probe separates them; an equalised,
    cropped recipe that removes the frame brings the probe down."""
    import cv2

    from benchmarks.study.evaluate import source_probe
    from train import data as D

    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        tb = i % 2 == 1
        img = (rng.random((96, 96)) * 80 + 80).astype(np.uint8)
        if tb:
            img[:6], img[-6:], img[:, :6], img[:, -6:] = 250, 250, 250, 250
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), img)
        rows.append(D.Sample(str(path), "tuberculosis" if tb else "normal", "b" if tb else "a", f"p{i}"))
    split = D.save_split({"train": rows[:60], "val": [], "test": rows[60:]}, tmp_path / "split.csv")
    res = source_probe(split, LABELS, {"plain": {}, "crop": {"crop": 0.15}}, 32, tmp_path / "cache")
    assert res["plain"]["border frame"] > 0.95
    assert res["crop"]["border frame"] < 0.8
