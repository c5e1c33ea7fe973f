"""From a training run to a verified model bundle: calibrate on validation, export each format, check each
artifact through ``edge_runtime`` against its Keras parent, write metadata, model card and checksums."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from convert import export as E
from convert.card import model_card
from edge_runtime import bundle as B
from edge_runtime import metrics as M
from edge_runtime import operating_point as OP
from edge_runtime import orientation, scope
from edge_runtime import views as V
from edge_runtime.cli_common import rate_text
from edge_runtime.formats import BASELINE, FORMATS
from edge_runtime.metadata import ModelMetadata

log = logging.getLogger(__name__)
CALIBRATION_FILMS = 300  # training films drawn (seed 0) as representative data for INT8 calibration


def parity(backend, images: np.ndarray, reference: np.ndarray) -> dict:
    """Run an artifact through the runtime backend on the images; compare with the reference probabilities."""
    probs = backend.run_batch(images)
    return {"probs": probs, **M.agreement(probs, reference)}


def _nih_auc(res: dict) -> float:
    """Normal-vs-pneumonia AUC on the validation films of the source that holds both classes (the most films of
    the rarer one; NIH on the development data), read from the data as ``benchmarks.study.evaluate.pair_source``
    does, never from a source's name. NaN where no source holds both."""
    src = (res.get("val") or {}).get("by_source", {})

    def both(r):
        pc = r.get("per_class", {})
        return min(int(pc.get(c, {}).get("support", 0) or 0) for c in ("normal", "pneumonia"))

    held = {k: both(v) for k, v in src.items() if both(v) > 0}
    if not held:
        return float("nan")
    pair = src[max(sorted(held), key=held.get)]
    return float(pair.get("per_class", {}).get("pneumonia", {}).get("auc", float("nan")))


def choose_int8(results: dict, backend: str = "litert") -> dict | None:
    """Which of ``backend``'s INT8 files that passed their parity check the runtime serves first: the QAT file
    (quantised from the QAT model), else the best of the others on the validation films (accuracy, then NIH
    normal-vs-pneumonia AUC). None when fewer than two passed. Measured out of fold (``python -m benchmarks.paired
    B B --format tflite_int8_ptq --format-b tflite_int8``: docs/qat_vs_ptq/report.md, cv5r.md, cv5v.md; eight
    trainings): QAT INT8 scored accuracy at least as high as post-training INT8 of the same float model in 7 of 8
    and moved 2-3x less between CPU kernels (docs/drift). Agreement with the float model, which this rule ranked
    first until 2026-12-03, is not a measure of quality: QAT fine-tunes the model, so its file agrees less with the
    float model by design (89-95%), and on docs/cv5v folds 1 and 2 that rule served the post-training file, which
    scored lower accuracy and NIH AUC on the test films of both folds (and referred 41% of fold 2's films against
    30%). The validation figures of every candidate stay in the record (``candidates``)."""
    def row(key, r):
        acc = float(((r.get("val") or {}).get("pooled") or {}).get("accuracy", float("nan")))
        return {"format": key, "parent": r.get("parent"), "agreement_vs_float": r.get("agreement_vs_float"),
                "max_prob_diff_vs_float": r.get("max_prob_diff_vs_float"), "val_accuracy": acc,
                "val_nih_pneumonia_auc": _nih_auc(r)}

    rows = [row(k, r) for k, r in results.items()
            if FORMATS[k].backend == backend and FORMATS[k].int8 and r.get("passed")]
    if len(rows) < 2:
        return None
    nan0 = lambda v: -1.0 if v is None or v != v else v  # noqa: E731 - NaN/None sort last
    rows.sort(key=lambda r: (r["parent"] == "qat", nan0(r["val_accuracy"]), nan0(r["val_nih_pneumonia_auc"])),
              reverse=True)
    best, other = rows[0], rows[1]
    figures = (f"validation accuracy {best['val_accuracy']:.3f} vs {other['val_accuracy']:.3f}, NIH "
               f"normal-vs-pneumonia AUC {best['val_nih_pneumonia_auc']:.3f} vs {other['val_nih_pneumonia_auc']:.3f}, "
               f"agreement with the float model {100 * nan0(best['agreement_vs_float']):.1f}% vs "
               f"{100 * nan0(other['agreement_vs_float']):.1f}%")
    if best["parent"] == "qat" and other["parent"] != "qat":
        why = (f"{best['format']} (QAT parent) passed its parity check, and QAT INT8 measured at least as good as "
               f"post-training INT8 out of fold, with less rounding drift; against {other['format']}: {figures}")
    else:
        why = (f"{best['format']} ({best['parent']} parent) scored best on the validation films among the INT8 files "
               f"that passed (no QAT file among them); against {other['format']}: {figures}")
    return {"backend": backend, "chosen": best["format"], "why": why, "candidates": rows}


