"""``python -m benchmarks.rules BUNDLE ... [--md FILE]``: the device's decision rule against alternatives, each
fitted on a training's validation films and scored on its test films (deployed artifact, device runtime).

Rules (TB first in all of them, at the stored TB threshold: fitted for 95% validation sensitivity since 2026-12-03, 90% before):
- ``current``: the device's rule before 2026-12-05 (``edge_runtime.operating_point`` without a refer share): refer
  when the top probability is under the lowest threshold at which the validation films *not flagged TB* and not
  referred reach 90% accuracy. The default recipe now refers a fixed share instead (``[convert] refer-share``,
  docs/refer-share): these rules are all fitted the kept-accuracy way, whatever the bundle stored.
- ``count_tb_flags``: the same, but the 90% target counts every decision not referred, TB flags included (the
  definition issue 16 states the target with); it refers fewer films.
- ``pneumonia_flag``: P(pneumonia) at the pneumonia point (fitted for 90% sensitivity among normal and pneumonia
  validation films since 2026-12-05, 85% before: ``operating_point.PNEUMONIA_FIT_SENSITIVITY``) is a pneumonia decision, then the refer threshold is fitted as in ``count_tb_flags``.

Per rule: share referred, accuracy of the decisions not referred, pneumonia sensitivity of the decisions (pneumonia
films given a pneumonia decision), normals given a normal decision, and the sick films given a normal decision -
what a looser rule costs. Alternatives are measured here, never applied by the device.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import operating_point as OP

RULES = ("current", "count_tb_flags", "pneumonia_flag")
REFER_GRID = OP.REFER_GRID


def decide(probs, labels, tb: float | None, refer: float, pneumonia: float | None = None) -> np.ndarray:
    """Decisions: TB at ``tb``, then pneumonia at ``pneumonia`` (None: no such step), then refer under ``refer``,
    else the most probable class."""
    labels = list(labels)
    probs = np.asarray(probs, np.float64)
    out = np.asarray(labels, dtype=object)[probs.argmax(1)]
    out[probs.max(1) < refer] = OP.REFER
    if pneumonia is not None:
        out[probs[:, labels.index(OP.PNEUMONIA)] >= pneumonia] = OP.PNEUMONIA
    if tb is not None and OP.TB in labels:
        out[probs[:, labels.index(OP.TB)] >= tb] = OP.TB
    return out


def fit_refer(y, probs, labels, tb, pneumonia=None, count_flags: bool = True,
              target: float = OP.REFER_TARGET_ACCURACY) -> float:
    """The lowest refer threshold at which the validation decisions not referred reach ``target`` accuracy
    (``count_flags`` False: TB flags left out of the count, as the device's rule does)."""
    truth = np.asarray(labels, dtype=object)[np.asarray(y, int)]
    for c in REFER_GRID:
        d = decide(probs, labels, tb, float(c), pneumonia)
        kept = d != OP.REFER
        if not count_flags:
            kept &= d != OP.TB
        if kept.any() and (d[kept] == truth[kept]).mean() >= target:
            return float(c)
    return float(REFER_GRID[-1])


def fit(rule: str, y, probs, labels) -> dict:
    """Thresholds of ``rule`` from calibrated validation probabilities."""
    thresholds, report = OP.choose_operating_points(y, probs, labels)
    tb = thresholds.get(OP.TB)
    if rule == "current":
        return {"tb": tb, "pneumonia": None, "refer": thresholds["refer_below"]}
    pn = (report.get("pneumonia") or {}).get("threshold") if rule == "pneumonia_flag" else None
    return {"tb": tb, "pneumonia": pn, "refer": fit_refer(y, probs, labels, tb, pn)}


def score(decisions, y, labels) -> dict:
    truth = np.asarray(labels, dtype=object)[np.asarray(y, int)]
    kept = decisions != OP.REFER
    out = {"referred": float((~kept).mean()),
           "accuracy_not_referred": float((decisions[kept] == truth[kept]).mean()) if kept.any() else float("nan")}
    for c in labels:
        m = truth == c
        out[f"{c}_given_{c}"] = float((decisions[m] == c).mean()) if m.any() else float("nan")
        if c != "normal" and "normal" in labels:
            out[f"{c}_called_normal"] = int(((decisions == "normal") & m).sum())
    return out


def compare(bundle: Path) -> dict:
    from benchmarks.paired import _outputs

    from edge_runtime.metadata import ModelMetadata

    sides = {side: _outputs(bundle, side, "tflite_int8")[:2] for side in ("val", "test")}
    labels = list(ModelMetadata.load(bundle / "metadata.json").labels)
    (val, pv), (test, pt) = sides["val"], sides["test"]
    out = {"bundle": str(bundle), "n_val": int(len(val.labels)), "n_test": int(len(test.labels)), "rules": {}}
    for rule in RULES:
        th = fit(rule, val.labels, pv, labels)
        out["rules"][rule] = {"thresholds": th,
                              "val": score(decide(pv, labels, th["tb"], th["refer"], th["pneumonia"]), val.labels, labels),
                              "test": score(decide(pt, labels, th["tb"], th["refer"], th["pneumonia"]), test.labels, labels)}
    return out


def _f(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else (
        f"{v:.3f}" if isinstance(v, float) else str(v))


def table(results: list[dict]) -> str:
    cols = ["referred", "accuracy_not_referred", "pneumonia_given_pneumonia", "normal_given_normal",
            "tuberculosis_called_normal", "pneumonia_called_normal"]
    lines = ["| training | rule | refer below | pneumonia at | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 4)]
    for r in results:
        for rule, x in r["rules"].items():
            t = x["thresholds"]
            lines.append(f"| {Path(r['bundle']).name} | {rule} | {_f(t['refer'])} | {_f(t['pneumonia'])} | "
                         + " | ".join(_f(x["test"].get(c)) for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", type=Path, help="model bundles (each scored on its own run's split)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write a markdown report here")
    a = p.parse_args(argv)
    from benchmarks.paired import all_bundles
    from benchmarks.sysinfo import machine_info, report_header

    if not all_bundles(a.bundles):
        return 2

    t0 = time.time()
    results = []
    for b in a.bundles:
        print(f"{b}: fitting each rule on validation, scoring on test", file=sys.stderr)
        results.append(compare(b))
    m = machine_info()
    command = "python -m benchmarks.rules " + " ".join(str(x) for x in (argv if argv is not None else sys.argv[1:]))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"results": results, "provenance": {"command": command, "machine": m,
                                                                        "seconds": round(time.time() - t0, 1)}},
                                    indent=2, default=str) + "\n")
    text = table(results)
    print(text)
    print(f"{m['date']}; {m['cpu']}; commit {m['commit']}")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(report_header("The decision rule against alternatives (test films; thresholds fitted on "
                                      "validation)", command, m) + "\n" + (__doc__ or "").split("\n\n", 1)[1]
                        + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
