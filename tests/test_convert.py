"""Conversion of a tiny trained model to every format, each run through the device runtime."""
import json

import numpy as np
import pytest

pytest.importorskip("tf_keras")

from edge_runtime.formats import DEFAULT_FORMATS, FORMATS, SUFFIX_BACKEND, parse_formats  # noqa: E402
from edge_runtime import bundle as B  # noqa: E402
from edge_runtime.classifier import Classifier  # noqa: E402
from edge_runtime.metadata import ModelMetadata  # noqa: E402

pytestmark = pytest.mark.slow
ON_DEVICE = [k for k, f in FORMATS.items() if f.on_device]
# Top-1 agreement with the Keras parent that the tiny model (64 px, alpha 0.35, ~60 validation images) must keep.
# The QAT TFLite model (the default) tracks its parent closely; post-training INT8 of a float model this small
# does not: measured 0.71-0.97 for ONNX/OpenVINO/TFLite PTQ and OpenVINO from the QAT graph across runs. On the
# MobileNetV2-224 cxr-dev model: TFLite INT8 0.956, TFLite PTQ 0.961, ONNX INT8 0.937, OpenVINO NNCF 0.956,
# OpenVINO QAT-IR 0.816 (the bundle marks those below 0.98 failed; the benchmark reports the accuracy cost).
# So the gate here is "clearly tracks the parent" (chance is ~0.33), with a closer bound for the default.
MIN_INT8_AGREEMENT = {"tflite_int8": 0.85}
INT8_FLOOR = 0.6


def test_format_table_is_keyed_and_checked():
    assert set(DEFAULT_FORMATS) <= set(FORMATS)
    assert all(f.key == k and f.filename.startswith("model_" + k) for k, f in FORMATS.items())
    assert {f.suffix for f in FORMATS.values() if f.on_device} == set(SUFFIX_BACKEND)
    assert parse_formats("all") == ON_DEVICE
    with pytest.raises(ValueError, match="unknown format.*tflite_int4.*valid: keras_fp32"):
        parse_formats("tflite_int8,tflite_int4")


@pytest.fixture(scope="module")
def reference(tiny_run):
    """Keras probabilities of the float and QAT parents on the validation images (what parity compares to)."""
    from train import data as D
    from train import keras_io as K

    meta = ModelMetadata.load(tiny_run / "metadata.json")
    val = D.load_arrays(D.load_split(tiny_run / "split.csv")["val"], meta.labels, meta.preprocess)
    probs = {p: K.predict(K.two_output_model(K.load_model(tiny_run / f)), val.images)
             for p, f in (("float", "model_float.keras"), ("qat", "model_qat.h5"))}
    return val, probs


@pytest.mark.parametrize("key", ON_DEVICE)
def test_every_format_runs_in_the_runtime_and_agrees_with_keras(tiny_bundle, reference, key):
    fmt = FORMATS[key]
    val, probs = reference
    row = json.loads((tiny_bundle / "bundle.json").read_text())["formats"][key]
    assert row["ok"] and row["bytes"] > 0 and row["parent"] == fmt.parent
    clf = Classifier.from_bundle(tiny_bundle / fmt.filename)
    assert clf.backend == fmt.backend
    assert clf.metadata.labels == ("normal", "pneumonia", "tuberculosis")
    got = clf.predict_batch(val.images)
    want = probs[fmt.parent]
    agreement = (got.argmax(1) == want.argmax(1)).mean()
    if fmt.int8:
        assert agreement >= MIN_INT8_AGREEMENT.get(key, INT8_FLOOR), agreement
        if key == "tflite_int8":
            assert np.median(np.abs(got - want).max(1)) < 0.05
    else:
        assert agreement == 1.0
        np.testing.assert_allclose(got, want, atol=1e-3)
    assert row["agreement"] == pytest.approx(agreement, abs=1e-9)
    # the artifact carries its own operating point, fitted on its own validation outputs, and the runtime uses it
    from edge_runtime import operating_point as C

    own = ModelMetadata.load(tiny_bundle / "metadata.json").calibration[key]
    assert own["temperature"] == pytest.approx(C.fit_temperature(val.labels, got))
    assert own["thresholds"] == pytest.approx(C.fit(val.labels, got, list(clf.metadata.labels))["thresholds"])
    assert clf.metadata.temperature == own["temperature"] and clf.metadata.thresholds == own["thresholds"]


