"""Exporters, one per format of the table ``edge_runtime.formats.FORMATS`` (by its backend). Each takes the prepared ``Sources`` and a
destination path and writes one artifact with the metadata inside it (ONNX ``metadata_props``, OpenVINO
``rt_info``; TFLite reads ``metadata.json`` beside it). ``try_export`` times, logs and reports each one and
turns a failure into a result row instead of a crash.
"""
from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.formats import FORMATS

log = logging.getLogger(__name__)
META_KEY = "cxr_metadata"


@dataclass
class Sources:
    """What the exporters need: the trained Keras models (two outputs: probs and the feature map), their
    SavedModels, calibration images (training films, so validation stays unseen), and the metadata JSON to embed."""

    work: Path
    models: dict  # "float"/"qat" -> two-output tf_keras model
    calib: np.ndarray  # uint8 (N, size, size) training films in random order, same preprocessing as everywhere
    meta_json: str
    input_type: str = "uint8"  # TFLite INT8 input: uint8 or int8
    saved: dict = field(default_factory=dict)

    def saved_model(self, parent: str) -> Path:
        """The parent's SavedModel (written once, reused by TFLite, OpenVINO and tf2onnx)."""
        if parent not in self.saved:
            import tensorflow as tf

            path = self.work / f"savedmodel_{parent}"
            if not path.exists():
                # A light module holding only the variables and one serving function: saving the Keras
                # object itself traces every layer's call variants (about 9x slower for a QAT model).
                m = self.models[parent]
                size = self.calib.shape[1]
                spec = tf.TensorSpec([1, size, size, 1], tf.float32, name="image")
                mod = tf.Module()
                mod.vars = list(m.variables)
                mod.serve = tf.function(lambda x: dict(zip(("probs", "features"), m(x, training=False))),
                                        input_signature=[spec])
                tf.saved_model.save(mod, str(path), signatures=mod.serve.get_concrete_function())
            self.saved[parent] = path
        return self.saved[parent]

    def representative(self, limit: int = 200):
        for x in self.calib[:limit]:
            yield [x[None, ..., None].astype(np.float32)]


def try_export(fn):
    """Time, log and report one export; a failure is a result, not a crash."""
    @functools.wraps(fn)
    def wrapper(key: str, src: Sources, dest: Path) -> dict:
        t0 = time.perf_counter()
        log.info("[%s] exporting -> %s", key, dest.name)
        try:
            fn(key, src, dest)
        except Exception as exc:  # noqa: BLE001 - report every failure as a row
            log.error("[%s] export FAILED after %.1f s: %s: %s", key, time.perf_counter() - t0, type(exc).__name__, exc)
            return {"format": key, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500],
                    "seconds": round(time.perf_counter() - t0, 1)}
        size = sum(p.stat().st_size for p in dest.parent.glob(dest.stem + ".*"))
        log.info("[%s] done in %.1f s, %.2f MB", key, time.perf_counter() - t0, size / 1e6)
        return {"format": key, "ok": True, "file": dest.name, "bytes": size,
                "seconds": round(time.perf_counter() - t0, 1)}
    return wrapper


# --- TFLite ------------------------------------------------------------------------------------------------
def _tflite(src: Sources, parent: str, int8: bool) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(src.saved_model(parent)))
    if int8:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = src.representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.uint8 if src.input_type == "uint8" else tf.int8
        conv.inference_input_type = io
        conv.inference_output_type = io
    return conv.convert()


@try_export
def export_tflite(key: str, src: Sources, dest: Path) -> None:
    f = FORMATS[key]
    dest.write_bytes(_tflite(src, f.parent if f.parent in src.models else "float", f.int8))


# --- OpenVINO ----------------------------------------------------------------------------------------------
@try_export
def export_openvino(key: str, src: Sources, dest: Path) -> None:
    import openvino as ov

    f = FORMATS[key]
    size = src.calib.shape[1]
    use_qat = f.int8 and f.parent == "qat" and "qat" in src.models
    model = ov.convert_model(str(src.saved_model("qat" if use_qat else "float")), input=[1, size, size, 1])
    if f.int8 and not use_qat:  # NNCF post-training quantisation on validation images
        import nncf

        data = nncf.Dataset(list(src.calib[:300]), lambda x: x[None, ..., None].astype(np.float32))
        model = nncf.quantize(model, data, subset_size=min(300, len(src.calib)))
    model.set_rt_info(src.meta_json, ["cxr", "metadata"])
    ov.save_model(model, str(dest), compress_to_fp16=False)


# --- ONNX --------------------------------------------------------------------------------------------------
def _onnx_fp32(src: Sources, dest: Path) -> None:
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(src.saved_model("float")),
           "--output", str(dest), "--opset", "17"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not dest.exists():
        raise RuntimeError("tf2onnx failed: " + res.stderr.strip().splitlines()[-1] if res.stderr else "no output")


def _embed_onnx(path: Path, meta_json: str) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in ((META_KEY, meta_json), ("labels", ",".join(__import__("json").loads(meta_json)["labels"]))):
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))


def embed_metadata(path: Path, meta_json: str) -> None:
    """Replace the metadata copy inside an ONNX or OpenVINO artifact (TFLite reads metadata.json beside it)."""
    if path.suffix == ".onnx":
        _embed_onnx(path, meta_json)
    elif path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        model.set_rt_info(meta_json, ["cxr", "metadata"])
        tmp = path.with_name(path.stem + ".tmp.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        tmp.replace(path)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))


@try_export
def export_onnx(key: str, src: Sources, dest: Path) -> None:
    f = FORMATS[key]
    if not f.int8:
        _onnx_fp32(src, dest)
        _embed_onnx(dest, src.meta_json)
        return
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre = src.work / "onnx_fp32_for_int8.onnx", src.work / "onnx_pre.onnx"
    if not fp32.exists():
        _onnx_fp32(src, fp32)
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    import onnxruntime as ort

    name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(src.representative(300))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x[0]}

    quantize_static(str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    _embed_onnx(dest, src.meta_json)


@try_export
def export_keras(key: str, src: Sources, dest: Path) -> None:
    src.models["float"].save(dest)


EXPORTERS = {"litert": export_tflite, "openvino": export_openvino, "onnxruntime": export_onnx, "keras": export_keras}


def export(key: str, src: Sources, folder: Path) -> dict:
    f = FORMATS[key]
    return EXPORTERS[f.backend](key, src, folder / f.filename)


def cleanup(src: Sources) -> None:
    shutil.rmtree(src.work, ignore_errors=True)
