"""Small HTTP helpers shared by the page and the API (no app state): integer query parameters, JSON errors."""
from __future__ import annotations

import re

from flask import jsonify, request

MAX_OFFSET = 10**9  # rows skipped by a listing; far past any history, well inside SQLite's 64-bit integers
_INT = re.compile(r"[+-]?[0-9]{1,400}")  # ASCII digits only (int() would also take "1_0", " 1", "\uff11")


class BadNumber(ValueError):
    """A query parameter that should be an integer is not one."""


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """The integer query parameter ``name`` clamped to [lo, hi]; ``default`` when absent or empty.

    Raises BadNumber for anything but optionally signed ASCII digits. Clamping keeps a huge value (30 nines)
    from overflowing SQLite's integers."""
    raw = request.args.get(name, "")
    if raw == "":
        return default
    if not _INT.fullmatch(raw):
        raise BadNumber(f"{name} must be an integer, not {raw[:40]!r}")
    return min(max(int(raw), lo), hi)


def json_error(status: int, code: str, message: str):
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="cxr-edge"'
    return resp
