"""Inference backends: LiteRT (ai_edge_litert, or tflite_runtime on older Pi images), ONNX Runtime and
OpenVINO. Each is imported only when a model of its type is loaded.

Every backend follows :class:`Backend`: ``run`` takes one uint8 HxW image and returns (probs[K], features[h, w,
D] or None), reading the quantisation scale/zero-point from the model itself (nothing is hard-coded), and
finding its outputs by rank: rank 2 is the class probabilities, rank 4 the last convolutional feature map
(for the heatmap and the input check). ``Classifier`` takes any object that follows it (the benchmark gives
it a Keras one).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_runtime import formats as F
from edge_runtime.bundle import BundleError


class Backend(Protocol):
    name: str  # "litert", "onnxruntime", "openvino", ...
    package: str  # the runtime library and version, for reports
    input_shape: tuple[int, int]  # (H, W); -1 where the model accepts any size

    def run(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw probabilities (K,) and the last feature map (h, w, D) or None, for one uint8 (H, W) image."""

    def run_batch(self, images: np.ndarray) -> np.ndarray:
        """Raw probabilities (N, K) for uint8 images (N, H, W)."""


class _OneByOne:
    def run_batch(self, images: np.ndarray) -> np.ndarray:
        out = [self.run(im)[0] for im in images]
        return np.stack(out) if out else np.zeros((0, 0), np.float32)


def _split_outputs(outputs):
    probs = next((o for o in outputs if o.ndim == 2), None)
    feats = next((o for o in outputs if o.ndim == 4), None)
    return probs, feats


def litert_input(detail: dict, image: np.ndarray) -> np.ndarray:
    """One uint8 (H, W) image as a LiteRT model's input tensor (1, H, W, 1), quantised by the scale and zero
    point the model itself states when its input is integer."""
    x = image.reshape(1, *image.shape, 1).astype(np.float32)
    scale, zp = detail["quantization"]
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x / (scale or 1.0) + zp), info.min, info.max)
    return x.astype(detail["dtype"])


class LiteRTBackend(_OneByOne):
    """LiteRT. ``reference_kernels=True``: the portable reference kernels (``OpResolverType.BUILTIN_REF``), which
    give the same bits on every CPU (the kit's self-test compares them with the workstation's); slow."""

    name = "litert"

    def __init__(self, path: Path, num_threads: int | None = None, reference_kernels: bool = False):
        try:
            from ai_edge_litert import interpreter as lite
            self.package = "ai_edge_litert"
        except ImportError:
            try:
                from tflite_runtime import interpreter as lite
                self.package = "tflite_runtime"
            except ImportError as exc:
                raise BundleError("no LiteRT runtime: install ai-edge-litert (or tflite-runtime)") from exc
        kw = {"num_threads": num_threads or os.cpu_count() or 1}
        if reference_kernels:
            kw = {"num_threads": 1, "experimental_op_resolver_type": lite.OpResolverType.BUILTIN_REF}
        try:
            self.interp = lite.Interpreter(model_path=str(path), **kw)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a loadable TFLite model ({exc})") from exc
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()
        self.input_shape = tuple(int(v) for v in self.inp["shape"][1:3])
        self.input_dtype = np.dtype(self.inp["dtype"]).name

    def run(self, image: np.ndarray):
        self.interp.set_tensor(self.inp["index"], litert_input(self.inp, image))
        self.interp.invoke()
        outs = []
        for o in self.outs:
            v = self.interp.get_tensor(o["index"])
            s, z = o["quantization"]
            if np.issubdtype(v.dtype, np.integer) and s:
                v = (v.astype(np.float32) - z) * s
            outs.append(v.astype(np.float32, copy=False))
        return _first(*_split_outputs(outs))


class OnnxBackend(_OneByOne):
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


class OpenVinoBackend(_OneByOne):
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


def load_backend(path: str | Path, num_threads: int | None = None, backend: str | None = None,
                 reference_kernels: bool = False) -> Backend:
    path = Path(path)
    name = backend or F.backend_of(path)
    if name not in BACKENDS:
        raise BundleError(f"{path}: no backend for {path.suffix!r} (known: {sorted(F.SUFFIX_BACKEND)})")
    if reference_kernels:
        if name != "litert":
            raise BundleError(f"{path}: reference kernels exist for LiteRT only, not {name}")
        return LiteRTBackend(path, num_threads, reference_kernels=True)
    return BACKENDS[name](path, num_threads)
