"""benchmarks.adabn on a tiny untrained MobileNetV2 (alpha 0.35, 32 px) and a few phantom films: AdaBN moves
the BatchNorm statistics (and only them), and the command writes its report with intervals and a verdict."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tf_keras")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.preprocess import PreprocessConfig
    from train import data as D
    from train import phantom
    from train.models import build_model

    root = tmp_path_factory.mktemp("adabn")
    phantom.generate_dataset(root / "films", per_class=12, seed=2, min_size=64, max_size=80)
    samples = D.scan(root / "films" / "manifest.csv", allow_missing=True)
    run = root / "run"
    run.mkdir()
    D.save_split({"train": samples[0::3], "val": samples[1::3], "test": samples[2::3]}, run / "split.csv")
    labels = ("normal", "pneumonia", "tuberculosis")
    build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35).save(run / "model_float.keras")
    ModelMetadata(labels=labels, preprocess=PreprocessConfig(32), model_name="mobilenet_v2", model_version="t",
                  synthetic=True).save(run / "metadata.json")
    return run


def test_adabn_moves_only_the_batchnorm_statistics(tiny_run):
    from benchmarks import adabn as A
    from train import keras_io as K

    model = K.load_model(tiny_run / "model_float.keras")
    layers = A.bn_layers(model)
    momenta = [layer.momentum for layer in layers]
    before, weights = A.bn_stats(model), [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(0)
    films = rng.integers(40, 200, (20, 32, 32)).astype(np.uint8)
    assert A.adapt(model, films, batch=8) == len(layers) > 10
    after = A.bn_stats(model)
    assert all(not np.allclose(a[0], b[0]) for a, b in zip(after, before))  # every layer's moving mean moved
    assert [layer.momentum for layer in layers] == momenta  # the training settings are restored
    moved = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    for v, w in zip(model.weights, weights):
        if id(v) not in moved:
            np.testing.assert_array_equal(v.numpy(), w)  # convolution and dense weights untouched
    other = K.load_model(tiny_run / "model_float.keras")
    A.adapt(other, (films * 0.5).astype(np.uint8), batch=8)  # darker films, other statistics
    assert not np.allclose(A.bn_stats(other)[0][0], after[0][0]) and not np.allclose(A.bn_stats(other)[0][0], before[0][0])
    # the statistics are the films' own: adapting twice on the same films gives the same values
    A.adapt(other, films, batch=8)
    np.testing.assert_allclose(A.bn_stats(other)[0][0], after[0][0], rtol=1e-4, atol=1e-5)


def test_the_command_writes_its_report(tiny_run, tmp_path, capsys):
    from benchmarks.adabn import main

    out = tmp_path / "adabn"
    assert main(["--run", str(tiny_run), "--out", str(out), "--films", "16", "--bootstrap", "40"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["adaptation_films"]["used"] == 16 and res["test_films"] > 10 and res["bn_layers"] > 10
    assert set(res["figures"]) == {"home", "site", "site_adabn", "home_adabn", "home_with_site_stats"}
    assert set(res["bootstrap"]["delta"]) == {"site_adabn - site", "home_adabn - home", "home_with_site_stats - home"}
    lo, hi = res["bootstrap"]["ci"]["site"]["accuracy"]
    assert 0 <= lo <= res["figures"]["site"]["accuracy"] <= hi <= 1
    assert res["machine"]["cpu"] and "cpu_family" in res["machine"] and res["command"].startswith("python -m benchmarks.adabn")
    assert isinstance(res["verdict"]["keep"], bool)
    report = (out / "report.md").read_text()
    assert "Verdict: **" in report and "Paired differences" in report and "site-B test films" in report
    assert main(["--run", str(tmp_path), "--out", str(out)]) == 2 and "not a training run" in capsys.readouterr().err
