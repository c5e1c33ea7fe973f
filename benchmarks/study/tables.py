"""The study report's tables (markdown), from the study's results; sources and the normal-vs-pneumonia source are
read from the results, never assumed."""
from __future__ import annotations

import math

from benchmarks.report import fmt, table
from benchmarks.study.evaluate import selection_score


def _g(d: dict | None, *keys, default=float("nan")):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _sources(*reports) -> list[str]:
    """The data sources present in these figures (read from the results, not assumed)."""
    return sorted({src for r in reports if isinstance(r, dict) for src in r.get("by_source", {})})


def _by_source(r: dict, srcs: list[str], key: str = "accuracy") -> list[str]:
    return [fmt(_g(r, "by_source", s, key)) for s in srcs]


def _pair(*reports) -> str:
    return next((r["pair_source"] for r in reports if isinstance(r, dict) and r.get("pair_source")), "one source")


def candidate_table(rows: list[dict], default: str | None) -> str:
    srcs = _sources(*(r["test"] for r in rows))
    header = ["model (INT8 TFLite)", "recipe", "MB", "p50 ms 1t", "val macro-AUC as is / site B -> score",
              "test acc pooled", *srcs, "macro-AUC", "TB AUC", f"{_pair(*(r['test'] for r in rows))} pneu. AUC", "TB sens/spec @thr", "pneu. sens/spec", "ECE raw->T",
              "referred", "acc. rest", "agree vs QAT"]
    out = []
    for r in rows:
        t = r["test"]
        out.append([("**" + r["label"] + "** (default)") if r["name"] == default else r["label"],
                    r["recipe"] + (" (*ablation*)" if r.get("role") == "recipe" else ""),
                    fmt(r["size_mb"], 2), fmt(r["latency_ms_1thread"]["p50"], 1),
                    f"{fmt(_g(r, 'val', 'macro_auc'))} / {fmt(_g(r, 'val_site_b', 'macro_auc'))} -> "
                    f"{fmt(selection_score(r))}",
                    fmt(t["accuracy"]), *_by_source(t, srcs), fmt(t["macro_auc"]), fmt(t["tb_auc"]),
                    fmt(t["pair_auc"]),
                    f"{fmt(_g(t, 'tb_at_threshold', 'sensitivity'))}/{fmt(_g(t, 'tb_at_threshold', 'specificity'))}",
                    f"{fmt(_g(t, 'per_class', 'pneumonia', 'sensitivity'))}/"
                    f"{fmt(_g(t, 'per_class', 'pneumonia', 'specificity'))}",
                    f"{fmt(t['ece_raw'])}->{fmt(t['ece'])}", _pct(_g(t, "refer_rule", "referred")),
                    fmt(_g(t, "refer_rule", "accuracy_not_referred")), _pct(r.get("agreement_vs_parent"))])
    return table(header, out)


def _msd(s: dict | None, digits: int = 3) -> str:
    """``mean +- sd (n)`` of a ``ranking.mean_sd`` summary; sd ``-`` below two values."""
    if not s or not s.get("n"):
        return "-"
    return f"{fmt(s['mean'], digits)} +- {fmt(s['sd'], digits)} (n={s['n']})"


def seed_table(summaries: dict, rows: dict, default: str | None) -> str:
    """Every candidate and ablation over seeds: mean +- sd (n) of its validation and test figures. ``summaries``:
    ``{name: ranking.summarise_seeds(...)}`` (with ``tied``/``margin`` for the ranked candidates)."""
    header = ["model (INT8 TFLite)", "recipe", "seeds", "val score (ranked on)", "tied with best (margin)",
              "val macro-AUC", "val site-B macro-AUC", "val pneu. AUC", "test acc", "test macro-AUC", "test TB AUC",
              "test pneu. AUC", "p50 ms 1t"]
    out = []
    for name, s in summaries.items():
        r = rows[name]
        label = ("**" + r["label"] + "** (default)") if name == default else r["label"]
        tied = "ablation" if r.get("role") == "recipe" else (
            f"{fmt(s.get('tied'))} ({fmt(s.get('margin'))})" if "tied" in s else "-")
        out.append([label, r["recipe"], ", ".join(str(x) for x in s["seeds"]), _msd(s["score"]), tied,
                    _msd(s["val_macro_auc"]), _msd(s["val_site_b_macro_auc"]), _msd(s["val_pair_auc"]),
                    _msd(s["test_accuracy"]), _msd(s["test_macro_auc"]), _msd(s["test_tb_auc"]),
                    _msd(s["test_pair_auc"]), _msd(s["latency_ms"], 1)])
    return table(header, out)


