"""Security tests of the web page: each defect of issue 13 (web side) and the guards that already held.

Each test names what it pins, so a regression says which promise broke:
  defects  2 huge paging numbers, 3 DNS-rebinding host check, 4 open redirect after login, 5 auth that turns
           off while a LAN server runs, 6 file modes of the patient history, 7 large bodies read before they
           are refused, 8 a preamble-less DICOM refused, "DICOM without pixels" status.
  guards   CSRF, login throttling, HTML escaping, CSV formula escaping, path traversal, cross-site API posts.
"""
from __future__ import annotations

import csv
import io
import os
import stat
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from test_web_fakes import ROOT, FakeClassifier, app, client, csrf, dicom_bytes, fake, png_bytes, upload  # noqa: F401

PASSWORD = "correct horse battery"
HUGE = "9" * 30


def post_file(c, data, name="x.png", headers=None, **form):
    return c.post("/api/v1/screenings", data={"file": (io.BytesIO(data), name), **form},
                  content_type="multipart/form-data", headers=headers or {})


@pytest.fixture
def lan(tmp_path):
    """A server bound off loopback (0.0.0.0) with a password; returns (app, token)."""
    from edge_runtime.web import create_app
    from edge_runtime.web.auth import set_password

    data = tmp_path / "data"
    token = set_password(data, PASSWORD)
    return create_app(FakeClassifier(), data, {"HOST": "0.0.0.0"}), token


def login(c, password=PASSWORD, next_=""):
    page = c.get("/login")
    return c.post("/login" + (f"?next={next_}" if next_ else ""),
                  data={"csrf_token": csrf(page.get_data(as_text=True)), "password": password})


# ---- defect 2: numeric query parameters are validated and clamped ------------------------------------------
@pytest.mark.parametrize("query", [f"page={HUGE}", f"page=-{HUGE}", "page=0", "page=1e9", "page=%EF%BC%91",
                                   "page=", "page=2**64"])
def test_history_page_number_is_clamped_not_a_500(client, query):  # noqa: F811
    upload(client, ("a.png", png_bytes()), reference="only-one")
    r = client.get(f"/history?{query}")
    assert r.status_code == 200, query
    assert "only-one" in r.get_data(as_text=True), "a page out of range shows the nearest page"


@pytest.mark.parametrize("query, limit, offset", [
    (f"offset={HUGE}", 50, 10**9), (f"limit={HUGE}", 500, 0), (f"limit=-{HUGE}&offset=-{HUGE}", 1, 0),
    ("limit=0&offset=3", 1, 3), ("limit=500&offset=1000000000", 500, 10**9),
])
def test_api_paging_is_clamped_not_a_500(client, query, limit, offset):  # noqa: F811
    r = client.get(f"/api/v1/screenings?{query}")
    assert r.status_code == 200, r.get_data(as_text=True)
    body = r.get_json()
    assert (body["limit"], body["offset"]) == (limit, offset)


@pytest.mark.parametrize("query", ["limit=ten", "offset=1.5", "offset=%EF%BC%91", "limit=1_0", "offset= 1"])
def test_api_malformed_numbers_are_400(client, query):  # noqa: F811
    r = client.get(f"/api/v1/screenings?{query}")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "bad_number"


def test_history_page_past_the_end_shows_the_last_page(tmp_path, fake):  # noqa: F811
    from edge_runtime.web import create_app

    c = create_app(fake, tmp_path / "d", {"PAGE_SIZE": 2}).test_client()
    for i in range(3):
        upload(c, (f"{i}.png", png_bytes(seed=i)), reference=f"ref{i}")
    html = c.get(f"/history?page={HUGE}").get_data(as_text=True)
    assert "Page 2 of 2" in html and "ref0" in html and "ref2" not in html


# ---- defect 3: the loopback / DNS-rebinding host check -------------------------------------------------------
LOOPBACK_YES = ["127.0.0.1", "127.0.0.1:8080", "127.255.255.254", "127.0.0.2:1", "localhost", "localhost:8080",
                "LOCALHOST", "::1", "[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:80", "127.0.0.1:65535"]
