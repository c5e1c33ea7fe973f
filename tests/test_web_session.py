"""The page when the operator's session ends mid-task (review28): what was sent is said lost, and the login
returns to the page the form was on."""
from urllib.parse import parse_qs, quote, urlsplit

from test_web_fakes import csrf  # noqa: F401
from test_web_security import lan, login  # noqa: F401


def test_a_form_sent_after_the_session_ended_comes_back_to_its_page_and_says_nothing_was_saved(lan):  # noqa: F811
    """review28 page #2: an outcome (or upload) sent after the login expired went to the login page with next=
    the POST-only address, then to a 405 page, and what was typed was lost without a word."""
    app_, _ = lan
    c = app_.test_client()
    login(c)
    page = c.get("/")
    r = c.post("/screenings/abc123/outcome", data={"csrf_token": csrf(page.get_data(as_text=True)), "outcome": "normal"})
    assert r.status_code != 302  # logged in: the request reaches the page (404: no such screening)
    with c.session_transaction() as s:
        s.clear()  # the session ends (12 h, or a restart with a new key)
    r = c.post("/screenings/abc123/outcome", data={"outcome": "normal", "note": "GX"},
               headers={"Referer": "http://localhost/screenings/abc123?lang=fr"})
    assert r.status_code == 303
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["next"] == ["/screenings/abc123?lang=fr"] and q["lost"] == ["1"]
    assert "was not saved" in c.get(r.headers["Location"]).get_data(as_text=True)
    assert login(c, next_=quote(q["next"][0], safe="")).headers["Location"] == "/screenings/abc123?lang=fr"
    # from another site's page, or with no Referer: the upload page, never the other site
    r = c.__class__(app_).post("/screenings", data={}, headers={"Referer": "http://evil.example/x"})
    assert parse_qs(urlsplit(r.headers["Location"]).query)["next"] == ["/"]
