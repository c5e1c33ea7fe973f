"""DICOM decoding for :func:`edge_runtime.preprocess.decode_image` (imported only when a DICOM file comes).

Every attribute the decoder reads is checked before it is used, and a bad one is that file's ``ImageError``
naming the attribute and its value: image size (Rows, Columns, NumberOfFrames), the pixel format
(SamplesPerPixel, BitsAllocated, BitsStored, PixelRepresentation, PhotometricInterpretation), the modality
LUT (RescaleSlope, RescaleIntercept) and the window (WindowCenter, WindowWidth; the first of several values).
What pydicom or numpy raise beyond these checks is turned into an ``ImageError`` by ``decode_image``.

Rules: modality LUT, then the VOI LUT or the first window, else a percentile stretch; MONOCHROME1 is
inverted so that bone is always bright; colour (RGB/YBR) films become grey; only the first frame is used.
"""
from __future__ import annotations

import io
import logging
import math

import numpy as np

from edge_runtime.pixels import MAX_PIXELS, MIN_SIDE, ImageError, _stretch, _to_gray

log = logging.getLogger(__name__)

GREY = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
BITS_ALLOCATED = (1, 8, 16, 32, 64)
MAX_FRAMES = 10_000


def _values(ds, keyword: str, name: str) -> list | None:
    """The attribute's values as a list (None when absent or empty)."""
    if keyword not in ds:
        return None
    try:
        value = ds[keyword].value
    except Exception as exc:  # pydicom converts values lazily and may fail here
        raise ImageError(f"{name}: DICOM {keyword} cannot be read ({exc})") from exc
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return [value]
    return list(value) or None


def _raw(v) -> str:
    return repr(v.decode("latin-1") if isinstance(v, bytes) else str(v).strip())


def number(ds, keyword: str, name: str, *, multi: bool = False) -> float | None:
    """A numeric attribute (its first value when ``multi``), None when absent; ImageError when it is not a
    finite number or (without ``multi``) holds several values."""
    values = _values(ds, keyword, name)
    if values is None:
        return None
    if len(values) > 1 and not multi:
        raise ImageError(f"{name}: DICOM {keyword} has {len(values)} values; expected one number")
    try:
        value = float(values[0])
    except (TypeError, ValueError):
        raise ImageError(f"{name}: DICOM {keyword} {_raw(values[0])} is not a number") from None
    if not math.isfinite(value):
        raise ImageError(f"{name}: DICOM {keyword} {value} is not a finite number")
    return value


def integer(ds, keyword: str, name: str, default: int | None, lo: int, hi: int) -> int:
    """A whole-number attribute in [lo, hi]; ``default`` when absent (ImageError when required)."""
    values = _values(ds, keyword, name)
    if values is None:
        if default is None:
            raise ImageError(f"{name}: DICOM {keyword} is missing")
        return default
    if len(values) > 1:
        raise ImageError(f"{name}: DICOM {keyword} has {len(values)} values; expected one")
    try:
        value = int(str(values[0]).strip()) if isinstance(values[0], (str, bytes)) else int(values[0])
    except (TypeError, ValueError):
        raise ImageError(f"{name}: DICOM {keyword} {_raw(values[0])} is not a whole number") from None
    if not lo <= value <= hi:
        raise ImageError(f"{name}: DICOM {keyword} {value} is not between {lo} and {hi}")
    return value


def _pixel_format(ds, name: str) -> tuple[str, int]:
    """(photometric interpretation, frames) after checking every attribute pydicom decodes the pixels with."""
    rows = integer(ds, "Rows", name, None, MIN_SIDE, 65535)
    cols = integer(ds, "Columns", name, None, MIN_SIDE, 65535)
    frames = integer(ds, "NumberOfFrames", name, 1, 1, MAX_FRAMES)
    samples = integer(ds, "SamplesPerPixel", name, 1, 0, 65535)
    if samples not in (1, 3):
        raise ImageError(f"{name}: DICOM SamplesPerPixel {samples} is not 1 (grey) or 3 (colour)")
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{name}: image too large ({cols}x{rows} pixels; the limit is {MAX_PIXELS:,} pixels)")
    allocated = integer(ds, "BitsAllocated", name, None, 0, 65535)
    if allocated not in BITS_ALLOCATED:
        raise ImageError(f"{name}: DICOM BitsAllocated {allocated} is not one of "
                         f"{', '.join(map(str, BITS_ALLOCATED))}")
    stored = integer(ds, "BitsStored", name, allocated, 0, 65535)
    if not 1 <= stored <= allocated:
        raise ImageError(f"{name}: DICOM BitsStored {stored} is not between 1 and BitsAllocated ({allocated})")
    integer(ds, "PixelRepresentation", name, 0, 0, 1)
    values = _values(ds, "PhotometricInterpretation", name)
    photometric = str(values[0]).strip().upper() if values else ("MONOCHROME2" if samples == 1 else "RGB")
    if photometric not in GREY + COLOUR:
        raise ImageError(f"{name}: DICOM PhotometricInterpretation {_raw(values[0])} is not supported "
                         f"(expected one of {', '.join(GREY + COLOUR)})")
    if (photometric in GREY) != (samples == 1):
        raise ImageError(f"{name}: DICOM PhotometricInterpretation {photometric} with {samples} samples per pixel")
    ds.PhotometricInterpretation = photometric
    return photometric, frames