def _require_run(run_dir: Path) -> None:
    missing = [f for f in ("metadata.json", "model_float.keras", "split.csv") if not (run_dir / f).is_file()]
    if missing:
        raise SystemExit(f"{run_dir}: not a training run (no {', '.join(missing)})")


def check_members(run_dir: Path, members: list[Path]) -> list[dict]:
    """Why several trainings cannot be served as one ensemble (SystemExit), or a description of each (the first
    is ``run_dir``). They must read films the same way (labels, input preparation) and hold the same split film
    for film: the operating points are fitted on validation films that no member trained on, and the test films
    are unseen by all of them. Either all have a QAT model or none (the INT8 file quantises them together)."""
    from train import data as D
    from train import recipe as R

    runs = [run_dir, *members]
    for r in members:
        _require_run(r)
    if len({r.resolve() for r in runs}) != len(runs):
        raise SystemExit("an ensemble member is given twice: " + ", ".join(map(str, runs)))
    metas = [ModelMetadata.load(r / "metadata.json") for r in runs]
    splits = []
    for r in runs:
        if not (r / "split.csv").is_file():
            raise SystemExit(f"{r}: no split.csv; ensemble members must share one patient split")
        splits.append({side: sorted(s.path for s in v) for side, v in D.load_split(r / "split.csv").items()})
    described, recipes, first_cfg = [], [], None
    for r, m, sp in zip(runs, metas, splits):
        if m.labels != metas[0].labels or m.preprocess != metas[0].preprocess:
            raise SystemExit(f"{r}: reads films otherwise than {run_dir} (labels {list(m.labels)} vs "
                             f"{list(metas[0].labels)}; input {m.preprocess.describe()} vs "
                             f"{metas[0].preprocess.describe()}); ensemble members must be trained alike")
        if m.data_hash != metas[0].data_hash:
            raise SystemExit(f"{r}: trained on other data than {run_dir} (data hash {m.data_hash} vs "
                             f"{metas[0].data_hash}); ensemble members must be trained on the same films")
        if sp != splits[0]:
            differ = [side for side in sorted(set(sp) | set(splits[0])) if sp.get(side) != splits[0].get(side)]
            raise SystemExit(f"{r}: its split differs from {run_dir}'s ({', '.join(differ)} films); train every "
                             "member with the same --seed (and --folds/--fold), varying only --init-seed")
        cfg = json.loads((r / "train_config.json").read_text()) if (r / "train_config.json").is_file() else {}
        seed = cfg.get("seed", m.split.get("seed"))
        init = cfg.get("init_seed")
        first_cfg = cfg if first_cfg is None else first_cfg
        described.append({"run_dir": str(r), "model_name": m.model_name, "model_version": m.model_version,
                          "seed": seed, "init_seed": seed if init is None else init,
                          "qat": (r / "model_qat.h5").is_file(), "options": R.member_options(cfg, first_cfg)})
        recipes.append(json.dumps(R.comparable(cfg), sort_keys=True, default=str))
    # the same seeds repeat a training, unless the trainings differ otherwise (e.g. one with --site-augment)
    seeds = [(d["seed"], d["init_seed"], rc) for d, rc in zip(described, recipes)]
    if len(set(seeds)) != len(seeds):
        raise SystemExit("ensemble members share a split and initialisation seed (" + ", ".join(
            f"{d['run_dir']}: seed {d['seed']}, init seed {d['init_seed']}" for d in described)
            + "): train each with its own --init-seed")
    if len({d["qat"] for d in described}) > 1:
        raise SystemExit("ensemble members differ: " + ", ".join(f"{d['run_dir']} {'has' if d['qat'] else 'lacks'} "
                                                                  "a QAT model" for d in described))
    return described


