"""Which artifact a device serves: the kit records every candidate artifact of its backend that passed its
parity check, the device's self-test checks each by the rule, times those that pass on its own CPU and serves
the fastest (the bundle's first choice unless another is at least the margin faster), recording the choice.

Real: a signed bundle of two ONNX artifacts (tests/fake_bundle.py, no training) served by ONNX Runtime."""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import bundle as B
from edge_runtime import kit_selftest as S
from tests.fake_bundle import make_bundle, write_onnx

pytest.importorskip("onnxruntime")


def _two_artifacts(folder: Path, failed=()) -> Path:
    """A signed bundle holding model_onnx_fp32.onnx and model_onnx_int8.onnx (the same small graph, another
    bias: the two give different probabilities, so a test can tell which one answered)."""
    make_bundle(folder)
    write_onnx(folder / "model_onnx_int8.onnx", bias=3.2)
    (folder / "bundle.json").write_text(json.dumps({"validated": True, "formats": {}, "failed_formats": list(failed)}))
    B.write_sums(folder)
    return folder


def _films(folder: Path) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, value in enumerate((30, 128, 220)):
        p = folder / f"film_{i}.png"
        cv2.imwrite(str(p), np.full((48, 48), value, np.uint8))
        paths.append(p)
    return paths


def test_resolve_serves_the_format_asked_for(tmp_path):
    b = _two_artifacts(tmp_path / "b")
    assert B.resolve(b).key == "onnx_int8"  # the bundle's first choice: INT8
    assert B.resolve(b, fmt="onnx_fp32").path.name == "model_onnx_fp32.onnx"
    with pytest.raises(B.BundleError, match="no tflite_int8 artifact in the bundle .*onnx_fp32, onnx_int8"):
        B.resolve(b, fmt="tflite_int8")
    with pytest.raises(B.BundleError, match="no litert model in the bundle"):
        B.resolve(b, backend="litert", fmt="onnx_fp32")
    failed = _two_artifacts(tmp_path / "f", failed=["onnx_fp32"])
    with pytest.raises(B.BundleError, match="onnx_fp32 failed its parity check"):
        B.resolve(failed, fmt="onnx_fp32")


def test_candidates_are_the_passed_artifacts_first_choice_first(tmp_path):
    b = _two_artifacts(tmp_path / "b")
    assert S.candidate_formats(b, "onnxruntime") == ["onnx_int8", "onnx_fp32"]
    assert S.candidate_formats(b, "onnxruntime", ["onnx_fp32"]) == ["onnx_fp32"]
    with pytest.raises(S.KitError, match="no onnxruntime artifact tflite_fp32"):
        S.candidate_formats(b, "onnxruntime", ["tflite_fp32"])
    failed = _two_artifacts(tmp_path / "f", failed=["onnx_int8"])
    assert S.candidate_formats(failed, "onnxruntime") == ["onnx_fp32"]  # a failed artifact is never a candidate
    with pytest.raises(S.KitError, match="failed its parity check"):
        S.candidate_formats(failed, "onnxruntime", ["onnx_int8"])
    with pytest.raises(S.KitError, match="cannot be used with backend litert"):
        S.candidate_formats(b, "litert")


def test_an_int8_file_conversion_passed_over_never_competes_on_speed(tmp_path):
    """convert keeps both INT8 files and names the one it chose on accuracy (bundle.json ``preferred``); the
    device times only that one against FP32, so a faster post-training file cannot displace the QAT file."""
    b = make_bundle(tmp_path / "b")
    for name in ("model_tflite_int8.tflite", "model_tflite_int8_ptq.tflite", "model_tflite_fp32.tflite"):
        (b / name).write_bytes(b"not read here")
    status = {"validated": True, "formats": {}, "failed_formats": [], "preferred": {"litert": "tflite_int8_ptq"}}
    (b / "bundle.json").write_text(json.dumps(status))
    assert S.candidate_formats(b, "litert") == ["tflite_int8_ptq", "tflite_fp32"]
    (b / "bundle.json").write_text(json.dumps(status | {"preferred": {"litert": "tflite_int8"}}))
    assert S.candidate_formats(b, "litert") == ["tflite_int8", "tflite_fp32"]
    assert S.candidate_formats(b, "litert", ["tflite_int8_ptq", "tflite_int8"]) == ["tflite_int8", "tflite_int8_ptq"]
    (b / "bundle.json").write_text(json.dumps(status | {"preferred": {}, "failed_formats": ["tflite_int8"]}))
    assert S.candidate_formats(b, "litert") == ["tflite_int8_ptq", "tflite_fp32"]  # the one INT8 file that passed


