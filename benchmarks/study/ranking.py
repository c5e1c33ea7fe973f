"""Ranking the study's candidates over seeds (issue 16: "a difference inside the spread is a tie").

Each candidate trains once per seed; each training gives one row (``evaluate.evaluate_experiment``). A candidate
is ranked on the mean over its seeds of the VALIDATION ``selection_score`` of its INT8 artifact. The candidate
with the best mean is the reference; a candidate is tied with it when its mean lies within the larger of
``TIE_AUC`` and the best candidate's standard deviation over seeds (sample sd) of the best mean. (The best's
sd, not the candidate's own: a candidate that scatters widely over seeds must not tie by its own noise.) Among the tied candidates the fastest (mean one-thread p50 latency) wins. With one
seed the sd is unknown and the margin is ``TIE_AUC``: the study's rule before seeds. Test figures are
summarised (mean, sd, n) for the report, never used to choose.
"""
from __future__ import annotations

import math

import numpy as np

from benchmarks.study.evaluate import TIE_AUC, selection_score

# (figure key, where it lives in a row): what the report shows as mean +- sd over seeds
FIGURES = {
    "score": None,  # selection_score(row): what the default is chosen on
    "val_macro_auc": ("val", "macro_auc"),
    "val_site_b_macro_auc": ("val_site_b", "macro_auc"),
    "val_pair_auc": ("val", "pair_auc"),
    "test_accuracy": ("test", "accuracy"),
    "test_macro_auc": ("test", "macro_auc"),
    "test_tb_auc": ("test", "tb_auc"),
    "test_pair_auc": ("test", "pair_auc"),
    "latency_ms": ("latency_ms_1thread", "p50"),
}


def _get(row: dict, path) -> float:
    if path is None:
        return selection_score(row)
    v = row
    for k in path:
        if not isinstance(v, dict) or v.get(k) is None:
            return float("nan")
        v = v[k]
    return float(v)


def mean_sd(values) -> dict:
    """``{"mean", "sd", "n"}`` over the finite values; sd is the sample sd (ddof 1), NaN below two values."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(float(x))], dtype=float)
    return {"mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}


def summarise_seeds(rows: list[dict]) -> dict:
    """One candidate's figures over its seeds' rows: ``{figure: {"mean", "sd", "n"}, "seeds": [...]}``."""
    out = {k: mean_sd(_get(r, path) for r in rows) for k, path in FIGURES.items()}
    out["seeds"] = [r.get("seed") for r in rows]
    return out


def rank(seed_rows: dict[str, list[dict]], candidates: list[str]) -> tuple[str | None, dict]:
    """Choose the default among ``candidates`` from their per-seed rows (``{name: [row per seed]}``).

    Only rows with a latency (a converted INT8 artifact) and a finite validation score count. Returns
    ``(chosen or None, {name: summary + {"margin", "tied"}})``; see the module docstring for the rule.
    """
    summaries = {}
    for name in candidates:
        rows = [r for r in seed_rows.get(name, [])
                if "latency_ms_1thread" in r and not math.isnan(selection_score(r))]
        if rows:
            summaries[name] = summarise_seeds(rows)
    if not summaries:
        return None, {}

    best = max(summaries, key=lambda n: summaries[n]["score"]["mean"])
    best_mean, best_sd = summaries[best]["score"]["mean"], summaries[best]["score"]["sd"]
    margin = max(TIE_AUC, 0.0 if math.isnan(best_sd) else best_sd)
    for s in summaries.values():
        s["margin"] = margin
        s["tied"] = s["score"]["mean"] >= best_mean - margin
    tied = [n for n, s in summaries.items() if s["tied"]]
    chosen = min(tied, key=lambda n: (summaries[n]["latency_ms"]["mean"], -summaries[n]["score"]["mean"]))
    return chosen, summaries
