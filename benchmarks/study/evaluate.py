"""Measurements of the model-selection study (``benchmarks.study``): every figure from the device runtime
(``edge_runtime``) on the INT8 artifact, except the shortcut-audit controls, which are scored as trained
(Keras float; they are measurements, never converted)."""
from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from edge_runtime import formats as F
from edge_runtime import metrics as M
from edge_runtime import operating_point as OP
from edge_runtime.classifier import Classifier
from edge_runtime.metadata import ModelMetadata
from edge_runtime.operating_point import TB, calibrate
from edge_runtime.preprocess import PreprocessConfig, decode_image, frame_mask, prepare

NORMAL, PNEUMONIA = "normal", "pneumonia"
SCORED = F.DEPLOYED  # the artifact every candidate is scored as
TIE_AUC = 0.01  # candidates within this validation score of the best are tied: the faster one wins


def jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return str(v)


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def pair_auc(y, probs, labels, pos: str = PNEUMONIA, neg: str = NORMAL) -> float:
    """AUC of ``pos`` against ``neg`` among the images of those two classes only (score p_pos / (p_pos + p_neg))."""
    if pos not in labels or neg not in labels:
        return float("nan")
    ip, ineg = labels.index(pos), labels.index(neg)
    y = np.asarray(y)
    m = (y == ip) | (y == ineg)
    if not m.any():
        return float("nan")
    score = probs[m, ip] / np.maximum(probs[m, ip] + probs[m, ineg], 1e-12)
    return M.binary_auc(y[m] == ip, score)


def tb_auc(y, probs, labels) -> float:
    if TB not in labels:
        return float("nan")
    i = labels.index(TB)
    return M.binary_auc(np.asarray(y) == i, probs[:, i])


def pair_source(y, sources, labels, classes=(NORMAL, PNEUMONIA)) -> str | None:
    """The data source that holds films of both ``classes`` (the most of them): the one place where normal vs
    pneumonia is not confounded by the source. Read from the data, never assumed (None when no source has both)."""
    if any(c not in labels for c in classes):
        return None
    y, sources = np.asarray(y), np.asarray(sources)
    both = {s: min(int(((sources == s) & (y == labels.index(c))).sum()) for c in classes) for s in set(sources.tolist())}
    both = {s: n for s, n in both.items() if n > 0}
    return max(sorted(both), key=both.get) if both else None


def summarise(y, raw, sources, labels, temperature: float = 1.0, thresholds: dict | None = None,
              pneumonia_threshold: float | None = None) -> dict:
    """The study's figures for one set of predictions: pooled and per source, calibrated with ``temperature``;
    the TB rule and the refer rule at the stored ``thresholds``; the pneumonia operating point fitted on
    validation (``operating_point.pneumonia_point``) when its threshold is given."""
    y, sources = np.asarray(y, int), np.asarray(sources)
    cal = calibrate(raw, temperature)  # float64, as convert fitted the thresholds
    rep = M.report_by_source(y, cal, sources, labels)
    pair = pair_source(y, sources, labels)
    out = {"n": int(len(y)), "accuracy": rep["pooled"]["accuracy"], "macro_auc": rep["pooled"]["macro_auc"],
           "macro_f1": rep["pooled"]["macro_f1"], "tb_auc": tb_auc(y, cal, labels), "pair_source": pair,
           "pair_auc": pair_auc(y[sources == pair], cal[sources == pair], labels) if pair else float("nan"),
           "ece_raw": M.expected_calibration_error(y, raw) if len(y) else float("nan"),
           "ece": rep["pooled"]["ece"], "confidence_gap": rep["pooled"]["confidence_gap"], "by_source": {},
           "per_class": {}}
    for name in labels:
        pc = rep["pooled"]["per_class"][name]
        out["per_class"][name] = {"support": pc["support"], "sensitivity": pc["sensitivity"],
                                  "specificity": pc["specificity"], "auc": pc["auc"]}
    for src, r in rep["by_source"].items():
        out["by_source"][src] = {"n": r["n"], "accuracy": r["accuracy"], "macro_auc": r["macro_auc"],
                                 "sensitivity": {k: v["sensitivity"] for k, v in r["per_class"].items()
                                                 if v["support"]}}
    thresholds = thresholds or {}
    if (tb := OP.tb_at_threshold(y, cal, labels, thresholds.get(TB))) is not None:
        out["tb_at_threshold"] = tb
    if (refer := OP.refer_rule(y, cal, labels, thresholds)) is not None:
        out["refer_rule"] = refer
    if (pn := OP.pneumonia_at_threshold(y, cal, labels, pneumonia_threshold)) is not None:
        out["pneumonia_at_threshold"] = pn
    return out