def test_choose_fastest_keeps_the_first_choice_inside_the_margin():
    t = lambda **ms: {k: {"median_ms": v} for k, v in ms.items()}  # noqa: E731
    assert S.choose_fastest(t(a=10.0, b=9.0), "a", 0.10)[0] == "b"  # exactly 10% faster: served
    assert S.choose_fastest(t(a=10.0, b=9.01), "a", 0.10)[0] == "a"  # just under 10%: the first choice stays
    key, why = S.choose_fastest(t(a=10.0, b=5.0), "a", 0.10)
    assert key == "b" and "50% faster" in why
    assert S.choose_fastest(t(a=4.0, b=5.0), "a")[0] == "a"
    key, why = S.choose_fastest(t(b=5.0, c=3.0), "a")  # the first choice did not pass on this device
    assert key == "c" and "did not" in why
    with pytest.raises(ValueError):
        S.choose_fastest({}, "a")


def test_time_models_orders_a_slow_and_a_fast_model():
    slow = lambda x: time.sleep(0.004)  # noqa: E731
    fast = lambda x: None  # noqa: E731
    t = S.time_models({"slow": slow, "fast": fast}, [0, 1], rounds=5, budget_s=10)
    assert t["slow"]["runs"] == t["fast"]["runs"] == 10  # every model once per input per round
    assert t["fast"]["median_ms"] < 1.0 <= 4.0 <= t["slow"]["median_ms"] <= t["slow"]["p90_ms"]
    short = S.time_models({"slow": slow}, [0], rounds=1000, budget_s=0.01)
    assert 3 <= short["slow"]["runs"] < 1000  # the budget ends it early, after at least 3 rounds
    with pytest.raises(ValueError):
        S.time_models({}, [0])


def _selftest_module():
    import importlib.util

    from edge_runtime.kit import KIT_FILES

    spec = importlib.util.spec_from_file_location("kit_selftest_device", KIT_FILES / "selftest.py")
    st = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(st)
    return st


def _installed(tmp_path: Path, bundle: Path, films: list[Path], **kw) -> tuple[Path, Path]:
    """expected.json recorded on the 'workstation' and the samples beside it, as a kit installs them."""
    expected = S.expected_candidates(bundle, "onnxruntime", films, **kw)
    st = tmp_path / "selftest"
    (st / "samples").mkdir(parents=True)
    for f in films:
        shutil.copy2(f, st / "samples" / f.name)
    (st / "expected.json").write_text(json.dumps(expected))
    return st / "expected.json", bundle


def test_device_selftest_times_the_candidates_and_records_the_choice(tmp_path, capsys):
    b = _two_artifacts(tmp_path / "b")
    exp, bundle = _installed(tmp_path, b, _films(tmp_path / "films"))
    recorded = json.loads(exp.read_text())
    assert list(recorded["candidates"]) == ["onnx_int8", "onnx_fp32"] and recorded["format"] == "onnx_int8"
    choice = tmp_path / "choice.json"
    st = _selftest_module()
    assert st.main(["--bundle", str(bundle), "--expected", str(exp), "--choice", str(choice)]) == 0
    out = capsys.readouterr().out
    c = json.loads(choice.read_text())
    assert set(c["timings_ms"]) == {"onnx_int8", "onnx_fp32"} and all(t["runs"] >= 9 for t in c["timings_ms"].values())
    # the recorded choice is the rule applied to the recorded timings, and names its reason and the CPU
    assert (c["format"], c["reason"]) == S.choose_fastest(c["timings_ms"], "onnx_int8", recorded["margin"])
    assert c["model"] == f"model_{c['format']}.onnx" and c["backend"] == "onnxruntime" and c["processor"]
    assert c["cores"] >= 1 and isinstance(c["int8_features"], list)
    assert f"serving {c['format']}" in out and "2 of 2 candidate(s)" in out and "<- served" in out


def test_device_serves_another_candidate_when_one_fails_here(tmp_path, capsys):
    """A candidate whose probabilities this device does not reproduce is not served; the other is. The
    install fails only when none passes."""
    b = _two_artifacts(tmp_path / "b")
    exp, bundle = _installed(tmp_path, b, _films(tmp_path / "films"))
    d = json.loads(exp.read_text())
    first = next(iter(d["candidates"]["onnx_int8"]["samples"].values()))
    first["probs"]["normal"] += 0.01  # beyond the tolerance (no reference kernels on ONNX Runtime)
    exp.write_text(json.dumps(d))
    choice = tmp_path / "choice.json"
    st = _selftest_module()
    assert st.main(["--bundle", str(bundle), "--expected", str(exp), "--choice", str(choice)]) == 0
    out = capsys.readouterr().out
    c = json.loads(choice.read_text())
    assert c["format"] == "onnx_fp32" and "did not" in c["reason"] and list(c["not_served"]) == ["onnx_int8"]
    assert "WARNING: onnx_int8 is not served on this device" in out and "1 of 2 candidate(s)" in out

    first = next(iter(d["candidates"]["onnx_fp32"]["samples"].values()))
    first["probs"]["normal"] += 0.01
    exp.write_text(json.dumps(d))
    assert st.main(["--bundle", str(bundle), "--expected", str(exp), "--choice", str(choice)]) == 1
    assert "self-test FAILED" in capsys.readouterr().err


