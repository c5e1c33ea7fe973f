"""Drift on the device's monitoring page: films from the other synthetic site (a new X-ray unit, as it were)
raise the alert through the real upload path and the real runtime; films from the home site do not. The page
also says which thresholds are active (a site profile or the bundle's own)."""
from __future__ import annotations

import io

import pytest

from edge_runtime.classifier import Classifier
from edge_runtime.site import SiteProfile
from edge_runtime.web.monitoring import DRIFT_WINDOW, drift
from tests.site_fakes import home_bundle, phantom_set
from tests.test_web_fakes import csrf


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    rows = phantom_set(root / "films", per_class=150)
    bundle = home_bundle(root / "films", rows["synthetic_a"], root / "bundle", with_scope=True)
    home_unseen = rows["synthetic_a"][1::2]  # home_bundle fitted on the even rows
    return {"films": root / "films", "bundle": bundle, "home": home_unseen, "other": rows["synthetic_b"]}


def _serve(bundle, data_dir):
    from edge_runtime.web import create_app

    app = create_app(Classifier.from_bundle(bundle), data_dir)
    return app, app.test_client()


def _stream(client, films, rows, batch: int = 10) -> None:
    for i in range(0, len(rows), batch):
        tok = csrf(client.get("/").get_data(as_text=True))
        files = [(io.BytesIO((films / r["file"]).read_bytes()), r["file"].split("/")[-1]) for r in rows[i:i + batch]]
        r = client.post("/screenings", data={"csrf_token": tok, "reference": "", "files": files},
                        content_type="multipart/form-data")
        assert r.status_code in (200, 303), r.get_data(as_text=True)[:300]


def test_drift_alert_fires_on_films_from_the_other_site(world, tmp_path):
    app, client = _serve(world["bundle"], tmp_path / "data")
    _stream(client, world["films"], world["home"][:DRIFT_WINDOW])  # the device's first weeks: home-like films
    _stream(client, world["films"], world["other"][:DRIFT_WINDOW])  # then a new X-ray unit
    rows = app.extensions["cxr"].store.rows_for_monitoring()
    assert len(rows) == 2 * DRIFT_WINDOW and all(r["scope_distance"] is not None for r in rows)
    d = drift(rows)
    keys = [k for k, _ in d["alerts"]]
    assert "drift.alert_past" in keys and d["past"]["ci"][0] > 0.02
    assert d["mean_distance"] > d["baseline_mean_distance"]
    html = client.get("/monitoring").get_data(as_text=True)
    assert 'id="drift-alert"' in html and "DRIFT ALERT" in html and "unlike the training films" in html
    assert "the bundle&#39;s own (no site profile)" in html or "the bundle's own (no site profile)" in html


def test_drift_stays_quiet_on_the_home_site_and_shows_the_active_profile(world, tmp_path):
    import shutil

    bundle = shutil.copytree(world["bundle"], tmp_path / "bundle")
    meta = Classifier.from_bundle(bundle).metadata
    SiteProfile(thresholds={"tuberculosis": 0.99}, made_by="Dr Okafor",
                created="2026-12-01T10:00:00+00:00", films={"normal": 40, "tuberculosis": 35}, data="clinic A",
                made_for={"model_name": meta.model_name, "model_version": meta.model_version,
                          "data_hash": meta.data_hash, "format": "onnx_fp32"}).save(bundle)
    app, client = _serve(bundle, tmp_path / "data")
    _stream(client, world["films"], world["home"][:2 * DRIFT_WINDOW])
    d = drift(app.extensions["cxr"].store.rows_for_monitoring())
    assert d["available"] and d["past"]["n"] == DRIFT_WINDOW and d["alerts"] == []
    html = client.get("/monitoring").get_data(as_text=True)
    assert 'id="drift-quiet"' in html and 'id="drift-alert"' not in html
    assert "Active site profile: site profile by Dr Okafor" in html
    assert "site profile by Dr Okafor" in client.get("/model").get_data(as_text=True)
    api = client.get("/api/v1/model").get_json()
    assert api["site_profile"].startswith("site profile by Dr Okafor") and api["thresholds"]["tuberculosis"] == 0.99
    assert meta.thresholds["tuberculosis"] != 0.99


def test_drift_without_distances_and_a_referral_rise():
    def row(decision, dist=None):
        return {"decision": decision, "scope_distance": dist}

    none = drift([row("normal")] * 30)  # a model without input-check statistics: nothing to track, no alert
    assert none["available"] is False and none["alerts"] == [] and none["past"]["n"] == 0
    rows = [row("normal", 0.5)] * 50 + [row("refer", 0.5)] * 25 + [row("normal", 0.5)] * 25
    d = drift(rows)
    assert [k for k, _ in d["alerts"]] == ["drift.alert_refer"]
    assert d["refer"]["value"] == 0.5 and d["baseline_refer"]["value"] == 0.0


def test_an_old_database_gains_the_distance_column(tmp_path):
    import re
    import sqlite3

    from edge_runtime.web import store as S

    old = re.sub(r",\n\s*scope_distance REAL[^\n]*", "", S.SCHEMA)  # the schema before drift tracking
    assert "scope_distance" not in old
    (tmp_path / "data").mkdir()
    db = sqlite3.connect(tmp_path / "data" / "screenings.db")
    db.executescript(old)
    db.execute("INSERT INTO screenings (id, created, image_kind, width, height, sha256, labels, probs, label, decision,"
               " in_scope, has_heatmap, model_name, model_version) VALUES ('a', '2026-11-30T10:00:00+00:00', 'png',"
               " 64, 64, 'x', '[]', '{}', 'normal', 'normal', 1, 0, 'm', '1')")
    db.commit()
    db.close()
    rows = S.Store(tmp_path / "data").rows_for_monitoring()
    assert len(rows) == 1 and rows[0]["scope_distance"] is None
    assert drift(rows)["available"] is False
