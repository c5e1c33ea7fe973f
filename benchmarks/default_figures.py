"""``python -m benchmarks.default_figures BUNDLE [--side test] [--out FILE]``: the figures issue 16 judges the
default model on, for every artifact of a bundle, through the device runtime (``edge_runtime.Classifier``)
on one side of the bundle's training-run split.

Per artifact: pooled and per-source accuracy, the normal-vs-pneumonia AUC within the source holding both, TB-vs-rest AUC, the TB rule's
sensitivity/specificity and the refer rule's referral rate at the thresholds stored in the bundle, ECE, and top-1
agreement with the bundle's float artifacts (same films). For the artifact the device serves from this bundle
(``served``: what ``edge_runtime.bundle.resolve`` picks, e.g. the LiteRT INT8 file convert preferred, or LiteRT
FP32 when every INT8 file failed its parity check) also: bootstrap 95% intervals (patients resampled, each with
all their films) on accuracy and that AUC, and the same figures on the films as simulated "site B" would make
them (``benchmarks.study.evaluate.SHIFTS``). Reports built on these figures judge the served artifact. Speed is ``python -m benchmarks``' job, not this one's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.default_report import PRIMARY, judged
from benchmarks.study import evaluate as E
from edge_runtime import formats as F
from edge_runtime import metrics as M
from edge_runtime.classifier import Classifier
from edge_runtime.operating_point import calibrate


def served(bundle: Path) -> str | None:
    """The format key of the artifact a device serves from ``bundle`` when nothing else is asked for (the runtime's
    own choice, ``edge_runtime.bundle.resolve``); None when it would serve nothing or a file the table does not
    name."""
    from edge_runtime.bundle import BundleError, resolve

    try:
        return resolve(bundle, verify=False).key
    except BundleError:
        return None


def patients(samples) -> np.ndarray:
    """One resampling unit per film: the key that kept the film's patient on one side of the split (its group,
    else its patient id; a film without either is its own unit)."""
    return np.asarray([s.split_key or s.path for s in samples])


def bootstrap_ci(y, raw, sources, labels, temperature: float = 1.0, n: int = 1000, seed: int = 0,
                 groups=None) -> dict:
    """95% percentile intervals of accuracy and the normal-vs-pneumonia AUC within the source that holds both
    classes (``E.pair_source``), resampling patients (``groups``, one id per film) or else films."""
    b = bootstrap_figures(y, {"m": calibrate(raw, temperature)}, sources, labels, n, seed, groups=groups)
    return {"n_boot": n, "unit": b["unit"], "accuracy": b["ci"]["m"]["accuracy"], "pair_source": b["pair_source"],
            "pair_auc": b["ci"]["m"]["pair_auc"]}


def films_fingerprint(samples) -> str:
    """SHA-256 of the sorted ``source/file name`` of the scored films: two runs scored the same films exactly when
    their fingerprints agree, whatever folder the data lay in."""
    names = sorted(f"{getattr(s, 'source', '') or ''}/{Path(s.path).name}" for s in samples)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


FIGURES = ("accuracy", "pair_auc", "tb_auc")


def by_patient(groups) -> list[np.ndarray]:
    """The film indices of each patient (``groups``: one patient key per film), for :func:`draw_patients`."""
    _, gid = np.unique(np.asarray(groups), return_inverse=True)
    return np.split(np.argsort(gid, kind="stable"), np.cumsum(np.bincount(gid))[:-1])


def draw_patients(members: list[np.ndarray], rng) -> np.ndarray:
    """One bootstrap draw of film indices: as many patients as there are, drawn with replacement, each with all
    their films."""
    return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def bootstrap_figures(y, probs: dict, sources, labels, n: int = 1000, seed: int = 0, pairs=(), groups=None) -> dict:
    """95% percentile intervals of accuracy, the normal-vs-pneumonia AUC within the source that holds both
    classes and the TB-vs-rest AUC for each entry of ``probs`` ({name: (N, K) probabilities of the same films}),
    resampling films with replacement; the same resamples serve every entry, so ``pairs`` ((a, b), ...) also get
    intervals of the paired difference a - b. ``groups`` (one patient id per film): resample patients, each with
    all their films (films of one patient are not independent; the intervals widen accordingly)."""
    y, sources = np.asarray(y), np.asarray(sources)
    pair = E.pair_source(y, sources, labels)
    rng = np.random.default_rng(seed)
    if groups is not None:
        members = by_patient(groups)

        def draw():
            return draw_patients(members, rng)
    else:
        def draw():
            return rng.integers(0, len(y), len(y))

    def one(p, i):
        nih = i[sources[i] == pair]
        return {"accuracy": float((p[i].argmax(1) == y[i]).mean()), "pair_auc": E.pair_auc(y[nih], p[nih], labels),
                "tb_auc": E.tb_auc(y[i], p[i], labels)}

    draws = {k: {f: [] for f in FIGURES} for k in probs}
    deltas = {f"{a} - {b}": {f: [] for f in FIGURES} for a, b in pairs}
    for _ in range(n):
        i = draw()
        got = {k: one(np.asarray(p), i) for k, p in probs.items()}
        for k, g in got.items():
            for f in FIGURES:
                draws[k][f].append(g[f])
        for a, b in pairs:
            for f in FIGURES:
                deltas[f"{a} - {b}"][f].append(got[a][f] - got[b][f])

    def ci(v):
        v = [x for x in v if not np.isnan(x)]
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else [float("nan")] * 2

    return {"n_boot": n, "unit": "film" if groups is None else "patient", "pair_source": pair,
            "ci": {k: {f: ci(v) for f, v in d.items()} for k, d in draws.items()},
            "delta": {k: {f: ci(v) for f, v in d.items()} for k, d in deltas.items()}}


def manifest_column(samples, column: str = "view_position") -> list[str]:
    """``column`` of each sample's row in the ``manifest.csv`` of its data folder (the folder above its class
    folder), "" where there is no manifest, no such column or no row for the file."""
    import csv

    tables: dict[Path, dict[str, str]] = {}
    out = []
    for s in samples:
        path = Path(s.path)
        root = path.parent.parent
        if root not in tables:
            table = {}
            if (root / "manifest.csv").is_file():
                with (root / "manifest.csv").open(newline="") as fh:
                    table = {r.get("file", ""): (r.get(column) or "") for r in csv.DictReader(fh)}
            tables[root] = table
        out.append(tables[root].get(f"{path.parent.name}/{path.name}", ""))
    return out


def pair_auc_by_view(y, cal, sources, views, labels) -> dict:
    """Normal-vs-pneumonia AUC within the pair source, per view position (AP/PA), with each view's class counts,
    and the AUC that the view alone reaches (PA scored 1): a model that leaned on the view would lose most of its
    AUC within one view."""
    y, sources, views = np.asarray(y), np.asarray(sources), np.asarray(views)
    pair = E.pair_source(y, sources, labels)
    if pair is None or not views.any():
        return {}
    ineg, ipos = labels.index(E.NORMAL), labels.index(E.PNEUMONIA)
    m = (sources == pair) & np.isin(y, [ineg, ipos]) & (views != "")
    out = {"source": pair, "view_alone_auc": M.binary_auc(y[m] == ipos, (views[m] == "PA").astype(float)),
           "by_view": {}}
    for v in sorted(set(views[m].tolist())):
        k = m & (views == v)
        out["by_view"][v] = {"normal": int((y[k] == ineg).sum()), "pneumonia": int((y[k] == ipos).sum()),
                             "auc": E.pair_auc(y[k], cal[k], labels)}
    return out


def figures(bundle: Path, side: str = "test", n_boot: int = 1000) -> dict:
    from edge_runtime.bundle import model_files
    from edge_runtime.metadata import ModelMetadata

    bundle = Path(bundle)
    status = json.loads((bundle / "bundle.json").read_text())
    meta = ModelMetadata.load(bundle / "metadata.json")
    run = E.bundle_run(bundle, status, meta)
    labels = list(meta.labels)
    arr = E._split_arrays(run, meta)[side]
    chosen = served(bundle) or PRIMARY
    out = {"bundle": str(bundle), "run": str(run), "side": side, "n": int(len(arr.labels)),
           "films_sha256": films_fingerprint(arr.samples), "served": chosen,
           "served_because": why_served(status, chosen), "formats": {}}
    raws = {}
    views = manifest_column(arr.samples)
    for model in model_files(bundle):
        fmt = F.key_of(model) or model.name
        try:
            clf = Classifier.from_bundle(model, num_threads=2)
        except Exception as exc:  # noqa: BLE001 - a format that does not load is a row with its error
            out["formats"][fmt] = {"error": str(exc)}
            continue
        raw = clf.predict_batch(arr.images)
        raws[fmt] = raw
        pn_point = (clf.metadata.metrics.get("operating_point") or {}).get("pneumonia") or {}
        row = E.summarise(arr.labels, raw, arr.sources, labels, clf.metadata.temperature, clf.metadata.thresholds,
                          pn_point.get("threshold"))
        row["backend"] = clf.backend
        # the refer rule its threshold was fitted by (convert --refer-share; None: 90% accuracy on the films kept)
        row["refer_share"] = ((clf.metadata.metrics.get("operating_point") or {}).get("refer") or {}).get("target_share")
        # the validation sensitivity its pneumonia point was fitted for (operating_point.PNEUMONIA_FIT_SENSITIVITY)
        row["pneumonia_target"] = pn_point.get("target_sensitivity")
        row["pair_auc_by_view"] = pair_auc_by_view(arr.labels, calibrate(raw, clf.metadata.temperature), arr.sources,
                                                   views, labels)
        row["agreement_vs_keras_parent_at_convert"] = status.get("formats", {}).get(fmt, {}).get("agreement")
        out["formats"][fmt] = row
        if fmt == chosen:
            out["formats"][fmt]["ci95"] = bootstrap_ci(arr.labels, raw, arr.sources, labels,
                                                       clf.metadata.temperature, n_boot, groups=patients(arr.samples))
    floats = [f for f in raws if f in F.FORMATS and not F.FORMATS[f].int8]
    for fmt, raw in raws.items():
        out["formats"][fmt]["agreement"] = {f: float((raw.argmax(1) == raws[f].argmax(1)).mean())
                                            for f in floats if f != fmt}
    if chosen in F.FORMATS and (bundle / F.FORMATS[chosen].filename).is_file():
        out["site_shift"] = E.site_shift(bundle, side, ("none", E.SITE_B), chosen)
    return out


def why_served(status: dict, fmt: str) -> str:
    """Why the device serves ``fmt`` rather than ``PRIMARY`` from a bundle whose bundle.json is ``status``."""
    if fmt == PRIMARY:
        return ""
    row = (status.get("formats") or {}).get(PRIMARY)
    if row is None:
        return f"the bundle holds no {PRIMARY}"
    if PRIMARY in (status.get("failed_formats") or []):
        parity = row.get("agreement")
        return f"{PRIMARY} failed its parity check at convert" + (
            f" ({100 * parity:.1f}% top-1 agreement with its Keras parent)" if parity is not None else "")
    for choice in (status.get("int8_choice") or {}).values():
        if choice.get("chosen") == fmt:
            return f"convert chose {fmt} as its backend's INT8 path: {choice.get('why', '?')}"
    return "the runtime's backend order puts it first"


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def table(res: dict) -> str:
    srcs = sorted({src for r in res["formats"].values() if "by_source" in r for src in r["by_source"]})
    lines = [f"{res['side']} split, {res['n']} films, {res['bundle']}",
             "| format | accuracy | " + " | ".join(f"acc {src}" for src in srcs) + " | normal-vs-pneumonia AUC "
             "(one source) | TB AUC | TB sens/spec | referred | acc not referred | ECE | agreement |",
             "|" + "---|" * (9 + len(srcs))]
    for fmt, r in res["formats"].items():
        if "error" in r:
            lines.append(f"| {fmt} | error: {r['error']} |")
            continue
        bs = r["by_source"]
        tb, ref = r.get("tb_at_threshold", {}), r.get("refer_rule", {})
        agree = ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.get("agreement", {}).items())
        lines.append(f"| {fmt} | {_f(r['accuracy'])} | " + " | ".join(_f(bs.get(src, {}).get("accuracy")) for src in srcs)
                     + f" | {_f(r['pair_auc'])} ({r.get('pair_source')}) | {_f(r['tb_auc'])} | "
                     f"{_f(tb.get('sensitivity'))}/{_f(tb.get('specificity'))} | {_f(ref.get('referred'))} | "
                     f"{_f(ref.get('accuracy_not_referred'))} | {_f(r['ece'])} | {agree} |")
    shown = judged(res)
    lines.append(f"The device serves {shown} from this bundle" + ("" if shown == PRIMARY else
                 f" (not {PRIMARY}: {res.get('served_because') or '?'})") + "; the lines below judge it.")
    ci = res["formats"].get(shown, {}).get("ci95")
    if ci:
        lines.append(f"{shown} 95% bootstrap intervals ({ci['n_boot']} resamples of {ci.get('unit', 'film')}s): accuracy "
                     f"{_f(ci['accuracy'][0])}-{_f(ci['accuracy'][1])}, normal-vs-pneumonia AUC within "
                     f"{ci['pair_source']} {_f(ci['pair_auc'][0])}-{_f(ci['pair_auc'][1])}")
    bv = res["formats"].get(shown, {}).get("pair_auc_by_view") or {}
    if bv.get("by_view"):
        lines.append(f"{shown} normal-vs-pneumonia AUC by view ({bv['source']}): " + ", ".join(
            f"{v} {_f(r['auc'])} ({r['normal']} normal, {r['pneumonia']} pneumonia)" for v, r in bv["by_view"].items())
            + f"; the view alone: {_f(bv['view_alone_auc'])}")
    for name, r in res.get("site_shift", {}).items():
        lines.append(f"{shown}, films {name}: accuracy {_f(r['accuracy'])}, normal-vs-pneumonia AUC "
                     f"{_f(r['pair_auc'])}, {r.get('pair_source')} normals called normal "
                     f"{_f(r['pair_normals_called_normal'])}, "
                     f"referred {_f(r.get('refer_rule', {}).get('referred'))}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.default_figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="model bundle folder (python -m convert ... --out BUNDLE)")
    p.add_argument("--side", default="test", choices=["test", "val"], help="side of the run's split")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    if not (a.bundle / "bundle.json").is_file():
        print(f"error: {a.bundle} is not a bundle (no bundle.json)", file=sys.stderr)
        return 2
    from benchmarks.sysinfo import machine_info

    t0 = time.time()
    res = figures(a.bundle, a.side, a.bootstrap)
    res["provenance"] = {"command": "python -m benchmarks.default_figures " + " ".join(argv or sys.argv[1:]),
                         "machine": machine_info(), "seconds": round(time.time() - t0, 1)}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2, default=E.jsonable) + "\n")
    print(table(res))
    m = res["provenance"]["machine"]
    print(f"{m['date']}; {m['cpu']}; commit {m['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
