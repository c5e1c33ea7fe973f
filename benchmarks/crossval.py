"""``python -m benchmarks.crossval BUNDLE_F0 ... BUNDLE_F{K-1} [--out FILE] [--md FILE]``: a recipe judged by
patient-grouped k-fold cross-validation, out of fold.

Each bundle comes from one training of ``python -m train ... --folds K --fold I`` (same K, same ``--seed``, same
data); its ``tflite_int8`` artifact (or ``--format``; ``--format served``: whichever artifact the device serves
from that bundle, e.g. FP32 where INT8 failed its parity check) runs through the device runtime on its own test
fold, calibrated with its own temperature and decided with its own stored thresholds, exactly as a device would.
The K test folds partition the films (checked: no film is tested twice), so the pooled outputs score the recipe
on every film once, each by a model that never trained on it nor chose an epoch on it: ~5x the films of one
split's test side. The folds must come from one recipe (``train_config.json`` of each run, less its per-run
options): folds of two recipes are refused, never pooled. The report gives

- the pooled out-of-fold figures against issue 16's goals (``benchmarks.default_report.COLUMNS``), with 95%
  bootstrap intervals (patients resampled, each with all their films) on accuracy, the normal-vs-pneumonia AUC
  within the source holding both and TB-vs-rest AUC; a goal inside its interval is not settled;
- the mean +- sample sd over folds of every figure (how much one split moves it);
- accuracy per data source, normal vs pneumonia per view position, and the simulated site B per fold.

``--baseline BUNDLE_F0 ...`` (another recipe's fold bundles on the same folds, e.g. the default's) adds that recipe
against the baseline on the folds both hold: the pooled difference of every figure with the 95% interval of a
paired bootstrap of patients, and the per-fold differences; a difference whose interval spans 0 is a tie.

``--save-folds FILE`` writes every fold's scored test films (calibrated outputs, the fold's stored thresholds, its
site B figures, the commit, date and CPU that scored it; each film named by class folder and file name) to one
JSON file. Given in place of bundles (positional, beside new fold bundles, or to ``--baseline``), it scores
and pairs as the folds did, with no bundle and no retraining: a baseline measured in one session serves the next.
It keeps each fold's validation films' outputs too (what its thresholds were fitted on), so the what-ifs run
from it as from the bundles. ``FILE:0,1`` reads only those folds of it (e.g. a baseline whose other folds come
from bundles trained again: ``--baseline docs/served/folds.json:0,1 runs/pair3-bundle``).

What-ifs (``--class-bias``, ``--tb-sensitivity S``, ``--pneumonia-sensitivity S``; not what a device does today):
each fold's operating point fitted again on its own validation films under one change (a per-class bias; the TB
threshold for another validation sensitivity; the reported pneumonia point for another), every threshold after it
refitted as convert would, the test films only scored, and set against the folds as deployed with paired intervals.
``--mean-with BUNDLE_F0 ...`` (or a saved-folds file; repeat for more) is the what-if ``ensemble``: each fold's
outputs combined with those of other trainings of the same fold (same test and validation films; any recipe), as
test-time views are combined (a geometric mean), the temperature and every threshold fitted on the combined
validation outputs: what serving those trainings as one model would score, on the folds every training holds.
``--refer-pooled`` is the what-if ``refer_pooled``: one refer threshold for a recipe instead of one per training, each
fold's fitted on the other folds' validation films pooled (its own test patients left out: leave-one-fold-out), with
intervals refitted on resampled validation patients for the pooled figures and for each fold's model alone, and the
threshold every fold's validation films choose together (what a recipe would store; docs/refer-pooled).
``--refer-share`` is the what-if ``refer_share``: each fold refers a fixed share of its own validation films (a
quantile, well-conditioned where the kept-accuracy crossing is not), the share the kept-accuracy rule refers on the
other folds' validation films pooled; intervals as ``--refer-pooled``'s (docs/refer-share).

Pooled AUCs rank films scored by K models on one scale (calibrated probabilities); the per-fold mean does not mix
models and is shown beside it. Fewer than K bundles are accepted (a study still running) and the report says
which folds are missing. Rank recipes on these figures, never on one split's test films.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks import default_report as R
from benchmarks.default_figures import (bootstrap_figures, by_patient, draw_patients, manifest_column,
                                       pair_auc_by_view, patients, served)
from benchmarks.paired import PairError, _outputs
from benchmarks.study import evaluate as E
from edge_runtime import formats as F
from edge_runtime import metrics as M
from edge_runtime import operating_point as OP
from train import recipe as RECIPE


class FoldError(ValueError):
    pass


SERVED = "served"  # --format: each fold's bundle scored on the artifact the device serves from it
ENSEMBLE = "ensemble"  # the what-if of --mean-with


@dataclass
class Fold:
    """One fold's bundle and its deployed artifact's calibrated outputs on the fold's test films."""

    bundle: Path
    fold: int
    folds: int
    seed: int
    data_hash: str
    labels: list
    files: list
    y: np.ndarray
    sources: np.ndarray
    views: np.ndarray
    cal: np.ndarray
    thresholds: dict
    pneumonia_threshold: float | None
    parity: float | None
    patients: np.ndarray = None
    recipe: dict = None  # the run's train_config.json less its per-run options: one recipe per cross-validation
    site_shift: dict = None  # the simulated site figures kept with a saved fold (its bundle may be gone)
    saved_in: Path = None  # the saved-folds file this fold was read from (None: scored from its bundle now)
    scored: dict = None  # for a saved fold: the command, commit, date and CPU that scored it
    artifact: str = None  # the format key scored (older saved folds: the file's artifact)
    served: str = None  # the format key a device serves from the fold's bundle (None: not recorded)
    val_y: np.ndarray = None  # the fold's validation films (true classes) and the scored artifact's calibrated
    val_cal: np.ndarray = None  # outputs there: what its thresholds were fitted on (None: not kept)
    val_files: list = None
    tb_target: float = OP.TB_SENSITIVITY  # the validation TB sensitivity its TB threshold was fitted for (bundles
    #                                      converted before they recorded it: 0.90)
    test_views: list = None  # the bundle's test-time views (convert --views; None: a fold saved before recording it)
    refer_share: float = None  # the share of validation films its refer threshold was fitted to refer (convert
    #                            --refer-share); None: fitted for 90% accuracy on the films kept
    pn_target: float = OP.PNEUMONIA_FIT_BEFORE  # the validation sensitivity its pneumonia point was fitted for
    #                                            (folds saved before recording it: 0.85, what convert then used)


PER_RUN_CONFIG = {"data", "out", "split", "fold", "teacher", "resume", "redo_qat", "verbose", "recipe",
                  "wall_seconds", "model_version"}  # differ between folds of one recipe


ADDED_LATER = RECIPE.ADDED_LATER  # options newer than some runs: absent = this (off)


def normalise_recipe(cfg: dict) -> dict:
    """A run's training options as one recipe (``train.recipe.comparable``): less the per-run ones (a teacher's
    path too: each fold has its own), an option added after the run was trained counted as off, less the recipe
    file's name and hash, a distilled student's teachers as how many."""
    return RECIPE.comparable(cfg, PER_RUN_CONFIG)


