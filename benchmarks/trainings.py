"""``python -m benchmarks.trainings SAVED SAVED ... [--out FILE] [--md FILE]``: several trainings of the same folds,
alone and combined.

Each ``SAVED`` is the saved-folds file of one training of a cross-validation (``benchmarks.crossval ...
--save-folds FILE``): the same folds' test films, scored by another training (a rerun of the same recipe, or
another recipe). For every fold that at least two trainings hold, on its test films:

- each training's threshold-free figures (accuracy of the top class, the normal-vs-pneumonia AUC within the
  source holding both, TB-vs-rest AUC), their mean (what one training gives, on average) and their range (max -
  min: how far an identical retraining moves the figure, the run-to-run spread);
- the ensemble of every combination of two or more trainings, their outputs combined as test-time views are (a
  geometric mean, ``edge_runtime.views.combine``), and its gain over the mean of its own members.

The figures need no threshold, and trainings saved without validation outputs take part. No temperature is fitted
to the combination: one temperature changes neither the top class nor the normal-vs-pneumonia order (it scales the
gap between two log-probabilities), while TB-vs-rest AUC can move a little with it (read that column as
approximate). The gains over folds are a description (mean, smallest and largest), not an interval: combinations
share members and films, so they are not independent draws; paired intervals for one ensemble come from
``benchmarks.crossval --mean-with``. What an ensemble's refer rule and
TB point would do needs each training's validation outputs: ``benchmarks.crossval SAVED --mean-with SAVED``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from benchmarks import crossval as CV
from benchmarks.study import evaluate as E
from edge_runtime import formats as F

FIGURES = (("accuracy", "accuracy"), ("pair_auc", "NIH normal-vs-pneumonia AUC"), ("tb_auc", "TB-vs-rest AUC"))


def name_of(path: Path) -> str:
    """A training's short name: its saved-folds file's folder (``docs/cv5v/folds.json`` -> ``cv5v``), or the
    file's stem where that says more."""
    path = Path(path)
    return path.parent.name if path.stem == "folds" else path.stem


def figures(f: CV.Fold, cal: np.ndarray) -> dict:
    row = E.summarise(f.y, cal, f.sources, f.labels, 1.0, None)
    return {k: float(row.get(k, float("nan"))) for k, _ in FIGURES}


def compare(trainings: dict[str, list[CV.Fold]]) -> dict:
    """``trainings``: name -> that training's folds. Per fold held by two or more: each training's figures, their
    mean and range, and every combination's ensemble with its gain over the mean of its members; over folds: the
    gains per ensemble size."""
    from edge_runtime.views import combine

    if len(trainings) < 2:
        raise CV.FoldError("give at least two trainings (saved-folds files) of the same folds")
    by_fold: dict[int, dict[str, CV.Fold]] = {}
    for name, folds in trainings.items():
        for f in folds:
            by_fold.setdefault(f.fold, {})[name] = f
    per_fold, gains, skipped = {}, {}, {}
    for k in sorted(by_fold):
        held = by_fold[k]
        if len(held) < 2:
            skipped[k] = list(held)
            continue
        names = list(held)
        ref = held[names[0]]
        aligned = {n: ref if n == names[0] else CV.paired_with([held[n]], [ref])[0] for n in names}
        alone = {n: figures(ref, aligned[n].cal) for n in names}
        mean = {key: float(np.mean([alone[n][key] for n in names])) for key, _ in FIGURES}
        spread = {key: float(np.ptp([alone[n][key] for n in names])) for key, _ in FIGURES}
        ens = {}
        for size in range(2, len(names) + 1):
            for combo in itertools.combinations(names, size):
                fig = figures(ref, combine([aligned[n].cal for n in combo]))
                members = {key: float(np.mean([alone[n][key] for n in combo])) for key, _ in FIGURES}
                gain = {key: fig[key] - members[key] for key, _ in FIGURES}
                best = {key: fig[key] - max(alone[n][key] for n in combo) for key, _ in FIGURES}
                ens[" + ".join(combo)] = {"size": size, "figures": fig, "gain_over_mean": gain,
                                          "gain_over_best": best}
                for key, _ in FIGURES:
                    gains.setdefault(size, {}).setdefault(key, []).append(gain[key])
                    gains[size].setdefault(f"{key}_best", []).append(best[key])
        per_fold[k] = {"films": int(len(ref.y)), "alone": alone, "mean": mean, "range": spread, "ensembles": ens}
    if not per_fold:
        raise CV.FoldError("no fold is held by two trainings: nothing to compare")
    summary = {size: {key: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)),
                            "n": len(v)} for key, v in g.items()} for size, g in sorted(gains.items())}
    return {"trainings": list(trainings), "per_fold": per_fold, "gain_by_size": summary,
            "folds_held_by_one": skipped}


