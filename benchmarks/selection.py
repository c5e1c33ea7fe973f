"""``python -m benchmarks.selection [--levers recipes/levers.toml] [--out benchmarks/MODEL_SELECTION.md]``: the
model-selection study of issue 16 as one report, written from the committed reports it lists.

``recipes/levers.toml`` names the default recipe's cross-validation report (``benchmarks.crossval --out``) and every
lever measured against the default, each by its committed JSON report: ``benchmarks.paired --out`` (the lever and
the default trained on the same splits, film by film, one pair per seed) or ``benchmarks.crossval --out`` with a
``key`` (``versus_baseline``: a lever's folds against the default's; ``what_if.class_bias``). The report gives

- the default's out-of-fold figures against issue 16's goals: pooled, with 95% intervals where the report has them,
  mean +- sd over folds, met or missed by how much;
- one row per lever: the difference lever - default of accuracy, NIH normal-vs-pneumonia AUC and TB-vs-rest AUC
  (mean +- sd over seeds, and each seed's 95% paired interval; for folds the pooled difference with its interval),
  the referral rate before and after, whether any interval excludes 0, and the decision kept in the levers file;
- the run-to-run spread (``rerun``: the default recipe trained again on the same folds): per fold, how far an
  identical retraining moved each figure. ``rerun-of`` names the report the rerun repeats when that is not
  ``default`` (a spread measured on an earlier recipe; the report then says so). A lever trained once per fold whose difference is no larger than this
  cannot be told from a retraining, whatever its film-resampled interval says;
- where each figure comes from (command, commit, date, CPU of every input report).

Figures are read, never typed: only a lever's name and decision come from the levers file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tomllib
from pathlib import Path

from benchmarks import default_report as R

FIGURES = (("accuracy", "accuracy"), ("pair_auc", "NIH normal-vs-pneumonia AUC"), ("tb_auc", "TB-vs-rest AUC"),
           ("tb_sens", "TB sensitivity at the stored threshold"))  # the last: where the report has it (a threshold lever)


class LeverError(ValueError):
    pass


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LeverError(f"{path}: not a readable JSON report ({exc})") from exc


def _dig(doc: dict, key: str, where: Path) -> dict:
    for part in key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            raise LeverError(f"{where} has no {key!r} (run benchmarks.crossval with the option that writes it)")
        doc = doc[part]
    return doc


def pair_unit(pairs: list[dict]) -> str:
    """What a paired report's pairs are: 'fold' when each is a different fold of one seed's cross-validation (the
    split each pair's runs were trained on, recorded by benchmarks.paired), else 'seed' (one split per seed; older
    reports record no split)."""
    splits = [p.get("split") or {} for p in pairs]
    folds = [s.get("fold") for s in splits]
    if all(f is not None for f in folds) and len(set(folds)) == len(folds) \
            and len({s.get("seed") for s in splits}) == 1:
        return "fold"
    return "seed"


def lever_figures(doc: dict, key: str | None, where: Path) -> dict:
    """A lever's differences (lever - default) from one report: per figure the per-seed or per-fold values, their
    95% intervals, and the referral rates before and after; ``unit`` says what the values are."""
    if key is None:
        pairs = doc.get("pairs")
        if not pairs:
            raise LeverError(f"{where} is not a benchmarks.paired report (no pairs): give `key` for a crossval report")
        out = {"unit": pair_unit(pairs), "n": len(pairs), "films": [p["n"] for p in pairs],
               "side": "/".join(dict.fromkeys({"val": "validation"}.get(p.get("side"), p.get("side", "?"))
                                              for p in pairs)),
               "resampled": sorted({p.get("unit", "film") for p in pairs}),  # reports before patients: films
               "referred": [[(p.get("rule") or {}).get(s, {}).get("referred") for s in ("A", "B")] for p in pairs]}
        for k, _ in FIGURES:
            out[k] = {"values": [(p["delta"].get(k) or {}).get("value") for p in pairs],
                      "ci95": [(p["delta"].get(k) or {}).get("ci95") for p in pairs]}
        return out
    cmp = _dig(doc, key, where)
    base_pooled = (cmp.get("base_pooled") or doc["pooled"]) if key.startswith("what_if") else cmp["baseline_pooled"]
    base_per = (cmp.get("base_per_fold") or doc["per_fold"]) if key.startswith("what_if") else cmp["baseline_per_fold"]
    folds = sorted(cmp["per_fold"], key=int)
    get = {k: g for k, _, g, _, _ in R.COLUMNS}
    out = {"unit": "fold", "n": len(folds), "films": [cmp["pooled"].get("n", doc.get("n"))], "resampled": [cmp.get("unit", "film")],
           "side": "out of fold",
           "referred": [[get["referred"](base_pooled), get["referred"](cmp["pooled"])]]}
    for k, _ in FIGURES:
        per = [R._num(get[k](cmp["per_fold"][f])) - R._num(get[k](base_per[f])) for f in folds]
        out[k] = {"pooled": R._num(get[k](cmp["pooled"])) - R._num(get[k](base_pooled)), "values": per,
                  "ci95": [cmp["delta_ci95"].get(k)]}
    return out


def settled(fig: dict) -> str:
    """How many of the intervals exclude 0, and which way: 'tie' when none does, 'up (1 of 2)' or 'down (2 of 2)'
    when some do and all of those agree, 'mixed' when they point both ways."""
    cis = [c for c in fig["ci95"] if c]
    up = sum(1 for lo, _ in cis if lo > 0)
    down = sum(1 for _, hi in cis if hi < 0)
    if up and down:
        return "mixed"
    return "tie" if not (up or down) else f"{'up' if up else 'down'} ({up or down} of {len(cis)})"


def _delta_cell(fig: dict) -> str:
    """A pooled out-of-fold difference with per-fold mean +- sd, or per-pair (seed or fold) mean +- sd with each
    pair's interval."""
    cis = "; ".join(f"{c[0]:+.3f} to {c[1]:+.3f}" for c in fig["ci95"] if c)
    if not any(math.isfinite(R._num(v)) for v in fig["values"]) and not math.isfinite(R._num(fig.get("pooled"))):
        return "-"  # a report that does not hold this figure
    if "pooled" in fig:
        m, sd, n = R.mean_sd(fig["values"])
        return f"{fig['pooled']:+.3f} ({cis})" + (f"; per fold {m:+.3f} +- {sd:.3f}" if n > 1 else "; one fold")
    m, sd, n = R.mean_sd(fig["values"])
    head = f"{m:+.3f} +- {sd:.3f}" if n > 1 else f"{m:+.3f}"
    return f"{head} ({cis})" if cis else head


