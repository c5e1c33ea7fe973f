"""Is this a frontal chest radiograph the model was made for? Checked before any diagnosis is shown.

Two layers: cheap image checks (blank, saturated, odd shape) on the decoded image, then the distance of
the model's own feature embedding from what it saw in training. The statistics (per-class means and a
pooled per-dimension spread of the embedding on the training images, and a distance threshold at a
high quantile of the training distances) are computed at conversion time and stored in the metadata.

This catches inputs far from the training data (photographs, other body parts, blank films). It cannot
catch a chest film that merely comes from another hospital or scanner: that is what the monitoring of
confirmed outcomes on the device is for.
"""
from __future__ import annotations

import numpy as np

MIN_STD = 6.0  # grey levels: below this the image is essentially uniform
MAX_CLIPPED = 0.5  # fraction of pixels at the extremes
MAX_ASPECT = 2.0


def image_problem(image: np.ndarray) -> str | None:
    """A reason string when the decoded grayscale image cannot be a usable radiograph, else None."""
    h, w = image.shape[:2]
    if max(h, w) / max(1, min(h, w)) > MAX_ASPECT:
        return f"image shape {w}x{h} is not that of a chest radiograph"
    small = image[:: max(1, h // 256), :: max(1, w // 256)]
    if float(small.std()) < MIN_STD:
        return "image is blank or nearly uniform"
    clipped = float(((small <= 2) | (small >= 253)).mean())
    if clipped > MAX_CLIPPED:
        return f"{clipped:.0%} of the image is black or white (saturated or not a radiograph)"
    return None


def embedding_distance(embedding: np.ndarray, stats: dict) -> float:
    """Smallest standardised RMS distance from the class means (0 = typical of a training class)."""
    means = np.asarray(stats["means"], np.float32)
    std = np.asarray(stats["std"], np.float32)
    z = (embedding[None, :] - means) / std[None, :]
    return float(np.sqrt((z * z).mean(axis=1)).min())


def fit(embeddings: np.ndarray, labels: np.ndarray, num_classes: int, quantile: float = 0.995,
        margin: float = 1.25) -> dict:
    """Statistics for ``embedding_distance`` from training embeddings (N, D)."""
    embeddings = np.asarray(embeddings, np.float32)
    means = np.stack([embeddings[labels == k].mean(0) if (labels == k).any() else embeddings.mean(0)
                      for k in range(num_classes)])
    resid = embeddings - means[labels]
    std = np.maximum(resid.std(0), 1e-3 * max(1e-6, float(embeddings.std())))
    stats = {"means": means.round(5).tolist(), "std": std.round(6).tolist()}
    d = np.array([embedding_distance(e, stats) for e in embeddings])
    stats.update({"threshold": float(np.quantile(d, quantile) * margin), "quantile": quantile, "margin": margin,
                  "train_median": float(np.median(d)), "n": int(len(d))})
    return stats
