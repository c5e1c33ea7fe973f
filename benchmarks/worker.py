"""One format, in its own process: ``python -m benchmarks.worker JOB.json``.

A process per format keeps the numbers clean: peak memory is that backend's alone, and libraries of one
runtime (TensorFlow's thread pools above all) do not slow another. The worker measures, in this order:

1. the import of the runtime and the model load (``Classifier.from_bundle(...)``: read, compile, one warm-up call);
2. single-image latency after warm-up, per thread count (``Classifier.predict`` on a model-ready image:
   input quantisation, invoke, output dequantisation), and throughput at batch 1;
3. end to end on one thread: a full-size PNG file to a decision and a heatmap (``Classifier.classify``), with
   its decode / preprocess / infer / postprocess breakdown;
4. the peak resident memory of the process so far (before the evaluation images are read);
5. the raw probabilities of the evaluation images, written for the parent to score.

Progress lines on stderr start with ``@@``; the result is a JSON file. The Keras baseline runs the same
steps through the same ``Classifier`` code with a small Keras backend (TensorFlow is imported only here).
"""
from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

STAGES = ("decode", "preprocess", "infer", "postprocess", "total")


def progress(text: str) -> None:
    print(f"@@ {text}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Current resident memory (Linux /proc; falls back to the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024, 1)


def percentiles(values_ms) -> dict:
    v = np.asarray(values_ms, np.float64)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "mean": float(v.mean()), "min": float(v.min()), "n": int(len(v))}


def time_calls(fn, warmup: int, iterations: int, budget_s: float | None) -> dict:
    """Latency percentiles (ms) of ``fn()`` after ``warmup`` calls; stops early past ``budget_s`` (at least 10
    timed calls). Throughput is timed calls over the wall time of the loop (batch 1, back to back).

    ``cpu_p50``: the median CPU time of the process per call (all its threads). On a machine shared with other
    work, wall-clock latency measures the scheduler as much as the model; CPU time does not, so at one thread
    it is the steadier estimate of what the call costs (with several threads it is their sum, not latency)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    start = time.perf_counter()
    for _ in range(iterations):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        if budget_s and time.perf_counter() - start > budget_s and len(times) >= 10:
            break
    wall = time.perf_counter() - start
    return {**percentiles(times), "throughput_ips": len(times) / wall if wall > 0 else float("nan"),
            "cpu_p50": float(np.percentile(cpu, 50)), "cpu_mean": float(np.mean(cpu))}


class KerasBackend:
    """The float Keras model behind the runtime's backend interface: ``run(uint8 HxW) -> (probs, features)``.

    ``call="function"`` runs a traced ``tf.function`` (graph mode, the fast way to call a Keras model for one
    image); ``"eager"`` calls ``model(x, training=False)`` directly."""

    name = "keras"

    def __init__(self, path: Path, num_threads: int | None, call: str = "function"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import train  # noqa: F401  (Keras 2 for TensorFlow: import before it)
        import tensorflow as tf

        if num_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(num_threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # already initialised in this process: keep what it has
                pass
        from train import keras_io

        self._io = keras_io
        self.model = keras_io.two_output_model(keras_io.load_model(path))
        self.input_shape = tuple(int(v) for v in self.model.input_shape[1:3])
        self.package = f"tensorflow {tf.__version__}"
        self.call = call
        if call == "function":
            self._fn = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        else:
            self._fn = lambda x: self.model(x, training=False)

    def run(self, image: np.ndarray):
        probs, feats = self._fn(image.reshape(1, *image.shape, 1).astype(np.float32))
        return probs.numpy()[0], feats.numpy()[0]

    def run_batch(self, images: np.ndarray) -> np.ndarray:
        return self._io.predict(self.model, images, batch=32)


def keras_classifier(model_path: Path, meta_path: Path, num_threads: int, call: str):
    """A ``Classifier`` over the Keras backend, so the baseline runs the same classify() code as the devices:
    the bundle's metadata with the float model's own operating point, heatmap weights and input check."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.formats import BASELINE
    from edge_runtime.metadata import ModelMetadata

    t0 = time.perf_counter()
    backend = KerasBackend(Path(model_path), num_threads, call)
    meta = ModelMetadata.load(meta_path).for_format(BASELINE)
    return Classifier(backend, meta, parent="float", name=Path(model_path).name,
                      load_ms=(time.perf_counter() - t0) * 1000)


def import_runtime(backend: str) -> tuple[float, str]:
    """Import the runtime library up front so model load time is not the first import; (ms, version)."""
    t0 = time.perf_counter()
    version = ""
    if backend == "litert":
        try:
            import ai_edge_litert.interpreter  # noqa: F401
            from importlib.metadata import version as v
            version = f"ai-edge-litert {v('ai-edge-litert')}"
        except ImportError:
            import tflite_runtime.interpreter  # noqa: F401
            version = "tflite-runtime"
    elif backend == "onnxruntime":
        import onnxruntime
        version = f"onnxruntime {onnxruntime.__version__}"
    elif backend == "openvino":
        import openvino
        version = f"openvino {openvino.__version__}"
    elif backend == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import train  # noqa: F401  (Keras 2 for TensorFlow: import before it)
        import tensorflow as tf
        version = f"tensorflow {tf.__version__}"
    return (time.perf_counter() - t0) * 1000, version


