"""The site profile (edge_runtime.site): written beside a bundle, verified, applied by Classifier.from_bundle as
one more input to the same operating point, refused with a clear reason, undone by removing the file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime import bundle as B
from edge_runtime.classifier import Classifier
from edge_runtime.site import SITE_FILE, SiteProfile, SiteProfileError
from tests.fake_bundle import make_bundle


def _profile(meta, **kw) -> SiteProfile:
    base = dict(thresholds={"tuberculosis": 0.2}, made_for={"model_name": meta.model_name, "model_version":
                meta.model_version, "data_hash": meta.data_hash, "format": "onnx_fp32"}, made_by="Dr Test",
                created="2026-12-01T10:00:00+00:00", films={"normal": 40, "tuberculosis": 35}, data="clinic X, Nov")
    base.update(kw)
    return SiteProfile(**base)


@pytest.fixture()
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


def test_profile_applied_by_from_bundle_and_removed(bundle):
    clf = Classifier.from_bundle(bundle)
    assert clf.site_profile is None and clf.operating_point.thresholds["tuberculosis"] == 0.5
    rng = np.random.default_rng(0)  # a textured mid-grey film (a flat one fails the input check)
    grey = np.clip(rng.normal(118, 20, (64, 64)), 0, 255).astype(np.uint8)  # fake model: P(TB) ~ 0.19 here
    assert clf.classify(grey).decision == "normal"
    model_bytes = {p.name: p.read_bytes() for p in bundle.iterdir()}

    path = _profile(clf.metadata, temperature=1.5).save(bundle)
    assert path.name == SITE_FILE
    clf2 = Classifier.from_bundle(bundle)  # the bundle still verifies: site.json is checked on its own
    assert clf2.site_profile is not None and clf2.site_profile.made_by == "Dr Test"
    assert clf2.operating_point.thresholds == {"tuberculosis": 0.2, "refer_below": 0.5}
    assert clf2.operating_point.temperature == 1.5
    assert clf2.metadata.thresholds["tuberculosis"] == 0.5  # the model's own values are untouched
    assert clf2.classify(grey).decision == "tuberculosis"
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.name != SITE_FILE} == model_bytes

    path.unlink()
    clf3 = Classifier.from_bundle(bundle)
    assert clf3.site_profile is None and clf3.operating_point == clf.operating_point
    assert clf3.classify(grey).decision == clf.classify(grey).decision


def test_tampered_profile_is_refused(bundle):
    clf = Classifier.from_bundle(bundle)
    path = _profile(clf.metadata).save(bundle)
    d = json.loads(path.read_text())
    d["thresholds"]["tuberculosis"] = 0.01
    path.write_text(json.dumps(d))
    with pytest.raises(SiteProfileError, match="checksum mismatch"):
        Classifier.from_bundle(bundle)


def test_profile_for_another_bundle_is_refused(bundle):
    clf = Classifier.from_bundle(bundle)
    p = _profile(clf.metadata)
    _profile(clf.metadata, made_for={**p.made_for, "model_version": "9"}).save(bundle)
    with pytest.raises(SiteProfileError, match="model_version '9'.*do not apply"):
        Classifier.from_bundle(bundle)
    _profile(clf.metadata, made_for={**p.made_for, "format": "tflite_int8"}).save(bundle)
    with pytest.raises(SiteProfileError, match="tflite_int8 artifact but this device loads onnx_fp32"):
        Classifier.from_bundle(bundle)
    _profile(clf.metadata, thresholds={"covid": 0.3}).save(bundle)
    with pytest.raises(SiteProfileError, match="not classes of this model"):
        Classifier.from_bundle(bundle)


def test_newer_schema_and_bad_values_are_refused(bundle, tmp_path):
    clf = Classifier.from_bundle(bundle)
    d = _profile(clf.metadata).content()
    d["schema_version"] = 99
    from edge_runtime.site import checksum
    d["sha256"] = checksum({k: v for k, v in d.items() if k != "sha256"})
    (bundle / SITE_FILE).write_text(json.dumps(d))
    with pytest.raises(SiteProfileError, match="schema 99 is newer"):
        Classifier.from_bundle(bundle)
    with pytest.raises(SiteProfileError, match="not a number in \\[0, 1\\]"):
        _profile(clf.metadata, thresholds={"tuberculosis": 1.7})
    with pytest.raises(SiteProfileError, match="who made it"):
        _profile(clf.metadata, made_by=" ")
    (bundle / SITE_FILE).write_text("{not json")
    with pytest.raises(SiteProfileError, match="cannot read"):
        Classifier.from_bundle(bundle)


def test_other_unlisted_files_are_still_refused(bundle):
    (bundle / "extra.onnx").write_bytes(b"x")
    with pytest.raises(B.BundleError, match="not listed in SHA256SUMS: extra.onnx"):
        B.verify_sums(bundle)


def _overconfident(n: int, sharpen: float, seed: int = 0, random_labels: bool = False, spread: float = 0.3):
    """Labels drawn from softmax(z) and scores softmax(sharpen * z): the best temperature is about ``sharpen``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, spread, (n, 3))  # narrow enough that sharpen * z stays clear of the 1e-7 clip
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 3, n) if random_labels else np.array([rng.choice(3, p=q) for q in p])
    raw = np.exp(sharpen * z)
    return y, raw / raw.sum(1, keepdims=True)


