"""python -m benchmarks.validate --bundle B --data LOCAL [--out DIR] [--target-tb-sensitivity 0.9]
                                [--make-profile site.json --by NAME] [--fit-temperature]

Site validation: how a bundle does on one clinic's own films with confirmed labels (a folder of class
sub-folders or a manifest CSV, read by ``train.data``; any class may be missing, e.g. only normals and TB).
Every film goes through the device's own path (decode, preprocess, model, input check, operating point), so
the figures are what the device would show. Per class and pooled: sensitivity/specificity of the decisions at
the bundle's thresholds with 95% Wilson intervals, the referred and out-of-scope shares, ROC and reliability
plots, and what the data supports ("52 TB films: the sensitivity interval is +-8 points"), saying plainly
when the data is too small to decide. The local calibrated scores are plotted against the bundle's reference
(``metadata.reference``: its scores on the training run's validation films) with a binned two-sample KS
distance per true class and score; a bundle made before convert stored the reference says it is absent.

``--make-profile``: propose (``edge_runtime.site_eval``, shared with the device) the thresholds that meet the
target TB sensitivity on these films (the same
``operating_point.choose_operating_points`` as training), with their intervals, and write them as a site
profile (``edge_runtime.site``). Refused, with the reason, when a class it would change has fewer than
``MIN_FILMS`` films or when the proposal does worse than the bundle's own values on the same films.

Exit status: 0 done (and the profile written, if asked); 2 bad input (bundle, data, arguments);
3 the profile was refused (the report says why; no site.json is written).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_runtime import operating_point as OP
from edge_runtime.operating_point import OperatingPoint
from edge_runtime.site_eval import ProfileRefused, _pct, figures, model_figures, propose

# ----------------------------------------------------------------------------- scoring local films
def score_films(clf, samples) -> dict:
    """Raw probabilities and the input check of every readable film, through the device's own path."""
    from edge_runtime.preprocess import ImageError, decode_image, prepare

    labels = list(clf.metadata.labels)
    y, raw, in_scope, dist, names, failed = [], [], [], [], [], []
    for s in samples:
        try:
            image = decode_image(s.path, s.path)
        except (ImageError, OSError) as exc:
            failed.append((s.path, str(exc)))
            continue
        x = prepare(image, clf.metadata.preprocess)
        p, feats = clf.predict(x)
        problem, d = clf.input_check(image, feats, x)
        y.append(labels.index(s.label))
        raw.append(np.asarray(p, np.float64).reshape(-1))
        in_scope.append(problem is None)
        dist.append(np.nan if d is None else d)
        names.append(s.path)
    k = len(labels)
    return {"y": np.asarray(y, int), "raw": np.asarray(raw, np.float64).reshape(-1, k), "in_scope": np.asarray(in_scope, bool),
            "distance": np.asarray(dist, np.float64), "names": names, "failed": failed}


# ----------------------------------------------------------------------------- the run
def _unseen(bundle: Path, samples: list) -> tuple[list, list[str], bool]:
    """(the samples the bundle's model never trained or calibrated on, the paths left out, whether it could be
    checked: the bundle's own training run, ``benchmarks.study.evaluate.bundle_run``, is on this machine)."""
    from benchmarks.study.evaluate import RunMismatch, bundle_run
    from edge_runtime.bundle import read_status
    from edge_runtime.metadata import ModelMetadata
    from train.data import seen_by

    try:
        run = bundle_run(bundle, read_status(bundle), ModelMetadata.load(bundle / "metadata.json"))
    except (RunMismatch, OSError, ValueError):
        return samples, [], False
    seen = seen_by(run, samples)
    left = {id(s) for s in seen}
    return [s for s in samples if id(s) not in left], [s.path for s in seen], True


