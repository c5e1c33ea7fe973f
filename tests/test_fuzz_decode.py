"""Fuzz the one decode path: whatever bytes come in, ``decode_image`` gives a 2-D uint8 image of at least
MIN_SIDE pixels a side or raises the project's own ImageError (issue 13). Property-based with hypothesis:
mutated PNG/JPEG/DICOM files and arbitrary DICOM attribute values.

A short budget runs with the suite; a longer one on demand:  CXR_FUZZ_EXAMPLES=5000 make fuzz
"""
import os

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_factory import _VR, dicom_bytes, gradient
from edge_runtime.preprocess import MIN_SIDE, ImageError, decode_image

pytestmark = pytest.mark.filterwarnings("ignore")  # pydicom and numpy warn about the values we break

EXAMPLES = int(os.environ.get("CXR_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds() -> list[bytes]:
    grey = gradient(40, 48, hi=255, dtype=np.uint8)
    return [cv2.imencode(".png", grey)[1].tobytes(),
            cv2.imencode(".png", gradient(40, 48, hi=4000, dtype=np.uint16))[1].tobytes(),
            cv2.imencode(".png", np.dstack([grey, grey[:, ::-1], grey]))[1].tobytes(),
            cv2.imencode(".jpg", grey)[1].tobytes(),
            cv2.imencode(".bmp", grey)[1].tobytes(),
            dicom_bytes(gradient(40, 48), window=(2000, 4000)),
            dicom_bytes(gradient(40, 48), photometric="MONOCHROME1", preamble=False),
            dicom_bytes(np.stack([gradient(40, 48)] * 2), frames=2)]


SEEDS = _seeds()


@st.composite
def mutated_files(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 32))]
        else:
            del data[at:]
    return bytes(data)


def assert_image_or_image_error(data: bytes, name: str) -> None:
    try:
        img = decode_image(data, name=name)
    except ImageError as exc:
        assert str(exc).startswith(f"{name}: "), str(exc)  # the message names the file
        return
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 2
    assert min(img.shape) >= MIN_SIDE


@FUZZ
@given(data=mutated_files(), name=st.sampled_from(["film.png", "film.dcm", "film"]))
def test_mutated_files_decode_or_raise_image_error(data, name):
    assert_image_or_image_error(data, name)


NUMERIC_TEXT = st.sampled_from([b"", b"0", b"-1", b"1e308", b"-1e308", b"nan", b"inf", b"abcd", b"1\\2",
                                b"\\", b"4000\\", b"  12 ", b"0.5", b"1e-300", b"65536", b"\x00\xff"])
ATTRIBUTE_VALUES = st.one_of(NUMERIC_TEXT, st.binary(max_size=12),
                             st.integers(0, 65535).map(lambda v: v.to_bytes(2, "little")))


@FUZZ
@given(values=st.dictionaries(st.sampled_from(sorted(_VR)), ATTRIBUTE_VALUES, min_size=1, max_size=4),
       window=st.booleans(), photometric=st.sampled_from(["MONOCHROME1", "MONOCHROME2"]))
def test_any_dicom_attribute_values_decode_or_raise_image_error(values, window, photometric):
    data = dicom_bytes(gradient(40, 48), raw=values, window=(2000, 4000) if window else None,
                       photometric=photometric)
    assert_image_or_image_error(data, "film.dcm")
