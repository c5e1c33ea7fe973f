"""``python -m benchmarks.reproduce REBUILD.json --reference REF.json [--arm BUNDLE] --spread FIRST.json AGAIN.json``:
does a rebuild of the default (``make model``) reproduce the default's test figures within the stated run-to-run
spread?

- ``REBUILD.json``: what ``make model`` wrote (``benchmarks.default_figures --out``,
  ``runs/default-benchmark/default_figures.json``); the artifact its bundle serves is judged (the LiteRT INT8
  file convert preferred, or FP32 when INT8 failed its parity check; older files without that record:
  ``tflite_int8``), as in the reference, each named in the report.
- ``--reference``: the training of the same recipe and seed whose figures were reported: another
  ``default_figures`` JSON, or a committed ``benchmarks.paired --out`` JSON with ``--arm`` naming the bundle of
  the reference training (its folder name; it must be the pair's A or B on the test side, deployed format).
- ``--spread``: two ``benchmarks.crossval --out`` reports of the default recipe trained twice on the same folds
  (``docs/cv5/crossval.json`` and the rerun ``docs/cv5r/crossval.json``): for every figure the largest
  difference between identical trainings over the folds both hold is the spread the rebuild is judged against.

Both trainings must have scored the same number of test films (and, where both files record it, the same films);
otherwise the comparison is refused, since another split moves the figures more than any retraining does. Each
figure is "within" when |rebuild - reference| is no larger than the spread, or, for a rate, than one film of these
test films where the spread is finer (``one_film``: a spread measured on larger folds cannot be resolved on fewer
films), else "outside by" the excess; figures the reference or the spread lacks are shown and not judged. The
report names this command, its commit, date and CPU, and every input's own command, commit, date and CPU.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from benchmarks import default_report as R
from benchmarks import selection as S
from edge_runtime import formats as F
from edge_runtime import operating_point as OP

PRIMARY = F.DEPLOYED  # a paired reference's arm is this artifact


class ReproduceError(S.LeverError):
    pass


_read = S._read  # LeverError naming the file when it is not readable JSON


def deployed_figures(doc: dict, where: Path) -> dict:
    """The figures of the artifact a ``default_figures`` JSON's bundle serves (``default_report.judged``), with the
    file's ``n``, film fingerprint and the artifact's name."""
    fmt = R.judged(doc)
    row = (doc.get("formats") or {}).get(fmt)
    if row is None or "error" in row:
        raise ReproduceError(f"{where} holds no usable {fmt} figures"
                             + (f" ({row['error']})" if row and "error" in row else ""))
    if doc.get("side", "test") != "test":
        raise ReproduceError(f"{where} scored the {doc.get('side')} films; the default's figures are test figures")
    return {**row, "n": doc.get("n"), "films_sha256": doc.get("films_sha256"), "artifact": fmt,
            "served_because": doc.get("served_because") or ""}


def paired_arm(doc: dict, arm: str, where: Path) -> dict:
    """The figures of one arm (the pair whose A or B bundle's folder is ``arm``) of a ``benchmarks.paired`` JSON,
    shaped as ``default_figures`` rows (accuracy, pair_auc, tb_auc, ece, refer_rule)."""
    for pair in doc.get("pairs", []):
        for side, key in (("a", "A"), ("b", "B")):
            if Path(str(pair.get(side, ""))).name != Path(arm).name:
                continue
            fmt = pair.get("format") if side == "a" else (pair.get("format_b") or pair.get("format"))
            if fmt != PRIMARY or pair.get("side", "test") != "test":
                continue
            fig = pair["figures"][key]
            return {"accuracy": fig.get("accuracy"), "pair_auc": fig.get("pair_auc"), "tb_auc": fig.get("tb_auc"),
                    "ece": fig.get("ece"), "refer_rule": (pair.get("rule") or {}).get(key, {}), "n": pair.get("n"),
                    "films_sha256": None, "artifact": fmt, "served_because": ""}
    raise ReproduceError(f"{where} holds no test-side {PRIMARY} pair with a bundle named {Path(arm).name!r}")


def reference_figures(doc: dict, where: Path, arm: str | None) -> dict:
    if "formats" in doc:
        return deployed_figures(doc, where)
    if "pairs" in doc:
        if not arm:
            raise ReproduceError(f"{where} is a paired report: name the reference training's bundle with --arm")
        return paired_arm(doc, arm, where)
    raise ReproduceError(f"{where} is neither a default_figures nor a paired report")


# figures that hang on the refer threshold: not judged when the two sides fitted it by different rules (one by a
# share of the validation films, convert --refer-share, the other by 90% accuracy on the films kept)
REFER_KEYS = ("referred", "acc_kept", "tb_normal", "pn_normal")
# figures at the pneumonia point: not judged when the two sides fitted it for other validation sensitivities (85%
# before 2026-12-05, 90% since: operating_point.PNEUMONIA_FIT_SENSITIVITY; a file without the record: 85%)
POINT_KEYS = ("pneumonia_sens_point", "pneumonia_spec_point")


def pneumonia_target(fig: dict) -> float:
    return float(fig.get("pneumonia_target") or OP.PNEUMONIA_FIT_BEFORE)


# rates over the films of one class: figure key -> (the class, True: over its films; False: over the other films)
CLASS_RATES = {"pneumonia_sens": (OP.PNEUMONIA, True), "pneumonia_sens_point": (OP.PNEUMONIA, True),
               "pneumonia_spec_point": ("normal", True), "tb_sens": (OP.TB, True), "tb_spec": (OP.TB, False)}


def one_film(key: str, fig: dict) -> float | None:
    """How far one film moves rate ``key`` on the test films ``fig`` was scored on: 1/n for a rate over n films
    (all films, the films kept, or one class's: ``per_class`` ``support``, recorded since 2026-12-05). A spread
    measured on folds of another size can be finer than this step, and no comparison of these films can resolve
    it. None for counts of films (their spread is whole films already: 0 against 1 is resolved on any set), where
    no single step exists (AUC, calibration), and where the count is not recorded."""
    n = fig.get("n")
    if not n:
        return None
    if key in ("accuracy", "referred"):
        return 1 / n
    if key == "acc_kept":
        referred = (fig.get("refer_rule") or {}).get("referred")
        kept = None if referred is None else round(n * (1 - referred))
        return 1 / kept if kept else None
    if key in CLASS_RATES:
        label, inside = CLASS_RATES[key]
        support = ((fig.get("per_class") or {}).get(label) or {}).get("support")
        films = None if support is None else (support if inside else n - support)
        return 1 / films if films else None
    return None


def compare(rebuild: dict, reference: dict, spread: dict) -> list[dict]:
    """One entry per figure of ``R.COLUMNS`` (parity aside): reference, rebuild, difference, the spread, one
    film's step on these films (``one_film``) and the verdict ("within", "outside by X", or "not judged" where a
    value or the spread is missing, or where the two sides' refer thresholds were fitted by different rules:
    ``REFER_KEYS``). A difference is judged against the larger of the spread and one film: a spread finer than
    one film of this test set (measured on larger folds) would otherwise let a single film decide."""
    if rebuild.get("n") != reference.get("n"):
        raise ReproduceError(f"the rebuild scored {rebuild.get('n')} test films, the reference {reference.get('n')}: "
                             "not the same split (same data and seed?)")
    if rebuild.get("films_sha256") and reference.get("films_sha256") and \
            rebuild["films_sha256"] != reference["films_sha256"]:
        raise ReproduceError("the rebuild and the reference scored different test films (fingerprints differ)")
    rows = []
    rules_differ = rebuild.get("refer_share") != reference.get("refer_share")
    points_differ = pneumonia_target(rebuild) != pneumonia_target(reference)
    for key, label, get, _, _ in R.COLUMNS:
        if key == "parity":
            continue
        a, b = get(reference), get(rebuild)
        big = S.largest_difference(spread.get(key, []))
        step = one_film(key, rebuild)
        tolerance = None if big is None else max(big, step or 0.0)
        count = isinstance(a, int) and isinstance(b, int)
        d = None if a is None or b is None else R._num(b) - R._num(a)
        if rules_differ and key in REFER_KEYS:
            verdict = "not judged: refer rules differ"
        elif points_differ and key in POINT_KEYS:
            verdict = "not judged: pneumonia points fitted for other sensitivities"
        elif d is None or tolerance is None:
            verdict = "not judged"
        else:
            verdict = "within" if abs(d) <= tolerance + 1e-12 else \
                f"outside by {abs(d) - tolerance:.{0 if count else 3}f}"
        # within only because the spread is finer than one film of these films
        by_one_film = verdict == "within" and big is not None and abs(d) > big + 1e-12
        rows.append({"key": key, "label": label, "reference": a, "rebuild": b, "difference": d, "spread": big,
                     "one_film": step, "tolerance": tolerance, "at_one_film": by_one_film, "count": count,
                     "verdict": verdict})
    return rows


def _cell(v, count: bool, signed: bool = False) -> str:
    if v is None:
        return "-"
    if count:
        return f"{v:+.0f}" if signed else f"{v:.0f}"
    return f"{v:+.3f}" if signed else R._f(v)


def _provenance(doc: dict) -> str:
    p = doc.get("provenance") or {}
    m = p.get("machine") or {}
    return f"`{p.get('command', '?')}` at commit {m.get('commit', '?')}, {m.get('date', '?')}, {m.get('cpu', '?')}"


def _rule(fig: dict) -> str:
    share = fig.get("refer_share")
    return "90% accuracy on the films kept" if share is None else f"a share of {share:.0%} of the validation films"


def report(rebuild_path: Path, reference_path: Path, arm: str | None, first_path: Path, again_path: Path,
           command: str) -> tuple[str, dict]:
    from benchmarks.sysinfo import machine_info, report_header

    rebuild_doc, ref_doc = _read(rebuild_path), _read(reference_path)
    first, again = _read(first_path), _read(again_path)
    rebuild = deployed_figures(rebuild_doc, rebuild_path)
    reference = reference_figures(ref_doc, reference_path, arm)
    spread = S.rerun_differences(first, again)
    folds = sorted({f for pairs in spread.values() for f, _, _ in pairs}, key=int)
    if not folds:
        raise ReproduceError(f"{first_path} and {again_path} share no fold: no run-to-run spread to judge against")
    rows = compare(rebuild, reference, spread)
    judged = [r for r in rows if not r["verdict"].startswith("not judged")]
    within = [r for r in judged if r["verdict"] == "within"]
    fine = [r for r in judged if r["at_one_film"]]
    info = machine_info()
    lines = [report_header("Does a rebuild reproduce the default? (`make model` against the reported training)",
                           command, info),
             f"- **Rebuild:** `{rebuild_path}`: {_provenance(rebuild_doc)}; {rebuild['n']} test films; judged: "
             f"`{rebuild['artifact']}`, what its bundle serves"
             + (f" ({rebuild['served_because']})" if rebuild["served_because"] else ""),
             f"- **Reference** (the same recipe and seed as reported){' (' + arm + ')' if arm else ''}: "
             f"`{reference_path}`: {_provenance(ref_doc)}; {reference['n']} test films; judged: "
             f"`{reference['artifact']}`" + (f" ({reference['served_because']})" if reference["served_because"] else ""),
             f"- **Run-to-run spread:** the largest difference between two trainings of the default on the same "
             f"folds {', '.join(folds)} (`{first_path}` and `{again_path}`; "
             f"{_provenance(again)})", "",
             f"**{len(within)} of {len(judged)} judged figures within the spread**"
             + (f" ({len(fine)} of them by one film, finer than the spread can be resolved on these films)"
                if fine else "") + " "
             f"(the served artifact, through the device runtime, on the same test films). Training is not "
             "bit-reproducible; a rebuild on another CPU or at a later commit differs by about what an identical "
             "retraining does, and this says whether it did.", "",
             *([f"**Judged at one film** ({', '.join(r['label'] for r in fine)}): the difference is larger than "
                f"the spread but no larger than one film of these {rebuild['n']} test films; the spread, measured "
                "on folds of another size, is finer than that step and cannot be resolved here (the larger of the "
                "two is the tolerance; counts of films get no such step).", ""] if fine else []),
             *([f"**The refer thresholds were fitted by different rules** (rebuild: {_rule(rebuild)}; reference: "
                f"{_rule(reference)}): the figures that hang on them are shown, not judged.", ""]
               if rebuild.get("refer_share") != reference.get("refer_share") else []),
             *([f"**The pneumonia points were fitted for other validation sensitivities** (rebuild "
                f"{pneumonia_target(rebuild):.0%}, reference {pneumonia_target(reference):.0%}): the figures at the point "
                "are shown, not judged.", ""]
               if pneumonia_target(rebuild) != pneumonia_target(reference) else []),
             "| figure | reference | rebuild | difference | spread (largest rerun difference) | one film | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {_cell(r['reference'], r['count'])} | {_cell(r['rebuild'], r['count'])} | "
                     f"{_cell(r['difference'], r['count'], True)} | {_cell(r['spread'], r['count'])} | "
                     f"{_cell(r['one_film'], r['count'])} | {r['verdict']} |")
    lines.append("")
    bs = rebuild.get("by_source") or {}
    if bs:
        lines += ["Rebuild per data source (accuracy): " + ", ".join(
            f"{src} {R._f(v.get('accuracy'))} ({v.get('n', '?')} films)" for src, v in sorted(bs.items())), ""]
    ci = rebuild.get("ci95") or {}
    if ci.get("accuracy"):
        lines.append(f"Rebuild 95% intervals ({ci.get('unit', 'film')}s resampled): accuracy "
                     f"{ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}, NIH normal-vs-pneumonia AUC "
                     f"{ci['pair_auc'][0]:.3f}-{ci['pair_auc'][1]:.3f}")
    if not lines[-1]:
        lines.pop()
    result = {"rows": rows, "within": len(within), "judged": len(judged), "folds": folds,
              "artifacts": {"rebuild": rebuild["artifact"], "reference": reference["artifact"]},
              "provenance": {"command": command, "machine": info}}
    return "\n".join(lines) + "\n", result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rebuild", type=Path, help="default_figures JSON of the rebuild (make model)")
    p.add_argument("--reference", type=Path, required=True,
                   help="default_figures JSON, or benchmarks.paired JSON (with --arm), of the reported training")
    p.add_argument("--arm", default=None, help="with a paired reference: the reference training's bundle folder")
    p.add_argument("--spread", type=Path, nargs=2, required=True, metavar=("FIRST", "AGAIN"),
                   help="two crossval reports of the default trained twice on the same folds")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here (else print it)")
    p.add_argument("--json", type=Path, default=None, help="write the comparison as JSON here")
    a = p.parse_args(argv)
    command = "python -m benchmarks.reproduce " + shlex.join(str(x) for x in (argv if argv is not None
                                                                                else sys.argv[1:]))
    try:
        text, result = report(a.rebuild, a.reference, a.arm, a.spread[0], a.spread[1], command.strip())
    except S.LeverError as exc:  # ReproduceError, or a report that is not readable or not of the same folds
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, body in ((a.out, text), (a.json, json.dumps(result, indent=2) + "\n")):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            print(f"wrote {path}")
    if not a.out:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