def recipe_of(run: Path) -> dict:
    """The training options of ``run`` that make its recipe (``normalise_recipe`` of its ``train_config.json``)."""
    try:
        cfg = json.loads((Path(run) / "train_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise FoldError(f"{run}: no readable train_config.json, so its recipe is unknown ({exc})") from exc
    return normalise_recipe(cfg)


def _own_options(options: dict) -> dict:
    """A member's own options as a recipe: a teacher's path (each fold's own) counts as whether there is one, a
    list of teachers as how many."""
    def value(k, v):
        return bool(v) if k == "teacher" else len(v) if k == "teachers" and isinstance(v, (list, tuple)) else v
    return {k: value(k, v) for k, v in options.items() if k == "teacher" or k not in PER_RUN_CONFIG}


def _member_options(members: list[dict]) -> list[dict]:
    """Each member's own options as convert recorded them (``train.recipe.member_options``); for a bundle converted
    before it recorded them, worked out from the members' training runs where they are at hand (none otherwise)."""
    if all("options" in m for m in members):
        return [m["options"] or {} for m in members]
    try:
        cfgs = [json.loads((Path(m["run_dir"]) / "train_config.json").read_text()) for m in members]
    except (OSError, ValueError, KeyError):
        return [{} for _ in members]
    return [RECIPE.member_options(c, cfgs[0]) for c in cfgs]


def _ensemble_of(status: dict) -> dict:
    """A bundle that serves several trainings (``convert --member``) is another recipe than its first training
    alone: its members' initialisation seeds join the recipe (nothing for one training), and the options in which a
    member was trained otherwise than the first (a site-augmented second training), so that folds of the two are
    never pooled and a baseline comparison names the difference."""
    members = status.get("members") or []
    options = [_own_options(o) for o in _member_options(members)]
    return ({"ensemble_init_seeds": [m.get("init_seed") for m in members]}
            | ({"ensemble_member_options": options} if any(options) else {})) if members else {}


def load_fold(bundle: Path, fmt: str = F.DEPLOYED, side: str = "test", validation: bool = True) -> Fold:
    """Run ``bundle``'s ``fmt`` artifact (``SERVED``: the one a device serves from it) on its fold's ``side``
    films, and with ``validation`` on its validation films too (what its thresholds were fitted on: the what-ifs
    refit there, ``--save-folds`` keeps them); FoldError when it is not a fold run."""
    bundle = Path(bundle)
    serves = served(bundle)
    if fmt == SERVED:
        if serves not in F.FORMATS:
            raise FoldError(f"{bundle}: a device would serve no named artifact from it ({serves})")
        fmt = serves
    status = json.loads((bundle / "bundle.json").read_text())
    meta_split = json.loads((bundle / "metadata.json").read_text()).get("split") or {}
    if not meta_split.get("folds"):
        raise FoldError(f"{bundle} is not a cross-validation fold (its run was not trained with --folds K --fold I)")
    if not (bundle / F.FORMATS[fmt].filename).is_file():
        raise FoldError(f"{bundle} has no {fmt} artifact ({F.FORMATS[fmt].filename}); convert with --formats {fmt}")
    try:
        arr, cal, meta = _outputs(bundle, side, fmt)
        val, val_cal = (None, None) if not validation else (arr, cal) if side == "val" else \
            _outputs(bundle, "val", fmt)[:2]
    except PairError as exc:
        raise FoldError(str(exc)) from exc
    op = meta.metrics.get("operating_point") or {}
    pn = op.get("pneumonia") or {}
    run = E.bundle_run(bundle, status, meta)
    return Fold(bundle=bundle, fold=int(meta_split["fold"]), folds=int(meta_split["folds"]),
                seed=int(meta_split.get("seed", -1)), data_hash=meta.data_hash, labels=list(meta.labels),
                files=[film_name(s.path) for s in arr.samples], y=np.asarray(arr.labels, int),
                sources=np.asarray(arr.sources), views=np.asarray(manifest_column(arr.samples)), cal=cal,
                thresholds=dict(meta.thresholds), pneumonia_threshold=pn.get("threshold"),
                parity=status.get("formats", {}).get(fmt, {}).get("agreement"),
                patients=patients(arr.samples), recipe=recipe_of(run) | _ensemble_of(status), artifact=fmt,
                served=serves,
                tb_target=float((op.get("tb") or {}).get("target_sensitivity", OP.TB_SENSITIVITY)),
                test_views=list(meta.views), refer_share=(op.get("refer") or {}).get("target_share"),
                pn_target=float(pn.get("target_sensitivity", OP.PNEUMONIA_FIT_BEFORE)),
                **({} if val is None else {"val_y": np.asarray(val.labels, int), "val_cal": val_cal,
                                           "val_files": [film_name(s.path) for s in val.samples]}))


def check_folds(folds: list[Fold]) -> dict:
    """The folds belong to one cross-validation (same K, seed, data and labels), each once, and their films do
    not overlap; returns the coverage (which folds are present and missing)."""
    if not folds:
        raise FoldError("no folds given")
    first = folds[0]
    for f in folds[1:]:
        for what in ("folds", "seed", "data_hash", "labels"):
            if getattr(f, what) != getattr(first, what):
                raise FoldError(f"{where(f)} and {where(first)} are not folds of one cross-validation: {what} "
                                f"{getattr(f, what)!r} vs {getattr(first, what)!r}")
        if f.test_views is not None and first.test_views is not None and f.test_views != first.test_views:
            raise FoldError(f"{where(f)} and {where(first)} were converted with different test-time views "
                            f"({f.test_views} vs {first.test_views}; convert --views is part of the recipe): give "
                            "each its own CV_OUT")
        if f.refer_share != first.refer_share:
            raise FoldError(f"{where(f)} and {where(first)} were converted with different refer rules (refer share "
                            f"{f.refer_share} vs {first.refer_share}; None: 90% accuracy on the films kept; convert "
                            "--refer-share is part of the recipe): give each its own CV_OUT")
        if f.recipe != first.recipe:
            diff = sorted(k for k in set(f.recipe or {}) | set(first.recipe or {})
                          if (f.recipe or {}).get(k) != (first.recipe or {}).get(k))
            raise FoldError(f"{where(f)} and {where(first)} were trained with different recipes (differ in "
                            f"{', '.join(diff)}): give each recipe its own CV_OUT")
    seen: dict[int, Path] = {}
    for f in folds:
        if f.fold in seen:
            raise FoldError(f"fold {f.fold} is given twice ({seen[f.fold]} and {where(f)})")
        seen[f.fold] = where(f)
    owner: dict[str, int] = {}
    for f in folds:
        for path in f.files:
            if path in owner:
                raise FoldError(f"{path} is a test film of fold {owner[path]} and of fold {f.fold}: not a partition")
            owner[path] = f.fold
    missing = sorted(set(range(first.folds)) - set(seen))
    return {"folds": first.folds, "seed": first.seed, "present": sorted(seen), "missing": missing,
            "complete": not missing}


def _shifted(folds: list[Fold], column: int, key: str) -> np.ndarray | None:
    """Each fold's score in ``column`` minus its own threshold (``key`` of its thresholds, or its pneumonia
    point): one pooled threshold of 0 then applies every fold's own rule (IEEE subtraction keeps the sign)."""
    out = []
    for f in folds:
        t = f.pneumonia_threshold if key == "pneumonia" else f.thresholds.get(key)
        if t is None:
            return None
        out.append(f.cal[:, column] - float(t))
    return np.concatenate(out)


def pool(folds: list[Fold], n_boot: int = 1000) -> dict:
    """The figures of the concatenated out-of-fold outputs, each fold's own operating point applied to its
    films; in the shape of one ``benchmarks.default_figures`` format row, so ``default_report.COLUMNS`` read it."""
    labels = folds[0].labels
    y = np.concatenate([f.y for f in folds])
    src = np.concatenate([f.sources for f in folds])
    cal = np.concatenate([f.cal for f in folds])
    row = E.summarise(y, cal, src, labels, 1.0, None)
    row.pop("ece_raw", None)  # the outputs are calibrated already: only ``ece`` means something here
    missing = {k: [f.fold for f in folds if (f.pneumonia_threshold if k == "pneumonia" else f.thresholds.get(k)) is None]
               for k in (E.TB, "refer_below", "pneumonia")}
    row["folds_without_threshold"] = {k: v for k, v in missing.items() if v}
    if E.TB in labels and (s := _shifted(folds, labels.index(E.TB), E.TB)) is not None:
        sens, spec = M.sens_spec_at(y == labels.index(E.TB), s, 0.0)
        row["tb_at_threshold"] = {"sensitivity": sens, "specificity": spec,
                                  "threshold_per_fold": [f.thresholds.get(E.TB) for f in folds]}
    if {E.NORMAL, E.PNEUMONIA} <= set(labels) and \
            (s := _shifted(folds, labels.index(E.PNEUMONIA), "pneumonia")) is not None:
        m = np.isin(y, [labels.index(E.NORMAL), labels.index(E.PNEUMONIA)])
        sens, spec = M.sens_spec_at(y[m] == labels.index(E.PNEUMONIA), s[m], 0.0)
        row["pneumonia_at_threshold"] = {"sensitivity": sens, "specificity": spec,
                                         "threshold_per_fold": [f.pneumonia_threshold for f in folds]}
    if all("refer_below" in f.thresholds for f in folds):
        decisions = np.concatenate([OP.OperatingPoint(tuple(labels), 1.0, f.thresholds).decide_batch(f.cal)
                                    for f in folds])
        below = [float(f.thresholds["refer_below"]) for f in folds]
        row["refer_rule"] = OP.rule_figures(y, decisions, labels, float("nan")) | {"refer_below": None,
                                                                                  "refer_below_per_fold": below}
        # per source too: the pooled share kept and its accuracy lean on whichever source is easiest
        row["refer_rule_by_source"] = {str(s): OP.rule_figures(y[src == s], decisions[src == s], labels, float("nan"))
                                       for s in sorted(set(src.tolist()))}
    row["pair_auc_by_view"] = pair_auc_by_view(y, cal, src, np.concatenate([f.views for f in folds]), labels)
    parity = [f.parity for f in folds if f.parity is not None]
    row["agreement_vs_keras_parent_at_convert"] = float(np.mean(parity)) if parity else None
    units = np.concatenate([f.patients if f.patients is not None else np.asarray(f.files) for f in folds])
    boot = bootstrap_figures(y, {"pooled": cal}, src, labels, n_boot, groups=units)
    row["ci95"] = {"n_boot": n_boot, "unit": boot["unit"], "patients": int(len(set(units.tolist()))),
                   "pair_source": boot["pair_source"], **rule_intervals(folds, units, n_boot),
                   **boot["ci"]["pooled"]}
    if refit := rule_intervals_refitted(folds, units, n_boot):
        row["ci95_refitted"] = refit
    return row


def _patient_draws(units, n_boot: int, seed: int):
    """``n_boot`` bootstrap draws of film indices, whole patients (``units``) at a time."""
    members, rng = by_patient(units), np.random.default_rng(seed)
    for _ in range(n_boot):
        yield draw_patients(members, rng)


def _ci(v) -> list[float]:
    v = [x for x in v if np.isfinite(x)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else [float("nan")] * 2


def rule_intervals(folds: list[Fold], units, n_boot: int, seed: int = 1) -> dict:
    """95% intervals of one recipe's pooled threshold figures (TB and pneumonia sensitivity/specificity at each
    fold's own point, pneumonia as top class, the share referred, the accuracy of the films kept), patients
    resampled, each fold's thresholds as stored: a goal row's verdict can then say whether the goal lies inside
    its interval, as it does for accuracy and the AUCs."""
    r, labels, got = _rule_films(folds), folds[0].labels, {}
    for i in _patient_draws(units, n_boot, seed):
        for k, v in _rule_figures(r, i, labels).items():
            got.setdefault(k, []).append(v)
    return {k: _ci(v) for k, v in got.items()}


def fold_row(f: Fold) -> dict:
    """One fold's figures on its own test films (as ``benchmarks.default_figures`` gives them for one bundle)."""
    row = E.summarise(f.y, f.cal, f.sources, f.labels, 1.0, f.thresholds, f.pneumonia_threshold)
    row.pop("ece_raw", None)
    row["pair_auc_by_view"] = pair_auc_by_view(f.y, f.cal, f.sources, f.views, f.labels)
    row["agreement_vs_keras_parent_at_convert"] = f.parity
    row["artifact"], row["served"] = f.artifact, f.served
    return row


@dataclass(frozen=True)
class WhatIf:
    """A change to how each fold's operating point is fitted on its validation films (what convert would store),
    scored on the fold's test films; nothing here is what a device does today."""

    name: str  # the key in the report's "what_if"
    class_bias: bool = False  # a per-class bias on the log-probabilities (operating_point.fit_class_bias), then
    #                           the temperature refitted after it
    tb_sensitivity: float | None = None  # the validation TB sensitivity the TB threshold is fitted for (None: the
    #                                      fold's own target, Fold.tb_target)
    pneumonia_sensitivity: float | None = None  # ... and the (reported) pneumonia point (None: Fold.pn_target)
    mean_with: tuple[str, ...] = ()  # other trainings of the same folds (where their outputs come from): each fold's
    #                                  outputs combined with theirs as views are (a geometric mean), the temperature
    #                                  refitted on the combined validation outputs
    refer_pooled: bool = False  # each fold's refer threshold fitted on the other folds' validation films pooled
    #                             (leave-one-fold-out; its test patients left out): one threshold for a recipe
    refer_share: bool = False  # each fold refers a fixed share of its own validation films (a quantile), the share
    #                            the kept-accuracy rule refers on the other folds' validation films pooled

    def describe(self) -> str:
        parts = []
        if self.mean_with:
            parts.append(f"each fold's outputs combined with those of {len(self.mean_with)} other training"
                         f"{'s' if len(self.mean_with) > 1 else ''} of the same fold ({', '.join(self.mean_with)}; "
                         "a geometric mean, as test-time views are combined), the temperature refitted on the "
                         "combined validation outputs: an ensemble served as one model")
        if self.class_bias:
            parts.append("a per-class bias on the log-probabilities fitted on each fold's validation films, then its "
                         "temperature refitted there")
        if self.tb_sensitivity is not None:
            parts.append(f"the TB threshold fitted for {self.tb_sensitivity:.0%} validation TB sensitivity "
                         "(deployed: each fold's own target)")
        if self.pneumonia_sensitivity is not None:
            parts.append(f"the pneumonia point fitted for {self.pneumonia_sensitivity:.0%} validation sensitivity "
                         "(deployed: each fold's own target; reported, not applied)")
        if self.refer_pooled:
            parts.append("each fold's refer threshold fitted, as convert fits it, on the validation films of the other "
                         "folds pooled (each film with its own fold's calibrated outputs and TB flag; the films of this "
                         "fold's test patients left out), not on its own: one refer threshold for a recipe, judged on "
                         "folds whose films did not choose it")
        if self.refer_share:
            parts.append("each fold's refer threshold fitted to refer a fixed share of its own validation films (those "
                         "not flagged TB; a quantile of their top probability), the share being the one the "
                         "kept-accuracy rule refers on the other folds' validation films pooled (their films of this "
                         "fold's test patients left out): a share stored by the recipe, judged on folds whose films "
                         "did not choose it")
        return "; ".join(parts) or "the operating point fitted again as convert fits it (a check: nothing changes)"


def _validation_of(other: Fold, to: Fold) -> np.ndarray:
    """``other``'s validation outputs in ``to``'s validation film order; FoldError unless both trainings held the
    same validation films with the same classes (trainings of one split)."""
    if other.val_cal is None:
        raise FoldError(f"{where(other)} keeps no validation outputs: an ensemble's operating point is fitted on them")
    if not to.val_files or len(set(to.val_files)) != len(to.val_files) or \
            sorted(other.val_files or []) != sorted(to.val_files):
        raise FoldError(f"{where(other)} and {where(to)} (fold {to.fold}) held other validation films: combine "
                        "trainings of one split (same --folds, --fold, --seed and data)")
    at = {p: i for i, p in enumerate(other.val_files)}
    k = np.array([at[p] for p in to.val_files], dtype=int)
    if not np.array_equal(other.val_y[k], to.val_y):
        raise FoldError(f"{where(other)} and {where(to)} give the same validation films different classes")
    return other.val_cal[k]


def combined(f: Fold, members: list[Fold]) -> tuple[Fold, float]:
    """``f`` with its test and validation outputs combined with those of ``members`` (other trainings of the same
    fold: same test and validation films) as views are combined, then a temperature fitted on the combined
    validation outputs applied to both; returns that fold (its stored thresholds and TB target still those of
    ``f``, the members' are not read: refit them) and the temperature."""
    from edge_runtime.views import combine

    tests = [f.cal] + [paired_with([m], [f])[0].cal for m in members]
    vals = [f.val_cal] + [_validation_of(m, f) for m in members]
    cal, val_cal = combine(tests), combine(vals)
    t = OP.fit_temperature(f.val_y, val_cal)
    return replace(f, cal=OP.calibrate(cal, t), val_cal=OP.calibrate(val_cal, t)), t


def refit(f: Fold, w: WhatIf, members: list[Fold] = ()) -> tuple[Fold, dict]:
    """``f`` with its operating point fitted again on its validation films under ``w`` (every threshold refitted
    after the change, as convert would); its test films are only scored. Returns the changed fold and what was
    fitted (the bias, the temperature, the thresholds). ``members``: the same fold's other trainings, for
    ``w.mean_with`` (one each)."""
    if f.val_cal is None:
        raise FoldError(f"{where(f)} keeps no validation outputs (saved before they were kept): give its bundle, "
                        "or score the bundles again with --save-folds")
    if len(members) != len(w.mean_with):
        raise FoldError(f"fold {f.fold}: {len(w.mean_with)} other trainings named, {len(members)} given")
    fitted = {}
    if members:
        f, t = combined(f, list(members))
        fitted["temperature_of_mean"] = t
    val_cal, cal = f.val_cal, f.cal
    if w.class_bias:
        bias = OP.fit_class_bias(f.val_y, val_cal)
        t = OP.fit_temperature(f.val_y, OP.apply_class_bias(val_cal, bias))
        val_cal, cal = (OP.calibrate(OP.apply_class_bias(p, bias), t) for p in (val_cal, cal))
        fitted |= {"bias": [float(b) for b in bias], "temperature_after_bias": t}  # on top of the fold's own
    tb = f.tb_target if w.tb_sensitivity is None else w.tb_sensitivity
    thresholds, _ = OP.choose_operating_points(f.val_y, val_cal, f.labels, tb_sensitivity=tb,
                                               refer_share=f.refer_share)
    pt = f.pn_target if w.pneumonia_sensitivity is None else w.pneumonia_sensitivity
    pn = OP.pneumonia_point(f.val_y, val_cal, f.labels, pt) or {}
    fitted |= {"thresholds": thresholds, "pneumonia_threshold": pn.get("threshold")}
    return replace(f, cal=cal, thresholds=dict(thresholds), pneumonia_threshold=pn.get("threshold"),
                   pn_target=pt), fitted


def at_pneumonia_point(f: Fold, sensitivity: float) -> Fold:
    """``f`` with its pneumonia point fitted again on its validation films for ``sensitivity`` (what a conversion
    fitting it for that would store); nothing else changes (the device does not apply the point)."""
    if f.val_cal is None:
        raise FoldError(f"{where(f)} keeps no validation outputs: its pneumonia point cannot be fitted again (give its "
                        "bundle, or a saved-folds file written with them)")
    pn = OP.pneumonia_point(f.val_y, f.val_cal, f.labels, sensitivity) or {}
    return replace(f, pneumonia_threshold=pn.get("threshold"), pn_target=float(sensitivity))


def versus(base: list[Fold], other: list[Fold], n_boot: int = 1000, refitted: bool = False,
           pooled: bool | list = False) -> dict:
    """``other`` against ``base`` on the same films, fold by fold (``other[i]`` scores ``base[i]``'s films, in
    its order): ``other``'s pooled and per-fold figures, and the 95% interval of each pooled difference
    other - base from one paired bootstrap of patients (the same resamples for both); ``refitted``: also with the
    thresholds fitted again in every draw (``refitted_intervals``; ``pooled``: ``other``'s refer thresholds
    leave-one-fold-out, or a list of shares that each fold's refers)."""
    y = np.concatenate([f.y for f in base])
    src = np.concatenate([f.sources for f in base])
    units = np.concatenate([f.patients if f.patients is not None else np.asarray(f.files) for f in base])
    boot = bootstrap_figures(y, {"base": np.concatenate([f.cal for f in base]),
                                 "other": np.concatenate([f.cal for f in other])}, src, base[0].labels,
                             n_boot, pairs=(("other", "base"),), groups=units)
    out = {"pooled": pool(other, n_boot), "per_fold": {g.fold: fold_row(g) for g in other},
           "delta_ci95": boot["delta"]["other - base"] | rule_deltas(base, other, units, n_boot),
           "unit": boot["unit"]}
    if refitted and (refit := refitted_intervals(base, other, units, n_boot, pooled=(False, pooled))):
        out["delta_ci95_refitted"] = refit["delta"]
        out["ci95_refitted_both"] = {"base": refit["base"], "other": refit["other"]}
    return out


def _rule_films(folds: list[Fold], calibration: bool = False) -> dict:
    """Per film, what the threshold figures count, each fold at its own operating point: TB flag, pneumonia at
    its point, top class pneumonia, referred, decision right; with ``calibration``, also its calibrated outputs and
    fold (ECE, pooled and per fold)."""
    labels = folds[0].labels
    y = np.concatenate([f.y for f in folds])
    out = {"y": y}
    if calibration:  # ECE, pooled and per fold (paired differences only: rule_deltas)
        out |= {"cal": np.concatenate([f.cal for f in folds]),
                "fold_of": np.concatenate([np.full(len(f.y), f.fold) for f in folds])}
    if E.TB in labels and (s := _shifted(folds, labels.index(E.TB), E.TB)) is not None:
        out["tb_flag"] = s >= 0.0
    if {E.NORMAL, E.PNEUMONIA} <= set(labels):
        out["pn_top"] = np.concatenate([f.cal.argmax(1) for f in folds]) == labels.index(E.PNEUMONIA)
        if (s := _shifted(folds, labels.index(E.PNEUMONIA), "pneumonia")) is not None:
            out["pn_flag"] = s >= 0.0
    if all("refer_below" in f.thresholds for f in folds):
        d = np.concatenate([OP.OperatingPoint(tuple(labels), 1.0, f.thresholds).decide_batch(f.cal) for f in folds])
        out["referred"] = d == OP.REFER
        out["right"] = d == np.asarray(labels, dtype=object)[y]
    return out


def _rule_figures(r: dict, i: np.ndarray, labels: list) -> dict:
    """The threshold figures of ``_rule_films`` on the films ``i`` (a bootstrap draw); NaN where a draw has none
    of the films a figure needs."""
    def mean(x):
        return float(x.mean()) if len(x) else float("nan")

    y, out = r["y"][i], {}
    if "cal" in r:  # ECE: pooled, and the mean of the folds' own (what one build's ECE is judged on)
        cal, fold = r["cal"][i], r["fold_of"][i]
        out["ece"] = M.expected_calibration_error(y, cal) if len(y) else float("nan")
        per = [M.expected_calibration_error(y[fold == k], cal[fold == k]) for k in np.unique(fold).tolist()]
        out["ece_fold_mean"] = float(np.mean(per)) if per else float("nan")
    if "tb_flag" in r:
        pos, flag = y == labels.index(E.TB), r["tb_flag"][i]
        out["tb_sens"], out["tb_spec"] = mean(flag[pos]), mean(~flag[~pos])
    if "pn_top" in r:
        pn, nm = y == labels.index(E.PNEUMONIA), y == labels.index(E.NORMAL)
        out["pneumonia_sens"] = mean(r["pn_top"][i][pn])
        if "pn_flag" in r:
            flag = r["pn_flag"][i]
            out["pneumonia_sens_point"], out["pneumonia_spec_point"] = mean(flag[pn]), mean(~flag[nm])
    if "referred" in r:
        ref = r["referred"][i]
        out["referred"], out["acc_kept"] = mean(ref), mean(r["right"][i][~ref])
        if "fold" in r:  # per fold too: a device serves one fold's model, at its own thresholds
            fold = r["fold"][i]
            for k in np.unique(r["fold"]).tolist():
                out[f"referred_fold{k}"] = mean(ref[fold == k])
                out[f"acc_kept_fold{k}"] = mean(r["right"][i][(fold == k) & ~ref])
    return out


def rule_deltas(base: list[Fold], other: list[Fold], units, n_boot: int, seed: int = 1) -> dict:
    """95% intervals of the paired differences other - base of the figures that hang on thresholds (TB and
    pneumonia sensitivity/specificity at each fold's own point, pneumonia as top class, the share referred, the
    accuracy of the films kept) and of ECE (pooled, ``ece``, and the mean of the folds' own, ``ece_fold_mean``),
    resampling ``units`` (patients, each with all their films) as the other intervals do; keyed like
    ``default_report.COLUMNS``. ``other`` holds ``base``'s films in its order. ECE recomputed on a draw of repeated
    films is biased upward (sparser bins), on both arms but not equally, so its intervals are basic bootstrap ones
    (twice the observed difference less the draws' percentiles), centred on what the films show."""
    labels = base[0].labels
    a, b = _rule_films(base, calibration=True), _rule_films(other, calibration=True)
    deltas: dict[str, list] = {}
    for i in _patient_draws(units, n_boot, seed):
        fa, fb = _rule_figures(a, i, labels), _rule_figures(b, i, labels)
        for k in fa.keys() & fb.keys():
            deltas.setdefault(k, []).append(fb[k] - fa[k])
    out = {k: _ci(v) for k, v in deltas.items()}
    every = np.arange(len(a["y"]))
    fa, fb = _rule_figures(a, every, labels), _rule_figures(b, every, labels)
    for k in ("ece", "ece_fold_mean"):
        if k in out and np.all(np.isfinite(out[k])):
            d = fb[k] - fa[k]
            out[k] = [2 * d - out[k][1], 2 * d - out[k][0]]
    return out


def _decide(cal: np.ndarray, labels: list, thresholds: dict) -> np.ndarray:
    """``OperatingPoint.decide_batch`` as class indices, vectorised (-1: referred): the TB threshold first, then
    the refer threshold on the top probability, else the top class."""
    out = cal.argmax(1)
    top = cal.max(1)
    out = np.where(top < thresholds.get("refer_below", 0.0), -1, out)
    if E.TB in labels and E.TB in thresholds:
        out = np.where(cal[:, labels.index(E.TB)] >= thresholds[E.TB], labels.index(E.TB), out)
    return out


def _outside_tests(folds: list[Fold]) -> list[list[np.ndarray]]:
    """``out[k][j]``: which of fold j's validation films lie outside fold k's test patients (a validation film of
    another fold comes from that fold's training part, which holds fold k's test patients). A film's patient is
    the one its test fold names (in a cross-validation every film is tested once), else read from its name."""
    from train.data import patient_from_name

    patient = {film_name(n): str(u) for f in folds
               for n, u in zip(f.files, f.patients if f.patients is not None else [patient_from_name(x) for x in f.files])}
    val = [[patient.get(film_name(n), patient_from_name(n)) for n in f.val_files] for f in folds]
    tests = [{patient.get(film_name(n), patient_from_name(n)) for n in f.files} for f in folds]
    return [[np.array([u not in tests[k] for u in val[j]], bool) for j in range(len(folds))] for k in range(len(folds))]


def _refer_fit_on(parts: list[tuple[Fold, np.ndarray, float | None]]) -> float:
    """``operating_point.fit_refer_below`` on validation films of several folds pooled: each part is a fold, the
    indices of its films taken and the TB threshold that flags them (its own calibrated outputs throughout)."""
    return OP.fit_refer_below(
        np.concatenate([f.val_y[v] for f, v, _ in parts]), np.concatenate([f.val_cal[v] for f, v, _ in parts]),
        np.concatenate([_tb_flags(f, v, t) for f, v, t in parts]))


def pooled_refer(folds: list[Fold], tb: list, val_draws=None, outside=None) -> list[float]:
    """Leave-one-fold-out refer thresholds: for each fold k, the refer threshold fitted on the validation films of
    every other fold pooled (fold j's films with fold j's calibrated outputs, flagged TB at ``tb[j]``), less those
    of fold k's test patients. ``val_draws``: the validation films drawn per fold (a bootstrap draw; default all);
    ``outside``: ``_outside_tests(folds)``, given when called per draw."""
    outside = _outside_tests(folds) if outside is None else outside
    draws = val_draws if val_draws is not None else [np.arange(len(f.val_y)) for f in folds]
    return [_refer_fit_on([(f, v[outside[k][j][v]], tb[j]) for j, (f, v) in enumerate(zip(folds, draws)) if j != k])
            for k in range(len(folds))]


def recipe_refer(folds: list[Fold]) -> dict:
    """The refer threshold a recipe would store: fitted on every fold's validation films pooled, each fold's
    films flagged TB at its stored threshold, with how many films chose it."""
    parts = [(f, np.arange(len(f.val_y)), f.thresholds.get(E.TB)) for f in folds]
    return {"refer_below": _refer_fit_on(parts), "validation_films": int(sum(len(f.val_y) for f in folds)),
            "folds": [f.fold for f in folds]}


def pooled_shares(folds: list[Fold], tb: list, outside=None, val_draws=None) -> list[float]:
    """Leave-one-fold-out shares referred: for each fold k, the share of the other folds' validation films (not
    flagged TB; fold k's test patients left out) that the kept-accuracy rule refers when fitted on them pooled
    (``pooled_refer``'s threshold): the share a recipe would store, never chosen by films of fold k's test patients
    (fold k's own validation films may be among them, scored by the other folds' models). ``val_draws``: the
    validation films drawn per fold (a bootstrap draw; default all)."""
    outside = _outside_tests(folds) if outside is None else outside
    draws = val_draws if val_draws is not None else [np.arange(len(f.val_y)) for f in folds]
    out = []
    for k, t in enumerate(pooled_refer(folds, tb, draws, outside)):
        parts = [(f, v[outside[k][j][v]], tb[j]) for j, (f, v) in enumerate(zip(folds, draws)) if j != k]
        probs = np.concatenate([f.val_cal[v] for f, v, _ in parts])
        flags = np.concatenate([_tb_flags(f, v, t_j) for f, v, t_j in parts])
        out.append(OP.refer_share(probs, flags, t))
    return out


def _tb_flags(f: Fold, v: np.ndarray, tb: float | None) -> np.ndarray:
    """Which of fold ``f``'s validation films ``v`` its TB threshold ``tb`` flags (none without a TB class)."""
    labels = f.labels
    if E.TB not in labels:
        return np.zeros(len(v), bool)
    return f.val_cal[v, labels.index(E.TB)] >= (np.inf if tb is None else tb)


def recipe_share(folds: list[Fold]) -> dict:
    """The share a recipe would store: what the kept-accuracy rule refers on every fold's validation films pooled
    (each flagged TB at its fold's stored threshold), with that threshold and how many films chose it."""
    r = recipe_refer(folds)
    probs = np.concatenate([f.val_cal for f in folds])
    flags = np.concatenate([_tb_flags(f, np.arange(len(f.val_y)), f.thresholds.get(E.TB)) for f in folds])
    return r | {"share": OP.refer_share(probs, flags, r["refer_below"])}


def _rule_films_refitted(folds: list[Fold], val_draws: list[np.ndarray], pooled=None, per_fold: bool = False,
                         shares=None, outside=None) -> dict:
    """``_rule_films`` with every fold's thresholds fitted again, as convert fits them (TB at the fold's own
    target, the refer threshold, the pneumonia point), on the validation films ``val_draws[k]`` of fold k;
    ``pooled`` (``_outside_tests(folds)``): each refer threshold fitted on the other folds' drawn films instead
    (``pooled_refer``); ``shares``: each fold's refer threshold fitted to refer that share of its drawn films
    (``operating_point.fit_refer_share``; the shares held: a recipe stores them; "redrawn": each chosen again on
    the drawn films, leave-one-fold-out, ``outside`` (``_outside_tests``) saying which films to leave out); ``per_fold``: each
    fold's model's figures too (``_rule_figures``)."""
    labels = folds[0].labels
    cols = {k: [] for k in ("tb_flag", "pn_flag", "referred", "right")}
    fitted = [OP.choose_operating_points(f.val_y[v], f.val_cal[v], labels, tb_sensitivity=f.tb_target,
                                         refer_share=f.refer_share)[0] for f, v in zip(folds, val_draws)]
    if pooled is not None:
        for th, r in zip(fitted, pooled_refer(folds, [th.get(E.TB) for th in fitted], val_draws, pooled)):
            th["refer_below"] = r
    if isinstance(shares, str):  # "redrawn": each share chosen again, leave-one-fold-out, on the drawn films
        shares = pooled_shares(folds, [th.get(E.TB) for th in fitted], outside, val_draws)
    if shares is not None:
        for f, v, th, s in zip(folds, val_draws, fitted, shares):
            th["refer_below"] = OP.fit_refer_share(f.val_cal[v], _tb_flags(f, v, th.get(E.TB)), s)
    for f, v, th in zip(folds, val_draws, fitted):
        d = _decide(f.cal, labels, th)
        cols["referred"].append(d == -1)
        cols["right"].append(d == f.y)
        if E.TB in labels:
            cols["tb_flag"].append(f.cal[:, labels.index(E.TB)] >= th.get(E.TB, np.inf))
        if {E.NORMAL, E.PNEUMONIA} <= set(labels):
            pn = OP.pneumonia_point(f.val_y[v], f.val_cal[v], labels, f.pn_target) or {}
            t = pn.get("threshold")
            cols["pn_flag"].append(f.cal[:, labels.index(E.PNEUMONIA)] >= (np.inf if t is None else t))
    out = {"y": np.concatenate([f.y for f in folds])}
    out |= {k: np.concatenate(v) for k, v in cols.items() if v}
    if per_fold:
        out["fold"] = np.concatenate([np.full(len(f.y), f.fold) for f in folds])
    if {E.NORMAL, E.PNEUMONIA} <= set(labels):
        out["pn_top"] = np.concatenate([f.cal.argmax(1) for f in folds]) == labels.index(E.PNEUMONIA)
    return out


def _refitted_draws(recipes: list[list[Fold]], units, n_boot: int, seed: int, pooled=()):
    """Per bootstrap draw, the threshold figures of each recipe (lists of the same folds, films in the first's
    order) with every fold's thresholds fitted again on the same resampled validation patients (their ids read from
    the file names, else each film its own) and scored on the same resampled test patients. ``pooled[r]`` True:
    recipe r's refer thresholds are fitted leave-one-fold-out on the drawn films (``pooled_refer``); a list of
    shares: each fold's refers that share of its own drawn films (``fit_refer_share``); either way every recipe's
    figures then come per fold too (``referred_fold0``, ``acc_kept_fold0``, ...)."""
    from train.data import patient_from_name

    labels = recipes[0][0].labels
    val_members = [by_patient([patient_from_name(p) for p in f.val_files]) for f in recipes[0]]
    mode = [pooled[r] if r < len(pooled) else False for r in range(len(recipes))]
    outside = [_outside_tests(folds) if m is True or m == "redrawn" else None for m, folds in zip(mode, recipes)]
    shares = [m if isinstance(m, (list, tuple, str)) else None for m in mode]
    rng = np.random.default_rng(seed + 1)
    for i in _patient_draws(units, n_boot, seed):
        v = [draw_patients(m, rng) for m in val_members]
        yield [_rule_figures(_rule_films_refitted(folds, v, None if isinstance(s, str) else o,
                                                  per_fold=any(m is not False for m in mode), shares=s,
                                                  outside=o), i, labels)
               for folds, o, s in zip(recipes, outside, shares)]


def rule_intervals_refitted(folds: list[Fold], units, n_boot: int, seed: int = 2) -> dict:
    """``rule_intervals`` with every fold's thresholds fitted again on resampled validation patients in each draw:
    how far the threshold figures could fall from where a rebuild on other validation films would put them.
    Empty when a fold keeps no validation outputs."""
    if any(f.val_cal is None for f in folds):
        return {}
    got: dict[str, list] = {}
    for (fig,) in _refitted_draws([folds], units, n_boot, seed):
        for k, v in fig.items():
            got.setdefault(k, []).append(v)
    return {k: _ci(v) for k, v in got.items()}


def rule_deltas_refitted(base: list[Fold], other: list[Fold], units, n_boot: int, seed: int = 2) -> dict:
    """The paired differences of ``refitted_intervals`` (other - base), keyed like ``rule_deltas``."""
    return refitted_intervals(base, other, units, n_boot, seed).get("delta", {})


def refitted_intervals(base: list[Fold], other: list[Fold], units, n_boot: int, seed: int = 2,
                       pooled: tuple = (False, False)) -> dict:
    """``rule_deltas`` with the uncertainty of where each threshold was fitted: every draw resamples the test
    patients and, fold by fold, the validation patients, and fits both recipes' thresholds again on those
    validation films before scoring the test draw. The intervals of ``rule_deltas`` hold the stored thresholds
    fixed, as if ~50 validation films per class had set them without error; these do not. The temperature stays
    as stored (a draw refits thresholds, not it). Returns the 95% intervals of the differences other - base
    (``delta``) and of each side's own figures in the same draws (``base``, ``other``: how wide each recipe's
    figure is once its thresholds' own error counts). ``pooled[1]`` True: ``other``'s refer thresholds are fitted
    leave-one-fold-out (``pooled_refer``) on the same drawn films; a list of shares: each fold's refers that share
    of its drawn films; "redrawn": the shares chosen again on each draw's films (``pooled_shares``). Empty when a
    fold keeps no validation outputs."""
    if any(f.val_cal is None for f in (*base, *other)):
        return {}
    others = [replace(g, val_y=f.val_y, val_cal=_validation_of(g, f), val_files=f.val_files)
              for f, g in zip(base, other)]  # the other recipe's validation outputs in base's film order
    got: dict[str, dict[str, list]] = {"delta": {}, "base": {}, "other": {}}
    for fa, fb in _refitted_draws([base, others], units, n_boot, seed, pooled):
        for k in fa.keys() & fb.keys():
            got["delta"].setdefault(k, []).append(fb[k] - fa[k])
            got["base"].setdefault(k, []).append(fa[k])
            got["other"].setdefault(k, []).append(fb[k])
    return {side: {k: _ci(v) for k, v in d.items()} for side, d in got.items()}


def align(other: Fold, to: Fold) -> Fold:
    """``other``'s outputs in ``to``'s film order; FoldError unless both folds hold the same test films."""
    if len(set(to.files)) != len(to.files) or len(set(other.files)) != len(other.files):
        raise FoldError(f"{where(to)} or {where(other)} names two test films alike: films cannot be paired by name")
    if other.fold != to.fold or sorted(other.files) != sorted(to.files):
        raise FoldError(f"{where(other)} (fold {other.fold}) and {where(to)} (fold {to.fold}) do not hold the same "
                        "test films: compare folds of one cross-validation (same --folds, --seed and data)")
    at = {p: i for i, p in enumerate(other.files)}
    k = np.array([at[p] for p in to.files], dtype=int)
    return replace(other, files=list(to.files), y=other.y[k], sources=other.sources[k], views=other.views[k],
                   cal=other.cal[k], patients=None if other.patients is None else other.patients[k])


def _needs_validation(folds: list[Fold]) -> None:
    if gone := [where(f) for f in folds if f.val_cal is None]:
        raise FoldError(f"a what-if refits each fold's operating point on its validation films, which {gone[0]} does "
                        "not keep (saved before validation outputs were kept): give the fold bundles")


def what_if(folds: list[Fold], w: WhatIf, n_boot: int, log=print, members: list[list[Fold]] = ()) -> dict:
    """``w`` applied to every fold, scored against the folds as deployed (paired, film by film). With
    ``w.mean_with``, ``members`` holds the folds of each other training (one list each): only the folds that every
    one of them holds are scored, and the result then carries the deployed figures of those folds
    (``base_pooled``, ``base_per_fold``) to set against."""
    _needs_validation(folds)
    log(f"what if: {w.describe()}")
    by_fold = [{m.fold: m for m in ms} for ms in members]
    kept = [f for f in folds if all(f.fold in b for b in by_fold)]
    if not kept:
        raise FoldError("the other trainings hold none of the folds scored: nothing to combine")
    if len(kept) < len(folds):
        log(f"what if: only folds {[f.fold for f in kept]} are held by every other training; the others are left out")
    changed, fitted, drift = [], {}, {}
    for f in kept:
        g, fitted[f.fold] = refit(f, w, [b[f.fold] for b in by_fold])
        changed.append(g)
        if (d := refit_drift(f)) > 1e-9:
            drift[f.fold] = d
    pooled, refit_mode = {}, w.refer_pooled
    if w.refer_pooled and w.refer_share:
        raise FoldError("one refer rule per what-if: --refer-pooled or --refer-share")
    if w.refer_share:
        if len(changed) < 2:
            raise FoldError("a share of films for a recipe is judged leave-one-fold-out: give two folds or more")
        tb = [g.thresholds.get(E.TB) for g in changed]
        shares = pooled_shares(changed, tb)
        lofo = [OP.fit_refer_share(g.val_cal, _tb_flags(g, np.arange(len(g.val_y)), t), s)
                for g, t, s in zip(changed, tb, shares)]
        changed = [replace(g, thresholds=dict(g.thresholds, refer_below=r)) for g, r in zip(changed, lofo)]
        for g in changed:
            fitted[g.fold]["thresholds"] = dict(g.thresholds)
        refit_mode = shares
        pooled = {"refer_share": {"leave_one_fold_out": {g.fold: g.thresholds["refer_below"] for g in changed},
                                  "share_leave_one_fold_out": {g.fold: s for g, s in zip(changed, shares)},
                                  "as_deployed": {f.fold: f.thresholds.get("refer_below") for f in kept},
                                  "as_deployed_share": kept[0].refer_share, "all_folds": recipe_share(kept)}}
    if w.refer_pooled:
        if len(changed) < 2:
            raise FoldError("one refer threshold for a recipe is judged leave-one-fold-out: give two folds or more")
        lofo = pooled_refer(changed, [g.thresholds.get(E.TB) for g in changed])
        changed = [replace(g, thresholds=dict(g.thresholds, refer_below=r)) for g, r in zip(changed, lofo)]
        for g in changed:
            fitted[g.fold]["thresholds"] = dict(g.thresholds)
        pooled = {"refer_pooled": {"leave_one_fold_out": {g.fold: g.thresholds["refer_below"] for g in changed},
                                   "as_deployed": {f.fold: f.thresholds.get("refer_below") for f in kept},
                                   "all_folds": recipe_refer(kept)}}
    if drift:
        log(f"what if: refitted at the deployed targets, folds {sorted(drift)} do not give back their stored thresholds "
            f"(largest difference {max(drift.values()):.3g}): their differences hold that too")
    out = {"what": w.describe(), "fitted_per_fold": fitted, "refit_drift": drift, **pooled,
           **versus(kept, changed, n_boot, refitted=bool(refit_mode), pooled=refit_mode)}
    if w.refer_share and out.get("ci95_refitted_both"):
        # the share held is what a rebuild of the recipe gets; chosen again in every draw, the share's own error
        # (it is read off the same flat kept-accuracy curve) counts too: both, the same draws
        units = np.concatenate([f.patients if f.patients is not None else np.asarray(f.files) for f in kept])
        out["ci95_refitted_redrawn"] = refitted_intervals(kept, changed, units, n_boot,
                                                          pooled=(False, "redrawn")).get("other", {})
    if len(kept) < len(folds):
        out |= {"base_pooled": pool(kept, n_boot), "base_per_fold": {f.fold: fold_row(f) for f in kept}}
    return out


def refit_drift(f: Fold) -> float:
    """How far the thresholds refitted at the deployed targets on the fold's validation outputs (as scored now) lie
    from the ones convert stored (fitted on its own run of the same films): 0 when they agree, more where this
    CPU's kernels round the validation outputs otherwise. A what-if's difference includes this part."""
    same, _ = refit(f, WhatIf("check"))
    pairs = [(same.thresholds.get(k), f.thresholds.get(k)) for k in set(same.thresholds) | set(f.thresholds)]
    pairs.append((same.pneumonia_threshold, f.pneumonia_threshold))
    return max((abs(a - b) if a is not None and b is not None else (0.0 if a == b else float("inf")))
               for a, b in pairs)


SAVED = "crossval-folds/1"  # the saved-folds file's format


def film_name(path: str) -> str:
    """A film's name in a fold: its class folder and file name (``normal/x.png``), as the data folder's
    ``manifest.csv`` names it; the same in every clone or machine, whichever folds are loaded together."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def save_folds(folds: list[Fold], path: Path, fmt: str, per_fold: dict, provenance: dict) -> None:
    """Write the folds' scored test films (what a device decided from: calibrated outputs, stored thresholds)
    with their site B figures and their validation films' outputs (what the thresholds were fitted on) to
    ``path``, so a later report, comparison or what-if needs no bundle and no retraining."""
    m = provenance.get("machine") or {}
    scored = {"command": provenance.get("command"), **{k: m.get(k) for k in ("commit", "date", "cpu")}}

    def one(f: Fold) -> dict:
        return {"bundle": str(f.bundle), "fold": f.fold, "folds": f.folds, "seed": f.seed, "data_hash": f.data_hash,
                "labels": list(f.labels), "thresholds": f.thresholds, "pneumonia_threshold": f.pneumonia_threshold,
                "tb_target": f.tb_target, "test_views": f.test_views, "refer_share": f.refer_share,
                "pn_target": f.pn_target,
                "parity": f.parity, "recipe": f.recipe, "artifact": f.artifact, "served": f.served,
                "site_shift": (per_fold.get(f.fold) or per_fold.get(str(f.fold)) or {}).get("site_shift")
                or f.site_shift, "scored": f.scored or scored,
                "films": [{"film": n, "y": int(y), "source": str(s), "view": str(v),
                           "patient": str(u), "p": [float(x) for x in c]}
                          for n, y, s, v, u, c in zip(f.files, f.y, f.sources, f.views,
                                                      f.patients if f.patients is not None else f.files, f.cal)],
                "validation": None if f.val_cal is None else [
                    {"film": n, "y": int(y), "p": [float(x) for x in c]}
                    for n, y, c in zip(f.val_files or [""] * len(f.val_y), f.val_y, f.val_cal)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": SAVED, "artifact": fmt, "provenance": provenance,
                                "folds": [one(f) for f in folds]}, default=E.jsonable) + "\n")


def load_saved(path: Path, fmt: str = F.DEPLOYED) -> list[Fold]:
    """The folds written by ``save_folds``; FoldError for a file of another kind or artifact."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FoldError(f"{path}: not a readable saved-folds file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != SAVED:
        raise FoldError(f"{path} is neither a fold bundle nor a saved-folds file of format {SAVED} "
                        "(python -m benchmarks.crossval ... --save-folds FILE writes one)")
    if doc.get("artifact") != fmt:
        raise FoldError(f"{path} holds {doc.get('artifact')} outputs, not {fmt} (what --format asks for): compare one "
                        f"artifact (--format {doc.get('artifact')}), or score the fold bundles again")
    try:
        return _saved_folds(doc, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise FoldError(f"{path}: a saved fold lacks or garbles a field ({type(exc).__name__}: {exc}); save the "
                        "folds again (python -m benchmarks.crossval ... --save-folds FILE)") from exc


def _saved_folds(doc: dict, path: Path) -> list[Fold]:
    out = []
    for d in doc["folds"]:
        films = d["films"]
        out.append(Fold(bundle=Path(d["bundle"]), fold=int(d["fold"]), folds=int(d["folds"]), seed=int(d["seed"]),
                        data_hash=d["data_hash"], labels=list(d["labels"]), files=[x["film"] for x in films],
                        y=np.asarray([x["y"] for x in films], int), sources=np.asarray([x["source"] for x in films]),
                        views=np.asarray([x["view"] for x in films]),
                        cal=np.asarray([x["p"] for x in films], float).reshape(len(films), len(d["labels"])),
                        thresholds=dict(d["thresholds"]), pneumonia_threshold=d.get("pneumonia_threshold"),
                        parity=d.get("parity"), patients=np.asarray([x["patient"] for x in films]),
                        recipe=None if d.get("recipe") is None else normalise_recipe(d["recipe"]),
                        site_shift=d.get("site_shift"), saved_in=Path(path), scored=d.get("scored"),
                        artifact=d.get("artifact") or doc.get("artifact"), served=d.get("served"),
                        tb_target=float(d.get("tb_target", OP.TB_SENSITIVITY)), test_views=d.get("test_views"),
                        refer_share=d.get("refer_share"),
                        pn_target=float(d.get("pn_target", OP.PNEUMONIA_FIT_BEFORE)),
                        **_saved_validation(d.get("validation"), len(d["labels"]))))
    return out


def _saved_validation(films, n_labels: int) -> dict:
    """A saved fold's validation films as ``Fold`` fields (none: saved before they were kept)."""
    if not films:
        return {}
    return {"val_y": np.asarray([x["y"] for x in films], int), "val_files": [x["film"] for x in films],
            "val_cal": np.asarray([x["p"] for x in films], float).reshape(len(films), n_labels)}


def saved_source(source) -> tuple[Path, set[int] | None]:
    """A saved-folds file given as ``FILE`` (every fold) or ``FILE:0,1`` (those folds only)."""
    path, _, pick = str(source).rpartition(":")
    if path and re.fullmatch(r"\d+(,\d+)*", pick) and not Path(source).exists():
        return Path(path), {int(k) for k in pick.split(",")}
    return Path(source), None


def load_folds(sources, fmt: str = F.DEPLOYED, log=print, what: str = "", validation: bool = False) -> list[Fold]:
    """The folds of ``sources`` (fold bundles, each run on its test films now, and with ``validation`` on its
    validation films, or saved-folds files, ``FILE:0,1`` for some of their folds), in fold order, checked as one
    cross-validation."""
    live, saved = [], []
    for b in sources:
        if Path(b).is_dir():
            log(f"{what}fold bundle {b}: running {fmt} on its test films"
                + (" and validation films" if validation else ""))
            live.append(load_fold(Path(b), fmt, validation=validation))
        else:
            path, pick = saved_source(b)
            log(f"{what}saved folds {path}: reading" + ("" if pick is None else f" folds {sorted(pick)}"))
            got = load_saved(path, fmt)
            missing = (pick or set()) - {f.fold for f in got}
            if missing:
                raise FoldError(f"{path} holds no fold {', '.join(map(str, sorted(missing)))} "
                                f"(it holds {', '.join(str(f.fold) for f in got)})")
            saved += [f for f in got if pick is None or f.fold in pick]
    folds = sorted(live + saved, key=lambda f: f.fold)
    check_folds(folds)
    return folds


def where(f: Fold) -> str:
    """Where a fold's outputs came from, for the report."""
    if not f.saved_in:
        return str(f.bundle)
    sc = f.scored or {}
    return (f"{f.bundle} (as saved in {f.saved_in}; scored at commit {sc.get('commit', '?')}, {sc.get('date', '?')}, "
            f"{sc.get('cpu', '?')})")


def paired_with(folds: list[Fold], base: list[Fold]) -> list[Fold]:
    """``folds`` in the film order of the ``base`` folds of another recipe; FoldError unless both are the same
    folds of one cross-validation with the same films and classes."""
    if [f.fold for f in base] != [f.fold for f in folds]:
        raise FoldError(f"the baseline has folds {[f.fold for f in base]}, the recipe folds {[f.fold for f in folds]}: "
                        "compare the same folds")
    for what in ("folds", "seed", "data_hash", "labels"):
        if getattr(base[0], what) != getattr(folds[0], what):
            raise FoldError(f"the baseline and the recipe are not of one cross-validation: {what} "
                            f"{getattr(base[0], what)!r} vs {getattr(folds[0], what)!r}")
    other = [align(f, b) for f, b in zip(folds, base)]
    for o, b in zip(other, base):
        if not np.array_equal(o.y, b.y):
            raise FoldError(f"{where(o)} and {where(b)} give the same films different classes")
    return other


def common_folds(folds: list[Fold], base: list[Fold]) -> tuple[list[Fold], list[Fold]]:
    """The folds that both recipes hold (a cross-validation trained in parts may hold fewer folds of one recipe
    than of the other); FoldError when they share none."""
    both = {f.fold for f in folds} & {b.fold for b in base}
    if not both:
        raise FoldError(f"the baseline has folds {[b.fold for b in base]}, the recipe folds {[f.fold for f in folds]}: "
                        "no fold in common to compare")
    return [f for f in folds if f.fold in both], [b for b in base if b.fold in both]


def recipe_difference(ra: dict, rb: dict) -> dict:
    """{option: [baseline's value, this recipe's]} for each option in which two recipes differ (an ensemble
    member's own options included: ``_ensemble_of``)."""
    return {k: [ra.get(k), rb.get(k)] for k in sorted(set(ra) | set(rb)) if ra.get(k) != rb.get(k)}


def against_baseline(folds: list[Fold], base: list[Fold], n_boot: int) -> dict:
    """The recipe of ``folds`` against the recipe of the ``base`` folds, on the folds both hold: pooled
    differences with paired intervals, and what differs between the two recipes."""
    folds, base = common_folds(folds, base)
    other = paired_with(folds, base)
    diff = recipe_difference(base[0].recipe or {}, folds[0].recipe or {})
    targets = [sorted({f.tb_target for f in g}) for g in (base, folds)]
    pn_targets = [sorted({f.pn_target for f in g}) for g in (base, folds)]
    shares = [base[0].refer_share, folds[0].refer_share]
    return {"bundles": {f.fold: where(f) for f in base}, "recipe_difference": diff,
            "tb_targets": {"baseline": targets[0], "this": targets[1]},
            "pneumonia_targets": {"baseline": pn_targets[0], "this": pn_targets[1]},
            "refer_shares": {"baseline": shares[0], "this": shares[1]},
            "baseline_pooled": pool(base, n_boot), "baseline_per_fold": {f.fold: fold_row(f) for f in base},
            **versus(base, other, n_boot, refitted=True)}


def _site_b_counts(r: dict | None) -> dict:
    """A fold's simulated site B figures that the harmonisation rules read: accuracy, and the sick films given a
    normal decision by the device's rule (None where not scored)."""
    r = r or {}
    rule = r.get("refer_rule") or {}
    return {"accuracy": r.get("accuracy"), "tuberculosis_called_normal": rule.get("tuberculosis_called_normal"),
            "pneumonia_called_normal": rule.get("pneumonia_called_normal"),
            "tb_sensitivity": (r.get("tb_at_threshold") or {}).get("sensitivity"),
            "nih_normals_called_normal": r.get("pair_normals_called_normal")}


def site_b_against(per_fold: dict, base: list[Fold]) -> dict:
    """Simulated site B fold by fold, this recipe against the baseline (its saved figures), on the folds both
    scored under site B; empty when the baseline kept none."""
    out = {}
    for b in base:
        this = (per_fold.get(b.fold) or {}).get("site_shift") or {}
        if E.SITE_B in this and b.site_shift and E.SITE_B in b.site_shift:
            out[b.fold] = {"this": _site_b_counts(this[E.SITE_B]), "baseline": _site_b_counts(b.site_shift[E.SITE_B])}
    return out


def crossval(bundles, fmt: str = F.DEPLOYED, n_boot: int = 1000, shift: bool = True, log=print,
             what_ifs: tuple[WhatIf, ...] = (), baseline=(), validation: bool = False, mean_with=(),
             shifts: tuple[str, ...] = (E.SITE_B,), pneumonia_point: float | None = None) -> dict:
    """The out-of-fold report of ``bundles`` (fold bundles or saved-folds files); ``validation``: also score each
    bundle's validation films (kept by ``save_folds``; the what-ifs score them whatever it says); ``mean_with``:
    other trainings of the same folds (one list of fold bundles or saved-folds files each), scored combined with
    ``bundles`` as the what-if ``ensemble``; ``shifts``: the simulated site changes scored on each fold's bundle
    (``benchmarks.study.evaluate.SHIFTS``; a saved fold keeps those it was scored with); ``pneumonia_point``: every
    fold's pneumonia point, baseline's too, fitted again for that validation sensitivity before anything is scored
    (``at_pneumonia_point``: as if converted so)."""
    members = [load_folds(m, fmt, log, f"other training {i + 1}: ", validation=True) for i, m in enumerate(mean_with)]
    if members:
        what_ifs = tuple(what_ifs) + (WhatIf(ENSEMBLE, mean_with=tuple(" ".join(str(x) for x in m)
                                                                        for m in mean_with)),)
    refit_point = pneumonia_point is not None
    folds = load_folds(bundles, fmt, log, validation=validation or bool(what_ifs) or refit_point)
    coverage = check_folds(folds)
    base = load_folds(baseline, fmt, log, "baseline ", validation=refit_point) if baseline else []
    if refit_point:
        log(f"every fold's pneumonia point{' (baseline too)' if base else ''} fitted again for "
            f"{pneumonia_point:.0%} validation sensitivity")
        folds = [at_pneumonia_point(f, pneumonia_point) for f in folds]
        base = [at_pneumonia_point(b, pneumonia_point) for b in base]
    if base:
        paired_with(*common_folds(folds, base))  # a wrong baseline is refused before the bootstraps
    if what_ifs:
        _needs_validation(folds)  # before the bootstraps
    out = {"format": fmt, "coverage": coverage, "recipe": folds[0].recipe, "n": int(sum(len(f.y) for f in folds)),
           "pneumonia_point": {"refitted": refit_point, "targets": sorted({f.pn_target for f in folds})},
           "bundles": {f.fold: where(f) for f in folds}, "pooled": pool(folds, n_boot),
           "per_fold": {f.fold: fold_row(f) for f in folds}}
    if what_ifs:
        out["what_if"] = {w.name: what_if(folds, w, n_boot, log, members if w.mean_with else ()) for w in what_ifs}
    if base:
        out["versus_baseline"] = against_baseline(folds, base, n_boot)
    if shift and fmt in (F.DEPLOYED, SERVED):
        for f in folds:
            if f.saved_in:  # its bundle may be gone: the figures saved with it
                if f.site_shift:
                    out["per_fold"][f.fold]["site_shift"] = f.site_shift
                else:
                    log(f"fold {f.fold}: no {E.SITE_B} figures saved in {f.saved_in} (saved with --no-shift)")
                continue
            log(f"fold {f.fold}: simulated {', '.join(shifts)}")
            out["per_fold"][f.fold]["site_shift"] = E.site_shift(f.bundle, "test", tuple(shifts), f.artifact)
        if base and "versus_baseline" in out:
            out["versus_baseline"]["site_b"] = site_b_against(out["per_fold"], base)
            if missing := [b.fold for b in base if not (b.site_shift or {}).get(E.SITE_B)]:
                log(f"baseline folds {missing}: no saved {E.SITE_B} figures (give a saved-folds file scored with "
                    "them): left out of the site B comparison")
    out["folds"] = folds  # for --save-folds; not written to the JSON report
    return out


def _pm(values) -> str:
    return R._pm(values, "one fold")


def _v(x) -> str:
    """A figure as the table shows it: counts (films) as whole numbers, rates with three decimals."""
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else R._f(R._num(x))


def table(res: dict) -> str:
    cov, pooled, per = res["coverage"], res["pooled"], res["per_fold"]
    rows = [per[k] for k in sorted(per)]
    not_served = "; ".join(f"fold {k}: {per[k]['artifact']} scored, {per[k]['served']} served" for k in sorted(per)
                           if per[k].get("served") and per[k].get("artifact") and per[k]["served"] != per[k]["artifact"])
    lines = [f"{len(cov['present'])} of {cov['folds']} folds (seed {cov['seed']}), {res['n']} films tested once each"
             + ("" if cov["complete"] else f"; **folds {cov['missing']} missing: not every film is scored yet**"), "",
             "Recipe (each fold's train_config.json less its per-run options): " + ", ".join(
                 f"{k} {json.dumps(v, default=str)}" for k, v in (res.get("recipe") or {}).items()), "",
             *([f"**A device would serve another artifact than the one scored here** ({not_served}): "
                "`--format served` scores what it serves.", ""] if not_served else []),
             *_point_line(res.get("pneumonia_point"), bool(res.get("versus_baseline"))),
             *(["Folds without a stored threshold (the pooled figure needing it is not given): " + "; ".join(
                 f"{k}: folds {v}" for k, v in pooled["folds_without_threshold"].items()), ""]
               if pooled.get("folds_without_threshold") else []),
             f"| figure | goal | pooled out-of-fold | verdict (pooled) | mean +- sd over folds | per fold "
             f"({', '.join(str(k) for k in sorted(per))}) |", "|---|---|---|---|---|---|"]
    for key, label, get, goal, direction in R.COLUMNS:
        vals = [get(r) for r in rows]
        v = R._num(get(pooled))
        g = "-" if goal is None else ((">= " if direction > 0 else "<= ") + f"{goal:g}")
        verdict = "-" if goal is None else R.verdict(v, float("nan"), goal, direction)
        if goal is not None:
            verdict += R.unsettled(goal, pooled.get("ci95", {}).get(key), (pooled.get("ci95_refitted") or {}).get(key))
        if key == "ece" and goal is not None and (fin := [x for x in map(R._num, vals) if np.isfinite(x)]):
            # pooling more films lowers ECE by itself (fewer empty, noisy bins): a device serves one fold's model
            over = sum(x > goal for x in fin)
            verdict += (f"; per fold {'met on every fold' if not over else f'missed on {over} of {len(fin)} folds'} "
                        "(pooled ECE is lower by construction)")
        lines.append(f"| {label} | {g} | {_v(get(pooled))} | {verdict} | {_pm(vals)} | "
                     f"{', '.join(_v(x) for x in vals)} |")
    site = [r.get("site_shift", {}).get(E.SITE_B, {}) for r in rows]
    if any(site):
        for what, label in (("accuracy", "accuracy"), ("pair_normals_called_normal", "NIH normals called normal")):
            vals = [s.get(what) for s in site]
            lines.append(f"| films {E.SITE_B}: {label} | {'most (> 0.5)' if what != 'accuracy' else '-'} | - | - | "
                         f"{_pm(vals)} | {', '.join(R._f(R._num(x)) for x in vals)} |")
        for what, label in (("tuberculosis_called_normal", "TB films given a normal decision"),
                            ("pneumonia_called_normal", "pneumonia films given a normal decision")):
            vals = [_site_b_counts(s)[what] for s in site]
            if all(v is not None for v in vals):
                lines.append(f"| films {E.SITE_B}: {label} | - | {sum(vals)} (sum) | - | {_pm(vals)} | "
                             f"{', '.join(str(v) for v in vals)} |")
    ci = pooled["ci95"]
    lines += ["", f"Pooled 95% bootstrap intervals ({ci['n_boot']} resamples of the {ci.get('patients', '?')} "
                  f"{ci['unit']}s, each with all their films): accuracy "
                  f"{R._f(ci['accuracy'][0])}-{R._f(ci['accuracy'][1])}, normal-vs-pneumonia AUC within "
                  f"{ci['pair_source']} {R._f(ci['pair_auc'][0])}-{R._f(ci['pair_auc'][1])}, TB-vs-rest AUC "
                  f"{R._f(ci['tb_auc'][0])}-{R._f(ci['tb_auc'][1])}.", ""]
    srcs = sorted(pooled["by_source"])
    lines += ["| accuracy per source | " + " | ".join(f"{s} (films)" for s in srcs) + " |", "|---|" + "---|" * len(srcs),
              "| pooled | " + " | ".join(f"{pooled['by_source'][s]['accuracy']:.3f} ({pooled['by_source'][s]['n']})"
                                        for s in srcs) + " |",
              "| mean +- sd over folds | " + " | ".join(
                  _pm([r["by_source"].get(s, {}).get("accuracy") for r in rows]) for s in srcs) + " |"]
    rs = pooled.get("refer_rule_by_source") or {}
    if rs:
        lines += ["| referred by the refer rule (pooled) | " + " | ".join(
                      R._f(rs.get(s, {}).get("referred")) for s in srcs) + " |",
                  "| accuracy of films not referred (pooled) | " + " | ".join(
                      R._f(rs.get(s, {}).get("accuracy_not_referred")) for s in srcs) + " |"]
        low = [f"{s} {R._f(rs[s]['accuracy_not_referred'])}" for s in srcs
               if s in rs and rs[s]["accuracy_not_referred"] < OP.REFER_TARGET_ACCURACY]
        if low:
            lines += ["", f"**The accuracy of films not referred misses {OP.REFER_TARGET_ACCURACY:.2f} on " + ", ".join(low)
                      + "**, whatever the pooled figure's verdict: it leans on the other sources' films."]
    vb = res.get("versus_baseline")
    if vb:
        lines += ["", f"Against the baseline recipe, on the folds both hold ({len(vb['bundles'])} of "
                      f"{cov['folds']}; " + ", ".join(
                      f"fold {k}: `{b}`" for k, b in vb["bundles"].items()) + "); the recipes differ in: " + (
                      "; ".join(f"{k} {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}"
                                for k, (a, b) in vb["recipe_difference"].items()) or "nothing (a rerun)")
                  + ". A difference whose interval spans 0 is a tie.", "",
                  *_tb_target_warning(vb.get("tb_targets")), *_pn_target_warning(vb.get("pneumonia_targets")),
                  *_refer_rule_warning(vb.get("refer_shares")),
                  *_versus_table(vb["baseline_pooled"], vb["baseline_per_fold"], vb, "baseline", "this recipe"),
                  *_ece_fold_lines(vb["baseline_per_fold"], vb), *_site_b_lines(vb.get("site_b") or {})]
    for name, wi in (res.get("what_if") or {}).items():
        lines += ["", f"What if ({name}; not what a device does today): {wi['what']}; every threshold refitted after it "
                      "on each fold's validation films, the test films only scored."
                  + _fitted_text(wi["fitted_per_fold"])
                  + (" **Refitted at the deployed targets, folds " + ", ".join(map(str, wi["refit_drift"]))
                     + " do not give back their stored thresholds (this CPU rounds their validation outputs otherwise)"
                     ": their differences hold that part too.**" if wi.get("refit_drift") else ""), "",
                  *_versus_table(wi.get("base_pooled") or pooled, wi.get("base_per_fold") or per, wi,
                                 "as deployed" + (f" (folds {', '.join(map(str, sorted(wi['base_per_fold'])))})"
                                                  if wi.get("base_per_fold") else ""), f"what if ({name})"),
                  *_refer_pooled_lines(wi, wi.get("base_pooled") or pooled)]
    bv = pooled.get("pair_auc_by_view") or {}
    if bv.get("by_view"):
        lines += ["", f"Normal vs pneumonia by view position ({bv['source']}, pooled): " + ", ".join(
            f"{v} AUC {R._f(R._num(x['auc']))} ({x['normal']} normal, {x['pneumonia']} pneumonia)"
            for v, x in bv["by_view"].items()) + f"; the view alone (PA scored higher): "
            f"{R._f(R._num(bv.get('view_alone_auc')))}."]
    return "\n".join(lines + _shift_table(rows))


def _shift_table(rows: list[dict]) -> list[str]:
    """Every simulated site change the folds were scored with (``--shifts``), when more than site B: accuracy and
    NIH normals called normal over folds, the sick films given a normal decision summed."""
    names = [n for n in E.SHIFTS if all(n in (r.get("site_shift") or {}) for r in rows)]
    if not rows or names in ([], [E.SITE_B]):
        return []
    out = ["", "Simulated site changes, each on the test films (benchmarks/study/evaluate.py SHIFTS; each fold's "
               "model at its own thresholds; mean +- sd over folds, counts summed):",
           "", "| change | accuracy | TB sensitivity at the stored threshold | TB films given a normal decision | "
               "pneumonia films given a normal decision | NIH normals called normal |", "|---|---|---|---|---|---|"]
    for n in names:
        c = [_site_b_counts(r["site_shift"][n]) for r in rows]
        counts = [sum(x[k] for x in c) if all(x[k] is not None for x in c) else "-"
                  for k in ("tuberculosis_called_normal", "pneumonia_called_normal")]
        out.append(f"| {n} | {_pm([x['accuracy'] for x in c])} | {_pm([x['tb_sensitivity'] for x in c])} | "
                   f"{counts[0]} | {counts[1]} | {_pm([x['nih_normals_called_normal'] for x in c])} |")
    return out


def _site_b_lines(sb: dict) -> list[str]:
    """Simulated site B fold by fold against the baseline: accuracy, TB sensitivity at the stored threshold, the
    sick films given a normal decision (sums), the NIH normals called normal."""
    if not sb:
        return []
    keys = (("accuracy", "accuracy"), ("tb_sensitivity", "TB sensitivity at the stored threshold"),
            ("tuberculosis_called_normal", "TB films given a normal decision"),
            ("pneumonia_called_normal", "pneumonia films given a normal decision"),
            ("nih_normals_called_normal", "NIH normals called normal"))
    folds = list(sb)
    lines = ["", f"Simulated {E.SITE_B} (benchmarks.study.evaluate.SHIFTS: the test films changed), fold by fold "
                 f"({', '.join(map(str, folds))}), baseline -> this recipe; counts summed over the folds:", "",
             "| figure | baseline | this recipe | folds where this recipe is higher |", "|---|---|---|---|"]
    for k, label in keys:
        a, b = [sb[f]["baseline"].get(k) for f in folds], [sb[f]["this"].get(k) for f in folds]
        if any(x is None for x in a + b):
            continue
        count = k.endswith("_normal") and k != "nih_normals_called_normal"
        show = (lambda v: f"{sum(v)} ({', '.join(map(str, v))})") if count else \
            (lambda v: ", ".join(R._f(x) for x in v))
        lines.append(f"| {label} | {show(a)} | {show(b)} | {sum(y > x for x, y in zip(a, b))} of {len(folds)} |")
    return lines


def _refer_pooled_lines(wi: dict, base_pooled: dict) -> list[str]:
    """For the what-ifs ``refer_pooled`` and ``refer_share``: the thresholds (and shares) each fold got, what a
    recipe would store, how wide the share referred and the accuracy kept are once the thresholds' own error counts
    (both ways of fitting, the same draws), for the pooled films and each fold's model, and the rule per source."""
    share = "refer_share" in wi
    rp = wi.get("refer_share") if share else wi.get("refer_pooled")
    if not rp:
        return []
    both = wi.get("ci95_refitted_both") or {}
    allf = rp["all_folds"]
    how = "fixed share" if share else "pooled"

    def span(side, key):
        ci = (both.get(side) or {}).get(key)
        return f"{R._f(ci[0])}-{R._f(ci[1])} (width {ci[1] - ci[0]:.3f})" if ci else "-"

    def at(d, k):
        return d.get(k, d.get(str(k)))

    deployed_rule = ("the kept-accuracy rule" if rp.get("as_deployed_share") is None else
                     f"a share of {rp['as_deployed_share']:.0%}")
    if share:
        first = (f"Refer thresholds per fold, as deployed ({deployed_rule} on its own validation films) -> a "
                 "fixed share of its own validation films, the share chosen leave-one-fold-out: " + "; ".join(
                     f"fold {k}: {R._f(at(rp['as_deployed'], k))} -> {R._f(v)} (share "
                     f"{R._f(at(rp['share_leave_one_fold_out'], k))})" for k, v in rp["leave_one_fold_out"].items())
                 + f". The share every fold's validation films choose together ({allf['validation_films']} films, "
                   f"folds {', '.join(map(str, allf['folds']))}; the kept-accuracy rule's threshold there "
                   f"{R._f(allf['refer_below'])}): **{R._f(allf['share'])}** (what a recipe would store).")
    else:
        first = ("Refer thresholds per fold, as deployed (each fitted on its own validation films) -> leave-one-fold-out "
                 "(fitted on the other folds' validation films pooled): " + "; ".join(
                     f"fold {k}: {R._f(at(rp['as_deployed'], k))} -> {R._f(v)}"
                     for k, v in rp["leave_one_fold_out"].items())
                 + f". Fitted on every fold's validation films pooled ({allf['validation_films']} films, folds "
                   f"{', '.join(map(str, allf['folds']))}): **{R._f(allf['refer_below'])}** (what a recipe would store).")
    redrawn = wi.get("ci95_refitted_redrawn") or {}
    if redrawn:
        both = dict(both, redrawn=redrawn)
    lines = ["", first, "", "95% intervals with every threshold fitted again on resampled validation patients (the same "
             "draws for every column; test patients resampled too" + (
                 "; the fixed-share column holds each fold's share, as a rebuild of the recipe holds the share it "
                 "stores; the last column chooses the shares again on each draw's films, so that the share's own "
                 "error counts too" if share else "") + "):", "",
             f"| figure | as deployed (per fold) | {'fixed share, leave-one-fold-out' if share else 'leave-one-fold-out (pooled)'} |"
             + (" share chosen again in each draw |" if redrawn else ""), "|---|---|---|" + ("---|" if redrawn else "")]
    cols = ("base", "other") + (("redrawn",) if redrawn else ())
    rows_shown = [("referred", "referred by the refer rule"), ("acc_kept", "accuracy of films not referred")]
    rows_shown += [(f"referred_fold{k}", f"referred, fold {k}'s model alone") for k in rp["leave_one_fold_out"]]
    rows_shown += [(f"acc_kept_fold{k}", f"accuracy kept, fold {k}'s model alone") for k in rp["leave_one_fold_out"]
                   if (both.get("base") or {}).get(f"acc_kept_fold{k}")]
    for key, label in rows_shown:
        lines.append(f"| {label} | " + " | ".join(span(c, key) for c in cols) + " |")
    ratios = [(o[1] - o[0]) / (b[1] - b[0]) for k in rp["leave_one_fold_out"]
              if (b := (both.get("base") or {}).get(f"referred_fold{k}")) and
              (o := (both.get("other") or {}).get(f"referred_fold{k}")) and b[1] > b[0]]
    if ratios:
        lines += ["", f"Width of one model's referral interval, {how} / per fold: "
                      f"{', '.join(f'{x:.2f}' for x in ratios)} (median {np.median(ratios):.2f}; narrower in "
                      f"{sum(x < 1 for x in ratios)} of {len(ratios)} folds). The pooled row averages the folds' "
                      "errors (per-fold thresholds err independently, leave-one-fold-out ones share most of their "
                      "films); a clinic gets one model, so its own row is the one it lives with."]
    again = [(o[1] - o[0]) / (b[1] - b[0]) for k in rp["leave_one_fold_out"]
             if (b := (both.get("base") or {}).get(f"referred_fold{k}")) and
             (o := redrawn.get(f"referred_fold{k}")) and b[1] > b[0]]
    if again:
        lines += ["", f"With the share chosen again in each draw, the same ratios: {', '.join(f'{x:.2f}' for x in again)} "
                      f"(median {np.median(again):.2f}; narrower in {sum(x < 1 for x in again)} of {len(again)} folds): "
                      "a stored share makes one build's referrals predictable; which share is right is known no "
                      "better than the kept-accuracy curve it is read from."]
    lows = [o[0] - b[0] for k in rp["leave_one_fold_out"]
            if (b := (both.get("base") or {}).get(f"acc_kept_fold{k}")) and
            (o := (both.get("other") or {}).get(f"acc_kept_fold{k}"))]
    if lows:
        lines += ["", f"Lower bound of one model's kept-accuracy interval, {how} minus per fold: "
                      f"{', '.join(f'{x:+.3f}' for x in lows)} (median {np.median(lows):+.3f})."]
    a, b = base_pooled.get("refer_rule_by_source") or {}, (wi.get("pooled") or {}).get("refer_rule_by_source") or {}
    if a and b:
        lines += ["", f"| source | referred, as deployed | referred, {how} | accuracy kept, as deployed | "
                      f"accuracy kept, {how} |", "|---|---|---|---|---|"]
        lines += [f"| {s} | {R._f(a[s]['referred'])} | {R._f(b.get(s, {}).get('referred'))} | "
                  f"{R._f(a[s]['accuracy_not_referred'])} | {R._f(b.get(s, {}).get('accuracy_not_referred'))} |"
                  for s in sorted(a)]
    return lines


def _point_line(pp: dict | None, baseline: bool) -> list[str]:
    """What the rows at the pneumonia point were fitted for (and whether fitted again here)."""
    if not pp or not pp.get("targets"):
        return []
    if pp.get("refitted"):
        whose = " and the baseline's" if baseline else ""
        return [f"Every fold's pneumonia point (reported, not applied){whose} fitted again on its validation films for "
                f"{_pcts(pp['targets'])} sensitivity (`--pneumonia-point`).", ""]
    return [f"The pneumonia point (reported, not applied) as each fold stored it: fitted on its validation films for "
            f"{_pcts(pp['targets'])} sensitivity.", ""]


def _pcts(v) -> str:
    return "/".join(f"{x:.0%}" for x in v)


def _pn_target_warning(targets: dict | None) -> list[str]:
    """A line when the two sides' pneumonia points were fitted for other validation sensitivities: the rows at the
    pneumonia point then differ by that too (nothing else does: the device does not apply it)."""
    if not targets or targets["baseline"] == targets["this"]:
        return []
    return [f"**The pneumonia points were fitted for other validation sensitivities (baseline {_pcts(targets['baseline'])}, "
            f"this recipe {_pcts(targets['this'])}): the rows at the pneumonia point differ by that too.**", ""]


def _tb_target_warning(targets: dict | None) -> list[str]:
    """A line (and a blank one) when the two sides' TB thresholds were fitted for other validation sensitivities
    (e.g. bundles converted before and after operating_point.TB_FIT_SENSITIVITY changed): the TB rows and the
    refer rule, fitted after the TB threshold, then differ by that as well as by the recipe."""
    if not targets or targets["baseline"] == targets["this"]:
        return []
    return [f"**The TB thresholds were fitted for other validation TB sensitivities (baseline {_pcts(targets['baseline'])}, "
            f"this recipe {_pcts(targets['this'])}): the TB rows and the refer rule (fitted after the TB threshold) "
            "differ by that too, not by the recipe alone.**", ""]


def _refer_rule_warning(shares: dict | None) -> list[str]:
    """A line (and a blank one) when the two sides' refer thresholds were fitted by different rules (a share of the
    validation films, convert --refer-share, against 90% accuracy on the films kept): the referral, kept-accuracy and
    called-normal rows then differ by the rule as well as by the recipe."""
    if not shares or shares["baseline"] == shares["this"]:
        return []
    def rule(x):
        return "90% accuracy on the films kept" if x is None else f"a share of {x:.0%} of the validation films"
    return [f"**The refer thresholds were fitted by different rules (baseline: {rule(shares['baseline'])}; this recipe: "
            f"{rule(shares['this'])}): the referral, kept-accuracy and called-normal rows differ by the rule too, not "
            "by the recipe alone.**", ""]


def _fitted_text(fitted: dict) -> str:
    """What a what-if fitted in each fold (the bias, the TB and pneumonia thresholds), as one sentence."""
    def one(x: dict) -> str:
        parts = [f"bias (normal, pneumonia, TB) {', '.join(f'{b:+.2f}' for b in x['bias'])}"] if x.get("bias") else []
        parts += [f"temperature of the combined outputs {x['temperature_of_mean']:.2f}"] \
            if x.get("temperature_of_mean") is not None else []
        t = (x.get("thresholds") or {}).get(OP.TB)
        parts += [f"TB threshold {t:.3f}"] if t is not None else []
        parts += [f"pneumonia point {x['pneumonia_threshold']:.3f}"] if x.get("pneumonia_threshold") is not None else []
        below = (x.get("thresholds") or {}).get("refer_below")
        parts += [f"refer below {below:.2f}"] if below is not None else []
        return ", ".join(parts)
    return " Fitted per fold: " + "; ".join(f"fold {k}: {one(x)}" for k, x in fitted.items()) + "." if fitted else ""


def _ece_fold_lines(base_per: dict, cmp: dict) -> list[str]:
    """The mean of the folds' own ECE (what one build is judged on) on both sides, with the paired interval of its
    difference (``rule_deltas``): a per-fold ECE on ~250 films moves by about 0.015 with the films drawn, so a
    build-to-build difference of that size is a tie (docs/lpft/SMOOTH.md)."""
    ci = cmp["delta_ci95"].get("ece_fold_mean")
    folds = sorted(cmp["per_fold"], key=int)
    a = [R._num(base_per[k].get("ece")) for k in folds]
    b = [R._num(cmp["per_fold"][k].get("ece")) for k in folds]
    if not ci or not all(np.isfinite(a + b)):
        return []
    ma, mb = float(np.mean(a)), float(np.mean(b))
    return ["", f"ECE per fold, mean over the {len(folds)} folds (what one build's ECE is judged on): {ma:.3f} -> "
                f"{mb:.3f}, difference {mb - ma:+.3f} (95% interval {ci[0]:+.3f} to {ci[1]:+.3f}, basic bootstrap over the "
                "patient resamples of the threshold rows" + ("; a tie" if ci[0] <= 0 <= ci[1] else "") + ")."]


def _versus_table(base_pooled: dict, base_per: dict, cmp: dict, name_a: str, name_b: str) -> list[str]:
    """Rows of B (``cmp``, from ``versus``) against A: pooled figures, the pooled difference with its paired
    interval, the per-fold differences as mean +- sd, and B's figure in each fold."""
    refit = cmp.get("delta_ci95_refitted")
    extra = (" 95% interval, thresholds fitted again on resampled validation patients |", "---|") if refit else ("", "")
    lines = [f"| figure | goal | pooled, {name_a} | pooled, {name_b} | difference | 95% interval ({cmp['unit']}s "
             f"resampled) |{extra[0]} per-fold difference, mean +- sd | per fold, {name_b} |",
             "|---|---|---|---|---|---|" + extra[1] + "---|---|"]
    folds = sorted(cmp["per_fold"], key=int)
    arows, brows = [base_per[k] for k in folds], [cmp["per_fold"][k] for k in folds]
    for key, label, get, goal, direction in R.COLUMNS:
        a, b = get(base_pooled), get(cmp["pooled"])
        g = "-" if goal is None else ((">= " if direction > 0 else "<= ") + f"{goal:g}")
        d = R._num(b) - R._num(a)
        ci = cmp["delta_ci95"].get(key)
        per_d = [R._num(get(rb)) - R._num(get(ra)) for ra, rb in zip(arows, brows)]
        counts = all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b))
        shown = "-" if not np.isfinite(d) else (f"{int(d):+d}" if counts else f"{d:+.3f}")
        rc = (refit or {}).get(key)
        rcol = (f" {f'{rc[0]:+.3f} to {rc[1]:+.3f}' if rc else '-'} |") if refit else ""
        lines.append(f"| {label} | {g} | {_v(a)} | {_v(b)} | {shown} | "
                     f"{f'{ci[0]:+.3f} to {ci[1]:+.3f}' if ci else '-'} |{rcol} {_pm(per_d)} | "
                     f"{', '.join(_v(get(r)) for r in brows)} |")
    return lines


def _scored(row: dict, fmt: str) -> str:
    """What one fold scored, and whether a device would serve it."""
    art, serves = row.get("artifact") or fmt, row.get("served")
    if serves is None:
        return f"{art}; which artifact its bundle serves was not recorded"
    return art if serves == art else f"{art}; **a device would serve {serves} from this bundle, not {art}**"


def _sources_exist(paths) -> bool:
    """True when every path is a bundle folder or a file (a saved-folds file; read later); otherwise says which
    is neither (stderr)."""
    for p in paths:
        if not saved_source(p)[0].is_file() and not (Path(p) / "bundle.json").is_file():
            print(f"error: {p} is neither a bundle folder (with bundle.json) nor a saved-folds file "
                  "(--save-folds)", file=sys.stderr)
            return False
    return True


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = float("nan")
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{text}: a sensitivity between 0 and 1 (e.g. 0.95)")
    return x


def what_ifs(class_bias: bool = False, tb=(), pneumonia=(), refer_pooled: bool = False,
             refer_share: bool = False) -> tuple[WhatIf, ...]:
    """The what-ifs the command line asks for, one each."""
    return ((WhatIf("class_bias", class_bias=True),) if class_bias else ()) + (
        (WhatIf("refer_pooled", refer_pooled=True),) if refer_pooled else ()) + (
        (WhatIf("refer_share", refer_share=True),) if refer_share else ()) + tuple(
        WhatIf(f"tb_sensitivity_{_pct(s)}", tb_sensitivity=s) for s in dict.fromkeys(tb)) + tuple(
        WhatIf(f"pneumonia_sensitivity_{_pct(s)}", pneumonia_sensitivity=s) for s in dict.fromkeys(pneumonia))


def _shift_names(text: str) -> tuple[str, ...]:
    """``--shifts``: 'all' or names of ``SHIFTS`` joined by commas (argparse type)."""
    if text.strip() == "all":
        return tuple(E.SHIFTS)
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if bad := [x for x in names if x not in E.SHIFTS]:
        raise argparse.ArgumentTypeError(f"unknown simulated change {bad[0]!r}; known: {', '.join(E.SHIFTS)}, or all")
    return tuple(dict.fromkeys(names + (E.SITE_B,)))  # site B always: the report's own rows read it


def _pct(s: float) -> str:
    """A sensitivity as a what-if's name part: per cent, no dot (``benchmarks.selection`` splits keys on dots)."""
    return f"{s * 100:g}".replace(".", "_")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", type=Path, help="one bundle per fold (python -m convert FOLD_RUN --out ...), "
                   "or a saved-folds file (--save-folds) in place of some or all of them")
    p.add_argument("--format", default=F.DEPLOYED, choices=sorted(F.FORMATS) + [SERVED],
                   help=f"artifact scored (default %(default)s; {SERVED}: each bundle's served artifact)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of patients")
    p.add_argument("--no-shift", action="store_true", help="skip the simulated site B per fold")
    p.add_argument("--shifts", default=E.SITE_B, type=_shift_names, metavar="NAMES",
                   help="simulated site changes scored on each fold's bundle, comma-separated names of "
                        "benchmarks.study.evaluate.SHIFTS, or 'all' (default: site B alone); a saved fold keeps those "
                        "it was scored with")
    p.add_argument("--class-bias", action="store_true", help="what-if: also score each fold with a per-class bias "
                   "fitted on its validation films (operating_point.fit_class_bias), thresholds refitted after it")
    p.add_argument("--tb-sensitivity", action="append", type=_fraction, default=[], metavar="S",
                   help=f"what-if (repeat for more): the TB threshold fitted on each fold's validation films for TB "
                        f"sensitivity S (deployed: {OP.TB_FIT_SENSITIVITY}; {OP.TB_SENSITIVITY} before 2026-12-03), "
                        "the refer threshold refitted after it")
    p.add_argument("--pneumonia-sensitivity", action="append", type=_fraction, default=[], metavar="S",
                   help=f"what-if (repeat for more): the reported pneumonia point fitted for validation sensitivity S "
                        f"(deployed: {OP.PNEUMONIA_FIT_SENSITIVITY}; {OP.PNEUMONIA_FIT_BEFORE} before 2026-12-05)")
    p.add_argument("--pneumonia-point", type=_fraction, default=None, metavar="S",
                   help="every fold's reported pneumonia point, the baseline's too, fitted again on its validation "
                        f"films for sensitivity S before scoring, as a conversion fitting it for S would store it "
                        f"(stored now: {OP.PNEUMONIA_FIT_SENSITIVITY}); nothing else changes")
    p.add_argument("--refer-pooled", action="store_true",
                   help="what-if: one refer threshold for the recipe, judged leave-one-fold-out (each fold's fitted on "
                        "the other folds' validation films pooled, its test patients left out), against per-fold "
                        "fitting, with intervals refitted on resampled validation patients; the report also gives "
                        "the threshold all folds' validation films choose (what recipes/*.toml [convert] would store)")
    p.add_argument("--refer-share", action="store_true",
                   help="what-if: each fold refers a fixed share of its own validation films (a quantile of their top "
                        "probability), the share the kept-accuracy rule refers on the other folds' validation films "
                        "pooled (leave-one-fold-out), against per-fold fitting, intervals refitted as --refer-pooled's; "
                        "the report gives the share all folds' validation films choose (docs/refer-share)")
    p.add_argument("--mean-with", nargs="+", action="append", type=Path, default=[], metavar="BUNDLE",
                   help="what-if (repeat for more): another training of the same folds (its fold bundles or saved-folds "
                        "file, with validation outputs): each fold's outputs combined with its (a geometric mean, as "
                        "views), temperature and thresholds refitted on the combined validation outputs; scored on the "
                        "folds every training holds. Give it after the bundles (it takes every path that follows)")
    p.add_argument("--baseline", nargs="+", type=Path, default=[], metavar="BUNDLE",
                   help="fold bundles (or a saved-folds file) of another recipe trained on the same folds (e.g. "
                        "CV_OUT/folds.json of the default's make cv): the report "
                        "adds the pooled differences (this recipe - baseline) with paired 95%% intervals")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write a markdown report here (with the command, commit, "
                   "date and CPU)")
    p.add_argument("--title", default="Cross-validation, out of fold", help="the markdown report's title")
    p.add_argument("--save-folds", type=Path, default=None, metavar="FILE",
                   help="also write every fold's scored test films (calibrated outputs, thresholds, site B figures) "
                        "and its validation films' outputs (what the what-ifs refit on) to FILE: given later in place "
                        "of the bundles (or to --baseline), it reports, pairs and runs what-ifs without them")
    a = p.parse_args(argv)
    if not _sources_exist(a.bundles + a.baseline + [x for m in a.mean_with for x in m]):
        return 2
    from benchmarks.sysinfo import machine_info, report_header

    t0 = time.time()
    try:
        res = crossval(a.bundles, a.format, a.bootstrap, not a.no_shift,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True), baseline=a.baseline,
                       what_ifs=what_ifs(a.class_bias, a.tb_sensitivity, a.pneumonia_sensitivity, a.refer_pooled,
                                         a.refer_share),
                       validation=a.save_folds is not None, mean_with=a.mean_with, shifts=a.shifts,
                       pneumonia_point=a.pneumonia_point)
    except FoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folds = res.pop("folds")
    m = machine_info()
    res["provenance"] = {"command": "python -m benchmarks.crossval " + shlex.join(
        str(x) for x in (argv if argv is not None else sys.argv[1:])), "machine": m, "seconds": round(time.time() - t0, 1)}
    if a.save_folds:
        save_folds(folds, a.save_folds, a.format, res["per_fold"], res["provenance"])
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2, default=E.jsonable) + "\n")
    text = table(res)
    print(text)
    print(f"{m['date']}; {m['cpu']}; commit {m['commit']}")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(report_header(a.title, res["provenance"]["command"], m,
                                      sources=[x for f in folds for x in f.sources]) + "\n"
                        + "\n".join(f"- fold {k}: `{b}` ({_scored(res['per_fold'][k], res['format'])})"
                                    for k, b in res["bundles"].items())
                        + "\n\nEach fold's model scored its own test fold through the device runtime, with its own "
                        "temperature and thresholds; the pooled column scores all of them at once (verdicts on it), "
                        "the next two show how much one split moves each figure.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
