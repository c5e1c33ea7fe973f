"""A bundle written before the architecture change (metadata schema 1: preprocessing fields flat at the top
level; formats named by file) still loads, verifies and classifies, with the artifact's own operating point."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from edge_runtime.classifier import Classifier  # noqa: E402
from edge_runtime.metadata import SCHEMA_VERSION, ModelMetadata  # noqa: E402
from edge_runtime.preprocess import PreprocessConfig  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_schema1"


def test_schema1_bundle_loads_and_classifies():
    clf = Classifier.from_bundle(FIXTURE)
    assert clf.format == "onnx_fp32" and clf.backend == "onnxruntime" and clf.parent == "float"
    meta = clf.metadata
    assert meta.preprocess == PreprocessConfig(32, "area", crop=0.0, equalize="none", keep="all", frame=0.09375)
    assert meta.schema_version == SCHEMA_VERSION  # read into the current schema
    # the artifact's own calibration entry (not the bundle-level T = 1.0) is the one applied
    assert clf.operating_point.temperature == 2.0
    assert clf.operating_point.thresholds == {"tuberculosis": 0.6, "refer_below": 0.4}
    # the fixture model: logits (6.4 - 0.05 m, 0, 0.05 m - 6.4) for mean grey level m; at m = 200:
    # (-3.6, 0, 3.6) / T=2 -> (-1.8, 0, 1.8) -> softmax -> P(TB) = e^1.8 / (e^-1.8 + 1 + e^1.8)
    s = clf.classify(np.full((64, 64), 200, np.uint8) + np.eye(64, dtype=np.uint8))
    p_tb = np.exp(1.8) / (np.exp(-1.8) + 1 + np.exp(1.8))
    assert s.probs["tuberculosis"] == pytest.approx(p_tb, abs=0.01)


def test_schema1_metadata_is_written_back_nested(tmp_path):
    meta = ModelMetadata.load(FIXTURE / "metadata.json")
    d = ModelMetadata.load(meta.save(tmp_path / "m.json")).to_dict()
    # written with the lowest schema that describes it: nested preprocessing (2); views would need SCHEMA_VERSION
    assert d["preprocess"]["image_size"] == 32 and "image_size" not in d and d["schema_version"] == 2 < SCHEMA_VERSION


def test_newer_schema_is_refused_with_a_clear_message():
    d = ModelMetadata.load(FIXTURE / "metadata.json").to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="newer than this runtime"):
        ModelMetadata.from_dict(d)
