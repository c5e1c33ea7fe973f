"""The page served for real by waitress on loopback, in a subprocess: a bounded load test, a kill -9 test,
and (when the tiny bundle fixture exists) the real classifier end to end."""
from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_web_fakes import ROOT, png_bytes

from edge_runtime.web.loadtest import post_screening, run_load


def start(cmd: list[str], log: Path, timeout: float = 60.0):
    """Start a server that prints 'serving on URL' on stdout; return (process, url)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    found = []

    def read():
        for line in proc.stdout:
            m = re.search(r"serving on (http://\S+)", line)
            if m:
                found.append(m.group(1).rstrip("/"))
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not found:
        stop_server(proc, kill=True)
        raise AssertionError(f"server did not start: {log.read_text()[-2000:]}")
    return proc, found[0]


def stop_server(proc, kill=False):
    proc.kill() if kill else proc.terminate()
    proc.wait(10)
    proc.stdout.close()


def fake_server(data_dir: Path, log: Path, delay_ms: int = 5):
    return start([sys.executable, "tests/test_web_fakes.py", str(data_dir), "--delay-ms", str(delay_ms)], log)


def get_json(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read())


def db_rows(data_dir: Path) -> list[tuple]:
    db = sqlite3.connect(data_dir / "screenings.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT id, reference, image_kind, has_heatmap FROM screenings").fetchall()
    finally:
        db.close()


IMAGES = [("dark.png", png_bytes(40, size=(96, 96))), ("bright.png", png_bytes(210, size=(96, 96), seed=3))]


def test_bounded_load_zero_5xx_nothing_lost_or_duplicated(tmp_path):
    data = tmp_path / "data"
    proc, url = fake_server(data, tmp_path / "server.log")
    try:
        res = run_load(url, IMAGES, clients=8, seconds=4, max_requests=600)
        status, health = get_json(url + "/healthz")
    finally:
        stop_server(proc)
    print("\nload (fake classifier, 5 ms inference):",
          {k: res[k] for k in ("requests", "requests_per_s", "p50_ms", "p95_ms", "statuses")})
    assert status == 200 and health["status"] == "ok"
    assert res["server_errors"] == 0 and set(res["statuses"]) == {"201"}, res["statuses"]
    rows = db_rows(data)
    refs = [r[1] for r in rows]
    assert len(refs) == len(set(refs)) == res["ok"], "no lost and no duplicated records"
    assert {r[1]: r[0] for r in rows} == res["acked"]


def test_kill_9_keeps_every_acknowledged_screening(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    proc, url = fake_server(data, log, delay_ms=20)
    stop = threading.Event()
    out = {}
    loader = threading.Thread(target=lambda: out.update(run_load(url, IMAGES, clients=4, seconds=8,
                                                                 max_requests=400, stop=stop)))
    loader.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(db_rows(data)) < 15:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # mid-flight: uploads in every stage of being handled
    stop_server(proc)
    time.sleep(0.3)
    stop.set()
    loader.join(30)
    acked = out["acked"]
    assert len(acked) >= 10, out
    rows = db_rows(data)  # integrity_check inside
    ids = {r[0] for r in rows}
    assert set(acked.values()) <= ids, "an acknowledged screening was lost"
    assert len(ids) == len(rows) and len({r[1] for r in rows}) == len(rows), "duplicated records"
    images = data / "images"
    for sid, _, kind, heat in rows:
        ext = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}[kind]
        for name in (f"{sid}.png", f"{sid}.original.{ext}", *([f"{sid}.heatmap.png"] if heat else [])):
            assert (images / name).is_file(), f"row {sid} lacks {name}"
    # restart on the same data: it serves the same history, and drops files of an unfinished upload
    (images / "deadbeef.png.tmp").write_bytes(b"x")
    proc2, url2 = fake_server(data, tmp_path / "server2.log")
    try:
        status, listing = get_json(url2 + "/api/v1/screenings?limit=1")
        assert status == 200 and listing["total"] == len(rows)
        code, body = post_screening(url2, IMAGES[0][1], IMAGES[0][0], "after-crash")
        assert code == 201
    finally:
        stop_server(proc2)
    assert not (images / "deadbeef.png.tmp").exists()
    for p in images.iterdir():
        assert p.name.split(".", 1)[0] in ids | {body["id"]}, f"orphan file {p.name}"


def test_loadtest_refuses_non_loopback():
    with pytest.raises(ValueError, match="loopback"):
        run_load("http://192.0.2.1:8080", IMAGES, clients=1, seconds=0.1)


def test_second_server_on_same_data_dir_is_refused(tmp_path):
    from edge_runtime.web.cli import _lock

    first = _lock(tmp_path)
    with pytest.raises(RuntimeError, match="already"):
        _lock(tmp_path)
    first.close()


# ---- the real runtime, when the session fixture tiny_bundle exists (tests/conftest.py) ----------------------
@pytest.fixture
def bundle(request):
    try:
        return Path(request.getfixturevalue("tiny_bundle"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py has no tiny_bundle fixture yet")


def test_real_bundle_in_process(bundle, tmp_path):
    from edge_runtime.classifier import Classifier
    from edge_runtime.web import create_app
    from test_web_fakes import csrf

    clf = Classifier.from_bundle(bundle)
    c = create_app(clf, tmp_path / "d").test_client()
    tok = csrf(c.get("/").get_data(as_text=True))
    import io

    r = c.post("/screenings", data={"csrf_token": tok, "files": [(io.BytesIO(png_bytes(120, (128, 128))), "a.png")]},
               content_type="multipart/form-data")
    assert r.status_code == 303
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "Saved." in page and clf.metadata.model_version in page
    if clf.metadata.synthetic:
        assert "SYNTHETIC DATA - NOT FOR CLINICAL USE" in page
    assert c.get("/model").status_code == 200 and c.get("/monitoring").status_code == 200


def test_real_bundle_served_by_the_serve_command(bundle, tmp_path):
    proc, url = start([sys.executable, "-m", "edge_runtime", "serve", "--bundle", str(bundle), "--port", "0",
                       "--data-dir", str(tmp_path / "d")], tmp_path / "serve.log")
    try:
        status, health = get_json(url + "/healthz")
        assert status == 200 and health["status"] == "ok"
        code, body = post_screening(url, png_bytes(120, (128, 128)), "a.png", "real-1")
        assert code == 201 and body["decision"] and body["model"]["backend"]
        if body["in_scope"]:
            assert abs(sum(body["probabilities"].values()) - 1) < 1e-3 and body["links"]["heatmap"]
        code, _ = post_screening(url, b"garbage" * 40, "b.png", "bad")
        assert code == 415
        assert get_json(url + "/healthz")[0] == 200  # still serving
    finally:
        stop_server(proc)


def test_waitress_refuses_a_large_body_on_its_content_length_unread(tmp_path):
    """Issue 13 defect 7 at the socket: a body over the app's limit is refused by waitress from the headers
    alone (before, waitress accepted up to 1 MB more and waited for it before the app could refuse)."""
    import socket
    from urllib.parse import urlsplit

    from edge_runtime.web.app import DEFAULTS

    proc, url = fake_server(tmp_path / "data", tmp_path / "server.log")
    try:
        u = urlsplit(url)
        length = int(DEFAULTS["MAX_REQUEST_MB"] * 1e6) + 500_000
        with socket.create_connection((u.hostname, u.port), timeout=30) as s:
            s.sendall(f"POST /api/v1/screenings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                      "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode())
            head = s.recv(200)  # no body sent: only a server that refuses on the header answers at all
        assert head.startswith(b"HTTP/1.1 413"), head
        assert get_json(url + "/healthz")[0] == 200
    finally:
        stop_server(proc)
