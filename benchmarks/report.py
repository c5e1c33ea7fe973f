"""The benchmark's output: Markdown tables (stdout and report.md), CSV, JSON and plots."""
from __future__ import annotations

import csv
import json
import math
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

from benchmarks.quality import flat
from benchmarks.sysinfo import describe
from edge_runtime.formats import BASELINE

# The targets, reported against (never asserted)
TARGET_SPEEDUP = 6.0
TARGET_E2E_MS = 15.0


def fmt(v, digits: int = 3, pct: bool = False) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float, np.floating, np.integer)):
        return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"
    return str(v)


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def short(labels: list[str]) -> list[str]:
    """Column abbreviations for class names (first letters, TB for tuberculosis)."""
    return ["TB" if x == "tuberculosis" else x[:1].upper() + x[1:4] for x in labels]


def quality_table(result: dict) -> str:
    labels = result["model"]["labels"]
    ab = "/".join(short(labels))
    header = ["format", "status", "from", "MB", "accuracy", "macro-F1", "macro AUC", f"sens {ab}", f"spec {ab}",
              "TB spec @90% sens", "TB sens/spec @ bundle thr", "ECE", "agree vs float", "max dp vs float"]
    rows = []
    for r in result["rows"]:
        per = lambda k: "/".join(fmt(r.get(f"{k}_{x}"), 2) for x in labels) if "accuracy" in r else "-"
        rows.append([r["format"], r["status"], (r.get("parent") or "-") + (" int8" if r.get("int8") else ""),
                     fmt(r.get("size_mb"), 2), fmt(r.get("accuracy")),
                     fmt(r.get("macro_f1")), fmt(r.get("macro_auc")), per("sens"), per("spec"),
                     fmt(r.get("tb_spec_at_90_sens")),
                     f"{fmt(r.get('tb_sens_at_threshold'), 2)}/{fmt(r.get('tb_spec_at_threshold'), 2)}"
                     if "accuracy" in r else "-",
                     fmt(r.get("ece")), fmt(r.get("agreement_vs_float"), pct=True),
                     fmt(r.get("max_prob_diff_vs_float"), 4)])
    return table(header, rows)


def _x(v) -> str:
    return f"{v:.1f}x" if v else "-"


def latency_table(result: dict) -> str:
    """Single-image latency per thread count: wall-clock percentiles, CPU time per call, speed-ups."""
    threads = result["options"]["threads"]
    header = ["format", "runtime"]
    for t in threads:
        header += [f"p50/p90/p99 ms {t}t", f"x Keras {t}t", f"CPU ms {t}t", f"x Keras CPU {t}t"]
    header += ["img/s (best)", "machine load"]
    rows = []
    for r in result["rows"]:
        cells = [r["format"], r.get("runtime") or r["backend"]]
        for t in threads:
            cells += [("/".join(fmt(r.get(f"{p}_ms_{t}t"), 2) for p in ("p50", "p90", "p99"))
                       if r.get(f"p50_ms_{t}t") is not None else "-"),
                      _x(r.get(f"speedup_{t}t")), fmt(r.get(f"cpu_ms_{t}t"), 2), _x(r.get(f"cpu_speedup_{t}t"))]
        tp = [r.get(f"throughput_ips_{t}t") for t in threads if r.get(f"throughput_ips_{t}t")]
        cells.append(fmt(max(tp), 0) if tp else "-")
        cells.append(fmt(r.get("load_average"), 1))
        rows.append(cells)
    return table(header, rows)


def deploy_table(result: dict) -> str:
    """What a device sees: file size, load time, end to end from a full-size PNG, peak memory."""
    header = ["format", "MB", "load ms", "e2e ms 1t", "e2e decode/pre/infer/post ms", "e2e CPU ms", "e2e x Keras",
              "peak RSS MB"]
    rows = []
    for r in result["rows"]:
        rows.append([r["format"], fmt(r.get("size_mb"), 2), fmt(r.get("load_ms"), 0), fmt(r.get("e2e_total_ms"), 2),
                     "/".join(fmt(r.get(f"e2e_{s}_ms"), 2) for s in ("decode", "preprocess", "infer", "postprocess"))
                     if r.get("e2e_total_ms") is not None else "-",
                     fmt(r.get("e2e_cpu_total_ms"), 2), _x(r.get("e2e_speedup")), fmt(r.get("peak_rss_mb"), 0)])
    return table(header, rows)


def source_rows(result: dict) -> list[dict]:
    labels = result["model"]["labels"]
    out = []
    for key, d in result["details"].items():
        for src, rep in (d.get("quality") or {}).get("by_source", {}).items():
            out.append({"format": key, "source": src, **flat(rep, labels)})
    return out


