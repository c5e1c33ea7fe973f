"""The ONE table of model formats, keyed by a stable string. Conversion (``convert.export`` adds an exporter
per key), the runtime's backend choice, the bundle, the kit and the benchmark rows all look formats up here.
It lives on the runtime side because the device must read it and may not import ``convert``.

``parent``: which trained Keras model the artifact is made from: ``float`` (model_float.keras) or ``qat``
(model_qat.h5, the quantization-aware model, whose fake-quant ranges become the INT8 scales).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Format:
    key: str
    suffix: str  # file suffix of the artifact
    backend: str  # "keras" (workstation reference only), "litert", "openvino", "onnxruntime"
    parent: str  # "float" or "qat"
    int8: bool
    description: str

    @property
    def filename(self) -> str:
        return f"model_{self.key}{self.suffix}"

    @property
    def on_device(self) -> bool:
        return self.backend != "keras"


FORMATS: dict[str, Format] = {f.key: f for f in (
    Format("keras_fp32", ".keras", "keras", "float", False, "float Keras model: the reference and the speed baseline"),
    Format("tflite_fp32", ".tflite", "litert", "float", False, "TFLite float32"),
    Format("tflite_int8", ".tflite", "litert", "qat", True, "TFLite full integer from the QAT model"),
    Format("tflite_int8_ptq", ".tflite", "litert", "float", True,
           "TFLite full integer, post-training quantised from the float model (shows what QAT buys)"),
    Format("openvino_fp32", ".xml", "openvino", "float", False, "OpenVINO IR float32"),
    Format("openvino_int8", ".xml", "openvino", "float", True,
           "OpenVINO IR INT8, NNCF post-training quantisation of the float model on validation images"),
    Format("openvino_int8_qat", ".xml", "openvino", "qat", True,
           "OpenVINO IR INT8 converted straight from the QAT graph's fake-quant nodes"),
    Format("onnx_fp32", ".onnx", "onnxruntime", "float", False, "ONNX float32 (tf2onnx)"),
    Format("onnx_int8", ".onnx", "onnxruntime", "float", True,
           "ONNX INT8 QDQ, onnxruntime static quantisation of the float ONNX (per-channel)"),
)}

BASELINE = "keras_fp32"  # the float Keras model every artifact is compared with
DEFAULT_FORMATS = ("tflite_int8", "tflite_int8_ptq", "openvino_int8", "onnx_int8")  # convert prefers the better INT8
DEPLOYED = DEFAULT_FORMATS[0]  # what a default bundle serves first (LiteRT INT8), and what the study scores
BACKEND_ORDER = ("litert", "openvino", "onnxruntime")  # device preference when a bundle holds several backends
SUFFIX_BACKEND = {f.suffix: f.backend for f in FORMATS.values() if f.on_device}  # ".tflite" -> "litert", ...
DEVICE_BACKENDS = tuple(b for b in BACKEND_ORDER if b in SUFFIX_BACKEND.values())
_BY_FILENAME = {f.filename: f for f in FORMATS.values()}


def on_device() -> list[str]:
    return [k for k, f in FORMATS.items() if f.on_device]


def key_of(path: str | Path) -> str | None:
    """The format key of an artifact file from its name (``model_tflite_int8.tflite`` -> ``tflite_int8``);
    None for a file the table does not name (a bare model file given by the user)."""
    f = _BY_FILENAME.get(Path(path).name)
    return f.key if f else None


def backend_of(path: str | Path) -> str | None:
    """The device backend that loads a model file, by its suffix (None: not a model file)."""
    return SUFFIX_BACKEND.get(Path(path).suffix)


def parse_formats(text: str | None, default=DEFAULT_FORMATS) -> list[str]:
    """'a,b' -> validated keys; 'all' -> every on-device format. Unknown names raise and list the valid ones."""
    if not text:
        return list(default)
    if text.strip() == "all":
        return on_device()
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; valid: {', '.join(FORMATS)} (or 'all')")
    return keys
