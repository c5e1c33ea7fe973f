"""Finding images, labels, sources and patients; the patient-level split; the decoded-array cache.

Layouts recognised without hand work (the source is recorded for every image):
- a manifest CSV (``manifest.csv`` in the folder, or the CSV path itself) with columns
  ``path``/``file``, ``label``/``class`` and optionally ``patient_id``, ``source`` and ``group``
  (images of one group stay on one side of the split, e.g. TBX11K's ``tbx_pseudo_patient_group``);
- Kermany ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}`` (patient from ``personN_...``);
- Shenzhen / Montgomery ``CHNCXR_0001_1.png`` / ``MCUCXR_0001_0.png`` (last digit: 1 = TB);
- the TB Chest X-ray Database ``Normal/Normal-1.png``, ``Tuberculosis/Tuberculosis-1.png``;
- TBX11K ``imgs/{health,sick,tb}`` (``sick`` = sick but not TB: left out, with a log line);
- any ImageFolder ``<class>/*.png|jpg|dcm`` (folder names matched to classes through aliases).
"""
from __future__ import annotations

import csv
import os
import hashlib
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_runtime.preprocess import IMAGE_SUFFIXES, ImageError, PreprocessConfig, load

log = logging.getLogger(__name__)

DEFAULT_CLASSES = ("normal", "pneumonia", "tuberculosis")
ALIASES = {
    "normal": "normal", "no_finding": "normal", "no_findings": "normal", "health": "normal",
    "healthy": "normal", "negative": "normal",
    "pneumonia": "pneumonia", "bacteria": "pneumonia", "virus": "pneumonia",
    "tuberculosis": "tuberculosis", "tb": "tuberculosis",
}
EXCLUDED_FOLDERS = {"sick"}  # TBX11K "sick but non-TB": not one of our classes