class RunMismatch(ValueError):
    """The run folder a bundle names is not the run its model was trained on (another fold, seed or data)."""


class RunNotFound(RunMismatch):
    """No folder holding a split is found where a bundle says its training run is (or it names none)."""


def run_mismatch(run: Path, meta: ModelMetadata) -> str:
    """Why ``run``'s split is not the one ``meta``'s model was trained and calibrated on ('' when it is): its
    data hash, fold, folds and seed, and the films on each side, against the bundle's metadata. Scoring a
    model on another split's test side scores it on films it trained on."""
    from train import data as D

    if not (run / "split.csv").is_file():
        return f"{run} holds no split.csv"
    want, problems = meta.split or {}, []
    try:
        run_meta = json.loads((run / "metadata.json").read_text()) if (run / "metadata.json").is_file() else {}
        cfg = json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").is_file() else {}
    except (OSError, ValueError) as exc:
        return f"{run}: its metadata cannot be read ({exc})"
    if run_meta.get("data_hash") and meta.data_hash and run_meta["data_hash"] != meta.data_hash:
        problems.append(f"data hash {run_meta['data_hash']} against the bundle's {meta.data_hash}")
    for key in ("fold", "folds", "seed"):
        mine, theirs = want.get(key), cfg.get(key)
        if mine is not None and theirs is not None and str(mine) != str(theirs):
            problems.append(f"{key} {theirs} against the bundle's {mine}")
    counts = {k: len(v) for k, v in D.load_split(run / "split.csv").items() if v}
    wanted = {k: int(v) for k, v in (want.get("counts") or {}).items() if v}
    if wanted and counts != wanted:
        problems.append(f"split sizes {counts} against the bundle's {wanted}")
    return f"{run} is not the run this bundle was made from: " + "; ".join(problems) if problems else ""


def bundle_run(bundle: Path, status: dict, meta: ModelMetadata) -> Path:
    """The training run a bundle names (``bundle.json`` run_dir, as given to convert): as written (from the
    folder convert ran in), else below each folder above the bundle; the first that holds the bundle's own
    split. RunMismatch when none does (a run of the same name from another fold or data is refused, not used),
    RunNotFound (a RunMismatch too) when no folder of that name holds a split at all."""
    text = status.get("run_dir") or ""
    if not text:
        raise RunNotFound(f"{bundle}: bundle.json names no training run (run_dir)")
    tried, why = [], []
    bases = (Path.cwd(), *Path(bundle).resolve().parents)
    # as written (from the folder convert ran in or any folder above the bundle), then a run moved beside the bundle
    for cand in (*(Path(text) if Path(text).is_absolute() else base / text for base in bases),
                 Path(bundle).resolve().parent / Path(text).name):
        if cand in tried:
            continue
        tried.append(cand)
        if (cand / "split.csv").is_file():
            if not (problem := run_mismatch(cand, meta)):
                return cand
            why.append(problem)
    if why:
        raise RunMismatch(f"{bundle}: its training run {text} is not found with the bundle's split ({'; '.join(why)})")
    raise RunNotFound(f"{bundle}: its training run {text} is not found (looked from {Path.cwd()} and the folders "
                      f"above the bundle)")