def _referred(pairs) -> str:
    return ", ".join(f"{a:.0%} -> {b:.0%}" for a, b in pairs if a is not None and b is not None) or "-"


def _cpu(doc: dict) -> str:
    return ((doc.get("provenance") or {}).get("machine") or {}).get("cpu", "an unrecorded CPU")


def _provenance(doc: dict) -> str:
    p = doc.get("provenance") or {}
    m = p.get("machine") or {}
    return f"`{p.get('command', '?')}` at commit {m.get('commit', '?')}, {m.get('date', '?')}, {m.get('cpu', '?')}"


def rerun_differences(cv: dict, again: dict) -> dict:
    """{figure key: [(fold, first, again), ...]} over the folds both cross-validation reports hold (the default
    recipe trained twice on the same folds), for every figure of ``R.COLUMNS`` but parity; a fold whose two
    reports hold different numbers of test films is refused (not the same folds)."""
    folds = sorted(set(cv["per_fold"]) & set(again["per_fold"]), key=int)
    for f in folds:
        n0, n1 = cv["per_fold"][f].get("n"), again["per_fold"][f].get("n")
        if n0 != n1:
            raise LeverError(f"the rerun's fold {f} holds {n1} test films, the default's {n0}: not the same folds")
    return {key: [(f, get(cv["per_fold"][f]), get(again["per_fold"][f])) for f in folds]
            for key, _, get, _, _ in R.COLUMNS if key != "parity"}


def largest_difference(pairs) -> float | None:
    """The largest |again - first| over ``rerun_differences`` pairs holding both values (None: none does)."""
    d = [abs(R._num(b) - R._num(a)) for _, a, b in pairs if a is not None and b is not None]
    return max(d) if d else None


