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

import pytest
from test_web_fakes import FakeClassifier, app, client, csrf, dicom_bytes, fake, png_bytes, upload  # noqa: F401

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