def run(bundle: Path, data: Path, out: Path, target: float = OP.TB_SENSITIVITY, make_profile: Path | None = None,
        by: str = "", backend: str | None = None, fit_temperature: bool = False, describe: str = "") -> dict:
    """Validate ``bundle`` on the local films in ``data``; write report.md, validation.json and plots to ``out``;
    with ``make_profile``, propose and write a site profile (raises ProfileRefused, after writing the report)."""
    from edge_runtime.classifier import Classifier
    from edge_runtime.site import SiteProfile
    from train.data import scan  # TF-free

    if make_profile and not by.strip():
        raise ValueError("--make-profile needs --by NAME (who makes the profile)")
    if not 0.5 <= target < 1.0:
        raise ValueError(f"--target-tb-sensitivity must be in [0.5, 1), got {target}")
    clf = Classifier.from_bundle(bundle, backend=backend)
    labels = list(clf.metadata.labels)
    samples = scan(data, tuple(labels), allow_missing=True)
    samples, seen, checked = _unseen(Path(bundle), samples)
    if not samples:
        raise ValueError(f"{data}: every film is one the bundle's model was trained or calibrated on; validate on "
                         "this site's own films")
    films = score_films(clf, samples)
    own = clf.metadata.operating_point
    result = {"bundle": str(bundle), "data": str(data), "model": clf.metadata.model_name,
              "model_version": clf.metadata.model_version, "format": clf.format, "labels": labels,
              "unreadable": films["failed"], "left_out_seen": seen, "seen_checked": checked, "bundle_values": {"temperature": own.temperature, "thresholds": own.thresholds},
              "at_bundle_values": figures(films, own), "model_figures": model_figures(films, own),
              "active_site_profile": clf.site_profile.summary() if clf.site_profile else None,
              "reference": score_shift(films, own, clf.metadata.reference)}
    if clf.site_profile:
        result["at_active_profile"] = figures(films, clf.operating_point)
    out.mkdir(parents=True, exist_ok=True)
    refused = None
    if make_profile:
        try:
            prop = propose(films, own, target, fit_temperature, refer_share=clf.metadata.refer_share)
            meta = clf.metadata
            profile = SiteProfile(
                thresholds=prop["thresholds"], temperature=prop["temperature"], made_by=by.strip(),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"), films=prop["films"],
                data=describe or str(data), made_for={"model_name": meta.model_name, "model_version": meta.model_version,
                                                      "data_hash": meta.data_hash, "format": clf.format},
                evidence={"target_tb_sensitivity": target, "at_profile": _brief(prop["after"]),
                          **({"refer_rule": prop["refer_rule"]} if "refer_below" in prop["thresholds"] else {}),
                          "at_bundle_values": _brief(prop["before"]), "kept_from_bundle": prop["kept_from_bundle"],
                          "warnings": prop["warnings"]})
            result["profile"] = {**prop, "path": str(profile.save(make_profile))}
        except ProfileRefused as exc:
            refused = exc
            result["profile_refused"] = str(exc)
    (out / "validation.json").write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    result["plots"] = _plots(films, own, out, clf.metadata.reference)
    (out / "report.md").write_text(markdown(result))
    if refused:
        raise refused
    return result


def score_shift(films: dict, op: OperatingPoint, reference: dict) -> dict:
    """The in-scope local films' calibrated scores against the bundle's reference (its validation films): per
    true class and score class the binned two-sample KS distance (``edge_runtime.reference.compare``)."""
    from edge_runtime import reference as R

    if not reference.get("per_class"):
        return {"available": False}
    m = films["in_scope"]
    ks = R.compare(films["y"][m], op.calibrate(films["raw"][m]), list(op.labels), reference)
    return {"available": True, "source": reference.get("source", R.SOURCE), "n_ref": reference.get("n"), "ks": ks}


def _brief(fig: dict) -> dict:
    return {lab: {k: c[k] for k in ("sensitivity", "specificity")} for lab, c in fig["per_class"].items() if c["films"]}


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _plots(films: dict, op: OperatingPoint, out: Path, reference: dict) -> list[str]:
    try:
        from benchmarks.plots import _plt, reliability, roc, score_distributions
        plt = _plt()
    except ImportError:
        return []
    m = films["in_scope"]
    y, cal = films["y"][m], op.calibrate(films["raw"][m])
    if not len(y):
        return []
    made = [roc(plt, y, {"local": cal}, list(op.labels), out / "roc.png").name,
            reliability(plt, y, cal, out / "reliability.png").name]
    if reference.get("per_class") and any(reference["per_class"].get(lab, {}).get("n") and (y == i).any()
                                          for i, lab in enumerate(op.labels)):
        made.append(score_distributions(plt, y, cal, op.labels, reference, out / "scores.png").name)
    return made


def _table(fig: dict) -> list[str]:
    rows = ["| class | films | sensitivity (95% CI) | specificity (95% CI) | referred |", "|---|---|---|---|---|"]
    for lab, c in fig["per_class"].items():
        rows.append(f"| {lab} | {c['films']} | {_pct(c['sensitivity'])} | {_pct(c['specificity'])} | {_pct(c['referred'])} |")
    p = fig["pooled"]
    rows.append(f"\nPooled ({fig['films']} films): accuracy {_pct(p['accuracy'])}, of the decisions not referred "
                f"{_pct(p['accuracy_not_referred'])}, referred {_pct(p['referred'])}, out of scope {_pct(p['out_of_scope'])}.")
    return rows


