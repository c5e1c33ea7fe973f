"""The site-profile offer on the monitoring page in the reader's language: its warnings (and the reasons a profile is
refused) come from site_eval as codes with raw numbers, worded by the catalogues, so French reads French words and
French numbers ("0,00", "90\u202f%"), as the drift alerts and screening reasons do; the CLI's report stays English."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from test_web_fakes import LABELS, FakeClassifier

NNBSP = "\u202f"


def site_films(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed films on which a profile is offered with both warnings: TB found at 90% sensitivity only with a
    low TB threshold that flags many normal films (specificity under the WHO 70%), and the refer threshold at 0."""
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for c in (0, 1, 2):
        for _ in range(n):
            if c == 1:
                rows.append([0.05, 0.9, 0.05])
            else:
                t = rng.uniform(0.32, 0.47) if c == 0 else rng.uniform(0.3, 0.95)
                rows.append([1 - t - 0.03, 0.03, t])
            y.append(c)
    return np.array(y), np.array(rows)


BUNDLE_THRESHOLDS = {"tuberculosis": 0.9, "refer_below": 0.6}


def test_site_eval_gives_the_warnings_as_codes_with_raw_numbers():
    from edge_runtime.operating_point import OperatingPoint
    from edge_runtime.site_eval import propose

    y, raw = site_films()
    prop = propose({"y": y, "raw": raw, "in_scope": np.ones(len(y), bool)},
                   OperatingPoint(LABELS, 1.0, dict(BUNDLE_THRESHOLDS)), 0.9)
    codes = dict(prop["warning_codes"])
    assert set(codes) == {"refer_zero", "tb_specificity"}
    for fields in codes.values():
        for v in fields.values():
            assert not isinstance(v, str), f"a number given as English text: {fields}"
    assert codes["tb_specificity"]["target"] == 0.9 and codes["tb_specificity"]["minimum"] == 0.7
    # the CLI's English report is as it was
    assert any("falls to 0.00" in w for w in prop["warnings"])
    assert any(re.search(r"at 90% TB sensitivity the TB specificity on these films is \d+\.\d% \(\d+%-\d+%, \d+/\d+\), "
                         r"below the WHO minimum of 70%", w) for w in prop["warnings"])


def offering_app(data_dir, films=None, **meta):
    """The page on the fake classifier as if served from a bundle, with the confirmed films of ``site_films`` (or
    ``films``: (y, raw)) on record: the monitoring page offers a site profile with both warnings."""
    from edge_runtime.web import create_app

    clf = FakeClassifier()
    clf.metadata = replace(clf.metadata, thresholds=dict(BUNDLE_THRESHOLDS), **meta)
    clf.model_path, clf.site_profile = data_dir.parent / "bundle" / "model.onnx", None
    clf.use_site_profile = lambda profile: None
    y, raw = films or site_films()
    rows = [{"created": "2026-11-02T10:00:00+00:00", "labels": list(LABELS), "probs": dict(zip(LABELS, map(float, p))),
             "decision": LABELS[int(np.argmax(p))], "in_scope": True, "outcome": LABELS[c], "model_name": "fake-net",
             "model_version": "9.9.9", "scope_distance": None} for c, p in zip(y, raw)]
    app = create_app(clf, data_dir)
    app.extensions["cxr"].store.rows_for_monitoring = lambda since="": rows
    return app


def _offer_page(tmp_path, lang: str, films=None, **meta) -> str:
    html = offering_app(tmp_path / "data", films, **meta).test_client().get(f"/monitoring?lang={lang}").get_data(as_text=True)
    assert 'id="profile-offer"' in html, html.split('id="site"')[1][:2000]
    return html.split('id="profile-offer"')[1].split("<form")[0]


def _warnings(offer: str) -> list[str]:
    return re.findall(r'<p class="warn">(.*?)</p>', offer, re.S)


def test_the_french_offer_warns_in_french_words_and_numbers(tmp_path):
    warns = _warnings(_offer_page(tmp_path, "fr"))
    assert len(warns) == 2, warns
    zero, spec = warns
    assert "Le seuil d&#39;orientation tombe à 0,00" in zero or "Le seuil d'orientation tombe à 0,00" in zero
    assert re.search(rf"orientés aujourd&#39;hui{NNBSP}: \d+,\d{NNBSP}% \(\d+{NNBSP}%-\d+{NNBSP}%, \d+/\d+\)", zero), zero
    assert re.search(rf"À 90{NNBSP}% de sensibilité TB, la spécificité TB sur ces films est de \d+,\d{NNBSP}% "
                     rf"\(\d+{NNBSP}%-\d+{NNBSP}%, \d+/\d+\), sous le minimum OMS de 70{NNBSP}%", spec), spec
    for w in warns:
        assert not re.search(r"\d\.\d|\d%", w), f"an English number in French: {w}"


