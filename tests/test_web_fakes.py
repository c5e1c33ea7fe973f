"""Shared helpers for the web tests: a fake classifier with the runtime's interface, images, fixtures.

Run as a script it serves the fake on loopback (used by the subprocess tests: kill -9, load):
    python tests/test_web_fakes.py DATA_DIR [--delay-ms N]
"""
from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.metadata import ModelMetadata  # noqa: E402
from edge_runtime.preprocess import PreprocessConfig, decode_image  # noqa: E402

LABELS = ("normal", "pneumonia", "tuberculosis")
CARD = """# Fake model card

**Intended use:** tests only.

| split | accuracy |
|---|---|
| test | 0.5 |

- not for patients
- <script>alert(1)</script>
"""


def _report(acc):
    per = {lab: {"sensitivity": acc, "specificity": 0.9, "auc": 0.8} for lab in LABELS}
    return {"n": 30, "accuracy": acc, "macro_auc": 0.8, "macro_f1": 0.7, "ece": 0.05, "per_class": per}


def fake_metadata(synthetic=True) -> ModelMetadata:
    return ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(32), model_name="fake-net", model_version="9.9.9",
                         synthetic=synthetic, thresholds={"tuberculosis": 0.3, "refer_below": 0.5},
                         metrics={"test": {"pooled": _report(0.75),
                                           "by_source": {"siteA": _report(0.8), "siteB": _report(float("nan"))}}},
                         data_sources=("siteA", "siteB"))


@dataclass(frozen=True)
class FakeScreening:
    probs: dict
    label: str
    decision: str
    reason: str
    in_scope: bool
    heatmap: np.ndarray | None = field(repr=False)
    image: np.ndarray | None = field(repr=False)
    timings_ms: dict = field(default_factory=dict)
    reason_code: str = ""
    reason_args: dict = field(default_factory=dict)
    heatmap_grid: tuple | None = None


class FakeClassifier:
    """Dark image -> normal, bright -> pneumonia, mid grey -> refer, flat image -> out of scope (blank), a file
    named "unlike*" -> out of scope (unlike the training films). Reasons come as codes with numbers, as the
    real Classifier's; ``grid`` is the feature map's size (below 5x5 no heatmap is drawn).

    It has no lock of its own and counts overlapping calls, so a test can prove the web app serialises them.
    """

    backend = "fake"
    model_card = CARD

    def __init__(self, synthetic=True, validated=False, delay_s=0.0, fail=False, grid=7):
        self.metadata = fake_metadata(synthetic)
        self.grid = grid
        self.bundle_status = {"validated": validated, "failed_formats": [] if validated else ["tflite_int8"]}
        self.delay_s, self.fail = delay_s, fail
        self.active = self.max_active = self.calls = 0
        self._count = threading.Lock()

    def classify(self, source, name=None):
        with self._count:
            self.active += 1
            self.calls += 1
            self.max_active = max(self.max_active, self.active)
        try:
            t0 = time.perf_counter()
            if self.fail:
                raise RuntimeError("backend exploded")
            img = decode_image(source, name)  # raises ImageError
            if self.delay_s:
                time.sleep(self.delay_s)
            m = float(img.mean()) / 255.0
            logits = np.array([(1 - m) * 6, m * 6, 3.0])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            probs = {k: float(v) for k, v in zip(LABELS, p)}
            label = LABELS[int(p.argmax())]
            top = round(float(p.max()), 4)
            if float(img.std()) < 1.0:
                decision, code, args, in_scope = "out_of_scope", "oos_blank", {}, False
            elif Path(str(name or "")).name.startswith("unlike"):
                decision, code, args, in_scope = "out_of_scope", "oos_unlike_training", {"distance": 1.84}, False
            elif p.max() < 0.5:
                decision, code, args, in_scope = "refer", "unsure", {"p": top, "threshold": 0.5}, True
            else:
                decision, code, args, in_scope = label, "most_probable", {"p": top}, True
            from edge_runtime.operating_point import reason_text

            reason, heat = reason_text(code, args), None
            if in_scope and self.grid >= 5:
                import cv2

                heat = cv2.resize(img, (32, 32)).astype(np.float32) / 255.0
            ms = (time.perf_counter() - t0) * 1000
            return FakeScreening(probs, label, decision, reason, in_scope, heat, img,
                                 {"decode": 0.1, "preprocess": 0.1, "infer": ms, "postprocess": 0.1, "total": ms},
                                 code, args, (self.grid, self.grid) if in_scope else None)
        finally:
            with self._count:
                self.active -= 1


