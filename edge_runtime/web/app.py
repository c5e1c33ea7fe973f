"""The Flask application factory: configuration, security hooks and error pages.

``create_app(classifier, data_dir, config=None)`` takes any object with the Classifier interface
(``metadata``, ``backend``, ``model_card``, ``bundle_status``, ``classify(source, name=)``).
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from flask import Flask, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from edge_runtime.web import auth as A
from edge_runtime.web.http import json_error
from edge_runtime.web import i18n
from edge_runtime.web.store import Store, private_dir

log = logging.getLogger("edge_runtime.web")

DEFAULTS = {
    "HOST": "127.0.0.1",           # the address served; any non-loopback address requires a password
    "MAX_FILE_MB": 40,             # one uploaded file
    "MAX_REQUEST_MB": 200,         # one request (several files)
    "MAX_FILES": 20,               # files in one upload
    "MAX_PIXELS": 50_000_000,      # width x height (x frames) of one image, read from the header
    "DEFAULT_LANG": "en",
    "PAGE_SIZE": 50,
    "SESSION_HOURS": 12,
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PUBLIC_ENDPOINTS = {"views.login", "static"}
SMALL_BODY = 100_000  # login, logout, outcome: a form of a few fields
FORM_SLACK = 64_000  # multipart framing and the reference field around one file
BATCHES_KEPT = 200


@dataclass
class Web:
    """What the views share: the classifier (one inference at a time), the store and the auth state."""

    classifier: object
    store: Store
    data_dir: Path
    infer_lock: threading.Lock = field(default_factory=threading.Lock)
    throttle: A.Throttle = field(default_factory=A.Throttle)
    auth_required: bool = False  # set for a server started off loopback; once True it stays True
    # uploads of several files, each shown at GET /batches/<token> after a redirect (a reload or a language
    # switch must not send the films again); the newest BATCHES_KEPT, in memory: a restart forgets the page,
    # never the screenings (the history holds them)
    batches: "OrderedDict[str, tuple]" = field(default_factory=OrderedDict)
    batch_lock: threading.Lock = field(default_factory=threading.Lock)
    _auth: tuple = (None, None, "")  # (mtime, auth dict, problem reading it)

    def keep_batch(self, ids: list[str], errors: list) -> str:
        """Remember one upload's screenings and refusals (each a callable giving its sentence in the page's
        language when shown); returns the token of its page."""
        token = secrets.token_urlsafe(12)
        with self.batch_lock:
            self.batches[token] = (list(ids), list(errors))
            while len(self.batches) > BATCHES_KEPT:
                self.batches.popitem(last=False)
        return token

    def _read_auth(self) -> tuple[dict | None, str]:
        """The operator password/token, re-read when set-password changes the file (no restart needed)."""
        path = self.data_dir / A.AUTH_FILE
        try:
            mtime = path.stat().st_mtime_ns if path.is_file() else None
        except OSError:
            mtime = None
        if mtime != self._auth[0]:
            try:
                auth, problem = (A.load_auth(self.data_dir) if mtime else None), ""
            except Exception as exc:  # unreadable or corrupt: fail closed, say why
                auth, problem = None, f"{path} cannot be read ({exc})"
            self._auth = (mtime, auth, problem)
        if self._auth[1] is not None:
            self.auth_required = True  # a password once seen is never dropped by this process
        return self._auth[1], self._auth[2]

    @property
    def auth(self) -> dict | None:
        return self._read_auth()[0]

    def auth_problem(self) -> str:
        """Why no request can be served: a password is required but its file is missing or unreadable."""
        auth, problem = self._read_auth()
        if auth is not None or not (self.auth_required or problem):
            return ""
        return (f"{problem or f'{self.data_dir / A.AUTH_FILE} is missing'}; this server requires a password, so "
                f"it refuses every request until the file is back (run `python -m edge_runtime set-password "
                f"--data-dir {self.data_dir}`)")

    @property
    def meta(self):
        return self.classifier.metadata

    @property
    def thresholds(self) -> dict:
        """The thresholds classify() applies: a site profile's where one is active, else the artifact's own."""
        op = getattr(self.classifier, "operating_point", None)
        return dict(op.thresholds if op is not None else (self.meta.thresholds or {}))

    @property
    def site_profile(self) -> str:
        """The active site profile in English (the API's ``site_profile``), "" when none."""
        profile = getattr(self.classifier, "site_profile", None)
        return profile.summary() if profile else ""

    @property
    def site_profile_fields(self) -> dict:
        """The active site profile as fields (``i18n.profile_text`` words them for the page), {} when none."""
        profile = getattr(self.classifier, "site_profile", None)
        return profile.summary_fields() if profile else {}

    @property
    def status(self) -> dict:
        return dict(getattr(self.classifier, "bundle_status", None) or {})

    def warnings(self) -> list[tuple[str, dict]]:
        """Banner messages as (catalogue key, fields): synthetic data, bundle not validated, failed formats."""
        out = []
        if getattr(self.meta, "synthetic", False):  # the catalogue's words: meta.warning is English only
            out.append(("banner.synthetic", {}))
        status = self.status
        if not status.get("validated", False):
            out.append(("banner.not_validated", {}))
        if status.get("failed_formats"):
            out.append(("banner.failed_formats", {"formats": ", ".join(map(str, status["failed_formats"]))}))
        return out

    def warnings_text(self) -> list[str]:
        return [i18n.translate("en", k, **kw) for k, kw in self.warnings()]


def create_app(classifier, data_dir, config: dict | None = None) -> Flask:
    data_dir = private_dir(data_dir)
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    web = Web(classifier=classifier, store=Store(data_dir), data_dir=data_dir,
              auth_required=not A.is_loopback(app.config["HOST"]))
    if web.auth is None and web.auth_required:  # (reading it marks a password set at start as required)
        raise ValueError(f"serving on {app.config['HOST']} (not loopback) needs an operator password: run "
                         f"`python -m edge_runtime set-password --data-dir {data_dir}` first")
    app.extensions["cxr"] = web
    app.config.update(
        SECRET_KEY=A.secret_key(data_dir),
        MAX_CONTENT_LENGTH=int(app.config["MAX_REQUEST_MB"] * 1e6),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="cxr_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=app.config["SESSION_HOURS"]),
    )
    app.json.sort_keys = False

    from edge_runtime.web.api import bp as api_bp
    from edge_runtime.web.site_views import bp as site_bp
    from edge_runtime.web.views import bp as views_bp
    from edge_runtime.web.views_info import bp as info_bp

    app.register_blueprint(views_bp)
    app.register_blueprint(info_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(site_bp)
    _install_hooks(app, web)
    _install_filters(app)
    return app


def _install_filters(app: Flask) -> None:
    def _finite(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return None if f != f else f

    def _local(text: str) -> str:
        """A number as the page's language writes it (French: decimal comma, a thin space before %)."""
        return i18n.local_number(getattr(g, "lang", app.config["DEFAULT_LANG"]), text)

    @app.template_filter("pct")
    def pct(v):
        f = _finite(v)
        return "-" if f is None else _local(f"{f * 100:.1f}%")

    @app.template_filter("num")
    def num(v):
        f = _finite(v)
        return "-" if f is None else _local(f"{f:.3f}")

    @app.template_filter("ms")
    def ms(v):
        f = _finite(v)
        return "-" if f is None else _local(f"{f / 1000:.1f} s" if f >= 1000 else f"{f:.0f} ms")

    @app.template_filter("when")
    def when(v):
        return (v or "-")[:16].replace("T", " ")


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def _bearer() -> str:
    h = request.headers.get("Authorization", "")
    return h[7:].strip() if h.lower().startswith("bearer ") else ""


def _same_origin() -> bool:
    """For API calls made with a session cookie (or with no auth on loopback): refuse cross-site requests."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


def _install_hooks(app: Flask, web: Web) -> None:
    loopback_only = A.is_loopback(app.config["HOST"])

    @app.before_request
    def _guard():
        g.lang = i18n.choose(request, app.config["DEFAULT_LANG"])
        g.via_token = False
        # a body larger than this endpoint can use is refused on its Content-Length before anything else
        # (no authentication work, nothing read); a body without a length is cut at the same limit
        g.body_limit = request.max_content_length = body_limit(app.config, request.endpoint)
        if (request.content_length or 0) > g.body_limit:
            return _too_large()
        # DNS rebinding: a page on another site must not reach a loopback server under its own host name
        if loopback_only and not A.is_loopback(request.host):
            return _deny(400, "bad_host", f"unexpected Host header {request.host!r} for a loopback server")
        problem = web.auth_problem()
        if problem and request.endpoint != "static":  # fail closed: never serve without the password
            log.error("refusing %s %s: %s", request.method, request.path, problem)  # the details: log only
            return _deny(503, "auth_missing", "this server requires a password but its password file is missing "
                                              "or unreadable: it refuses every request until an operator runs "
                                              "set-password (details in the server log)")
        auth = web.auth
        if auth is not None and request.endpoint not in PUBLIC_ENDPOINTS:
            token = _bearer()
            if token:
                if not A.check_token(auth, token):
                    return _deny(401, "bad_token", "the API token is not valid")
                g.via_token = True
            elif not A.session_ok(auth, session):
                if wants_json():
                    return _deny(401, "login_required", "log in or send 'Authorization: Bearer <token>'")
                if request.method in ("GET", "HEAD"):
                    return redirect(url_for("views.login", next=request.full_path.rstrip("?")))
                # a form sent after the session ended: its address takes POST only, so come back to the page
                # the form was on, and say that what was sent was not saved (review28 #2: a 405 page, data lost)
                return redirect(url_for("views.login", next=_referring_page() or url_for("views.index"), lost=1),
                                code=303)
        if request.method == "POST":
            if wants_json():
                if not g.via_token and not _same_origin():
                    return _deny(403, "cross_origin", "cross-site API requests are refused")
            elif not A.csrf_ok(session, request):
                return _deny(400, "csrf", i18n.translate(g.lang, "error.csrf"))
        return None

    @app.after_request
    def _headers(resp):
        h = resp.headers
        h["Content-Security-Policy"] = CSP
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "no-referrer"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if request.endpoint != "static":
            h["Cache-Control"] = "no-store"  # pages and images hold patient data
        asked = request.args.get("lang", "")
        if asked in i18n.LANGUAGES:
            resp.set_cookie(i18n.COOKIE, asked, max_age=365 * 86400, samesite="Lax", httponly=True)
        return resp

    @app.context_processor
    def _template_globals():
        lang = getattr(g, "lang", app.config["DEFAULT_LANG"])
        return {
            "_": lambda key, **kw: i18n.translate(lang, key, **kw),
            "lbl": lambda name: i18n.label_text(lang, name),
            "reason": lambda rec: i18n.reason_text(lang, rec),
            "oos_advice": lambda rec: i18n.oos_advice(lang, rec),
            "next_step": lambda rec: i18n.next_step(lang, rec),
            "profile_text": lambda fields: i18n.profile_text(lang, fields),
            "threshold_values": lambda thresholds: i18n.threshold_values(lang, thresholds),
            "site_warning": lambda code, fields: i18n.translate(lang, f"site.warn_{code}", **fields),
            "audit_text": lambda line: i18n.audit_text(lang, line),
            "lang": lang,
            "languages": i18n.LANGUAGES,
            "lang_url": lang_url,
            "csrf_token": lambda: A.csrf_token(session),
            "banners": web.warnings(),
            "meta": web.meta,
            "backend": getattr(web.classifier, "backend", ""),
            "auth_on": web.auth is not None,
            "logged_in": A.session_ok(web.auth, session),
        }

    def _referring_page() -> str:
        """The local page (path and query) a form was sent from, '' when the Referer is absent or another site."""
        from urllib.parse import urlsplit

        ref = urlsplit(request.referrer or "")
        if not ref.path or (ref.netloc and ref.netloc != request.host):
            return ""
        return ref.path + (f"?{ref.query}" if ref.query else "")

    def _too_large():
        limit = getattr(g, "body_limit", app.config["MAX_CONTENT_LENGTH"])
        return _deny(413, "too_large", i18n.translate(getattr(g, "lang", "en"), "error.request_too_large",
                                                       mb=limit / 1e6))  # a number: "0,05 Mo" in French

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if exc.code == 413:
            return _too_large()
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.code, "bad_request")
        own = exc.description != type(exc).description  # our own words (already in the page's language)
        lang = getattr(g, "lang", app.config["DEFAULT_LANG"])
        if code != "bad_request" and not own:  # werkzeug's English: say it in the page's language
            return _deny(exc.code, code, i18n.translate(lang, f"error.{code}"))
        return _deny(exc.code or 400, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _crash(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        english = "internal error (details in the server log); the server keeps running"
        if wants_json():  # the API speaks English with stable codes
            return _deny(500, "internal", english)
        try:
            return _deny(500, "internal", i18n.translate(getattr(g, "lang", "en"), "error.internal"))
        except Exception:  # the error page itself must not fail
            log.exception("rendering the error page failed")
            return english, 500


# where the language link of a page answered to a POST leads (a POST cannot be repeated by a link)
AFTER_POST = {"views.outcome": "views.detail", "site.apply": "info.monitoring", "site.remove": "info.monitoring"}


def lang_url(code: str) -> str:
    """This page in language ``code``: the same path and query (history filters, login's next page) with
    ``lang`` set; for a page answered to a POST, the page a link can show (the screening, the monitoring page,
    else the upload page)."""
    from urllib.parse import urlencode

    if request.method in ("GET", "HEAD"):
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"] + [("lang", code)]
        return f"{request.script_root}{request.path}?{urlencode(args)}"
    view_args = request.view_args or {}
    target = AFTER_POST.get(request.endpoint or "", "views.index")
    try:
        return url_for(target, lang=code, **view_args)
    except Exception:  # a target that needs arguments this request lacks
        return url_for("views.index", lang=code)


def body_limit(config, endpoint: str | None) -> int:
    """The largest request body ``endpoint`` accepts: the upload form takes several files, the API one file,
    every other endpoint a small form."""
    whole = int(config["MAX_CONTENT_LENGTH"])
    if endpoint == "views.upload":
        return whole
    if endpoint == "api.create_screening":
        return min(whole, int(config["MAX_FILE_MB"] * 1e6) + FORM_SLACK)
    return min(whole, SMALL_BODY)


def _deny(status: int, code: str, message: str):
    if wants_json():
        return json_error(status, code, message)
    return render_template("error.html", status=status, code=code, message=message), status
