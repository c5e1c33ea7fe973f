"""Class activation map: where in the image the evidence for a class lies, from the last convolutional
feature map and the classifier weights (Zhou et al. 2016). Works for INT8 models because the feature map
is exported as a second output and dequantised by the backend.

It is an aid for the reader, not a localisation: it shows which regions raised the score, at the coarse
resolution of the feature map (7x7 at 224 px), and it lights up on borders and markers as readily as on
lungs when the model has learnt those.
"""
from __future__ import annotations

import numpy as np


def class_activation_map(features: np.ndarray, head: dict, class_index: int, size: int) -> np.ndarray:
    """features (h, w, D), head {"weights": DxK}: float32 (size, size) map in [0, 1]."""
    from edge_runtime.preprocess import opencv

    w = np.asarray(head["weights"], np.float32)[:, class_index]
    cam = np.maximum(features.astype(np.float32) @ w, 0.0)
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    return opencv().resize(cam, (size, size), interpolation=1).clip(0, 1)  # INTER_LINEAR


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
