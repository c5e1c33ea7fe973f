"""Every failure to read an image is that image's ImageError with a clear message (issue 13, defects 1 and 8):
malformed DICOM attributes, any exception a library raises, non-regular files, decompression bombs, and
formats recognised by content rather than by the file name."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from dicom_factory import dicom_bytes, gradient
from edge_runtime import preprocess as P
from edge_runtime.preprocess import ImageError, decode_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the values we break

US = lambda v: struct.pack("<H", v)  # noqa: E731  an encoded US (unsigned short) value

MALFORMED = {  # case -> (dicom_bytes keyword arguments, what the message must say)
    "window width abcd": (dict(window=(2000, 4000), raw={"WindowWidth": b"abcd"}), "WindowWidth 'abcd' is not a number"),
    "window centre abcd": (dict(window=(2000, 4000), raw={"WindowCenter": b"abcd"}), "WindowCenter 'abcd' is not a number"),
    "window width nan": (dict(window=(2000, 4000), raw={"WindowWidth": b"nan"}), "WindowWidth nan is not a finite number"),
    "window width 0": (dict(window=(2000, 4000), raw={"WindowWidth": b"0"}), "WindowWidth 0.0 is below 1"),
    "window width -5": (dict(window=(2000, 4000), raw={"WindowWidth": b"-5"}), "WindowWidth -5.0 is below 1"),
    "multi-valued window, bad first": (dict(window=(2000, 4000), raw={"WindowWidth": b"x\\100"}),
                                       "WindowWidth 'x' is not a number"),
    "slope abcd": (dict(raw={"RescaleSlope": b"abcd"}), "RescaleSlope 'abcd' is not a number"),
    "intercept x": (dict(raw={"RescaleIntercept": b"x"}), "RescaleIntercept 'x' is not a number"),
    "slope 0": (dict(raw={"RescaleSlope": b"0"}), "RescaleSlope is 0"),
    "slope multi-valued": (dict(raw={"RescaleSlope": b"1\\2"}), "RescaleSlope has 2 values"),
    "slope overflows": (dict(raw={"RescaleSlope": b"1e308"}), "non-finite pixel values"),
    "bits allocated 7": (dict(raw={"BitsAllocated": US(7)}), "BitsAllocated 7 is not one of 1, 8, 16, 32, 64"),
    "bits stored 0": (dict(raw={"BitsStored": US(0)}), "BitsStored 0 is not between 1 and BitsAllocated (16)"),
    "bits stored 20": (dict(raw={"BitsStored": US(20)}), "BitsStored 20 is not between 1 and BitsAllocated (16)"),
    "samples per pixel 2": (dict(raw={"SamplesPerPixel": US(2)}), "SamplesPerPixel 2 is not 1 (grey) or 3 (colour)"),
    "samples per pixel 0": (dict(raw={"SamplesPerPixel": US(0)}), "SamplesPerPixel 0 is not 1 (grey) or 3 (colour)"),
    "3 samples, MONOCHROME2": (dict(raw={"SamplesPerPixel": US(3)}), "MONOCHROME2 with 3 samples per pixel"),
    "photometric bogus": (dict(raw={"PhotometricInterpretation": b"BOGUS"}),
                          "PhotometricInterpretation 'BOGUS' is not supported"),
    "palette colour": (dict(raw={"PhotometricInterpretation": b"PALETTE COLOR"}),
                       "PhotometricInterpretation 'PALETTE COLOR' is not supported"),
    "frames abc": (dict(raw={"NumberOfFrames": b"abc"}), "NumberOfFrames 'abc' is not a whole number"),
    "frames 0": (dict(raw={"NumberOfFrames": b"0"}), "NumberOfFrames 0 is not between 1 and"),
    "frames -1": (dict(raw={"NumberOfFrames": b"-1"}), "NumberOfFrames -1 is not between 1 and"),
    "2 frames declared, 1 stored": (dict(raw={"NumberOfFrames": b"2"}), "pixel data cannot be decoded"),
    "rows 0": (dict(raw={"Rows": US(0)}), "Rows 0 is not between 8 and 65535"),
    "rows 65535, data for 64": (dict(raw={"Rows": US(65535)}), "pixel data cannot be decoded"),
    "no pixel data": (dict(pixel_data=False), "DICOM file has no pixel data"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_dicom_attribute_is_an_image_error_naming_it(case):
    kwargs, message = MALFORMED[case]
    with pytest.raises(ImageError) as err:
        decode_image(dicom_bytes(**kwargs), name="film.dcm")
    assert str(err.value).startswith("film.dcm: ") and message in str(err.value), str(err.value)


def test_multi_valued_window_uses_the_first_pair():
    first = decode_image(dicom_bytes(window=(2000, 4000)))
    multi = decode_image(dicom_bytes(window=(2000, 4000), raw={"WindowWidth": b"4000\\100",
                                                                "WindowCenter": b"2000\\10"}))
    assert np.array_equal(first, multi)
    assert not np.array_equal(first, decode_image(dicom_bytes(window=(10, 100))))


def test_multi_frame_dicom_gives_its_first_frame():
    frames = np.stack([gradient(), gradient()[:, ::-1]])
    out = decode_image(dicom_bytes(frames, frames=2))
    assert out.shape == (64, 80) and out[0, 0] < 10 and out[0, -1] > 245  # the first frame rises left to right


def test_rgb_dicom_becomes_grey():
    rgb = np.dstack([gradient(hi=255, dtype=np.uint8)] * 3)
    out = decode_image(dicom_bytes(rgb, bits=(8, 8)))
    assert out.shape == (64, 80) and out.dtype == np.uint8 and np.abs(out.astype(int) - rgb[..., 0]).max() <= 1


def test_dicom_is_recognised_by_content_with_or_without_the_preamble():
    with_preamble = decode_image(dicom_bytes(), name="film")  # no extension
    bare = decode_image(dicom_bytes(preamble=False), name="film")
    assert np.array_equal(with_preamble, bare) and with_preamble.shape == (64, 80)
    assert P.sniff(dicom_bytes(preamble=False)) == P.sniff(dicom_bytes()) == "dicom"
    png = cv2.imencode(".png", gradient(dtype=np.uint8))[1].tobytes()
    assert P.sniff(png) == "png" and P.sniff(cv2.imencode(".jpg", gradient(dtype=np.uint8))[1].tobytes()) == "jpeg"
    assert P.sniff(b"just some text, not an image") is None
    assert decode_image(png, name="named.dcm").shape == (64, 80)  # content wins over a wrong extension


@pytest.mark.parametrize("exc", [RuntimeError("boom"), MemoryError(), KeyError("x"), AttributeError("y")])
def test_whatever_a_library_raises_becomes_the_images_error(monkeypatch, exc):
    from edge_runtime import dicom

    def broken(*a, **k):
        raise exc
    monkeypatch.setattr(dicom, "_stretch", broken)  # a step after pydicom's own, outside any narrower guard
    with pytest.raises(ImageError, match=f"film.dcm: cannot decode image \\({type(exc).__name__}"):
        decode_image(dicom_bytes(), name="film.dcm")
    monkeypatch.setattr(cv2, "imdecode", broken)
    with pytest.raises(ImageError, match=f"a.png: cannot decode image \\({type(exc).__name__}"):
        decode_image(cv2.imencode(".png", gradient(dtype=np.uint8))[1].tobytes(), name="a.png")


def _png_bomb(w, h):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_bomb(w, h):
    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


@pytest.mark.parametrize("make", [_png_bomb, _jpeg_bomb])
def test_decompression_bomb_says_too_large_with_its_size(make):
    with pytest.raises(ImageError) as err:
        decode_image(make(60000, 50000), name="bomb")
    msg = str(err.value)
    assert msg == f"bomb: image too large (60000x50000 pixels; the limit is {P.MAX_PIXELS:,} pixels)", msg
    assert "OpenCV" not in msg and "Assertion" not in msg


def test_large_dicom_says_too_large_with_its_size():
    with pytest.raises(ImageError, match=r"image too large \(65535x65535 pixels"):
        decode_image(dicom_bytes(raw={"Rows": US(65535), "Columns": US(65535)}), name="big.dcm")


@pytest.mark.timeout(30)
def test_fifo_and_folder_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)  # nobody writes: a plain read would block forever
    with pytest.raises(ImageError, match="film.png: not a regular file"):
        decode_image(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        decode_image(tmp_path)


def test_a_compression_without_a_decoder_is_named_with_what_to_do():
    """Pixel data compressed with a syntax this device cannot decode: the message names the compression and
    says how to export the film, not the decoding library's own words."""
    import io

    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    from dicom_factory import dicom_dataset

    ds = dicom_dataset(gradient())
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream" * 4])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue(), name="film.dcm")
    text = str(err.value)
    assert text.startswith("film.dcm: DICOM pixel data cannot be decoded: it is compressed as JPEG 2000")
    assert "export the film uncompressed" in text and "plugin" not in text.lower()
    cut = dicom_bytes()
    with pytest.raises(ImageError) as err:  # pixel data cut short: said as such, not in the library's words
        decode_image(cut[: len(cut) // 2], name="x.dcm")
    assert str(err.value) == ("x.dcm: DICOM pixel data cannot be decoded: it does not match the image size and "
                              "format its header declares; export the film again")