def run(run_dir: str | Path, out: str | Path, formats: list[str], input_type: str = "uint8",
        min_agreement: float = 0.98, force: bool = False, views: tuple[str, ...] = V.NONE,
        members: tuple = (), refer_share: float | None = None) -> dict:
    """Convert a training run into a bundle of ``formats``. ``views`` (edge_runtime.views): test-time views the
    device averages; every operating point (temperature, thresholds) is then fitted on the views' average, while
    each artifact's parity with its Keras parent is still checked film for film on one view. ``members``: more
    training runs of the same split served with ``run_dir`` as one ensemble (``train.keras_io.ensemble_model``:
    one file per format whose probabilities are the members' mean); every operating point is fitted on the
    ensemble's own validation outputs, and every parity check compares the ensemble file with the ensemble.
    ``refer_share``: every refer threshold refers that share of the validation films not flagged TB
    (``operating_point.fit_refer_share``) instead of reaching 90% accuracy on the films kept."""
    from train import data as D
    from train import keras_io as K

    run_dir, out = Path(run_dir), Path(out)
    _require_run(run_dir)
    members = [Path(m) for m in members]
    ensemble = check_members(run_dir, members) if members else []
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} is not empty; choose another --out or pass --force")
        from convert.__main__ import replaceable

        for r in (run_dir, *members):
            try:
                replaceable(out, r)
            except ValueError as exc:
                raise SystemExit(str(exc)) from exc
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    meta = replace(ModelMetadata.load(run_dir / "metadata.json"), views=V.parse(views))
    views = meta.views
    labels = list(meta.labels)
    if meta.preprocess.keep != "all":
        raise SystemExit(f"{run_dir}: a shortcut-audit control (trained on the {meta.preprocess.keep} of the image only) "
                         "measures a shortcut; it is not a model to deploy")

    log.info("[1/5] loading the split and images (%d px)", meta.image_size)
    parts = D.load_split(run_dir / "split.csv")
    arrays = {side: D.load_arrays(parts[side], meta.labels, meta.preprocess, run_dir / "cache")
              for side in ("train", "val", "test") if parts.get(side)}
    val, test = arrays["val"], arrays.get("test")
    for side in ("train", "val"):
        if side not in arrays or len(arrays[side].images) == 0:
            raise SystemExit(f"{run_dir / 'split.csv'}: no readable {side} images (moved or deleted data?); "
                             "calibration and the parity check need them")

    log.info("[2/5] loading the Keras models%s", f" of {len(ensemble)} trainings (an ensemble)" if ensemble else "")

    def load(r: Path, i: int | None) -> dict:  # "float"/"qat" -> two-output model of one run
        name = None if i is None else f"member{i}"
        got = {"float": K.two_output_model(K.load_model(r / "model_float.keras"), name)}
        if (r / "model_qat.h5").is_file():
            got["qat"] = K.two_output_model(K.load_model(r / "model_qat.h5"), name)
        return got

    if ensemble:
        parts_of = [load(Path(d["run_dir"]), i) for i, d in enumerate(ensemble)]
        models = {p: K.ensemble_model([m[p] for m in parts_of]) for p in parts_of[0]}
        first = parts_of[0]  # heatmap weights: the first member's classifier on its own feature map
        # its own identity: a site profile fitted for one member's bundle (edge_runtime.site binds to model name and
        # version) must not be applied to the ensemble, whose probabilities differ
        names = sorted({d["model_name"] for d in ensemble})
        meta = replace(meta, members=tuple(ensemble), model_name=f"{'+'.join(names)} x{len(ensemble)}",
                       model_version="+".join(d["model_version"] for d in ensemble))
        for d in ensemble:
            log.info("member %s (%s, split seed %s, initialisation seed %s)", d["run_dir"], d["model_version"],
                     d["seed"], d["init_seed"])
    else:
        models = first = load(run_dir, None)
    deployed = "qat" if "qat" in models else "float"

    log.info("[3/5] calibrating on validation (%d images) with the %s model; test-time views: %s", len(val.images),
             deployed, V.describe(views))
    ref = {side: {p: K.predict_with_embeddings(m, arrays[side].images) for p, m in models.items()}
           for side in ("val", "test") if side in arrays}

    averaged: dict[str, np.ndarray] = {}

    def keras_views(parent: str) -> np.ndarray:  # the parent's validation probabilities as the device will average them
        if parent not in averaged:
            averaged[parent] = V.with_views(ref["val"][parent][0], lambda x: K.predict_with_embeddings(
                models[parent], x)[0], val.images, views)
        return averaged[parent]

    fitted = OP.fit(val.labels, keras_views(deployed), labels, refer_share)
    temperature, thresholds, op_report = fitted["temperature"], fitted["thresholds"], fitted["operating_point"]
    scope_stats = {p: scope.fit(K.predict_with_embeddings(m, arrays["train"].images)[1]) for p, m in first.items()}
    orient = orientation.fit(arrays["train"].images)
    for side in ("val", "test"):
        if side in arrays and len(arrays[side].images):
            orient[side] = orientation.evaluate(arrays[side].images, orient)
    log.info("film-orientation check: %s", ", ".join(
        f"{side} {100 * orient[side]['caught_all']:.1f}% of turned/inverted films caught, "
        f"{100 * orient[side]['false_flags']:.1f}% of upright films flagged" for side in ("val", "test") if side in orient))
    log.info("temperature %.2f (val ECE %.3f -> %.3f); thresholds %s", temperature,
             op_report["calibration"]["val_ece_before"], op_report["calibration"]["val_ece_after"],
             {k: round(v, 3) for k, v in thresholds.items()})
    calibration = {BASELINE: OP.fit(val.labels, keras_views("float"), labels, refer_share)}
    metrics = {**meta.metrics, "operating_point": op_report}
    if ensemble:  # the first training's own figures (from its run) would stand for the ensemble: replace them
        from train.evaluate import side_report

        metrics["val"] = side_report(val.labels, keras_views(deployed), val.sources, labels, fitted)
        if test is not None and len(test.images):
            tv = V.with_views(ref["test"][deployed][0], lambda x: K.predict_with_embeddings(models[deployed], x)[0],
                              test.images, views)
            metrics["test"] = side_report(test.labels, tv, test.sources, labels, fitted)
        log.info("ensemble (Keras %s, views averaged): validation accuracy %.3f, test accuracy %s", deployed,
                 metrics["val"]["pooled"]["accuracy"],
                 f"{metrics['test']['pooled']['accuracy']:.3f}" if "test" in metrics else "-")
    meta = replace(meta, temperature=temperature, thresholds=thresholds, scope=scope_stats, orientation=orient,
                   reference=fitted["reference"],
                   head={p: K.head_with_scale(m, val.images) for p, m in first.items()},
                   metrics=metrics, calibration=calibration)
    meta_json = meta.to_json()
    meta.save(out / "metadata.json")

    log.info("[4/5] exporting %d format(s): %s", len(formats), ", ".join(formats))
    work = Path(tempfile.mkdtemp(prefix="convert-", dir=out.parent))
    # calibration (representative data for post-training INT8) from training films, so that the validation
    # films that judge each artifact took no part in making it
    pick = np.random.default_rng(0).permutation(len(arrays["train"].images))[:CALIBRATION_FILMS]
    src = E.Sources(work=work, models=models, calib=arrays["train"].images[pick], meta_json=meta_json,
                    input_type=input_type)
    from edge_runtime.backends import load_backend

    results = {}
    t_export = time.time()
    try:
        for i, key in enumerate(formats, 1):
            f = FORMATS[key]
            log.info("(%d/%d) %s: %s%s", i, len(formats), key, f.description,
                     f" [{rate_text(i - 1, len(formats), time.time() - t_export)}]" if i > 1 else "")
            if f.parent not in models:  # e.g. tflite_int8 of a run trained without QAT (--qat-epochs 0)
                log.warning("%s: the run has no %s model; this file is quantised from the float model instead "
                            "(post-training, as its _ptq twin; bundle.json records parent 'float')", key, f.parent)
            res = E.export(key, src, out)
            if res["ok"] and f.on_device:
                parent = f.parent if f.parent in models else "float"
                try:
                    be = load_backend(out / f.filename, num_threads=2)
                    pv = parity(be, val.images, ref["val"][parent][0])
                    pf = parity(be, val.images, ref["val"]["float"][0]) if parent != "float" else pv
                    res.update(parent=parent, agreement=pv["agreement"], max_prob_diff=pv["max_prob_diff"],
                               agreement_vs_float=pf["agreement"], max_prob_diff_vs_float=pf["max_prob_diff"])
                    # the artifact's own operating point, fitted on its own validation outputs (the views' average)
                    vv = V.with_views(pv["probs"], be.run_batch, val.images, views)
                    own = calibration[key] = OP.fit(val.labels, vv, labels, refer_share)
                    log.info("[%s] own calibration: temperature %.2f (val ECE %.3f -> %.3f); thresholds %s", key,
                             own["temperature"], own["operating_point"]["calibration"]["val_ece_before"],
                             own["operating_point"]["calibration"]["val_ece_after"],
                             {k: round(v, 3) for k, v in own["thresholds"].items()})
                    res["val"] = M.report_by_source(val.labels, OP.calibrate(vv, own["temperature"]),
                                                    val.sources, labels)
                    if test is not None and len(test.images):
                        pt = parity(be, test.images, ref["test"][parent][0])
                        tv = V.with_views(pt["probs"], be.run_batch, test.images, views)
                        res["test"] = M.report_by_source(test.labels, OP.calibrate(tv, own["temperature"]),
                                                         test.sources, labels)
                        res["test_agreement"] = pt["agreement"]
                    res["passed"] = pv["agreement"] >= min_agreement
                    (log.info if res["passed"] else log.error)(
                        "[%s] parity vs Keras %s on %d validation images: top-1 agreement %.1f%%, "
                        "max prob diff %.4f%s", key, parent, len(val.images), 100 * pv["agreement"],
                        pv["max_prob_diff"], "" if res["passed"] else
                        f"  *** BELOW {100 * min_agreement:.0f}%: MARKED FAILED ***")
                except Exception as exc:  # noqa: BLE001 - a broken artifact is a failed row
                    res.update(passed=False, error=f"parity check failed: {type(exc).__name__}: {exc}"[:500])
                    log.error("[%s] parity check failed: %s", key, exc)
            elif res["ok"]:
                res["passed"] = True
            else:
                res["passed"] = False
            results[key] = res
        log.info("exports done [%s]", rate_text(len(formats), len(formats), time.time() - t_export))
    finally:
        E.cleanup(src)

    log.info("[5/5] writing the bundle: metadata (with each artifact's calibration), model card, checksums")
    meta = replace(meta, calibration=calibration)
    meta.save(out / "metadata.json")
    for key, res in results.items():  # the copy inside each artifact carries that artifact's own operating point
        if res.get("ok"):
            dest = out / FORMATS[key].filename
            E.embed_metadata(dest, meta.for_format(key).to_json())
            res["bytes"] = sum(p.stat().st_size for p in dest.parent.glob(dest.stem + ".*"))
    failed = [k for k, r in results.items() if not r.get("passed")]
    choice = choose_int8(results)
    if choice:
        log.info("INT8 path for LiteRT: %s", choice["why"])
    status = {"validated": not failed and not meta.synthetic, "synthetic": meta.synthetic,
              "failed_formats": failed, "min_agreement": min_agreement, "run_dir": str(run_dir),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "formats": {k: {kk: vv for kk, vv in r.items()} for k, r in results.items()},
              **({"members": ensemble} if ensemble else {}),
              **({"int8_choice": {choice["backend"]: choice}, "preferred": {choice["backend"]: choice["chosen"]}}
                 if choice else {})}
    (out / "bundle.json").write_text(json.dumps(status, indent=2, default=float) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(meta, status))
    B.write_sums(out)
    status["seconds"] = round(time.time() - t0, 1)
    return status