def test_metadata_is_embedded_in_every_artifact(tiny_bundle):
    meta = ModelMetadata.load(tiny_bundle / "metadata.json")
    assert meta.synthetic and 0 < meta.temperature
    for parent in ("float", "qat"):  # heatmap weights and input-check statistics for each parent model
        assert np.asarray(meta.head[parent]["weights"]).shape[1] == len(meta.labels)
        assert len(meta.head[parent]["cam_scale"]) == len(meta.labels)  # the heatmap's scale, from validation
        assert meta.scope[parent]["within_threshold"] > 0 and meta.scope[parent]["residual_threshold"] > 0
    assert 0 < meta.thresholds["tuberculosis"] < 1 and 0 <= meta.thresholds["refer_below"] < 1
    assert set(meta.calibration) == {"keras_fp32", *ON_DEVICE}
    for key in ("onnx_int8", "onnx_fp32", "openvino_int8", "openvino_fp32"):
        # the copy inside the artifact is the bundle's metadata with that artifact's own operating point on top,
        # so a file copied out of its bundle still decides with its own numbers
        embedded = B.embedded_metadata(tiny_bundle / FORMATS[key].filename)
        assert embedded == meta.for_format(key), key
        assert embedded.temperature == meta.calibration[key]["temperature"], key
        # each artifact's own scores and decisions on the validation films: the reference a clinic is compared with
        ref = meta.calibration[key]["reference"]
        assert embedded.reference == ref and ref["source"] == "validation films"
        assert sum(ref["decisions"].values()) == ref["n"] == sum(c["n"] for c in ref["per_class"].values())
        assert all(sum(h) == c["n"] for c in ref["per_class"].values() for h in c["hist"].values())
    assert meta.reference["n"] == meta.calibration["keras_fp32"]["reference"]["n"] > 0


def test_bundle_has_card_and_checksums(tiny_bundle):
    names = B.verify_sums(tiny_bundle)
    assert {"metadata.json", "bundle.json", "MODEL_CARD.md"} <= set(names)
    assert all(FORMATS[k].filename in names for k in ON_DEVICE)
    card = (tiny_bundle / "MODEL_CARD.md").read_text()
    assert "SYNTHETIC DATA - NOT FOR CLINICAL USE" in card and "not a diagnosis" in card
    status = json.loads((tiny_bundle / "bundle.json").read_text())
    assert status["validated"] is False  # synthetic data is never a validated model


def test_failed_parity_is_marked_and_exit_code_says_so(tiny_run, tmp_path):
    from convert.__main__ import main

    rc = main([str(tiny_run), "--formats", "tflite_int8_ptq", "--out", str(tmp_path / "b"), "--min-agreement", "1.01"])
    assert rc == 3
    status = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert status["failed_formats"] == ["tflite_int8_ptq"] and not status["formats"]["tflite_int8_ptq"]["passed"]
    assert "FAILED" in (tmp_path / "b" / "MODEL_CARD.md").read_text()


def test_convert_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from convert.__main__ import main

    assert main([str(tmp_path), "--out", str(tmp_path / "b")]) == 2  # bad arguments, as the help promises
    assert "not a training run (no metadata.json, model_float.keras, split.csv)" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "b"), "--formats", "nope"]) == 2


def test_force_replaces_a_bundle_and_nothing_else(tmp_path, capsys):
    """``--force`` with --out the runs folder deleted the run being converted and its siblings (review27b #10):
    refused, before anything is deleted or TensorFlow imported; a bundle folder is still replaced."""
    from convert.__main__ import main

    runs = tmp_path / "runs"
    run, sibling = runs / "a", runs / "b"
    for r in (run, sibling):
        r.mkdir(parents=True)
        for f in ("metadata.json", "model_float.keras", "split.csv"):
            (r / f).write_text("x")
    assert main([str(run), "--out", str(runs), "--force"]) == 2
    assert "holds the training run" in capsys.readouterr().err
    assert main([str(run), "--out", str(sibling), "--force"]) == 2
    assert "holds no bundle" in capsys.readouterr().err
    assert sorted(p.name for p in runs.iterdir()) == ["a", "b"] and (sibling / "split.csv").is_file()
    from convert.__main__ import replaceable

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    replaceable(bundle, run)  # a bundle: --force may replace it