def load(job: dict, threads: int):
    if job["backend"] == "keras":
        return keras_classifier(Path(job["model"]), Path(job["metadata"]), threads, job.get("keras_call", "function"))
    from edge_runtime.classifier import Classifier

    return Classifier.from_bundle(job["model"], num_threads=threads)


def end_to_end(clf, image_path: str, warmup: int, iterations: int) -> dict:
    """classify(path) on one thread: the model's (the caller loaded it so) and OpenCV's (decode, resize)."""
    from edge_runtime.preprocess import opencv

    cv2 = opencv()
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _end_to_end(clf, image_path, warmup, iterations)
    finally:
        cv2.setNumThreads(before)


def _end_to_end(clf, image_path: str, warmup: int, iterations: int) -> dict:
    for _ in range(warmup):
        clf.classify(image_path)
    runs, cpu = [], []
    for _ in range(max(1, iterations)):
        c0 = time.process_time()
        runs.append(clf.classify(image_path))
        cpu.append((time.process_time() - c0) * 1000)
    out = {s: float(np.percentile([r.timings_ms[s] for r in runs], 50)) for s in STAGES}
    out["cpu_total"] = float(np.percentile(cpu, 50))
    out["total_p90"] = float(np.percentile([r.timings_ms["total"] for r in runs], 90))
    last = runs[-1]
    out.update(n=len(runs), decision=last.decision, heatmap=last.heatmap is not None, in_scope=last.in_scope,
               heatmap_grid=list(getattr(last, "heatmap_grid", None) or []),
               image_shape=list(last.image.shape) if last.image is not None else None)
    return out


def e2e(res: dict, clf, job: dict, threads: int) -> None:
    progress(f"end to end, {threads} thread{'s' if threads > 1 else ''}")
    try:
        res["e2e"] = {**end_to_end(clf, job["e2e_image"], max(1, job["warmup"] // 2), job["e2e_iterations"]),
                      "threads": threads}
    except Exception as exc:  # noqa: BLE001 - reported in the row, the rest of the format goes on
        res["e2e_error"] = f"{type(exc).__name__}: {exc}"[:300]


def run(job: dict, res: dict) -> dict:
    """Fill ``res`` step by step (so a late failure keeps what was measured before it)."""
    res.update(key=job["key"], backend=job["backend"], rss_start_mb=rss_mb(), latency={},
               load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    threads = [int(t) for t in job["threads"]]
    size = int(job["image_size"])
    images = np.load(job["images"], mmap_mode="r") if job.get("images") else None
    sample = np.array(images[0]) if images is not None and len(images) else \
        np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)

    progress("importing the runtime")
    res["import_ms"], res["runtime"] = import_runtime(job["backend"])
    res["rss_after_import_mb"] = rss_mb()
    clf = None
    for i, t in enumerate(threads):
        del clf
        gc.collect()
        progress(f"loading ({t} thread{'s' if t > 1 else ''})")
        clf = load(job, t)
        if i == 0:
            res["load_ms"] = clf.load_ms
            res["rss_after_load_mb"] = rss_mb()
        res.setdefault("load_ms_by_threads", {})[str(t)] = clf.load_ms
        progress(f"latency, {t} thread{'s' if t > 1 else ''}")
        res["latency"][str(t)] = time_calls(lambda: clf.predict(sample), job["warmup"], job["iterations"],
                                            job.get("budget_s"))
        if job.get("e2e_image") and (t == 1 or (i == 0 and job["backend"] == "keras")):
            # Keras: TensorFlow fixes its thread pools once per process, so its e2e uses this job's count
            e2e(res, clf, job, t)
    if job.get("e2e_image") and "e2e" not in res and "e2e_error" not in res:
        del clf
        gc.collect()
        clf = load(job, 1)
        e2e(res, clf, job, 1)
        del clf
        gc.collect()
        clf = load(job, threads[-1])
    res["peak_rss_mb"] = peak_rss_mb()
    res["package"] = clf.package
    if images is not None:
        progress(f"predicting {len(images)} evaluation images")
        t0 = time.perf_counter()
        probs = clf.predict_batch(np.asarray(images))
        res["predict_s"] = time.perf_counter() - t0
        np.save(job["probs_out"], np.asarray(probs, np.float32))
        res["probs"] = job["probs_out"]
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    res: dict = {"key": job.get("key")}
    try:
        run(job, res)
    except Exception as exc:  # noqa: BLE001 - a failure is a row: write it (and what came before) for the parent
        traceback.print_exc()
        res["error"] = f"{type(exc).__name__}: {exc}"[:600]
    Path(job["out"]).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
