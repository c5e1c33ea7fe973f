"""``python -m benchmarks.ensemble RUN RUN ... [--side val] [--out FILE] [--md FILE]``: how strong is a teacher?

Distillation (``train --teacher RUN ...``) trains a student on the mean probabilities of several runs of one
patient-level split. This scores that ensemble before anyone spends a training on it: each run's float Keras
model (``model_float.keras``, what ``train --teacher`` reads) on the films of one side of the common split,
through its own preprocessing, and the mean of their probabilities beside them. Figures: accuracy (pooled and
per data source), the normal-vs-pneumonia AUC within the source holding both, the TB-vs-rest AUC, each with the
95% interval of a bootstrap of patients (each with all their films), and the ensemble's paired difference from the first run.

Validation figures flatter runs that stopped early on those very films (each chose its epoch on them), and an
ensemble of such runs the more; read the test side once for the record.
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

ENSEMBLE = "ensemble"


def _probs(run: Path, side: str):
    from edge_runtime.metadata import ModelMetadata
    from train import keras_io as K

    meta = ModelMetadata.load(run / "metadata.json")
    arr = E._split_arrays(run, meta).get(side)
    if arr is None or not len(arr.labels):
        raise ValueError(f"{run}: no {side} films in its split")
    probs = K.predict(K.load_model(run / "model_float.keras"), arr.images)
    return arr, np.asarray(probs, dtype=np.float64), list(meta.labels)


def score(runs: list[Path], side: str = "val", n_boot: int = 1000, progress=print) -> dict:
    """Each run's and the mean ensemble's figures on ``side`` (see the module docstring)."""
    for run in runs:
        missing = [f for f in ("model_float.keras", "metadata.json", "split.csv") if not (run / f).is_file()]
        if missing:
            raise ValueError(f"{run}: not a finished training run (missing {', '.join(missing)})")
    ref, probs, labels = None, {}, None
    for run in runs:
        arr, p, lab = _probs(run, side)
        if ref is None:
            ref, labels = arr, lab
        elif lab != labels:
            raise ValueError(f"{run}: classes {lab} differ from {runs[0]}'s {labels}")
        elif {s.path for s in arr.samples} != {s.path for s in ref.samples}:
            raise ValueError(f"{run} holds other {side} films than {runs[0]}: an ensemble needs runs of one split "
                             f"(train them with --split {runs[0] / 'split.csv'})")
        order = {s.path: i for i, s in enumerate(arr.samples)}
        probs[str(run)] = p[[order[s.path] for s in ref.samples]]
        progress(f"{run}: {len(ref.labels)} {side} films scored")
    if len(probs) != len(runs):
        raise ValueError("give each run once")
    probs[ENSEMBLE] = np.mean([probs[str(r)] for r in runs], axis=0)
    y, sources = np.asarray(ref.labels), np.asarray(ref.sources)
    pair = E.pair_source(y, sources, labels)
    nih = sources == pair
    boot = bootstrap_figures(y, probs, sources, labels, n=n_boot, pairs=[(ENSEMBLE, str(runs[0]))],
                             groups=patients(ref.samples))
    rows = {}
    for name, p in probs.items():
        rows[name] = {"accuracy": float((p.argmax(1) == y).mean()),
                      "pair_auc": E.pair_auc(y[nih], p[nih], labels), "tb_auc": E.tb_auc(y, p, labels),
                      "accuracy_by_source": {s: float((p[sources == s].argmax(1) == y[sources == s]).mean())
                                             for s in sorted(set(sources))},
                      "ci": boot["ci"][name]}
    first = probs[str(runs[0])]
    delta = {f: rows[ENSEMBLE][f] - rows[str(runs[0])][f] for f in FIGURES}
    return {"side": side, "n": int(len(y)), "unit": boot["unit"], "pair_source": pair, "runs": [str(r) for r in runs], "rows": rows,
            "ensemble_minus_first": {f: {"value": delta[f], "ci": boot["delta"][f"{ENSEMBLE} - {runs[0]}"][f]}
                                     for f in FIGURES},
            "top1_agreement_with_first": float((probs[ENSEMBLE].argmax(1) == first.argmax(1)).mean())}


def table(res: dict) -> str:
    srcs = sorted(next(iter(res["rows"].values()))["accuracy_by_source"])
    out = ["| model | accuracy | 95% interval | " + " | ".join(f"accuracy {s}" for s in srcs)
           + f" | {res['pair_source']} normal-vs-pneumonia AUC | 95% interval | TB-vs-rest AUC |",
           "|---|---|---|" + "---|" * len(srcs) + "---|---|---|"]
    for name, r in res["rows"].items():
        ci = r["ci"]
        out.append(f"| {name} | {r['accuracy']:.3f} | {ci['accuracy'][0]:.3f} to {ci['accuracy'][1]:.3f} | "
                   + " | ".join(f"{r['accuracy_by_source'][s]:.3f}" for s in srcs)
                   + f" | {r['pair_auc']:.3f} | {ci['pair_auc'][0]:.3f} to {ci['pair_auc'][1]:.3f} | {r['tb_auc']:.3f} |")
    d = res["ensemble_minus_first"]
    out.append("")
    out.append("Ensemble minus the first run (paired bootstrap): "
               + "; ".join(f"{f} {d[f]['value']:+.3f} ({d[f]['ci'][0]:+.3f} to {d[f]['ci'][1]:+.3f})" for f in FIGURES)
               + f"; the same top class on {100 * res['top1_agreement_with_first']:.1f}% of films.")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="training run folders of one patient-level split")
    p.add_argument("--side", default="val", choices=["val", "test"], help="side of the runs' split (default val)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of patients")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write a markdown report here (command, commit, date, CPU)")
    p.add_argument("--title", default="Teacher ensemble", help="the markdown report's title")
    a = p.parse_args(argv)
    from benchmarks.sysinfo import machine_info, report_header

    t0 = time.time()
    try:
        res = score(a.runs, a.side, a.bootstrap, progress=lambda m: print(m, file=sys.stderr))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = machine_info()
    res["provenance"] = {"command": "python -m benchmarks.ensemble " + " ".join(argv if argv is not None else sys.argv[1:]),
                         "machine": m, "seconds": round(time.time() - t0, 1)}
    print(table(res))
    print(f"{res['side']} side, {res['n']} films; {m['date']}; {m['cpu']}; commit {m['commit']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2, default=E.jsonable) + "\n")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(report_header(a.title, res["provenance"]["command"], m)
                        + f"- {res['side']} side of the runs' common patient-level split, {res['n']} films; float "
                        f"Keras models (`model_float.keras`); `{ENSEMBLE}` = the mean of their probabilities.\n\n"
                        + table(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