def test_fit_temperature_past_the_usual_grid_is_found_and_said():
    from edge_runtime import operating_point as OP

    y, raw = _overconfident(3000, 12.0)
    r = OP.fit_temperature_report(y, raw)
    assert r["widened"] and not r["at_edge"] and 10 < r["temperature"] < 15  # the old grid stopped at 8.0
    assert OP.fit_temperature(y, raw) == r["temperature"] and r["searched"] == [0.25, 64.0]
    assert "outside the usual range 0.25-8" in r["warning"] and "more confident than they are right" in r["warning"]
    y, raw = _overconfident(3000, 12.0, random_labels=True)  # scores unrelated to the labels: T runs to the edge
    r = OP.fit_temperature_report(y, raw)
    assert r["at_edge"] and r["temperature"] == pytest.approx(64.0) and "do not rely on this temperature" in r["warning"]
    y, raw = _overconfident(3000, 2.0)  # an ordinary fit: no search past the grid, no warning
    r = OP.fit_temperature_report(y, raw)
    assert not r["widened"] and r["warning"] == "" and 1.6 < r["temperature"] < 2.5
    y, raw = _overconfident(3000, 1 / 6)  # far under-confident: below the grid
    r = OP.fit_temperature_report(y, raw)
    assert r["widened"] and 0.12 < r["temperature"] < 0.22 and "less confident" in r["warning"]


def test_a_site_temperature_past_the_grid_warns_in_the_profile():
    from edge_runtime.operating_point import OperatingPoint
    from edge_runtime.site_eval import propose

    y, raw = _overconfident(900, 12.0, seed=1)
    films = {"y": y, "raw": raw, "in_scope": np.ones(len(y), bool)}
    op = OperatingPoint(("normal", "pneumonia", "tuberculosis"), 1.0, {"tuberculosis": 0.999, "refer_below": 0.99})
    prop = propose(films, op, 0.9, fit_temperature=True)
    assert prop["temperature"] > 8 and any("outside the usual range" in w for w in prop["warnings"])


def test_a_profile_kept_in_the_data_folder_of_a_read_only_bundle(bundle, tmp_path):
    """The kit installs the bundle read-only: the page's profile lives in the data folder (``serve
    --site-profile``), is read from there and written there (review27 #6); at the next install, one that does
    not hold for the new bundle is set aside, and one shipped in the bundle is copied there (``carry_over``)."""
    from edge_runtime.site import carry_over

    data = tmp_path / "data"
    data.mkdir()
    mine = data / SITE_FILE
    clf = Classifier.from_bundle(bundle, site_profile=mine)
    assert clf.site_profile is None and clf.site_path == mine
    _profile(clf.metadata).save(mine)
    clf = Classifier.from_bundle(bundle, site_profile=mine)
    assert clf.site_profile is not None and clf.operating_point.thresholds["tuberculosis"] == 0.2
    assert Classifier.from_bundle(bundle).site_profile is None  # beside the bundle: none

    assert carry_over(bundle, data, "onnx_fp32") == [f"this device's site profile {mine} is kept: it was made "
                                                     "for this model"]
    said = carry_over(bundle, data, "tflite_int8")  # the device now serves another artifact
    assert not mine.exists() and (data / "site.json.previous").is_file() and "set aside" in said[0]
    assert Classifier.from_bundle(bundle, site_profile=mine).site_profile is None  # the service starts
    _profile(clf.metadata, made_by="Dr Shipped").save(bundle)  # a profile made on the workstation, shipped
    assert "copied" in carry_over(bundle, data, "")[0]
    assert Classifier.from_bundle(bundle, site_profile=mine).site_profile.made_by == "Dr Shipped"


def test_a_refusal_is_said_wholly_in_the_readers_language(tmp_path):
    """review28 page #7: the French refusal carried English inside it ("accuracy of the decisions not referred ...",
    "1 normal, 0 pneumonia"); the reasons and film counts now come as codes and counts, worded per language."""
    from flask import g

    from edge_runtime.site_eval import WORSE_EN, ProfileRefused
    from edge_runtime.web import create_app
    from edge_runtime.web.site_views import refusal_text
    from test_web_fakes import FakeClassifier

    app = create_app(FakeClassifier(), tmp_path / "data")
    fields = {"before": 0.9, "after": 0.683, "ref_before": 0.1, "ref_after": 0.1}  # raw: each language writes them
    worse = ProfileRefused("x", "worse", {"why": WORSE_EN["kept_accuracy"].format(**fields), "why_code": "kept_accuracy",
                                         "why_fields": fields})
    small = ProfileRefused("x", "too_small", reasons=[("refer", {"min": 30, "films": "1 normal, 0 pneumonia",
                                                                 "counts": {"normal": 1, "pneumonia": 0}})])
    with app.test_request_context("/monitoring?lang=fr"):
        g.lang = "fr"
        fr_worse, fr_small = refusal_text(worse), refusal_text(small)
        g.lang = "en"
        en_worse = refusal_text(worse)
    assert "exactitude des décisions non orientées 90,0\u202f% -> 68,3\u202f%" in fr_worse and "accuracy" not in fr_worse
    assert "1 Normal, 0 Pneumonie" in fr_small and "pneumonia" not in fr_small
    assert "accuracy of the decisions not referred 90.0% -> 68.3% with no fewer referrals" in en_worse