def table(res: dict) -> str:
    lines = []
    for k, fold in res["per_fold"].items():
        lines += [f"Fold {k} ({fold['films']} test films):", "",
                  "| training(s) | " + " | ".join(label for _, label in FIGURES) + " | gain over the mean of its "
                  "members (accuracy, AUC) | gain over its best member |", "|---|" + "---|" * (len(FIGURES) + 2)]
        for n, fig in fold["alone"].items():
            lines.append(f"| {n} | " + " | ".join(f"{fig[key]:.3f}" for key, _ in FIGURES) + " | - | - |")
        lines.append("| mean of the trainings alone | " + " | ".join(f"{fold['mean'][key]:.3f}" for key, _ in FIGURES)
                     + " | - | - |")
        lines.append("| range (max - min): run-to-run spread | " + " | ".join(
            f"{fold['range'][key]:.3f}" for key, _ in FIGURES) + " | - | - |")
        for combo, e in fold["ensembles"].items():
            g, b = e["gain_over_mean"], e["gain_over_best"]
            lines.append(f"| ensemble {combo} | " + " | ".join(f"{e['figures'][key]:.3f}" for key, _ in FIGURES)
                         + f" | {g['accuracy']:+.3f}, {g['pair_auc']:+.3f} | {b['accuracy']:+.3f}, {b['pair_auc']:+.3f} |")
        lines.append("")
    if res.get("folds_held_by_one"):
        lines += ["Folds held by one training only (left out): " + "; ".join(
            f"fold {k}: {', '.join(v)}" for k, v in res["folds_held_by_one"].items()), ""]
    lines += ["Over folds, per ensemble size (every combination in every fold): the ensemble's figure minus the mean "
              "of its members' (and minus its best member's), as mean (smallest to largest): a description, not an "
              "interval (combinations share members and films).", "",
              "| trainings combined | combinations | " + " | ".join(f"{label}: over the mean" for _, label in FIGURES)
              + " | accuracy: over the best | AUC: over the best |", "|---|---|" + "---|" * (len(FIGURES) + 2)]

    def cell(s):
        return f"{s['mean']:+.3f} (smallest {s['min']:+.3f}, largest {s['max']:+.3f})"

    for size, s in res["gain_by_size"].items():
        lines.append(f"| {size} | {s['accuracy']['n']} | " + " | ".join(cell(s[key]) for key, _ in FIGURES)
                     + f" | {cell(s['accuracy_best'])} | {cell(s['pair_auc_best'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trainings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("saved", nargs="+", type=Path, help="one saved-folds file per training (crossval --save-folds)")
    p.add_argument("--format", default=F.DEPLOYED, choices=sorted(F.FORMATS), help="the artifact the files hold (default %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--md", type=Path, default=None, help="write a markdown report here (command, commit, date, CPU)")
    p.add_argument("--title", default="Trainings of the same folds, alone and combined")
    a = p.parse_args(argv)
    from benchmarks.sysinfo import machine_info, report_header

    names = [name_of(s) for s in a.saved]
    if len(set(names)) != len(names):
        names = [str(s) for s in a.saved]
    try:
        res = compare({n: CV.load_saved(s, a.format) for n, s in zip(names, a.saved)})
    except CV.FoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = machine_info()
    res["provenance"] = {"command": "python -m benchmarks.trainings " + shlex.join(
        str(x) for x in (argv if argv is not None else sys.argv[1:])), "machine": m,
        "files": {n: str(s) for n, s in zip(names, a.saved)}}
    text = table(res)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2, default=E.jsonable) + "\n")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(report_header(a.title, res["provenance"]["command"], m) + "\n"
                        + "\n".join(f"- {n}: `{s}`" for n, s in zip(names, a.saved)) + "\n\n"
                        + "Each training's deployed artifact scored each fold's test films through the device runtime "
                          "(as saved by `benchmarks.crossval --save-folds`); an ensemble combines the trainings' "
                          "outputs as test-time views are combined. Threshold-free figures only: an ensemble's "
                          "refer rule and TB point: `benchmarks.crossval SAVED --mean-with SAVED`.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