def test_serve_and_classify_take_the_chosen_format(tmp_path, capsys):
    import csv

    from edge_runtime.__main__ import main

    import cv2

    b = _two_artifacts(tmp_path / "b")
    films = [tmp_path / "film.png"]  # a film in scope (a flat one is blank: no probabilities in its row)
    cv2.imwrite(str(films[0]), np.clip(np.random.default_rng(0).normal(60, 25, (48, 48)), 0, 255).astype(np.uint8))

    def p_normal(*extra) -> float:
        out_csv = tmp_path / "rows.csv"
        assert main(["classify", str(films[0]), "--bundle", str(b), "--csv", str(out_csv), "--no-progress",
                     *extra]) == 0
        with open(out_csv, newline="") as fh:
            return float(next(csv.DictReader(fh))["p_normal"])

    default, fp32, int8 = p_normal(), p_normal("--format", "onnx_fp32"), p_normal("--format", "onnx_int8")
    assert default == int8 != fp32  # the bundle's first choice is INT8; --format takes the other one
    assert main(["classify", str(films[0]), "--bundle", str(b), "--format", "tflite_int8", "--no-progress"]) == 2
    assert "no tflite_int8 artifact" in capsys.readouterr().err
    # serve: a format the bundle lacks is refused before anything listens
    assert main(["serve", "--bundle", str(b), "--format", "tflite_int8", "--host", "127.0.0.1", "--port", "0",
                 "--data-dir", str(tmp_path / "data")]) == 2
    assert "no tflite_int8 artifact" in capsys.readouterr().err
    with pytest.raises(B.BundleError, match="is onnx_fp32, not onnx_int8"):  # a bare file must be what is asked
        B.resolve(b / "model_onnx_fp32.onnx", fmt="onnx_int8")

    from edge_runtime.classifier import Classifier
    from edge_runtime.web.app import create_app

    clf = Classifier.from_bundle(b, fmt="onnx_fp32")
    health = create_app(clf, tmp_path / "data", {"HOST": "127.0.0.1"}).test_client().get("/healthz").get_json()
    assert health["model"]["format"] == "onnx_fp32" and health["model"]["backend"] == "onnxruntime"


def test_workstation_leaves_out_a_refused_candidate_and_keeps_the_rest(tmp_path, monkeypatch):
    """A candidate the rule refuses on the workstation (here: its optimised kernels drift) is left out with
    the reason; the kit keeps the others; when every candidate is refused the first refusal is the error."""
    b = _two_artifacts(tmp_path / "b")
    films = _films(tmp_path / "films")
    real = S.expected_results

    def refuse(fmts):
        def fake(bundle, backend, samples, *a, fmt=None, **k):
            if fmt in fmts:
                raise S.KitError(f"{fmt}: sensitive to rounding")
            return real(bundle, backend, samples, *a, fmt=fmt, **k)
        return fake

    monkeypatch.setattr(S, "expected_results", refuse({"onnx_int8"}))
    e = S.expected_candidates(b, "onnxruntime", films)
    assert list(e["candidates"]) == ["onnx_fp32"] and e["format"] == "onnx_fp32"  # the top level: first admitted
    assert "sensitive to rounding" in e["excluded"]["onnx_int8"]
    monkeypatch.setattr(S, "expected_results", refuse({"onnx_int8", "onnx_fp32"}))
    with pytest.raises(S.KitError, match="onnx_int8: sensitive to rounding"):
        S.expected_candidates(b, "onnxruntime", films)


def test_a_candidate_that_does_not_load_fails_the_install(tmp_path, capsys):
    b = _two_artifacts(tmp_path / "b")
    exp, bundle = _installed(tmp_path, b, _films(tmp_path / "films"))
    (b / "model_onnx_fp32.onnx").write_bytes(b"not an onnx model")  # replaced after the workstation's checks
    B.write_sums(b)  # ... and signed again, so only loading it can tell
    st = _selftest_module()
    assert st.main(["--bundle", str(bundle), "--expected", str(exp)]) == 1
    err = capsys.readouterr().err
    assert "self-test FAILED" in err and "onnx_fp32: " in err and "model_onnx_fp32.onnx" in err
