"""One upload -> one stored screening. Shared by the page and the JSON API, so both apply the same checks.

Nothing is written unless the whole screening succeeded: a refused or failed upload leaves the history as it was.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
import unicodedata

import numpy as np
from flask import url_for

from edge_runtime.preprocess import ImageError
from edge_runtime.heatmap import overlay
from edge_runtime.web.imaging import UploadError, bad_image, check_upload, decode_name, display_image, encode_png

MAX_REFERENCE = 64
OUTCOME_OTHER = "other"


def _printable(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()


def clean_reference(text: str | None) -> str:
    ref = _printable(text or "")
    if len(ref) > MAX_REFERENCE:
        raise UploadError("bad_reference", f"the study/patient reference is longer than {MAX_REFERENCE} characters",
                          max=MAX_REFERENCE)
    return ref


def safe_name(name: str | None) -> str:
    """The uploaded name, for display only (files are stored under generated names)."""
    base = os.path.basename((name or "").replace("\\", "/"))
    return _printable(base)[:120] or "upload"


def screen_upload(web, config: dict, data: bytes, name: str, reference: str) -> dict:
    """Check, classify, render the pictures and commit; returns the stored record. Raises UploadError."""
    t0 = time.perf_counter()
    name = safe_name(name)
    kind, width, height = check_upload(data, name, int(config["MAX_FILE_MB"] * 1e6), int(config["MAX_PIXELS"]))
    as_decoded = decode_name(name, kind)
    try:
        with web.infer_lock:  # one inference at a time per classifier, whatever the classifier does itself
            s = web.classifier.classify(data, name=as_decoded)
    except ImageError as exc:
        text = str(exc).replace(as_decoded, name, 1)
        raise bad_image(name, text[len(name) + 2:] if text.startswith(f"{name}: ") else text) from exc
    image = np.asarray(s.image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise bad_image(name, f"decoded to an unexpected array {image.shape} {image.dtype}")
    disp = display_image(image)
    files = {"original": data, "display": encode_png(disp)}
    has_heatmap = bool(s.in_scope and s.heatmap is not None)
    if has_heatmap:
        # blended at full weight: the page lays it over the plain image with an opacity the operator sets
        rgb = overlay(disp, np.clip(np.nan_to_num(np.asarray(s.heatmap, np.float32)), 0, 1), alpha=1.0)
        files["overlay"] = encode_png(np.ascontiguousarray(rgb[..., ::-1]))  # cv2 writes BGR
    meta = web.meta
    timings = {k: round(float(v), 1) for k, v in dict(s.timings_ms or {}).items()}
    timings["server"] = round((time.perf_counter() - t0) * 1000, 1)
    record = {
        "reference": reference,
        "original_name": name,
        "image_kind": kind,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "sha256": hashlib.sha256(data).hexdigest(),
        "labels": list(meta.labels),
        "probs": {k: float(v) for k, v in s.probs.items()},
        "label": s.label,
        "decision": s.decision,
        "reason": s.reason or "",
        "reason_code": str(getattr(s, "reason_code", "") or ""),
        "reason_args": _plain(getattr(s, "reason_args", None) or {}),
        "heatmap_grid": "x".join(map(str, getattr(s, "heatmap_grid", None) or ())),
        "in_scope": bool(s.in_scope),
        "scope_distance": _finite_or_none(getattr(s, "scope_distance", None)),
        "has_heatmap": has_heatmap,
        "model_name": meta.model_name,
        "model_version": meta.model_version,
        "backend": str(getattr(web.classifier, "backend", "") or ""),
        "synthetic": bool(getattr(meta, "synthetic", False)),
        "timings": timings,
        "total_ms": timings["server"],
    }
    return web.store.add(record, files)


def _plain(args: dict) -> dict:
    """A reason's numbers as JSON-safe values (numpy scalars to Python)."""
    out = {}
    for k, v in dict(args).items():
        out[str(k)] = v.item() if isinstance(v, np.generic) else (v if isinstance(v, (int, float, str)) else str(v))
    return out


def outcome_choices(labels) -> list[str]:
    return [*labels, OUTCOME_OTHER]


def record_json(rec: dict, warnings: list[str]) -> dict:
    """The API's view of a screening. Out of scope: no probabilities and no heatmap (no diagnosis is given)."""
    sid = rec["id"]
    return {
        "id": sid,
        "created": rec["created"],
        "reference": rec["reference"],
        "file_name": rec["original_name"],
        "decision": rec["decision"],
        "reason": rec["reason"],
        "reason_code": rec.get("reason_code") or None,
        "reason_args": rec.get("reason_args") or {},
        "in_scope": rec["in_scope"],
        "label": rec["label"] if rec["in_scope"] else None,
        "probabilities": rec["probs"] if rec["in_scope"] else None,
        "model": {"name": rec["model_name"], "version": rec["model_version"], "backend": rec["backend"],
                  "synthetic": rec["synthetic"]},
        "image": {"kind": rec["image_kind"], "width": rec["width"], "height": rec["height"],
                  "sha256": rec["sha256"]},
        "timings_ms": rec["timings"],
        "outcome": ({"value": rec["outcome"], "note": rec["outcome_note"], "at": rec["outcome_at"]}
                    if rec["outcome"] else None),
        "warnings": warnings,
        "links": {
            "self": url_for("api.get_screening", sid=sid),
            "page": url_for("views.detail", sid=sid),
            "image": url_for("views.image", sid=sid, which="image"),
            "heatmap": url_for("views.image", sid=sid, which="heatmap") if rec["has_heatmap"] else None,
        },
    }


def _finite_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
