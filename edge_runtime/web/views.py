"""The pages a technician uses: upload, result, history (search, CSV), follow-up outcome, login."""
from __future__ import annotations

import csv
import io
import logging
from datetime import date
from urllib.parse import unquote, urlsplit

from flask import (Blueprint, Response, abort, current_app, g, redirect, render_template, request, send_file,
                   session, url_for)

from edge_runtime.operating_point import OUT_OF_SCOPE, REFER
from edge_runtime.web import auth as A
from edge_runtime.web.http import MAX_OFFSET, BadNumber, query_int
from edge_runtime.web.i18n import reason_text, translate
from edge_runtime.web.imaging import UploadError, read_upload
from edge_runtime.web.screening import clean_reference, outcome_choices, screen_upload

bp = Blueprint("views", __name__)
log = logging.getLogger("edge_runtime.web")
IMAGES = {"image": "display", "heatmap": "overlay"}


def web():
    return current_app.extensions["cxr"]


def _t(key, **kw):
    return translate(g.lang, key, **kw)


def _said(exc: UploadError) -> str:
    """A refused upload in the page's language (``upload_error.<code>``); its English message when the catalogue
    has no sentence for the code or the error lacks a field the sentence needs."""
    key = f"upload_error.{exc.code}"
    text = _t(key, **exc.fields)
    return exc.message if text == key or "{" in text else text


def _record_or_404(sid: str) -> dict:
    rec = web().store.get(sid) if sid.isalnum() and len(sid) <= 64 else None
    if rec is None:
        abort(404, description=_t("error.not_found"))
    return rec


@bp.get("/")
def index():
    recent, _ = web().store.search(limit=5)
    return render_template("index.html", recent=recent, errors=[], reference="")


@bp.post("/screenings")
def upload():
    cfg = current_app.config
    files = [f for f in request.files.getlist("files") if f and (f.filename or f.content_length)]
    errors, done = [], []
    try:
        reference = clean_reference(request.form.get("reference"))
    except UploadError as exc:
        errors.append((exc.status, _said(exc)))
        reference = ""
    if not errors and not files:
        errors.append((400, _t("error.no_file")))
    if not errors and len(files) > cfg["MAX_FILES"]:
        errors.append((400, _t("error.too_many_files", n=len(files), max=cfg["MAX_FILES"])))
    if not errors:
        for f in files:
            try:
                data = read_upload(f, int(cfg["MAX_FILE_MB"] * 1e6))
                done.append(screen_upload(web(), cfg, data, f.filename or "", reference))
            except UploadError as exc:
                errors.append((exc.status, _said(exc), lambda exc=exc: _said(exc)))
            except Exception:  # one bad file must not lose the others, nor stop the server
                log.exception("screening %r failed", f.filename)
                name = f.filename or "upload"
                errors.append((500, _t("error.internal_file", name=name),
                               lambda name=name: _t("error.internal_file", name=name)))
    if len(done) == 1 and not errors:
        return redirect(url_for("views.detail", sid=done[0]["id"], saved=1), code=303)
    if not done:
        status = errors[0][0] if errors else 400
        recent, _ = web().store.search(limit=5)
        return render_template("index.html", recent=recent, errors=[m for _, m, *_ in errors],
                               reference=reference), status
    # several films, or some refused: their page is a GET (a reload or a language switch sends nothing again)
    token = web().keep_batch([r["id"] for r in done], [say for *_, say in errors])
    return redirect(url_for("views.batch", token=token), code=303)


@bp.get("/batches/<token>")
def batch(token):
    kept = web().batches.get(token)
    if kept is None:
        abort(404, description=_t("error.batch_gone"))
    ids, errors = kept
    done = [rec for rec in map(web().store.get, ids) if rec is not None]
    return render_template("batch.html", done=done, errors=[say() for say in errors])


def _detail_page(rec: dict, saved: bool = False, outcome_said: str = "", errors=()) -> str:
    """A screening's page: its result, its follow-up form and the other screenings of the same file."""
    return render_template("detail.html", r=rec, saved=saved, outcomes=outcome_choices(rec["labels"]),
                           outcome_said=outcome_said, errors=list(errors),
                           same_file=web().store.same_file(rec["sha256"], rec["id"]))


@bp.get("/screenings/<sid>")
def detail(sid):
    said = {"1": "followup.saved", "cleared": "followup.cleared"}.get(request.args.get("outcome_saved", ""))
    return _detail_page(_record_or_404(sid), saved=request.args.get("saved") == "1",
                        outcome_said=_t(said) if said else "")


@bp.get("/screenings/<sid>/<which>.png")
def image(sid, which):
    rec = _record_or_404(sid)
    if which not in IMAGES or (which == "heatmap" and not rec["has_heatmap"]):
        abort(404, description=_t("error.not_found"))
    return send_file(web().store.path(sid, IMAGES[which]), mimetype="image/png", max_age=0)


@bp.get("/screenings/<sid>/original")
def original(sid):
    rec = _record_or_404(sid)
    path = web().store.path(sid, "original", rec["image_kind"])
    mime = {"png": "image/png", "jpeg": "image/jpeg", "dicom": "application/dicom"}[rec["image_kind"]]
    return send_file(path, mimetype=mime, as_attachment=True, download_name=path.name, max_age=0)


