"""python -m benchmarks (or cxr-bench) --bundle B | --run RUN_DIR [--data DIR] [--formats ...] [--threads 1,2] [--out DIR]

Every format of the format table, side by side, through the same preprocessing and the same metrics: quality
pooled and per source (accuracy, macro-F1, per-class sensitivity/specificity, AUC, specificity at 90% TB
sensitivity, ECE, agreement with the float Keras model), and speed, each format in its own process (load
time, p50/p90/p99 latency per thread count, end to end from a full-size PNG, throughput, peak memory, file
size), with the speed-up over the Keras float baseline measured in the same run. A format that fails is a
row with its error; the run goes on. Writes report.md, results.csv/json and plots to --out.

Exit status: 0 done; 1 a gate (--min-accuracy, --max-latency-ms) failed; 2 the benchmark could not start.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_runtime.cli_common import add_version, prog
from edge_runtime.formats import BASELINE, FORMATS, parse_formats



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("python -m benchmarks"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    src = p.add_argument_group("what to benchmark")
    src.add_argument("--bundle", type=Path, help="model bundle folder (python -m convert ... --out BUNDLE)")
    src.add_argument("--run", type=Path, dest="run_dir",
                     help="training run folder: the Keras baseline and the test split; without --bundle the run "
                          "is converted into OUT/bundle first (minutes). Default: the bundle's own run, if present")
    src.add_argument("--data", type=Path, help="evaluate on the images of this folder or manifest instead "
                     "(less any the run trained or calibrated on)")
    src.add_argument("--split", choices=("test", "val", "all"), default="test",
                     help="side of the run's split to evaluate on when --data is not given (default test)")
    src.add_argument("--formats", default="",
                     help="comma-separated format keys, or 'all' for every format of the table (default: every format the "
                          f"bundle holds); known: {', '.join(FORMATS)}")
    src.add_argument("--no-baseline", action="store_true",
                     help=f"do not add the {BASELINE} baseline row (no speed-ups then)")
    sp = p.add_argument_group("speed")
    sp.add_argument("--threads", default="1,2", help="thread counts for latency (default 1,2)")
    sp.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    sp.add_argument("--iterations", type=int, default=100, help="timed single-image calls (default 100)")
    sp.add_argument("--budget-s", type=float, default=30.0,
                    help="stop timing a thread count after this many seconds (at least 10 calls; default 30)")
    sp.add_argument("--e2e-iterations", type=int, default=30, help="end-to-end runs (default 30)")
    sp.add_argument("--e2e-size", type=int, default=1024, help="side of the end-to-end PNG (0: skip; default 1024)")
    sp.add_argument("--keras-call", choices=("function", "eager"), default="function",
                    help="how the Keras baseline is called: a traced tf.function (default) or model(x) eagerly")
    sp.add_argument("--timeout", type=float, default=900.0, help="seconds per format before it is a failed row")
    out = p.add_argument_group("output and gates")
    out.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="output folder (default runs/benchmark)")
    out.add_argument("--no-plots", action="store_true", help="skip the plots")
    out.add_argument("--publish", type=Path, default=None, metavar="DIR",
                     help="also write the report as DIR/RESULTS.md with its plots in DIR/results_plots/ (e.g. "
                          "benchmarks/, for the default model's published benchmark)")
    out.add_argument("--quiet", action="store_true", help="do not print the report on stdout")
    out.add_argument("--min-accuracy", type=float, help="gate: every format (baseline aside) reaches this accuracy")
    out.add_argument("--max-latency-ms", type=float,
                     help="gate: every format's p50 latency (best thread count) is at most this")
    return p


def _formats(text: str, baseline: bool) -> list[str] | None:
    """None (no --formats): the formats the bundle holds. 'all': every format of the table (those missing from
    the bundle become failed rows). Otherwise the listed keys. The Keras baseline is added unless refused."""
    if not text:
        return None if baseline else ["-" + BASELINE]
    keys = list(FORMATS) if text.strip() == "all" else parse_formats(text)
    if baseline and BASELINE not in keys:
        keys.insert(0, BASELINE)
    if not baseline:
        keys = [k for k in keys if k != BASELINE]
    return list(dict.fromkeys(keys))


def _threads(text: str) -> list[int]:
    try:
        vals = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise ValueError(f"--threads takes comma-separated integers, not {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"--threads needs positive integers, not {text!r}")
    return vals


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.runner import BenchmarkError, Options, run
    from edge_runtime.bundle import BundleError

    try:
        if not args.bundle and not args.run_dir:
            raise ValueError("pass --bundle BUNDLE or --run RUN_DIR")
        opts = Options(out=args.out, bundle=args.bundle, run_dir=args.run_dir, data=args.data, split=args.split,
                       formats=_formats(args.formats, not args.no_baseline), threads=_threads(args.threads),
                       warmup=args.warmup, iterations=args.iterations, e2e_iterations=args.e2e_iterations,
                       budget_s=args.budget_s, e2e_size=args.e2e_size, keras_call=args.keras_call,
                       timeout_s=args.timeout, min_accuracy=args.min_accuracy, max_latency_ms=args.max_latency_ms,
                       plots=not args.no_plots)
        result = run(opts)
    except (ValueError, BenchmarkError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(Path(result["files"]["report"]).read_text())
    if args.publish:
        from benchmarks.report import publish

        print(f"Published {publish(result, args.publish)}", file=sys.stderr)
    print(f"Wrote {args.out}/report.md, results.csv, results.json" + (", plots/" if result.get("plots") else ""),
          file=sys.stderr)
    gate = result["gates"]
    if gate["active"] and not gate["passed"]:
        print("GATE FAILED:\n  " + "\n  ".join(gate["failures"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
