"""The batch CLI on a hand-built signed ONNX bundle (fast): a bad file is its row and the batch goes on,
the --csv path is checked before any work, FIFOs never hang it, folder mode reports every regular file
(issue 13, defects 1 and 8)."""
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dicom_factory import dicom_bytes
from edge_runtime.__main__ import main
from fake_bundle import make_bundle

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle")


def film(mean=40, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return cv2.imencode(".png", np.clip(rng.normal(mean, 30, (64, 64)), 0, 255).astype(np.uint8))[1].tobytes()


def classify(capsys, *args):
    rc = main(["classify", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, list(csv.DictReader(io.StringIO(out))), err


def test_a_malformed_dicom_is_a_row_and_the_batch_goes_on(bundle, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(film(seed=1))
    (tmp_path / "bad.dcm").write_bytes(dicom_bytes(window=(2000, 4000), raw={"WindowWidth": b"abcd"}))
    (tmp_path / "z.png").write_bytes(film(seed=2))
    out = tmp_path / "out.csv"
    rc, rows, err = classify(capsys, tmp_path / "a.png", tmp_path / "bad.dcm", tmp_path / "z.png",
                             "--bundle", bundle, "--csv", out)
    assert rc == 1, err
    written = list(csv.DictReader(out.open()))
    assert written == rows and [Path(r["file"]).name for r in rows] == ["a.png", "bad.dcm", "z.png"]
    assert [r["decision"] for r in rows] == ["normal", "error", "normal"]
    assert "bad.dcm: DICOM WindowWidth 'abcd' is not a number" in rows[1]["error"]
    assert "2 classified, 1 error(s)" in err


@pytest.mark.timeout(60)  # a FIFO opened for writing blocks until a reader comes
@pytest.mark.parametrize("where", ["missing folder", "a folder", "a fifo"])
def test_unusable_csv_path_is_refused_before_classifying(bundle, tmp_path, capsys, where):
    (tmp_path / "a.png").write_bytes(film())
    target = {"missing folder": tmp_path / "no" / "such" / "out.csv", "a folder": tmp_path}.get(where)
    if where == "a fifo":
        target = tmp_path / "out.fifo"
        os.mkfifo(target)
    rc, rows, err = classify(capsys, tmp_path / "a.png", "--bundle", bundle, "--csv", target)
    assert rc == 2 and rows == [], err
    assert f"error: cannot write --csv {target}" in err and "Traceback" not in err
    assert "classified" not in err  # refused before any image was classified


@pytest.mark.timeout(120)
def test_a_fifo_given_as_a_path_is_an_error_row_not_a_hang(bundle, tmp_path):
    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)  # nobody ever writes to it
    (tmp_path / "a.png").write_bytes(film())
    res = subprocess.run([sys.executable, "-m", "edge_runtime", "classify", str(fifo), str(tmp_path / "a.png"),
                          "--bundle", str(bundle)], capture_output=True, text=True, cwd=ROOT, timeout=100,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert res.returncode == 1, res.stderr
    assert rows[0]["decision"] == "error" and "film.png: not a regular file (a FIFO)" in rows[0]["error"]
    assert rows[1]["decision"] == "normal"


def test_folder_mode_reports_every_regular_file(bundle, tmp_path, capsys):
    d = tmp_path / "films"
    (d / "sub").mkdir(parents=True)
    (d / "film_no_extension").write_bytes(film(seed=3))
    (d / "sub" / "bare_dicom").write_bytes(dicom_bytes(preamble=False))  # no preamble, no extension
    (d / "named.png").write_bytes(film(seed=4))
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "notes.txt").write_text("taken on ward 3")
    os.mkfifo(d / "pipe")
    rc, rows, err = classify(capsys, d, "--bundle", bundle)
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"film_no_extension", "bare_dicom", "named.png", "broken.png", "notes.txt", "pipe"}
    assert by_name["film_no_extension"]["decision"] == by_name["named.png"]["decision"] == "normal"
    assert by_name["bare_dicom"]["decision"] not in ("error", "skipped") and by_name["bare_dicom"]["p_normal"]
    assert by_name["broken.png"]["decision"] == "error"
    assert by_name["notes.txt"]["decision"] == "skipped" and "not an image" in by_name["notes.txt"]["error"]
    assert by_name["pipe"]["decision"] == "error" and "not a regular file" in by_name["pipe"]["error"]
    assert rc == 1 and "3 classified, 2 error(s), 1 skipped (not an image)" in err, err
    # the same film named directly gives the same row as in folder mode
    rc, direct, _ = classify(capsys, d / "film_no_extension", "--bundle", bundle)
    assert rc == 0 and direct[0]["p_normal"] == by_name["film_no_extension"]["p_normal"]


def test_bomb_rows_say_image_too_large_with_the_size(bundle, tmp_path, capsys):
    import test_decode_hardening as T

    (tmp_path / "bomb.png").write_bytes(T._png_bomb(60000, 60000))
    (tmp_path / "bomb.jpg").write_bytes(T._jpeg_bomb(65000, 40000))
    rc, rows, err = classify(capsys, tmp_path, "--bundle", bundle)
    errors = {Path(r["file"]).name: r["error"] for r in rows}
    assert rc == 1 and "image too large (60000x60000 pixels" in errors["bomb.png"]
    assert "image too large (65000x40000 pixels" in errors["bomb.jpg"]
    assert not any("OpenCV" in e or "Assertion" in e for e in errors.values())


def test_an_out_of_scope_film_has_no_class_and_no_probabilities(bundle, tmp_path, capsys):
    """A thumbnail (8x8, under the model's input size) is out of scope: the row says why and gives no diagnosis."""
    small = tmp_path / "thumb.png"
    small.write_bytes(cv2.imencode(".png", np.random.default_rng(1).integers(0, 256, (8, 8)).astype(np.uint8))[1])
    ok = tmp_path / "film.png"
    ok.write_bytes(film())
    rc, rows, _ = classify(capsys, "--bundle", bundle, small, ok)
    by = {Path(r["file"]).name: r for r in rows}
    assert rc == 0 and by["thumb.png"]["decision"] == "out_of_scope" and by["thumb.png"]["in_scope"] == "False"
    assert "only 8x8 pixels" in by["thumb.png"]["reason"]
    assert by["thumb.png"]["top_class"] == "" and all(by["thumb.png"][k] == "" for k in by["thumb.png"] if k.startswith("p_"))
    assert by["film.png"]["top_class"] and all(by["film.png"][k] for k in by["film.png"] if k.startswith("p_"))


def test_an_interrupted_batch_keeps_its_rows_and_the_previous_report(bundle, tmp_path, capsys, monkeypatch):
    """Ctrl-C (or a crash) mid-batch loses neither the rows done nor the last whole report (review27 #4): rows go
    out as they are made, the report is written beside its name and renamed only when the batch ends."""
    from edge_runtime.classifier import Classifier

    films = tmp_path / "films"
    films.mkdir()
    for i in range(4):
        (films / f"f{i}.png").write_bytes(film(seed=i))
    report = tmp_path / "report.csv"
    report.write_text("the last whole report\n")
    real, calls = Classifier.classify, []

    def stop_at_third(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, path, *a, **k)
    monkeypatch.setattr(Classifier, "classify", stop_at_third)
    rc, rows, err = classify(capsys, films, "--bundle", bundle, "--csv", report)
    assert rc == 130 and [Path(r["file"]).name for r in rows] == ["f0.png", "f1.png"], err
    assert "interrupted after 2 of 4 film(s)" in err and "Traceback" not in err
    assert report.read_text() == "the last whole report\n"
    partial = list(csv.DictReader(io.StringIO((tmp_path / "report.csv.partial").read_text())))
    assert [r["file"] for r in partial] == [r["file"] for r in rows]
    monkeypatch.setattr(Classifier, "classify", real)
    (tmp_path / "report.csv.partial").unlink()
    rc, rows, err = classify(capsys, films, "--bundle", bundle, "--csv", report)  # a whole batch replaces it
    assert rc == 0 and len(rows) == 4
    assert [r["file"] for r in csv.DictReader(report.open())] == [r["file"] for r in rows]
    assert not (tmp_path / "report.csv.partial").exists()