def _split_arrays(run: Path, meta: ModelMetadata):
    from train import data as D

    if problem := run_mismatch(run, meta):
        raise RunMismatch(problem)
    parts = D.load_split(run / "split.csv")
    return {side: D.load_arrays(parts[side], meta.labels, meta.preprocess, run / "cache")
            for side in ("val", "test") if parts.get(side)}


def _keras_probs(run: Path, images: np.ndarray) -> np.ndarray:
    from train import keras_io as K

    return K.predict(K.load_model(run / ("model_qat.h5" if (run / "model_qat.h5").is_file() else "model_float.keras")),
                     images)


def latency_ms(clf: Classifier, image: np.ndarray, iterations: int = 40) -> dict:
    from benchmarks.worker import time_calls

    return time_calls(lambda: clf.predict(image), warmup=5, iterations=iterations, budget_s=None)


def evaluate_experiment(exp, run: Path, bundle: Path | None) -> dict:
    """Validation and test figures of one experiment: the INT8 artifact through the runtime when converted,
    else (controls) the Keras model as trained; plus the training log's figures."""
    meta = ModelMetadata.load(run / "metadata.json")
    labels = list(meta.labels)
    arrays = _split_arrays(run, meta)
    row = {"name": exp.name, "role": exp.role, "label": exp.label, "recipe": exp.recipe, "keep": exp.keep,
           "preprocess": meta.preprocess.describe(), "train_metrics": json.loads((run / "metrics.json").read_text()),
           "train_seconds": json.loads((run / "train_config.json").read_text()).get("wall_seconds")}
    hist = run / "history.csv"
    row["epochs_run"] = sum(1 for _ in hist.open()) - 1 if hist.is_file() else None
    if bundle is None:
        row["artifact"] = "keras (float)" if exp.keep != "all" else "keras (QAT)"
        for side, a in arrays.items():
            row[side] = summarise(a.labels, _keras_probs(run, a.images), a.sources, labels)
        return row
    model = bundle / F.FORMATS[SCORED].filename
    clf = Classifier.from_bundle(model, num_threads=1)
    row["artifact"] = SCORED
    row["size_mb"] = model.stat().st_size / 1e6
    bmeta = clf.metadata  # the INT8 artifact's own calibration
    row["temperature"] = bmeta.temperature
    row["thresholds"] = dict(bmeta.thresholds)
    status = json.loads((bundle / "bundle.json").read_text())
    fmt = status.get("formats", {}).get(SCORED, {})
    row["agreement_vs_parent"] = fmt.get("agreement")  # top-1 agreement with the Keras QAT parent, validation
    for side, a in arrays.items():
        raw = clf.predict_batch(a.images)
        row[side] = summarise(a.labels, raw, a.sources, labels, bmeta.temperature, bmeta.thresholds)
    row["latency_ms_1thread"] = latency_ms(clf, arrays["test"].images[0])
    return row


def selection_score(row: dict) -> float:
    """What the default is chosen on, from VALIDATION films only: the INT8 artifact's macro-AUC on the films as
    they are and on the same films as simulated site B would make them (mean of the two), because the model
    must work at a clinic whose X-ray unit it never saw. Without the site-B figure: the plain macro-AUC."""
    auc = _nan(row.get("val", {}).get("macro_auc"))
    shifted = _nan(row.get("val_site_b", {}).get("macro_auc"))
    return auc if math.isnan(shifted) else (auc + shifted) / 2


def choose_default(rows: dict, candidates: list[str]) -> str | None:
    """The candidate with the best validation ``selection_score`` of its INT8 artifact; candidates within
    ``TIE_AUC`` of it are tied and the fastest of them wins (a clinic's Raspberry Pi pays for every ms).
    One row per candidate; over several seeds see ``ranking.rank``, which this calls with one seed."""
    from benchmarks.study.ranking import rank

    return rank({n: [rows[n]] for n in candidates if n in rows}, candidates)[0]


