"""The JSON API, the auth rules (password, session, token, CSRF, host), and the serve/set-password commands."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from test_web_fakes import ROOT, FakeClassifier, app, client, csrf, dicom_bytes, fake, png_bytes  # noqa: F401

PASSWORD = "correct horse battery"


def post_file(c, data, name="x.png", headers=None, **form):
    return c.post("/api/v1/screenings", data={"file": (io.BytesIO(data), name), **form},
                  content_type="multipart/form-data", headers=headers or {})


def test_api_create_get_list_outcome(client):  # noqa: F811
    r = post_file(client, png_bytes(220), "scan.png", reference="REF-9")
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert r.headers["Location"] == body["links"]["self"] == f"/api/v1/screenings/{body['id']}"
    assert body["decision"] == "pneumonia" and body["in_scope"] is True and body["reference"] == "REF-9"
    assert set(body["probabilities"]) == {"normal", "pneumonia", "tuberculosis"}
    assert body["model"] == {"name": "fake-net", "version": "9.9.9", "backend": "fake", "synthetic": True}
    assert "SYNTHETIC DATA - NOT FOR CLINICAL USE" in " ".join(body["warnings"])
    assert body["links"]["heatmap"] and body["timings_ms"]["server"] > 0 and body["outcome"] is None
    got = client.get(body["links"]["self"]).get_json()
    assert got["id"] == body["id"] and got["probabilities"] == body["probabilities"]
    with client.get(body["links"]["heatmap"]) as r:
        assert r.status_code == 200
    lst = client.get("/api/v1/screenings?reference=REF").get_json()
    assert lst["total"] == 1 and lst["screenings"][0]["id"] == body["id"]
    r = client.post(f"/api/v1/screenings/{body['id']}/outcome", json={"outcome": "tuberculosis", "note": "GX+"})
    assert r.status_code == 200 and r.get_json()["outcome"]["value"] == "tuberculosis"
    r = client.post(f"/api/v1/screenings/{body['id']}/outcome", json={"outcome": None})
    assert r.get_json()["outcome"] is None


def test_api_dicom_and_out_of_scope(client):  # noqa: F811
    assert post_file(client, dicom_bytes(), "a.dcm").status_code == 201
    body = post_file(client, png_bytes(90, noise=0)).get_json()
    assert body["decision"] == "out_of_scope" and body["probabilities"] is None and body["links"]["heatmap"] is None


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty_file"),
    (b"hello world, not an image" * 10, 415, "unsupported_type"),
    (png_bytes()[:70], 422, "bad_image"),
])
def test_api_bad_files_are_4xx_json_and_save_nothing(client, app, data, status, code):  # noqa: F811
    r = post_file(client, data)
    assert r.status_code == status and r.is_json
    assert r.get_json()["error"]["code"] == code and r.get_json()["error"]["message"]
    assert app.extensions["cxr"].store.search()[1] == 0


def test_api_request_errors(client):  # noqa: F811
    r = client.post("/api/v1/screenings", data={}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "one_file"
    r = client.post("/api/v1/screenings", data={"file": [(io.BytesIO(png_bytes()), "a.png")] * 2},
                    content_type="multipart/form-data")
    assert r.status_code == 400
    assert client.get("/api/v1/screenings/deadbeef").status_code == 404
    assert client.get("/api/v1/screenings/deadbeef").get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/nothing").is_json
    assert client.delete("/api/v1/screenings").status_code == 405
    assert client.get("/api/v1/screenings?date_from=bad").status_code == 400
    assert client.get("/api/v1/screenings?limit=x").status_code == 400
    sid = post_file(client, png_bytes()).get_json()["id"]
    assert client.post(f"/api/v1/screenings/{sid}/outcome", data="nope").status_code == 400
    assert client.post(f"/api/v1/screenings/{sid}/outcome", json={"outcome": "flu"}).status_code == 400
    assert client.post(f"/api/v1/screenings/{sid}/outcome", json={"outcome": "normal", "note": 3}).status_code == 400


def test_api_request_too_large_is_json_413(tmp_path, fake):  # noqa: F811
    from edge_runtime.web import create_app

    c = create_app(fake, tmp_path / "d", {"MAX_REQUEST_MB": 0.01}).test_client()
    r = post_file(c, b"\x89PNG" + b"0" * 20_000)
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large"


def test_api_server_error_is_json_500(tmp_path):
    from edge_runtime.web import create_app

    c = create_app(FakeClassifier(fail=True), tmp_path / "d").test_client()
    r = post_file(c, png_bytes())
    assert r.status_code == 500 and r.get_json()["error"]["code"] == "internal"
    assert c.get("/healthz").status_code == 200


def test_healthz_and_model(client):  # noqa: F811
    h = client.get("/healthz").get_json()
    assert h["status"] == "ok" and h["database"] == "ok" and h["model"]["validated"] is False
    m = client.get("/api/v1/model")
    assert m.status_code == 200
    text = m.get_data(as_text=True)
    assert "NaN" not in text, "JSON must stay valid with a NaN metric"
    assert json.loads(text)["metrics"]["test"]["by_source"]["siteB"]["accuracy"] is None


def test_api_refuses_cross_site_browser_posts(client):  # noqa: F811
    r = post_file(client, png_bytes(), headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = post_file(client, png_bytes(), headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = post_file(client, png_bytes(), headers={"Origin": "http://localhost"})
    assert r.status_code == 201


def test_loopback_server_refuses_foreign_host_header(client):  # noqa: F811
    """DNS rebinding: another site's name pointing at 127.0.0.1 must not reach the page."""
    assert client.get("/", headers={"Host": "evil.example:8080"}).status_code == 400
    assert client.get("/healthz", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "[::1]:8080"}).status_code == 200


