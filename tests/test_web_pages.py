"""Flask test-client tests of every page: upload, result, history, CSV, follow-up, monitoring, model, i18n."""
from __future__ import annotations

import csv
import io
import re
import threading

import pytest
from test_web_fakes import (FakeClassifier, app, client, csrf, dicom_bytes, fake, jpeg_bytes,  # noqa: F401
                            png_bytes, upload)


def count(app):  # noqa: F811
    return app.extensions["cxr"].store.search(limit=1)[1]


def files_on_disk(app):  # noqa: F811
    return sorted(p.name for p in app.extensions["cxr"].store.images.iterdir())


def test_upload_page_is_local_only_and_has_form(client):  # noqa: F811
    r = client.get("/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert 'enctype="multipart/form-data"' in html and 'name="files"' in html and "multiple" in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "every asset must be served locally"
    assert "SYNTHETIC DATA - NOT FOR CLINICAL USE" in html and "NOT VALIDATED" in html
    for asset in ("/static/app.css", "/static/app.js", "/static/favicon.svg"):
        with client.get(asset) as r:
            assert r.status_code == 200


def test_security_headers(client):  # noqa: F811
    h = client.get("/").headers
    csp = h["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
    assert h["Cache-Control"] == "no-store"


def test_no_inline_script_or_style_in_templates():
    from pathlib import Path

    import edge_runtime.web as web

    for t in (Path(web.__file__).parent / "templates").glob("*.html"):
        text = t.read_text()
        assert "<style" not in text and " style=" not in text and " on" + "click=" not in text, t.name
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), t.name


def test_upload_one_png_shows_result_and_is_saved(client, app):  # noqa: F811
    r = upload(client, ("chest.png", png_bytes(200)), reference="P-42")
    assert r.status_code == 303
    sid = r.headers["Location"].split("/")[2].split("?")[0]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Saved." in page and "P-42" in page and "Pneumonia" in page
    assert "fake-net 9.9.9" in page and "Time taken" in page and "<meter" in page
    assert f"/screenings/{sid}/heatmap.png" in page and 'id="show-heatmap-' in page
    for which in ("image", "heatmap"):
        with client.get(f"/screenings/{sid}/{which}.png") as img:
            assert img.status_code == 200 and img.data.startswith(b"\x89PNG") and img.mimetype == "image/png"
    with client.get(f"/screenings/{sid}/original") as orig:
        assert orig.data == png_bytes(200) and "chest.png" not in orig.headers["Content-Disposition"]
    assert count(app) == 1
    assert not any("chest" in n for n in files_on_disk(app)), "images are stored under generated names"
    rec = app.extensions["cxr"].store.get(sid)
    assert rec["reference"] == "P-42" and rec["original_name"] == "chest.png" and rec["decision"] == "pneumonia"


def test_upload_several_formats_at_once(client, app):  # noqa: F811
    r = upload(client, ("a.png", png_bytes(30)), ("b.jpg", jpeg_bytes(220)), ("c.dcm", dicom_bytes()))
    assert r.status_code == 303 and r.headers["Location"].startswith("/batches/")
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "3 screening(s) saved" in html and html.count('class="result"') == 3
    kinds = sorted(x["image_kind"] for x in app.extensions["cxr"].store.search()[0])
    assert kinds == ["dicom", "jpeg", "png"]


def test_a_batch_page_reloaded_or_switched_to_another_language_sends_nothing_again(client, app):  # noqa: F811
    """The batch's page is a GET after a redirect (review27 #7): reloading it or following its language link
    shows the same screenings, in the other language, and stores nothing more (before: a 405, or every film
    screened again on reload)."""
    r = upload(client, ("a.png", png_bytes(30)), ("bad.png", b"not an image at all"), ("b.png", png_bytes(200)))
    page = r.headers["Location"]
    first = client.get(page).get_data(as_text=True)
    assert "2 screening(s) saved" in first and "bad.png" in first and count(app) == 2
    assert client.get(page).get_data(as_text=True) == first and count(app) == 2  # a reload
    fr = client.get(page + "?lang=fr")
    html = fr.get_data(as_text=True)
    assert fr.status_code == 200 and '<html lang="fr">' in html and "bad.png" in html and count(app) == 2
    assert f'href="{page}?lang=en"' in html  # its own link back, not "?lang=en" against a POST
    gone = client.get("/batches/not-a-kept-batch?lang=en")
    assert gone.status_code == 404 and "Every screening is in the history" in gone.get_data(as_text=True)


def test_the_language_link_keeps_the_query_and_never_points_at_a_post(client, app):  # noqa: F811
    html = client.get("/history?q=abc&decision=refer").get_data(as_text=True)
    assert 'href="/history?q=abc&amp;decision=refer&amp;lang=fr"' in html
    r = upload(client, ("a.png", png_bytes(30)))
    sid = r.headers["Location"].split("/")[2].split("?")[0]
    tok = csrf(client.get("/").get_data(as_text=True))
    refused = client.post(f"/screenings/{sid}/outcome", data={"csrf_token": tok, "outcome": "", "note": "x"})
    assert refused.status_code == 400
    assert f'href="/screenings/{sid}?lang=fr"' in refused.get_data(as_text=True)  # the screening, by GET


def test_batch_with_one_bad_file_keeps_the_good_ones(client, app):  # noqa: F811
    r = upload(client, ("good.png", png_bytes(30)), ("bad.png", b"not an image at all"))
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert r.status_code == 303 and "1 screening(s) saved" in html and "bad.png" in html
    assert count(app) == 1


def test_refer_and_out_of_scope_decisions(client, app):  # noqa: F811
    r = upload(client, ("mid.png", png_bytes(128, noise=5)))
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "Refer to a clinician" in page and "A clinician must read this image before any decision" in page
    assert page.count("The model is unsure") == 1  # the reason says it once; the next line says what to do
    sid = r.headers["Location"].split("/")[2].split("?")[0]
    assert re.search(r">\d+\.\d%<", page)
    fr = client.get(f"/screenings/{sid}?lang=fr").get_data(as_text=True)
    assert re.search("\\d+,\\d\u202f%", fr) and not re.search(r">\d+\.\d%<", fr)  # 44,2 % in French
    client.get("/?lang=en")
    r = upload(client, ("flat.png", png_bytes(128, noise=0)))
    sid = r.headers["Location"].split("/")[2].split("?")[0]
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "No result: outside what the model can read" in page and "Not a frontal chest X-ray" not in page
    assert "The image is blank or nearly uniform." in page and "Check the file" in page
    assert "<meter" not in page and "heatmap.png" not in page, "no diagnosis shown when out of scope"
    assert client.get(f"/screenings/{sid}/heatmap.png").status_code == 404


@pytest.mark.parametrize("name, data, status, text", [
    ("x.png", b"", 400, "empty"),
    ("x.png", b"GIF89a" + b"\0" * 100, 415, "not a PNG, JPEG or DICOM"),
    ("x.exe", b"MZ\x90\x00" * 50, 415, "not a PNG, JPEG or DICOM"),
    ("x.png", png_bytes(50)[:60], 422, "x.png"),  # truncated: header fine, decoding fails
    ("x.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 20, 400, "JPEG"),
])
def test_bad_uploads_get_a_clear_message_and_leave_history_untouched(client, app, name, data, status, text):  # noqa: F811
    r = upload(client, (name, data))
    assert r.status_code == status
    assert text in r.get_data(as_text=True)
    assert count(app) == 0 and files_on_disk(app) == []
    assert client.get("/").status_code == 200  # still serving


@pytest.mark.parametrize("name, data, said", [
    ("x.png", b"", "x.png\u202f: le fichier est vide (0 octet)."),
    ("x.exe", b"MZ\x90\x00" * 50, "x.exe\u202f: ce n&#39;est pas une image PNG, JPEG ou DICOM"),
    ("x.png", png_bytes(50)[:60], "x.png\u202f: ce fichier ne peut pas être lu comme une image. Exportez-le à nouveau"),
])
def test_a_refused_file_is_said_in_the_page_language(client, name, data, said):  # noqa: F811
    page = upload(client, (name, data), lang="fr").get_data(as_text=True)
    assert said in page
    assert "the file is empty" not in page and "not a PNG" not in page


def test_a_bad_image_keeps_the_decoders_reason_as_its_detail(client):  # noqa: F811
    page = upload(client, ("x.png", png_bytes(50)[:60])).get_data(as_text=True)
    assert "x.png: this file cannot be read as an image." in page and "Details: " in page
    body = client.post("/api/v1/screenings", data={"file": (__import__("io").BytesIO(png_bytes(50)[:60]), "x.png")},
                       content_type="multipart/form-data").get_json()
    assert body["error"]["code"] == "bad_image" and body["error"]["message"].startswith("x.png: ")


def test_pixel_and_size_limits(tmp_path, fake):  # noqa: F811
    from edge_runtime.web import create_app

    app_ = create_app(fake, tmp_path / "d", {"MAX_PIXELS": 1000, "MAX_FILE_MB": 0.001, "MAX_REQUEST_MB": 0.05,
                                             "MAX_FILES": 2})
    c = app_.test_client()
    big = png_bytes(50, size=(40, 40), noise=0)  # 1600 px, small file
    r = upload(c, ("big.png", big))
    assert r.status_code == 413 and "megapixels" in r.get_data(as_text=True)
    r = upload(c, ("heavy.png", png_bytes(50, size=(60, 60), noise=60)))  # > 1 kB
    assert r.status_code == 413 and "the limit is 0.001 MB" in r.get_data(as_text=True)
    r = upload(c, *[(f"{i}.png", b"x") for i in range(3)])
    assert r.status_code == 400 and "limit is 2" in r.get_data(as_text=True)
    r = upload(c, ("huge.png", b"\x89PNG" + b"0" * 60_000))  # over the request limit
    assert r.status_code == 413 and "too large" in r.get_data(as_text=True)
    assert count(app_) == 0


def test_no_file_and_long_reference(client, app):  # noqa: F811
    r = upload(client)
    assert r.status_code == 400 and "Choose at least one image" in r.get_data(as_text=True)
    r = upload(client, ("a.png", png_bytes()), reference="x" * 65)
    assert r.status_code == 400 and "longer than 64" in r.get_data(as_text=True)
    assert count(app) == 0


def test_classifier_crash_is_a_clear_error_and_saves_nothing(tmp_path):
    from edge_runtime.web import create_app

    app_ = create_app(FakeClassifier(fail=True), tmp_path / "d")
    c = app_.test_client()
    r = upload(c, ("a.png", png_bytes()))
    assert r.status_code == 500 and "internal error" in r.get_data(as_text=True)
    assert count(app_) == 0 and c.get("/").status_code == 200


def test_an_unexpected_fault_is_said_in_the_pages_language(client, app, monkeypatch):  # noqa: F811
    """A fault outside the screening (here the history cannot be read) gives the error page in the page's
    language; the API keeps English with its stable code (review27 #11)."""
    def broken(*a, **k):
        raise RuntimeError("disk gone")
    monkeypatch.setattr(app.extensions["cxr"].store, "search", broken)
    r = client.get("/?lang=fr")
    html = r.get_data(as_text=True)
    assert r.status_code == 500 and "Erreur interne" in html and "disk gone" not in html
    r = client.get("/?lang=en")
    assert r.status_code == 500 and "Internal error" in r.get_data(as_text=True)


def test_form_without_csrf_token_is_refused(client, app):  # noqa: F811
    client.get("/")
    r = client.post("/screenings", data={"files": [(io.BytesIO(png_bytes()), "a.png")]},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)
    r = upload(client, ("a.png", png_bytes()), token="forged")
    assert r.status_code == 400 and count(app) == 0


def test_history_search_detail_and_csv(client, app):  # noqa: F811
    for ref, mean in (("alpha-1", 30), ("alpha-2", 220), ("beta=1", 30)):
        upload(client, (f"{ref}.png", png_bytes(mean)), reference=ref)
    html = client.get("/history").get_data(as_text=True)
    assert "3 screening(s)" in html and "alpha-1" in html and "beta=1" in html
    html = client.get("/history?reference=alpha").get_data(as_text=True)
    assert "2 screening(s)" in html and "beta=1" not in html
    assert "0 screening(s)" in client.get("/history?reference=%25").get_data(as_text=True)  # LIKE escaped
    html = client.get("/history?decision=pneumonia").get_data(as_text=True)
    assert "1 screening(s)" in html and "alpha-2" in html
    today = app.extensions["cxr"].store.search()[0][0]["created"][:10]
    assert "3 screening(s)" in client.get(f"/history?date_from={today}&date_to={today}").get_data(as_text=True)
    assert "0 screening(s)" in client.get("/history?date_to=2000-01-01").get_data(as_text=True)
    r = client.get("/history?date_from=yesterday")
    assert r.status_code == 200 and "Ignored the date" in r.get_data(as_text=True)
    r = client.get("/history.csv?reference=alpha")
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert sorted(x["reference"] for x in rows) == ["alpha-1", "alpha-2"]
    assert {"p_normal", "p_pneumonia", "p_tuberculosis", "model_version", "outcome"} <= set(rows[0])
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv").get_data(as_text=True))))
    assert [x["reference"] for x in rows if x["reference"].startswith("'")] == []
    upload(client, ("f.png", png_bytes()), reference="=HYPERLINK(1)")
    text = client.get("/history.csv").get_data(as_text=True)
    assert "'=HYPERLINK(1)" in text, "no spreadsheet formula injection"


def test_history_pagination(tmp_path, fake):  # noqa: F811
    from edge_runtime.web import create_app

    app_ = create_app(fake, tmp_path / "d", {"PAGE_SIZE": 2})
    c = app_.test_client()
    for i in range(5):
        upload(c, (f"{i}.png", png_bytes(seed=i)), reference=f"r{i}")
    p1 = c.get("/history").get_data(as_text=True)
    p3 = c.get("/history?page=3").get_data(as_text=True)
    assert "Page 1 of 3" in p1 and "r4" in p1 and "r0" not in p1 and "r0" in p3
    assert c.get("/history?page=abc").status_code == 200


def test_follow_up_outcome_and_monitoring(client, app):  # noqa: F811
    ids = []
    for mean in (30, 30, 220, 220, 128):
        r = upload(client, ("x.png", png_bytes(mean, noise=5 if mean == 128 else 20)))
        ids.append(r.headers["Location"].split("/")[2].split("?")[0])
    upload(client, ("flat.png", png_bytes(100, noise=0)))
    page = client.get(f"/screenings/{ids[0]}").get_data(as_text=True)
    tok = csrf(page)
    for sid, outcome in zip(ids, ("normal", "pneumonia", "pneumonia", "normal", "tuberculosis")):
        r = client.post(f"/screenings/{sid}/outcome", data={"csrf_token": tok, "outcome": outcome, "note": "GX"})
        assert r.status_code == 303
    assert "Confirmed outcome: Pneumonia" in client.get(f"/screenings/{ids[1]}").get_data(as_text=True)
    assert client.post(f"/screenings/{ids[0]}/outcome", data={"csrf_token": tok, "outcome": "cancer?"}
                       ).status_code == 400
    assert client.post(f"/screenings/{ids[0]}/outcome", data={"outcome": "normal"}).status_code == 400
    html = client.get("/monitoring").get_data(as_text=True)
    assert "5 screening(s) with a confirmed outcome" in html
    assert 'id="screening-figures"' in html and 'id="model-figures"' in html and "95% interval" in html
    # shares: 1 refer and 1 out of scope among 6 images
    assert "16.7%" in html
    # a bundle without the validation films' decision mix: the page says the mix cannot be compared
    assert 'id="drift-mix-off"' in html and "carries no validation decision mix" in html
    # clearing an outcome, said on the page it returns to
    r = client.post(f"/screenings/{ids[4]}/outcome", data={"csrf_token": tok, "outcome": ""})
    assert app.extensions["cxr"].store.get(ids[4])["outcome"] is None
    assert "Outcome cleared" in client.get(r.headers["Location"]).get_data(as_text=True)
    # as a browser sends it: the saved note still in its box (review27 #9: refused before, the outcome stayed)
    r = client.post(f"/screenings/{ids[3]}/outcome", data={"csrf_token": tok, "outcome": "", "note": "GX"})
    assert r.status_code == 303 and app.extensions["cxr"].store.get(ids[3])["outcome"] is None
    assert app.extensions["cxr"].store.get(ids[3])["outcome_note"] == ""
    # a new note with no outcome is still refused, and kept on the page
    r = client.post(f"/screenings/{ids[2]}/outcome", data={"csrf_token": tok, "outcome": "", "note": "new words"})
    assert r.status_code == 400 and "new words" in r.get_data(as_text=True)
    assert app.extensions["cxr"].store.get(ids[2])["outcome"] == "pneumonia"
    # each outcome cleared or changed is a line in the device's audit trail, in the page's language
    client.post(f"/screenings/{ids[2]}/outcome", data={"csrf_token": tok, "outcome": "normal", "note": "GX"})
    audit = client.get("/monitoring").get_data(as_text=True).split('id="audit"')[1].split("</ul>")[0]
    assert audit.count("<li>") == 3 and "outcome changed" in audit and audit.count("outcome cleared") == 2
    assert f"screening {ids[2]}: Pneumonia [GX] -&gt; Normal [GX]" in audit
    assert f"screening {ids[4]}: Tuberculosis [GX] cleared" in audit
    fr = client.get("/monitoring?lang=fr").get_data(as_text=True)
    assert "issue confirmée modifiée" in fr and f"dépistage {ids[2]}\u202f: Pneumonie [GX] -&gt; Normal [GX]" in fr


def test_model_page_card_metrics_thresholds(client):  # noqa: F811
    html = client.get("/model").get_data(as_text=True)
    assert "Fake model card" in html and "<strong>Intended use:</strong>" in html
    assert "&lt;script&gt;" in html and "<script>alert" not in html, "the card is escaped"
    assert 'id="metrics"' in html and "siteA" in html and "siteB" in html and "all sources" in html
    assert 'id="thresholds"' in html and "0.300" in html
    assert "Intended use" in html and "not a diagnosis" in html.lower()
    assert "NO" in html and "tflite_int8" in html  # not validated, failed format named
    assert 'id="card-language"' not in html and '<article class="card modelcard" lang="en">' in html


def test_the_french_model_page_says_the_model_card_is_in_english(client):  # noqa: F811
    """The card travels with the model in English (convert/card.py) and is not translated: a French reader is told
    so beside it, and the card is marked lang="en" (a screen reader reads it as English)."""
    card = client.get("/model?lang=fr").get_data(as_text=True).split("<h2>Fiche du modèle</h2>")[1]
    note = card.split('id="card-language">')[1].split("</p>")[0]
    assert "en anglais" in note and card.index('id="card-language"') < card.index('<article class="card modelcard" lang="en">')


def test_the_synthetic_model_banner_is_in_the_pages_language(client):  # noqa: F811
    fr = client.get("/?lang=fr").get_data(as_text=True).split('id="banner"')[1].split("</div>")[0]
    assert "DONNÉES SYNTHÉTIQUES" in fr and "modèle de test" in fr
    assert "SYNTHETIC" not in fr and "NOT FOR CLINICAL USE" not in fr  # no English from the model's metadata
    en = client.get("/?lang=en").get_data(as_text=True).split('id="banner"')[1].split("</div>")[0]
    assert "SYNTHETIC DATA - NOT FOR CLINICAL USE: test model" in en


def test_validated_real_model_shows_no_banner(tmp_path):
    from edge_runtime.web import create_app

    c = create_app(FakeClassifier(synthetic=False, validated=True), tmp_path / "d").test_client()
    assert 'id="banner"' not in c.get("/").get_data(as_text=True)


def test_french_and_language_cookie(client):  # noqa: F811
    r = client.get("/?lang=fr")
    assert "Dépister une radiographie thoracique" in r.get_data(as_text=True)
    assert "lang=fr" in r.headers.get("Set-Cookie", "")
    assert 'lang="fr"' in client.get("/history").get_data(as_text=True)  # remembered
    r = client.get("/?lang=en")
    assert "Screen a chest X-ray" in r.get_data(as_text=True)


def test_accept_language(app):  # noqa: F811
    c = app.test_client()
    assert "Historique" in c.get("/history", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).get_data(as_text=True)


def test_not_found_pages(client):  # noqa: F811
    assert client.get("/screenings/0123abc").status_code == 404
    assert client.get("/screenings/../etc").status_code == 404
    assert client.get("/screenings/abc/other.png").status_code == 404
    assert client.get("/nope").status_code == 404
    assert client.put("/screenings").status_code == 405


def test_concurrent_uploads_one_inference_at_a_time(tmp_path):
    """Threads posting different images at once: the (lock-free) fake sees one call at a time, and every
    result belongs to its own image."""
    from edge_runtime.web import create_app

    fk = FakeClassifier(delay_s=0.02)
    app_ = create_app(fk, tmp_path / "d")
    results, errors = {}, []

    def worker(i):
        c = app_.test_client()
        mean = 20 + 25 * i
        r = upload(c, ("x.png", png_bytes(mean, seed=i)), reference=f"c{i}")
        if r.status_code != 303:
            errors.append(r.status_code)
            return
        results[i] = app_.extensions["cxr"].store.get(r.headers["Location"].split("/")[2].split("?")[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(results) == 8 and fk.max_active == 1
    for i, rec in results.items():
        assert rec["reference"] == f"c{i}"
        want = fk.classify(png_bytes(20 + 25 * i, seed=i)).probs
        assert rec["probs"] == pytest.approx(want)


def _upload_form_limits(client, lang):  # noqa: F811
    """The upload form's data-* attributes (what app.js checks a choice of files against), unescaped."""
    import html as H

    page = client.get(f"/?lang={lang}").get_data(as_text=True)
    form = re.search(r'<form[^>]*id="upload-form"[^>]*>', page).group(0)
    return {k: H.unescape(v) for k, v in re.findall(r'(data-[a-z-]+)="([^"]*)"', form)}


def test_upload_form_says_its_limits_in_the_page_language(client, app):  # noqa: F811
    cfg = app.config
    attrs = _upload_form_limits(client, "fr")
    assert int(attrs["data-max-files"]) == cfg["MAX_FILES"]
    assert int(attrs["data-max-file-bytes"]) == int(cfg["MAX_FILE_MB"] * 1e6)
    assert int(attrs["data-max-total-bytes"]) == cfg["MAX_CONTENT_LENGTH"]
    assert "la limite est de 200 Mo d'un coup" in attrs["data-msg-total"] and "%SIZE%" in attrs["data-msg-total"]
    assert "%NAME%" in attrs["data-msg-file"] and "40 Mo par fichier" in attrs["data-msg-file"]
    page = client.get("/?lang=en").get_data(as_text=True)
    assert "up to 20 files, 40 MB and 50 megapixels each, 200 MB in all." in page



def test_saving_an_outcome_is_confirmed_and_a_note_without_one_is_not_lost(client, app):  # noqa: F811
    sid = upload(client, ("f.png", png_bytes(200))).headers["Location"].split("/")[2].split("?")[0]
    tok = csrf(client.get(f"/screenings/{sid}").get_data(as_text=True))
    r = client.post(f"/screenings/{sid}/outcome?lang=fr", data={"csrf_token": tok, "outcome": "", "note": "GX positif"})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert "Rien n&#39;a été enregistré" in page and 'value="GX positif"' in page  # said, and the note kept
    assert app.extensions["cxr"].store.get(sid)["outcome_note"] == ""
    r = client.post(f"/screenings/{sid}/outcome", data={"csrf_token": tok, "outcome": "tuberculosis", "note": "GX"})
    where = r.headers["Location"]  # back at the follow-up section, not the top of a long page (review28 #5)
    assert r.status_code == 303 and "outcome_saved=1" in where and where.endswith("#followup")
    page = client.get(where.split("#")[0] + "&lang=fr").get_data(as_text=True)
    assert f'action="/screenings/{sid}/outcome#followup"' in page and 'id="followup"' in page
    assert 'id="outcome-saved"' in page and "Issue enregistrée" in page
    assert "Issue enregistrée" not in client.get(f"/screenings/{sid}?lang=fr").get_data(as_text=True)
    assert app.extensions["cxr"].store.get(sid)["outcome_note"] == "GX"


def test_the_same_file_uploaded_again_is_pointed_out_with_its_earlier_screening(client):  # noqa: F811
    data = png_bytes(200, seed=11)
    first = upload(client, ("a.png", data), reference="P-1").headers["Location"].split("/")[2].split("?")[0]
    other = upload(client, ("b.png", png_bytes(200, seed=12))).headers["Location"].split("/")[2].split("?")[0]
    again = upload(client, ("a-again.png", data), reference="P-2").headers["Location"].split("/")[2].split("?")[0]
    page = client.get(f"/screenings/{again}?lang=fr").get_data(as_text=True)
    assert 'id="same-file"' in page and "Le même fichier a déjà été dépisté" in page
    assert f'href="/screenings/{first}"' in page and "P-1" in page and f'href="/screenings/{other}"' not in page
    assert f'href="/screenings/{again}"' in client.get(f"/screenings/{first}").get_data(as_text=True)
    assert 'id="same-file"' not in client.get(f"/screenings/{other}").get_data(as_text=True)


def test_a_history_row_without_a_reference_shows_the_file_name(client):  # noqa: F811
    upload(client, ("ward-3-bed-12.png", png_bytes(40, seed=21)))
    upload(client, ("x.png", png_bytes(41, seed=22)), reference="REF-77")
    page = client.get("/history").get_data(as_text=True)
    assert '<span class="muted" title="no reference given: the file&#39;s name">ward-3-bed-12.png</span>' in page
    assert '<td>REF-77 <span class="muted">(x.png)</span></td>' in page  # a batch's films told apart (review28 #3)


def test_unknown_pages_and_methods_are_said_in_the_page_language(client):  # noqa: F811
    client.get("/?lang=fr")
    r = client.get("/no/such/page")
    assert r.status_code == 404 and "Page ou dépistage introuvable." in r.get_data(as_text=True)
    assert "The requested URL was not found" not in r.get_data(as_text=True)
    r = client.get("/screenings")  # the upload form's address takes POST only
    assert r.status_code == 405 and "n&#39;accepte pas ce type de requête" in r.get_data(as_text=True)
    assert "The method is not allowed" not in r.get_data(as_text=True)
    r = client.get("/api/v1/screenings/zzz")  # the API keeps its JSON error
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"
