"""Distillation (``python -m train --teacher RUN``): soft targets, the same-split guard, a student end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from train import distill


def test_soft_targets_mix_label_and_softened_teacher():
    teacher = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], np.float32)
    labels = np.array([1, 2])
    np.testing.assert_allclose(distill.soften(teacher, 1.0), teacher, rtol=1e-5)
    warm = distill.soften(teacher, 2.0)
    np.testing.assert_allclose(warm.sum(1), 1.0, rtol=1e-6)
    assert warm[0, 0] < teacher[0, 0] and warm[0, 2] > teacher[0, 2], "a temperature above 1 must spread the mass"
    assert (warm.argmax(1) == teacher.argmax(1)).all()
    t = distill.soft_targets(labels, teacher, 0.25, 1.0)
    np.testing.assert_allclose(t, 0.75 * np.eye(3)[labels] + 0.25 * teacher, rtol=1e-5)
    np.testing.assert_allclose(distill.soft_targets(labels, teacher, 1.0, 1.0), teacher, rtol=1e-5)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="weight"):
            distill.soft_targets(labels, teacher, bad, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        distill.soften(teacher, 0.0)


@pytest.mark.slow
def test_student_learns_from_a_teacher_on_its_split_and_refuses_another_split(tiny_run, synthetic_data, tmp_path,
                                                                               capsys):
    from tests.conftest import TINY_TRAIN_ARGS
    from train.__main__ import main

    base = [a for a in TINY_TRAIN_ARGS]
    base[base.index("--epochs") + 1] = "2"
    base[base.index("--qat-epochs") + 1] = "0"
    # a teacher trained on another split would leak the student's validation/test films: refused before training
    other = tmp_path / "other"
    seed = base.index("--seed") + 1
    leaky = base.copy()
    leaky[seed] = "7"
    assert main(["--data", str(synthetic_data), "--out", str(other), *leaky, "--teacher", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert "different split" in err and "--split" in err
    assert not (other / "model_float.keras").exists()

    out = tmp_path / "student"
    rc = main(["--data", str(synthetic_data), "--out", str(out), *base, "--split", str(tiny_run / "split.csv"),
               "--teacher", str(tiny_run), "--teacher", str(tiny_run), "--distill-weight", "0.7"])
    assert rc == 0
    report = json.loads((out / "teachers.json").read_text())
    assert report["teachers"] == [str(tiny_run)] * 2
    # two copies of one teacher: the ensemble is that teacher, so their validation AUCs are equal
    assert report["ensemble_val_macro_auc"] == pytest.approx(report["val_macro_auc"][0], abs=1e-4)
    assert report["val_macro_auc"][0] > 0.8, "the tiny teacher separates the phantoms"
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["teachers"] == [str(tiny_run)] * 2 and cfg["distill_weight"] == 0.7
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 3, history  # header + two float epochs trained on the soft targets


def test_teacher_must_be_a_finished_run(tmp_path):
    from train import data as D

    with pytest.raises(ValueError, match="not a finished training run"):
        distill.check_teacher(tmp_path, {"train": [], "val": [], "test": []}, D.DEFAULT_CLASSES)
