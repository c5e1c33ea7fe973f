"""``python -m edge_runtime classify PATH... [--bundle B] [--csv out.csv]``

Files, folders (searched recursively) and DICOM alike; one output row per file, a bad file is a row with
its error and the run goes on. In a folder every regular file gets a row: images are recognised by their
content (a film without an extension is classified), other files are rows marked ``skipped``. A FIFO or
device is an error row, never read. The ``--csv`` path is checked before any image is classified.
Exit status 0 when every image was classified, 1 when some could not be, 2 when the bundle itself is
unusable or the ``--csv`` file cannot be written.

Columns: ``decision`` (what to do: a class, ``refer``, ``out_of_scope``, ``error`` or ``skipped``), ``top_class``
(the model's most probable class, not a ground truth), one ``p_<class>`` per class (both empty for a film out of
scope: no diagnosis is given), ``in_scope``, ``ms``,
``reason``, ``error``, then what made the answer, as the web page's history.csv gives it: ``model_name``,
``model_version``, ``backend``, ``synthetic`` and the decision rule applied (``tb_threshold``, ``refer_below``,
``temperature``).
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import stat
import sys
from pathlib import Path

from edge_runtime.formats import DEVICE_BACKENDS
from edge_runtime.preprocess import IMAGE_SUFFIXES, ImageError, sniff

SKIPPED = "skipped"
log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="classify image files or folders with a bundle", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("--bundle", default="bundle", help="bundle folder or model file (default ./bundle)")
    p.add_argument("--backend", choices=DEVICE_BACKENDS, help="force a backend")
    p.add_argument("--format", default=None, metavar="KEY",
                   help="use this artifact of the bundle (a format key, e.g. tflite_fp32; default: the bundle's first)")
    p.add_argument("--num-threads", type=int, default=None, help="inference threads (default: all cores)")
    p.add_argument("--threads", type=int, dest="num_threads", help=argparse.SUPPRESS)  # deprecated: --num-threads
    p.add_argument("--csv", help="write the rows to this CSV file as well")
    p.add_argument("--site-profile", default=None, metavar="FILE",
                   help="the site profile to apply (default: site.json beside the bundle; on a kit install the page "
                        "keeps it in the data folder: /var/lib/cxr-edge/site.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)


def _head(path: Path, n: int = 140) -> bytes:
    try:
        with open(path, "rb") as fh:  # only called on regular files
            return fh.read(n)
    except OSError:
        return b""


def is_image_file(path: Path) -> bool:
    """An image by its suffix, or by its content when the suffix says nothing (a film without extension)."""
    return path.suffix.lower() in IMAGE_SUFFIXES or sniff(_head(path)) is not None


def expand(paths) -> tuple[list[Path], list[Path]]:
    """(files to classify, regular files in folders skipped as not images). Named paths are always
    classified: a missing or odd file becomes an error row, never a silent skip; so does a FIFO or device
    found in a folder."""
    out, skipped = [], []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        for f in sorted(p.rglob("*")):
            try:
                mode = f.lstat().st_mode if not f.is_symlink() else f.stat().st_mode
            except OSError:
                out.append(f)  # a dangling link or a file gone meanwhile: its error row says so
                continue
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode) or is_image_file(f):
                out.append(f)
            else:
                skipped.append(f)
    return out, skipped


def model_columns(meta, backend) -> dict:
    """The model and decision rule behind every row (the same names as the web page's history.csv)."""
    from edge_runtime.operating_point import TB

    thr = meta.thresholds or {}
    num = lambda v: "" if v is None else f"{float(v):.4g}"  # noqa: E731
    return {"model_name": meta.model_name, "model_version": meta.model_version, "backend": str(backend or ""),
            "synthetic": int(bool(meta.synthetic)), "tb_threshold": num(thr.get(TB)),
            "refer_below": num(thr.get("refer_below")), "temperature": num(meta.temperature)}


def progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr (rate and time left), or None when off or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="film", file=sys.stderr, dynamic_ncols=True)


