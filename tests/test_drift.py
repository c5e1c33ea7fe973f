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
    assert "names no training run" in capsys.readouterr().err


def test_layers_show_where_the_int8_drift_grows(tiny_bundle, tmp_path, capsys):
    from benchmarks.drift import main

    out, png = tmp_path / "drift.json", tmp_path / "layers.png"
    assert main([str(tiny_bundle), "--films", "3", "--layers", "--plot", str(png), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    layers = res["layers"]
    assert {"tflite_int8"} <= set(layers) and "tflite_fp32" not in layers  # integer artifacts only
    rows = layers["tflite_int8"]
    assert [r["op"] for r in rows] == list(range(len(rows))) and len(rows) > 10
    kinds = {r["kind"] for r in rows}
    assert "CONV_2D" in kinds and not kinds & {"QUANTIZE", "DEQUANTIZE"}
    for r in rows:
        assert 0 <= r["share_differing"] <= 1 and 0 <= r["mean_steps"] <= r["max_steps"]
        assert (r["share_differing"] == 0) == (r["max_steps"] == 0)
    # the op-by-op outputs end where the artifact's output does: the probabilities' own largest difference
    last = rows[-1]
    assert last["kind"] == "SOFTMAX"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "op by op on 3 films" in printed and ("differences start at op" in printed or "agree bit for bit" in printed)


def test_plot_needs_layers(tiny_bundle, tmp_path, capsys):
    from benchmarks.drift import main

    with pytest.raises(SystemExit):
        main([str(tiny_bundle), "--plot", str(tmp_path / "p.png")])
    assert "give --layers too" in capsys.readouterr().err
