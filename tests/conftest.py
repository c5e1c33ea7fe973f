import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("CXR_DEV_DATA", ROOT.parent / "shared" / "data" / "cxr-dev"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "manifest.csv").is_file():
        pytest.skip(f"real chest X-rays not found at {REAL_DATA} (set CXR_DEV_DATA)")
    return REAL_DATA


def write_png(path: Path, arr: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


@pytest.fixture
def make_png():
    rng = np.random.default_rng(0)

    def _make(path: Path, size=(40, 40), dtype=np.uint8):
        hi = 255 if dtype == np.uint8 else 65535
        return write_png(Path(path), rng.integers(0, hi, size=size).astype(dtype))

    return _make


def _once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test run, also across pytest-xdist workers (`make test` runs two, one per CI
    core): the first worker to need it builds it under a lock in the run's shared temporary folder, the others
    wait for it and reuse it. Without xdist, a plain session folder."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    import fcntl
    import shutil

    out = tmp_path_factory.getbasetemp().parent / name  # one folder for all workers of this run
    with open(f"{out}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / ".built").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(exist_ok=True)
            build(out)
            (out / ".built").touch()
    return out


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small synthetic phantom data set (deterministic), shared by the training tests."""
    from train import phantom

    return _once(tmp_path_factory, "phantom",
                 lambda out: phantom.generate_dataset(out, per_class=120, seed=1, min_size=96, max_size=160))


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a training run in another folder that still finds its films: split.csv stores paths relative
    to itself, so it is written again for the new place. Another worker's cache temporaries are skipped."""
    import shutil

    from train import data as D

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.tmp.npz"))
    D.save_split(D.load_split(run / "split.csv"), dest / "split.csv")
    return dest


TINY_TRAIN_ARGS = ["--model", "mobilenet_v2", "--alpha", "0.35", "--image-size", "64", "--epochs", "30",
                   "--qat-epochs", "3", "--batch-size", "32", "--lr", "3e-3", "--patience", "30", "--no-augment",
                   "--site-augment", "0", "--seed", "0"]


@pytest.fixture(scope="session")
def tiny_run(synthetic_data, tmp_path_factory) -> Path:
    """A tiny MobileNetV2 (alpha 0.35, 64 px) trained with QAT on the synthetic phantoms (a few minutes)."""
    pytest.importorskip("tf_keras")
    from train.__main__ import main

    def build(folder: Path):
        assert main(["--data", str(synthetic_data), "--out", str(folder / "tiny"), *TINY_TRAIN_ARGS]) == 0

    return _once(tmp_path_factory, "run", build) / "tiny"


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """A real bundle with every on-device format converted from ``tiny_run`` (LiteRT INT8 is the default)."""
    from convert.__main__ import main

    def build(folder: Path):
        # agreement gate lowered for the tiny model: 64 px, 2x2 feature map, ~60 validation images (test_convert)
        rc = main([str(tiny_run), "--formats", "all", "--out", str(folder / "tiny"), "--min-agreement", "0.85"])
        assert rc in (0, 3), rc  # 3: written, a format below the gate (asserted per format in test_convert)

    return _once(tmp_path_factory, "bundle", build) / "tiny"

