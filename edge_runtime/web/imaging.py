"""Upload checks and the pictures the page shows.

Uploads are recognised by their content (magic bytes), never by the file name or the browser's content type,
and their pixel count is read from the header *before* any pixel is decoded, so a decompression bomb is refused
cheaply. The classifier then decodes the image for real (a file that is not decodable is refused there).
"""
from __future__ import annotations

import io
import struct

import numpy as np

from edge_runtime.preprocess import opencv

DISPLAY_MAX_SIDE = 1024  # the stored display image and overlay; the original upload is kept as it is


class UploadError(ValueError):
    """A refused upload: ``status`` is the HTTP status, ``code`` a stable key for the API and the catalogue,
    ``message`` English (the API's, the log's), ``fields`` the numbers (as numbers: the catalogue writes them as the
    reader's language does, "0,5 Mo") and names the page's catalogue says it with (``upload_error.<code>``; a
    ``bad_image`` carries the decoder's English ``detail``)."""

    def __init__(self, code: str, message: str, status: int = 400, **fields):
        super().__init__(message)
        self.code, self.message, self.status, self.fields = code, message, status, fields


def bad_image(name: str, detail: str, status: int = 422) -> UploadError:
    """A file that cannot be read as an image: the decoder's reason (English) kept as the detail."""
    return UploadError("bad_image", f"{name}: {detail}", status, name=name, detail=detail)


def read_upload(f, max_bytes: int) -> bytes:
    """The bytes of an uploaded file (werkzeug FileStorage), reading at most ``max_bytes`` + 1 of them: a file
    over the limit is refused (413) without being loaded into memory whole."""
    data = f.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        name = f.filename or "upload"
        raise UploadError("too_large", f"{name}: the file is too large; the limit is {max_bytes / 1e6:g} MB", 413,
                          name=name, mb=max_bytes / 1e6)
    return data


DICOM_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD",
             b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
             b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def _bare_dicom(data: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble and "DICM" (pydicom, and so the CLI, read these): it
    starts with a little-endian tag of the file meta (0002,xxxx) or identifying (0008,xxxx) group, followed by
    an explicit VR or, in implicit VR, a length that fits in the file."""
    if len(data) < 8 or data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    return data[4:6] in DICOM_VRS or struct.unpack("<I", data[4:8])[0] <= len(data) - 8


def sniff(data: bytes) -> str | None:
    """'png', 'jpeg' or 'dicom' from the first bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if (len(data) > 132 and data[128:132] == b"DICM") or _bare_dicom(data):
        return "dicom"
    return None


def decode_name(name: str, kind: str) -> str:
    """The name to give the decoder (``edge_runtime.preprocess.decode_image``), which reads a file as DICOM
    when its content says so *or* its name ends in .dcm/.dicom: make the name agree with the content sniffed
    here, so a preamble-less DICOM called "film" is read as DICOM and a PNG called "film.dcm" as a PNG."""
    dicom_name = name.lower().endswith((".dcm", ".dicom"))
    if kind == "dicom":
        return name if dicom_name else name + ".dcm"
    return name + {"png": ".png", "jpeg": ".jpg"}[kind] if dicom_name else name


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("PNG header is truncated")
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError("JPEG marker stream is corrupt")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise ValueError("JPEG has no frame header (truncated or not a JPEG)")


class NoPixels(ValueError):
    """A readable header that describes no image: the file is well formed but cannot be screened (422)."""


def _dicom_size(data: bytes) -> tuple[int, int]:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not rows or not cols:
        raise NoPixels("DICOM file has no pixel data (no Rows/Columns)")
    return cols, rows * max(frames, 1)


def check_upload(data: bytes, name: str, max_bytes: int, max_pixels: int) -> tuple[str, int, int]:
    """Refuse what is empty, too large, not PNG/JPEG/DICOM, or has too many pixels. Returns (kind, w, h)."""
    if not data:
        raise UploadError("empty_file", f"{name}: the file is empty (0 bytes)", name=name)
    if len(data) > max_bytes:
        raise UploadError("too_large", f"{name}: the file is {len(data) / 1e6:.1f} MB; the limit is "
                                       f"{max_bytes / 1e6:g} MB", 413, name=name, mb=max_bytes / 1e6)
    kind = sniff(data)
    if kind is None:
        raise UploadError("unsupported_type", f"{name}: not a PNG, JPEG or DICOM image (checked by its content, "
                                              f"not its name)", 415, name=name)
    try:
        w, h = {"png": _png_size, "jpeg": _jpeg_size, "dicom": _dicom_size}[kind](data)
    except NoPixels as exc:
        raise bad_image(name, str(exc)) from exc
    except Exception as exc:  # any parser failure is a bad file, never a server error
        raise bad_image(name, f"cannot read the {kind.upper()} header ({exc})", 400) from exc
    if w * h > max_pixels:
        raise UploadError("too_many_pixels", f"{name}: {w}x{h} pixels is more than the limit of "
                                             f"{max_pixels / 1e6:g} megapixels", 413, name=name, width=w, height=h,
                          mp=max_pixels / 1e6)
    if min(w, h) < 1:
        raise bad_image(name, f"the image has no pixels ({w}x{h})", 400)
    return kind, w, h


def display_image(gray: np.ndarray) -> np.ndarray:
    """Downscale (never upscale) a grayscale uint8 image so its long side is at most DISPLAY_MAX_SIDE."""
    h, w = gray.shape[:2]
    scale = DISPLAY_MAX_SIDE / max(h, w)
    if scale >= 1:
        return gray
    cv2 = opencv()
    return cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_png(img: np.ndarray) -> bytes:
    cv2 = opencv()
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
