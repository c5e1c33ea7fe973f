"""Numbers inside catalogue sentences (the drift alerts' shares, distances and p-values) are written as the reader's
language writes them: in French a decimal comma and a narrow no-break space before %, as the page's own figures
(the ``pct``/``num`` filters, ``i18n.local_number``); English stays as it was."""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta

import pytest
from test_web_fakes import LABELS, FakeClassifier

from edge_runtime.web import i18n

NNBSP = "\u202f"  # what local_number puts before % in French


@pytest.mark.parametrize("key, fields, en, fr", [
    ("drift.alert_refer", {"now": 0.442, "then": 0.1},
     "the referral rate rose from 10% (this device's first images) to 44%.",
     f"le taux d'orientation est passé de 10{NNBSP}% (premières images de cet appareil) à 44{NNBSP}%."),
    ("drift.alert_distance", {"now": 1.375, "then": 0.5},
     "the mean embedding distance rose from 0.50 (this device's first images) to 1.38.",
     "la distance moyenne est passée de 0,50 (premières images de cet appareil) à 1,38."),
    ("drift.alert_past", {"share": 0.3, "n": 50, "lo": 0.191, "hi": 0.438},
     "30% of the last 50 images are unlike the training films (95% interval 19%-44%;",
     f"30{NNBSP}% des 50 dernières images sont différentes des clichés d'entraînement (intervalle à 95{NNBSP}% "
     f"19{NNBSP}%-44{NNBSP}%{NNBSP};"),
    ("drift.alert_mix", {"n": 45, "p": 0.0042, "alpha": 0.01, "what": "Orienter", "now": 0.5, "then": 0.05},
     "(chi-square p = 0.0042 < 0.01); the largest change: Orienter 50% against 5%.",
     f"(khi-deux p = 0,0042 < 0,01){NNBSP}; le plus grand écart{NNBSP}: Orienter 50{NNBSP}% contre 5{NNBSP}%."),
    ("drift.mix_test", {"p": 0.2345, "alpha": 0.01}, "p = 0.234 (alert below 0.01).",
     "p = 0,234 (alerte en dessous de 0,01)."),
    ("drift.mix_oos", {"share": 0.125}, "Out of scope in the window: 12%", f"Hors champ dans la fenêtre{NNBSP}: 12{NNBSP}%"),
])
def test_numbers_in_drift_sentences_follow_the_language(key, fields, en, fr):
    assert en in i18n.translate("en", key, **fields)
    assert fr in i18n.translate("fr", key, **fields)


def test_only_numbers_are_rewritten():
    # a text field (a model version, a command) keeps its dots; counts and booleans are left as they are
    assert i18n.translate("fr", "monitor.other_models", n=3, k=1, model="fake-net 9.9.9").count("9.9.9") == 1
    assert i18n.translate("fr", "drift.mix_wait", n=12, min=40) == i18n.catalogue("fr")["drift.mix_wait"].format(
        n=12, min=40)