LOOPBACK_NO = ["127.0.0.1.evil.example", "127.0.0.1.evil.example:8080", "127.evil.example", "127.", "127.1",
               "127.0.0.01", "0x7f.0.0.1", "2130706433", "128.0.0.1", "126.255.255.255", "0.0.0.0", "::",
               "[::]:8080", "::2", "[::2]", "[::1", "::1]", "[::1]x", "[::1]:", "localhost:", "localhost:http",
               "localhost:99999", "localhost.", "localhost.evil.example", "evil.localhost", "127.0.0.1 ",
               " 127.0.0.1", "127.0.0.1:80:80", "::ffff:127.0.0.1", "[::ffff:7f00:1]", "192.168.1.10", "",
               "127.0.0.1/8", "127.0.0.1%lo", "[::1%lo]", "localhost:+80", "127.0.0.1:-1"]


@pytest.mark.parametrize("host", LOOPBACK_YES)
def test_is_loopback_accepts_literal_loopback_and_localhost(host):
    from edge_runtime.web.auth import is_loopback

    assert is_loopback(host) is True


@pytest.mark.parametrize("host", LOOPBACK_NO)
def test_is_loopback_refuses_everything_else(host):
    from edge_runtime.web.auth import is_loopback

    assert is_loopback(host) is False


@pytest.mark.parametrize("host", ["127.0.0.1.evil.example", "127.0.0.1.evil.example:8080", "localhost.evil.example"])
def test_loopback_server_refuses_rebinding_host_names(client, host):  # noqa: F811
    assert client.get("/history", headers={"Host": host}).status_code == 400
    assert post_file(client, png_bytes(), headers={"Host": host}).status_code == 400
    assert client.get("/history", headers={"Host": "localhost:8080"}).status_code == 200


def test_a_host_that_only_starts_with_127_needs_a_password(tmp_path):
    from edge_runtime.web import create_app

    with pytest.raises(ValueError, match="set-password"):
        create_app(FakeClassifier(), tmp_path / "d", {"HOST": "127.0.0.1.evil.example"})
    create_app(FakeClassifier(), tmp_path / "e", {"HOST": "127.0.0.2"})  # a literal loopback address is fine
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(tmp_path / "none"), "--host",
                        "127.0.0.1.evil.example", "--data-dir", str(tmp_path / "f")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "set-password" in r.stderr, r.stderr


# ---- defect 4: only a same-site relative path may follow a login -------------------------------------------
EVIL_NEXT = ["/%09/evil.example", "/%0a/evil.example", "/%0d/evil.example", "/%00/evil.example",
             "%09//evil.example", "//evil.example/x", "///evil.example", "/\\evil.example", "/%5Cevil.example",
             "\\\\evil.example", "https://evil.example", "http:evil.example", "javascript:alert(1)",
             "evil.example", "/%2F%2Fevil.example", "/%252F%252Fevil.example", "/%E3%80%80/evil.example",
             "/%C2%A0/evil.example", " /history", "/history%0d%0aSet-Cookie:x=1"]


@pytest.mark.parametrize("evil", EVIL_NEXT)
def test_login_never_redirects_off_site(lan, evil):
    app_, _ = lan
    r = login(app_.test_client(), next_=evil)
    assert r.status_code == 303 and r.headers["Location"] == "/", (evil, r.headers["Location"])


@pytest.mark.parametrize("good", ["/history", "/history?page=2&reference=P-1", "/screenings/abc123", "/"])
def test_login_returns_to_a_local_page(lan, good):
    app_, _ = lan
    r = login(app_.test_client(), next_=quote(good, safe=""))
    assert r.status_code == 303 and r.headers["Location"] == good


def test_redirect_to_login_keeps_the_page_asked_for(lan):
    app_, _ = lan
    c = app_.test_client()
    r = c.get("/history?page=2")
    assert r.status_code == 302
    nxt = parse_qs(urlsplit(r.headers["Location"]).query)["next"][0]
    assert nxt == "/history?page=2"
    assert login(c, next_=quote(nxt, safe="")).headers["Location"] == nxt


# ---- defect 5: a server started off loopback stays closed for its whole life -------------------------------
def _every_kind_of_request(c):
    return [c.get("/").status_code, c.get("/history").status_code, c.get("/history.csv").status_code,
            c.get("/api/v1/screenings").status_code, c.get("/healthz").status_code,
            post_file(c, png_bytes()).status_code]


