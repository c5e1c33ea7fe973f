"""The page says the decision's reason in the reader's language (page, history, CSV), says what is known about an
out-of-scope film and what to do, keeps old history rows readable, draws the heatmap with a legend (or says why
not), and shows the thresholds the device applies."""
from __future__ import annotations

import csv
import io
import json
import sqlite3

from test_web_fakes import FakeClassifier, app, client, csrf, fake, png_bytes, upload  # noqa: F401


def sid_of(r) -> str:
    return r.headers["Location"].split("/")[2].split("?")[0]


def test_reason_is_stored_as_a_code_and_said_in_french(client, app):  # noqa: F811
    sid = sid_of(upload(client, ("bright.png", png_bytes(215))))
    rec = app.extensions["cxr"].store.get(sid)
    assert rec["reason_code"] == "most_probable" and 0.5 < rec["reason_args"]["p"] <= 1
    p = f"{rec['reason_args']['p']:.2f}"
    en = client.get(f"/screenings/{sid}?lang=en").get_data(as_text=True)
    assert f"Most probable class ({p})." in en
    fr = client.get(f"/screenings/{sid}?lang=fr").get_data(as_text=True)
    assert f"Classe la plus probable ({p.replace('.', ',')})." in fr and "Most probable" not in fr
    hist = client.get("/history?lang=fr").get_data(as_text=True)
    assert f"Classe la plus probable ({p.replace('.', ',')})." in hist
    rows = list(csv.DictReader(io.StringIO(client.get("/history.csv?lang=fr").get_data(as_text=True))))
    assert rows[0]["reason"] == f"Classe la plus probable ({p.replace('.', ',')})."
    assert rows[0]["reason_code"] == "most_probable"


def test_out_of_scope_says_the_cause_and_what_to_do_in_both_languages(client):  # noqa: F811
    r = upload(client, ("unlike-1.png", png_bytes(100)))
    sid = sid_of(r)
    en = client.get(f"/screenings/{sid}?lang=en").get_data(as_text=True)
    assert "unlike the films this model was trained on (distance 1.84 times the limit)" in en
    assert "refer the patient to a clinician" in en.lower() and "does not suit this clinic" in en
    assert "Not a frontal chest X-ray" not in en and "check that it is a frontal" not in en.lower()
    fr = client.get(f"/screenings/{sid}?lang=fr").get_data(as_text=True)
    assert "ne ressemble pas aux films sur lesquels ce modèle a été entraîné (distance 1,84 fois la limite)" in fr
    assert "ne convient pas à l&#39;appareil de radiographie du centre" in fr
    flat = client.get(f"/screenings/{sid_of(upload(client, ('flat.png', png_bytes(128, noise=0))))}?lang=fr")
    assert "L&#39;image est vide ou presque uniforme." in flat.get_data(as_text=True)
    # the export gives no class and no probabilities for it either (no diagnosis was given)
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(client.get("/history.csv").get_data(as_text=True)))}
    assert rows[sid]["decision"] == "out_of_scope" and rows[sid]["reason_code"] == "oos_unlike_training"
    assert rows[sid]["label"] == "" and all(rows[sid][f"p_{k}"] == "" for k in ("normal", "pneumonia", "tuberculosis"))


def test_old_history_rows_keep_their_text_after_the_schema_migration(tmp_path):
    from edge_runtime.web import create_app
    from edge_runtime.web.store import SCHEMA

    data = tmp_path / "data"
    data.mkdir()
    old_schema = SCHEMA.replace("    reason_code TEXT NOT NULL DEFAULT '',      -- edge_runtime.operating_point.REASONS_EN key\n", "")
    old_schema = "\n".join(line for line in old_schema.splitlines() if "reason_args" not in line and "heatmap_grid" not in line)
    db = sqlite3.connect(data / "screenings.db")
    db.executescript(old_schema)
    assert "reason_code" not in {r[1] for r in db.execute("PRAGMA table_info(screenings)")}
    db.execute("INSERT INTO screenings (id, created, image_kind, width, height, sha256, labels, probs, label, decision,"
               " reason, in_scope, has_heatmap, model_name, model_version) VALUES ('abc123', '2026-11-30T10:00:00+00:00',"
               " 'png', 10, 10, 'x', ?, ?, 'normal', 'normal', 'an old English reason', 1, 0, 'm', '1')",
               (json.dumps(["normal", "pneumonia", "tuberculosis"]), json.dumps({"normal": 0.9})))
    db.commit()
    db.close()
    app_ = create_app(FakeClassifier(), data)
    c = app_.test_client()
    page = c.get("/screenings/abc123?lang=fr").get_data(as_text=True)
    assert "an old English reason" in page
    assert app_.extensions["cxr"].store.get("abc123")["reason_args"] == {}
    sid = sid_of(upload(c, ("bright.png", png_bytes(215))))  # new rows go into the migrated table
    assert app_.extensions["cxr"].store.get(sid)["reason_code"] == "most_probable"


def test_heatmap_has_a_legend_and_an_opacity_slider(client):  # noqa: F811
    page = client.get(upload(client, ("bright.png", png_bytes(215))).headers["Location"]).get_data(as_text=True)
    assert 'class="legend"' in page and "One scale for every film read by this model" in page
    assert 'type="range"' in page and 'class="opacity"' in page and "heatmap.png" in page


def test_a_coarse_feature_map_is_said_not_drawn(tmp_path):
    from edge_runtime.web import create_app

    c = create_app(FakeClassifier(grid=2), tmp_path / "data").test_client()
    r = upload(c, ("bright.png", png_bytes(215)))
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "No heatmap: this model&#39;s feature map is only 2x2 cells" in page
    assert "heatmap.png" not in page and 'class="legend"' not in page


def test_model_page_shows_the_thresholds_applied_and_the_check_detail(client):  # noqa: F811
    page = client.get("/model").get_data(as_text=True)
    assert "Decision thresholds applied on this device" in page
    assert 'data-key="tuberculosis">0.300<' in page and 'data-key="refer_below">0.500<' in page
    assert "Parity check failed: tflite_int8" in page and 'id="card-note"' in page
    home = client.get("/").get_data(as_text=True)
    assert "parity" not in home.lower() and "tflite_int8" not in home  # engineer's detail: model page only
    assert "details on the Model page" in home


def test_each_decision_says_what_to_do_next_and_that_it_is_not_a_diagnosis(client):  # noqa: F811
    normal = sid_of(upload(client, ("dark.png", png_bytes(30))))
    pneumonia = sid_of(upload(client, ("bright.png", png_bytes(215))))
    refer = sid_of(upload(client, ("mid.png", png_bytes(128))))
    page = client.get(f"/screenings/{normal}?lang=en").get_data(as_text=True)
    assert f'id="next-{normal}"' in page and "This does not rule them out" in page
    assert "A screening aid, not a diagnosis" in page.split('class="facts"')[1]  # beside the decision, not only below
    fr = client.get(f"/screenings/{pneumonia}?lang=fr").get_data(as_text=True)
    assert "Un clinicien examine le patient et lit le film avant tout traitement." in fr
    assert f'id="next-{refer}"' not in client.get(f"/screenings/{refer}").get_data(as_text=True)  # refer: its own text
