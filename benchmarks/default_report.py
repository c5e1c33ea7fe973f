"""``python -m benchmarks.default_report FIGURES.json ... --out benchmarks/DEFAULT_MODEL.md``: the default recipe's
figures over several trainings (seeds), against issue 16's goals.

Each input is what ``python -m benchmarks.default_figures BUNDLE --out FILE`` wrote for one training of the
recipe (its own seed, hence its own patient-level split). The report gives every training's row, the mean and
sample standard deviation over trainings for every artifact, the deployed artifact's bootstrap intervals per
training, and each goal met or missed by how much (judged on the mean). Nothing is typed in by hand: the header
names this command, the commit it ran at (and says so when the tree had uncommitted changes), the date and the
CPU, and lists each input's own command, commit, date and CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import formats as F

PRIMARY = F.DEPLOYED  # judged in figures written before they recorded the artifact their bundle serves


def judged(figs: dict) -> str:
    """The artifact a ``default_figures`` result is judged on: the one its bundle serves (older results, which do
    not record it: ``PRIMARY``)."""
    return figs.get("served") or PRIMARY

# (key, label, getter, goal, direction): direction +1 means "at least the goal", -1 "at most"; goal None: shown only
COLUMNS = [
    ("accuracy", "accuracy", lambda r: r.get("accuracy"), 0.88, +1),
    ("pair_auc", "NIH normal-vs-pneumonia AUC", lambda r: r.get("pair_auc"), 0.90, +1),
    ("pneumonia_sens", "pneumonia sensitivity (top class)",
     lambda r: r.get("per_class", {}).get("pneumonia", {}).get("sensitivity"), 0.85, +1),
    ("pneumonia_sens_point", "pneumonia sensitivity at the validation point (reported, not applied)",
     lambda r: r.get("pneumonia_at_threshold", {}).get("sensitivity"), 0.85, +1),
    ("pneumonia_spec_point", "specificity (NIH normals) at that point",
     lambda r: r.get("pneumonia_at_threshold", {}).get("specificity"), None, +1),
    ("tb_auc", "TB-vs-rest AUC", lambda r: r.get("tb_auc"), None, +1),
    ("tb_sens", "TB sensitivity at the stored threshold", lambda r: r.get("tb_at_threshold", {}).get("sensitivity"),
     0.90, +1),
    ("tb_spec", "TB specificity at the stored threshold", lambda r: r.get("tb_at_threshold", {}).get("specificity"),
     0.90, +1),
    ("referred", "referred by the refer rule", lambda r: r.get("refer_rule", {}).get("referred"), 0.20, -1),
    ("acc_kept", "accuracy of films not referred", lambda r: r.get("refer_rule", {}).get("accuracy_not_referred"),
     0.90, +1),
    ("tb_normal", "TB films given a normal decision", lambda r: r.get("refer_rule", {}).get("tuberculosis_called_normal"),
     0, -1),
    ("pn_normal", "pneumonia films given a normal decision",
     lambda r: r.get("refer_rule", {}).get("pneumonia_called_normal"), None, -1),
    ("ece", "ECE", lambda r: r.get("ece"), 0.05, -1),
    ("conf_gap", "mean confidence minus accuracy (> 0 over-confident, < 0 under-confident)",
     lambda r: r.get("confidence_gap"), None, -1),
    ("parity", "top-1 agreement with its Keras parent (validation films, at convert)",
     lambda r: r.get("agreement_vs_keras_parent_at_convert"), 0.99, +1),
]


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _f(v, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def mean_sd(values) -> tuple[float, float, int]:
    """Mean and sample standard deviation of the finite values, and how many there were."""
    v = np.array([x for x in map(_num, values) if np.isfinite(x)])
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def _pm(values, one: str = "one training") -> str:
    """Mean +- sd of the finite values; a single value is named as ``one``."""
    m, sd, n = mean_sd(values)
    if n == 0:
        return "-"
    return f"{m:.3f} +- {sd:.3f}" if n > 1 else f"{m:.3f} ({one})"


def verdict(mean: float, sd: float, goal: float, direction: int) -> str:
    """Met or missed by how much; 'tie' when the goal lies within one standard deviation of the mean."""
    if not np.isfinite(mean):
        return "not measured"
    gap = (mean - goal) * direction
    word = "met" if gap >= 0 else "missed"
    within = np.isfinite(sd) and abs(mean - goal) <= sd
    return f"{word} by {abs(gap):.3f}" + (" (within one sd: not settled)" if within else "")


def unsettled(goal: float | None, ci, refitted=None) -> str:
    """What a pooled verdict adds when its goal lies inside the 95% interval (then it is not settled): the
    interval with the stored thresholds, else the one with every fold's thresholds fitted again on resampled
    validation patients (``benchmarks.crossval``'s ``ci95_refitted``, for the figures that hang on thresholds)."""
    def inside(c):
        return goal is not None and c and np.isfinite(c).all() and c[0] <= goal <= c[1]
    if inside(ci):
        return " (goal inside the 95% interval: not settled)"
    if inside(refitted):
        return (f" (goal inside the 95% interval with thresholds fitted again on resampled validation patients, "
                f"{_f(refitted[0])}-{_f(refitted[1])}: not settled)")
    return ""


def _provenance(figs: dict) -> str:
    p = figs.get("provenance", {})
    m = p.get("machine", {})
    return f"`{p.get('command', '?')}` at commit {m.get('commit', '?')}, {m.get('date', '?')}, {m.get('cpu', '?')}"


def _seed(figs: dict) -> str:
    """The split seed of the training's run, with its fold where the split was one of k folds and the number of
    trainings the bundle serves where it is an ensemble (``seed 0, fold 2 of 5, 2 trainings``)."""
    try:
        cfg = json.loads((Path(figs["run"]) / "train_config.json").read_text())
    except (OSError, KeyError, ValueError):
        return "?"
    text = str(cfg.get("seed", "?"))
    if cfg.get("folds") and cfg.get("fold") is not None:
        text += f", fold {cfg['fold']} of {cfg['folds']}"
    try:
        members = json.loads((Path(figs["bundle"]) / "metadata.json").read_text()).get("members") or []
    except (OSError, KeyError, ValueError, AttributeError):
        members = []
    return text + (f", {len(members)} trainings" if len(members) > 1 else "")


def report(all_figs: list[dict], command: str) -> str:
    from benchmarks.sysinfo import machine_info

    me = machine_info()
    formats = list(dict.fromkeys(f for figs in all_figs for f, r in figs["formats"].items() if "error" not in r))
    n = len(all_figs)
    lines = [f"# The default recipe over {n} build(s): figures on each build's own test films", "",
             "> A screening aid, not a diagnosis. Figures from public development data (NIH and TBX11K films), not "
             "from a clinic.", "",
             f"- **Command:** `{command}`",
             f"- **Commit:** {me['commit'] or 'unknown'}; **date:** {me['date']}; **CPU:** {me['cpu']}, "
             f"{me['cores']} cores",
             "- **Inputs** (one `benchmarks.default_figures` run per build: one training, or an ensemble's trainings in one "
             "bundle; each build has its own seed or fold and "
             "so its own patient-level split):"]
    for figs in all_figs:
        lines.append(f"  - `{figs['bundle']}` (seed {_seed(figs)}, {figs['side']} side, {figs['n']} films): "
                     + _provenance(figs))
    if any("uncommitted" in str(f.get("provenance", {}).get("machine", {}).get("commit", "")) for f in all_figs) \
            or "uncommitted" in str(me["commit"]):
        lines += ["", "**Warning: some figures come from a tree with uncommitted changes; rerun from a clean commit "
                      "before quoting them.**"]
    served = [judged(figs) for figs in all_figs]
    what = served[0] if len(set(served)) == 1 else "the served artifact"
    lines += ["", f"## {what} (what the device serves from each bundle) against issue 16's goals", "",
              "Mean +- sample sd over trainings; the verdict is judged on the mean, and a goal within one sd of it is "
              "not settled. Served per training: " + ", ".join(
                  f"seed {_seed(f)} {m}" + (f" ({f['served_because']})" if f.get("served_because") else "")
                  for f, m in zip(all_figs, served)) + ".", "",
              "| figure | goal | mean +- sd | verdict | per training |", "|---|---|---|---|---|"]
    rows = [figs["formats"].get(m, {}) for figs, m in zip(all_figs, served)]
    for key, label, get, goal, direction in COLUMNS:
        vals = [get(r) for r in rows]
        m, sd, _ = mean_sd(vals)
        g = "-" if goal is None else ((">= " if direction > 0 else "<= ") + f"{goal:g}")
        v = "-" if goal is None else verdict(m, sd, goal, direction)
        lines.append(f"| {label} | {g} | {_pm(vals)} | {v} | {', '.join(_f(_num(x)) for x in vals)} |")
    shift = [figs.get("site_shift", {}) for figs in all_figs]
    names = [k for k in dict.fromkeys(k for s in shift for k in s) if k != "none"]  # "none" = the rows above
    for name in names:
        acc = [s.get(name, {}).get("accuracy") for s in shift]
        nn = [s.get(name, {}).get("pair_normals_called_normal") for s in shift]
        lines.append(f"| films {name}: accuracy | - | {_pm(acc)} | - | {', '.join(_f(_num(x)) for x in acc)} |")
        lines.append(f"| films {name}: NIH normals called normal | most (> 0.5) | {_pm(nn)} | "
                     f"{verdict(*mean_sd(nn)[:2], 0.5, +1)} | {', '.join(_f(_num(x)) for x in nn)} |")

    unit = {r.get("ci95", {}).get("unit", "film") for r in rows}
    lines += ["", f"## {what}: 95% bootstrap intervals per training ({' or '.join(sorted(unit))}s resampled)", "",
              "| training | accuracy | interval | NIH normal-vs-pneumonia AUC | interval |", "|---|---|---|---|---|"]
    for figs, r in zip(all_figs, rows):
        ci = r.get("ci95", {})
        acc, auc = ci.get("accuracy", [None, None]), ci.get("pair_auc", [None, None])
        lines.append(f"| seed {_seed(figs)} | {_f(_num(r.get('accuracy')))} | {_f(_num(acc[0]))}-{_f(_num(acc[1]))} | "
                     f"{_f(_num(r.get('pair_auc')))} | {_f(_num(auc[0]))}-{_f(_num(auc[1]))} |")

    lines += ["", "## Every artifact: mean +- sd over trainings", "",
              "| format | accuracy | " + " | ".join(label for key, label, *_ in COLUMNS[1:]) + " |",
              "|" + "---|" * (len(COLUMNS) + 1)]
    for fmt in formats:
        rs = [figs["formats"].get(fmt, {}) for figs in all_figs]
        lines.append(f"| {fmt} | " + " | ".join(_pm([get(r) for r in rs]) for _, _, get, *_ in COLUMNS) + " |")

    lines += ["", "## Accuracy per data source (mean +- sd)", ""]
    srcs = sorted({s for figs in all_figs for r in figs["formats"].values() for s in r.get("by_source", {})})
    lines += ["| format | " + " | ".join(srcs) + " |", "|" + "---|" * (len(srcs) + 1)]
    for fmt in formats:
        rs = [figs["formats"].get(fmt, {}) for figs in all_figs]
        lines.append(f"| {fmt} | " + " | ".join(_pm([r.get("by_source", {}).get(s, {}).get("accuracy") for r in rs])
                                                 for s in srcs) + " |")

    lines += ["", f"## {what}: normal vs pneumonia by view position", "",
              "Within one view the model cannot lean on the view; 'view alone' is the AUC that the view by itself "
              "(PA scored higher) reaches on the same films.", "",
              "| training | view alone | per view: AUC (normal, pneumonia films) |", "|---|---|---|"]
    for figs, r in zip(all_figs, rows):
        bv = r.get("pair_auc_by_view") or {}
        per = ", ".join(f"{v} {_f(_num(x['auc']))} ({x['normal']}, {x['pneumonia']})"
                        for v, x in bv.get("by_view", {}).items())
        lines.append(f"| seed {_seed(figs)} | {_f(_num(bv.get('view_alone_auc')))} | {per or 'no view in the manifest'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.default_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figures", nargs="+", type=Path, help="JSON files written by benchmarks.default_figures --out")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here (default: print it)")
    a = p.parse_args(argv)
    all_figs = []
    for path in a.figures:
        try:
            figs = json.loads(path.read_text())
            figs["formats"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: {path} is not a default_figures JSON file ({exc})", file=sys.stderr)
            return 2
        all_figs.append(figs)
    text = report(all_figs, "python -m benchmarks.default_report " + " ".join(
        str(x) for x in (argv if argv is not None else sys.argv[1:])))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"wrote {a.out} ({time.strftime('%H:%M:%S')})", file=sys.stderr)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
