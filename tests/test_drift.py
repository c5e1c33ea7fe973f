"""benchmarks.drift: LiteRT's optimised against its reference kernels, per artifact and per data source."""
import json

import pytest

pytest.importorskip("ai_edge_litert")


def test_drift_of_every_litert_artifact(tiny_bundle, tmp_path, capsys):
    from benchmarks.drift import main

    out = tmp_path / "drift.json"
    assert main([str(tiny_bundle), "--films", "6", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["films"] == 6 and res["machine"]["cpu"] and "--films 6" in res["command"]
    formats = res["formats"]
    assert {"tflite_int8", "tflite_fp32"} <= set(formats)
    assert not {k for k in formats if not k.startswith("tflite")}  # only LiteRT has reference kernels
    fp32 = formats["tflite_fp32"]["pooled"]
    assert fp32["prob_max"] < 1e-4 and fp32["top1_changed"] == 0  # float kernels agree to round-off
    for row in formats.values():
        pooled = row["pooled"]
        assert 0 <= pooled["prob_mean"] <= pooled["prob_p95"] <= pooled["prob_max"] <= 1
        assert pooled["raw_max_steps"] == pytest.approx(pooled["raw_max"] * 256)
        assert sum(s["films"] for s in row["by_source"].values()) == 6
    assert "probabilities move by up to" in capsys.readouterr().out


def test_drift_needs_the_training_run(tmp_path, capsys):
    from benchmarks.drift import main
    from tests.fake_bundle import make_bundle

    assert main([str(make_bundle(tmp_path / "b"))]) == 2
    assert "split.csv is not found" in capsys.readouterr().err