def open_csv(path: str):
    """Open the --csv report for writing before any work, so a bad path costs nothing: rows go to
    ``PATH.partial`` as they are made, renamed to ``PATH`` when the batch ends (``finish_csv``), so an existing
    report is replaced only by a whole one and an interrupted batch keeps its rows. Only a regular file (new or
    existing) is accepted: a FIFO would block and a device is no place for a report."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise OSError(f"not a regular file ({'a folder' if p.is_dir() else 'a FIFO, device or socket'})")
    partial = p.with_name(p.name + ".partial")
    if partial.exists() and not partial.is_file():
        raise OSError(f"{partial} is not a regular file")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        raise OSError(exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the check
        os.close(fd)
        raise OSError("not a regular file")
    f = os.fdopen(fd, "w", newline="")
    f.target, f.partial = p, partial
    return f


def run(args) -> int:
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier

    try:
        clf = Classifier.from_bundle(args.bundle, backend=args.backend, num_threads=args.num_threads, fmt=args.format,
                                     serving=True, site_profile=args.site_profile)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = clf.metadata
    if meta.warning:
        print(f"*** {meta.warning} ***", file=sys.stderr)
    files, skipped = expand(args.paths)
    if not files:
        print("error: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    csv_file = None
    if args.csv:
        try:
            csv_file = open_csv(args.csv)
        except OSError as exc:
            print(f"error: cannot write --csv {args.csv}: {exc}", file=sys.stderr)
            return 2
    model = model_columns(meta, clf.backend)
    fields = ["file", "decision", "top_class", *[f"p_{l}" for l in meta.labels], "in_scope", "ms", "reason", "error",
              *model]
    errors, done, status = 0, 0, 0
    out = csv.DictWriter(sys.stdout, fieldnames=fields)
    writers = [out] + ([csv.DictWriter(csv_file, fieldnames=fields)] if csv_file is not None else [])

    def emit(row):  # each row as it is made: an interrupted batch keeps what it did
        nonlocal status
        out.writerow(row)
        sys.stdout.flush()
        if csv_file is not None and status != 2:
            try:
                writers[1].writerow(row)
                csv_file.flush()
            except OSError as exc:
                print(f"error: writing --csv {args.csv} failed: {exc.strerror or exc}", file=sys.stderr)
                status = 2
    for w in writers:
        w.writeheader()
    bar = progress_bar(len(files), enabled=not args.no_progress and sys.stderr.isatty())
    try:
        for f in files:
            row = {**dict.fromkeys(fields, ""), **model}
            row["file"] = str(f)
            try:
                s = clf.classify(f)
                row.update(decision=s.decision, in_scope=s.in_scope, ms=f"{s.timings_ms['total']:.1f}",
                           reason=s.reason)
                if s.in_scope:  # out of scope: no diagnosis, so no class and no probabilities (as the web page)
                    row.update(top_class=s.label, **{f"p_{l}": f"{p:.4f}" for l, p in s.probs.items()})
            except ImageError as exc:
                errors += 1
                row.update(decision="error", error=str(exc))
            except Exception as exc:  # a fault outside decoding still must not end the batch
                log.debug("classifying %s failed", f, exc_info=True)
                errors += 1
                row.update(decision="error", error=f"{f}: unexpected error ({type(exc).__name__}: {exc})")
            emit(row)
            done += 1
            if bar is not None:
                bar.set_postfix_str(f.name[-30:], refresh=False)
                bar.update()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        kept = ""
        if csv_file is not None:
            csv_file.close()
            kept = (f"; the rows so far are in {csv_file.partial}"
                    + (f" ({csv_file.target} is left as it was)" if csv_file.target.exists() else ""))
        print(f"interrupted after {done} of {len(files)} film(s){kept}", file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    for f in skipped:
        emit({**dict.fromkeys(fields, ""), **model, "file": str(f), "decision": SKIPPED,
              "error": f"{f}: not an image (neither an image suffix nor PNG/JPEG/BMP/TIFF/DICOM content)"})
    status = status or (1 if errors else 0)
    if csv_file is not None:
        try:
            csv_file.close()
            if status != 2:
                os.replace(csv_file.partial, csv_file.target)
        except OSError as exc:
            print(f"error: writing --csv {args.csv} failed: {exc.strerror or exc}", file=sys.stderr)
            status = 2
    print(f"{len(files) - errors} classified, {errors} error(s)"
          + (f", {len(skipped)} skipped (not an image)" if skipped else "")
          + f"; model {meta.model_name} {meta.model_version} on {clf.backend}", file=sys.stderr)
    return status