def rerun_rows(cv: dict, again: dict) -> list[str]:
    """One row per figure: the default's value on each fold both reports hold, the retrained value, and the
    difference (again - first); then the largest absolute difference. Empty when no fold is shared."""
    diffs = rerun_differences(cv, again)
    folds = [f for f, _, _ in next(iter(diffs.values()))]
    if not folds:
        return []
    head = " | ".join(f"fold {f}: first -> again (difference)" for f in folds)
    lines = [f"| figure | {head} | largest difference |", "|---|" + "---|" * (len(folds) + 1)]
    for key, label, _, _, _ in R.COLUMNS:
        if key == "parity":
            continue
        cells, count = [], False
        for _, a, b in diffs[key]:
            if a is None or b is None:
                cells.append("-")
                continue
            count = isinstance(a, int) and isinstance(b, int)  # films called normal: counts, not rates
            d = R._num(b) - R._num(a)
            cells.append(f"{a} -> {b} ({d:+.0f})" if count else f"{R._f(a)} -> {R._f(b)} ({d:+.3f})")
        big = largest_difference(diffs[key])
        big = "-" if big is None else (f"{big:.0f}" if count else f"{big:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {big} |")
    return lines


def default_rows(cv: dict) -> list[str]:
    pooled, per = cv["pooled"], cv["per_fold"]
    rows = [per[k] for k in sorted(per, key=int)]
    cis, refits = pooled.get("ci95") or {}, pooled.get("ci95_refitted") or {}
    lines = ["| figure | goal | pooled out of fold | 95% interval (thresholds as stored; refitted on resampled "
             "validation patients) | mean +- sd over folds | verdict (pooled) |", "|---|---|---|---|---|---|"]
    for key, label, get, goal, direction in R.COLUMNS:
        v = R._num(get(pooled))
        ci, refit = cis.get(key), refits.get(key)
        g = "-" if goal is None else ((">= " if direction > 0 else "<= ") + f"{goal:g}")
        verdict = "-" if goal is None else R.verdict(v, float("nan"), goal, direction) + R.unsettled(goal, ci, refit)
        shown = str(get(pooled)) if isinstance(get(pooled), int) else R._f(v)
        interval = (f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-") + (f"; {refit[0]:.3f}-{refit[1]:.3f}" if refit else "")
        lines.append(f"| {label} | {g} | {shown} | {interval} | {R._pm([get(r) for r in rows], 'one fold')} | "
                     f"{verdict} |")
    return lines


def _field(d: dict, key: str, where: str):
    if key not in d:
        raise LeverError(f"{where} has no {key!r}")
    return d[key]


def _link(path: Path, root: Path, out_dir: Path) -> str:
    """A markdown link to ``path`` (relative to the repository ``root``) from a report written in ``out_dir``."""
    return f"[{path}]({Path(os.path.relpath(root / path, out_dir)).as_posix()})"


def report(levers_file: Path, command: str, out_dir: Path | None = None) -> str:
    from benchmarks.sysinfo import machine_info, report_header

    try:
        spec = tomllib.loads(Path(levers_file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LeverError(f"{levers_file}: not a readable levers file ({exc})") from exc
    root = Path(levers_file).resolve().parent.parent  # recipes/levers.toml: paths are relative to the repository
    out_dir = (Path(out_dir) if out_dir is not None else Path.cwd()).resolve()
    cv_path = Path(_field(spec, "default", str(levers_file)))
    cv = _read(root / cv_path)
    cov = cv["coverage"]
    lines = [report_header("Model selection: the default recipe and every lever measured against it", command,
                           machine_info()),
             f"Written by `python -m benchmarks.selection` from the committed reports listed in `{levers_file}` "
             "(figures read from them, never typed; only each lever's decision is written by hand there).", "",
             f"## The default recipe out of fold ({len(cov['present'])} of {cov['folds']} folds, seed {cov['seed']}, "
             f"{cv['n']} films)", "",
             f"From {_link(cv_path, root, out_dir)}, {_provenance(cv)}. Each film scored once by the deployed "
             f"`{cv['format']}` of the fold that never saw it; the intervals resample "
             f"{(cv['pooled'].get('ci95') or {}).get('unit', 'film')}s.", "",
             *default_rows(cv), "",
             "## Levers against the default", "",
             "Difference = lever - baseline on the same films (the baseline is the default as it stood when the lever was "
             "measured, see its report, unless the row names "
             "another). Seeds (or folds compared pair by pair): mean +- sd of the per-seed (per-fold) differences, "
             "each one's 95% paired interval in brackets (what its bootstrap resampled: `intervals`). Folds out of "
             "fold (a row with 'per fold'): the pooled difference with its interval, and the per-fold differences. "
             "The column after the referrals "
             "counts the intervals of accuracy and of NIH AUC that exclude 0 (tie: none does).", "",
             "| lever | films | unit | accuracy | NIH normal-vs-pneumonia AUC | TB-vs-rest AUC | TB sensitivity at the "
             "stored threshold | referred (baseline -> lever) | intervals excluding 0 (accuracy; NIH AUC) | intervals "
             "| decision |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    sources = []
    for i, lever in enumerate(spec.get("lever", [])):
        path = Path(_field(lever, "report", f"{levers_file}: lever {i + 1}"))
        name = _field(lever, "name", f"{levers_file}: lever {i + 1}")
        doc = _read(root / path)
        figs = lever_figures(doc, lever.get("key"), path)
        cells = [_delta_cell(figs[k]) for k, _ in FIGURES]
        lines.append(f"| {name} | {figs['side']} ({'+'.join(str(n) for n in figs['films'])}) | "
                     f"{figs['n']} {figs['unit']}{'s' if figs['n'] != 1 else ''} | " + " | ".join(cells) + f" | {_referred(figs['referred'])} | "
                     f"{settled(figs['accuracy'])}; {settled(figs['pair_auc'])} | "
                     f"{', '.join(u + 's' for u in figs['resampled'])} resampled | {lever.get('decision', '-')} |")
        sources.append(f"- {_link(path, root, out_dir)}{' (' + lever['key'] + ')' if lever.get('key') else ''}: "
                       f"{_provenance(doc)}")
    if spec.get("rerun"):
        again_path = Path(spec["rerun"])
        again = _read(root / again_path)
        first_path = Path(spec.get("rerun-of") or cv_path)
        first = cv if first_path == cv_path else _read(root / first_path)
        rows = rerun_rows(first, again)
        other = first_path != cv_path
        lines += ["", "## Run-to-run spread: the default recipe trained again" + (
                      " (measured on an earlier recipe)" if other else ""), ""]
        if other:
            lines += [f"Measured on the recipe of {_link(first_path, root, out_dir)} ({_provenance(first)}), not "
                      f"on the default's report above: the current recipe's own rerun spread is not measured yet.",
                      ""]
        lines += [f"The same recipe, folds and seed trained a second time ({_link(again_path, root, out_dir)}, "
                  f"{_provenance(again)}), against the first training ({_link(first_path, root, out_dir)}), on the "
                  "same test films. Training is not bit-reproducible (`deterministic` off), and the two may have "
                  f"trained on different CPUs (scored on {_cpu(first)} and on {_cpu(again)}; a fold is trained and "
                  "scored on one machine as a rule), so each figure moves between identical trainings by about "
                  "this much; a lever's difference of this size on one training per fold is not a finding.", ""]
        lines += rows or ["(no fold is in both reports)"]
        if other:
            sources.append(f"- {_link(first_path, root, out_dir)} (rerun of): {_provenance(first)}")
        sources.append(f"- {_link(again_path, root, out_dir)} (rerun): {_provenance(again)}")
    lines += ["", "## Sources", "", *dict.fromkeys(sources)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.selection", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levers", type=Path, default=Path("recipes/levers.toml"), help="the levers file")
    p.add_argument("--out", type=Path, default=None, help="write the report here (else print it)")
    a = p.parse_args(argv)
    command = "python -m benchmarks.selection " + shlex.join(
        str(x) for x in (argv if argv is not None else sys.argv[1:]))
    try:
        text = report(a.levers, command.strip(), a.out.parent if a.out else None)
    except LeverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        print(f"wrote {a.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