def decode(data: bytes, name: str) -> np.ndarray:
    """DICOM bytes -> full-resolution grayscale uint8 (the first frame)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for bad files; its words go to the log, not the reader
        log.info("%s: pydicom cannot read it: %s", name, exc)
        raise ImageError(f"{name}: not a readable DICOM file (damaged, cut short or not DICOM): export it "
                         "again from the X-ray unit or viewer") from exc
    if "PixelData" not in ds:
        raise ImageError(f"{name}: DICOM file has no pixel data")
    photometric, frames = _pixel_format(ds, name)
    slope = number(ds, "RescaleSlope", name)
    intercept = number(ds, "RescaleIntercept", name)
    if slope == 0:
        raise ImageError(f"{name}: DICOM RescaleSlope is 0, which makes every pixel the same")
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)  # decode the first frame only
        arr = ds.pixel_array
    except Exception as exc:
        log.info("%s: pydicom cannot decode its pixel data: %s", name, exc)
        raise ImageError(_undecodable(ds, name)) from exc
    if arr.ndim == 3 and photometric in COLOUR:  # colour: convert to grey, no windowing applies
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return _to_gray(np.ascontiguousarray(arr[:, :, ::-1]), name)
    if arr.ndim != 2:
        raise ImageError(f"{name}: DICOM pixel data has shape {arr.shape}; expected one grey frame")
    with np.errstate(over="ignore", invalid="ignore"):
        if "ModalityLUTSequence" in ds:
            try:
                arr = apply_modality_lut(arr, ds)
            except Exception as exc:
                raise ImageError(f"{name}: DICOM modality LUT cannot be applied ({exc})") from exc
        else:
            arr = arr.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
        arr = np.asarray(arr, np.float64).astype(np.float32)
    if not np.isfinite(arr).all():
        raise ImageError(f"{name}: DICOM rescale (RescaleSlope {slope}, RescaleIntercept {intercept}) gives "
                         f"non-finite pixel values")
    if "VOILUTSequence" in ds:
        try:
            out = apply_voi_lut(arr, ds, index=0).astype(np.float32)
        except Exception as exc:
            raise ImageError(f"{name}: DICOM VOI LUT cannot be applied ({exc})") from exc
        img = _stretch(out, float(out.min()), float(out.max()))
    elif (center := number(ds, "WindowCenter", name, multi=True)) is not None and \
            (width := number(ds, "WindowWidth", name, multi=True)) is not None:
        if width < 1:
            raise ImageError(f"{name}: DICOM WindowWidth {width} is below 1")
        img = _stretch(arr, center - width / 2, center + width / 2)
    else:
        img = _stretch(arr)
    if inverted(ds, photometric):
        img = 255 - img
    return img


def inverted(ds, photometric: str) -> bool:
    """Whether a viewer shows these grey levels the other way round: MONOCHROME1 (low values white), or
    MONOCHROME2 with Presentation LUT Shape INVERSE (2050,0020). The DX image module pairs MONOCHROME1 with
    INVERSE and MONOCHROME2 with IDENTITY, so INVERSE on a MONOCHROME1 film restates its one inversion; the
    device shows and reads the film as a viewer would (a negative read as a positive is refused as inverted)."""
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and shape == "INVERSE")


def _undecodable(ds, name: str) -> str:
    """What to tell the reader when the pixel data will not decode: a compression this device lacks a decoder
    for (named, with what to do), or pixel data that does not match the header."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return (f"{name}: DICOM pixel data cannot be decoded: it is compressed as {syntax.name}, which this device "
                "cannot decompress; export the film uncompressed (Explicit VR Little Endian) or as PNG")
    return (f"{name}: DICOM pixel data cannot be decoded: it does not match the image size and format its header "
            "declares; export the film again")