def source_table(result: dict) -> str:
    labels = result["model"]["labels"]
    ab = "/".join(short(labels))
    header = ["format", "source", "n", "accuracy", "macro-F1", "macro AUC", f"sens {ab}", f"spec {ab}",
              "TB sens/spec @ bundle thr", "ECE"]
    rows = [[r["format"], r["source"], r["n"], fmt(r["accuracy"]), fmt(r["macro_f1"]), fmt(r["macro_auc"]),
             "/".join(fmt(r[f"sens_{x}"], 2) for x in labels), "/".join(fmt(r[f"spec_{x}"], 2) for x in labels),
             f"{fmt(r['tb_sens_at_threshold'], 2)}/{fmt(r['tb_spec_at_threshold'], 2)}", fmt(r["ece"])]
            for r in source_rows(result)]
    return table(header, rows)


def targets(result: dict) -> list[str]:
    """The issue's targets, each met or missed by how much (for the default model; reported, not asserted)."""
    rows = {r["format"]: r for r in result["rows"]}
    threads = result["options"]["threads"]
    lines = []
    base = rows.get(BASELINE)
    int8 = [r for r in result["rows"] if r["int8"] and r["status"] != "failed"]
    if base and base["status"] == "ok" and int8:
        best = None
        for r in int8:
            for t in threads:
                s = r.get(f"speedup_{t}t")
                if s and (best is None or s > best[0]):
                    best = (s, r["format"], t, r.get(f"p50_ms_{t}t"), base.get(f"p50_ms_{t}t"))
        if best:
            s, key, t, v, b = best
            lines.append(f"Fastest INT8 vs Keras float, same run: {key} at {t} thread(s), p50 {v:.2f} ms vs "
                         f"{b:.2f} ms = {s:.1f}x (target >= {TARGET_SPEEDUP:.0f}x: "
                         + ("met)" if s >= TARGET_SPEEDUP else f"MISSED by {TARGET_SPEEDUP - s:.1f}x, "
                            f"needs p50 <= {b / TARGET_SPEEDUP:.2f} ms)"))
            bests = [(min(v for t in threads if (v := r.get(f"p50_ms_{t}t"))), r["format"]) for r in int8
                     if any(r.get(f"p50_ms_{t}t") for t in threads)]
            kb = [v for t in threads if (v := base.get(f"p50_ms_{t}t"))]
            if bests and kb:
                v, key = min(bests)
                lines.append(f"Best thread count for each (Keras {min(kb):.2f} ms, {key} {v:.2f} ms): "
                             f"{min(kb) / v:.1f}x")
        t1 = min(threads)
        cpu = [(r.get(f"cpu_speedup_{t1}t"), r["format"]) for r in int8 if r.get(f"cpu_speedup_{t1}t")]
        if cpu:
            s, key = max(cpu)
            lines.append(f"Same by CPU time per call at {t1} thread(s) (steadier on a shared machine): {key} "
                         f"{s:.1f}x (" + ("met)" if s >= TARGET_SPEEDUP else f"MISSED by {TARGET_SPEEDUP - s:.1f}x)"))
    else:
        lines.append("Fastest INT8 vs Keras float: not measured (no Keras baseline or no INT8 row)")
    e2e = [(r["e2e_total_ms"], r["format"], r) for r in result["rows"] if r.get("e2e_total_ms") is not None
           and r["format"] != BASELINE]
    if e2e:
        ms, key, r = min(e2e)
        size = result["options"].get("e2e_size")
        lines.append(f"End to end ({size}x{size} PNG -> decision + heatmap, 1 thread), fastest: {key} {ms:.2f} ms "
                     f"(decode {fmt(r.get('e2e_decode_ms'), 2)}, preprocess {fmt(r.get('e2e_preprocess_ms'), 2)}, "
                     f"infer {fmt(r.get('e2e_infer_ms'), 2)}, postprocess {fmt(r.get('e2e_postprocess_ms'), 2)}; "
                     f"CPU {fmt(r.get('e2e_cpu_total_ms'), 2)} ms) "
                     f"(target < {TARGET_E2E_MS:.0f} ms: "
                     + ("met)" if ms < TARGET_E2E_MS else f"MISSED by {ms - TARGET_E2E_MS:.2f} ms)"))
    for r in int8:
        if "macro_f1" not in r or not r.get("float_reference"):
            continue
        ref = rows[r["float_reference"]]
        ratio = r["macro_f1"] / ref["macro_f1"] if ref.get("macro_f1") else float("nan")
        ok = ratio >= 0.99 and r.get("agreement_vs_float", 0) >= 0.98
        lines.append(f"{r['format']}: macro-F1 {fmt(ratio, pct=True)} of {ref['format']}, top-1 agreement "
                     f"{fmt(r.get('agreement_vs_float'), pct=True)} (target >= 99% and >= 98%: "
                     + ("met)" if ok else "MISSED)"))
    return lines


PUBLISHED_PLOTS = "results_plots"  # the plots folder beside a published RESULTS.md