def audit_rows(all_rows: dict, recipes: list[str]) -> list[dict]:
    out = []
    for rec in recipes:
        a = {"recipe": rec}
        for variant, name in (("full", f"mnv2-0.35_{rec}"), ("border", f"control-border_{rec}"),
                              ("centre", f"control-centre_{rec}")):
            if name in all_rows:
                a[variant] = all_rows[name]["test"]
                a[variant + "_val"] = all_rows[name]["val"]
                a[variant + "_artifact"] = all_rows[name]["artifact"]
        out.append(a)
    return out


def audit_table(audit: list[dict]) -> str:
    tests = [a[v] for a in audit for v in ("full", "border", "centre") if v in a]
    srcs = _sources(*tests)
    header = ["recipe", "input", "artifact", "TB AUC test (val)", f"{_pair(*tests)} pneu. AUC test (val)", "acc pooled",
              *(f"{src} acc" for src in srcs)]
    out = []
    for a in audit:
        for variant, name in (("full", "whole image"), ("border", "border only (lungs blanked)"),
                              ("centre", "centre only (border blanked)")):
            if variant not in a:
                out.append([a["recipe"], name, "not run", "-", "-", "-", *("-" for _ in srcs)])
                continue
            t, v = a[variant], a[variant + "_val"]
            out.append([a["recipe"], name, a[variant + "_artifact"], f"{fmt(t['tb_auc'])} ({fmt(v['tb_auc'])})",
                        f"{fmt(t['pair_auc'])} ({fmt(v['pair_auc'])})", fmt(t["accuracy"]), *_by_source(t, srcs)])
    return table(header, out)


def shift_table(shift: dict) -> str:
    srcs = _sources(*shift.values())
    header = ["site change (test films)", "acc pooled", *(f"{src} acc" for src in srcs),
              f"{_pair(*shift.values())} normals -> normal",
              "-> pneumonia", "flagged TB", "TB sens @thr", "TB spec @thr", "TB AUC", "referred"]
    out = []
    for name, r in shift.items():
        out.append([name, fmt(r["accuracy"]), *_by_source(r, srcs), _pct(r["pair_normals_called_normal"]),
                    _pct(r["pair_normals_called_pneumonia"]), _pct(r["pair_normals_flagged_tb"]),
                    fmt(_g(r, "tb_at_threshold", "sensitivity")), fmt(_g(r, "tb_at_threshold", "specificity")), fmt(r["tb_auc"]),
                    _pct(_g(r, "refer_rule", "referred"))])
    return table(header, out)


def shift_summary_table(rows: list[dict]) -> str:
    names = [n for n in ("none", "site B (all of it)") if all(n in r.get("shift", {}) for r in rows)]
    header = ["model"] + [f"{n}: acc / normals->normal / TB sens" for n in names]
    out = []
    for r in rows:
        out.append([f"{r['label']} ({r['recipe']})"] + [f"{fmt(r['shift'][n]['accuracy'])} / {_pct(r['shift'][n]['pair_normals_called_normal'])}"
                                   f" / {fmt(_g(r['shift'][n], 'tb_at_threshold', 'sensitivity'))}" for n in names])
    return table(header, out)


def format_table(formats: dict) -> str:
    srcs = _sources(*(f.get("test") for f in formats.values()))
    header = ["format", "runtime", "MB", "T", "test acc", *srcs, "macro-AUC", "ECE before T",
              "ECE after T", "val ECE before/after", "TB sens/spec @thr", "referred", "acc. rest"]
    out = []
    for key, f in formats.items():
        if "error" in f:
            out.append([key, "error: " + f["error"][:80]] + ["-"] * (len(header) - 2))
            continue
        t, v = f["test"], f["val"]
        temp = fmt(f.get("temperature"), 2) + ("" if f.get("own_calibration", True) else " (parent's)")
        out.append([key, f["backend"], fmt(f["size_mb"], 2), temp, fmt(t["accuracy"]), *_by_source(t, srcs),
                    fmt(t["macro_auc"]), fmt(t["ece_raw"]), fmt(t["ece"]),
                    f"{fmt(v['ece_raw'])}/{fmt(v['ece'])}",
                    f"{fmt(_g(t, 'tb_at_threshold', 'sensitivity'))}/{fmt(_g(t, 'tb_at_threshold', 'specificity'))}",
                    _pct(_g(t, "refer_rule", "referred")), fmt(_g(t, "refer_rule", "accuracy_not_referred"))])
    return table(header, out)


# --- the report ---------------------------------------------------------------------------------------------