def _rows(n_first=50, n_now=50):
    """This device's first 50 films (normal, close to the training films), then 50 of which half are referred and
    all lie past the input-check threshold: every drift alert fires."""
    day = date(2026, 11, 2)
    rows = []
    for i in range(n_first + n_now):
        late = i >= n_first
        decision = "refer" if late and i % 2 else "normal"
        rows.append({"created": (day + timedelta(days=i // 10)).isoformat() + "T10:00:00+00:00",
                     "labels": list(LABELS), "probs": {k: 1 / 3 for k in LABELS}, "decision": decision,
                     "in_scope": True, "outcome": None, "model_name": "fake-net", "model_version": "9.9.9",
                     "scope_distance": (1.3 + 0.01 * (i % 7)) if late else (0.4 + 0.01 * (i % 5))})
    return rows


def _monitoring(tmp_path, lang):
    from edge_runtime.web import create_app

    clf = FakeClassifier()
    clf.metadata = replace(clf.metadata, reference={"decisions": {"normal": 100, "pneumonia": 60,
                                                                  "tuberculosis": 30, "refer": 10}})
    app = create_app(clf, tmp_path / "data")
    app.extensions["cxr"].store.rows_for_monitoring = lambda since="": _rows()
    html = app.test_client().get(f"/monitoring?lang={lang}").get_data(as_text=True)
    return html.split('id="drift-alert"')[1].split("</div>")[0], html.split('id="drift"')[1]


def test_the_french_monitoring_page_writes_alert_numbers_the_french_way(tmp_path):
    alerts, drift = _monitoring(tmp_path, "fr")
    assert alerts.count("ALERTE DÉRIVE") == 4  # past the threshold, distance, referral rate, decision mix
    assert f"de 0{NNBSP}% (premières images de cet appareil) à 50{NNBSP}%" in alerts
    assert re.search(r"passée de 0,4\d \(premières images de cet appareil\) à 1,3\d", alerts)
    assert not re.search(r"\d%", alerts), "a percentage without the French space"
    assert not re.search(r"\d\.\d", alerts), "a decimal point in French"
    hint = drift.split('id="drift-mix"')[1].split('<p class="hint">')[1].split("</p>")[0]
    assert "alerte en dessous de 0,01" in hint and not re.search(r"\d\.\d|\d%", hint)


def test_the_english_monitoring_page_is_unchanged(tmp_path):
    alerts, _ = _monitoring(tmp_path, "en")
    assert alerts.count("DRIFT ALERT") == 4 and NNBSP not in alerts
    assert "the referral rate rose from 0% (this device&#39;s first images) to 50%." in alerts
    assert re.search(r"rose from 0\.4\d \(this device&#39;s first images\) to 1\.3\d\.", alerts)


def test_the_servers_upload_limits_are_written_the_french_way(tmp_path):
    """The server's own refusals (a file over the limit, too many pixels, a request over the limit) said the limit
    as English text ("0.5 Mo"); the page's script says "0,5 Mo": the limit now reaches the catalogue as a number."""
    from test_web_fakes import png_bytes, upload

    from edge_runtime.web import create_app

    app = create_app(FakeClassifier(), tmp_path / "d", {"MAX_FILE_MB": 0.0015, "MAX_PIXELS": 1500,
                                                        "MAX_REQUEST_MB": 0.05})
    c = app.test_client()

    def said(r) -> str:  # the refusal the server wrote (not the page script's own messages)
        return " ".join(re.findall(r'role="alert"[^>]*>([^<]*)<', r.get_data(as_text=True)))

    heavy, wide, huge = (png_bytes(50, size=(38, 38), noise=60), png_bytes(50, size=(40, 40), noise=0),
                         b"\x89PNG" + b"0" * 60_000)  # over 1.5 kB under 1500 px; 1600 px; over the request limit
    assert len(heavy) > 1500 and len(wide) < 1500
    r = upload(c, ("lourd.png", heavy), lang="fr")
    assert r.status_code == 413 and "la limite est de 0,0015 Mo par fichier" in said(r), said(r)
    r = upload(c, ("grand.png", wide), lang="fr")
    assert r.status_code == 413 and "dépasse la limite de 0,0015 mégapixels" in said(r), said(r)
    r = upload(c, ("enorme.png", huge), lang="fr")
    assert r.status_code == 413 and "plus de 0,05 Mo d&#39;un coup" in said(r), said(r)
    c.get("/?lang=en")
    assert "the limit is 0.0015 MB a file" in said(upload(c, ("heavy.png", heavy)))
    assert "more than the limit of 0.0015 megapixels" in said(upload(c, ("wide.png", wide)))
    assert "more than 0.05 MB in one go" in said(upload(c, ("huge.png", huge)))


def test_percentages_written_into_the_french_catalogue_use_the_same_space_as_its_numbers():
    """A literal "95 %" in a French sentence had an ordinary space (which may break the line before the "%") where
    the numbers local_number writes beside it have a narrow no-break space."""
    for key, text in i18n.catalogue("fr").items():
        words = re.sub(r"{[^{}]*}", "", text)  # the number fields are local_number's
        assert not re.search(rf"\d[^\S{NNBSP}]*%|\d%", words), (key, text)
    assert i18n.translate("fr", "monitor.ci", lo=0.2, hi=0.4) == f"intervalle à 95{NNBSP}% de 0,2 à 0,4"


def _bare_colons(text: str) -> list[str]:
    """Each colon without the narrow no-break space before it (a time such as 10:00 aside), with its context."""
    return [text[max(0, m.start() - 25):m.end() + 10] for m in re.finditer(r"(?<![\d\u202f]):|(?<=\d):(?!\d)", text)]


def test_a_colon_after_a_french_word_has_the_same_space_as_the_percent_sign():
    """Review: French typography puts a space before a colon, which must not break the line away from the word; the
    catalogue had an ordinary space ("Seuils : ..."). Every colon in a French sentence now has the narrow no-break
    space local_number puts before "%"; English has none."""
    for key, text in i18n.catalogue("fr").items():
        words = re.sub(r"{[^{}]*}", "", text)  # a field's own format ({share:.0%}) is not a colon of the sentence
        assert _bare_colons(words) == [] and " :" not in words, (key, text)
        # and before ; ? ! (the same rule; the catalogue had an ordinary space: "envoyés ; la limite")
        assert not re.search(r"(?<!\u202f)[;?!]", words), (key, text)
    for key, text in i18n.catalogue("en").items():
        assert NNBSP not in text, (key, text)
    assert i18n.translate("fr", "app.labelled", label="Actuellement", text="cette décision") == \
        f"Actuellement{NNBSP}: cette décision"
    assert i18n.translate("en", "app.labelled", label="Now", text="given this decision") == "Now: given this decision"


def test_the_french_pages_put_the_space_before_every_colon(tmp_path):
    """Review: the site profile's column names read "Actuellement: cette décision": the colon was in the template,
    where no catalogue could place it. Every colon of the French pages (text and the stacked tables' data-label
    names) now comes from the catalogue: the monitoring page with a profile on offer, drift figures and an audit
    line, the model page, a result with its heatmap legend, a refused profile's reasons."""
    import html as H

    from test_web_fakes import png_bytes, upload
    from test_web_site_numbers import offering_app

    from edge_runtime.site_eval import ProfileRefused
    from edge_runtime.web.site_views import refusal_text

    app = offering_app(tmp_path / "data")
    w = app.extensions["cxr"]
    w.classifier.metadata = replace(w.classifier.metadata, reference={"decisions": {"normal": 100, "pneumonia": 60,
                                                                                    "tuberculosis": 30, "refer": 10}})
    site_rows = w.store.rows_for_monitoring()
    w.store.rows_for_monitoring = lambda since="": site_rows + _rows()
    w.store.add_audit("outcome_cleared", "screening 1: Normal cleared", {"sid": "1", "before": "normal"})
    c = app.test_client()
    result = upload(c, ("f.png", png_bytes(200)), lang="fr").headers["Location"]
    checked = {}
    for path in ("/", result, "/history", "/monitoring", "/model"):
        page = c.get(f"{path.split('?')[0]}?lang=fr").get_data(as_text=True)
        page = re.sub(r'<article class="card modelcard" lang="en">.*?</article>|<script.*?</script>|<style.*?</style>',
                      "", page, flags=re.S)  # the model card is English by design
        text = H.unescape(" ".join(re.findall(r">([^<]*)<", page) + re.findall(r'data-label="([^"]*)"', page)))
        assert _bare_colons(text) == [], (path, _bare_colons(text))
        checked[path] = text
    monitoring = checked["/monitoring"]
    assert f"Actuellement{NNBSP}: cette décision" in monitoring and f"Avec le profil{NNBSP}: Spécificité" in monitoring
    assert re.search(rf"50 premières images{NNBSP}: 0,\d+", monitoring) and f"Normal{NNBSP}: " in monitoring
    assert re.search(rf"\d\d:\d\d{NNBSP}: issue confirmée effacée", monitoring)  # the audit line, after its time
    assert f"Échelle des couleurs{NNBSP}:" in checked[result] and f"Modèle{NNBSP}: fake-net" in checked["/model"]
    with app.test_request_context("/monitoring?lang=fr"):
        from flask import g

        g.lang = "fr"
        said = refusal_text(ProfileRefused("too small", "too_small", reasons=[("tb", {"min": 30, "tb": 3, "other": 9})]))
        two = refusal_text(ProfileRefused("too small", "too_small", reasons=[
            ("tb", {"min": 30, "tb": 3, "other": 9}), ("refer", {"min": 30, "films": "3", "counts": {"normal": 3}})]))
    assert said.startswith(f"trop peu{NNBSP}: le seuil TB demande 30") and _bare_colons(said) == [], said
    assert two.startswith(said) and f"{NNBSP}; le seuil d'adressage" in two and " ;" not in two, two


@pytest.mark.parametrize("config, en, fr", [
    ({"MAX_FILE_MB": 2.5, "MAX_PIXELS": 2_500_000, "MAX_REQUEST_MB": 7.5},
     "2.5 MB and 2.5 megapixels each, 7.5 MB in all", "2,5 Mo et 2,5 mégapixels chacun, 7,5 Mo en tout"),
    ({"MAX_FILE_MB": 40.0, "MAX_PIXELS": 12_250_000, "MAX_REQUEST_MB": 0.25},  # serve --max-file-mb 40: a float
     "40 MB and 12.25 megapixels each, 0.25 MB in all", "40 Mo et 12,25 mégapixels chacun, 0,25 Mo en tout"),
])
def test_the_upload_page_says_its_limits_as_configured(tmp_path, config, en, fr):
    """Review: the upload page rounded a limit that is not a whole number (2.5 megapixels or a 7.5 MB request said
    "3" and "8"), and wrote a whole limit given as a float as "40.0". The limits are said as configured, in French
    with a decimal comma, in the sentence under the form and in what its script says when a choice breaks one."""
    import html as H

    from edge_runtime.web import create_app

    c = create_app(FakeClassifier(), tmp_path / "d", config).test_client()
    said = {}
    for lang in ("en", "fr"):
        page = H.unescape(c.get(f"/?lang={lang}").get_data(as_text=True))
        form = re.search(r'<form[^>]*id="upload-form"[^>]*>', page).group(0)
        said[lang] = (re.search(r'id="upload-formats">([^<]*)<', page).group(1),
                      dict(re.findall(r'(data-msg-[a-z]+)="([^"]*)"', form)))
    formats, msgs = said["en"]
    assert en in formats, formats
    file_mb, total_mb = en.split(" MB and ")[0], en.split(", ")[1].split(" MB in all")[0]
    assert f"the limit is {file_mb} MB a file" in msgs["data-msg-file"], msgs
    assert f"the limit is {total_mb} MB in one go" in msgs["data-msg-total"], msgs
    formats, msgs = said["fr"]
    assert fr in formats, formats
    file_mb, total_mb = fr.split(" Mo et ")[0], fr.split(", ")[1].split(" Mo en tout")[0]
    assert f"la limite est de {file_mb} Mo par fichier" in msgs["data-msg-file"], msgs
    assert f"la limite est de {total_mb} Mo d'un coup" in msgs["data-msg-total"], msgs
