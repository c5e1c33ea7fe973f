"""The model bundle: the folder a technician copies to a device as it is.

    bundle/
      model_tflite_int8.tflite   (one or more artifacts, named model_<format>.<suffix>)
      metadata.json              (edge_runtime.metadata.ModelMetadata: labels, input size, thresholds, ...)
      bundle.json                (which formats it holds, their parity check against the float model, status)
      MODEL_CARD.md              (intended use, data, metrics per source, limitations)
      SHA256SUMS                 (sha256sum format; verified before anything is served: every file
                                  in the folder must be listed and match, see verify_sums)
      site.json                  (optional: a clinic's own thresholds, edge_runtime.site; not in SHA256SUMS,
                                  it carries its own checksum and the identity of the bundle it was made for)

The runtime refuses a bundle whose checksums or metadata do not match, with a message that names the file.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from edge_runtime import formats as F
from edge_runtime.metadata import ModelMetadata

SUMS = "SHA256SUMS"
SITE_FILE = "site.json"  # edge_runtime.site: added at the clinic after signing, verified on its own


class BundleError(RuntimeError):
    """A bundle or model file that cannot be trusted or used; the message names the file and the reason."""


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_sums(folder: str | Path) -> Path:
    """Write SHA256SUMS for every file in the folder (recursively), except the sums file itself."""
    folder = Path(folder)
    lines = [f"{sha256(p)}  {p.relative_to(folder).as_posix()}\n"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != SUMS]
    (folder / SUMS).write_text("".join(lines))
    return folder / SUMS


_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")  # sha256sum format: digest, "  " or " *" (binary), name


def _bad_name(name: str) -> str | None:
    """Why a listed name cannot be a file of this bundle (None when it is a plain relative POSIX path)."""
    if name.startswith("/") or PureWindowsPath(name).is_absolute():
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "path leaves the bundle"
    if PurePosixPath(name).as_posix() != name or "\\" in name:
        return "not a plain relative path"
    return None


def verify_sums(folder: str | Path) -> list[str]:
    """Check SHA256SUMS and the folder against each other; return the listed names.

    Refused, each named: a missing, unreadable or empty list, a malformed line, an absolute or ``..`` path or
    one not written plainly, a name listed twice, a listed file that is missing or changed, and any file in
    the folder that the list does not name (an unlisted file could be served unverified)."""
    folder = Path(folder)
    sums = folder / SUMS
    if not sums.is_file():
        raise BundleError(f"{folder}: no {SUMS} file; this folder is not a verified bundle "
                          f"(make one with `python -m convert RUN --out BUNDLE`)")
    try:
        text = sums.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{folder}: {SUMS} cannot be read ({exc})") from exc
    problems, names = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUMS_LINE.fullmatch(line)
        if not m:
            problems.append(f"{SUMS} line {n} is malformed (expected '<64 hex digits>  <file name>')")
            continue
        digest, name = m.group(1).lower(), m.group(2)
        if name in names:
            problems.append(f"{name}: listed twice in {SUMS}")
            continue
        names.append(name)
        path = folder / name
        if why := _bad_name(name):
            problems.append(f"{name}: {why}")
        elif not path.is_file():
            problems.append(f"{name}: listed in {SUMS} but missing")
        elif sha256(path) != digest:
            problems.append(f"{name}: checksum mismatch (file changed or corrupt)")
    if not names and not problems:
        problems.append(f"{SUMS} lists no files")
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() and p.name != SUMS}
    unlisted = sorted(present - set(names) - {SITE_FILE})
    if unlisted:
        problems.append(f"not listed in {SUMS}: {', '.join(unlisted)} (remove it or sign the bundle again)")
    if problems:
        raise BundleError(f"{folder}: bundle verification failed: " + "; ".join(problems))
    return names


def model_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if F.backend_of(p))


def read_status(folder: str | Path) -> dict:
    path = Path(folder) / "bundle.json"
    if not path.is_file():
        return {"validated": False, "formats": {}, "failed_formats": []}
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Artifact:
    """One model file chosen from a bundle (or given on its own), with what the runtime needs around it."""

    path: Path
    key: str | None  # format key in edge_runtime.formats (None: a bare file the table does not name)
    backend: str
    metadata: ModelMetadata  # the bundle's; ``metadata.for_format(key)`` is this artifact's own operating point
    status: dict = field(default_factory=dict)  # bundle.json
    model_card: str = ""

    @property
    def parent(self) -> str | None:
        """The Keras model the artifact was made from ("qat"/"float"), as convert recorded it."""
        recorded = self.status.get("formats", {}).get(self.key or "", {}).get("parent")
        return recorded or (F.FORMATS[self.key].parent if self.key in F.FORMATS else None)


def artifacts(folder: Path, status: dict) -> list[tuple[str | None, Path]]:
    """(format key, file) of every model file in a bundle folder: bundle.json names each artifact's key and
    file; a folder without one (older or hand-made) is read by the table's file names."""
    listed = {k: folder / r["file"] for k, r in status.get("formats", {}).items()
              if isinstance(r, dict) and r.get("file") and F.backend_of(r["file"]) and (folder / r["file"]).is_file()}
    named = {str(p): (F.key_of(p), p) for p in model_files(folder)}
    for key, p in listed.items():
        named[str(p)] = (key, p)
    return sorted(named.values(), key=lambda kp: kp[1].name)


