"""End-to-end training on the synthetic phantom data with a tiny model (the CI-sized run)."""
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN_ARGS, copy_run

pytest.importorskip("tf_keras")

from edge_runtime.metadata import ModelMetadata  # noqa: E402
from train.__main__ import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_run_folder_has_everything(tiny_run):
    for name in ("model_float.keras", "model_qat.h5", "split.csv", "metadata.json", "metrics.json",
                 "history.csv", "train_config.json", "plots/qat_test_pooled.png"):
        assert (tiny_run / name).exists(), name
    history = (tiny_run / "history.csv").read_text().splitlines()
    assert history[0].startswith("phase,epoch,seconds")
    assert any(line.startswith("qat,") for line in history)


def test_tiny_qat_model_learns_the_synthetic_classes(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    test = metrics["qat"]["test"]
    # 54 test images, 3 classes (chance 0.33); runs here give 0.76-0.81 accuracy and macro-AUC 0.93
    assert test["pooled"]["accuracy"] >= 0.65, test["pooled"]["confusion_matrix"]
    assert test["pooled"]["macro_auc"] >= 0.85
    assert set(test["by_source"]) == {"synthetic_a", "synthetic_b"}
    assert test["pooled"]["n"] == sum(r["n"] for r in test["by_source"].values())


def test_metadata_round_trips_and_says_synthetic(tiny_run):
    meta = ModelMetadata.load(tiny_run / "metadata.json")
    assert meta.labels == ("normal", "pneumonia", "tuberculosis")
    assert meta.image_size == 64 and meta.synthetic and "NOT FOR CLINICAL USE" in meta.warning
    assert meta.quantization == "qat-int8" and len(meta.data_hash) == 16
    assert 0 < meta.thresholds["tuberculosis"] < 1
    assert set(meta.metrics["test"]["by_source"]) == {"synthetic_a", "synthetic_b"}
    assert ModelMetadata.from_dict(json.loads(meta.to_json())) == meta


def test_saved_models_reload_and_agree_with_metrics(tiny_run):
    from edge_runtime.preprocess import PreprocessConfig
    from train import data as D, keras_io

    parts = D.load_split(tiny_run / "split.csv")
    arr = D.load_arrays(parts["test"], D.DEFAULT_CLASSES, PreprocessConfig(64))
    model = keras_io.load_model(tiny_run / "model_qat.h5")
    acc = float((model.predict(arr.images[..., None].astype("float32"), verbose=0).argmax(1) == arr.labels).mean())
    saved = json.loads((tiny_run / "metrics.json").read_text())["qat"]["test"]["pooled"]["accuracy"]
    assert acc == pytest.approx(saved, abs=1e-9)


def test_resume_of_a_finished_run_does_not_retrain(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy_run(tiny_run, copy)
    before = (copy / "history.csv").read_text()
    rc = main(["--data", "unused", "--out", str(copy), *TINY_TRAIN_ARGS, "--resume"])  # its own options
    assert rc == 0
    assert (copy / "history.csv").read_text() == before
    # not silently under other options: an argument error (exit 2, as the others), the run left as it was
    assert main(["--data", "unused", "--out", str(copy), *TINY_TRAIN_ARGS, "--lr", "0.1", "--resume"]) == 2
    assert re.search("error: .*--resume with other options .*lr", capsys.readouterr().err)
    assert (copy / "history.csv").read_text() == before


def test_a_resume_must_keep_the_options_the_run_was_started_with(tmp_path):
    """review27b #4: a resume with another input size, harmonisation or class order trained the saved weights
    under the new settings and recorded them as if they had held throughout; refused, naming each change."""
    from dataclasses import replace

    from edge_runtime.preprocess import PreprocessConfig
    from train import train as T

    cfg = T.TrainConfig(data="d", out=str(tmp_path), epochs=5, model="mobilenet_v2")  # a random start: no probe
    started = tmp_path / T.STARTED
    started.write_text(json.dumps(T._options(cfg)))
    T.check_resumed_options(replace(cfg, epochs=9, resume=True, data="moved/d"), started)  # longer: allowed
    with pytest.raises(T.UsageError) as e:
        T.check_resumed_options(replace(cfg, preprocess=PreprocessConfig(96), classes=("tuberculosis", "normal",
                                                                                      "pneumonia")), started)
    assert "--resume with other options" in str(e.value) and "classes" in str(e.value) and "preprocess" in str(e.value)
    T.check_resumed_options(replace(cfg, lr=0.5), tmp_path / "none.json")  # a run from before the record: as before
    older = {k: v for k, v in T._options(cfg).items() if k not in ("head_epochs", "head_lr")}
    started.write_text(json.dumps(older))  # started before --head-epochs existed: resumes with it off
    T.check_resumed_options(replace(cfg, resume=True), started)
    with pytest.raises(T.UsageError, match="head_epochs"):
        T.check_resumed_options(replace(cfg, head_epochs=3), started)


def test_a_run_goes_on_as_it_started_whatever_the_defaults_are_now(tmp_path, monkeypatch, capsys):
    """The train CLI's defaults changed (2026-12-05): "auto" starts resume as recorded, a recipe file's name or hash
    is not an option, --redo-qat keeps the float phase's options and refuses any other change, naming it."""
    from train import train as T
    from train.__main__ import main

    seen = []

    def fake_run(cfg):  # what run() would go on with, checked as it checks it
        seen.append(T.going_on(cfg))
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "run", fake_run)
    old = T.TrainConfig(data="d", out=str(tmp_path / "r"), model="efficientnet_lite0", weights="imagenet",
                        head_epochs=0, lr=1e-3, site_augment=0.0, extra={"recipe": "a.toml", "recipe_sha256": "aa"})
    assert (old.weights, old.head_epochs) == ("imagenet", 0)
    (tmp_path / "r" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / T.STARTED).write_text(json.dumps(T._options(old)))
    same = ["--data", "d", "--out", str(tmp_path / "r"), "--lr", "1e-3", "--site-augment", "0", "--resume"]
    assert main(same) == 130  # head-epochs "auto" is 5 today: the recorded 0 holds, no refusal
    assert (seen[-1].weights, seen[-1].head_epochs) == ("imagenet", 0)
    T.check_resumed_options(replace(old, extra={"recipe": "b.toml", "recipe_sha256": "bb"}),
                            tmp_path / "r" / "checkpoints" / T.STARTED)  # another file, the same options
    assert main(same[:4] + ["--site-augment", "0", "--resume"]) == 2  # refused, naming the change and the way on
    assert re.search("--resume with other options.*lr: 0.001 when started, 0.0003 now.*--lr 1e-3",
                     capsys.readouterr().err)
    redo = ["--data", "d", "--out", str(tmp_path / "r"), "--site-augment", "0", "--redo-qat", "--qat-lr", "5e-5"]
    assert main(redo) == 130  # the float phase's lr and start are the run's own; the QAT learning rate may change
    assert (seen[-1].lr, seen[-1].head_epochs, seen[-1].qat_lr) == (1e-3, 0, 5e-5)
    assert main(redo[:4] + ["--redo-qat"]) == 2
    err = capsys.readouterr().err
    assert "--redo-qat with other options" in err and "site_augment: 0.0 when started, 0.5 now" in err
    assert "lr:" not in err  # the float phase's own lr was taken, not counted as a change


def test_ctrl_c_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    from train import train as T

    def interrupted(cfg):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "run", interrupted)  # main imports it when called
    assert main(["--data", "x", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err


def test_existing_run_is_not_overwritten(tiny_run, capsys):
    before = (tiny_run / "metadata.json").read_bytes()
    assert main(["--data", "x", "--out", str(tiny_run)]) == 2  # an argument error, as the others
    assert "already holds a run; choose another --out or pass --resume" in capsys.readouterr().err
    assert (tiny_run / "metadata.json").read_bytes() == before


def test_bad_data_is_a_clear_error_before_training(tmp_path, make_png, capsys):
    make_png(tmp_path / "d" / "normal" / "a.png")
    make_png(tmp_path / "d" / "cancer" / "b.png")
    rc = main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "labels ['cancer'] are not among the configured classes" in capsys.readouterr().err


def test_unreadable_file_is_skipped_not_fatal(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "normal" / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n broken")
    with (data / "manifest.csv").open("a") as fh:
        fh.write("normal/zz_corrupt.png,normal,synthetic_a,zz_patient\n")
    # the soft-target path rides along: label smoothing and mixup train end to end and are recorded
    rc = main(["--data", str(data), "--out", str(tmp_path / "r"), "--model", "mobilenet_v2", "--alpha", "0.35",
               "--site-augment", "0", "--image-size", "32",
               "--epochs", "1", "--qat-epochs", "0", "--val-frac", "0.3", "--test-frac", "0.1",
               "--label-smoothing", "0.1", "--mixup", "0.2"])
    assert rc == 0
    cfg = json.loads((tmp_path / "r" / "train_config.json").read_text())
    assert cfg["label_smoothing"] == 0.1 and cfg["mixup"] == 0.2
    listed = (tmp_path / "r" / "unreadable.txt").read_text()
    assert "zz_corrupt.png" in listed and len(listed.splitlines()) == 1
    assert np.isfinite(json.loads((tmp_path / "r" / "metrics.json").read_text())["float"]["val"]["pooled"]["accuracy"])


def test_epoch_log_line_gives_the_pace_and_time_left_after_a_resume(tmp_path, caplog):
    """Seconds, not a run: a 8x8 model fits epochs 2-3 of 3 (resumed after epoch 1) with the real monitor."""
    import logging

    import tf_keras

    from train import data as D
    from train.train import _callback_class

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    monitor = _callback_class()("float", D.Arrays(images, labels, [], []), tmp_path, tmp_path / "history.csv",
                                patience=5, state={})
    with caplog.at_level(logging.INFO, logger="train.train"):
        model.fit(images[..., None].astype(np.float32), labels, epochs=3, initial_epoch=1, verbose=0,
                  callbacks=[monitor])
    lines = [r.getMessage() for r in caplog.records if "] epoch" in r.getMessage()]
    assert len(lines) == 2 and "] epoch 2:" in lines[0] and "] epoch 3:" in lines[1]
    assert lines[0].split("| epoch ")[1].startswith("2/3, ") and lines[0].endswith(" left")
    assert lines[1].split("| epoch ")[1].startswith("3/3, ") and lines[1].endswith(" each")


@pytest.mark.parametrize("kind", ["npz", "legacy h5"])
def test_a_resumed_phase_goes_on_from_its_last_weights(tmp_path, kind):
    """A run stopped mid-phase resumes from the weights of its last epoch, not from a fresh initialisation
    (seen on cxr-dev: a float phase resumed at epoch 6 restarted at chance and early-stopped on epoch 4's best).
    With a zero learning rate the resumed epoch cannot change the weights, so they must be the saved ones."""
    import tf_keras

    from train import data as D
    from train.train import TrainConfig, _fit, save_checkpoint

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3

    def model(seed):
        tf_keras.utils.set_random_seed(seed)
        m = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
        m.compile(optimizer=tf_keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    saved = model(1)
    if kind == "npz":
        save_checkpoint(saved, tmp_path / "float_last.weights.npz")
    else:  # a run checkpointed before the .npz checkpoints (tf_keras save_weights) resumes too
        saved.save_weights(tmp_path / "float_last.weights.h5")
    fresh = model(2)
    assert not np.allclose(fresh.get_weights()[0], saved.get_weights()[0])
    ds = __import__("tensorflow").data.Dataset.from_tensor_slices(
        (images[..., None].astype(np.float32), labels)).batch(4)
    cfg = TrainConfig(data="d", patience=5, verbose=0)
    out = _fit(fresh, "float", ds, D.Arrays(images, labels, [], []), 2, 0.0, cfg, None, tmp_path,
               tmp_path / "history.csv", {"phase": "float", "epoch": 0, "best": -1.0, "wait": 0})
    np.testing.assert_allclose(out.get_weights()[0], saved.get_weights()[0])


def test_a_checkpoint_of_another_model_is_refused_and_a_write_is_atomic(tmp_path):
    import tf_keras

    from train.train import load_checkpoint, save_checkpoint

    def dense(units):
        return tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(units)])

    a, b = dense(3), dense(5)
    save_checkpoint(a, tmp_path / "x.weights.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["x.weights.npz"]  # no temporary file left behind
    with pytest.raises(ValueError, match="checkpoint of another model"):
        load_checkpoint(b, tmp_path / "x.weights.npz")
    c = dense(3)
    load_checkpoint(c, tmp_path / "x.weights.npz")
    for x, y in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_weight_averaging_keeps_the_averaged_weights_and_resumes_from_the_raw_ones(tmp_path):
    """``--ema``: each step moves the average by (1 - d), d warming up as (1 + n) / (10 + n); the phase keeps the
    averaged weights (scored on validation), while the checkpoint to resume from holds the raw ones."""
    import tensorflow as tf
    import tf_keras

    from train import data as D
    from train.train import TrainConfig, _ema_class, _fit, load_checkpoint

    def model():
        tf_keras.utils.set_random_seed(3)
        m = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
        m.compile(optimizer=tf_keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m

    # the arithmetic, step by step
    m = model()
    avg = _ema_class()(0.9)
    avg.set_model(m)
    w0 = [w.numpy() for w in m.weights]
    avg.on_train_begin()
    expected = w0
    for n in range(3):
        new = [w + n + 1.0 for w in w0]
        m.set_weights(new)
        avg.on_train_batch_end(n)
        d = min(0.9, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * x for e, x in zip(expected, new)]
    for s, e in zip(avg.shadow, expected):
        np.testing.assert_allclose(s.numpy(), e, rtol=1e-6)
    raw = [w.numpy() for w in m.weights]
    avg.swap()
    np.testing.assert_allclose(m.get_weights()[0], expected[0], rtol=1e-6)
    avg.swap()
    np.testing.assert_allclose(m.get_weights()[0], raw[0])

    # through a training phase: one epoch of three steps, so its best weights are that epoch's average
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3
    ds = tf.data.Dataset.from_tensor_slices((images[..., None].astype(np.float32) / 255, labels)).batch(4)
    cfg = TrainConfig(data="d", patience=5, verbose=0)
    out = _fit(model(), "float", ds, D.Arrays(images, labels, [], []), 1, 0.5, cfg, None, tmp_path,
               tmp_path / "history.csv", {}, ema=0.9)
    kept = out.get_weights()[0]
    last, averaged = model(), model()
    load_checkpoint(last, tmp_path / "float_last.weights.npz")
    load_checkpoint(averaged, tmp_path / "float_ema_last.weights.npz")
    np.testing.assert_allclose(kept, averaged.get_weights()[0])
    assert not np.allclose(kept, last.get_weights()[0]), "the raw weights were kept, not their average"
    assert not np.allclose(kept, model().get_weights()[0]), "the weights did not move"


def test_min_epochs_keeps_no_early_spike_and_counts_patience_from_the_floor(tmp_path, monkeypatch):
    """A noisy validation curve that spikes at epoch 3 stops a run early at epoch 3 + patience and keeps the spike
    (the distilled students of docs/distill-t1, folds 2 and 4); with --min-epochs 5 neither happens: the best comes
    from epoch 5 on and patience counts from there."""
    import tf_keras

    import train.train as T
    from train import data as D

    curve = [0.60, 0.70, 0.95, 0.80, 0.82, 0.85, 0.84, 0.90, 0.86, 0.85, 0.84, 0.83]
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")

    def run(min_epochs, out):
        out.mkdir()
        scores = iter(curve)
        monkeypatch.setattr(T, "_macro_auc", lambda y, p: next(scores))
        m = T._callback_class()("float", D.Arrays(images, labels, [], []), out, out / "history.csv",
                                patience=3, state={}, min_epochs=min_epochs)
        m.set_model(model)
        m.params = {"epochs": len(curve)}
        stopped = None
        for epoch in range(len(curve)):
            m.on_epoch_begin(epoch)
            m.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5})
            if model.stop_training:
                stopped, model.stop_training = epoch + 1, False
                break
        return m.best, stopped

    assert run(0, tmp_path / "a") == (0.95, 6)  # the epoch-3 spike kept, stopped 3 epochs later
    assert run(5, tmp_path / "b") == (0.90, 11)  # best from epoch 5 on (0.90 at epoch 8), stopped 3 after it