def markdown(result: dict, plots_dir: str = "plots") -> str:
    """The report; its plot links point into ``plots_dir`` (relative to the report)."""
    m = result["model"]
    lines = [f"# Benchmark: {m['name']} {m['version']} ({m['image_size']} px)", ""]
    if m.get("synthetic"):
        lines += ["**SYNTHETIC DATA - NOT FOR CLINICAL USE.**", ""]
    lines += [f"- Bundle: `{result['bundle']}`; run: `{result.get('run_dir')}`",
              f"- Images: {result['data']['description']} (by source: {result['data']['by_source']})"
              + (f"; {len(result['data']['skipped'])} unreadable, skipped" if result["data"]["skipped"] else ""),
              f"- Machine: {describe(result['machine'])}",
              *([f"- Formats of the table this bundle does not hold (not benchmarked; `--formats all` lists them as "
                 f"failed rows): {', '.join(result['not_in_bundle'])}"] if result.get("not_in_bundle") else []),
              f"- Command: `{result.get('command', '')}`",
              f"- Quality: calibrated with the bundle's temperature {m['temperature']:.3g}; 'agree vs float' and "
              f"'max dp' compare raw probabilities with the float reference "
              f"({next((r['float_reference'] for r in result['rows'] if r.get('float_reference')), 'none')}).",
              f"- Speed: batch 1, {result['options']['warmup']} warm-up calls then up to "
              f"{result['options']['iterations']} timed; 'x Keras' = Keras float p50 / this p50 at the same thread "
              f"count, in this run; CPU ms = process CPU time per call (all threads; steadier than wall time on a shared "
              f"machine); e2e = a {result['options']['e2e_size']}px PNG file "
              f"({result['options'].get('e2e_png_kb')} KB) to decision + heatmap, "
              f"median of {result['options']['e2e_iterations']}; each format in its own process; 'machine load' = the "
              f"1-minute load average when that format started (cores: {result['machine'].get('cores')}).", "",
              "## Quality (pooled)", "", quality_table(result), "", "## Latency (batch 1)", "", latency_table(result), "",
              "## Load, end to end, memory", "", deploy_table(result), "",
              "## Quality per source", "", source_table(result), "", "## Targets", ""]
    lines += [f"- {t}" for t in targets(result)]
    if result.get("plots"):
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({plots_dir}/{Path(p).name})" for p in result["plots"]]
    problems = [r for r in result["rows"] if r["status"] != "ok" or r.get("notes")]
    if problems:
        lines += ["", "## Failures, flags and notes", ""]
        for r in problems:
            text = "; ".join(x for x in (r.get("error"), r.get("flags"), r.get("notes")) if x)
            lines.append(f"- **{r['format']}** ({r['status']}): {text}")
    g = result["gates"]
    if g["active"]:
        lines += ["", "## Gate: " + ("PASSED" if g["passed"] else "FAILED"), ""]
        lines += [f"- {f}" for f in g["failures"]] or ["- every format passed"]
    return "\n".join(lines) + "\n"


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) or math.isinf(float(v)) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def write_all(result: dict, out: Path, ev=None, plots: bool = True) -> dict:
    """report.md, results.csv, results_by_source.csv, results.json, predictions.npz, plots/."""
    out.mkdir(parents=True, exist_ok=True)
    result.setdefault("command", " ".join(shlex.quote(a) for a in [Path(sys.executable).name, "-m", "benchmarks",
                                                                   *sys.argv[1:]]))
    probs = {k: d.pop("probs") for k, d in result["details"].items() if "probs" in d}
    files = {"report": out / "report.md", "csv": out / "results.csv", "by_source_csv": out / "results_by_source.csv",
             "json": out / "results.json"}
    if ev is not None:
        files["predictions"] = out / "predictions.npz"
        np.savez_compressed(files["predictions"], labels=ev.labels, sources=ev.sources,
                            paths=np.array(ev.paths), **{f"probs_{k}": v for k, v in probs.items()})
    if plots:
        try:
            from benchmarks.plots import plot_all

            files["plots"] = out / "plots"
            result["plots"] = [str(p) for p in plot_all(result, probs, ev, out / "plots")]
        except ImportError as exc:
            result["plots_error"] = f"no plots ({exc}); install matplotlib"
    result["files"] = {k: str(v) for k, v in files.items()}
    files["report"].write_text(markdown(result))
    write_csv(files["csv"], result["rows"])
    write_csv(files["by_source_csv"], source_rows(result))
    files["json"].write_text(json.dumps(_clean(result), indent=1) + "\n")
    return result


def publish(result: dict, dest: Path) -> Path:
    """Copy the report as ``dest/RESULTS.md`` with its plots in ``dest/results_plots/`` (links relative)."""
    dest = Path(dest)
    (dest / PUBLISHED_PLOTS).mkdir(parents=True, exist_ok=True)
    for old in (dest / PUBLISHED_PLOTS).glob("*.png"):
        old.unlink()
    for p in result.get("plots", []):
        shutil.copy2(p, dest / PUBLISHED_PLOTS / Path(p).name)
    report = dest / "RESULTS.md"
    report.write_text(markdown(result, PUBLISHED_PLOTS))
    return report
