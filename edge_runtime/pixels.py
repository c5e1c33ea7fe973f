"""Pixel-level pieces shared by the decoders (``edge_runtime.preprocess`` for PNG/JPEG/..., ``edge_runtime.dicom``):
the project's image error, the size limits, OpenCV with its pixel limit, and the grey uint8 conversion."""
from __future__ import annotations

import os

import numpy as np

MAX_PIXELS = 80_000_000  # refuse larger images (decompression bombs); a large CR plate is ~20 MP
MIN_SIDE = 8  # smaller images are refused


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message names the file and the reason."""


def opencv():
    """OpenCV, imported on first use (so ``import edge_runtime`` stays fast) with the pixel limit set."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
    import cv2

    return cv2


def _stretch(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    if lo is None or hi is None:
        lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


def _by_bits(arr: np.ndarray) -> np.ndarray:
    """An unsigned image wider than 8 bits (a 16-bit PNG or TIFF) scaled by the bits it uses (its highest
    value's bit length, at least 8), as a viewer told its bits stored shows it: 8-bit content stored as 16 bits
    (v * 257) reads exactly as the 8-bit file, 12-bit content (0-4095) spans 0-255. A percentile stretch (used
    before 2026-12-04) changed the contrast of the same film saved at another depth, and 3 of 20 decisions."""
    bits = max(8, int(arr.max()).bit_length())
    return np.clip(np.round(arr.astype(np.float64) * (255.0 / (2 ** bits - 1))), 0, 255).astype(np.uint8)


def _to_gray(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3:
        cv2 = opencv()
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.shape[2] == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
        elif arr.shape[2] == 1:
            arr = arr[:, :, 0]
        else:
            raise ImageError(f"{name}: unsupported channel count {arr.shape[2]}")
    if arr.ndim != 2:
        raise ImageError(f"{name}: expected a 2-D image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "u":
        return _by_bits(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageError(f"{name}: image holds non-finite values (NaN or infinity)")
    return _stretch(arr)
