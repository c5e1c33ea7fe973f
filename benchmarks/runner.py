"""Run the benchmark: find the bundle, the Keras baseline and the evaluation images, run one worker subprocess
per format, score and compare the results, write the report and apply the gates."""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import quality as Q
from benchmarks.sysinfo import load_average, machine_info
from edge_runtime import bundle as B
from edge_runtime import metrics as M
from edge_runtime.cli_common import rate_text
from edge_runtime.formats import BASELINE, FORMATS
from edge_runtime.metadata import ModelMetadata

ROOT = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """The benchmark cannot start (no bundle, no images, ...); the message says what to pass."""


@dataclass
class Options:
    out: Path
    bundle: Path | None = None
    run_dir: Path | None = None
    data: Path | None = None
    split: str = "test"
    formats: list[str] | None = None  # None: what the bundle holds + the baseline; ["-keras_fp32"]: without it
    threads: list[int] = field(default_factory=lambda: [1, 2])
    warmup: int = 10
    iterations: int = 100
    e2e_iterations: int = 30
    budget_s: float = 30.0
    e2e_size: int = 1024
    keras_call: str = "function"
    timeout_s: float = 900.0
    min_accuracy: float | None = None
    max_latency_ms: float | None = None
    plots: bool = True


class Progress:
    """The benchmark rows' progress on stderr: a tqdm bar (rate and time left) on a terminal, plain lines with the
    same figures otherwise (a log file gets no carriage returns)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream, self.t0 = total, 0, stream, time.time()
        self.label, self._last = "", ""
        self.bar = None
        if stream.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="format", file=stream, dynamic_ncols=True)
            except ImportError:
                pass

    def show(self, label: str, detail: str = "", advance: bool = False) -> None:
        if advance:
            self.done += 1
        self.label = label or self.label
        text = f"{self.label}{': ' + detail if detail else ''}"
        if self.bar is not None:
            self.bar.set_postfix_str(text[:80], refresh=not advance)
            if advance:
                self.bar.update()
                if self.done >= self.total:
                    self.bar.close()
            return
        if text != self._last:
            self.stream.write(f"[{rate_text(self.done, self.total, time.time() - self.t0)}] {text}\n")
            self.stream.flush()
        self._last = text


# --- inputs ---------------------------------------------------------------------------------------------
def _resolve_run_dir(bundle: Path, status: dict, meta: ModelMetadata) -> Path | None:
    """The bundle's own training run (``evaluate.bundle_run``, the lookup every benchmark shares), or None when
    the bundle names none or it is not on this machine (the films then come from --data). A folder of that name
    holding another split is an error: its test side would hold films the model trained on."""
    from benchmarks.study.evaluate import RunMismatch, RunNotFound, bundle_run

    try:
        return bundle_run(bundle, status, meta)
    except RunNotFound:
        return None
    except RunMismatch as exc:
        raise BenchmarkError(f"{exc}; give --run the bundle's own training run") from None


def convert_run(run_dir: Path, formats: list[str], out: Path, progress: Progress | None = None) -> Path:
    """``--run`` without ``--bundle``: convert the run (``python -m convert``) into OUT/bundle, or reuse it."""
    dest = out / "bundle"
    wanted = [k for k in formats if FORMATS[k].on_device]
    status = B.read_status(dest)
    have = set(status.get("formats", {}))
    same_run = status.get("run_dir") and Path(status["run_dir"]).resolve() == run_dir.resolve()
    if same_run and set(wanted) <= have and (dest / "metadata.json").is_file():
        print(f"reusing the bundle {dest} converted from {run_dir}", file=sys.stderr)
        return dest
    print(f"converting {run_dir} -> {dest} ({', '.join(wanted)}); this takes minutes", file=sys.stderr)
    # no --recipe: the refer threshold is fitted for 90% accuracy on the films kept, not a recipe's refer share
    cmd = [sys.executable, "-m", "convert", str(run_dir), "--formats", ",".join(wanted), "--out", str(dest),
           "--force"]
    proc = subprocess.run(cmd, env=_env(), stdout=sys.stderr, stderr=subprocess.STDOUT)
    if not (dest / "bundle.json").is_file():
        raise BenchmarkError(f"conversion of {run_dir} failed (exit {proc.returncode}); see the log above")
    return dest


@dataclass
class EvalSet:
    images: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    paths: list[str]
    description: str
    skipped: list[tuple[str, str]]


def eval_images(meta: ModelMetadata, run_dir: Path | None, data: Path | None, split: str,
                cache_dir: Path) -> EvalSet:
    """The images every format is scored on, through the one preprocessing (``train.data.load_arrays``).

    ``--data``: every image found there, less those the run trained or calibrated on (when its split is known);
    otherwise the run's own patient-level split (``--split``, default the test side)."""
    from train import data as D

    split_file = run_dir / "split.csv" if run_dir else None
    parts = D.load_split(split_file) if split_file and split_file.is_file() else None
    if data is not None:
        samples = D.scan(data, tuple(meta.labels))
        desc = f"{data}: {len(samples)} images"
        if parts is not None:  # by path or by content: a copy of the training films is not new data
            seen = {id(s) for s in D.seen_by(run_dir, samples)}
            kept = [s for s in samples if id(s) not in seen]
            if len(kept) < len(samples):
                desc += f", less {len(samples) - len(kept)} the model was trained or calibrated on"
            samples = kept
    elif parts is not None:
        sides = ["train", "val", "test"] if split == "all" else [split]
        samples = [s for side in sides for s in parts.get(side, [])]
        desc = f"the {split} split of {run_dir} ({split_file.name}, patient-level)"
    else:
        raise BenchmarkError("no evaluation images: pass --data DIR, or --run RUN_DIR (its split.csv gives the "
                             "test images); the bundle's run folder was not found")
    if not samples:
        raise BenchmarkError(f"no evaluation images in {desc}")
    arrays = D.load_arrays(samples, tuple(meta.labels), meta.preprocess, cache_dir)
    if not len(arrays.images):
        raise BenchmarkError(f"none of the {len(samples)} evaluation images could be read ({desc})")
    return EvalSet(arrays.images, arrays.labels, arrays.sources, [s.path for s in arrays.samples],
                   f"{desc}; {len(arrays.images)} images", arrays.failed)


