"""Classifier: a model backend and its metadata in, a screening result out.

    clf = Classifier.from_bundle("bundle/")  # verifies SHA256SUMS and metadata, picks and loads an artifact
    s = clf.classify("film.dcm")             # -> Screening(probs, label, decision, reason, heatmap, ...)

    clf = Classifier(backend, metadata)      # any backend that follows edge_runtime.backends.Backend

The decision rule (input check, TB threshold, refer rule) is ``edge_runtime.operating_point``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import bundle as B
from edge_runtime import heatmap as H
from edge_runtime import orientation, scope, site
from edge_runtime import views as V
from edge_runtime.metadata import ModelMetadata
from edge_runtime.operating_point import decide_coded, reason_text
from edge_runtime.preprocess import ImageError, decode_image, prepare


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
    reason_code: str = ""  # the reason as a code and its numbers (edge_runtime.operating_point.REASONS_EN),
    reason_args: dict = field(default_factory=dict)  # so that a page can say it in the reader's language
    heatmap_grid: tuple | None = None  # (rows, cols) of the feature map behind the heatmap


def _for_parent(table: dict, parent: str | None) -> dict:
    """metadata.head/scope are keyed by parent model ("qat", "float"); fall back to the deployed one."""
    if not table or not all(isinstance(v, dict) for v in table.values()):
        return table or {}  # a single, flat entry
    if parent in table:
        return table[parent]
    return table.get("qat") or table.get("float") or {}


class Classifier:
    """Classifies images with one model backend. Thread-safe: one inference at a time.

    ``metadata`` is the artifact's own (``ModelMetadata.for_format``: its temperature and thresholds);
    ``parent`` names the Keras model it was made from ("qat"/"float"), whose heatmap weights and input-check
    statistics it uses."""

    def __init__(self, backend, metadata: ModelMetadata, *, parent: str | None = None, name: str = "",
                 model_card: str = "", status: dict | None = None, load_ms: float = 0.0):
        t0 = time.perf_counter()
        self._backend = backend
        self.backend = backend.name
        self.metadata = metadata
        self.name = name or metadata.model_name
        self.parent = parent
        self.model_card = model_card
        self.bundle_status = status or {}
        self.package = getattr(backend, "package", backend.name)  # runtime library and version
        self.model_path: Path | None = None  # set by from_bundle
        self.format: str | None = None  # format key of the artifact (edge_runtime.formats), from_bundle
        size = metadata.image_size
        shape = tuple(backend.input_shape)
        if -1 not in shape and shape != (size, size):
            raise B.BundleError(f"{self.name}: model input is {shape} but the metadata says {size}x{size}; "
                                "the model file does not match its metadata")
        probs, _ = backend.run(np.zeros((size, size), np.uint8))
        if probs.shape[-1] != len(metadata.labels):
            raise B.BundleError(f"{self.name}: model gives {probs.shape[-1]} classes but the metadata lists "
                                f"{len(metadata.labels)} labels {list(metadata.labels)}")
        self.head = _for_parent(metadata.head, parent)  # classifier weights for the heatmap
        self.scope = _for_parent(metadata.scope, parent)  # embedding statistics for the input check
        if self.scope and "components" not in self.scope:  # statistics of an older schema: not used
            self.scope = {}
        self.operating_point = metadata.operating_point  # what classify() applies (a site profile may replace it)
        self.site_profile = None  # edge_runtime.site.SiteProfile applied by from_bundle, if any
        self._lock = threading.Lock()
        self.load_ms = load_ms + (time.perf_counter() - t0) * 1000

    @classmethod
    def from_bundle(cls, path: str | Path, backend: str | None = None, num_threads: int | None = None,
                    verify: bool = True, reference_kernels: bool = False, fmt: str | None = None,
                    serving: bool = False, site_profile: str | Path | None = None) -> "Classifier":
        """Verify a bundle folder (or read one model file with its metadata), choose an artifact, load it.

        ``fmt``: this format's artifact instead of the bundle's first choice (``bundle.resolve``);
        ``reference_kernels``: LiteRT's portable reference kernels (the kit's self-test), not the fast ones;
        ``serving``: a device serves it (``bundle.resolve``: a model file that failed its parity check is refused);
        ``site_profile``: where this device's site profile lives (default: ``site.json`` beside the bundle; the
        kit keeps it in the data folder, its bundle being read-only). ``site_path`` records it (the page writes
        there)."""
        from edge_runtime.backends import load_backend

        t0 = time.perf_counter()
        art = B.resolve(path, backend, verify, fmt, serving)
        be = load_backend(art.path, num_threads, reference_kernels=reference_kernels)
        clf = cls(be, art.metadata.for_format(art.key), parent=art.parent, name=art.path.name,
                  model_card=art.model_card, status=art.status, load_ms=(time.perf_counter() - t0) * 1000)
        clf.model_path, clf.format = art.path, art.key
        clf.site_path = Path(site_profile) if site_profile is not None else site.profile_path(path)
        clf.use_site_profile(site.find(path, clf.metadata, art.key, clf.site_path))
        return clf

    def use_site_profile(self, profile) -> None:
        """Apply a verified ``edge_runtime.site.SiteProfile`` (None: the artifact's own values again)."""
        self.site_profile = profile
        self.operating_point = profile.apply(self.metadata.operating_point) if profile else self.metadata.operating_point

    def __repr__(self):
        return f"Classifier({self.name}, backend={self.backend}, model={self.metadata.model_name})"

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw model outputs for one model-ready uint8 (size, size) image: (probs, features). With test-time
        views (``metadata.views``) the probabilities are the views' average and the features the film's own."""
        with self._lock:
            probs, feats = self._backend.run(image)
            if len(self.metadata.views) > 1:
                probs = V.combine([probs, *(self._backend.run(V.view(image, v))[0] for v in self.metadata.views[1:])])
            return probs, feats

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities (N, K) for model-ready uint8 images (N, size, size), averaged over the
        metadata's test-time views."""
        if not len(images):
            return np.zeros((0, len(self.metadata.labels)))
        with self._lock:
            return np.asarray(V.predict_batch(self._backend.run_batch, np.asarray(images), self.metadata.views))

    def input_check(self, image: np.ndarray, feats: np.ndarray | None,
                    x: np.ndarray | None = None) -> tuple[dict | None, float | None]:
        """(problem as {"code": ..., numbers} or None, embedding distance or None) for a decoded image, its model
        input ``x`` (for the orientation check) and its model features: the image checks, the orientation, then
        the embedding."""
        problem = scope.image_check(image, scope.min_side_for(self.metadata.image_size))
        if problem is None and x is not None:
            problem = orientation.check(x, self.metadata.orientation)
        distance = None
        if problem is None and self.scope and feats is not None:
            distance = scope.distance(feats.mean(axis=(0, 1)), self.scope)
            if distance > 1.0:
                problem = {"code": "oos_unlike_training", "distance": round(float(distance), 3)}
        return problem, distance

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
        op = self.operating_point  # read once: the web page may swap in a site profile meanwhile
        probs = op.calibrate(raw)
        problem, distance = self.input_check(image, feats, x)
        decision, code, args = decide_coded(probs, op, problem)
        top = int(np.argmax(probs))
        heat, grid = None, None
        if problem is None and feats is not None and self.head:
            grid = tuple(int(n) for n in feats.shape[:2])
            if H.fine_enough(grid):  # a 2x2 map says nothing about where: no heatmap, and the page says why
                heat = H.uncrop(H.class_activation_map(feats, self.head, top, meta.image_size), meta.preprocess.crop)
        t.append(time.perf_counter())
        steps = ("decode", "preprocess", "infer", "postprocess")
        timings = {s: round((t[i + 1] - t[i]) * 1000, 3) for i, s in enumerate(steps)}
        timings["total"] = round((t[-1] - t[0]) * 1000, 3)
        return Screening(probs={l: float(p) for l, p in zip(meta.labels, probs)}, label=meta.labels[top],
                         decision=decision, reason=reason_text(code, args), in_scope=problem is None,
                         scope_distance=distance, heatmap=heat, image=image, timings_ms=timings, name=name,
                         reason_code=code, reason_args=args, heatmap_grid=grid)