def test_lan_server_fails_closed_when_auth_file_is_moved_away(lan):
    app_, token = lan
    web = app_.extensions["cxr"]
    c = app_.test_client()
    login(c)
    assert c.get("/history").status_code == 200
    (web.data_dir / "auth.json").rename(web.data_dir / "auth.json.moved")
    anonymous = app_.test_client()
    for codes in (_every_kind_of_request(anonymous), _every_kind_of_request(c)):
        assert all(code == 503 for code in codes), codes
    bearer = {"Authorization": f"Bearer {token}"}
    assert c.get("/healthz", headers=bearer).status_code == 503
    r = anonymous.get("/api/v1/screenings")
    assert r.get_json()["error"]["code"] == "auth_missing" and "set-password" in r.get_json()["error"]["message"]
    assert web.store.search()[1] == 0, "nothing was saved while the password file was missing"
    # put it back: the same password works again
    (web.data_dir / "auth.json.moved").rename(web.data_dir / "auth.json")
    assert anonymous.get("/healthz", headers=bearer).status_code == 200
    assert anonymous.get("/history").status_code == 302


def test_lan_server_fails_closed_when_auth_file_is_emptied_or_corrupt(lan):
    app_, token = lan
    path = app_.extensions["cxr"].data_dir / "auth.json"
    c = app_.test_client()
    for text in ("", "{}", "not json", '{"password": ""}'):
        path.write_text(text)
        os.utime(path, ns=(1, len(text) + 10))  # a new mtime each time (coarse clocks)
        codes = _every_kind_of_request(c)
        assert all(code >= 500 or code in (401, 302) for code in codes) and 200 not in codes and 201 not in codes, \
            (text, codes)


def test_loopback_server_with_a_password_stays_closed_too(tmp_path):
    from edge_runtime.web import create_app
    from edge_runtime.web.auth import set_password

    data = tmp_path / "d"
    set_password(data, PASSWORD)
    app_ = create_app(FakeClassifier(), data)
    (data / "auth.json").unlink()
    assert app_.test_client().get("/history").status_code == 503


# ---- defect 6: the patient history is private to the service user, whatever the umask ----------------------
def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_data_folder_and_database_are_private(tmp_path, umask):
    import sqlite3

    from edge_runtime.web import create_app
    from edge_runtime.web.auth import set_password

    old = os.umask(umask)
    try:
        data = tmp_path / "fresh" / "data"
        set_password(data, PASSWORD)  # set-password runs first on a new device: it makes the folder
        app_ = create_app(FakeClassifier(), data, {"HOST": "0.0.0.0"})
        c = app_.test_client()
        login(c)
        assert post_file(c, png_bytes()).status_code == 201
        held = sqlite3.connect(data / "screenings.db")  # an open connection keeps -wal and -shm in place
        held.execute("SELECT COUNT(*) FROM screenings").fetchone()
        try:
            assert _mode(data) == 0o700
            assert _mode(data / "images") == 0o700
            for name in ("screenings.db", "screenings.db-wal", "screenings.db-shm", "auth.json", "secret_key"):
                assert _mode(data / name) == 0o600, name
            for p in (data / "images").iterdir():
                assert _mode(p) == 0o600, p.name
        finally:
            held.close()
    finally:
        os.umask(old)


def test_an_existing_open_data_folder_is_made_private(tmp_path):
    from edge_runtime.web import create_app

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "screenings.db").touch()
    os.chmod(data / "screenings.db", 0o644)
    create_app(FakeClassifier(), data)
    assert _mode(data) == 0o700 and _mode(data / "screenings.db") == 0o600


# ---- defect 7: a large body is refused on its Content-Length, before authentication and before reading ------
class CountingStream:
    """A request body that counts what the server reads from it (and would take forever to read whole)."""

    HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'

    def __init__(self, fill=b"x", head=HEAD):
        self.consumed, self.fill, self.head = 0, fill, head

    def read(self, n=-1):
        n = 65536 if n is None or n < 0 else n
        out = (self.head + self.fill * n)[:n]  # a multipart file part that never ends
        self.head = self.head[len(out):]
        self.consumed += len(out)
        return out

    def readline(self, n=-1):
        return self.read(n)