def make_e2e_image(path: str, size: int, dest: Path, noise: float = 1.0) -> Path:
    """A full-size PNG for the end-to-end measurement: a real evaluation radiograph scaled to size x size, with
    faint grain (sigma ``noise`` grey levels, fixed seed) so that it compresses like a real film rather than a
    smooth upscale: about 0.4 MB at 1024 px, the average size of an NIH ChestX-ray14 PNG."""
    import cv2

    from edge_runtime.preprocess import decode_image

    img = decode_image(path)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    if noise:
        img += np.random.default_rng(0).normal(0, noise, img.shape).astype(np.float32)
    img = img.round().clip(0, 255).astype(np.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dest), img)
    return dest


# --- per-format checks and the worker subprocess ---------------------------------------------------------
def artifact_files(path: Path) -> list[Path]:
    files = [path]
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    return files


def listed_sums(bundle: Path) -> dict[str, str] | None:
    sums = bundle / B.SUMS
    if not sums.is_file():
        return None
    out = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            out[name.strip()] = digest.strip()
    return out


def check_artifact(key: str, bundle: Path, run_dir: Path | None, sums: dict | None,
                   members: int = 0) -> tuple[Path | None, str]:
    """(model path, "") or (None, why this format cannot run). The Keras baseline is the bundle's own
    ``keras_fp32`` file where it holds one, else the run's float model; an ensemble of ``members`` trainings
    has no single run whose model would stand for it."""
    f = FORMATS[key]
    if key == BASELINE and not (bundle / f.filename).is_file():
        if members:
            return None, (f"an ensemble of {members} trainings: its Keras float model is the bundle's own "
                          f"{f.filename} (convert with --formats ...,{BASELINE})")
        if run_dir is None or not (run_dir / "model_float.keras").is_file():
            return None, "no Keras float model: pass --run RUN_DIR (the training run of this bundle)"
        return run_dir / "model_float.keras", ""
    path = bundle / f.filename
    if not path.is_file():
        return None, f"not in the bundle (convert with: python -m convert RUN --formats {key} --out {bundle})"
    for p in artifact_files(path):
        if not p.is_file():
            return None, f"{p.name} missing"
        if sums is not None and p.name in sums and B.sha256(p) != sums[p.name]:
            return None, f"{p.name}: checksum mismatch with {B.SUMS} (file changed or corrupt)"
    return path, ""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _concrete(formats: list[str] | None) -> list[str]:
    """The formats to convert for ``--run`` without a bundle: those asked for, or all of them."""
    if formats is None or formats == ["-" + BASELINE]:
        return [k for k, f in FORMATS.items() if f.on_device]
    return formats


