"""Drift on the device's monitoring page: films from the other synthetic site (a new X-ray unit, as it were)
raise the alert through the real upload path and the real runtime; films from the home site do not. The page
also says which thresholds are active (a site profile or the bundle's own)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from edge_runtime.classifier import Classifier
from edge_runtime.site import SiteProfile
from edge_runtime.web.monitoring import DRIFT_WINDOW, MIX_ALPHA, MIX_MIN_FILMS, drift, mix_drift
from tests.site_fakes import home_bundle, phantom_set
from tests.test_web_fakes import csrf


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    rows = phantom_set(root / "films", per_class=150)
    bundle = home_bundle(root / "films", rows["synthetic_a"], root / "bundle", with_scope=True)
    home_unseen = rows["synthetic_a"][1::2]  # home_bundle fitted on the even rows
    rng = np.random.default_rng(0)  # the manifests list the films class by class; a clinic's stream is mixed
    return {"films": root / "films", "bundle": bundle, "home": [home_unseen[i] for i in rng.permutation(len(home_unseen))],
            "other": [rows["synthetic_b"][i] for i in rng.permutation(len(rows["synthetic_b"]))]}


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
    reference = app.extensions["cxr"].meta.reference  # the page passes the artifact's reference
    m = drift(rows, reference=reference)["mix_vs_validation"]
    assert m["p"] < MIX_ALPHA  # the other site's mix is far from the validation films'; tested (an alert) only once
    assert m["moved"] or m["n"] < m["min"]  # MIX_MIN_FILMS in-scope films are in the window (many are out of scope)
    scoped = [r for r in rows if r["decision"] != "out_of_scope"][-m["min"]:]  # in-scope films, most from site B
    mix = drift(scoped, reference=reference)
    assert "drift.alert_mix" in [k for k, _ in mix["alerts"]] and mix["mix_vs_validation"]["tested"]
    html = client.get("/monitoring").get_data(as_text=True)
    assert 'id="drift-alert"' in html and "DRIFT ALERT" in html and "unlike the training films" in html
    assert 'id="drift-mix"' in html  # the mix against the validation films' is shown (its alert: above)
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
    assert 'id="drift-mix-off"' in html and "active site profile changes the decision rule" in html
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


def test_the_home_stream_keeps_the_validation_mix(world, tmp_path):
    """No site profile: the page tests the decision mix against the validation films' and stays quiet at home."""
    app, client = _serve(world["bundle"], tmp_path / "data")
    _stream(client, world["films"], world["home"][:DRIFT_WINDOW])
    m = drift(app.extensions["cxr"].store.rows_for_monitoring(), reference=app.extensions["cxr"].meta.reference)
    mix = m["mix_vs_validation"]
    assert mix["tested"] and mix["p"] > MIX_ALPHA and m["alerts"] == []
    html = client.get("/monitoring").get_data(as_text=True)
    assert 'id="drift-mix"' in html and "Chi-square test of the mix" in html and 'id="drift-quiet"' in html


def test_mix_drift_fires_on_a_shifted_mix_only_beyond_chance():
    ref = {"decisions": {"normal": 100, "pneumonia": 60, "tuberculosis": 30, "refer": 10}}

    def rows(**counts):
        return [{"decision": k, "scope_distance": None} for k, n in counts.items() for _ in range(n)]

    same = mix_drift(rows(normal=25, pneumonia=15, tuberculosis=7, refer=3), ref)
    assert same["tested"] and not same["moved"] and same["p"] > 0.5
    shifted = drift(rows(normal=10, pneumonia=10, tuberculosis=20, refer=10), reference=ref)
    assert shifted["mix_vs_validation"]["moved"] and shifted["mix_vs_validation"]["p"] < MIX_ALPHA
    (key, fields), = shifted["alerts"]
    assert key == "drift.alert_mix" and fields["what"] == "normal" and (fields["now"], fields["then"]) == (0.2, 0.5)
    # too few in-scope decisions (out-of-scope films do not count): shown, not tested
    few = mix_drift(rows(tuberculosis=MIX_MIN_FILMS - 1, out_of_scope=11), ref)
    assert not few["tested"] and not few["moved"] and few["out_of_scope"]["value"] == 11 / 50
    assert mix_drift(rows(normal=50), None) == {**mix_drift(rows(normal=50), {}), "available": False}
    assert drift(rows(normal=50))["alerts"] == []  # no reference (an older bundle, or a site profile): no test


def test_chi_square_tail_matches_known_values():
    from edge_runtime.reference import chi2_sf

    for x, df, want in [(3.841, 1, 0.05), (5.991, 2, 0.05), (11.345, 3, 0.01), (13.277, 4, 0.01), (0.0, 3, 1.0)]:
        assert chi2_sf(x, df) == pytest.approx(want, abs=2e-4)
