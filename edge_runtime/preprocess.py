"""The ONE preprocessing path: decode -> grayscale uint8 -> crop -> resize -> equalise -> (mask). Used by
training, calibration, evaluation, the runtime and the benchmark alike. Normalisation lives inside the model graph.

Harmonisation (all stored in the model metadata, so a device prepares pixels exactly as training did):
- ``crop``: the fraction trimmed from each side of the decoded film before resizing. It removes the film
  border, collimation edges and most burnt-in markers, which differ from site to site (a source shortcut).
- ``equalize``: ``"clahe"`` (contrast-limited adaptive histogram equalisation, 8x8 tiles, clip 2.0) or
  ``"hist"`` (global histogram equalisation) on the resized image: it evens out exposure and contrast
  differences between sites; ``"none"`` keeps the pixels.
- ``keep``: only for the shortcut-audit controls: ``"border"`` blanks everything inside a frame of
  ``frame`` (fraction of the side) so that the model sees the border alone; ``"centre"`` blanks the frame.

Decoding rules:
- 8-bit PNG/JPEG/BMP/TIFF: read as is; colour images are converted to grayscale (luma).
- 16-bit (or float) images: stretched linearly from the 0.5th to the 99.5th percentile to 0..255.
- DICOM: modality LUT (rescale slope/intercept), then the VOI LUT or the first window (centre/width),
  else a percentile stretch; MONOCHROME1 is inverted so that bone is always bright.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MAX_PIXELS = 80_000_000  # refuse larger images (decompression bombs); a large CR plate is ~20 MP
INTERPOLATIONS = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0, "lanczos": 4}  # cv2.INTER_* values
EQUALIZE = ("none", "clahe", "hist")
KEEP = ("all", "border", "centre")


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message names the file and the reason."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What travels with a model so every consumer prepares pixels the same way."""

    image_size: int = field(default=224, metadata={"help": "square input size in pixels"})
    interpolation: str = field(default="area", metadata={
        "help": "resize filter", "choices": tuple(INTERPOLATIONS)})
    crop: float = field(default=0.0, metadata={
        "help": "harmonisation: fraction trimmed from each side of the film before resizing (borders, "
                "collimation, burnt-in markers), e.g. 0.1"})
    equalize: str = field(default="none", metadata={
        "help": "harmonisation: contrast equalisation after resizing", "choices": EQUALIZE})
    keep: str = field(default="all", metadata={
        "help": "shortcut-audit control: train on the border frame only (lungs blanked) or on the centre only "
                "(frame blanked); such a model is a measurement, never for deployment", "choices": KEEP})
    frame: float = field(default=24 / 256, metadata={
        "help": "width of the border frame for --keep, as a fraction of the side"})

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, not {self.interpolation!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, not {self.image_size}")
        if not 0.0 <= self.crop < 0.4:
            raise ValueError(f"crop must be in [0, 0.4) (fraction trimmed from each side), not {self.crop}")
        if self.equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {list(EQUALIZE)}, not {self.equalize!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {list(KEEP)}, not {self.keep!r}")
        if not 0.0 < self.frame < 0.5:
            raise ValueError(f"frame must be in (0, 0.5), not {self.frame}")

    @property
    def harmonised(self) -> bool:
        return self.crop > 0 or self.equalize != "none" or self.keep != "all"

    def describe(self) -> str:
        parts = [f"{self.image_size} px ({self.interpolation})"]
        if self.crop:
            parts.append(f"crop {self.crop:.0%} per side")
        if self.equalize != "none":
            parts.append(self.equalize.upper() if self.equalize == "clahe" else "histogram equalisation")
        if self.keep != "all":
            parts.append(f"CONTROL: {self.keep} only (frame {self.frame:.3f})")
        return ", ".join(parts)


def opencv():
    """OpenCV, imported on first use (so ``import edge_runtime`` stays fast) with the pixel limit set."""
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
    import cv2

    return cv2


def _is_dicom(data: bytes, name: str) -> bool:
    return (len(data) > 132 and data[128:132] == b"DICM") or name.lower().endswith((".dcm", ".dicom"))


def _stretch(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    if lo is None or hi is None:
        lo, hi = np.percentile(arr, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((arr - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


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
    return _stretch(arr)


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    import io

    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageError(f"{name}: not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{name}: DICOM image of {cols}x{rows} exceeds the {MAX_PIXELS} pixel limit")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise ImageError(f"{name}: DICOM pixel data cannot be decoded ({exc})") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and arr.ndim == 3:
        arr = arr[0]  # first frame of a multi-frame file
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3:  # colour DICOM (RGB/YBR): convert to grey, no windowing applies
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return _to_gray(np.ascontiguousarray(arr[:, :, ::-1]), name)
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    if "VOILUTSequence" in ds:
        out = apply_voi_lut(arr, ds, index=0).astype(np.float32)
        img = _stretch(out, float(out.min()), float(out.max()))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = max(float(np.atleast_1d(ds.WindowWidth)[0]), 1.0)
        img = _stretch(arr, center - width / 2, center + width / 2)
    else:
        img = _stretch(arr)
    if photometric == "MONOCHROME1":
        img = 255 - img
    return img


def decode_image(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Decode a PNG/JPEG/DICOM file (path or bytes) into a full-resolution grayscale uint8 array.

    Raises ``ImageError`` with the file name and the reason for anything that is not a usable image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
    else:
        name = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if _is_dicom(data, name):
        return _decode_dicom(data, name)
    cv2 = opencv()
    buf = np.frombuffer(data, np.uint8)
    try:
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # raised for images over OPENCV_IO_MAX_IMAGE_PIXELS
        raise ImageError(f"{name}: cannot decode image ({str(exc).strip().splitlines()[-1]})") from exc
    if arr is None:
        raise ImageError(f"{name}: not a decodable image (corrupt, truncated or not an image file)")
    if arr.size == 0 or min(arr.shape[:2]) < 8:
        raise ImageError(f"{name}: image too small ({arr.shape[1]}x{arr.shape[0]})")
    return _to_gray(arr, name)


def resize(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Resize a grayscale uint8 image to ``cfg.image_size`` square (aspect not kept: radiographs are near
    square and padding would add an artificial border)."""
    cv2 = opencv()
    size = cfg.image_size
    if image.shape[:2] == (size, size):
        return image
    # INTER_AREA is the right filter to shrink; for enlarging it falls back to linear.
    return cv2.resize(image, (size, size), interpolation=INTERPOLATIONS[cfg.interpolation])


def crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """Trim ``fraction`` of the height and width from each side."""
    if fraction <= 0:
        return image
    h, w = image.shape[:2]
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    return image[dy:h - dy, dx:w - dx]


def equalize(image: np.ndarray, method: str) -> np.ndarray:
    if method == "none":
        return image
    cv2 = opencv()
    if method == "hist":
        return cv2.equalizeHist(image)
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(image)


def frame_mask(size: int, frame: float) -> np.ndarray:
    """Boolean (size, size): True on the border frame of width ``frame`` x size."""
    f = max(1, int(round(size * frame)))
    m = np.ones((size, size), bool)
    m[f:size - f, f:size - f] = False
    return m


def prepare(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Decoded grayscale uint8 image -> the model-ready uint8 (size, size) array: crop, resize, equalise
    and (controls only) mask."""
    return finish(resize(crop(image, cfg.crop), cfg), cfg)


def finish(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The steps of ``prepare`` after cropping and resizing: equalise and (controls only) mask. Training calls
    it after site-style augmentation, which acts on the film before equalisation as a real site change would."""
    x = equalize(np.ascontiguousarray(x), cfg.equalize)
    if cfg.keep != "all":
        m = frame_mask(cfg.image_size, cfg.frame)
        x = np.where(m if cfg.keep == "border" else ~m, x, 0).astype(np.uint8)
    return x


def load(source: str | os.PathLike | bytes, cfg: PreprocessConfig, name: str | None = None) -> np.ndarray:
    """Decode and prepare: the model-ready uint8 array of shape (size, size)."""
    return prepare(decode_image(source, name), cfg)