def _score_lines(ref: dict) -> list[str]:
    if not ref.get("available"):
        return ["The bundle carries no reference score distribution (made before convert stored one): the local "
                "scores cannot be compared with the training run's. Convert the run again to get it."]
    lines = [f"Reference: the bundle's calibrated scores on the {ref['n_ref']} {ref['source']} of its training run "
             "(where its operating point was fitted). Distance: two-sample Kolmogorov-Smirnov D on the stored "
             "20 bins (binning makes it conservative); 'differs' when D exceeds the 5% critical value (one test per "
             "cell, not corrected for the several cells).", "",
             "| true class | score | local films | D | 5% critical | |", "|---|---|---|---|---|---|"]
    for lab, cells in ref["ks"].items():
        for s, k in cells.items():
            if k["d"] is not None:
                lines.append(f"| {lab} | P({s}) | {k['n']} | {k['d']:.3f} | {k['critical']:.3f} | "
                             f"{'differs' if k['differs'] else 'consistent'} |")
    if not ref["ks"]:
        lines.append("No class has films on both sides.")
    return lines


def markdown(r: dict) -> str:
    lines = [f"# Site validation: {r['model']} {r['model_version']} ({r['format']}) on {r['data']}", "",
             f"Bundle thresholds: {r['bundle_values']['thresholds']}, temperature {r['bundle_values']['temperature']:.2f}."]
    if r["active_site_profile"]:
        lines.append(f"Active on this bundle: {r['active_site_profile']}.")
    if r["unreadable"]:
        lines.append(f"{len(r['unreadable'])} film(s) could not be read and are left out.")
    if r.get("left_out_seen"):
        lines.append(f"{len(r['left_out_seen'])} film(s) are ones the model was trained or calibrated on (the same "
                     "file, by content) and are left out: they say nothing about this site.")
    elif r.get("seen_checked") is False:
        lines.append("Whether any of these films were among the model's training films could not be checked (its "
                     "training run is not on this machine).")
    lines += ["", "## At the bundle's thresholds", ""] + _table(r["at_bundle_values"])
    lines += ["", "## What this data supports", ""]
    lines += [f"- {c['support']}" for c in r["at_bundle_values"]["per_class"].values()]
    mf = r["model_figures"]
    auc = ", ".join(f"{k} {v:.3f}" for k, v in mf["auc"].items() if v is not None) or "not measurable (one class)"
    lines += ["", f"One-vs-rest AUC (in-scope films): {auc}. ECE: "
              f"{'-' if mf['ece'] is None else format(mf['ece'], '.3f')}."]
    lines += ["", "## Score distributions against the validation films'", ""] + _score_lines(r["reference"])
    if r.get("plots"):
        lines += ["", *[f"![{p}]({p})" for p in r["plots"]]]
    if "profile" in r:
        p = r["profile"]
        lines += ["", "## Proposed site profile", "", f"Written to `{p['path']}`: thresholds {p['thresholds']}"
                  + (f", temperature {p['temperature']:.2f}" if p["temperature"] else "")
                  + f" (target TB sensitivity {p['target_tb_sensitivity']:.0%}; chosen on these same films, so the "
                    "intervals, not the point values, say how sure it is).", ""] + _table(p["after"])
        if "refer_below" in p["thresholds"]:
            lines += ["", f"Refer threshold rule: {p['refer_rule']}.", ""]
        lines += [f"- kept the bundle's value: {s}" for s in p["kept_from_bundle"]]
        lines += [f"- WARNING: {w}" for w in p["warnings"]]
    if "profile_refused" in r:
        lines += ["", "## Site profile refused", "", r["profile_refused"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    p.add_argument("--data", type=Path, required=True, help="local films with confirmed labels: folder or manifest CSV")
    p.add_argument("--out", type=Path, default=Path("site_validation"), help="report folder (default: %(default)s)")
    p.add_argument("--target-tb-sensitivity", type=float, default=OP.TB_SENSITIVITY, help="default: %(default)s")
    p.add_argument("--make-profile", type=Path, help="write the proposed site profile here (a file, or a folder: site.json)")
    p.add_argument("--by", default="", help="who makes the profile (required with --make-profile)")
    p.add_argument("--describe", default="", help="what the local data is (clinic, period); default: the --data path")
    p.add_argument("--fit-temperature", action="store_true", help="also fit a temperature on the local films")
    p.add_argument("--backend", help="runtime backend to validate (default: the device's choice)")
    a = p.parse_args(argv)
    from edge_runtime.bundle import BundleError
    from edge_runtime.preprocess import ImageError

    try:
        r = run(a.bundle, a.data, a.out, a.target_tb_sensitivity, a.make_profile, a.by, a.backend,
                a.fit_temperature, a.describe)
    except ProfileRefused as exc:
        print(f"site profile refused: {exc}\nreport: {a.out / 'report.md'}", file=sys.stderr)
        return 3
    except (BundleError, ImageError, ValueError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in r["at_bundle_values"]["per_class"].values():
        print(c["support"])
    if "profile" in r:
        print(f"site profile written: {r['profile']['path']} {r['profile']['thresholds']}")
        for w in r["profile"]["warnings"]:
            print(f"WARNING: {w}")
    print(f"report: {a.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
