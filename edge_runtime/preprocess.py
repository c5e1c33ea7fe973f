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

Decoding rules (the format is told by the content, see ``sniff``; every failure is the file's ``ImageError``):
- 8-bit PNG/JPEG/BMP/TIFF: read as is; colour images are converted to grayscale (luma).
- 16-bit (or float) images: stretched linearly from the 0.5th to the 99.5th percentile to 0..255.
- DICOM (``edge_runtime.dicom``, every attribute checked): modality LUT (rescale slope/intercept), then the
  VOI LUT or the first window (centre/width), else a percentile stretch; MONOCHROME1 is inverted so that bone
  is always bright.
- Regular files only (a FIFO or a device is refused, never read); images over ``MAX_PIXELS`` are refused
  from their header before decoding (decompression bombs).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.pixels import MAX_PIXELS, MIN_SIDE, ImageError, _to_gray, opencv

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
MAX_FILE_BYTES = 1 << 30  # refuse larger files before reading them (a large uncompressed CR DICOM is ~50 MB)
INTERPOLATIONS = {"area": 3, "linear": 1, "cubic": 2, "nearest": 0, "lanczos": 4}  # cv2.INTER_* values
EQUALIZE = ("none", "clahe", "hist")
KEEP = ("all", "border", "centre")


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


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"BM", "bmp"), (b"II*\0", "tiff"),
          (b"MM\0*", "tiff"), (b"\0\0\0\x0cjP  \r\n\x87\n", "jpeg2000"), (b"\xff\x4f\xff\x51", "jpeg2000"))
_DICOM_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
              b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
              b"UR", b"US", b"UT", b"UV"}


def sniff(data: bytes) -> str | None:
    """The image format told by the content ("png", "jpeg", "bmp", "tiff", "jpeg2000", "webp", "dicom"), or
    None. DICOM is recognised with its 128-byte preamble and ``DICM`` or, without them, by a first element
    of group 0002 or 0008 (explicit or implicit VR little endian)."""
    head = bytes(data[:140])
    if head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if len(head) >= 12 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[3:4] == b"\x00" and (
            head[4:6] in _DICOM_VRS or int.from_bytes(head[4:8], "little") < 256):
        return "dicom"
    return None


def _is_dicom(data: bytes, name: str) -> bool:
    fmt = sniff(data)
    return fmt == "dicom" or (fmt is None and name.lower().endswith((".dcm", ".dicom")))


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding, or None."""
    fmt = sniff(data)
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if fmt == "bmp" and len(data) >= 26:
        return abs(int.from_bytes(data[18:22], "little", signed=True)), abs(int.from_bytes(data[22:26], "little", signed=True))
    if fmt == "jpeg":
        i = 2
        while i + 9 <= len(data) and data[i] == 0xFF:
            marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            i += 2 + length
    return None


def _too_large(name: str, size: tuple[int, int] | None) -> ImageError:
    dims = f"{size[0]}x{size[1]} pixels; " if size else ""
    return ImageError(f"{name}: image too large ({dims}the limit is {MAX_PIXELS:,} pixels)")


def _read(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of a regular file; FIFOs, devices and folders are refused without blocking on them."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if isinstance(exc, IsADirectoryError):
            raise ImageError(f"{name}: not a regular file (a folder)") from exc
        raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else \
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket or other special file"
            raise ImageError(f"{name}: not a regular file ({kind})")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(f"{name}: file too large ({st.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError as exc:
        raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def decode_image(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Decode a PNG/JPEG/DICOM file (path or bytes) into a full-resolution grayscale uint8 array.

    The format is told by the content (the name only for a DICOM-named file the content does not tell).
    Raises ``ImageError`` with the file name and the reason for anything that is not a usable image, whatever
    the decoding library raised.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
    else:
        name = name or str(source)
        data = _read(source, name)
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        img = _decode(data, name)
    except ImageError:
        raise
    except Exception as exc:  # any library failure on a bad file is this file's error, never the batch's
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else ""
        raise ImageError(f"{name}: cannot decode image ({type(exc).__name__}{': ' + detail if detail else ''})") from exc
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ImageError(f"{name}: decoded to {img.dtype} {img.shape}, not a grey image")
    if min(img.shape) < MIN_SIDE:
        raise ImageError(f"{name}: image too small ({img.shape[1]}x{img.shape[0]})")
    return img


def _decode(data: bytes, name: str) -> np.ndarray:
    if _is_dicom(data, name):
        from edge_runtime import dicom

        return dicom.decode(data, name)
    size = _declared_size(data)
    if size and size[0] * size[1] > MAX_PIXELS:
        raise _too_large(name, size)
    cv2 = opencv()
    try:
        # a JPEG is turned upright by its EXIF Orientation, as every viewer shows it (IMREAD_UNCHANGED ignores
        # it; JPEG has no alpha to keep); other formats as stored
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if data[:3] == b"\xff\xd8\xff" else cv2.IMREAD_UNCHANGED
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:  # raised for images over OPENCV_IO_MAX_IMAGE_PIXELS, among others
        if "IMAGE_PIXELS" in str(exc) or "validateInputImageSize" in str(exc):
            raise _too_large(name, size) from exc
        raise ImageError(f"{name}: not a decodable image (corrupt or truncated)") from exc
    if arr is None:
        raise ImageError(f"{name}: not a decodable image (corrupt, truncated or not an image file)")
    if arr.size == 0 or min(arr.shape[:2]) < MIN_SIDE:
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
