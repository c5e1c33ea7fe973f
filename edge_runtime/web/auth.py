"""Operator password, API token, session secret, CSRF tokens and a login throttle.

Files in the data directory (mode 0600):
  auth.json   {"password": salted scrypt hash (werkzeug), "token_sha256": hex of the API token, "updated": ...,
               "epoch": random; a new password ends every login session}
  secret_key  random key that signs the session cookie (made on first start)

The password is never stored, only its salted hash; the API token is shown once by ``set-password`` and only
its SHA-256 is kept (it is a 256-bit random value, so a plain hash is enough).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from datetime import datetime
from pathlib import Path

AUTH_FILE = "auth.json"
SECRET_FILE = "secret_key"
MIN_PASSWORD = 8
_PORT = re.compile(r"[0-9]{1,5}")
_LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.ip_address("::1")


def _loopback_address(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)  # strict: no "127.1", no leading zeros, no scope ids, no names
    except ValueError:
        return False
    return ip in _LOOPBACK_V4 if ip.version == 4 else ip == _LOOPBACK_V6


def is_loopback(host: str) -> bool:
    """True only for a literal loopback address (IPv4 127.0.0.0/8, IPv6 ::1) or ``localhost``, written as a
    ``--host`` value or a ``Host`` header: ``127.0.0.1``, ``127.0.0.1:8080``, ``localhost:8080``, ``::1``,
    ``[::1]``, ``[::1]:8080``. Anything else, ``127.0.0.1.evil.example`` included, is not loopback.

    It guards against DNS rebinding (a loopback server serves only loopback Host headers) and decides whether
    ``serve --host`` needs a password."""
    if not isinstance(host, str):
        return False
    name, port = host, None
    if host.startswith("["):  # [IPv6] or [IPv6]:port
        end = host.find("]")
        rest = host[end + 1:] if end > 0 else None
        if rest is None or (rest and not rest.startswith(":")):
            return False
        name, port = host[1:end], (rest[1:] if rest else None)
        if not _loopback_address(name) or ipaddress.ip_address(name).version != 6:
            return False
    elif host.count(":") == 1:  # name:port or IPv4:port
        name, port = host.split(":")
    elif ":" in host:  # a bare IPv6 address (a --host value), no port
        return _loopback_address(host)
    if port is not None and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return False
    return host.startswith("[") or name.lower() == "localhost" or _loopback_address(name)


def _write_private(path: Path, text: str) -> None:
    from edge_runtime.web.store import private_dir

    private_dir(path.parent)  # set-password is often the first command on a new device: it makes the folder
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_auth(data_dir: str | Path) -> dict | None:
    path = Path(data_dir) / AUTH_FILE
    if not path.is_file():
        return None
    auth = json.loads(path.read_text())
    if not auth.get("password"):
        raise ValueError(f"{path}: no password hash in the file; run set-password again")
    auth.setdefault("epoch", hashlib.sha256(auth["password"].encode()).hexdigest()[:16])
    return auth


def session_ok(auth: dict | None, session) -> bool:
    """A login session is valid only for the password epoch it was made under."""
    got = session.get("auth")
    return bool(auth and got) and hmac.compare_digest(str(got), str(auth["epoch"]))


def set_password(data_dir: str | Path, password: str, new_token: bool = True) -> str | None:
    """Store the salted hash of ``password``; issue a new API token (returned once) unless new_token=False."""
    from werkzeug.security import generate_password_hash

    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    old = load_auth(data_dir) or {}
    token = secrets.token_urlsafe(32) if new_token or not old.get("token_sha256") else None
    auth = {"password": generate_password_hash(password),  # scrypt with a random 16-char salt
            "token_sha256": hash_token(token) if token else old["token_sha256"],
            "updated": datetime.now().astimezone().isoformat(timespec="seconds"),
            "epoch": secrets.token_hex(8)}  # a login session is valid for this epoch only
    _write_private(Path(data_dir) / AUTH_FILE, json.dumps(auth, indent=2) + "\n")
    return token


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(auth: dict | None, password: str) -> bool:
    from werkzeug.security import check_password_hash

    return bool(auth) and bool(password) and check_password_hash(auth["password"], password)


def check_token(auth: dict | None, token: str) -> bool:
    want = (auth or {}).get("token_sha256", "")
    return bool(want and token) and hmac.compare_digest(hash_token(token), want)


def secret_key(data_dir: str | Path) -> bytes:
    path = Path(data_dir) / SECRET_FILE
    if not path.is_file():
        _write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def csrf_token(session) -> str:
    tok = session.get("csrf")
    if not tok:
        tok = session["csrf"] = secrets.token_urlsafe(32)
    return tok


def csrf_ok(session, request) -> bool:
    sent = request.form.get("csrf_token", "") or request.headers.get("X-CSRF-Token", "")
    want = session.get("csrf", "")
    return bool(sent and want) and hmac.compare_digest(sent, want)


class Throttle:
    """At most ``limit`` failed logins per client address in ``window`` seconds."""

    def __init__(self, limit: int = 5, window: float = 300.0):
        self.limit, self.window = limit, window
        self._fails: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, q: deque, now: float) -> None:
        while q and now - q[0] > self.window:
            q.popleft()

    def blocked(self, who: str) -> bool:
        with self._lock:
            q = self._fails[who]
            self._prune(q, time.monotonic())
            return len(q) >= self.limit

    def fail(self, who: str) -> None:
        with self._lock:
            self._fails[who].append(time.monotonic())

    def reset(self, who: str) -> None:
        with self._lock:
            self._fails.pop(who, None)
