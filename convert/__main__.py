"""python -m convert (or cxr-convert) RUN_DIR --formats tflite_int8,openvino_int8,onnx_int8 --out BUNDLE

Turns a training run into a model bundle a technician copies to a device: the chosen artifacts, each
checked through the device runtime against its Keras parent, with metadata, a model card and checksums.
Exit status: 0 all formats passed; 3 the bundle was written but some format failed its parity check;
2 bad arguments (among them a missing or unfinished run folder, a non-empty --out without --force), found
before TensorFlow is loaded; anything else an error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from pathlib import Path

from edge_runtime.cli_common import add_version, prog
from edge_runtime.formats import DEFAULT_FORMATS, FORMATS, parse_formats
from edge_runtime.views import parse as parse_views

RUN_FILES = ("metadata.json", "model_float.keras", "split.csv")  # what makes a folder a training run
BUNDLE_FILES = ("bundle.json", "SHA256SUMS")  # a folder holding one of these is a bundle --force may replace


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("python -m convert"), description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("run_dir", help="training run folder (python -m train --out ...)")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help=f"comma-separated, or 'all' (default {','.join(DEFAULT_FORMATS)}); known: {', '.join(FORMATS)}")
    p.add_argument("--input-type", choices=("uint8", "int8"), default="uint8", help="TFLite INT8 input type")
    p.add_argument("--min-agreement", type=float, default=0.98,
                   help="top-1 agreement with the Keras parent below which a format is marked failed")
    p.add_argument("--views", default="none",
                   help="test-time views the device averages (edge_runtime.views): a set (none, zoom3, shift5, "
                        "all7) or view names joined by commas; the operating points are fitted on their average. "
                        "Costs one inference per view; makes INT8 answers move less with the CPU's rounding")
    p.add_argument("--member", action="append", default=[], metavar="RUN",
                   help="serve RUN_DIR together with this training run as one ensemble (repeat for more): every "
                        "format then holds all of them in one file that averages their probabilities, and every "
                        "operating point is fitted on that average. Members must share RUN_DIR's split and input "
                        "preparation (train them with the same --seed, varying --init-seed). Costs one inference "
                        "per member")
    p.add_argument("--refer-share", type=float, default=None, metavar="S",
                   help="fit each refer threshold to refer this share of the validation films the TB rule does not "
                        "flag (the least confident; a quantile, steady from one build to the next) instead of the "
                        "lowest confidence at which the films kept reach 90%% accuracy (default; docs/refer-share)")
    p.add_argument("--recipe", default=None,
                   help="TOML recipe (e.g. recipes/default.toml) whose [convert] table sets these options' defaults "
                        "(views, formats, min-agreement, input-type, refer-share); a flag given here still wins")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def check_paths(run_dir: Path, out: Path, force: bool) -> None:
    """Bad arguments found before anything heavy is imported (ValueError, exit status 2)."""
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder (make one with python -m train --out ...)")
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise ValueError(f"{run_dir}: not a training run (no {', '.join(missing)})")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise ValueError(f"{out} is not an empty folder; choose another --out or pass --force")
    replaceable(out, run_dir)


def replaceable(out: Path, run_dir: Path) -> None:
    """``--force`` replaces a bundle, never anything else: a non-empty --out that holds no bundle (a parent
    folder, a training run) or that holds the run being converted is refused (ValueError) before anything is
    deleted."""
    if not out.is_dir() or not any(out.iterdir()):
        return
    o, r = out.resolve(), run_dir.resolve()
    if o == r or o in r.parents:
        raise ValueError(f"--out {out} holds the training run {run_dir}: --force would delete it; give the bundle a "
                         "folder of its own")
    if not any((out / f).is_file() for f in BUNDLE_FILES):
        raise ValueError(f"--out {out} is not empty and holds no bundle (no {' or '.join(BUNDLE_FILES)}): --force "
                         "replaces only a bundle folder; choose another --out")


def main(argv=None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from train import recipe  # light: the recipe reader, no TensorFlow

    parser = build_parser()
    recipe.apply(parser, argv, "convert")  # the recipe's [convert] values become defaults: explicit flags win
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    for noisy in ("tensorflow", "absl", "h5py", "nncf", "tf2onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        formats = parse_formats(args.formats)
        views = parse_views(args.views)
        if args.refer_share is not None and not 0.0 < args.refer_share < 1.0:
            raise ValueError(f"--refer-share is a share of films between 0 and 1 (e.g. 0.32), got {args.refer_share}")
        if Path(args.out).resolve() in {Path(r).resolve() for r in (args.run_dir, *args.member)}:
            raise ValueError(f"--out {args.out} is a training run given here; the bundle goes in a folder of its own")
        check_paths(Path(args.run_dir), Path(args.out), args.force)
        for m in args.member:
            check_paths(Path(m), Path(args.out), True)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from convert.pipeline import run  # TensorFlow comes with the work, after the arguments are known good

    try:
        status = run(args.run_dir, args.out, formats, args.input_type, args.min_agreement, args.force, views,
                     members=tuple(args.member), refer_share=args.refer_share)
    except SystemExit as exc:  # the pipeline refuses a run it cannot convert (a control, images gone): say why
        if not isinstance(exc.code, str):
            raise
        print(f"error: {exc.code}", file=sys.stderr)
        return 2
    print()
    print(f"{'format':<16} {'MB':>6} {'agree':>7} {'max diff':>9} {'test acc':>9}  status")
    for key, r in status["formats"].items():
        acc = r.get("test", {}).get("pooled", {}).get("accuracy", float("nan"))
        print(f"{key:<16} {r.get('bytes', 0) / 1e6:6.2f} {r.get('agreement', float('nan')):7.3f} "
              f"{r.get('max_prob_diff', float('nan')):9.4f} {acc:9.3f}  {'ok' if r.get('passed') else 'FAILED: ' + r.get('error', 'below agreement')}")
    print(f"\nBundle: {args.out} ({status['seconds']:.0f} s)" + ("  *** SYNTHETIC - NOT FOR CLINICAL USE ***"
                                                               if status["synthetic"] else ""))
    if status["failed_formats"]:
        print(f"FAILED formats: {', '.join(status['failed_formats'])} (kept in the bundle, marked failed in "
              f"bundle.json; the runtime prefers formats that passed)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
