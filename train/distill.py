"""Distillation: soft targets from teacher runs trained on the same patient-level split.

A teacher is a run folder of this project (``model_float.keras``, ``metadata.json``, ``split.csv``). Several
teachers are averaged (an ensemble of seeds is the usual teacher on ~1,000 films). Each teacher reads the
training films with its own preprocessing (its size may differ from the student's), its probabilities are
softened by a temperature, and the student learns from

    target = (1 - weight) * one_hot(label) + weight * softened teacher probabilities

with the usual cross-entropy (offline distillation: the teacher sees each film once, un-augmented).

A teacher must have been trained on exactly the student's split: a teacher that saw the student's validation
or test films would leak them into the student's targets, and every figure after would be flattering. So the
split files are compared film by film and a difference is an error, never a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train import data as D

log = logging.getLogger(__name__)


@dataclass
class TeacherReport:
    """What the teachers scored on the validation films before the student starts (logged and stored)."""

    teachers: list[str]
    val_macro_auc: list[float]  # each teacher alone
    ensemble_val_macro_auc: float
    train_agreement: float  # share of training films whose ensemble top-1 is the label

    def as_dict(self) -> dict:
        return {"teachers": self.teachers, "val_macro_auc": [round(a, 4) for a in self.val_macro_auc],
                "ensemble_val_macro_auc": round(self.ensemble_val_macro_auc, 4),
                "train_agreement": round(self.train_agreement, 4)}


def _split_key(parts: dict[str, list[D.Sample]]) -> dict[str, set[str]]:
    return {side: {str(Path(s.path).resolve()) for s in samples} for side, samples in parts.items()}


def check_teacher(run: str | Path, parts: dict[str, list[D.Sample]], classes: tuple[str, ...]):
    """The teacher's metadata, after checking it is a finished run on this exact split and these classes."""
    from edge_runtime.metadata import ModelMetadata

    run = Path(run)
    missing = [f for f in ("model_float.keras", "metadata.json", "split.csv") if not (run / f).is_file()]
    if missing:
        raise ValueError(f"teacher {run}: not a finished training run (missing {', '.join(missing)})")
    meta = ModelMetadata.load(run / "metadata.json")
    if tuple(meta.labels) != tuple(classes):
        raise ValueError(f"teacher {run}: classes {list(meta.labels)} differ from the student's {list(classes)}")
    theirs, ours = _split_key(D.load_split(run / "split.csv")), _split_key(parts)
    for side in ("train", "val", "test"):
        if theirs.get(side, set()) != ours.get(side, set()):
            extra = len(theirs.get(side, set()) - ours.get(side, set()))
            lacking = len(ours.get(side, set()) - theirs.get(side, set()))
            raise ValueError(
                f"teacher {run} was trained on a different split ({side}: {extra} film(s) not in the student's, "
                f"{lacking} missing): it may have learnt the student's validation or test films. Train the student "
                f"with --split {run / 'split.csv'}")
    return meta


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at a temperature: softmax(log p / T). T > 1 spreads them, T = 1 leaves them."""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    logits = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def soft_targets(labels: np.ndarray, teacher_probs: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    """(1 - weight) * one-hot + weight * softened teacher probabilities; rows sum to 1."""
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"distillation weight must be in (0, 1], got {weight}")
    k = teacher_probs.shape[1]
    one_hot = np.eye(k, dtype=np.float32)[labels]
    return ((1.0 - weight) * one_hot + weight * soften(teacher_probs, temperature)).astype(np.float32)


def teacher_probabilities(teachers: list[str], parts: dict[str, list[D.Sample]], classes: tuple[str, ...],
                          train: D.Arrays, val: D.Arrays, cache_dir: str | Path) -> tuple[np.ndarray, TeacherReport]:
    """The teachers' mean probabilities on the student's training films (row i = ``train.samples[i]``)."""
    from train import train as T
    from train.keras_io import load_model, predict

    if not teachers:
        raise ValueError("distillation needs at least one teacher run")
    metas = [check_teacher(t, parts, classes) for t in teachers]  # every teacher checked before any work
    train_paths = [s.path for s in train.samples]
    val_paths = [s.path for s in val.samples]
    sum_train, sum_val, aucs = 0.0, 0.0, []
    for run, meta in zip(teachers, metas):
        model = load_model(Path(run) / "model_float.keras")
        probs = {}
        for side, paths in (("train", train_paths), ("val", val_paths)):
            arr = D.load_arrays(parts[side], classes, meta.preprocess, cache_dir)
            by_path = dict(zip((s.path for s in arr.samples), predict(model, arr.images)))
            lost = [p for p in paths if p not in by_path]
            if lost:
                raise ValueError(f"teacher {run} could not read {len(lost)} {side} film(s) the student reads, "
                                 f"e.g. {lost[0]}")
            probs[side] = np.stack([by_path[p] for p in paths])
        sum_train = sum_train + probs["train"]
        sum_val = sum_val + probs["val"]
        aucs.append(T._macro_auc(val.labels, probs["val"]))
        log.info("teacher %s (%s, %d px): validation macro-AUC %.4f", run, meta.model_name, meta.image_size, aucs[-1])
    mean_train, mean_val = sum_train / len(teachers), sum_val / len(teachers)
    report = TeacherReport(teachers=[str(t) for t in teachers], val_macro_auc=aucs,
                           ensemble_val_macro_auc=T._macro_auc(val.labels, mean_val),
                           train_agreement=float((mean_train.argmax(1) == train.labels).mean()))
    log.info("teacher ensemble of %d: validation macro-AUC %.4f; agrees with %.1f%% of training labels",
             len(teachers), report.ensemble_val_macro_auc, 100 * report.train_agreement)
    return mean_train.astype(np.float32), report