def _refused_then_converted(tiny_run, tmp_path, capsys, bad: list, needle: str, good: list, name: str):
    """convert refuses ``bad`` options before TensorFlow (exit 2, ``needle`` in its message), then converts the
    tiny run with ``good`` ones (the tiny model's parity gate lowered); the bundle folder and its metadata."""
    from convert.__main__ import main

    assert main([str(tiny_run), *bad, "--out", str(tmp_path / "x")]) == 2
    assert needle in capsys.readouterr().err
    out = tmp_path / name
    assert main([str(tiny_run), *good, "--out", str(out), "--min-agreement", "0.85"]) in (0, 3)
    return out, ModelMetadata.load(out / "metadata.json")


def test_views_fit_every_operating_point_on_the_views_average(tiny_run, reference, tmp_path, capsys):
    """convert --views: the device averages zoomed copies of each film, so the artifact's temperature and
    thresholds are fitted on that average, and the bundle says so (schema 3, model card)."""
    from edge_runtime import operating_point as C
    from edge_runtime import views as V

    out, meta = _refused_then_converted(tiny_run, tmp_path, capsys, ["--views", "rot90"], "unknown view",
                                        ["--formats", "tflite_int8", "--views", "zoom3"], "views")
    assert meta.views == V.parse("zoom3") and json.loads((out / "metadata.json").read_text())["schema_version"] == 3
    val, probs = reference
    clf = Classifier.from_bundle(out / FORMATS["tflite_int8"].filename)
    assert clf.metadata.views == meta.views                        # the copy inside the artifact carries them too
    got = clf.predict_batch(val.images)
    one = clf._backend.run_batch(val.images)
    assert np.abs(got - one).max() > 1e-3                          # the views changed the answer
    own = meta.calibration["tflite_int8"]
    assert own["temperature"] == pytest.approx(C.fit_temperature(val.labels, got))
    assert own["thresholds"] == pytest.approx(C.fit(val.labels, got, list(meta.labels))["thresholds"])
    row = json.loads((out / "bundle.json").read_text())["formats"]["tflite_int8"]
    assert row["agreement"] == pytest.approx((one.argmax(1) == probs["qat"].argmax(1)).mean())  # parity: one view
    assert "Test-time views: zoom3" in (out / "MODEL_CARD.md").read_text()


def test_refer_share_fits_each_refer_threshold_to_refer_that_share_of_validation_films(tiny_run, reference, tmp_path,
                                                                                       capsys):
    """convert --refer-share (a recipe's [convert] refer-share): the refer threshold is the quantile of the films'
    top probability that refers that share of the validation films the TB rule does not flag, for the deployed
    model and each artifact alike, and the model card says which rule set it (docs/refer-share)."""
    from edge_runtime import operating_point as C

    out, meta = _refused_then_converted(tiny_run, tmp_path, capsys, ["--refer-share", "1.5"], "between 0 and 1",
                                        ["--formats", "tflite_fp32", "--refer-share", "0.3"], "share")
    refer = meta.metrics["operating_point"]["refer"]
    assert refer["target_share"] == 0.3 and refer["refer_below"] == meta.thresholds["refer_below"]
    # the artifact's own threshold: the 30% quantile of its own calibrated validation outputs (TB-flagged left out)
    val, _ = reference
    own = meta.calibration["tflite_fp32"]
    cal = C.calibrate(Classifier.from_bundle(out / FORMATS["tflite_fp32"].filename).predict_batch(val.images),
                      own["temperature"])
    is_tb = cal[:, list(meta.labels).index(C.TB)] >= own["thresholds"][C.TB]
    assert own["thresholds"]["refer_below"] == pytest.approx(C.fit_refer_share(cal, is_tb, 0.3), abs=1e-6)
    assert C.refer_share(cal, is_tb, own["thresholds"]["refer_below"]) == pytest.approx(0.3, abs=1.5 / (~is_tb).sum())
    assert own["operating_point"]["refer"]["target_share"] == 0.3
    assert "least confident 30.0% of validation images not flagged TB" in (out / "MODEL_CARD.md").read_text()
    y = np.array([0, 1, 2, 0])
    plain = C.choose_operating_points(y, np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1, ["normal", "pneumonia", "tuberculosis"])
    assert "target_share" not in plain[1]["refer"]   # without a share: the kept-accuracy rule, as before
