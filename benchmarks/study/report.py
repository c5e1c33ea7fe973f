"""``MODEL_SELECTION.md`` and its plots from ``study.json`` (``benchmarks.study``). Every table names its
artifact; every figure is measured by the study run whose date, commit and command head the report."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from benchmarks.report import fmt, latency_table, table
from benchmarks.study.evaluate import selection_score
from benchmarks.study.plan import RECIPES
from benchmarks.study.tables import (_by_source, _g, _msd, _pair, _pct, _sources, audit_rows, audit_table,
                                     candidate_table, format_table, seed_table, shift_summary_table, shift_table)
from edge_runtime.formats import DEPLOYED, FORMATS
from edge_runtime.preprocess import PreprocessConfig

PLOTS = "model_selection"  # plot folder beside the report (relative links survive --publish)
WHO_TB_SPEC = 0.70
TARGET_CONTROL_TB_AUC = 0.75
TARGET_FULL_TB_AUC = 0.97


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- plots --------------------------------------------------------------------------------------------------

def plot_frontier(rows: list[dict], default: str | None, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, side in zip(axes, ("val", "test")):
        for r in rows:
            x = r["latency_ms_1thread"]["p50"]
            y = selection_score(r) if side == "val" else _g(r, side, "macro_auc")
            ax.scatter(x, y, s=40 + 25 * r["size_mb"], alpha=0.7, color="tab:red" if r["name"] == default else "tab:blue")
            ax.annotate(f"{r['label']} ({r['recipe']})", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("INT8 TFLite latency, p50 ms, 1 thread (this CPU)")
        ax.set_ylabel("validation score: macro-AUC as is / site B, mean" if side == "val"
                      else "test macro-AUC (INT8, calibrated)")
        ax.set_title(f"{side}: {'what the default is chosen on' if side == 'val' else 'accuracy/latency frontier'}"
                     " (dot area ~ MB)", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_shortcut(audit: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [a["recipe"] for a in audit]
    x = np.arange(len(names))
    width = 0.27
    for ax, key, title in ((axes[0], "tb_auc", "TB vs rest AUC (test)"),
                           (axes[1], "pair_auc", "normal vs pneumonia AUC, within one source (test)")):
        for j, (variant, colour) in enumerate((("full", "tab:blue"), ("border", "tab:red"), ("centre", "tab:green"))):
            vals = [_g(a, variant, key) for a in audit]
            ax.bar(x + (j - 1) * width, [0 if math.isnan(v) else v for v in vals], width,
                   label={"full": "whole image", "border": "border only (lungs blanked)",
                          "centre": "centre only (border blanked)"}[variant], color=colour)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        if key == "tb_auc":
            ax.axhline(TARGET_CONTROL_TB_AUC, color="tab:red", lw=0.8, ls="--")
        ax.set_xticks(x, names)
        ax.set_ylim(0.4, 1.0)
        ax.set_title(title)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_shift(shift: dict, label: str, path: Path) -> Path:
    plt = _plt()
    names = list(shift)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    series = (("accuracy", "accuracy (pooled)"), ("pair_normals_called_normal", "normals called normal"),
              ("tb_sens", "TB sensitivity at the threshold"))
    for j, (key, lab) in enumerate(series):
        vals = [(_g(shift[n], "tb_at_threshold", "sensitivity") if key == "tb_sens" else _g(shift[n], key)) for n in names]
        ax.bar(x + (j - 1) * 0.27, vals, 0.27, label=lab)
    ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"Simulated site change, test films: {label} (INT8)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_heatmaps(bundle: Path, sample: list[dict], path: Path) -> Path | None:
    from edge_runtime.classifier import Classifier
    from edge_runtime.heatmap import overlay

    plt = _plt()
    clf = Classifier.from_bundle(bundle / FORMATS[DEPLOYED].filename, num_threads=2)
    shown = []
    for s in sample:
        try:
            res = clf.classify(s["path"])
        except Exception:  # noqa: BLE001
            continue
        if res.heatmap is not None:
            shown.append((s, res))
    if not shown:
        return None
    cols = 4
    rows_n = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(2.6 * cols, 2.9 * rows_n))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, (s, res) in zip(np.atleast_1d(axes).ravel(), shown):
        ax.imshow(overlay(res.image, res.heatmap, alpha=0.45))
        ax.set_title(f"true {s['label'][:5]} ({s['source']})\npred {res.label[:5]} "
                     f"{max(res.probs.values()):.2f}, {res.decision[:18]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --- tables -------------------------------------------------------------------------------------------------

def write(results: dict, out: Path, default_bundle: Path | None) -> Path:
    plots = out / PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    rows_all = results["rows"]
    meta = results["meta"]
    default = results.get("default")
    exps = results["experiments"]
    recipes = list(dict.fromkeys(e["recipe"] for e in exps if e["recipe"] in RECIPES))  # not recipe files
    seeds = results.get("seeds") or [meta["seed"]]
    several = len(seeds) > 1
    over_seeds = _seed_summaries(results, exps) if several else {}
    cands = [rows_all[e["name"]] for e in exps if e["role"] in ("model", "recipe") and e["name"] in rows_all
             and "latency_ms_1thread" in rows_all[e["name"]]]
    audit = audit_rows(rows_all, recipes)
    d = rows_all.get(default) if default else None
    figs = {}
    if cands:
        figs["frontier"] = plot_frontier(cands, default, plots / "frontier.png")
    figs["shortcut"] = plot_shortcut(audit, plots / "shortcut_audit.png")
    if d and "shift" in d:
        figs["shift"] = plot_shift(d["shift"], d["label"], plots / "site_shift.png")
    if default_bundle is not None and results.get("heatmaps", {}).get("sample"):
        figs["heatmaps"] = plot_heatmaps(default_bundle, results["heatmaps"]["sample"], plots / "heatmaps.png")

    L = ["# Model selection on real chest X-rays (cxr-dev)", "",
         "> A screening aid, not a diagnosis. Every figure below was measured by one run of the study on the "
         "data named here; none is assumed, and none is evidence of performance at a clinic.", "",
         f"- **Date:** {meta['date']}  **Commit:** `{meta['commit']}`  **Study time:** {meta['minutes']} min this run"
         + (f"; the {len(rows_all)} trainings it uses took {meta['train_minutes']} min of training in all (a study "
            "from scratch costs about both)" if meta.get("train_minutes") else ""),
         f"- **Command:** `{meta['command']}` (Makefile: `make study`; it resumes when interrupted)",
         f"- **Data:** `{meta['data']}`; the patient-level split (patient id, or pseudo-patient group where a source has none) "
         + (f"of the first training, reused by all: {_split_counts(rows_all)}" if not several else
            f"drawn per seed (each seed's first training draws it, that seed's other trainings reuse it), so the "
            f"spread over seeds holds both the split and the initialisation; seed {seeds[0]}'s: {_split_counts(rows_all)}"),
         f"- **Training:** {meta['epochs']} float epochs + {meta['qat_epochs']} QAT epoch(s) per candidate, "
         f"{meta.get('image_size', 224)} px (candidates whose label names a size, and recipe files, train at their own), "
         + (f"seeds {', '.join(map(str, seeds))} (every candidate and ablation once per seed, the controls on "
            f"seed {seeds[0]} only), " if several else f"seed {meta['seed']}, ")
         + "class-balanced loss, augmentation (rotation, shift, zoom, brightness, contrast); "
         "controls: float only, same epochs.",
         f"- **Machine:** {meta['machine'].get('cpu', '?')}, {meta['machine'].get('cores', '?')} cores; latency is one "
         "thread of this CPU, not a Raspberry Pi (see firmware_notes/ for device figures).", ""]
    L += ["## Verdict", ""]
    if d:
        t = d["test"]
        border = rows_all.get(f"control-border_{d['recipe']}")
        L += [f"Default model: **{d['label']}**, recipe **{d['recipe']}** ({d['preprocess']}), INT8 TFLite "
              f"{fmt(d['size_mb'], 2)} MB, {fmt(d['latency_ms_1thread']['p50'], 1)} ms per image on one thread here.",
              *(_seed_verdict(results, d, seeds) if several else [
                  f"Chosen because it has the best **validation** score of the INT8 candidates "
                  f"({fmt(selection_score(d))}: the mean of its macro-AUC on the validation films as they are, "
                  f"{fmt(d['val']['macro_auc'])}, and on the same films as simulated site B would make them, "
                  f"{fmt(_g(d, 'val_site_b', 'macro_auc'))}; a model must work at a clinic whose X-ray unit it never "
                  "saw). Candidates within 0.01 of the best count as tied and the fastest wins. "
                  "Test figures were not used to choose.", ""]),
              "Test set, INT8 artifact through the device runtime, calibrated"
              + (f" (seed {d.get('seed')}'s training):" if several else ":"), "",
              table(["figure", "pooled", *_sources(t)], [
                  ["n", t["n"], *(_g(t, "by_source", src, "n") for src in _sources(t))],
                  ["accuracy", fmt(t["accuracy"]), *_by_source(t, _sources(t))],
                  ["macro-AUC", fmt(t["macro_auc"]), *_by_source(t, _sources(t), "macro_auc")]]),
              "",
              f"- TB at the validation threshold {fmt(_g(t, 'tb_at_threshold', 'threshold'))}: sensitivity "
              f"{fmt(_g(t, 'tb_at_threshold', 'sensitivity'))}, specificity {fmt(_g(t, 'tb_at_threshold', 'specificity'))} "
              f"(WHO screening bar: 0.90 / {WHO_TB_SPEC:.2f}); TB-vs-rest AUC {fmt(t['tb_auc'])}.",
              f"- Pneumonia: sensitivity {fmt(_g(t, 'per_class', 'pneumonia', 'sensitivity'))}, specificity "
              f"{fmt(_g(t, 'per_class', 'pneumonia', 'specificity'))}; normal-vs-pneumonia AUC within {_pair(t)} "
              f"{fmt(t['pair_auc'])}.",
              f"- ECE {fmt(t['ece_raw'])} raw -> {fmt(t['ece'])} after temperature T = {fmt(d['temperature'], 2)}.",
              f"- Refer rule (top probability < {fmt(_g(t, 'refer_rule', 'refer_below'), 2)}): "
              f"{_pct(_g(t, 'refer_rule', 'referred'))} of test films referred; accuracy on the rest "
              f"{fmt(_g(t, 'refer_rule', 'accuracy_not_referred'))}.",
              f"- Shortcut control (same architecture and recipe, border only): TB AUC "
              f"{fmt(_g(border, 'test', 'tb_auc'))} on test. " + _audit_verdict(audit, d["recipe"]), ""]
    else:
        L += ["No candidate finished training and conversion; see the logs in the study folder.", ""]

    L += ["## Candidates: INT8 accuracy against latency and size", ""]
    if over_seeds:
        L += [f"Over the {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean +- sample sd (n = trainings that "
              "finished and converted). The default is chosen on the mean validation score; a candidate within the "
              "margin (the larger of 0.01 and the best candidate's sd) of the best mean is tied, and the "
              "fastest tied candidate wins. Test figures are shown, never used to choose.", "",
              seed_table(over_seeds, rows_all, default), "",
              f"Seed {seeds[0]}'s artifacts in detail:", ""]
    L += ["Every candidate is the INT8 TFLite artifact of its QAT model (`python -m convert RUN --formats tflite_int8`), "
          "scored through `edge_runtime` on the test split with its bundle's temperature and thresholds. "
          "`agree vs QAT`: top-1 agreement with its Keras QAT parent on validation. Rows marked *ablation* are the "
          "recipe ablation (MobileNetV2 0.35 with another recipe): shown, not candidates for the default.", "",
          candidate_table(cands, default) if cands else "(none finished)", ""]
    if "frontier" in figs:
        L += [f"![frontier]({PLOTS}/frontier.png)", ""]
    missing = [e["name"] for e in exps if e["name"] not in rows_all]
    planned = {e["name"] for e in exps}
    from benchmarks.study.plan import MODELS

    not_planned = [m[0] for m in MODELS if f"{m[0]}_{meta['recipe']}" not in planned]
    if missing or not_planned:
        L += ["Not in this run: " + ", ".join(missing + not_planned) + ". `python -m benchmarks.study` with the "
              "default `--models` trains them too (finished trainings are kept).", ""]

    L += ["## Shortcut audit", "",
          f"{_class_sources(d['test']) if d else 'Where a class comes from its own source'}, so a "
          "model can score TB by recognising the source. The controls train the same architecture (MobileNetV2 "
          f"0.35, same epochs, same recipe) on the border frame alone ({PreprocessConfig.frame:.1%} of the side, lungs blanked) and on the "
          "centre alone (frame blanked). If the border-only model separates TB, the whole-image TB score is not "
          "evidence of TB detection.", "",
          audit_table(audit), "", f"![shortcut audit]({PLOTS}/shortcut_audit.png)", "",
          *_probe_text(results.get("probe")),
          _audit_text(audit), ""]
    hm = results.get("heatmaps", {})
    if hm.get("border_share_by_class"):
        L += ["### Where the default model looks", "",
              f"Share of the class-activation mass (predicted class) on the same border frame, test films; the frame "
              f"is {_pct(hm['frame_area_share'])} of the image area, so a model that ignored the border would put "
              "less than that there:", "",
              table(["true class", "films", "CAM mass on the border frame"],
                    [[k, hm["n_by_class"][k], _pct(v)] for k, v in hm["border_share_by_class"].items()]), ""]
        if figs.get("heatmaps"):
            L += ["A sample of test films (the first four per class in the split), heatmap of the predicted class "
                  f"over the whole film (the model's input: {d['preprocess'] if d else '-'}):", "",
                  f"![heatmaps]({PLOTS}/heatmaps.png)", ""]

    if d and "shift" in d:
        L += ["## Robustness to a site change (simulated)", "",
              "No second site's data is at hand, so the test films were altered the way another site's films differ: "
              "exposure (gamma), contrast, a black collimation border, burnt-in markers (a side letter and a "
              "'PORTABLE AP' label), blur and noise, and all of them at once ('site B'). Normals must stay normal.", "",
              f"Default model ({d['label']}):", "", shift_table(d["shift"]), "", f"![site shift]({PLOTS}/site_shift.png)", "",
              "Every candidate, unchanged films against site B:", "",
              shift_summary_table([r for r in cands if "shift" in r]), ""]

    L += ["## Operating points and calibration", "",
          "Fitted on the validation split by `python -m convert` and stored in the bundle's metadata: temperature "
          "(grid search on validation NLL), TB threshold for 90% validation sensitivity, refer rule (top probability "
          "below which validation accuracy of the accepted films falls under 90%). Each artifact is fitted on its "
          "own validation outputs (column T): an INT8 file made from the float model does not give the "
          "probabilities of the QAT model, and one temperature for all made ECE and the TB threshold wrong for "
          "the float-parent formats in an earlier run.", ""]
    if results.get("formats"):
        L += [f"Default model, every format of its bundle (test; validation ECE in its column):", "",
              format_table(results["formats"]), ""]
    bench = results.get("benchmark", {})
    if bench.get("results"):
        L += ["## Benchmark of the default model", "",
              f"`python -m benchmarks` on the default model's bundle ({bench['report']}):", "",
              latency_table(bench["results"]), ""]
    L += ["## What this data can and cannot show", "", *_limits(d["test"] if d else {}, len(seeds)), ""]
    L += ["## Recipe choices", "", *_recipe_text(audit, rows_all), ""]
    report = out / "MODEL_SELECTION.md"
    report.write_text("\n".join(L) + "\n")
    return report


def _split_counts(rows: dict) -> str:
    for r in rows.values():
        v, t = r.get("val", {}), r.get("test", {})
        if v and t:
            def by(x):
                return ", ".join(f"{k} {s['n']}" for k, s in x.get("by_source", {}).items())
            return f"validation {v['n']} films ({by(v)}), test {t['n']} films ({by(t)})"
    return "-"


def _probe_text(probe: dict | None) -> list[str]:
    if not probe:
        return []
    from benchmarks.study.evaluate import SOURCE_PROBES

    return ["Before any CNN: TB vs rest from trivial features of the prepared input (logistic regression fitted on "
            "the training split, AUC on test). What these reach is source signal, not lung findings; a recipe that "
            "lowers them removes some of it:", "",
            table(["recipe"] + list(SOURCE_PROBES), [[r] + [fmt(v.get(k)) for k in SOURCE_PROBES] for r, v in probe.items()]),
            ""]


def _audit_verdict(audit: list[dict], recipe: str) -> str:
    a = next((x for x in audit if x["recipe"] == recipe), {})
    full, border = _g(a, "full", "tb_auc"), _g(a, "border", "tb_auc")
    if math.isnan(border):
        return "The control did not run."
    ok_c, ok_f = border <= TARGET_CONTROL_TB_AUC, full >= TARGET_FULL_TB_AUC
    return (f"Target (control <= {TARGET_CONTROL_TB_AUC}, whole image >= {TARGET_FULL_TB_AUC}): "
            + ("met." if ok_c and ok_f else "**not met**" + (": the border alone still separates TB from the rest, "
                                                              "so TB figures here remain an upper bound." if not ok_c else "."))
            )


def _audit_text(audit: list[dict]) -> str:
    lines = []
    for a in audit:
        full, border, centre = (_g(a, v, "tb_auc") for v in ("full", "border", "centre"))
        lines.append(f"- **{a['recipe']}**: TB AUC whole image {fmt(full)}, border only {fmt(border)}, centre only "
                     f"{fmt(centre)}; normal-vs-pneumonia AUC within {_pair(*(a.get(v) for v in ('full', 'border', 'centre')))} {fmt(_g(a, 'full', 'pair_auc'))} / "
                     f"{fmt(_g(a, 'border', 'pair_auc'))} / {fmt(_g(a, 'centre', 'pair_auc'))}.")
    return "\n".join(lines)


def _recipe_text(audit: list[dict], rows: dict) -> list[str]:
    out = ["Each recipe trains the same MobileNetV2 0.35 on the same split for the same epochs; only the input "
           "preparation differs (it travels in the metadata, so the device prepares pixels the same way):", ""]
    for a in audit:
        r = rows.get(f"mnv2-0.35_{a['recipe']}")
        if r:
            shift = r.get("shift", {})
            site_b = shift.get("site B (all of it)", {})
            border_shift = shift.get("black collimation border", {})
            out.append(f"- `{a['recipe']}` ({r['preprocess']}): val macro-AUC {fmt(_g(r, 'val', 'macro_auc'))}, "
                       f"test accuracy {fmt(_g(r, 'test', 'accuracy'))} ({_pair(r['test'])} "
                       f"{fmt(_g(r, 'test', 'by_source', _pair(r['test']), 'accuracy'))}), normal-vs-pneumonia AUC "
                       f"{fmt(_g(r, 'test', 'pair_auc'))}, border-control TB AUC "
                       f"{fmt(_g(a, 'border', 'tb_auc'))}; with a black collimation border: accuracy "
                       f"{fmt(_g(border_shift, 'accuracy'))}, TB sensitivity "
                       f"{fmt(_g(border_shift, 'tb_at_threshold', 'sensitivity'))}; simulated site B: accuracy "
                       f"{fmt(_g(site_b, 'accuracy'))}, TB sensitivity {fmt(_g(site_b, 'tb_at_threshold', 'sensitivity'))}, "
                       f"{_pair(r['test'])} normals called normal {_pct(_g(site_b, 'pair_normals_called_normal'))}.")
    out += ["", "Fixed for every run (not varied here for lack of time on this CPU): class-balanced loss, cosine "
            "learning-rate decay from 1e-3, the augmentation above, batch 32, dropout 0.2; QAT fine-tuning at 1e-4."]
    return out


def _class_sources(t: dict) -> str:
    """Which data sources hold each class in these figures: "TB films come from tbx11k; normal, pneumonia from
    nih_dcn" (read from the per-source supports, never assumed)."""
    by_class: dict[str, list[str]] = {}
    for src, r in sorted(t.get("by_source", {}).items()):
        for c in r.get("sensitivity", {}):  # summarise() lists the classes each source has films of
            by_class.setdefault(c, []).append(src)
    groups: dict[tuple, list[str]] = {}
    for c, srcs in by_class.items():
        groups.setdefault(tuple(srcs), []).append(c)
    text = "; ".join(f"{', '.join(cs)} films come from {' and '.join(srcs)}" for srcs, cs in groups.items())
    return text[:1].upper() + text[1:]


