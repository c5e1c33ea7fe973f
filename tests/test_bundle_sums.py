"""SHA256SUMS cannot be walked around (issue 13, defect 10): the runtime serves only listed, verified files.
Checksum boundaries use an independent value: the FIPS 180-2 test vector sha256("abc")."""
import shutil

import pytest

from edge_runtime import bundle as B
from edge_runtime.classifier import Classifier
from fake_bundle import make_bundle, write_onnx

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256(b"abc"), FIPS 180-2 B.1


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("signed") / "bundle")


@pytest.fixture
def bundle(signed, tmp_path):
    return shutil.copytree(signed, tmp_path / "b")


def _abc(tmp_path, sums: str):
    (tmp_path / "a.txt").write_bytes(b"abc")
    (tmp_path / B.SUMS).write_text(sums)
    return tmp_path


def test_hand_computed_checksum_passes_and_any_change_fails(tmp_path):
    assert B.verify_sums(_abc(tmp_path, f"{ABC}  a.txt\n")) == ["a.txt"]
    assert B.verify_sums(_abc(tmp_path, f"{ABC} *a.txt\n")) == ["a.txt"]  # sha256sum's binary-mode marker
    assert B.verify_sums(_abc(tmp_path, f"{ABC.upper()}  a.txt\n")) == ["a.txt"]  # hex is case-insensitive
    wrong_digest = ABC[:-1] + "c"  # one hex digit off
    with pytest.raises(B.BundleError, match="a.txt: checksum mismatch"):
        B.verify_sums(_abc(tmp_path, f"{wrong_digest}  a.txt\n"))
    (tmp_path / B.SUMS).write_text(f"{ABC}  a.txt\n")
    (tmp_path / "a.txt").write_bytes(b"abd")  # one byte changed
    with pytest.raises(B.BundleError, match="a.txt: checksum mismatch"):
        B.verify_sums(tmp_path)


@pytest.mark.parametrize("sums,message", [
    ("", "SHA256SUMS lists no files"),
    ("\n  \n", "SHA256SUMS lists no files"),
    (f"{ABC[:-1]}  a.txt\n", "SHA256SUMS line 1 is malformed"),  # 63 hex digits
    (f"{ABC}0  a.txt\n", "SHA256SUMS line 1 is malformed"),  # 65
    (f"{'g' * 64}  a.txt\n", "SHA256SUMS line 1 is malformed"),  # not hex
    (f"{ABC} a.txt\n", "SHA256SUMS line 1 is malformed"),  # one space, no mode marker
    (f"{ABC}  \n", "SHA256SUMS line 1 is malformed"),  # no name
    (f"{ABC}\n", "SHA256SUMS line 1 is malformed"),
    (f"{ABC}  a.txt\n{ABC}  a.txt\n", "a.txt: listed twice"),
    (f"{ABC}  a.txt\n{ABC}  ../a.txt\n", "../a.txt: path leaves the bundle"),
    (f"{ABC}  a.txt\n{ABC}  /etc/passwd\n", "/etc/passwd: absolute path"),
    (f"{ABC}  a.txt\n{ABC}  ./a.txt\n", "./a.txt: not a plain relative path"),
    (f"{ABC}  a.txt\n{ABC}  sub//a.txt\n", "sub//a.txt: not a plain relative path"),
    (f"{ABC}  a.txt\n{ABC}  gone.txt\n", "gone.txt: listed in SHA256SUMS but missing"),
    (f"{ABC}  a.txt\n{ABC}  sub\\..\\a.txt\n", "sub\\..\\a.txt: path leaves the bundle"),
    (f"{ABC}  a.txt\n{ABC}  sub\\a.txt\n", "sub\\a.txt: not a plain relative path"),
    (f"{ABC}  a.txt\n\nbad line\n{ABC}  gone.txt\n", "line 3 is malformed (expected"),
])
def test_bad_sums_files_are_refused(tmp_path, sums, message):
    with pytest.raises(B.BundleError, match="bundle verification failed") as err:
        B.verify_sums(_abc(tmp_path, sums))
    assert message in str(err.value), str(err.value)


def test_blank_lines_are_skipped_and_every_entry_after_them_checked(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"abc")
    assert B.verify_sums(_abc(tmp_path, f"{ABC}  a.txt\n\n{ABC}  b.txt\n")) == ["a.txt", "b.txt"]


def test_unlisted_files_are_refused_by_name(tmp_path):
    _abc(tmp_path, f"{ABC}  a.txt\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.bin").write_bytes(b"x")
    with pytest.raises(B.BundleError, match=r"not listed in SHA256SUMS: sub/extra.bin"):
        B.verify_sums(tmp_path)


@pytest.mark.parametrize("intruder", ["model_aaa_int8.tflite", "model_aaa_int8.onnx", "notes.txt"])
def test_an_unlisted_file_dropped_into_a_signed_bundle_is_refused(bundle, intruder):
    assert Classifier.from_bundle(bundle).model_path.name == "model_onnx_fp32.onnx"  # signed as it is
    if intruder.endswith(".onnx"):
        write_onnx(bundle / intruder)  # a loadable model that would sort ahead of the signed one
    else:
        (bundle / intruder).write_bytes(b"not signed")
    with pytest.raises(B.BundleError, match=f"not listed in SHA256SUMS: {intruder}"):
        Classifier.from_bundle(bundle)


def test_empty_sums_file_in_a_bundle_is_refused(bundle):
    (bundle / B.SUMS).write_text("")
    with pytest.raises(B.BundleError, match="lists no files"):
        Classifier.from_bundle(bundle)


def test_resolve_picks_among_listed_models_only(bundle, monkeypatch):
    # even if verification were to let an extra model through, resolve chooses among the listed ones
    write_onnx(bundle / "model_aaa_int8.onnx")
    monkeypatch.setattr(B, "verify_sums", lambda folder: ["model_onnx_fp32.onnx", "metadata.json", "bundle.json"])
    assert B.resolve(bundle).path.name == "model_onnx_fp32.onnx"
    assert B.resolve(bundle, verify=False).path.name == "model_aaa_int8.onnx"  # unverified: any file goes


def test_a_model_file_given_alone_is_verified_with_its_signed_folder(bundle, tmp_path):
    """``--bundle FOLDER/model.onnx`` walks around neither the checksums nor the parity verdict (review27 #3)."""
    model = bundle / "model_onnx_fp32.onnx"
    assert Classifier.from_bundle(model, serving=True).model_path == model  # signed as it is
    write_onnx(model, bias=3.2)  # another model under the signed name
    with pytest.raises(B.BundleError, match="part of a signed bundle that fails its check: .*checksum mismatch"):
        Classifier.from_bundle(model)
    assert Classifier.from_bundle(model, verify=False).model_path == model  # unverified on purpose: read
    write_onnx(model)
    B.write_sums(bundle)
    (bundle / "bundle.json").write_text('{"validated": false, "formats": {}, "failed_formats": ["onnx_fp32"]}')
    B.write_sums(bundle)
    with pytest.raises(B.BundleError, match="onnx_fp32 failed its parity check .* it is not served"):
        Classifier.from_bundle(model, serving=True)
    assert Classifier.from_bundle(model).format == "onnx_fp32"  # a benchmark measures a failed file on purpose
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("model_onnx_fp32.onnx", "metadata.json"):
        shutil.copy(bundle / name, alone / name)
    assert Classifier.from_bundle(alone / "model_onnx_fp32.onnx", serving=True).format == "onnx_fp32"  # unsigned file