# ---- a real (tiny) bundle for the real Classifier: no training, an ONNX graph written by hand -------------
TINY_W, TINY_B = (-10.0, 0.0, 10.0), (5.0, 0.5, -5.0)  # logits = W * mean(image)/255 + B, softmax over LABELS
TINY_THRESHOLDS = {"tuberculosis": 0.9, "refer_below": 0.5}


def tiny_probs(mean: float) -> np.ndarray:
    """The tiny model's probabilities for an image of this mean grey level (for expected values in tests)."""
    z = np.array(TINY_W) * (mean / 255.0) + np.array(TINY_B)
    e = np.exp(z - z.max())
    return e / e.sum()


def write_tiny_bundle(folder: Path, size: int = 32) -> Path:
    """A verified bundle (model_onnx_fp32.onnx, metadata.json, SHA256SUMS) whose model gives ``tiny_probs`` of
    the image mean: dark -> normal, mid grey -> refer, bright -> tuberculosis with the thresholds above."""
    import onnx
    from onnx import TensorProto, helper

    from edge_runtime.bundle import write_sums

    folder.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m4"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m4", "shape"], ["m"]),
        helper.make_node("Div", ["m", "k255"], ["x"]),
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
             helper.make_tensor("k255", TensorProto.FLOAT, [1], [255.0]),
             helper.make_tensor("W", TensorProto.FLOAT, [1, 3], list(TINY_W)),
             helper.make_tensor("B", TensorProto.FLOAT, [1, 3], list(TINY_B))]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.UINT8,
                                                                           [1, size, size, 1])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model_onnx_fp32.onnx"))
    meta = ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(size), model_name="tiny-onnx", model_version="0.0.1",
                         synthetic=True, thresholds=dict(TINY_THRESHOLDS))
    meta.save(folder / "metadata.json")
    write_sums(folder)
    return folder


def png_bytes(mean=60, size=(64, 64), seed=0, noise=20) -> bytes:
    import cv2

    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(mean, noise, size=size), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def jpeg_bytes(mean=200, size=(64, 80)) -> bytes:
    import cv2

    arr = np.clip(np.random.default_rng(1).normal(mean, 20, size=size), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", arr)
    assert ok
    return buf.tobytes()


def dicom_bytes(rows=64, cols=64) -> bytes:
    import io

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PixelData = np.random.default_rng(2).integers(0, 4095, (rows, cols), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def upload(client, *images, reference="", token=None, lang=None):
    """POST the upload form as a browser would (fetching the CSRF token first)."""
    page = client.get("/" + (f"?lang={lang}" if lang else ""))
    data = {"csrf_token": token or csrf(page.get_data(as_text=True)), "reference": reference,
            "files": [(__import__("io").BytesIO(b), n) for n, b in images]}
    return client.post("/screenings", data=data, content_type="multipart/form-data")


@pytest.fixture
def fake():
    return FakeClassifier()


@pytest.fixture
def app(tmp_path, fake):
    from edge_runtime.web import create_app

    return create_app(fake, tmp_path / "data")


@pytest.fixture
def client(app):
    return app.test_client()


def _main(argv=None) -> int:
    import argparse

    from edge_runtime.web import create_app
    from edge_runtime.web.cli import serve

    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--delay-ms", type=float, default=0)
    p.add_argument("--threads", type=int, default=4)
    a = p.parse_args(argv)
    app = create_app(FakeClassifier(delay_s=a.delay_ms / 1000), a.data_dir)
    app.extensions["cxr"].store.sweep_orphans()
    serve(app, "127.0.0.1", 0, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
