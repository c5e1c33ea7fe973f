"""Is this a frontal chest radiograph the model was made for? Checked before any diagnosis is shown.

Two layers: cheap image checks (blank, saturated, too few grey levels, odd shape) on the decoded image,
then the distance of the model's own feature embedding from what it saw in training: inside the principal
subspace of the training embeddings (standardised) and outside it (residual). The statistics (mean, top
principal directions and variances, thresholds at a high quantile of the training scores) are computed at
conversion time for each parent model and stored in the metadata.

This catches inputs far from the training data (photographs, other body parts, blank films). It cannot
catch a chest film that merely comes from another hospital or scanner: that is what the monitoring of
confirmed outcomes on the device is for.
"""
from __future__ import annotations

import numpy as np

MIN_STD = 6.0  # grey levels: below this the image is essentially uniform
MAX_CLIPPED = 0.5  # fraction of pixels at the extremes
MAX_ASPECT = 2.0
MIN_LEVELS = 32  # distinct grey levels: a radiograph (even an 8-bit JPEG) has far more; a drawing has few
# pixels on the short side: a chest film exported for reading has hundreds to thousands; below this it is a
# thumbnail or an icon, and the model would read an upscaled blur with confidence (a 10x10 TB film came out
# "normal 0.93" before this check). A model whose own input is smaller (a test model) lowers it to its size.
MIN_FILM_SIDE = 128


def image_check(image: np.ndarray, min_side: int = MIN_FILM_SIDE) -> dict | None:
    """What is wrong with the decoded grayscale image as a radiograph, as a reason code and its numbers
    ({"code": "oos_blank"}, {"code": "oos_few_levels", "levels": 12}, ...), or None when it may be one.
    ``min_side``: the fewest pixels on the short side (``MIN_FILM_SIDE``; ``min_side_for`` a model)."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        return {"code": "oos_low_resolution", "width": int(w), "height": int(h), "min_side": int(min_side)}
    if max(h, w) / max(1, min(h, w)) > MAX_ASPECT:
        return {"code": "oos_shape", "width": int(w), "height": int(h)}
    small = image[:: max(1, h // 256), :: max(1, w // 256)]
    if float(small.std()) < MIN_STD:
        return {"code": "oos_blank"}
    levels = int(np.count_nonzero(np.bincount(small.ravel() if small.dtype == np.uint8 else
                                              small.ravel().astype(np.uint8), minlength=256)))
    if levels < MIN_LEVELS:
        return {"code": "oos_few_levels", "levels": levels}
    clipped = float(((small <= 2) | (small >= 253)).mean())
    if clipped > MAX_CLIPPED:
        return {"code": "oos_saturated", "fraction": round(clipped, 4)}
    return None


def min_side_for(image_size: int) -> int:
    """The short side below which a film is refused for a model of this input size: ``MIN_FILM_SIDE``, or the
    model's own input size when that is smaller."""
    return int(min(MIN_FILM_SIDE, image_size))


def image_problem(image: np.ndarray, min_side: int = MIN_FILM_SIDE) -> str | None:
    """A reason string (English) when the decoded grayscale image cannot be a usable radiograph, else None."""
    from edge_runtime.operating_point import reason_text

    found = image_check(image, min_side)
    return None if found is None else reason_text(found["code"], found)


def scores(embedding: np.ndarray, stats: dict) -> tuple[float, float]:
    """(within, residual): standardised RMS distance inside the principal subspace of the training
    embeddings, and the length of the part of the embedding outside it, each divided by its threshold
    (so > 1 means unlike the training images)."""
    mean = np.asarray(stats["mean"], np.float32)
    comps = np.asarray(stats["components"], np.float32)
    var = np.asarray(stats["var"], np.float32)
    x = np.asarray(embedding, np.float32) - mean
    z = comps @ x
    within = float(np.sqrt((z * z / var).mean()))
    residual = float(np.linalg.norm(x - comps.T @ z))
    return within / stats["within_threshold"], residual / stats["residual_threshold"]


def distance(embedding: np.ndarray, stats: dict) -> float:
    """One number: the larger of the two scores (> 1: out of scope)."""
    return max(scores(embedding, stats))


def fit(embeddings: np.ndarray, k: int = 16, quantile: float = 0.995, margin: float = 1.1) -> dict:
    """Statistics for ``distance`` from the training embeddings (N, D): mean, the top-k principal directions,
    their variances, and thresholds at ``margin`` x the ``quantile`` of the training scores.

    On the cxr-dev MobileNetV2-224 model (k=16) this flagged 0.9% of unseen test films and caught noise,
    ring patterns and a bright disc, but not a horizontal gradient, an inverted, rotated or upside-down film.
    """
    e = np.asarray(embeddings, np.float64)
    mean = e.mean(0)
    x = e - mean
    _, sv, vt = np.linalg.svd(x, full_matrices=False)
    k = int(min(k, len(vt)))
    comps, var = vt[:k], np.maximum((sv[:k] ** 2) / max(1, len(e) - 1), 1e-12)
    stats = {"mean": np.round(mean, 5).tolist(), "components": np.round(comps, 5).tolist(),
             "var": np.round(var, 8).tolist(), "within_threshold": 1.0, "residual_threshold": 1.0}
    sc = np.array([scores(v, stats) for v in e])
    stats["within_threshold"] = float(np.quantile(sc[:, 0], quantile) * margin)
    stats["residual_threshold"] = float(np.quantile(sc[:, 1], quantile) * margin)
    stats.update({"k": k, "quantile": quantile, "margin": margin, "n": int(len(e))})
    return stats
