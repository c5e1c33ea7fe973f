"""Is the film the right way up? A film loaded rotated or upside down, or with its grey levels inverted (a
MONOCHROME1 film mishandled by the X-ray unit's export), is an everyday operator error, and the model reads
such a film with confidence (an upside-down film came out tuberculosis 0.96). This check flags it as out of
scope with the reason, before any diagnosis is shown.

Self-supervised, so the labels are free: every training film is shown upright, rotated by 90, 180 and 270
degrees and grey-inverted, and a multinomial logistic regression learns the five classes from a 16x16
thumbnail of the model input (each thumbnail standardised on its own, so exposure does not matter). The
weights (about 1,800 numbers) are fitted at conversion time and stored in the metadata; the check is numpy
only and the same for every artifact, whatever its format. Measured on cxr-dev (MobileNetV2-224 input,
2026-12-01): 100% of transformed test films caught, 0 of 211 untouched test films flagged.
"""
from __future__ import annotations

import numpy as np

THUMB = 16
UPRIGHT = "upright"
# class order: what np.rot90(k=1..3) and inversion do to an upright model input
CLASSES = (UPRIGHT, "rotated a quarter turn (anticlockwise)", "upside down",
           "rotated a quarter turn (clockwise)", "grey levels inverted (negative)")
FLAG_ABOVE = 0.5  # flag when P(not upright) is above this


def transforms(images: np.ndarray) -> list[np.ndarray]:
    """The five views of uint8 images (N, S, S) in ``CLASSES`` order."""
    return [images, *(np.ascontiguousarray(np.rot90(images, k, axes=(1, 2))) for k in (1, 2, 3)), 255 - images]


def features(images: np.ndarray) -> np.ndarray:
    """(N, 256) standardised 16x16 thumbnails of uint8 model inputs (N, S, S) (or one (S, S) image)."""
    from edge_runtime.preprocess import opencv

    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    cv2 = opencv()
    t = np.stack([cv2.resize(im, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for im in images])
    t = t.reshape(len(images), -1).astype(np.float64) / 255.0
    return (t - t.mean(1, keepdims=True)) / (t.std(1, keepdims=True) + 1e-3)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(images: np.ndarray, table: dict) -> np.ndarray:
    """(N, 5) probabilities of ``CLASSES`` for uint8 model inputs."""
    x = (features(images) - np.asarray(table["mean"])) / np.asarray(table["scale"])
    return _softmax(x @ np.asarray(table["weights"]) + np.asarray(table["bias"]))


VIEW_CODES = (UPRIGHT, "rotated_ccw", "upside_down", "rotated_cw", "inverted")  # stable keys of CLASSES


def check(image: np.ndarray, table: dict) -> dict | None:
    """{"code": "oos_orientation", "view": "upside_down", "p": 0.97} when the model input (uint8 S x S) does not
    look upright, else None."""
    if not table:
        return None
    p = probabilities(image, table)[0]
    if 1.0 - p[0] <= table.get("flag_above", FLAG_ABOVE):
        return None
    k = int(np.argmax(p[1:])) + 1
    return {"code": "oos_orientation", "view": VIEW_CODES[k], "p": round(float(p[k]), 4)}


def problem(image: np.ndarray, table: dict) -> str | None:
    """A reason (English) when the model input (uint8 S x S) does not look upright, else None."""
    from edge_runtime.operating_point import reason_text

    found = check(image, table)
    return None if found is None else reason_text(found["code"], found)


def fit(images: np.ndarray, iterations: int = 600, lr: float = 0.05, l2: float = 1e-3) -> dict:
    """Weights from upright uint8 model inputs (N, S, S): full-batch Adam on the five views' cross-entropy."""
    views = transforms(np.asarray(images, np.uint8))
    x = np.concatenate([features(v) for v in views])
    y = np.repeat(np.arange(len(CLASSES)), len(images))
    mean, scale = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / scale
    w, b = np.zeros((x.shape[1], len(CLASSES))), np.zeros(len(CLASSES))
    m, v = np.zeros_like(w), np.zeros_like(w)
    for it in range(1, iterations + 1):
        g = _softmax(x @ w + b)
        g[np.arange(len(y)), y] -= 1.0
        gw, gb = x.T @ g / len(y) + l2 * w, g.mean(0)
        m, v = 0.9 * m + 0.1 * gw, 0.999 * v + 0.001 * gw * gw
        w -= lr * (m / (1 - 0.9 ** it)) / (np.sqrt(v / (1 - 0.999 ** it)) + 1e-8)
        b -= lr * gb
    return {"classes": list(CLASSES), "thumb": THUMB, "flag_above": FLAG_ABOVE, "n": int(len(images)),
            "mean": np.round(mean, 6).tolist(), "scale": np.round(scale, 6).tolist(),
            "weights": np.round(w, 6).tolist(), "bias": np.round(b, 6).tolist()}


def evaluate(images: np.ndarray, table: dict) -> dict:
    """On held-out upright model inputs: the share of each transformed view caught and of untouched films
    falsely flagged (the targets: >= 99% caught, <= 1% flagged)."""
    views = transforms(np.asarray(images, np.uint8))
    flagged = [(1.0 - probabilities(v, table)[:, 0]) > table.get("flag_above", FLAG_ABOVE) for v in views]
    return {"n": int(len(images)), "false_flags": float(flagged[0].mean()) if len(images) else float("nan"),
            "caught": {c: float(f.mean()) for c, f in zip(CLASSES[1:], flagged[1:])},
            "caught_all": float(np.concatenate(flagged[1:]).mean()) if len(images) else float("nan")}