def resolve(path: str | Path, backend: str | None = None, verify: bool = True, fmt: str | None = None,
            serving: bool = False) -> Artifact:
    """Find the model file, metadata and status for a bundle folder or a single model file.

    In a folder: the preferred backend (``formats.BACKEND_ORDER``) unless one is asked for; within it a format
    that passed its parity check, then the one ``bundle.json`` names as ``preferred`` for that backend (convert's
    choice among its INT8 files: the QAT one when it passed, ``convert.pipeline.choose_int8``), then an INT8 one.
    ``fmt`` (a format key, e.g. the one the kit's self-test timed fastest on this device) picks that artifact
    instead; one that failed its parity check at conversion is refused. A bare model file needs ``metadata.json``
    beside it (for ONNX/OpenVINO the embedded copy is used when there is none); a file inside a signed bundle
    folder (SHA256SUMS beside it) is verified with its folder, as the folder would be, and with ``serving`` (the
    device's classify and serve) one that failed its parity check at conversion is refused as ``fmt`` would be
    (the benchmarks read such files on purpose, to measure them).
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle or model file")
    if path.is_dir():
        listed = verify_sums(path) if verify else None
        status = read_status(path)
        found = [(k, f) for k, f in artifacts(path, status) if listed is None or f.name in listed]  # verified only
        if not found:
            raise BundleError(f"{path}: no model file ({', '.join(sorted(F.SUFFIX_BACKEND))}) in the bundle")
        failed = set(status.get("failed_formats", []))
        preferred = set((status.get("preferred") or {}).values())
        by_backend: dict[str, list] = {}
        for key, f in found:
            spec = F.FORMATS.get(key or "")
            by_backend.setdefault(F.backend_of(f), []).append(
                (key in failed, key not in preferred, not (spec and spec.int8), f.name, key, f))
        if backend and backend not in by_backend:
            raise BundleError(f"{path}: no {backend} model in the bundle (it holds {[f.name for _, f in found]})")
        if fmt:
            key, model = _pick_format(path, found, fmt, backend, failed)
        else:
            chosen = backend or next(b for b in F.BACKEND_ORDER if b in by_backend)
            *_, key, model = sorted(by_backend[chosen])[0]
        meta_path, card = path / "metadata.json", path / "MODEL_CARD.md"
    else:
        if not F.backend_of(path):
            raise BundleError(f"{path}: unknown model type {path.suffix!r}; expected {sorted(F.SUFFIX_BACKEND)}")
        model, status, key = path, read_status(path.parent), F.key_of(path)
        if fmt and key != fmt:
            raise BundleError(f"{path}: this file is {key or 'not a named artifact'}, not {fmt}")
        if verify and (path.parent / SUMS).is_file():
            _verify_listed(path.parent, [path.name, "metadata.json", "bundle.json"])
        if serving and key and key in set(status.get("failed_formats", [])):
            raise BundleError(f"{path}: {key} failed its parity check against the float model at conversion "
                              f"(bundle.json failed_formats); it is not served")
        meta_path, card = path.with_name("metadata.json"), path.with_name("MODEL_CARD.md")
    if meta_path.is_file():
        try:
            meta = ModelMetadata.load(meta_path)
        except (ValueError, TypeError) as exc:
            raise BundleError(f"{meta_path}: invalid metadata ({exc})") from exc
    else:
        meta = embedded_metadata(model)
        if meta is None:
            raise BundleError(f"{model}: no metadata.json beside it and none embedded in the model")
    return Artifact(model, key, F.backend_of(model), meta, status, card.read_text() if card.is_file() else "")


def _verify_listed(folder: Path, names: list[str]) -> None:
    """A model file given alone from a signed folder: it, and the metadata and status read with it, must be
    listed in the folder's SHA256SUMS with their digests (the folder's other files are not read, so not checked:
    a benchmark scores each file of a bundle on its own)."""
    try:
        text = (folder / SUMS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{folder}: {SUMS} cannot be read ({exc})") from exc
    listed = {}
    for line in text.splitlines():
        if m := _SUMS_LINE.fullmatch(line):
            listed.setdefault(m.group(2), m.group(1).lower())
    model = names[0]
    if model not in listed:
        raise BundleError(f"{folder / model}: not listed in {folder / SUMS}; it is not part of the signed bundle")
    if (folder / "metadata.json").is_file() and "metadata.json" not in listed:
        raise BundleError(f"{folder / 'metadata.json'}: not listed in {folder / SUMS}; the metadata read with "
                          f"{model} is not part of the signed bundle")
    for name in names:
        if (name in listed or name == model) and (folder / name).is_file() and sha256(folder / name) != listed[name]:
            raise BundleError(f"{folder / model} is part of a signed bundle that fails its check: {name}: checksum "
                              f"mismatch (file changed or corrupt)")


def _pick_format(folder: Path, found: list, fmt: str, backend: str | None, failed: set) -> tuple[str, Path]:
    """The artifact of format ``fmt`` in a bundle (``resolve(fmt=...)``), or a BundleError that says why not."""
    hits = [(k, f) for k, f in found if k == fmt]
    if not hits:
        raise BundleError(f"{folder}: no {fmt} artifact in the bundle (it holds "
                          f"{', '.join(k or f.name for k, f in found)})")
    key, model = hits[0]
    if backend and F.backend_of(model) != backend:
        raise BundleError(f"{folder}: {fmt} runs on {F.backend_of(model)}, not on the backend asked for ({backend})")
    if key in failed:
        raise BundleError(f"{folder}: {fmt} failed its parity check against the float model at conversion "
                          f"(bundle.json failed_formats); it is not served")
    return key, model


def embedded_metadata(model: Path) -> ModelMetadata | None:
    """The metadata copy written into ONNX ``metadata_props`` or OpenVINO ``rt_info`` (None if absent)."""
    text = None
    if model.suffix == ".onnx":
        import onnxruntime as ort

        props = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        text = props.get("cxr_metadata")
    elif model.suffix == ".xml":
        import openvino as ov

        m = ov.Core().read_model(str(model))
        if m.has_rt_info(["cxr", "metadata"]):
            text = m.get_rt_info(["cxr", "metadata"]).astype(str)
    return ModelMetadata.from_dict(json.loads(text)) if text else None
