"""Tests for the synthetic chest X-ray phantom generator (train/phantom.py)."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.phantom import CLASSES, SOURCES, generate_dataset, main, render_phantom

SMALL = dict(per_class=20, seed=3, min_size=64, max_size=96)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("phantom") / "ds", **SMALL)


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_render_is_deterministic_by_seed() -> None:
    a = render_phantom("tuberculosis", 96, np.random.default_rng(7))
    b = render_phantom("tuberculosis", 96, np.random.default_rng(7))
    c = render_phantom("tuberculosis", 96, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("label", CLASSES)
def test_every_class_renders(label: str) -> None:
    img = render_phantom(label, 128, np.random.default_rng(0))
    assert img.shape == (128, 128) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.05


@pytest.mark.parametrize("seed", range(5))
def test_normal_anatomy_is_radiograph_like(seed: int) -> None:
    img = render_phantom("normal", 128, np.random.default_rng(seed))
    rows = slice(45, 70)  # mid chest: dark lungs either side of the bright mediastinum/spine
    lungs = (img[rows, 30:42].mean() + img[rows, 88:100].mean()) / 2
    assert lungs < img[rows, 60:68].mean() - 0.1
    assert img[:, :6].mean() < lungs  # air outside the body is darkest


def test_unknown_label_raises() -> None:
    with pytest.raises(ValueError):
        render_phantom("covid", 64, np.random.default_rng(0))


def test_dataset_layout_and_manifest(dataset: Path) -> None:
    rows = _manifest(dataset)
    assert list(rows[0]) == ["file", "class", "source", "patient_id"]
    assert len(rows) == 3 * SMALL["per_class"]
    per_patient: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        assert (dataset / r["file"]).is_file() and Path(r["file"]).parts[0] == r["class"]
        per_patient[r["patient_id"]].add(r["class"])
    for label in CLASSES:
        assert {r["source"] for r in rows if r["class"] == label} == set(SOURCES)
    assert all(len(c) == 1 for c in per_patient.values())  # a patient never changes class
    assert len(per_patient) < len(rows)  # some patients have follow-up images
    readme = (dataset / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC" in readme and "NOT FOR CLINICAL USE" in readme and "--seed 3" in readme


def test_dataset_file_formats_are_readable(dataset: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    rows = _manifest(dataset)
    kinds, shapes, photometric = defaultdict(int), [], set()
    for r in rows:
        path = dataset / r["file"]
        if path.suffix == ".dcm":
            ds = pydicom.dcmread(path)
            assert ds.PatientID == r["patient_id"] and ds.BitsAllocated == 16
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert {"RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"} <= set(ds.dir())
            photometric.add(ds.PhotometricInterpretation)
            arr = ds.pixel_array
            kinds["dicom"] += 1
        else:
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert arr is not None and arr.ndim == 2
            kinds["jpeg" if path.suffix == ".jpg" else f"png{arr.dtype.itemsize * 8}"] += 1
            if arr.dtype == np.uint16:
                assert arr.max() > 4095  # the full 16-bit range is used, not raw 12-bit values
        shapes.append(arr.shape)
        assert SMALL["min_size"] <= min(arr.shape) and max(arr.shape) <= SMALL["max_size"]
    assert kinds["png16"] >= 1 and kinds["jpeg"] >= 1 and kinds["dicom"] >= 3 and kinds["png8"] > len(rows) / 2
    assert "MONOCHROME1" in photometric
    assert any(h != w for h, w in shapes)


def test_same_seed_gives_identical_files(dataset: Path, tmp_path: Path) -> None:
    again = generate_dataset(tmp_path / "again", **SMALL)
    files = sorted(p.relative_to(dataset) for p in dataset.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (dataset / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_cli_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "cli"), "--per-class", "2", "--min-size", "48", "--max-size", "64"]) == 0
    assert "images: 6" in capsys.readouterr().out
    assert len(_manifest(tmp_path / "cli")) == 6


def _zone_features(img: np.ndarray) -> np.ndarray:
    """Upper/lower lung-zone brightness and texture on a 32x32 copy, independent of which side is diseased."""
    x = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    lo, hi = np.percentile(x, [5, 95])
    x = (x - lo) / (hi - lo + 1e-6)
    zones = [x[r0:r1, c0:c1] for r0, r1 in ((6, 13), (15, 23)) for c0, c1 in ((5, 13), (19, 27))]
    m, s = [z.mean() for z in zones], [z.std() for z in zones]
    return np.array([max(m[:2]), min(m[:2]), max(m[2:]), min(m[2:]), max(s[:2]), max(s[2:])])


def test_classes_are_separable_by_lung_zone_features() -> None:
    def data(seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = [_zone_features(render_phantom(c, 64, np.random.default_rng([seed, ci, i])))
             for ci, c in enumerate(CLASSES) for i in range(30)]
        return np.array(x), np.repeat(np.arange(len(CLASSES)), 30)

    (x_train, y_train), (x_test, y_test) = data(1), data(2)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(len(CLASSES))])
    pred = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (pred == y_test).mean() > 0.6  # chance is 1/3
