"""``python -m edge_runtime classify PATH... [--bundle B] [--csv out.csv]``

Files, folders (searched recursively for PNG/JPEG/DICOM) and DICOM alike; one output row per image, a bad
file is a row with its error and the run goes on. Exit status 0 when every file was classified, 1 when
some could not be, 2 when the bundle itself is unusable.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

from edge_runtime.formats import DEVICE_BACKENDS
from edge_runtime.preprocess import IMAGE_SUFFIXES, ImageError


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify image files or folders with a bundle", description=__doc__)
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("--bundle", default="bundle", help="bundle folder or model file (default ./bundle)")
    p.add_argument("--backend", choices=DEVICE_BACKENDS, help="force a backend")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--csv", help="write the rows to this CSV file as well")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def expand(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            out.extend(found)
        else:
            out.append(p)  # a missing or odd file becomes an error row, not a silent skip
    return out


def _progress(i: int, n: int, name: str) -> None:
    width = 30
    done = int(width * i / max(1, n))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {name[-40:]:<40}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def run(args) -> int:
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier

    try:
        clf = Classifier.from_bundle(args.bundle, backend=args.backend, num_threads=args.threads)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = clf.metadata
    if meta.warning:
        print(f"*** {meta.warning} ***", file=sys.stderr)
    files = expand(args.paths)
    if not files:
        print("error: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    fields = ["file", "decision", "label", *[f"p_{l}" for l in meta.labels], "in_scope", "ms", "reason", "error"]
    rows, errors = [], 0
    for i, f in enumerate(files, 1):
        row = dict.fromkeys(fields, "")
        row["file"] = str(f)
        try:
            s = clf.classify(f)
            row.update(decision=s.decision, label=s.label, in_scope=s.in_scope, ms=f"{s.timings_ms['total']:.1f}",
                       reason=s.reason, **{f"p_{l}": f"{p:.4f}" for l, p in s.probs.items()})
        except ImageError as exc:
            errors += 1
            row.update(decision="error", error=str(exc))
        rows.append(row)
        if not args.no_progress and sys.stderr.isatty():
            _progress(i, len(files), f.name)
    out = csv.DictWriter(sys.stdout, fieldnames=fields)
    out.writeheader()
    out.writerows(rows)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    print(f"{len(files) - errors} classified, {errors} error(s); model {meta.model_name} {meta.model_version} "
          f"on {clf.backend}", file=sys.stderr)
    return 1 if errors else 0