@bp.post("/screenings/<sid>/outcome")
def outcome(sid):
    rec = _record_or_404(sid)
    value = request.form.get("outcome", "")
    note = request.form.get("note", "").strip()[:500]
    clearing = bool(rec.get("outcome")) and note == (rec.get("outcome_note") or "").strip()
    if value == "" and note and not clearing:  # a new note needs an outcome: say so, keep what was typed
        rec["outcome_note"] = note
        return _detail_page(rec, errors=[_t("error.note_without_outcome")]), 400
    if value == "":  # cleared, note and all (the audit trail keeps what both were); a browser sends the saved note back
        web().store.set_outcome(sid, None, "")
        return redirect(url_for("views.detail", sid=sid, outcome_saved="cleared", _anchor="followup"), code=303)
    if value not in outcome_choices(rec["labels"]):
        abort(400, description=_t("error.bad_outcome"))
    web().store.set_outcome(sid, value, note)
    return redirect(url_for("views.detail", sid=sid, outcome_saved=1, _anchor="followup"), code=303)


def _filters() -> tuple[dict, list[str]]:
    """Search filters from the query string; a malformed date is ignored with a message."""
    f, problems = {}, []
    for key in ("date_from", "date_to"):
        v = request.args.get(key, "").strip()
        if v:
            try:
                f[key] = date.fromisoformat(v).isoformat()
            except ValueError:
                problems.append(_t("error.bad_date", value=v))
    ref = request.args.get("reference", "").strip()[:64]
    if ref:
        f["reference"] = ref
    decision = request.args.get("decision", "").strip()
    if decision:
        f["decision"] = decision[:32]
    return f, problems


@bp.get("/history")
def history():
    f, problems = _filters()
    size = current_app.config["PAGE_SIZE"]
    try:
        page = query_int("page", 1, 1, MAX_OFFSET // size + 1)
    except BadNumber:
        page = 1  # a hand-edited link: show the first page rather than an error
    rows, total = web().store.search(limit=size, offset=(page - 1) * size, **f)
    pages = max(1, -(-total // size))
    if page > pages:  # past the end: show the last page
        page = pages
        rows, _ = web().store.search(limit=size, offset=(page - 1) * size, **f)
    return render_template("history.html", rows=rows, total=total, page=page, pages=pages, f=f,
                           problems=problems, decisions=[*web().meta.labels, REFER, OUT_OF_SCOPE])


def _csv_cell(v) -> str:
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s  # no formulas in a spreadsheet


@bp.get("/history.csv")
def history_csv():
    f, _ = _filters()
    labels = list(web().meta.labels)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "created", "reference", "file_name", "decision", "label", "reason", "reason_code",
                *[f"p_{k}" for k in labels], "in_scope", "model_name", "model_version", "backend", "synthetic",
                "outcome", "outcome_note", "outcome_at", "total_ms"])
    for r in web().store.iter_all(**f):
        # out of scope: no diagnosis, so no class and no probabilities (as on the page and in the API)
        shown = r["probs"] if r["in_scope"] else {}
        probs = [f"{shown[k]:.4f}" if k in shown else "" for k in labels]
        w.writerow([_csv_cell(v) for v in (
            r["id"], r["created"], r["reference"], r["original_name"], r["decision"], r["label"] if r["in_scope"] else "",
            reason_text(g.lang, r), r.get("reason_code", ""),
            *probs, int(r["in_scope"]), r["model_name"], r["model_version"], r["backend"], int(r["synthetic"]),
            r["outcome"], r["outcome_note"], r["outcome_at"], r["total_ms"])])
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=screenings-{date.today()}.csv"})


def _local_path(url: str) -> bool:
    """Only a path on this server may follow a login (no open redirect to another site).

    Browsers drop tabs and newlines inside a URL and read a backslash as a slash, so ``/<TAB>/evil.example``
    becomes ``//evil.example`` (another site). Accept only printable ASCII without backslashes, starting with a
    single ``/``, with no scheme or host, neither as sent nor once percent-decoded."""
    if not (isinstance(url, str) and url.startswith("/") and len(url) <= 2000):
        return False
    for form in (url, unquote(url)):
        if any(not ("!" <= ch <= "~") for ch in form) or "\\" in form or form.startswith("//"):
            return False
        parts = urlsplit(form)
        if parts.scheme or parts.netloc:
            return False
    return True


@bp.route("/login", methods=["GET", "POST"])
def login():
    w = web()
    if w.auth is None:
        return redirect(url_for("views.index"))
    error = ""
    if request.method == "POST":
        who = request.remote_addr or "?"
        if w.throttle.blocked(who):
            error = _t("login.throttled")
            return render_template("login.html", error=error), 429
        if A.check_password(w.auth, request.form.get("password", "")):
            w.throttle.reset(who)
            session.clear()  # a fresh session (new CSRF token) after login
            session.permanent = True
            session["auth"] = w.auth["epoch"]
            nxt = request.args.get("next", "")
            return redirect(nxt if _local_path(nxt) else url_for("views.index"),
                            code=303)
        w.throttle.fail(who)
        error = _t("login.bad_password")
        return render_template("login.html", error=error), 401
    return render_template("login.html", error=error)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("views.login") if web().auth else url_for("views.index"), code=303)