class DataError(ValueError):
    """The data set cannot be used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Sample:
    path: str
    label: str
    source: str
    patient_id: str
    group: str = ""  # images sharing a group stay on one side of the split (defaults to patient_id)

    @property
    def split_key(self) -> str:
        return self.group or self.patient_id


# --- patient ids from known file-name patterns -------------------------------------------------------
_PATTERNS = [
    (re.compile(r"^(CHNCXR|MCUCXR)_(\d+)_([01])$", re.I), lambda m: f"{m[1].upper()}_{m[2]}"),
    (re.compile(r"^(person\d+)_", re.I), lambda m: f"kermany_{m[1].lower()}"),
    (re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.I), lambda m: f"kermany_{m[1].upper()}"),
    (re.compile(r"^(?:nih_dcn__)?(\d{8})_\d{3}$"), lambda m: f"nih_{m[1]}"),
]


def patient_from_name(path: str) -> str:
    """Patient id from a known file-name pattern; otherwise the image is its own patient."""
    stem = Path(path).stem
    for rx, fmt in _PATTERNS:
        m = rx.match(stem)
        if m:
            return fmt(m)
    return f"img_{stem}"


def _canonical(label: str) -> str:
    key = label.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# --- layouts ---------------------------------------------------------------------------------------------
def _from_manifest(csv_path: Path) -> list[Sample]:
    """The samples a manifest CSV lists. Column names are matched without regard to case, spaces or a UTF-8
    byte-order mark (Excel's "CSV UTF-8"): a patient column written ``Patient_ID`` must not be dropped, or every
    film would count as its own patient and a patient's films could fall on both sides of the split."""
    root = csv_path.parent
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        named = {re.sub(r"[\s_-]+", "_", (c or "").strip().lower()): c for c in (reader.fieldnames or [])}

        def column(*names):
            return next((named[n] for n in names if n in named), None)
        path_col = column("path", "file", "filename", "image")
        label_col = column("label", "class", "diagnosis")
        if not path_col or not label_col:
            raise DataError(f"{csv_path}: a manifest needs a 'path' (or 'file') and a 'label' (or 'class') "
                            f"column; found {sorted(named.values())}")
        group_col = column("group", "tbx_pseudo_patient_group")
        patient_col = column("patient_id", "patientid", "patient")
        source_col = column("source")
        if patient_col is None:
            log.warning("%s has no patient_id column: patients are read from known file-name patterns, otherwise "
                        "each image is its own patient (a patient's films could then fall on both sides of the "
                        "split)", csv_path)
        samples = []
        for i, row in enumerate(reader, start=2):
            rel = (row.get(path_col) or "").strip()
            label = (row.get(label_col) or "").strip()
            if not rel or not label:
                raise DataError(f"{csv_path}:{i}: empty path or label")
            p = Path(rel) if Path(rel).is_absolute() else root / rel
            pid = ((row.get(patient_col) or "").strip() if patient_col else "") or patient_from_name(rel)
            group = (row.get(group_col) or "").strip() if group_col else ""
            source = ((row.get(source_col) or "").strip() if source_col else "") or csv_path.parent.name
            samples.append(Sample(str(p), _canonical(label), source, pid, f"group_{group}" if group else ""))
    return link_patients_and_groups(samples)


def link_patients_and_groups(samples: list[Sample]) -> list[Sample]:
    """Films that share a patient or a group stay together: the connected parts of the patient-group graph.
    A part whose films had more than one split key (a patient with only some films in a group, a group spanning
    patients) gets the smallest of them as its group; every other film keeps its key, so splits of data without
    such links are unchanged."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for s in samples:
        a, b = find("p:" + s.patient_id), find("g:" + (s.group or s.patient_id))
        if a != b:
            parent[max(a, b)] = min(a, b)
    keys: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        keys[find("p:" + s.patient_id)].add(s.split_key)
    return [s if len(keys[r := find("p:" + s.patient_id)]) == 1 else replace(s, group=min(keys[r])) for s in samples]


def _detect_source(root: Path, files: list[Path]) -> str:
    names = " ".join(p.name for p in files[:50]).upper()
    parts = {s.lower() for p in files[:50] for s in p.relative_to(root).parts[:-1]}
    if "CHNCXR_" in names:
        return "shenzhen"
    if "MCUCXR_" in names:
        return "montgomery"
    if "TUBERCULOSIS-" in names or "NORMAL-" in names:
        return "tb_cxr_database"
    if ("imgs" in parts or root.name.lower() == "imgs") and ({"health", "tb"} & parts):
        return "tbx11k"
    if {"normal", "pneumonia"} <= parts and ({"train", "test", "val"} & parts):
        return "kermany"
    return root.name


def _from_folders(root: Path) -> list[Sample]:
    files = _images_under(root)
    if not files:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, "
                        "in class sub-folders or listed in a manifest.csv)")
    samples, excluded = [], Counter()
    for p in files:
        rel = p.relative_to(root)
        m = re.match(r"^(CHNCXR|MCUCXR)_\d+_([01])$", p.stem, re.I)
        if m:  # Shenzhen / Montgomery: the label is in the name
            label, source = ("tuberculosis" if m[2] == "1" else "normal"), (
                "shenzhen" if m[1].upper() == "CHNCXR" else "montgomery")
        else:
            if len(rel.parts) < 2:
                raise DataError(f"{p}: image directly in {root}; put images in one folder per class "
                                "or list them in a manifest.csv")
            folder = rel.parts[-2]
            if folder.lower() in EXCLUDED_FOLDERS:
                excluded[folder] += 1
                continue
            label, source = _canonical(folder), None
        samples.append(Sample(str(p), label, source or "", patient_from_name(p.name)))
    for folder, n in excluded.items():
        log.info("left out %d images in folders named %r (not one of the classes)", n, folder)
    # One detection per data source: a multi-source tree records each top-level folder's own layout. Kermany
    # seen from its root (train/test/val folders) is one source, and class folders directly under the root are
    # one source (the root's), never one source per class: normal vs pneumonia must be comparable within one.
    known = _detect_source(root, [Path(s.path) for s in samples])
    by_top = defaultdict(list)
    for s in samples:
        parts = Path(s.path).relative_to(root).parts
        by_top["" if known == "kermany" or len(parts) <= 2 else parts[0]].append(s)
    out = []
    for top, group in by_top.items():
        top_dir = root / top
        src = _detect_source(top_dir if top and top_dir.is_dir() and len(by_top) > 1 else root,
                             [Path(s.path) for s in group])
        out.extend(replace(s, source=s.source or src) for s in group)
    return out


def scan(data: str | Path, classes: tuple[str, ...] = DEFAULT_CLASSES, allow_missing: bool = False) -> list[Sample]:
    """Find every image with its label, source and patient, and check the labels against ``classes``.

    ``allow_missing``: a class may have no images (a clinic's local set of normals and TB only), but labels
    outside ``classes`` are still refused and at least one image is needed."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DataError(f"{data}: give a folder of class sub-folders or a manifest .csv file")
        samples = _from_manifest(data)
    elif (data / "manifest.csv").is_file():
        samples = _from_manifest(data / "manifest.csv")
    else:
        samples = _from_folders(data)
    if allow_missing:
        check_labels(samples, classes, where=str(data), allow_missing=True)
    else:
        check_labels(samples, classes, where=str(data))
    return samples


def check_labels(samples: list[Sample], classes: tuple[str, ...], where: str = "data",
                 allow_missing: bool = False) -> None:
    """Clear errors, before any work: labels outside ``classes``, an empty class, fewer than 2 classes."""
    if len(classes) < 2:
        raise DataError(f"at least 2 classes are needed, got {list(classes)}")
    counts = Counter(s.label for s in samples)
    unknown = sorted(set(counts) - set(classes))
    if unknown:
        raise DataError(f"{where}: labels {unknown} are not among the configured classes {list(classes)}; "
                        "pass --classes to change them or remove those images")
    if allow_missing:
        if not samples:
            raise DataError(f"{where}: no labelled images found")
        return
    empty = [c for c in classes if counts[c] == 0]
    if empty:
        raise DataError(f"{where}: no images for class(es) {empty} (found {dict(counts)}); every configured "
                        "class needs images, or pass --classes without it")


# --- patient-level stratified split -------------------------------------------------------------------
def _patient_strata(samples: list[Sample]) -> tuple[dict[str, list[Sample]], dict[tuple, list[str]]]:
    """Images by patient (or group), and patient keys by stratum: (majority label, source), keys sorted."""
    by_key: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_key[s.split_key].append(s)
    strata: dict[tuple, list[str]] = defaultdict(list)
    for key, group in sorted(by_key.items()):
        label = Counter(s.label for s in group).most_common(1)[0][0]
        strata[(label, group[0].source)].append(key)
    return by_key, strata


def split_samples(samples: list[Sample], val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0) -> dict[str, list[Sample]]:
    """Split by patient (or group), stratified by (label, source) of each patient's majority label.

    No patient appears on two sides; images without a patient id are their own patient.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"bad split fractions val={val_frac} test={test_frac}")
    by_key, strata = _patient_strata(samples)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for stratum in sorted(strata):
        keys = strata[stratum]
        rng.shuffle(keys)
        n = len(keys)
        n_test = int(round(n * test_frac))
        n_val = int(round(n * val_frac))
        if n >= 3:  # give val and test at least one patient of every stratum that can spare one
            n_test, n_val = max(n_test, 1 if test_frac > 0 else 0), max(n_val, 1 if val_frac > 0 else 0)
        for i, key in enumerate(keys):
            side = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            parts[side].extend(by_key[key])
    return parts


def fold_split(samples: list[Sample], folds: int, fold: int, val_frac: float = 0.15,
               seed: int = 0) -> dict[str, list[Sample]]:
    """Patient-grouped, stratified k-fold cross-validation: fold ``fold`` of ``folds`` is the test side.

    Patients (or groups) are dealt round-robin into ``folds`` folds within each (label, source) stratum of the
    patient's majority label, after one shuffle by ``seed``; the deal does not depend on ``fold``, so the test
    sides of folds 0..k-1 partition the data and every film is tested exactly once. Of the other patients,
    ``val_frac`` of all (per stratum, chosen by ``seed`` and ``fold``) validate and the rest train.
    """
    if folds < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {folds}")
    if not 0 <= fold < folds:
        raise DataError(f"fold {fold} does not exist: folds are numbered 0 to {folds - 1}")
    if not 0 <= val_frac < 1 - 1 / folds:
        raise DataError(f"bad validation fraction {val_frac} for {folds} folds (the test fold is 1/{folds})")
    by_key, strata = _patient_strata(samples)
    deal = np.random.default_rng(seed)
    pick = np.random.default_rng([seed, fold])
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    offset = 0  # strata start where the last one stopped, so small strata do not all land in fold 0
    for stratum in sorted(strata):
        keys = list(strata[stratum])
        deal.shuffle(keys)
        test = [k for i, k in enumerate(keys) if (i + offset) % folds == fold]
        rest = [k for i, k in enumerate(keys) if (i + offset) % folds != fold]
        offset = (offset + len(keys)) % folds
        pick.shuffle(rest)
        n_val = int(round(len(keys) * val_frac))
        if len(rest) >= 2 and val_frac > 0:
            n_val = max(n_val, 1)
        for side, chosen in (("test", test), ("val", rest[:n_val]), ("train", rest[n_val:])):
            for key in chosen:
                parts[side].extend(by_key[key])
    return parts


SPLIT_COLUMNS = ("path", "label", "source", "patient_id", "group", "split")


def save_split(parts: dict[str, list[Sample]], path: str | Path) -> Path:
    """Write the split; image paths are stored relative to the split file's folder, so a run folder and
    its data can be moved together and later steps (convert, benchmark) run from any directory."""
    path = Path(path)
    base = path.resolve().parent
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SPLIT_COLUMNS)
        for side, samples in parts.items():
            for s in samples:
                rel = os.path.relpath(os.path.abspath(s.path), base)
                w.writerow([rel, s.label, s.source, s.patient_id, s.group, side])
    return path


def load_split(path: str | Path) -> dict[str, list[Sample]]:
    """Read a saved split; relative paths resolve against the split file's folder (older files: the
    current directory)."""
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    base = Path(path).resolve().parent
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            p = row["path"]
            if not os.path.isabs(p) and (os.path.exists(base / p) or not os.path.exists(p)):
                p = os.path.normpath(base / p)
            parts[row["split"]].append(Sample(p, row["label"], row["source"], row["patient_id"],
                                              row.get("group", "")))
    return parts


def split_summary(parts: dict[str, list[Sample]]) -> str:
    lines = []
    for side, samples in parts.items():
        c = Counter((s.label, s.source) for s in samples)
        pts = len({s.split_key for s in samples})
        detail = ", ".join(f"{lab}/{src}={n}" for (lab, src), n in sorted(c.items()))
        lines.append(f"{side:>5}: {len(samples)} images, {pts} patients ({detail})")
    return "\n".join(lines)


# --- decode once, cache the resized arrays --------------------------------------------------------------
@dataclass
class Arrays:
    """Decoded, resized images of one split side, with what failed to load."""

    images: np.ndarray  # (N, size, size) uint8
    labels: np.ndarray  # (N,) int
    samples: list[Sample]
    failed: list[tuple[str, str]]  # (path, reason)

    @property
    def sources(self) -> np.ndarray:
        return np.array([s.source for s in self.samples])


def content_digest(path: str) -> str | None:
    """SHA-1 of a file's bytes (None when unreadable): the same film under another name or folder."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def seen_by(run_dir: str | Path, samples: list[Sample]) -> list[Sample]:
    """Those of ``samples`` that the run at ``run_dir`` trained or calibrated on (its split's train and val
    films), by path or by content: a copy of the training data is not new data."""
    parts = load_split(Path(run_dir) / "split.csv")
    seen = [s for side in ("train", "val") for s in parts.get(side, [])]
    paths = {os.path.realpath(s.path) for s in seen}
    digests = {d for d in map(content_digest, (s.path for s in seen)) if d}
    return [s for s in samples if os.path.realpath(s.path) in paths or content_digest(s.path) in digests]


def _file_digest(path: str) -> str:
    st = Path(path).stat()
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def load_arrays(samples: list[Sample], classes: tuple[str, ...], cfg: PreprocessConfig,
                cache_dir: str | Path | None = None, workers: int = 2) -> Arrays:
    """Decode and resize every image once (threads; OpenCV releases the GIL), caching the result.

    Unreadable files are skipped, counted and listed in the log: never a crash mid-epoch.
    """
    from concurrent.futures import ThreadPoolExecutor

    key = hashlib.sha256(repr((cfg, classes)).encode())
    for s in samples:
        try:
            key.update(_file_digest(s.path).encode())
        except OSError:
            key.update(f"{s.path}|missing".encode())
    cache = Path(cache_dir) / f"arrays_{cfg.image_size}_{key.hexdigest()[:16]}.npz" if cache_dir else None
    if cache and cache.is_file():
        z = np.load(cache, allow_pickle=False)
        ok = z["ok"]
        failed = [(s.path, str(r)) for s, r, good in zip(samples, z["reasons"], ok) if not good]
        kept = [s for s, good in zip(samples, ok) if good]
        log.info("loaded %d cached arrays from %s", len(kept), cache)
        return Arrays(z["images"], z["labels"], kept, failed)

    def one(s: Sample):
        try:
            return load(s.path, cfg), ""
        except ImageError as exc:
            return None, str(exc)
        except OSError as exc:
            return None, f"{s.path}: {exc}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(one, samples))
    ok = np.array([img is not None for img, _ in results], bool)
    reasons = np.array([r for _, r in results])
    images = np.stack([img for img, _ in results if img is not None]) if ok.any() else \
        np.zeros((0, cfg.image_size, cfg.image_size), np.uint8)
    labels = np.array([classes.index(s.label) for s, good in zip(samples, ok) if good], np.int64)
    failed = [(s.path, r) for s, (img, r) in zip(samples, results) if img is None]
    if failed:
        log.warning("skipped %d unreadable file(s) of %d:", len(failed), len(samples))
        for _, reason in failed:
            log.warning("  %s", reason)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")  # two processes may fill one cache
        np.savez(tmp, images=images, labels=labels, ok=ok, reasons=reasons)
        tmp.replace(cache)
    return Arrays(images, labels, [s for s, good in zip(samples, ok) if good], failed)


def data_hash(samples: list[Sample]) -> str:
    """A short hash of the file contents and labels, recorded in the model metadata."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.path):
        h.update(f"{Path(s.path).name}|{s.label}|{s.source}|".encode())
        try:
            h.update(hashlib.sha256(Path(s.path).read_bytes()).digest())
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()[:16]
