"""The web page driven by the real ``Classifier`` (not the fake of test_web_fakes): its ``decide`` rule and its
input check (``edge_runtime.scope.image_problem``) decide what the page and the API show.

The bundle is a hand-written ONNX graph (test_web_fakes.write_tiny_bundle) whose probabilities are a known
function of the image's mean grey level, so each decision has an expected value computed independently here.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from test_web_fakes import LABELS, TINY_THRESHOLDS, csrf, png_bytes, tiny_probs, write_tiny_bundle

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def real_client(real_bundle, tmp_path):
    from edge_runtime.classifier import Classifier
    from edge_runtime.web import create_app

    clf = Classifier.from_bundle(real_bundle)
    assert type(clf).__module__ == "edge_runtime.classifier" and clf.backend == "onnxruntime"
    return create_app(clf, tmp_path / "data").test_client()


def post(c, data, name="film.png"):
    return c.post("/api/v1/screenings", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def flat_png(value: int, size=(96, 96)) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full(size, value, np.uint8))
    assert ok
    return buf.tobytes()


def test_expected_values_are_what_the_rule_needs():
    """The hand-made model's outputs at the three grey levels, checked against the thresholds by hand."""
    dark, mid, bright = tiny_probs(40), tiny_probs(120), tiny_probs(217)
    assert dark.argmax() == 0 and dark.max() > TINY_THRESHOLDS["refer_below"]  # normal, confident
    assert mid.max() < TINY_THRESHOLDS["refer_below"] and mid[2] < TINY_THRESHOLDS["tuberculosis"]  # unsure
    assert bright[2] >= TINY_THRESHOLDS["tuberculosis"]  # TB at or above its threshold


def test_real_classifier_refer_decision_on_the_page_and_api(real_client):
    data = png_bytes(120, size=(128, 128), noise=30)
    r = post(real_client, data)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["decision"] == "refer" and body["in_scope"] is True
    assert "unsure" in body["reason"] and "refer to a clinician" in body["reason"]
    probs = np.array([body["probabilities"][k] for k in LABELS])
    mean = float(np.asarray(__import__("cv2").imdecode(np.frombuffer(data, np.uint8), 0), np.float64).mean())
    assert np.allclose(probs, tiny_probs(mean), atol=1e-3) and probs.max() < TINY_THRESHOLDS["refer_below"]
    page = real_client.get(body["links"]["page"]).get_data(as_text=True)
    assert "refer" in page.lower() and "tiny-onnx" in page


def test_real_classifier_out_of_scope_for_blank_and_saturated_films(real_client):
    # blank black, flat grey, saturated white: image_problem refuses each. The white film's probabilities put
    # TB far above its threshold (tiny_probs(255)), so a rule that looked at TB before the input check fails here
    assert tiny_probs(255)[2] > TINY_THRESHOLDS["tuberculosis"]
    for value in (0, 128, 255):
        r = post(real_client, flat_png(value))
        assert r.status_code == 201, r.get_json()
        body = r.get_json()
        assert body["decision"] == "out_of_scope" and body["in_scope"] is False, value
        assert body["probabilities"] is None and body["label"] is None and body["links"]["heatmap"] is None
        assert "blank" in body["reason"] or "black or white" in body["reason"], body["reason"]
        assert body["reason_code"] in ("oos_blank", "oos_saturated"), body
        fr = real_client.get(body["links"]["page"] + "?lang=fr").get_data(as_text=True)
        assert "L&#39;image est vide" in fr or "de l&#39;image est noir ou blanc pur" in fr


def test_real_classifier_refuses_a_thumbnail_smaller_than_the_model_input(real_client):
    # a 16x16 film (the tiny model reads 32 px): mean 217 would be a confident TB call if it were read
    data = png_bytes(217, size=(16, 16), noise=25, seed=3)
    r = post(real_client, data)
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["decision"] == "out_of_scope" and body["probabilities"] is None and body["label"] is None
    assert body["reason_code"] == "oos_low_resolution"
    assert body["reason_args"] == {"width": 16, "height": 16, "min_side": 32}
    fr = real_client.get(body["links"]["page"] + "?lang=fr").get_data(as_text=True)
    assert "ne fait que 16x16 pixels" in fr and "pleine résolution" in fr


def test_real_classifier_tb_and_normal_through_the_upload_form(real_client):
    tok = csrf(real_client.get("/").get_data(as_text=True))
    for mean, want in ((40, "normal"), (217, "tuberculosis")):
        data = png_bytes(mean, size=(128, 128), noise=25, seed=mean)
        r = real_client.post("/screenings", data={"csrf_token": tok, "files": [(io.BytesIO(data), "f.png")]},
                             content_type="multipart/form-data")
        assert r.status_code == 303
        sid = r.headers["Location"].split("/")[-1].split("?")[0]
        rec = real_client.get(f"/api/v1/screenings/{sid}").get_json()
        assert rec["decision"] == want, (mean, rec["reason"])
        if want == "tuberculosis":  # the real rule's code and numbers, said in French on the page
            assert rec["reason_code"] == "tb_at_threshold"
            assert rec["reason_args"]["threshold"] == TINY_THRESHOLDS["tuberculosis"]
            fr = real_client.get(f"/screenings/{sid}?lang=fr").get_data(as_text=True)
            assert "atteint ou dépasse le seuil de dépistage 0,90" in fr
