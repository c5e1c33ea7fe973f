"""Classifier: a bundle (or one model file) in, a screening result out, on LiteRT, ONNX Runtime or OpenVINO.

    clf = Classifier("bundle/")              # verifies SHA256SUMS and metadata first
    s = clf.classify("film.dcm")             # -> Screening(probs, label, decision, reason, heatmap, ...)

Decision rule, in order, from the metadata (the numbers were chosen on validation data):
1. the image fails the input check          -> "out_of_scope" (no diagnosis shown)
2. P(tuberculosis) >= the TB threshold      -> "tuberculosis" (threshold for 90% TB sensitivity)
3. top probability < ``refer_below``         -> "refer" (the model is unsure: refer to a clinician)
4. otherwise the most probable class.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import bundle as B
from edge_runtime import heatmap as H
from edge_runtime import scope
from edge_runtime.metadata import ModelMetadata
from edge_runtime.preprocess import ImageError, decode_image, prepare

TB = "tuberculosis"
REFER = "refer"
OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True)
class Screening:
    probs: dict
    label: str
    decision: str
    reason: str
    in_scope: bool
    scope_distance: float | None
    heatmap: np.ndarray | None = field(repr=False)
    image: np.ndarray | None = field(repr=False)
    timings_ms: dict = field(default_factory=dict)
    name: str = ""


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling on probabilities (log-probabilities are logits up to a constant).

    Always float64: a threshold fitted on float32 probabilities and applied to float64 ones (or the reverse)
    disagrees exactly where an INT8 model saturates (p = 1.0 in float32 is 0.99999997 in float64), and a TB
    threshold sitting there then flags no film at all."""
    probs = np.asarray(probs, np.float64)
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, 1e-7, 1.0)) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def decide(probs: np.ndarray, meta: ModelMetadata, in_scope: bool = True, scope_reason: str = "") -> tuple[str, str]:
    labels = list(meta.labels)
    if not in_scope:
        return OUT_OF_SCOPE, scope_reason or "not recognised as a frontal chest radiograph"
    thr = meta.thresholds
    if TB in labels and TB in thr and probs[labels.index(TB)] >= thr[TB]:
        return TB, (f"TB probability {probs[labels.index(TB)]:.2f} is at or above the screening threshold "
                    f"{thr[TB]:.2f} (set for 90% TB sensitivity on validation): refer for confirmatory testing")
    top = int(np.argmax(probs))
    if probs[top] < thr.get("refer_below", 0.0):
        return REFER, (f"the model is unsure (top probability {probs[top]:.2f} < {thr['refer_below']:.2f}): "
                       f"refer to a clinician")
    return labels[top], f"most probable class ({probs[top]:.2f})"


def _for_parent(table: dict, parent: str | None) -> dict:
    """metadata.head/scope are keyed by parent model ("qat", "float"); fall back to the deployed one."""
    if not table or not all(isinstance(v, dict) for v in table.values()):
        return table or {}  # a single, flat entry
    if parent in table:
        return table[parent]
    return table.get("qat") or table.get("float") or {}


class Classifier:
    """Loads one artifact of a bundle and classifies images. Thread-safe: one inference at a time."""

    def __init__(self, path: str | Path, backend: str | None = None, num_threads: int | None = None,
                 verify: bool = True):
        from edge_runtime.backends import load_backend

        t0 = time.perf_counter()
        self.path = Path(path)
        self.model_path, meta, self.bundle_status = B.resolve(self.path, backend, verify)
        fmt = self.model_path.stem.removeprefix("model_")
        self.metadata = meta.for_format(fmt)  # this artifact's own temperature and thresholds
        self._backend = load_backend(self.model_path, num_threads)
        self.backend = self._backend.name
        size = self.metadata.image_size
        if -1 not in self._backend.input_shape and self._backend.input_shape != (size, size):
            raise B.BundleError(f"{self.model_path}: model input is {self._backend.input_shape} but the metadata says "
                                f"{size}x{size}; the model file does not match its metadata")
        probs, _ = self._backend.run(np.zeros((size, size), np.uint8))
        if probs.shape[-1] != len(self.metadata.labels):
            raise B.BundleError(f"{self.model_path}: model gives {probs.shape[-1]} classes but the metadata lists "
                                f"{len(self.metadata.labels)} labels {list(self.metadata.labels)}")
        card = self.path / "MODEL_CARD.md" if self.path.is_dir() else self.model_path.with_name("MODEL_CARD.md")
        self.model_card = card.read_text() if card.is_file() else ""
        # heatmap weights and input-check statistics belong to the Keras parent this artifact was made from
        self.parent = self.bundle_status.get("formats", {}).get(fmt, {}).get("parent")
        self._head = _for_parent(self.metadata.head, self.parent)
        self._scope = _for_parent(self.metadata.scope, self.parent)
        if self._scope and "components" not in self._scope:  # statistics of an older schema: not used
            self._scope = {}
        self._lock = threading.Lock()
        self.load_ms = (time.perf_counter() - t0) * 1000

    def __repr__(self):
        return f"Classifier({self.model_path.name}, backend={self.backend}, model={self.metadata.model_name})"

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw model outputs for one model-ready uint8 (size, size) image: (probs, features)."""
        with self._lock:
            return self._backend.run(image)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities (N, K) for model-ready uint8 images (N, size, size)."""
        return np.stack([self.predict(im)[0] for im in images]) if len(images) else np.zeros((0, len(self.metadata.labels)))

    def classify(self, source, name: str | None = None) -> Screening:
        """Classify a path, bytes or a decoded grayscale uint8 array. Raises ImageError for bad input."""
        meta = self.metadata
        t = [time.perf_counter()]
        if isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim != 2:
                raise ImageError(f"{name or '<array>'}: expected a grayscale uint8 array, got {source.dtype} {source.shape}")
            image, name = source, name or "<array>"
        else:
            name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")
            image = decode_image(source, name)
        t.append(time.perf_counter())
        x = prepare(image, meta.preprocess)
        t.append(time.perf_counter())
        raw, feats = self.predict(x)
        t.append(time.perf_counter())
        probs = calibrate(raw, meta.temperature)
        problem = scope.image_problem(image)
        distance = None
        if problem is None and self._scope and feats is not None:
            distance = scope.distance(feats.mean(axis=(0, 1)), self._scope)
            if distance > 1.0:
                problem = (f"the image is unlike the chest radiographs the model was trained on "
                           f"(embedding distance {distance:.2f} x the threshold)")
        decision, reason = decide(probs, meta, problem is None, problem or "")
        top = int(np.argmax(probs))
        heat = None
        if problem is None and feats is not None and self._head:
            heat = H.uncrop(H.class_activation_map(feats, self._head, top, meta.image_size), meta.crop)
        t.append(time.perf_counter())
        steps = ("decode", "preprocess", "infer", "postprocess")
        timings = {s: round((t[i + 1] - t[i]) * 1000, 3) for i, s in enumerate(steps)}
        timings["total"] = round((t[-1] - t[0]) * 1000, 3)
        return Screening(probs={l: float(p) for l, p in zip(meta.labels, probs)}, label=meta.labels[top],
                         decision=decision, reason=reason, in_scope=problem is None, scope_distance=distance,
                         heatmap=heat, image=image, timings_ms=timings, name=name)
