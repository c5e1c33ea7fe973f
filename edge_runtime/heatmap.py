"""Class activation map: where in the image the evidence for a class lies, from the last convolutional
feature map and the classifier weights (Zhou et al. 2016). Works for INT8 models because the feature map
is exported as a second output and dequantised by the backend.

It is an aid for the reader, not a localisation: it shows which regions raised the score, at the coarse
resolution of the feature map (7x7 at 224 px), and it lights up on borders and markers as readily as on
lungs when the model has learnt those.
"""
from __future__ import annotations

import numpy as np


MIN_CELLS = 5  # a feature map coarser than 5x5 (e.g. 2x2 on a 64 px model) cannot say where: not drawn
# One colour scale per model: full colour at ``head["cam_scale"]`` (fitted on validation films by
# ``fit_scale`` at conversion), else at this fixed value. A cell's value is its contribution to the class
# logit before average pooling (features . class weights), so a value means the same on every film.
FIXED_CAM_SCALE = 10.0
SCALE_QUANTILE = 0.99


def fine_enough(grid) -> bool:
    """Is a (rows, cols) feature map fine enough to draw a heatmap from?"""
    return grid is not None and min(grid) >= MIN_CELLS


def cam_scale(head: dict, class_index: int) -> float:
    """The value drawn at full colour for this model and class: from validation films, else the fixed one."""
    scale = head.get("cam_scale")
    if isinstance(scale, (list, tuple)):
        scale = scale[class_index] if class_index < len(scale) else None
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return FIXED_CAM_SCALE
    return scale if np.isfinite(scale) and scale > 0 else FIXED_CAM_SCALE


def raw_cam(features: np.ndarray, head: dict, class_index: int) -> np.ndarray:
    """(h, w) non-negative contribution of each feature-map cell to the class logit."""
    w = np.asarray(head["weights"], np.float32)[:, class_index]
    return np.maximum(features.astype(np.float32) @ w, 0.0)


def class_activation_map(features: np.ndarray, head: dict, class_index: int, size: int) -> np.ndarray:
    """features (h, w, D), head {"weights": DxK, "cam_scale": ...}: float32 (size, size) map in [0, 1] on the
    model's fixed scale (not the film's own maximum, so a film with weak evidence stays cool)."""
    from edge_runtime.preprocess import opencv

    cam = raw_cam(features, head, class_index) / cam_scale(head, class_index)
    return opencv().resize(cam.clip(0, 1), (size, size), interpolation=1).clip(0, 1)  # INTER_LINEAR


def fit_scale(feature_maps, head: dict, quantile: float = SCALE_QUANTILE) -> list[float]:
    """Per class: the ``quantile`` of the cell values of validation films (N, h, w, D), the value to draw at
    full colour. Stored as ``head["cam_scale"]``."""
    f = np.asarray(feature_maps, np.float32)
    k = np.asarray(head["weights"]).shape[1]
    out = []
    for c in range(k):
        v = raw_cam(f, head, c).ravel()
        q = float(np.quantile(v, quantile)) if v.size else 0.0
        out.append(round(q, 5) if q > 0 else FIXED_CAM_SCALE)
    return out


def uncrop(heatmap: np.ndarray, crop: float) -> np.ndarray:
    """Place a heatmap of the cropped model input back in the frame of the whole film (zeros outside), so
    that it overlays the original image where the model looked."""
    if crop <= 0:
        return heatmap
    h, w = heatmap.shape
    pad_y, pad_x = int(round(h * crop / (1 - 2 * crop))), int(round(w * crop / (1 - 2 * crop)))
    return np.pad(heatmap, ((pad_y, pad_y), (pad_x, pad_x)))


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size) over a grayscale uint8 image: uint8 RGB of the image's size."""
    from edge_runtime.preprocess import opencv

    cv2 = opencv()
    h, w = gray.shape[:2]
    heat = cv2.resize(np.asarray(heatmap, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    base = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    weight = (alpha * heat)[..., None]
    return (base * (1 - weight) + colour.astype(np.float32) * weight).round().clip(0, 255).astype(np.uint8)
