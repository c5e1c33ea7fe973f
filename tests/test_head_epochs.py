"""--head-epochs: the classifier trained alone on a frozen pretrained backbone, then every layer (LP-FT)."""
import csv

import numpy as np
import pytest

pytest.importorskip("tf_keras")

from train import models  # noqa: E402
from train import train as T  # noqa: E402
from train.__main__ import main  # noqa: E402

pytestmark = pytest.mark.slow

ARGS = ["--model", "mobilenet_v2", "--alpha", "0.35", "--image-size", "32", "--qat-epochs", "0", "--batch-size",
        "32", "--lr", "3e-3", "--head-lr", "3e-3", "--patience", "30", "--no-augment", "--site-augment", "0",
        "--seed", "0"]


def _tiny():
    return models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)


def test_freeze_backbone_leaves_only_the_classifier_trainable_and_thaws_it_again():
    model = _tiny()
    every = len(model.trainable_weights)
    assert T.freeze_backbone(model, True) > 50
    assert [w.name.split("/")[0] for w in model.trainable_weights] == [models.PROBS, models.PROBS]
    assert T.freeze_backbone(model, True) == 0  # already frozen: nothing changes
    T.freeze_backbone(model, False)
    assert len(model.trainable_weights) == every


def _phases(run):
    with (run / "history.csv").open() as fh:
        return [r["phase"] for r in csv.DictReader(fh)]


def test_the_head_epochs_keep_the_pretrained_backbone_and_the_float_epochs_move_it(synthetic_data, tmp_path):
    """The head's best checkpoint holds the pretrained backbone to the bit (BatchNorm statistics too: frozen, it runs
    in inference mode) and a trained classifier; the float phase then changes the backbone; a resume after the head
    phase (a longer --epochs) does not train the head again."""
    pretrained = _tiny()
    rng = np.random.default_rng(0)
    pretrained.set_weights([w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in pretrained.get_weights()])
    path = tmp_path / "pretrained.weights.h5"
    pretrained.save_weights(str(path))
    run = tmp_path / "run"
    assert main(["--data", str(synthetic_data), "--out", str(run), *ARGS, "--weights", str(path),
                 "--head-epochs", "2", "--epochs", "1"]) == 0
    assert _phases(run) == ["head", "head", "float"]

    head = _tiny()
    T.load_checkpoint(head, run / "checkpoints" / f"head_best{T.CKPT}")
    fitted = _tiny()
    T.load_checkpoint(fitted, run / "checkpoints" / f"float_best{T.CKPT}")
    start = {w.name: w.numpy() for w in pretrained.weights}
    for w in head.weights:
        same = np.array_equal(w.numpy(), start[w.name])
        assert same != w.name.startswith(models.PROBS), w.name
    moved = [w.name for w in fitted.weights if not w.name.startswith(models.PROBS)
             and not np.array_equal(w.numpy(), start[w.name])]
    assert len(moved) > 50

    assert main(["--data", str(synthetic_data), "--out", str(run), *ARGS, "--weights", str(path),
                 "--head-epochs", "2", "--epochs", "2", "--resume"]) == 0
    assert _phases(run) == ["head", "head", "float", "float"]


def test_head_epochs_without_pretrained_weights_is_a_clear_error(synthetic_data, tmp_path, capsys):
    assert main(["--data", str(synthetic_data), "--out", str(tmp_path / "r"), *ARGS, "--head-epochs", "2"]) == 2
    assert "--head-epochs" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_the_train_defaults_train_the_default_recipe_end_to_end(synthetic_data, tmp_path):
    """``python -m train --data D`` with only its size and length cut: EfficientNet-Lite0 from its offline ImageNet
    weights, the automatic linear probe (5 head epochs), site augmentation, all recorded as resolved values."""
    import json

    run = tmp_path / "run"
    assert main(["--data", str(synthetic_data), "--out", str(run), "--image-size", "32", "--epochs", "1",
                 "--qat-epochs", "0"]) == 0
    assert _phases(run) == ["head"] * 5 + ["float"]
    cfg = json.loads((run / "train_config.json").read_text())
    assert (cfg["model"], cfg["weights"], cfg["head_epochs"], cfg["site_augment"], cfg["lr"]) == (
        "efficientnet_lite0", "imagenet", 5, 0.5, 3e-4)