# --- site shift -------------------------------------------------------------------------------------------

def _marker(img: np.ndarray) -> np.ndarray:
    import cv2

    out = img.copy()
    h, w = out.shape
    s = h / 256
    cv2.putText(out, "R", (int(w * 0.80), int(h * 0.14)), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * s, 255, max(1, int(3 * s)))
    cv2.rectangle(out, (int(w * 0.03), int(h * 0.88)), (int(w * 0.42), int(h * 0.97)), 235, -1)
    cv2.putText(out, "PORTABLE AP", (int(w * 0.05), int(h * 0.945)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * s, 20,
                max(1, int(s)))
    return out


def _border(img: np.ndarray, frac: float = 0.08) -> np.ndarray:
    """Collimation: the film shrunk inside a black frame (another site's field size and padding)."""
    import cv2

    h, w = img.shape
    ph, pw = int(h * frac), int(w * frac)
    inner = cv2.resize(img, (w - 2 * pw, h - 2 * ph), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(inner, ph, ph, pw, pw, cv2.BORDER_CONSTANT, value=0)


def _gamma(img: np.ndarray, g: float) -> np.ndarray:
    lut = (255 * (np.arange(256) / 255.0) ** g).round().astype(np.uint8)
    return lut[img]


def _contrast(img: np.ndarray, k: float = 0.6, offset: float = 30) -> np.ndarray:
    return np.clip((img.astype(np.float32) - 128) * k + 128 + offset, 0, 255).round().astype(np.uint8)


def _noise_blur(img: np.ndarray, seed: int) -> np.ndarray:
    import cv2

    x = cv2.GaussianBlur(img, (0, 0), 1.0).astype(np.float32)
    x += np.random.default_rng(seed).normal(0, 6, x.shape)
    return x.round().clip(0, 255).astype(np.uint8)


SHIFTS = {
    "none": lambda im, i: im,
    "darker (gamma 1.6)": lambda im, i: _gamma(im, 1.6),
    "brighter (gamma 0.6)": lambda im, i: _gamma(im, 0.6),
    "low contrast": lambda im, i: _contrast(im),
    "black collimation border": lambda im, i: _border(im),
    "burnt-in markers": lambda im, i: _marker(im),
    "blur + noise": _noise_blur,
    "site B (all of it)": lambda im, i: _noise_blur(_marker(_border(_gamma(im, 1.3))), i),
}


SITE_B = "site B (all of it)"


def site_shift(bundle: Path, side: str = "test", shifts: tuple[str, ...] | None = None, fmt: str = SCORED) -> dict:
    """Figures of the bundle's ``fmt`` artifact (default: its LiteRT INT8 model) on one split side (``test`` for
    the report, ``val`` for choosing) with each simulated site change (default: all of ``SHIFTS``) applied to the
    decoded film."""
    from train import data as D

    clf = Classifier.from_bundle(bundle / F.FORMATS[fmt].filename, num_threads=2)
    meta = clf.metadata  # the artifact's own temperature and thresholds
    labels = list(meta.labels)
    run = Path(json.loads((bundle / "bundle.json").read_text()).get("run_dir", ""))
    split = bundle / "split.csv" if (bundle / "split.csv").is_file() else run / "split.csv"
    films, y, src = [], [], []
    for s in D.load_split(split)[side]:
        try:
            films.append(decode_image(s.path))
        except Exception:  # noqa: BLE001 - an unreadable film is simply not in this table
            continue
        y.append(labels.index(s.label))
        src.append(s.source)
    y, src = np.array(y), np.array(src)
    out = {}
    for name in shifts or tuple(SHIFTS):
        fn = SHIFTS[name]
        raw = np.stack([clf.predict(prepare(fn(im, i), meta.preprocess))[0] for i, im in enumerate(films)])
        r = summarise(y, raw, src, labels, meta.temperature, meta.thresholds)
        cal = calibrate(raw, meta.temperature)
        normal = (src == r["pair_source"]) & (y == labels.index(NORMAL))  # normals of the normal-vs-pneumonia source
        r["pair_normals_called_normal"] = float((cal[normal].argmax(1) == labels.index(NORMAL)).mean())
        r["pair_normals_called_pneumonia"] = float((cal[normal].argmax(1) == labels.index(PNEUMONIA)).mean())
        r["pair_normals_flagged_tb"] = float((cal[normal, labels.index(TB)] >= meta.thresholds.get(TB, 1.1)).mean())
        out[name] = r
    return out


# --- formats, benchmark, heatmaps -------------------------------------------------------------------------

def per_format_calibration(bundle: Path) -> dict:
    """ECE on test before and after the bundle's temperature, accuracy and TB rule, for every artifact."""
    meta = ModelMetadata.load(bundle / "metadata.json")
    labels = list(meta.labels)
    run = Path(json.loads((bundle / "bundle.json").read_text()).get("run_dir", ""))
    arrays = _split_arrays(run, meta)
    out = {}
    for model in sorted(p for p in bundle.iterdir() if F.key_of(p) and F.FORMATS[F.key_of(p)].on_device):
        key = F.key_of(model)
        try:
            clf = Classifier.from_bundle(model, num_threads=2)
        except Exception as exc:  # noqa: BLE001 - a format that does not load is a row with its error
            out[key] = {"error": str(exc)}
            continue
        fmt = {"backend": clf.backend, "size_mb": model.stat().st_size / 1e6}
        for side, a in arrays.items():
            fmt[side] = summarise(a.labels, clf.predict_batch(a.images), a.sources, labels,
                                  clf.metadata.temperature, clf.metadata.thresholds)
        fmt["temperature"] = clf.metadata.temperature
        fmt["own_calibration"] = "temperature" in meta.calibration.get(key, {})
        out[key] = fmt
    return out


def benchmark(bundle: Path, run: Path, out: Path, logs: Path) -> dict:
    """``python -m benchmarks`` on the default model's bundle (every format in it, Keras baseline included)."""
    import sys

    if not (out / "results.json").is_file():
        cmd = [sys.executable, "-m", "benchmarks", "--bundle", str(bundle), "--run", str(run), "--out", str(out),
               "--iterations", "50", "--e2e-iterations", "15", "--quiet"]
        with open(logs / "benchmark.log", "a") as fh:
            subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    f = out / "results.json"
    return {"folder": str(out), "report": str(out / "report.md")} | (
        {"results": json.loads(f.read_text())} if f.is_file() else {"error": "the benchmark wrote no results"})


def heatmap_stats(bundle: Path, per_class: int = 4) -> dict:
    """Where the default model looks, on the test set: the share of the class-activation mass of the predicted
    class that lies on the border frame (``PreprocessConfig.frame`` of the side, the shortcut audit's frame) of the model input,
    per true class, against the frame's share of the area; and a sample of films for the report's figure."""
    from edge_runtime.heatmap import class_activation_map
    from train import data as D

    clf = Classifier.from_bundle(bundle / F.FORMATS[SCORED].filename, num_threads=2)
    meta = clf.metadata  # the artifact's own temperature and thresholds
    labels = list(meta.labels)
    run = Path(json.loads((bundle / "bundle.json").read_text()).get("run_dir", ""))
    test = D.load_split(run / "split.csv")["test"]
    frame = frame_mask(meta.image_size, PreprocessConfig.frame)
    shares: dict[str, list[float]] = {l: [] for l in labels}
    sample, picked = [], {l: 0 for l in labels}
    head = clf.head
    for s in test:
        try:
            x = prepare(decode_image(s.path), meta.preprocess)
        except Exception:  # noqa: BLE001 - an unreadable film is not in this table
            continue
        raw, feats = clf.predict(x)
        if feats is None or not head:
            return {"error": "the artifact exports no feature map or the bundle no classifier weights"}
        top = int(np.argmax(raw))
        cam = class_activation_map(feats, head, top, meta.image_size)
        total = float(cam.sum())
        if total > 0:
            shares[s.label].append(float(cam[frame].sum() / total))
        if picked[s.label] < per_class:
            picked[s.label] += 1
            sample.append({"path": s.path, "label": s.label, "source": s.source, "predicted": labels[top]})
    return {"frame_area_share": float(frame.mean()),
            "border_share_by_class": {l: float(np.mean(v)) if v else float("nan") for l, v in shares.items()},
            "n_by_class": {l: len(v) for l, v in shares.items()}, "sample": sample}


def training_minutes(runs) -> float:
    """The trainings' own wall time (train_config.json), summed: what a study from scratch costs in training,
    whatever part of it this (possibly resumed) run did."""
    total = 0.0
    for run in runs:
        try:
            total += float(json.loads((Path(run) / "train_config.json").read_text()).get("wall_seconds", 0))
        except (OSError, ValueError):
            pass
    return round(total / 60, 1)


def provenance(opts, seconds: float, runs=()) -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True).strip()
        dirty = bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                             text=True).strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    from benchmarks.sysinfo import machine_info

    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "commit": commit + ("+dirty" if dirty else ""),
            "command": opts.command, "data": str(opts.data), "recipe": opts.recipe, "epochs": opts.epochs,
            "qat_epochs": opts.qat_epochs, "seed": opts.seed,
            "seeds": opts.all_seeds() if hasattr(opts, "all_seeds") else [opts.seed], "image_size": getattr(opts, "image_size", 224), "minutes": round(seconds / 60, 1),
            "train_minutes": training_minutes(runs),
            "machine": machine_info(), "python": platform.python_version()}


