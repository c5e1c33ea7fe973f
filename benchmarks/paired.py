"""``python -m benchmarks.paired BUNDLE_A BUNDLE_B ... [--side test] [--out FILE]``: does a change of recipe help?

Two trainings of one seed (hence one patient-level split) that differ in one lever (say ``--ema``) are compared on
the same films, film by film: each bundle's deployed artifact (``tflite_int8``; or ``--format``) runs through the
device runtime, its outputs are calibrated with its own temperature, and the same bootstrap resamples of patients
(each with all their films) give 95% intervals of both figures and of their difference B - A (accuracy, normal-vs-pneumonia AUC within the
source holding both, TB-vs-rest AUC). A difference whose interval spans 0 is not shown by these films. Several
pairs (``A0 B0 A1 B1 ...``, one per seed) are each compared on their own films, and the mean difference over
pairs is given with its sample sd: a lever counts when it holds across seeds.

``--format-b`` compares two artifacts instead (B's artifact of another format; A and B may then be one bundle):
``python -m benchmarks.paired RUN-bundle RUN-bundle --format tflite_int8_ptq --format-b tflite_int8`` asks whether
quantization-aware training beats post-training INT8 of the same float model.

The bundles' runs must hold the same films on ``--side`` (same split); otherwise it is an error, never a silent
unpaired comparison.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.default_figures import FIGURES, bootstrap_figures, patients
from benchmarks.study import evaluate as E
from edge_runtime import formats as F
from edge_runtime import operating_point as OP


class PairError(ValueError):
    pass


def all_bundles(paths) -> bool:
    """True when every path is a bundle folder; otherwise says which is not (stderr)."""
    for b in paths:
        if not (Path(b) / "bundle.json").is_file():
            print(f"error: {b} is not a bundle (no bundle.json)", file=sys.stderr)
            return False
    return True


def _outputs(bundle: Path, side: str, fmt: str):
    from edge_runtime.classifier import Classifier
    from edge_runtime.metadata import ModelMetadata

    status = json.loads((bundle / "bundle.json").read_text())
    meta = ModelMetadata.load(bundle / "metadata.json")
    try:
        run = E.bundle_run(bundle, status, meta)
        arr = E._split_arrays(run, meta).get(side)
    except E.RunMismatch as exc:
        raise PairError(str(exc)) from exc
    if arr is None:
        raise PairError(f"{run} has no {side} side in its split")
    clf = Classifier.from_bundle(bundle / F.FORMATS[fmt].filename, num_threads=2)
    cal = OP.calibrate(clf.predict_batch(arr.images), clf.metadata.temperature)
    return arr, cal, clf.metadata


def compare(a: Path, b: Path, side: str = "test", fmt: str = F.DEPLOYED, n_boot: int = 1000,
            fmt_b: str | None = None) -> dict:
    """Figures of A and B on the same films, and the bootstrap interval of each difference B - A."""
    fmt_b = fmt_b or fmt
    for bundle, f in ((a, fmt), (b, fmt_b)):
        if not (bundle / F.FORMATS[f].filename).is_file():
            raise PairError(f"{bundle} has no {f} artifact ({F.FORMATS[f].filename}); convert with --formats {f}")
    arr_a, cal_a, meta_a = _outputs(a, side, fmt)
    arr_b, cal_b, meta_b = _outputs(b, side, fmt_b)
    files_a, files_b = [str(s.path) for s in arr_a.samples], [str(s.path) for s in arr_b.samples]
    if files_a != files_b:
        raise PairError(f"{a} and {b} do not hold the same {side} films ({len(files_a)} vs {len(files_b)}; "
                        "train B with --split A_RUN/split.csv or the same --seed)")
    if list(meta_a.labels) != list(meta_b.labels):  # B's columns would be read in A's order: every figure wrong
        raise PairError(f"{a} and {b} have other classes or class orders ({list(meta_a.labels)} vs "
                        f"{list(meta_b.labels)}): train B with A's --classes")
    labels = list(meta_a.labels)
    y, src = arr_a.labels, arr_a.sources
    boot = bootstrap_figures(y, {"A": cal_a, "B": cal_b}, src, labels, n_boot, pairs=(("B", "A"),),
                             groups=patients(arr_a.samples))
    split = {k: meta_a.split.get(k) for k in ("seed", "folds", "fold") if meta_a.split.get(k) is not None}
    out = {"a": str(a), "b": str(b), "side": side, "format": fmt, "format_b": fmt_b, "n": int(len(y)),
           "unit": boot["unit"], "pair_source": boot["pair_source"], "split": split,
           "figures": {}, "delta": {}, "rule": {}}
    for name, cal, meta in (("A", cal_a, meta_a), ("B", cal_b, meta_b)):
        s = E.summarise(y, cal, src, labels, 1.0, meta.thresholds)
        out["figures"][name] = {f: s[f] for f in FIGURES} | {"ece": s["ece"]}
        out["rule"][name] = s.get("refer_rule", {})
        out["figures"][name]["ci95"] = boot["ci"][name]
    for f in FIGURES:
        out["delta"][f] = {"value": out["figures"]["B"][f] - out["figures"]["A"][f], "ci95": boot["delta"]["B - A"][f]}
    return out


def _f(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def table(results: list[dict]) -> str:
    lines = ["| pair | films | figure | A | B | B - A | 95% interval of B - A |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results):
        for f in FIGURES:
            d = r["delta"][f]
            lines.append(f"| {i} | {r['n']} | {f} | {_f(r['figures']['A'][f])} | {_f(r['figures']['B'][f])} | "
                         f"{d['value']:+.3f} | {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f} |")
        ra, rb = r["rule"]["A"], r["rule"]["B"]
        lines.append(f"| {i} | {r['n']} | referred / acc not referred | {_f(ra.get('referred'))} / "
                     f"{_f(ra.get('accuracy_not_referred'))} | {_f(rb.get('referred'))} / "
                     f"{_f(rb.get('accuracy_not_referred'))} | | |")
    if len(results) > 1:
        for f in FIGURES:
            v = np.array([r["delta"][f]["value"] for r in results], float)
            v = v[np.isfinite(v)]
            if len(v):
                lines.append(f"| mean of {len(v)} | | {f} | | | {v.mean():+.3f} +- {v.std(ddof=1) if len(v) > 1 else 0:.3f} | "
                             f"(sd over pairs) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paired", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", type=Path, help="A0 B0 [A1 B1 ...]: bundles, in pairs of one split")
    p.add_argument("--side", default="test", choices=["test", "val"], help="side of the runs' split")
    p.add_argument("--format", default=F.DEPLOYED, choices=sorted(F.FORMATS), help="artifact compared")
    p.add_argument("--format-b", default=None, choices=sorted(F.FORMATS),
                   help="B's artifact when it differs from A's (e.g. QAT tflite_int8 against tflite_int8_ptq)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of patients")
    p.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write the table as a markdown report here (with the "
                   "command, commit, date and CPU)")
    p.add_argument("--title", default="Paired comparison", help="the markdown report's title")
    a = p.parse_args(argv)
    if len(a.bundles) % 2:
        p.error("give the bundles in pairs: A0 B0 [A1 B1 ...]")
    if not all_bundles(a.bundles):
        return 2
    from benchmarks.sysinfo import machine_info, report_header

    t0 = time.time()
    results = []
    try:
        for i in range(0, len(a.bundles), 2):
            print(f"pair {i // 2}: {a.bundles[i]} vs {a.bundles[i + 1]}", file=sys.stderr)
            results.append(compare(a.bundles[i], a.bundles[i + 1], a.side, a.format, a.bootstrap, a.format_b))
    except PairError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = machine_info()
    prov = {"command": "python -m benchmarks.paired " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": m, "seconds": round(time.time() - t0, 1)}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"pairs": results, "provenance": prov}, indent=2, default=E.jsonable) + "\n")
    head = "\n".join(f"pair {i}: A `{r['a']}` ({r['format']}), B `{r['b']}` ({r['format_b']}); {r['side']} side, "
                     f"{r['n']} films"
                     for i, r in enumerate(results))
    print(head)
    print(table(results))
    print(f"{m['date']}; {m['cpu']}; commit {m['commit']}")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(report_header(a.title, prov["command"], m) + "\n"
                        + "\n\n".join(f"- {line}" for line in head.splitlines()) + "\n\n"
                        "Each pair: two trainings of one seed (one patient-level split) on the same films; B - A "
                        "with the 95% interval of the paired bootstrap (patients resampled, each with all their films). The last rows: the mean "
                        "difference over pairs and its sd.\n\n" + table(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