def _seed_summaries(results: dict, exps: list[dict]) -> dict:
    """Every converted candidate and ablation over seeds, in plan order: the ranking's summaries (with tie
    status) for candidates, the same summary for the recipe ablation."""
    from benchmarks.study.ranking import summarise_seeds

    ranking, seed_rows = results.get("ranking", {}), results.get("seed_rows", {})
    out = {}
    for e in exps:
        rows = [r for r in seed_rows.get(e["name"], []) if "latency_ms_1thread" in r]
        if e["name"] in ranking:
            out[e["name"]] = ranking[e["name"]]
        elif e["role"] == "recipe" and rows:
            out[e["name"]] = summarise_seeds(rows)
    return out


def _seed_verdict(results: dict, d: dict, seeds: list[int]) -> list[str]:
    s = results.get("ranking", {}).get(d["name"], {})
    tied = [results["rows"][n]["label"] + f" ({results['rows'][n]['recipe']})"
            for n, x in results.get("ranking", {}).items() if x.get("tied") and n != d["name"]]
    return [f"Chosen on **validation** films only, over {len(seeds)} seeds: mean validation score "
            f"{_msd(s.get('score'))} (per training: the mean of the INT8 macro-AUC on the validation films as they "
            "are and under simulated site B). Candidates whose mean lies within the larger of 0.01 and the best "
            "candidate's sd of the best mean are tied and the fastest of them wins"
            + (f"; tied with it here: {', '.join(tied)}" if tied else "; no other candidate was tied with it")
            + f". Mean p50 latency {_msd(s.get('latency_ms'), 1)} ms. Test over seeds: accuracy "
            f"{_msd(s.get('test_accuracy'))}, macro-AUC {_msd(s.get('test_macro_auc'))}. "
            "Test figures were not used to choose.", ""]


