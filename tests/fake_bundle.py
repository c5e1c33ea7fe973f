"""A real, signed bundle in a second, without training: a hand-built ONNX graph (uint8 image in, softmax of
three mean-brightness-driven logits out) with metadata.json and SHA256SUMS, served by the real Classifier on
ONNX Runtime. For the batch CLI and bundle-verification tests, which do not care what the model learnt."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = ("normal", "pneumonia", "tuberculosis")


def write_onnx(path: Path, size: int = 32, bias: float = 6.4) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[-0.05, 0.0, 0.05]], np.float32), "w")  # (1, 3)
    b = numpy_helper.from_array(np.array([bias, 0.0, -bias], np.float32), "b")
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0, axes=[1, 2, 3]),
             helper.make_node("Unsqueeze", ["mean", "one"], ["mean2"]),
             helper.make_node("MatMul", ["mean2", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    graph = helper.make_graph(nodes, "fake", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, size, size, 1])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], [w, b, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_bundle(folder: Path, size: int = 32, name: str = "model_onnx_fp32.onnx") -> Path:
    from edge_runtime import bundle as B
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.preprocess import PreprocessConfig

    folder.mkdir(parents=True, exist_ok=True)
    write_onnx(folder / name, size)
    ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(size), model_name="fake", model_version="0", synthetic=True,
                  thresholds={"tuberculosis": 0.5, "refer_below": 0.5}).save(folder / "metadata.json")
    (folder / "bundle.json").write_text(json.dumps({"validated": True, "formats": {}, "failed_formats": []}))
    B.write_sums(folder)
    return folder