def test_the_english_offer_warns_as_before(tmp_path):
    zero, spec = _warnings(_offer_page(tmp_path, "en"))
    assert "The refer threshold falls to 0.00" in zero
    assert re.search(r"\(referred now: \d+\.\d% \(\d+%-\d+%, \d+/\d+\)\)", zero), zero
    assert re.search(r"At 90% TB sensitivity the TB specificity on these films is \d+\.\d% \(\d+%-\d+%, \d+/\d+\), "
                     r"below the WHO minimum of 70%", spec), spec
    assert NNBSP not in zero + spec


def test_a_temperature_warning_is_coded_and_said_in_french():
    """The temperature warning reached the page as English text inside the French page ("site.warn_text")."""
    from test_site_profile import _overconfident

    from edge_runtime.operating_point import OperatingPoint
    from edge_runtime.site_eval import propose
    from edge_runtime.web import i18n

    y, raw = _overconfident(900, 12.0, seed=1)
    op = OperatingPoint(LABELS, 1.0, {"tuberculosis": 0.999, "refer_below": 0.99})
    prop = propose({"y": y, "raw": raw, "in_scope": np.ones(len(y), bool)}, op, 0.9, fit_temperature=True)
    codes = dict(prop["warning_codes"])
    assert "temperature_outside_over" in codes and codes["temperature_outside_over"]["temperature"] > 8
    en = i18n.translate("en", "site.warn_temperature_outside_over", **codes["temperature_outside_over"])
    fr = i18n.translate("fr", "site.warn_temperature_outside_over", **codes["temperature_outside_over"])
    said = prop["warnings"][0]  # the CLI's English sentence, the page's says the same
    assert en == said[:1].upper() + said[1:] + "."
    assert "plage habituelle 0,25-8 " in fr and "bien plus confiants" in fr and "fitted" not in fr
    assert not re.search(r"\d\.\d", fr), fr


@pytest.mark.parametrize("code, fields, fr", [
    ("kept_accuracy", {"before": 0.9, "after": 0.683, "ref_before": 0.1, "ref_after": 0.1},
     f"exactitude des décisions non orientées 90,0{NNBSP}% -> 68,3{NNBSP}% sans moins d'orientations "
     f"(10,0{NNBSP}% -> 10,0{NNBSP}%)"),
    ("tb_target", {"target": 0.9, "before": 0.92, "after": 0.85},
     f"la sensibilité TB passerait sous l'objectif de 90{NNBSP}% (92,0{NNBSP}% -> 85,0{NNBSP}%)"),
])
def test_why_a_profile_is_refused_carries_numbers_the_page_writes_in_french(tmp_path, code, fields, fr):
    from flask import g

    from edge_runtime.site_eval import WORSE_EN, ProfileRefused
    from edge_runtime.web import create_app
    from edge_runtime.web.site_views import refusal_text

    worse = ProfileRefused("x", "worse", {"why": WORSE_EN[code].format(**fields), "why_code": code,
                                          "why_fields": fields})
    unreached = ProfileRefused("x", "too_small", reasons=[("refer_unreached", {"accuracy": 0.9})])
    with create_app(FakeClassifier(), tmp_path / "data").test_request_context("/monitoring?lang=fr"):
        g.lang = "fr"
        assert fr in refusal_text(worse)
        assert f"non adressés à 90{NNBSP}% d'exactitude" in refusal_text(unreached)


def test_the_offer_says_which_thresholds_stay_the_models_own(tmp_path):
    """Review: the CLI's report lists each threshold a profile leaves at the bundle's value and why ("kept the
    bundle's value: ..."); the page's offer did not. With 10 pneumonia films the refer threshold (it changes every
    class) cannot change while the TB threshold does: the offer names the one kept, its value and why, in the
    reader's words and numbers."""
    import html as H

    from edge_runtime.operating_point import OperatingPoint
    from edge_runtime.site_eval import propose

    y, raw = site_films()
    few = (y != 1) | (np.cumsum(y == 1) <= 10)  # keep 10 of the 40 pneumonia films
    films = (y[few], raw[few])
    prop = propose({"y": films[0], "raw": films[1], "in_scope": np.ones(len(films[0]), bool)},
                   OperatingPoint(LABELS, 1.0, dict(BUNDLE_THRESHOLDS)), 0.9)
    assert set(prop["thresholds"]) == {"tuberculosis"} and len(prop["kept_from_bundle"]) == 1  # what the CLI says
    kept = {}
    for lang in ("en", "fr"):
        offer = _offer_page(tmp_path / lang, lang, films)
        kept[lang] = [H.unescape(li) for li in re.findall(r"<li>(.*?)</li>",
                                                            offer.split('id="profile-kept"')[1].split("</ul>")[0])]
    assert kept["en"] == ["Kept at the model's own value (refer below 0.600): the refer threshold changes every "
                          "class and needs 30 films of each (have 40 Normal, 10 Pneumonia, 40 Tuberculosis)."]
    assert kept["fr"] == [f"Valeur propre au modèle conservée (adresser sous 0,600){NNBSP}: le seuil d'adressage "
                          "change toutes les classes et demande 30 clichés de chacune (il y a 40 Normal, "
                          "10 Pneumonie, 40 Tuberculose)."]
    assert 'id="profile-kept"' not in _offer_page(tmp_path / "both", "en")  # both thresholds change: none kept