def _limits(t: dict, n_seeds: int = 1) -> list[str]:
    pair = _pair(t)
    n_pair = _g(t, "by_source", pair, "n") if t else None
    n_pair = n_pair if isinstance(n_pair, int) and n_pair > 0 else None
    noise = (f"a 95% interval on an accuracy of 0.8 over the {n_pair} {pair} test films is about "
             f"+-{1.96 * math.sqrt(0.8 * 0.2 / n_pair):.2f}" if n_pair else "small test sets give wide intervals")
    return [
        f"- **TB is confounded with the source.** {_class_sources(t)}. Where one class has a source of its own, no "
        "figure here can separate detecting the disease from recognising the source; the border-only control "
        "measures how much of the separation needs no lung at all. TB sensitivity and specificity are upper bounds.",
        f"- **Pneumonia labels are noisy** (NLP-mined from reports, see the data's README; published AUROC about "
        f"0.77): the normal-vs-pneumonia AUC within {pair} is the figure least affected by the source confound, "
        "and the one to watch.",
        (f"- **One split, one seed, small test set** ({t.get('n', '?')} films): a difference of a few points between "
         f"candidates is within noise ({noise})." if n_seeds < 2 else
         f"- **{n_seeds} seeds, each its own patient-level split; small test sets** ({t.get('n', '?')} films each): "
         f"the sd over seeds is itself noisy with so few seeds, and a single training's figure is within noise "
         f"({noise})."),
        "- **The site-shift test is a simulation**, not a second hospital: it shows sensitivity to exposure, "
        "borders and markers, not performance on another population or another scanner.",
        "- **To show more:** TB-positive and TB-negative films from the same site and scanner (e.g. Shenzhen and "
        "Montgomery, both of which hold normals and TB), normals and pneumonia from the TB source, a held-out "
        "site for external validation, culture- or GeneXpert-confirmed TB labels, and several seeds per candidate.",
    ]


PUBLISHED = "STUDY.md"  # the study's report where --publish puts it: benchmarks/MODEL_SELECTION.md is make selection's


def publish(out: Path, dest: Path) -> None:
    dest = Path(dest)
    (dest / PLOTS).mkdir(parents=True, exist_ok=True)
    shutil.copy2(out / "MODEL_SELECTION.md", dest / PUBLISHED)
    for p in (out / PLOTS).glob("*.png"):
        shutil.copy2(p, dest / PLOTS / p.name)


if __name__ == "__main__":  # re-render the report from study.json without rerunning anything
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
    res = json.loads((folder / "study.json").read_text())
    from benchmarks.study.run import run_key

    d = res.get("default")
    bundle = folder / "bundles" / run_key(d, res["rows"][d].get("seed", 0)) if d else None
    print(write(res, folder, bundle if bundle and bundle.is_dir() else None))
