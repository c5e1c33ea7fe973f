import io
import struct
import zlib

import cv2
import numpy as np
import pytest

from edge_runtime.preprocess import ImageError, PreprocessConfig, decode_image, load


def png_bytes(arr):
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None, pixel_data=True):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "P1"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(h=64, w=80, hi=255, dtype=np.uint8):
    return np.tile(np.linspace(0, hi, w), (h, 1)).astype(dtype)


def test_8bit_png_is_read_as_is_and_resized():
    img = gradient()
    assert np.array_equal(decode_image(png_bytes(img)), img)
    out = load(png_bytes(img), PreprocessConfig(32))
    assert out.shape == (32, 32) and out.dtype == np.uint8


def test_16bit_png_is_stretched_to_full_8bit_range():
    img = gradient(hi=4095, dtype=np.uint16)  # 12-bit values in a 16-bit file
    out = decode_image(png_bytes(img))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # monotonic: no wrap-around


def test_the_same_film_at_16_bits_reads_as_at_8_bits():
    """8-bit content saved as a 16-bit PNG (v * 257) gives the 8-bit pixels exactly, so the same answer
    (review27 #5: a percentile stretch moved probabilities by up to 0.35); 16-bit colour likewise."""
    rng = np.random.default_rng(0)
    film = np.clip(rng.normal(90, 25, (64, 64)), 20, 180).astype(np.uint8)  # not spanning 0-255
    assert np.array_equal(decode_image(png_bytes(film.astype(np.uint16) * 257)), film)
    assert np.array_equal(decode_image(png_bytes(film.astype(np.uint16))), film)  # 8-bit values, 16-bit file
    colour = np.stack([film] * 3, axis=-1)
    assert np.array_equal(decode_image(png_bytes(colour.astype(np.uint16) * 257)), decode_image(png_bytes(colour)))


def test_colour_image_becomes_gray():
    bgr = np.zeros((40, 40, 3), np.uint8)
    bgr[..., 1] = 200
    out = decode_image(png_bytes(bgr))
    assert out.ndim == 2 and 100 < out.mean() < 130  # green luma weight ~0.587
    jpg = cv2.imencode(".jpg", bgr)[1].tobytes()
    assert decode_image(jpg).ndim == 2


def test_dicom_window_and_monochrome1_inversion(tmp_path):
    px = gradient(hi=4000, dtype=np.uint16)
    m2 = decode_image(write_dicom(tmp_path / "a.dcm", px, window=(2000, 4000)))
    m1 = decode_image(write_dicom(tmp_path / "b.dcm", px, photometric="MONOCHROME1", window=(2000, 4000)))
    assert m2[0, 0] < 10 and m2[0, -1] > 245
    assert np.abs(m1.astype(int) - (255 - m2.astype(int))).max() <= 1


def test_dicom_presentation_lut_inverse_is_shown_as_a_viewer_shows_it():
    """MONOCHROME2 + Presentation LUT Shape INVERSE is a negative that viewers show as a positive; MONOCHROME1 +
    INVERSE (what the DX module asks for) is inverted once, not twice (review27 #8)."""
    from dicom_factory import dicom_dataset, to_bytes

    px = gradient(hi=4000, dtype=np.uint16)

    def decoded(photometric, shape=None):
        ds = dicom_dataset(px, photometric=photometric, window=(2000, 4000))
        if shape:
            ds.PresentationLUTShape = shape
        return decode_image(to_bytes(ds, True)).astype(int)
    plain = decoded("MONOCHROME2")
    assert np.abs(decoded("MONOCHROME2", "IDENTITY") - plain).max() == 0
    assert np.abs(decoded("MONOCHROME2", "INVERSE") - (255 - plain)).max() <= 1
    assert np.abs(decoded("MONOCHROME1", "INVERSE") - (255 - plain)).max() <= 1
    assert np.abs(decoded("MONOCHROME1") - (255 - plain)).max() <= 1


def test_a_jpeg_is_turned_upright_by_its_exif_orientation():
    """A JPEG stored sideways with EXIF Orientation 6 (rotate 90 degrees clockwise to show) is read upright, as
    viewers show it, not refused as a rotated film (review27 #8)."""
    from PIL import Image

    upright = np.zeros((64, 48), np.uint8)
    upright[:20] = 250  # a bright top: tells the rotations apart
    stored = np.rot90(upright)  # turned a quarter counter-clockwise; Orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, "JPEG", quality=95, exif=exif)
    got = decode_image(buf.getvalue()).astype(int)
    assert got.shape == upright.shape and np.abs(got - upright).mean() < 3
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, "JPEG", quality=95)  # no EXIF: as stored
    assert decode_image(buf.getvalue()).shape == stored.shape


def test_dicom_rescale_then_window(tmp_path):
    px = gradient(hi=1000, dtype=np.uint16)
    # stored values 0..1000, slope 2, intercept -1000 -> HU-like -1000..1000; window 0 +- 500
    out = decode_image(write_dicom(tmp_path / "c.dcm", px, slope=2.0, intercept=-1000.0, window=(0, 1000)))
    assert out[0, 0] == 0 and out[0, -1] == 255
    mid = out[0, px.shape[1] // 2]
    assert 100 < mid < 160


def test_dicom_without_pixel_data_is_a_clear_error(tmp_path):
    p = write_dicom(tmp_path / "nopix.dcm", gradient(dtype=np.uint16), pixel_data=False)
    with pytest.raises(ImageError, match="nopix.dcm: DICOM file has no pixel data"):
        decode_image(p)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a decodable image"),
])
def test_bad_files_name_the_file_and_reason(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=f"bad.png: {reason}"):
        decode_image(p)


def test_truncated_png(tmp_path):
    data = png_bytes(gradient(200, 200))
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.png"):
        decode_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        decode_image(tmp_path / "nope.png")


def test_decompression_bomb_is_refused():
    # A valid PNG header declaring 100000 x 100000 pixels and almost no data.
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="bomb.png"):
        decode_image(bomb, name="bomb.png")


def test_config_validation():
    with pytest.raises(ValueError, match="interpolation"):
        PreprocessConfig(224, "bogus")