def run_worker(job: dict, work: Path, timeout_s: float, progress: Progress) -> dict:
    """One worker subprocess; a crash, a timeout or an exception inside becomes ``{"error": ...}``."""
    name = f"{job['key']}_{'-'.join(map(str, job['threads']))}"
    job_path = work / f"job_{name}.json"
    job["out"] = str(work / f"result_{name}.json")
    job_path.write_text(json.dumps(job))
    Path(job["out"]).unlink(missing_ok=True)
    tail = collections.deque(maxlen=40)
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", str(job_path)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")

    def pump():
        for line in proc.stderr:
            if line.startswith("@@ "):
                progress.show("", line[3:].strip())
            elif line.strip():
                tail.append(line.rstrip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(5)
        return {"error": f"timed out after {timeout_s:.0f} s (--timeout)"}
    reader.join(5)
    out = Path(job["out"])
    if out.is_file():
        res = json.loads(out.read_text())
        if res.get("error"):
            res["log_tail"] = list(tail)[-15:]
        return res
    why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    last = next((ln for ln in reversed(tail) if ln.strip()), "")
    return {"error": f"worker {why}{': ' + last[-300:] if last else ''}", "log_tail": list(tail)[-15:]}


def merge(results: list[dict]) -> dict:
    """Keras runs one worker per thread count (TensorFlow fixes its pools per process): merge them."""
    out: dict = {}
    for r in results:
        lat = {**out.get("latency", {}), **r.get("latency", {})}
        loads = {**out.get("load_ms_by_threads", {}), **r.get("load_ms_by_threads", {})}
        for k, v in r.items():
            if k not in out or k in ("probs", "e2e", "error"):
                out[k] = v
        out["latency"], out["load_ms_by_threads"] = lat, loads
        out["peak_rss_mb"] = max(out.get("peak_rss_mb", 0) or 0, r.get("peak_rss_mb", 0) or 0)
    return out


def jobs_for(key: str, model: Path, opts: Options, bundle: Path, images: Path, e2e: Path | None,
             size: int, work: Path) -> list[dict]:
    f = FORMATS[key]
    base = {"key": key, "backend": f.backend, "model": str(model.resolve()),
            "metadata": str((bundle / "metadata.json").resolve()), "image_size": size, "warmup": opts.warmup,
            "iterations": opts.iterations, "e2e_iterations": opts.e2e_iterations, "budget_s": opts.budget_s,
            "keras_call": opts.keras_call, "probs_out": str(work / f"probs_{key}.npy")}
    if f.backend != "keras":
        return [{**base, "threads": opts.threads, "images": str(images), "e2e_image": str(e2e) if e2e else None}]
    e2e_at = 1 if 1 in opts.threads else opts.threads[0]
    return [{**base, "threads": [t], "images": str(images) if i == len(opts.threads) - 1 else None,
             "e2e_image": str(e2e) if e2e and t == e2e_at else None} for i, t in enumerate(opts.threads)]


# --- the run -----------------------------------------------------------------------------------------------
def run(opts: Options) -> dict:
    from benchmarks import report as R

    out = Path(opts.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    run_dir = Path(opts.run_dir) if opts.run_dir else None
    if opts.bundle is None and run_dir is None:
        raise BenchmarkError("pass --bundle BUNDLE or --run RUN_DIR")
    bundle = Path(opts.bundle) if opts.bundle else convert_run(run_dir, _concrete(opts.formats), out)
    if not (bundle / "metadata.json").is_file():
        raise BenchmarkError(f"{bundle}: not a bundle (no metadata.json); make one with python -m convert")
    meta = ModelMetadata.load(bundle / "metadata.json")
    status = B.read_status(bundle)
    if run_dir is None:
        run_dir = _resolve_run_dir(bundle, status, meta)
    elif (run_dir / "split.csv").is_file():
        from benchmarks.study.evaluate import run_mismatch

        if problem := run_mismatch(run_dir, meta):  # its test side would hold films the model trained on
            raise BenchmarkError(problem + "; give --run the bundle's own training run")
    sums = listed_sums(bundle)
    labels = list(meta.labels)
    held = [k for k, f in FORMATS.items() if f.on_device and (bundle / f.filename).is_file()]
    if opts.formats is None or opts.formats == ["-" + BASELINE]:
        opts.formats = ([BASELINE] if opts.formats is None else []) + held
    not_held = [k for k, f in FORMATS.items() if f.on_device and k not in held and k not in opts.formats]

    ev = eval_images(meta, run_dir, Path(opts.data) if opts.data else None, opts.split,
                     (run_dir / "cache") if run_dir else out / "cache")
    images_path = work / "images.npy"
    np.save(images_path, ev.images)
    e2e = make_e2e_image(ev.paths[0], opts.e2e_size, work / f"e2e_{opts.e2e_size}.png") if opts.e2e_size else None
    print(f"benchmark of {bundle} ({meta.model_name}, {meta.image_size} px) on {ev.description}", file=sys.stderr)

    progress = Progress(len(opts.formats))
    rows, details = [], {}
    for key in opts.formats:
        f = FORMATS[key]
        progress.show(key, "checking")
        row = {"format": key, "backend": f.backend, "int8": f.int8, "parent": f.parent, "status": "ok",
               "error": "", "notes": ""}
        conv = status.get("formats", {}).get(key, {})
        if conv.get("parent") and key != BASELINE:  # what this artifact was made from, as convert recorded it
            row["parent"] = conv["parent"]
        if key in status.get("failed_formats", []):
            row["notes"] = (f"marked failed by convert (agreement with its Keras parent "
                            f"{100 * conv.get('agreement', float('nan')):.1f}%)" if "agreement" in conv
                            else f"marked failed by convert: {conv.get('error', '')}")[:200]
        model, why = check_artifact(key, bundle, run_dir, sums, len(status.get("members") or ()))
        if model is None:
            row.update(status="failed", error=why)
            rows.append(row)
            progress.show(key, "failed", advance=True)
            continue
        row["file"] = str(model)
        row["size_mb"] = sum(p.stat().st_size for p in artifact_files(model)) / 1e6
        res = merge([run_worker(j, work, opts.timeout_s, progress)
                     for j in jobs_for(key, model, opts, bundle, images_path, e2e, meta.image_size, work)])
        details[key] = {"speed": res}
        if res.get("error"):
            row.update(status="failed", error=res["error"])
        if res.get("probs") and Path(res["probs"]).is_file():
            probs = np.load(res["probs"])
            if probs.shape == (len(ev.labels), len(labels)):
                details[key]["probs"] = probs
            else:
                row.update(status="failed", error=f"model gave probabilities of shape {probs.shape}")
        rows.append(row)
        progress.show(key, row["status"], advance=True)
    machine["load_average_end"] = load_average()

    score(rows, details, ev, meta, labels, opts.threads)
    result = {"machine": machine, "bundle": str(bundle), "run_dir": str(run_dir) if run_dir else None,
              "model": {"name": meta.model_name, "version": meta.model_version, "image_size": meta.image_size,
                        "labels": labels, "temperature": meta.temperature, "thresholds": meta.thresholds,
                        "synthetic": meta.synthetic},
              "data": {"description": ev.description, "n": int(len(ev.labels)),
                       "by_source": {s: int((ev.sources == s).sum()) for s in sorted(set(ev.sources.tolist()))},
                       "skipped": ev.skipped},
              "not_in_bundle": not_held,
              "options": {"formats": opts.formats, "threads": opts.threads, "warmup": opts.warmup,
                          "iterations": opts.iterations, "e2e_iterations": opts.e2e_iterations,
                          "e2e_size": opts.e2e_size, "keras_call": opts.keras_call,
                          "e2e_png_kb": round(e2e.stat().st_size / 1024) if e2e else None,
                          "min_accuracy": opts.min_accuracy, "max_latency_ms": opts.max_latency_ms},
              "rows": rows, "details": details}
    result["gates"] = gates(rows, opts.min_accuracy, opts.max_latency_ms, opts.threads)
    R.write_all(result, out, ev, plots=opts.plots)
    # the scratch (the evaluation films as an array, a film enlarged for the end-to-end timing, the workers' jobs
    # and outputs) goes: a benchmark written into docs/ must not carry patients' films into the repository
    shutil.rmtree(work, ignore_errors=True)
    return result


def score(rows: list[dict], details: dict, ev: EvalSet, meta: ModelMetadata, labels: list[str],
          threads: list[int]) -> None:
    """Quality per format, agreement with the float reference, INT8 flags, speed columns and speed-ups."""
    with_probs = [r for r in rows if "probs" in details.get(r["format"], {})]
    ref = next((r for r in with_probs if r["format"] == BASELINE), None) or \
        next((r for r in with_probs if not r["int8"]), None)
    ref_probs = details[ref["format"]]["probs"] if ref else None
    for row in with_probs:
        d = details[row["format"]]
        own = meta.for_format(row["format"])  # each artifact's own temperature and thresholds (convert fits them)
        row["temperature"] = own.temperature
        rep = Q.evaluate(ev.labels, d["probs"], ev.sources, labels, own.temperature, own.thresholds)
        d["quality"] = rep
        row.update(Q.flat(rep["pooled"], labels))
        if ref is not None:
            cmp = M.agreement(d["probs"], ref_probs)
            row["agreement_vs_float"], row["max_prob_diff_vs_float"] = cmp["agreement"], cmp["max_prob_diff"]
            row["float_reference"] = ref["format"]
    for row in rows:
        speed = details.get(row["format"], {}).get("speed", {})
        row["load_ms"] = speed.get("load_ms")
        for t in threads:
            lat = speed.get("latency", {}).get(str(t), {})
            for p in ("p50", "p90", "p99"):
                row[f"{p}_ms_{t}t"] = lat.get(p)
            row[f"throughput_ips_{t}t"] = lat.get("throughput_ips")
            row[f"cpu_ms_{t}t"] = lat.get("cpu_p50")
        e2e = speed.get("e2e", {})
        for s in ("total", "decode", "preprocess", "infer", "postprocess", "cpu_total"):
            row[f"e2e_{s}_ms"] = e2e.get(s)
        if speed.get("e2e_error"):
            row["notes"] = "; ".join(x for x in (row["notes"], f"end to end failed: {speed['e2e_error']}") if x)
        row["peak_rss_mb"] = speed.get("peak_rss_mb")
        row["load_average"] = speed.get("load_average")
        row["runtime"] = speed.get("package") or speed.get("runtime")
    base = next((r for r in rows if r["format"] == BASELINE and r["status"] == "ok"), None)
    for row in rows:
        for t in threads:
            for col, src in ((f"speedup_{t}t", f"p50_ms_{t}t"), (f"cpu_speedup_{t}t", f"cpu_ms_{t}t")):
                b, v = (base or {}).get(src), row.get(src)
                row[col] = b / v if b and v else None
        b, v = (base or {}).get("e2e_total_ms"), row.get("e2e_total_ms")
        row["e2e_speedup"] = b / v if b and v else None
    for row in with_probs:
        if row["format"] == (ref or {}).get("format"):
            continue
        flags = Q.int8_flags(row, ref)
        row["flags"] = "; ".join(flags)
        if flags and row["status"] == "ok":
            row["status"] = "FLAG"


def best_p50(row: dict, threads: list[int]) -> float | None:
    vals = [row.get(f"p50_ms_{t}t") for t in threads]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def gates(rows: list[dict], min_accuracy: float | None, max_latency_ms: float | None,
          threads: list[int]) -> dict:
    """Every format except the Keras baseline must pass: accuracy >= min, best p50 latency <= max, no error."""
    failures = []
    if min_accuracy is None and max_latency_ms is None:
        return {"active": False, "passed": True, "failures": []}
    for row in rows:
        if row["format"] == BASELINE:
            continue
        key = row["format"]
        if row["status"] == "failed":
            failures.append(f"{key}: failed ({row['error']})")
            continue
        acc = row.get("accuracy")
        if min_accuracy is not None and (acc is None or not acc >= min_accuracy):
            failures.append(f"{key}: accuracy {acc if acc is None else round(acc, 4)} < {min_accuracy}")
        lat = best_p50(row, threads)
        if max_latency_ms is not None and (lat is None or lat > max_latency_ms):
            failures.append(f"{key}: p50 latency {lat if lat is None else round(lat, 2)} ms > {max_latency_ms} ms")
    return {"active": True, "passed": not failures, "failures": failures,
            "min_accuracy": min_accuracy, "max_latency_ms": max_latency_ms}