# ---- password, login, token ----------------------------------------------------------------------------
@pytest.fixture
def secured(tmp_path):
    from edge_runtime.web import create_app
    from edge_runtime.web.auth import set_password

    data = tmp_path / "data"
    token = set_password(data, PASSWORD)
    app_ = create_app(FakeClassifier(), data, {"HOST": "0.0.0.0"})
    return app_, token


def login(c, password=PASSWORD, next_=""):
    page = c.get("/login")
    return c.post("/login" + (f"?next={next_}" if next_ else ""),
                  data={"csrf_token": csrf(page.get_data(as_text=True)), "password": password})


def test_non_loopback_without_password_is_refused(tmp_path):
    from edge_runtime.web import create_app

    with pytest.raises(ValueError, match="set-password"):
        create_app(FakeClassifier(), tmp_path / "d", {"HOST": "0.0.0.0"})


def test_password_is_stored_as_salted_hash(tmp_path):
    from edge_runtime.web.auth import AUTH_FILE, set_password

    set_password(tmp_path, PASSWORD)
    first = json.loads((tmp_path / AUTH_FILE).read_text())
    set_password(tmp_path, PASSWORD)
    second = json.loads((tmp_path / AUTH_FILE).read_text())
    assert PASSWORD not in json.dumps(first) and first["password"] != second["password"]  # salted
    assert first["password"].startswith(("scrypt:", "pbkdf2:"))
    assert (tmp_path / AUTH_FILE).stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="at least"):
        set_password(tmp_path, "short")


