"""A site profile fits its refer threshold by the rule the bundle's own was fitted by: a bundle converted with
``--refer-share S`` (recipes/default.toml) refers the least confident S of the local films not flagged TB; an older
bundle keeps the lowest threshold at which the films kept reach 90% accuracy. The page, the CLI report and the
profile's evidence say which rule."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edge_runtime import operating_point as OP
from edge_runtime.metadata import ModelMetadata
from edge_runtime.operating_point import OperatingPoint
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.site_eval import propose

LABELS = ("normal", "pneumonia", "tuberculosis")


def _films(n: int = 60, seed: int = 0, hard: float = 0.0) -> dict:
    """Local films: each class's own probability spread 0.4-0.95; ``hard`` of the normal and pneumonia films read
    as the other class, so the films kept cannot reach 90% accuracy at any threshold when ``hard`` is large."""
    rng = np.random.default_rng(seed)
    y, raw = [], []
    for c in range(3):
        for _ in range(n):
            wrong = c < 2 and rng.random() < hard
            p = rng.uniform(0.85, 0.97) if wrong else rng.uniform(0.4, 0.95)  # confidently wrong: no threshold helps
            top = 1 - c if wrong else c
            row = np.full(3, (1 - p) / 2)
            row[top] = p
            y.append(c), raw.append(row)
    return {"y": np.array(y), "raw": np.array(raw), "in_scope": np.ones(3 * n, bool)}


BUNDLE = OperatingPoint(LABELS, 1.0, {"tuberculosis": 0.5, "refer_below": 0.5})


@pytest.mark.parametrize("share", [0.1, 0.25, 0.4])
def test_the_share_rule_refers_that_share_of_the_local_films_not_flagged_tb(share):
    films = _films()
    prop = propose(films, BUNDLE, 0.9, refer_share=share)
    new = OperatingPoint(LABELS, 1.0, {**BUNDLE.thresholds, **prop["thresholds"]})
    probs = new.calibrate(films["raw"])
    rest = probs[:, 2] < new.thresholds["tuberculosis"]
    referred = (probs[rest].max(1) < new.thresholds["refer_below"]).mean()
    assert abs(referred - share) <= 1.5 / rest.sum(), (referred, share)
    assert prop["refer_rule_code"] == "share" and prop["refer_rule_fields"] == {"share": share}
    assert f"refer the least confident {share:.0%} of these films not flagged TB" in prop["refer_rule"]


def test_without_a_share_the_kept_accuracy_rule_holds_as_before():
    films = _films()
    prop = propose(films, BUNDLE, 0.9)
    chosen, _ = OP.choose_operating_points(films["y"], films["raw"], list(LABELS), tb_sensitivity=0.9)
    assert prop["thresholds"]["refer_below"] == chosen["refer_below"]
    assert prop["refer_rule_code"] == "accuracy" and "reach 90% accuracy" in prop["refer_rule"]
    assert propose(films, BUNDLE, 0.9, refer_share=0.4)["thresholds"]["refer_below"] != chosen["refer_below"]


def test_a_site_where_90_percent_is_out_of_reach_still_gets_the_bundles_share():
    films = _films(hard=0.4)
    old = propose(films, BUNDLE, 0.9)
    assert "refer_below" not in old["thresholds"] and [c for c, _ in old["kept_codes"]] == ["refer_unreached"]
    new = propose(films, BUNDLE, 0.9, refer_share=0.1)  # fewer referrals than the bundle's 0.5 here
    assert "refer_below" in new["thresholds"] and not new["kept_codes"]


def test_the_bundles_share_is_read_from_its_metadata_and_each_artifacts_entry():
    meta = ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(32), model_name="m", model_version="1")
    assert meta.refer_share is None
    op = {"refer": {"refer_below": 0.6, "target_accuracy": 0.9, "target_share": 0.32}}
    meta = replace(meta, metrics={"operating_point": op}, calibration={"tflite_int8": {
        "temperature": 1.2, "thresholds": {"refer_below": 0.55},
        "operating_point": {"refer": {"refer_below": 0.55, "target_accuracy": 0.9, "target_share": 0.32}}}})
    assert meta.refer_share == 0.32 and meta.for_format("tflite_int8").refer_share == 0.32
    assert ModelMetadata.from_dict(json.loads(meta.to_json())).refer_share == 0.32


def test_validate_fits_and_reports_the_bundles_share(tmp_path, capsys):
    """``benchmarks.validate --make-profile`` on the second phantom site, the bundle converted with a share."""
    from benchmarks import validate as V
    from edge_runtime import bundle as B
    from edge_runtime.classifier import Classifier
    from tests.site_fakes import home_bundle, phantom_set, write_manifest

    rows = phantom_set(tmp_path / "films", per_class=90)
    bundle = home_bundle(tmp_path / "films", rows["synthetic_a"], tmp_path / "bundle")
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["metrics"] = {"operating_point": {"refer": {"target_accuracy": 0.9, "target_share": 0.2}}}
    (bundle / "metadata.json").write_text(json.dumps(meta))
    B.write_sums(bundle)
    data = write_manifest(tmp_path / "films" / "b.csv", rows["synthetic_b"])
    out = tmp_path / "report"
    rc = V.main(["--bundle", str(bundle), "--data", str(data), "--out", str(out), "--make-profile", str(bundle),
                 "--by", "Dr Okafor"])
    assert rc == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "Refer threshold rule: refer the least confident 20% of these films not flagged TB" in report
    local = Classifier.from_bundle(bundle)
    assert "least confident 20%" in local.site_profile.evidence["refer_rule"]
    from train.data import scan

    films = V.score_films(local, scan(data, LABELS, allow_missing=True))  # the device's own scores, profile applied
    op = local.operating_point
    probs = op.calibrate(films["raw"][films["in_scope"]])
    rest = probs[:, 2] < op.thresholds["tuberculosis"]
    assert rest.sum() >= 30 and abs((probs[rest].max(1) < op.thresholds["refer_below"]).mean() - 0.2) <= 1.5 / rest.sum()
    # ten pneumonia films: the refer threshold is kept, and neither the report nor the evidence names a rule
    (bundle / "site.json").unlink()
    pneu = [r for r in rows["synthetic_b"] if r["class"] == "pneumonia"][:10]
    few = write_manifest(tmp_path / "films" / "few.csv", [r for r in rows["synthetic_b"] if r["class"] != "pneumonia"] + pneu)
    rc = V.main(["--bundle", str(bundle), "--data", str(few), "--out", str(out), "--make-profile", str(bundle),
                 "--by", "Dr Okafor"])
    assert rc == 0, capsys.readouterr().err
    assert "Refer threshold rule" not in (out / "report.md").read_text()
    kept = Classifier.from_bundle(bundle).site_profile
    assert "refer_below" not in kept.thresholds and "refer_rule" not in kept.evidence


@pytest.mark.parametrize("lang, said, older_said", [
    ("en", "Refer threshold: refers the least confident 25% of the 120 in-scope films read here (outcome confirmed "
           "or not) that are not flagged TB",
     "Refer threshold: the lowest at which the films not referred reach 90% accuracy on these films"),
    ("fr", "Seuil d'adressage\u202f: adresse les 25\u202f% des 120 clichés dans le champ lus ici (résultat confirmé "
           "ou non) non signalés TB",
     "Seuil d'adressage\u202f: le plus bas auquel les clichés non adressés atteignent 90\u202f% d'exactitude")])
def test_the_page_offer_names_the_rule(tmp_path, lang, said, older_said):
    import html

    from test_web_site_numbers import _offer_page

    share = {"operating_point": {"refer": {"target_accuracy": 0.9, "target_share": 0.25}}}
    assert said in html.unescape(_offer_page(tmp_path, lang, metrics=share))
    assert older_said in html.unescape(_offer_page(tmp_path / "older", lang))  # a bundle fitted the older way


def test_a_kept_refer_threshold_names_no_rule(tmp_path, capsys):
    """review32: the rule's sentence (page, report, the profile's evidence) only where the refer threshold changed;
    with too few films of one class it is kept, and the kept line says why."""
    import html

    from test_web_site_numbers import _offer_page, site_films

    y, raw = site_films()
    few = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:10], np.flatnonzero(y == 2)])
    share = {"operating_point": {"refer": {"target_accuracy": 0.9, "target_share": 0.25}}}
    offer = html.unescape(_offer_page(tmp_path, "en", films=(y[few], raw[few]), metrics=share))
    assert 'id="profile-refer-rule"' not in offer and "Refer threshold:" not in offer
    assert "the refer threshold changes every class and needs 30 films of each" in offer


def test_on_the_device_the_share_is_of_every_film_read_confirmed_or_not():
    """review32: clinicians may confirm more of the films the device referred, so a share of the confirmed films
    alone would refer another share of what the device reads. The device's films carry every in-scope screening's
    probabilities (``share_raw``): the share is taken over them, the figures still over the confirmed ones."""
    from edge_runtime.web.site_views import device_films

    labelled = _films()
    rng = np.random.default_rng(3)
    unsure = np.full((200, 3), 0.0)  # unconfirmed screenings, less confident than the confirmed ones
    unsure[:, 0] = rng.uniform(0.36, 0.42, 200)
    unsure[:, 2] = 0.2  # below the TB threshold the confirmed films give
    unsure[:, 1] = 1 - unsure[:, 0] - 0.2
    rows = [{"labels": list(LABELS), "probs": dict(zip(LABELS, map(float, p))), "in_scope": True,
             "outcome": LABELS[c]} for c, p in zip(labelled["y"], labelled["raw"])]
    rows += [{"labels": list(LABELS), "probs": dict(zip(LABELS, map(float, p))), "in_scope": True, "outcome": None}
             for p in unsure]
    rows += [{"labels": list(LABELS), "probs": {"normal": 1.0, "pneumonia": 0.0, "tuberculosis": 0.0},
              "in_scope": False, "outcome": "normal"}]  # out of scope: in neither
    films = device_films(rows, LABELS)
    assert len(films["y"]) == len(labelled["y"]) and len(films["share_raw"]) == len(labelled["y"]) + 200
    prop = propose(films, BUNDLE, 0.9, refer_share=0.25)
    pool = films["share_raw"]
    rest = pool[:, 2] < prop["thresholds"]["tuberculosis"]
    referred = (pool[rest].max(1) < prop["thresholds"]["refer_below"]).mean()
    assert abs(referred - 0.25) <= 1.5 / rest.sum()
    only_confirmed = propose({k: films[k] for k in ("y", "raw", "in_scope")}, BUNDLE, 0.9, refer_share=0.25)
    assert only_confirmed["thresholds"]["refer_below"] > prop["thresholds"]["refer_below"] + 0.05
    assert prop["refer_rule_code"] == "share_all" and prop["refer_rule_fields"] == {"share": 0.25, "n": len(pool)}