def _raw_post(app_, path, length, headers=None):
    """POST to ``app_`` with a body that announces ``length`` bytes (None: chunked); returns (response, body)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app
    from werkzeug.wrappers import Response

    stream = CountingStream()
    env = EnvironBuilder(path=path, method="POST", headers={"Content-Type": "multipart/form-data; boundary=b",
                                                            **(headers or {})}).get_environ()
    env["wsgi.input"] = stream
    if length is None:
        env.pop("CONTENT_LENGTH", None)
        env["HTTP_TRANSFER_ENCODING"] = "chunked"
        env["wsgi.input_terminated"] = True
    else:
        env["CONTENT_LENGTH"] = str(length)
    app_iter, status, hdrs = run_wsgi_app(app_, env, buffered=True)
    return Response(app_iter, status, hdrs), stream


@pytest.mark.parametrize("path", ["/api/v1/screenings", "/screenings", "/login", "/logout",
                                  "/screenings/abc/outcome", "/api/v1/screenings/abc/outcome"])
def test_huge_unauthenticated_body_is_413_before_auth_and_unread(lan, path):
    app_, _ = lan
    r, body = _raw_post(app_, path, 10**12)
    assert r.status_code == 413, (path, r.status_code)
    assert body.consumed == 0, f"{path}: {body.consumed} bytes read before refusing"


def test_api_body_limit_is_one_file_not_the_whole_form_limit(lan):
    app_, token = lan
    cfg = app_.config
    over_one_file = int(cfg["MAX_FILE_MB"] * 1e6) + 2_000_000  # well under MAX_REQUEST_MB (200 MB)
    assert over_one_file < cfg["MAX_CONTENT_LENGTH"]
    r, body = _raw_post(app_, "/api/v1/screenings", over_one_file,
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "too_large" and body.consumed == 0
    assert "MB" in r.get_json()["error"]["message"]


def test_small_forms_have_a_small_body_limit(app):  # noqa: F811
    r, body = _raw_post(app, "/screenings/abc/outcome", 2_000_000)
    assert r.status_code == 413 and body.consumed == 0


def test_body_without_content_length_is_cut_at_the_limit(tmp_path, fake):  # noqa: F811
    """A chunked body (no Content-Length) is read only up to the limit, then refused."""
    from edge_runtime.web import create_app
    from edge_runtime.web.app import FORM_SLACK

    app_ = create_app(fake, tmp_path / "d", {"MAX_FILE_MB": 0.1})
    r, body = _raw_post(app_, "/api/v1/screenings", None)
    assert r.status_code == 413
    assert body.consumed <= 100_000 + FORM_SLACK + 65_536, body.consumed  # the limit plus one read


def test_one_oversized_file_is_not_read_whole(tmp_path):
    from werkzeug.datastructures import FileStorage

    from edge_runtime.web.imaging import UploadError, read_upload

    stream = CountingStream(b"\x89", head=b"")
    with pytest.raises(UploadError) as e:
        read_upload(FileStorage(stream, "big.png"), 1_000)
    assert e.value.status == 413 and "big.png" in e.value.message and stream.consumed <= 1_001
    assert read_upload(FileStorage(io.BytesIO(b"abc"), "a.png"), 3) == b"abc"


# ---- defect 8 (web): the web accepts the DICOM files the decoder accepts; "no pixels" is 422 as API.md says --
def _dicom_without_pixels(preamble=True) -> bytes:
    from dicom_factory import dicom_bytes as factory_dicom

    return factory_dicom(pixel_data=False, preamble=preamble)


@pytest.mark.parametrize("name", ["film.dcm", "film", "film.png"])
def test_dicom_without_preamble_is_screened_like_the_cli_does(client, name):  # noqa: F811
    from edge_runtime.preprocess import decode_image

    bare = dicom_bytes()[132:]  # no 128-byte preamble, no "DICM": pydicom and the CLI read it
    assert bare[:2] == b"\x02\x00" and decode_image(bare, "film.dcm").shape == (64, 64)
    r = post_file(client, bare, name)
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["image"]["kind"] == "dicom" and r.get_json()["file_name"] == name


def test_dicom_without_pixels_is_422_as_documented(client):  # noqa: F811
    for data in (_dicom_without_pixels(), _dicom_without_pixels(preamble=False)):
        r = post_file(client, data, "empty.dcm")
        assert r.status_code == 422 and r.get_json()["error"]["code"] == "bad_image", r.get_json()
        assert "pixel" in r.get_json()["error"]["message"]
    assert "422 | `bad_image`" in (ROOT / "edge_runtime" / "web" / "API.md").read_text()


def test_a_png_named_dcm_is_screened_as_a_png(client):  # noqa: F811
    r = post_file(client, png_bytes(), "looks-like.dcm")
    assert r.status_code == 201 and r.get_json()["image"]["kind"] == "png"


@pytest.mark.parametrize("data", [b"\x08\x00" + b"\xff" * 200, b"\x02\x00\x00\x00UL" + b"\x00" * 10])
def test_junk_that_starts_like_a_dicom_tag_is_a_clear_4xx(client, data):  # noqa: F811
    r = post_file(client, data, "junk.dcm")
    assert r.status_code in (400, 415, 422) and r.is_json and "junk.dcm" in r.get_json()["error"]["message"]


def test_serve_on_a_busy_port_is_one_clear_line(tmp_path):
    import socket
    import subprocess
    import sys

    from test_web_fakes import write_tiny_bundle

    pytest.importorskip("onnxruntime")
    bundle = write_tiny_bundle(tmp_path / "bundle")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(bundle), "--port",
                            str(port), "--data-dir", str(tmp_path / "d")], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and str(port) in errors[0] and "in use" in errors[0], r.stderr
    assert len(r.stderr.splitlines()) <= 4, r.stderr  # the error, and the start-up lines before it at most


# ---- guards that held (pinned so they cannot come back) ---------------------------------------------------
def test_guard_csrf_on_every_form(lan):
    app_, _ = lan
    c = app_.test_client()
    c.get("/login")
    assert c.post("/login", data={"password": PASSWORD}).status_code == 400  # no token: not even a login
    login(c)
    sid = post_file(c, png_bytes()).get_json()["id"]
    for path, data in (("/screenings", {"files": None}), (f"/screenings/{sid}/outcome", {"outcome": "normal"}),
                       ("/logout", {})):
        for token in (None, "forged"):
            form = dict(data, **({"csrf_token": token} if token else {}))
            if "files" in form:
                form["files"] = [(io.BytesIO(png_bytes()), "a.png")]
            r = c.post(path, data=form, content_type="multipart/form-data")
            assert r.status_code == 400, (path, token)
    assert app_.extensions["cxr"].store.search()[1] == 1
    assert app_.extensions["cxr"].store.get(sid)["outcome"] is None
    assert c.get("/history").status_code == 200, "the forged logout did not end the session"


def test_guard_cross_site_api_posts_need_the_token(client):  # noqa: F811
    assert post_file(client, png_bytes(), headers={"Origin": "http://evil.example"}).status_code == 403
    assert post_file(client, png_bytes(), headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert post_file(client, png_bytes(), headers={"Origin": "null"}).status_code == 403


def test_guard_login_throttle_per_client(lan):
    app_, _ = lan
    c = app_.test_client()
    for _ in range(5):
        assert login(c, "wrong wrong").status_code == 401
    assert login(c).status_code == 429, "the right password is refused too while throttled"
    other = app_.test_client()
    page = other.get("/login", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    r = other.post("/login", data={"csrf_token": csrf(page.get_data(as_text=True)), "password": PASSWORD},
                   environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert r.status_code == 303


def test_guard_html_escaping(client):  # noqa: F811
    evil = '<script>alert("x")</script>'
    r = post_file(client, png_bytes(), name=evil + ".png", reference=evil)
    assert r.status_code == 201
    sid = r.get_json()["id"]
    for path in (f"/screenings/{sid}", "/history", "/", "/model"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html, path
    assert "&lt;script&gt;alert" in client.get(f"/screenings/{sid}").get_data(as_text=True)


@pytest.mark.parametrize("ref", ["=1+1", "+1", "-1", "@SUM(A1)", "=HYPERLINK(\"http://evil.example\")"])
def test_guard_csv_formula_escaping(client, ref):  # noqa: F811
    assert post_file(client, png_bytes(), name=ref + ".png", reference=ref).status_code == 201
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv").get_data(as_text=True))))
    assert rows[0]["reference"] == "'" + ref
    for row in rows:
        for value in row.values():
            assert value[:1] not in ("=", "+", "-", "@"), value


@pytest.mark.parametrize("path", ["/screenings/..%2F..%2Fauth.json/original", "/screenings/../auth.json",
                                  "/screenings/%2e%2e/original", "/screenings/..%2fsecret_key/image.png",
                                  "/static/..%2Fauth.json", "/static/../../auth.json",
                                  "/screenings/abc/..%2F..%2F..%2Fscreenings.db.png"])
def test_guard_path_traversal(client, path):  # noqa: F811
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    body = r.get_data()
    assert b"password" not in body and b"SQLite format" not in body


def test_guard_uploads_are_stored_under_generated_names(client, app):  # noqa: F811
    r = post_file(client, png_bytes(), name="../../../escape.png")
    assert r.status_code == 201 and r.get_json()["file_name"] == "escape.png"
    data_dir = app.extensions["cxr"].data_dir
    names = {p.name for p in data_dir.rglob("*")}
    assert not any("escape" in n for n in names) and not (data_dir.parent / "escape.png").exists()