def test_every_page_and_api_needs_login_or_token(secured):
    app_, token = secured
    c = app_.test_client()
    for path in ("/", "/history", "/history.csv", "/monitoring", "/model", "/screenings/abc"):
        r = c.get(path)
        assert r.status_code == 302 and "/login" in r.headers["Location"], path
    for path in ("/healthz", "/api/v1/screenings", "/api/v1/model", "/api/v1/screenings/abc"):
        r = c.get(path)
        assert r.status_code == 401 and r.is_json and "Bearer" in r.headers["WWW-Authenticate"], path
    assert post_file(c, png_bytes()).status_code == 401
    with c.get("/static/app.css") as r:
        assert r.status_code == 200 and c.get("/login").status_code == 200
    auth = {"Authorization": f"Bearer {token}"}
    assert c.get("/healthz", headers=auth).status_code == 200
    assert post_file(c, png_bytes(), headers=auth).status_code == 201
    bad = {"Authorization": "Bearer wrong"}
    assert c.get("/healthz", headers=bad).status_code == 401
    assert app_.extensions["cxr"].store.search()[1] == 1


def test_login_session_logout(secured):
    app_, _ = secured
    c = app_.test_client()
    assert login(c, "wrong password").status_code == 401
    r = login(c, next_="/history")
    assert r.status_code == 303 and r.headers["Location"] == "/history"
    assert c.get("/history").status_code == 200
    page = c.get("/").get_data(as_text=True)
    assert "Log out" in page
    # a session can use the API from the page's own origin
    assert post_file(c, png_bytes()).status_code == 201
    r = c.post("/logout", data={"csrf_token": csrf(page)})
    assert r.status_code == 303
    assert c.get("/").status_code == 302


def test_login_needs_csrf_and_refuses_open_redirect(secured):
    app_, _ = secured
    c = app_.test_client()
    c.get("/login")
    assert c.post("/login", data={"password": PASSWORD}).status_code == 400
    for evil in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        r = login(c, next_=evil)
        assert r.status_code == 303 and r.headers["Location"] == "/", evil
        c.post("/logout", data={"csrf_token": csrf(c.get("/").get_data(as_text=True))})


def test_login_throttle(secured):
    app_, _ = secured
    c = app_.test_client()
    for _ in range(5):
        assert login(c, "nope nope").status_code == 401
    assert login(c).status_code == 429


def test_new_password_ends_sessions_and_old_token(secured):
    from edge_runtime.web.auth import set_password

    app_, token = secured
    c = app_.test_client()
    login(c)
    assert c.get("/").status_code == 200
    new_token = set_password(app_.extensions["cxr"].data_dir, "another long password")
    import os
    import time

    path = app_.extensions["cxr"].data_dir / "auth.json"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))  # coarse mtime clocks
    assert c.get("/").status_code == 302
    assert c.get("/healthz", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert c.get("/healthz", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200


# ---- commands ----------------------------------------------------------------------------------------------
def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "edge_runtime", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_set_password_command_and_serve_refusal(tmp_path):
    r = run_cli("serve", "--bundle", str(tmp_path / "nothing"), "--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "set-password" in r.stderr
    r = run_cli("set-password", "--data-dir", str(tmp_path), "--password-stdin", stdin="tiny\n")
    assert r.returncode == 2 and "at least" in r.stderr
    r = run_cli("set-password", "--data-dir", str(tmp_path), "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    from edge_runtime.web.auth import check_password, check_token, load_auth

    auth = load_auth(tmp_path)
    assert check_password(auth, PASSWORD) and check_token(auth, token)
    r = run_cli("serve", "--bundle", str(tmp_path / "nothing"), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "nothing" in r.stderr and "Traceback" not in r.stderr


def test_auth_file_without_epoch_still_needs_login(tmp_path):
    from edge_runtime.web import create_app
    from edge_runtime.web.auth import AUTH_FILE, set_password

    data = tmp_path / "d"
    set_password(data, PASSWORD)
    auth = json.loads((data / AUTH_FILE).read_text())
    del auth["epoch"]
    (data / AUTH_FILE).write_text(json.dumps(auth))
    c = create_app(FakeClassifier(), data, {"HOST": "0.0.0.0"}).test_client()
    assert c.get("/").status_code == 302
    assert login(c).status_code == 303 and c.get("/").status_code == 200
