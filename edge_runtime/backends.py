"""Inference backends: LiteRT (ai_edge_litert, or tflite_runtime on older Pi images), ONNX Runtime and
OpenVINO. Each is imported only when a model of its type is loaded.

Every backend takes one uint8 HxW image and returns (probs[K], features[h, w, D] or None), reading the
quantisation scale/zero-point from the model itself (nothing is hard-coded), and finding its outputs by
rank: rank 2 is the class probabilities, rank 4 the last convolutional feature map (for the heatmap and
the input check).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge_runtime.bundle import MODEL_SUFFIXES, BundleError


def _split_outputs(outputs):
    probs = next((o for o in outputs if o.ndim == 2), None)
    feats = next((o for o in outputs if o.ndim == 4), None)
    return probs, feats


class LiteRTBackend:
    name = "litert"

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
            self.package = "ai_edge_litert"
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                self.package = "tflite_runtime"
            except ImportError as exc:
                raise BundleError("no LiteRT runtime: install ai-edge-litert (or tflite-runtime)") from exc
        try:
            self.interp = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()
        self.input_shape = tuple(int(v) for v in self.inp["shape"][1:3])
        self.input_dtype = np.dtype(self.inp["dtype"]).name

    def run(self, image: np.ndarray):
        d = self.inp
        x = image.reshape(1, *image.shape, 1).astype(np.float32)
        scale, zp = d["quantization"]
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = np.clip(np.round(x / (scale or 1.0) + zp), info.min, info.max)
        self.interp.set_tensor(d["index"], x.astype(d["dtype"]))
        self.interp.invoke()
        outs = []
        for o in self.outs:
            v = self.interp.get_tensor(o["index"])
            s, z = o["quantization"]
            if np.issubdtype(v.dtype, np.integer) and s:
                v = (v.astype(np.float32) - z) * s
            outs.append(v.astype(np.float32, copy=False))
        return _first(*_split_outputs(outs))


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BundleError("no ONNX Runtime: install the onnx extra (onnxruntime)") from exc
        so = ort.SessionOptions()
        if num_threads:
            so.intra_op_num_threads = num_threads
            so.inter_op_num_threads = 1
        avail = ort.get_available_providers()
        # Jetson: TensorRT, then CUDA, when the onnxruntime-gpu build provides them; else the CPU
        providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
        providers.append("CPUExecutionProvider")
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError(f"{path}: not a loadable ONNX model ({exc})") from exc
        self.package = f"onnxruntime {ort.__version__} ({self.sess.get_providers()[0]})"
        i = self.sess.get_inputs()[0]
        self.inp_name = i.name
        self.input_shape = tuple(int(v) if isinstance(v, int) else -1 for v in i.shape[1:3])
        self.input_dtype = "uint8" if "uint8" in i.type else "float32"

    def run(self, image: np.ndarray):
        x = image.reshape(1, *image.shape, 1).astype(self.input_dtype)
        outs = self.sess.run(None, {self.inp_name: x})
        return _first(*_split_outputs([np.asarray(o, np.float32) for o in outs]))


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise BundleError("no OpenVINO: install the openvino extra") from exc
        core = ov.Core()
        # f32: OpenVINO otherwise runs "float" models in bf16 on CPUs that have it, which changes results
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BundleError(f"{path}: not a loadable OpenVINO model ({exc})") from exc
        self.package = f"openvino {ov.__version__}"
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in list(shape)[1:3])
        self.input_dtype = "float32"
        self.request = self.compiled.create_infer_request()

    def run(self, image: np.ndarray):
        x = image.reshape(1, *image.shape, 1).astype(np.float32)
        res = self.request.infer({0: x})
        return _first(*_split_outputs([np.asarray(v, np.float32) for v in res.values()]))


def _first(probs, feats):
    if probs is None:
        raise BundleError("the model has no class-probability output (rank 2)")
    return probs[0], (feats[0] if feats is not None else None)


BACKENDS = {"litert": LiteRTBackend, "onnxruntime": OnnxBackend, "openvino": OpenVinoBackend}


def load_backend(path: str | Path, num_threads: int | None = None, backend: str | None = None):
    path = Path(path)
    name = backend or MODEL_SUFFIXES.get(path.suffix)
    if name not in BACKENDS:
        raise BundleError(f"{path}: no backend for {path.suffix!r} (known: {sorted(MODEL_SUFFIXES)})")
    return BACKENDS[name](path, num_threads)