# --- source probe: how much of the source survives a recipe, without any CNN ---------------------------------

def _features(images: np.ndarray, kind: str) -> np.ndarray:
    import cv2

    if kind == "border frame":
        thumbs = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in images])
        return thumbs[:, frame_mask(32, PreprocessConfig.frame)].astype(np.float32)
    if kind == "intensity histogram":
        return np.stack([np.histogram(im, bins=32, range=(0, 256))[0] / im.size for im in images]).astype(np.float32)
    return np.stack([cv2.resize(im, (24, 24), interpolation=cv2.INTER_AREA).ravel() for im in images]).astype(np.float32)


def _logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 300) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by gradient descent on standardised features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    lr = 0.5
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        g = p - y
        w -= lr * (z.T @ g / len(y) + l2 * w / len(y))
        b -= lr * g.mean()
    return w, b, mu, sd


SOURCE_PROBES = ("border frame", "intensity histogram", "24x24 thumbnail")


def source_probe(split: Path, labels: list[str], recipes: dict, image_size: int, cache: Path) -> dict:
    """For each recipe: TB vs rest from trivial features (the 3x3-pixel border frame of a 32 px thumbnail, the
    intensity histogram, a 24x24 thumbnail) by logistic regression fitted on train, AUC on test. Whatever these
    reach needs no lung at all: a recipe that lowers them removes source signal before any CNN sees it."""
    from edge_runtime.preprocess import PreprocessConfig
    from train import data as D

    parts = D.load_split(split)
    out = {}
    for name, kw in recipes.items():
        cfg = PreprocessConfig(image_size, **kw)
        a = {side: D.load_arrays(parts[side], tuple(labels), cfg, cache) for side in ("train", "test")}
        ytr = (a["train"].labels == labels.index(TB)).astype(np.float64)
        yte = a["test"].labels == labels.index(TB)
        out[name] = {}
        for kind in SOURCE_PROBES:
            w, b, mu, sd = _logistic(_features(a["train"].images, kind).astype(np.float64), ytr)
            score = ((_features(a["test"].images, kind) - mu) / sd) @ w + b
            out[name][kind] = M.binary_auc(yte, score)
    return out
