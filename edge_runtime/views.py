"""Test-time views: the model sees a film a few times, slightly zoomed or shifted, and its answers are averaged.

The views are small versions of what training's augmentation already shows the model (zoom +-10%, shift
+-5%), so each is a film the model knows how to read. Their probabilities are averaged as log-probabilities (a
geometric mean, renormalised): the result is again a probability vector, and temperature scaling and thresholds
fitted on it (``convert --views``) apply to it as to one view.

Why: an INT8 model's answer moves with the CPU's rounding (``benchmarks.drift``), and those movements differ from
view to view, so the average moves less; measured on the default's fold 0 trained again (Zen 3, 60 validation
films, optimised against reference LiteRT kernels): up to 0.092 with one view, 0.033 with ``zoom3``, 0.025 with
``all7``. The cost is one inference per view. ``none`` (one view, the film as it is) is what every bundle made
before views existed uses.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

# name -> (scale, shift x, shift y) as fractions of the side; "id" is the film as it is
VIEWS: dict[str, tuple[float, float, float]] = {
    "id": (1.0, 0.0, 0.0),
    "zoom+5": (1.05, 0.0, 0.0), "zoom-5": (0.95, 0.0, 0.0),
    "x+3": (1.0, 0.03, 0.0), "x-3": (1.0, -0.03, 0.0),
    "y+3": (1.0, 0.0, 0.03), "y-3": (1.0, 0.0, -0.03),
}
SETS: dict[str, tuple[str, ...]] = {
    "none": ("id",),
    "zoom3": ("id", "zoom+5", "zoom-5"),
    "shift5": ("id", "x+3", "x-3", "y+3", "y-3"),
    "all7": tuple(VIEWS),
}
NONE = SETS["none"]


def parse(spec: str | tuple | list | None) -> tuple[str, ...]:
    """A set name (``SETS``) or a comma-separated list of view names -> the views, the film as it is first.
    Raises ValueError naming what is known for anything else."""
    if spec is None or spec == "":
        return NONE
    if isinstance(spec, str):
        names = SETS.get(spec) or tuple(s.strip() for s in spec.split(",") if s.strip())
    else:
        names = tuple(spec)
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise ValueError(f"unknown view(s) {', '.join(unknown) or '(none given)'}: a set "
                         f"({', '.join(SETS)}) or views from {', '.join(VIEWS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"views repeated in {', '.join(names)}")
    return ("id",) + tuple(n for n in names if n != "id")


def describe(views: tuple[str, ...]) -> str:
    for name, members in SETS.items():
        if tuple(views) == members:
            return name if name == "none" else f"{name} ({', '.join(members)})"
    return ", ".join(views)


def view(image: np.ndarray, name: str) -> np.ndarray:
    """One view of a model-ready (size, size) uint8 image: scaled about its centre and shifted, edges repeated
    (as training's augmentation fills them)."""
    import cv2

    scale, dx, dy = VIEWS[name]
    if (scale, dx, dy) == (1.0, 0.0, 0.0):
        return image
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, scale)
    m[0, 2] += dx * w
    m[1, 2] += dy * h
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def combine(probs: list[np.ndarray]) -> np.ndarray:
    """The geometric mean of the views' probability vectors (..., K), renormalised; one view is returned as is."""
    if len(probs) == 1:
        return probs[0]
    z = np.mean([np.log(np.clip(np.asarray(p, np.float64), 1e-7, 1.0)) for p in probs], axis=0)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_batch(run_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                  views: tuple[str, ...]) -> np.ndarray:
    """``run_batch`` (model-ready (N, size, size) uint8 -> (N, K) probabilities) over every view, combined."""
    images = np.asarray(images)
    return with_views(np.asarray(run_batch(images)), run_batch, images, views)


def with_views(as_is: np.ndarray, run_batch: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
               views: tuple[str, ...]) -> np.ndarray:
    """``as_is`` (the probabilities of the films as they are, already computed) combined with those of the
    other views: the film itself is not run twice."""
    return combine([as_is, *(np.asarray(run_batch(np.stack([view(im, v) for im in images]))) for v in views[1:])])
