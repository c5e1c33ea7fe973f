"""Build DICOM files in memory for the decoder tests: valid ones with pydicom, malformed ones by writing a
valid file and then replacing an element's encoded value with raw bytes (pydicom refuses to write most of
the broken values a real file can hold, e.g. WindowWidth ``abcd``)."""
from __future__ import annotations

import io
import struct

import numpy as np

# VR of each element we may corrupt, and a placeholder value pydicom accepts for it
_VR = {"WindowCenter": ("DS", "0"), "WindowWidth": ("DS", "1"), "RescaleSlope": ("DS", "1"),
       "RescaleIntercept": ("DS", "0"), "NumberOfFrames": ("IS", "1"), "PhotometricInterpretation": ("CS", "X"),
       "Rows": ("US", 8), "Columns": ("US", 8), "BitsAllocated": ("US", 16), "BitsStored": ("US", 12),
       "HighBit": ("US", 11), "SamplesPerPixel": ("US", 1), "PixelRepresentation": ("US", 0)}


def gradient(h=64, w=80, hi=4000, dtype=np.uint16) -> np.ndarray:
    return np.tile(np.linspace(0, hi, w), (h, 1)).astype(dtype)


def dicom_dataset(pixels: np.ndarray | None = None, *, photometric="MONOCHROME2", bits=(16, 12), window=None,
                  rescale=(1.0, 0.0), frames: int | None = None, pixel_data=True):
    """A valid DX dataset (explicit VR little endian). ``pixels``: (rows, cols), (frames, rows, cols) or
    (rows, cols, 3) for RGB; stored as uint16 (or uint8 when bits[0] == 8)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = gradient() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "P1"
    colour = pixels.ndim == 3 and frames is None
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-2:] if not colour else pixels.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour and photometric == "MONOCHROME2" else photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits[1] - 1, 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint8 if bits[0] == 8 else np.uint16).tobytes()
    return ds


def to_bytes(ds, preamble=True) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data if preamble else data[132:]


def patch(data: bytes, keyword: str, raw: bytes) -> bytes:
    """Replace the encoded value of ``keyword`` (which must be in ``data``) with ``raw`` (padded to even)."""
    from pydicom.datadict import tag_for_keyword

    vr = _VR[keyword][0]
    tag = tag_for_keyword(keyword)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    at = data.index(head)
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    if len(raw) % 2:
        raw += b" " if vr != "US" else b"\0"
    return data[:at + 6] + struct.pack("<H", len(raw)) + raw + data[at + 8 + length:]


def dicom_bytes(pixels=None, raw: dict | None = None, preamble=True, **kw) -> bytes:
    """A DICOM file as bytes; ``raw`` maps element keywords to the raw bytes their value should hold."""
    ds = dicom_dataset(pixels, **kw)
    for keyword in raw or {}:
        if keyword not in ds:
            setattr(ds, keyword, _VR[keyword][1])
    data = to_bytes(ds, preamble)
    for keyword, value in (raw or {}).items():
        data = patch(data, keyword, value)
    return data
