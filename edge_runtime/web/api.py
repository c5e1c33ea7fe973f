"""The JSON API (documented in API.md): the same actions as the pages, for other clinic software."""
from __future__ import annotations

import logging
import math
from datetime import date

from flask import Blueprint, current_app, jsonify, request

from edge_runtime.web.http import MAX_OFFSET, BadNumber, json_error, query_int
from edge_runtime.web.imaging import UploadError, read_upload
from edge_runtime.web.screening import clean_reference, outcome_choices, record_json, screen_upload

bp = Blueprint("api", __name__)
log = logging.getLogger("edge_runtime.web")


def web():
    return current_app.extensions["cxr"]


def _finite(obj):
    """JSON has no NaN/Infinity: metrics such as an AUC with one class present become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _get(sid: str) -> dict | None:
    return web().store.get(sid) if sid.isalnum() and len(sid) <= 64 else None


@bp.get("/healthz")
def healthz():
    w = web()
    try:
        db_ok = w.store.ping()
    except Exception as exc:  # report, do not crash
        log.error("health check: database error: %s", exc)
        db_ok = False
    meta = w.meta
    body = {"status": "ok" if db_ok else "error", "database": "ok" if db_ok else "error",
            "model": {"name": meta.model_name, "version": meta.model_version,
                      "backend": getattr(w.classifier, "backend", ""), "format": getattr(w.classifier, "format", None),
                      "synthetic": bool(meta.synthetic), "validated": bool(w.status.get("validated", False))},
            "warnings": w.warnings_text()}
    return jsonify(body), 200 if db_ok else 503


@bp.post("/api/v1/screenings")
def create_screening():
    files = [f for f in request.files.getlist("file") if f and f.filename is not None]
    if len(files) != 1:
        return json_error(400, "one_file", f"send exactly one image in the multipart field 'file' "
                                           f"(got {len(files)})")
    f = files[0]
    try:
        reference = clean_reference(request.form.get("reference"))
        data = read_upload(f, int(current_app.config["MAX_FILE_MB"] * 1e6))
        rec = screen_upload(web(), current_app.config, data, f.filename or "", reference)
    except UploadError as exc:
        return json_error(exc.status, exc.code, exc.message)
    body = record_json(rec, web().warnings_text())
    resp = jsonify(body)
    resp.status_code = 201
    resp.headers["Location"] = body["links"]["self"]
    return resp


@bp.get("/api/v1/screenings/<sid>")
def get_screening(sid):
    rec = _get(sid)
    if rec is None:
        return json_error(404, "not_found", f"no screening with id {sid!r}")
    return jsonify(record_json(rec, web().warnings_text()))


@bp.get("/api/v1/screenings")
def list_screenings():
    f = {}
    for key in ("date_from", "date_to"):
        v = request.args.get(key, "")
        if v:
            try:
                f[key] = date.fromisoformat(v).isoformat()
            except ValueError:
                return json_error(400, "bad_date", f"{key} must be a date YYYY-MM-DD, not {v!r}")
    if request.args.get("reference"):
        f["reference"] = request.args["reference"][:64]
    if request.args.get("decision"):
        f["decision"] = request.args["decision"][:32]
    try:
        limit = query_int("limit", 50, 1, 500)
        offset = query_int("offset", 0, 0, MAX_OFFSET)
    except BadNumber as exc:
        return json_error(400, "bad_number", f"{exc} (limit: 1-500, offset: 0-{MAX_OFFSET})")
    rows, total = web().store.search(limit=limit, offset=offset, **f)
    warnings = web().warnings_text()
    return jsonify({"total": total, "limit": limit, "offset": offset,
                    "screenings": [record_json(r, warnings) for r in rows]})


@bp.post("/api/v1/screenings/<sid>/outcome")
def set_outcome(sid):
    rec = _get(sid)
    if rec is None:
        return json_error(404, "not_found", f"no screening with id {sid!r}")
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "outcome" not in body:
        return json_error(400, "bad_json", 'send JSON {"outcome": "<label>|other|null", "note": "..."}')
    value, note = body.get("outcome"), body.get("note", "")
    choices = outcome_choices(rec["labels"])
    if value is not None and value not in choices:
        return json_error(400, "bad_outcome", f"outcome must be one of {choices} or null, not {value!r}")
    if not isinstance(note, str):
        return json_error(400, "bad_note", "note must be a string")
    web().store.set_outcome(sid, value, note.strip()[:500] if value else "")
    return jsonify(record_json(web().store.get(sid), web().warnings_text()))


@bp.get("/api/v1/model")
def model():
    w = web()
    meta = w.meta
    return jsonify({"name": meta.model_name, "version": meta.model_version, "labels": list(meta.labels),
                    "image_size": meta.image_size, "backend": getattr(w.classifier, "backend", ""),
                    "synthetic": bool(meta.synthetic), "thresholds": w.thresholds,
                    "site_profile": w.site_profile or None, "metrics": _finite(dict(meta.metrics or {})), "bundle_status": w.status,
                    "warnings": w.warnings_text()})
