"""The benchmark: a table with one row per format, a failing format as a row (not a crash), the gates.

The runs use the tiny session bundle (64 px) with few latency iterations: they check the machinery and the
table, not speed (this machine is shared; no timing is asserted)."""
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality as Q
from benchmarks.__main__ import main
from benchmarks.report import fmt, markdown
from benchmarks.runner import Progress, gates
from edge_runtime import metrics as M
from edge_runtime.formats import FORMATS

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--warmup", "2", "--iterations", "5", "--e2e-iterations", "2", "--e2e-size", "256"]


def _strict_json(path: Path) -> dict:
    def no_nan(name):
        raise AssertionError(f"{path} holds {name}: not valid JSON")
    return json.loads(path.read_text(), parse_constant=no_nan)


def _rows(path: Path) -> dict:
    with path.open(newline="") as fh:
        return {r["format"]: r for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_two_formats_and_the_keras_baseline(tiny_bundle, tiny_run, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["--bundle", str(tiny_bundle), "--run", str(tiny_run), "--formats", "tflite_int8,onnx_int8",
                 "--out", str(out), "--publish", str(tmp_path / "pub"), *FAST])
    assert code == 0
    stdout = capsys.readouterr().out
    for key in ("keras_fp32", "tflite_int8", "onnx_int8"):
        assert f"| {key} |" in stdout
    for heading in ("## Quality (pooled)", "## Latency (batch 1)", "## Load, end to end, memory",
                    "## Quality per source", "## Targets"):
        assert heading in stdout
    assert "p50/p90/p99 ms 1t" in stdout and "x Keras 1t" in stdout and "TB spec @90% sens" in stdout

    rows = _rows(out / "results.csv")
    assert list(rows) == ["keras_fp32", "tflite_int8", "onnx_int8"]  # the baseline first, then the asked order
    for key, r in rows.items():
        assert r["status"] in ("ok", "FLAG"), (key, r["error"])
        assert 0 <= float(r["accuracy"]) <= 1 and 0 <= float(r["ece"]) <= 1
        assert float(r["p50_ms_1t"]) > 0 and float(r["size_mb"]) > 0 and float(r["peak_rss_mb"]) > 0
        assert float(r["e2e_total_ms"]) > 0 and float(r["load_ms"]) > 0
        for label in ("normal", "pneumonia", "tuberculosis"):
            assert f"sens_{label}" in r and f"spec_{label}" in r
    base = rows["keras_fp32"]
    assert float(base["agreement_vs_float"]) == 1.0 and float(base["speedup_1t"]) == 1.0
    assert rows["tflite_int8"]["int8"] == "True" and float(rows["tflite_int8"]["agreement_vs_float"]) > 0.5

    res = _strict_json(out / "results.json")
    assert res["machine"]["cores"] and res["machine"]["python"] and "onnxruntime" in res["machine"]["versions"]
    assert res["data"]["n"] == len(np.load(out / "predictions.npz")["labels"])
    assert set(res["details"]["onnx_int8"]["quality"]["by_source"]) == set(res["data"]["by_source"])
    e2e = res["details"]["tflite_int8"]["speed"]["e2e"]
    # the 64 px tiny model's feature map is 2x2: too coarse, so no heatmap is drawn (and the grid says why)
    assert e2e["heatmap_grid"] == [2, 2] and e2e["heatmap"] is False
    assert (out / "report.md").read_text().startswith("# Benchmark")
    by_source = list(csv.DictReader((out / "results_by_source.csv").open()))
    assert {r["format"] for r in by_source} == set(rows)
    for name in ("confusion_keras_fp32.png", "confusion_tflite_int8.png", "confusion_onnx_int8.png", "roc.png",
                 "latency_accuracy.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert f"](plots/{name})" in (out / "report.md").read_text()
    # no scratch is left beside the report: no films (the evaluation array, the enlarged end-to-end film) in --out
    assert not (out / "work").exists() and not list(out.glob("*.png")) and not list(out.rglob("*.npy"))
    published = (tmp_path / "pub" / "RESULTS.md").read_text()  # --publish: the same report, links still right
    assert published.startswith("# Benchmark") and "](results_plots/roc.png)" in published
    assert (tmp_path / "pub" / "results_plots" / "roc.png").read_bytes() == (out / "plots" / "roc.png").read_bytes()


@pytest.mark.slow
def test_failing_formats_are_rows_and_gates_exit_non_zero(tiny_bundle, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / FORMATS["onnx_int8"].filename).write_bytes(b"not an onnx model" * 50)  # corrupt, then re-signed
    (bundle / FORMATS["tflite_fp32"].filename).unlink()  # absent from the bundle
    from edge_runtime.bundle import write_sums

    write_sums(bundle)
    with (bundle / FORMATS["tflite_int8_ptq"].filename).open("ab") as fh:  # changed after signing
        fh.write(b"\0")
    out = tmp_path / "bench"
    keys = "tflite_int8,onnx_int8,tflite_fp32,tflite_int8_ptq"
    # the bundle's own run folder (bundle.json) gives the test images; no Keras baseline here
    code = main(["--bundle", str(bundle), "--formats", keys, "--no-baseline", "--no-plots", "--out", str(out), *FAST])
    assert code == 0  # failed rows are reported; without a gate the run succeeds
    stdout = capsys.readouterr().out
    rows = _rows(out / "results.csv")
    assert list(rows) == keys.split(",")
    assert rows["tflite_int8"]["status"] in ("ok", "FLAG") and float(rows["tflite_int8"]["accuracy"]) > 0
    assert rows["onnx_int8"]["status"] == "failed" and "ONNX" in rows["onnx_int8"]["error"]
    assert rows["tflite_fp32"]["status"] == "failed" and "not in the bundle" in rows["tflite_fp32"]["error"]
    assert "checksum mismatch" in rows["tflite_int8_ptq"]["error"]
    assert "## Failures, flags and notes" in stdout and "**onnx_int8** (failed)" in stdout
    assert rows["tflite_int8"]["speedup_1t"] == ""  # no baseline, no speed-up

    # gates: a failed row fails the gate; an accuracy above 1 cannot be met
    assert main(["--bundle", str(bundle), "--formats", "tflite_int8,onnx_int8", "--no-baseline", "--no-plots",
                 "--quiet", "--max-latency-ms", "1e9", "--out", str(tmp_path / "g1"), *FAST]) == 1
    assert main(["--bundle", str(bundle), "--formats", "tflite_int8", "--no-baseline", "--no-plots", "--quiet",
                 "--min-accuracy", "1.01", "--out", str(tmp_path / "g2"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "GATE FAILED" in err and "tflite_int8: accuracy" in err and "onnx_int8: failed" in err
    assert _strict_json(tmp_path / "g2" / "results.json")["gates"]["passed"] is False

    # without --formats: what the bundle holds; the other formats of the table are named, not run
    small = tmp_path / "small"
    small.mkdir()
    for name in ("metadata.json", "bundle.json", FORMATS["tflite_int8"].filename):
        shutil.copy(tiny_bundle / name, small / name)
    write_sums(small)
    assert main(["--bundle", str(small), "--no-baseline", "--no-plots", "--out", str(tmp_path / "s"), *FAST]) == 0
    assert list(_rows(tmp_path / "s" / "results.csv")) == ["tflite_int8"]
    assert "does not hold" in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 2
    assert main(["--bundle", str(tmp_path / "nope"), "--formats", "tflite_nine", "--out", str(tmp_path)]) == 2
    assert "unknown format" in capsys.readouterr().err
    assert main(["--bundle", str(tmp_path), "--threads", "0", "--out", str(tmp_path)]) == 2
    assert main(["--bundle", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_int8_flags_against_the_float_reference():
    ref = {"macro_f1": 0.80}
    assert Q.int8_flags({"int8": True, "macro_f1": 0.795, "agreement_vs_float": 0.99}, ref) == []
    flags = Q.int8_flags({"int8": True, "macro_f1": 0.70, "agreement_vs_float": 0.90}, ref)
    assert len(flags) == 2 and "87.5%" in flags[0] and "90.0%" in flags[1]
    assert Q.int8_flags({"int8": False, "macro_f1": 0.1, "agreement_vs_float": 0.1}, ref) == []
    assert M.agreement(np.eye(3)[[0, 1, 2]], np.eye(3)[[0, 1, 1]])["agreement"] == pytest.approx(2 / 3)


def test_quality_uses_the_bundle_threshold_and_temperature():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]])
    rep = Q.evaluate(y, probs, np.array(["a", "a", "b", "b"]), ["normal", "pneumonia", "tuberculosis"],
                     temperature=1.0, thresholds={"tuberculosis": 0.35})
    assert rep["pooled"]["tb_at_threshold"]["sensitivity"] == 1.0
    assert rep["pooled"]["accuracy"] == 0.75 and set(rep["by_source"]) == {"a", "b"}
    flat = Q.flat(rep["pooled"], ["normal", "pneumonia", "tuberculosis"])
    assert flat["sens_tuberculosis"] == 0.5 and flat["tb_spec_at_threshold"] == 1.0


def test_gates_and_formatting():
    rows = [{"format": "keras_fp32", "status": "ok", "accuracy": 0.5, "p50_ms_1t": 100.0},
            {"format": "tflite_int8", "status": "ok", "accuracy": 0.9, "p50_ms_1t": 4.0, "p50_ms_2t": 2.0},
            {"format": "onnx_int8", "status": "failed", "error": "boom"}]
    assert gates(rows, None, None, [1, 2])["active"] is False
    g = gates(rows, 0.8, 3.0, [1, 2])  # the baseline is not gated; best thread count counts
    assert g["failures"] == ["onnx_int8: failed (boom)"]
    assert len(gates(rows, 0.95, 1.0, [1, 2])["failures"]) == 3
    assert fmt(float("nan")) == "-" and fmt(None) == "-" and fmt(0.5, pct=True) == "50.0%"


def test_progress_prints_plain_lines_off_a_terminal():
    import io

    buf = io.StringIO()
    p = Progress(2, stream=buf)
    p.show("a", "loading")
    p.show("a", "loading")
    p.show("a", "done", advance=True)
    p.show("b", "done", advance=True)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in buf.getvalue()
    assert lines[0] == "[0/2] a: loading" and lines[-1].startswith("[2/2, ") and lines[-1].endswith(" each] b: done")


def test_progress_on_a_terminal_is_a_tqdm_bar_with_rate_and_counts():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    buf = Tty()
    p = Progress(2, stream=buf)
    p.show("a", "loading")
    p.show("a", "done", advance=True)
    p.show("b", "done", advance=True)
    text = buf.getvalue()
    assert p.bar is not None and "\r" in text  # one line redrawn, not a line per update
    last = text.split("\r")[-1]
    assert "2/2" in last and "format/s" in last and "b: done" in last


def test_parent_process_does_not_import_tensorflow():
    code = ("import sys, benchmarks.__main__, benchmarks.runner, benchmarks.report, benchmarks.quality, "
            "benchmarks.plots; bad = [m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'openvino') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_markdown_of_an_all_failed_run_renders():
    result = {"model": {"name": "m", "version": "1", "image_size": 64, "labels": ["normal", "tuberculosis"],
                        "temperature": 1.0, "synthetic": True},
              "bundle": "b", "run_dir": None, "data": {"description": "d", "by_source": {}, "skipped": []},
              "machine": {"date": "now", "cpu": "cpu", "cores": 2, "usable_cores": 2, "os": "os", "python": "3",
                          "versions": {}},
              "options": {"threads": [1], "warmup": 1, "iterations": 1, "e2e_iterations": 1, "e2e_size": 64},
              "rows": [{"format": k, "backend": f.backend, "int8": f.int8, "status": "failed", "error": "x",
                        "notes": ""} for k, f in FORMATS.items()],
              "details": {}, "gates": {"active": False}}
    text = markdown(result)
    assert "SYNTHETIC" in text and all(f"| {k} | failed |" in text for k in FORMATS)


def test_the_benchmark_finds_the_bundles_own_run_or_none_and_refuses_another(tmp_path, monkeypatch):
    """``benchmarks`` looks up a bundle's training run with the lookup every benchmark shares
    (``evaluate.bundle_run``): a run moved beside the bundle is found, a missing one gives None (films from --data),
    and a folder of that name holding another fold's split is an error, not silently scored (its test side would
    hold films the model trained on)."""
    from benchmarks.runner import BenchmarkError, _resolve_run_dir
    from edge_runtime.metadata import ModelMetadata
    from tests.fake_bundle import make_bundle
    from train import data as D

    monkeypatch.chdir(tmp_path)
    bundle = make_bundle(tmp_path / "site" / "bundle")
    meta = ModelMetadata.load(bundle / "metadata.json")
    sample = lambda i, side: D.Sample(f"/films/{side}{i}.png", "normal", "s", f"p{side}{i}")

    def run(folder: Path, fold: int, n_test: int) -> Path:
        folder.mkdir(parents=True)
        D.save_split({"train": [sample(i, "train") for i in range(6)], "val": [sample(0, "val")],
                      "test": [sample(i, "test") for i in range(n_test)]}, folder / "split.csv")
        (folder / "train_config.json").write_text(json.dumps({"fold": fold, "folds": 5, "seed": 0}))
        return folder

    meta = dataclasses.replace(meta, split={"fold": 0, "folds": 5, "seed": 0,
                                            "counts": {"train": 6, "val": 1, "test": 2}})
    status = {"run_dir": "/elsewhere/runs/fold0"}
    assert _resolve_run_dir(bundle, status, meta) is None  # not on this machine
    assert _resolve_run_dir(bundle, {}, meta) is None  # names none
    other = run(tmp_path / "site" / "fold0", fold=1, n_test=3)  # same name, another fold's split
    with pytest.raises(BenchmarkError, match="fold 1 against the bundle's 0.*give --run"):
        _resolve_run_dir(bundle, status, meta)
    shutil.rmtree(other)
    own = run(tmp_path / "site" / "fold0", fold=0, n_test=2)  # the bundle's own run, moved beside it
    assert _resolve_run_dir(bundle, status, meta).resolve() == own.resolve()
