"""Reasons as codes and numbers (so a page can say them in the reader's language), the heatmap's fixed colour
scale per model, and no heatmap from a feature map too coarse to say where. No training: a hand-made backend."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import heatmap as H
from edge_runtime import orientation, scope
from edge_runtime.operating_point import OUT_OF_SCOPE, REFER, OperatingPoint, decide, decide_coded, reason_text

LABELS = ("normal", "pneumonia", "tuberculosis")
OP = OperatingPoint(LABELS, 1.0, {"tuberculosis": 0.33, "refer_below": 0.6})


def test_decide_coded_gives_the_code_and_numbers_and_decide_the_same_english():
    p = np.array([0.03, 0.02, 0.95])
    assert decide_coded(p, OP) == ("tuberculosis", "tb_at_threshold", {"p": 0.95, "threshold": 0.33})
    assert decide(p, OP)[1].startswith("TB probability 0.95 is at or above the screening threshold 0.33")
    assert decide_coded(np.array([0.5, 0.3, 0.2]), OP) == (REFER, "unsure", {"p": 0.5, "threshold": 0.6})
    assert decide_coded(np.array([0.1, 0.85, 0.05]), OP) == ("pneumonia", "most_probable", {"p": 0.85})
    found = {"code": "oos_few_levels", "levels": 12}
    assert decide_coded(p, OP, found) == (OUT_OF_SCOPE, "oos_few_levels", {"levels": 12})
    assert "only 12 grey levels" in reason_text("oos_few_levels", {"levels": 12})
    assert reason_text("no_such_code", {}) == "no such code"


NOISE = np.random.default_rng(0).integers(0, 256, (256, 256)).astype(np.uint8)


@pytest.mark.parametrize("image, code", [
    (np.full((200, 200), 128, np.uint8), "oos_blank"),
    (np.tile(np.arange(0, 250, 25, dtype=np.uint8), (200, 20)), "oos_few_levels"),
    (np.zeros((150, 400), np.uint8), "oos_shape"),
    (NOISE[:10, :10], "oos_low_resolution"),  # a thumbnail: would otherwise pass every check
    (NOISE[:127, :200], "oos_low_resolution"),
])
def test_image_check_names_the_cause(image, code):
    assert scope.image_check(image)["code"] == code
    assert scope.image_problem(image) == reason_text(code, scope.image_check(image))


def test_low_resolution_floor_is_the_films_short_side_and_follows_a_smaller_model():
    assert scope.image_check(NOISE[:128, :200]) is None  # at the floor: a film
    found = scope.image_check(NOISE[:10, :12])
    assert found == {"code": "oos_low_resolution", "width": 12, "height": 10, "min_side": scope.MIN_FILM_SIDE}
    assert "only 12x10 pixels" in reason_text(found["code"], found) and "at least 128" in reason_text(found["code"], found)
    assert scope.min_side_for(224) == scope.MIN_FILM_SIDE and scope.min_side_for(32) == 32
    assert scope.image_check(NOISE[:40, :40], scope.min_side_for(32)) is None
    assert scope.image_check(NOISE[:31, :40], scope.min_side_for(32))["code"] == "oos_low_resolution"


def test_inverted_film_gets_its_own_advice_not_turn_it_the_right_way_up():
    from edge_runtime.web import i18n

    inverted = {"reason_code": "oos_orientation", "reason_args": {"view": "inverted", "p": 0.9}}
    upside = {"reason_code": "oos_orientation", "reason_args": {"view": "upside_down", "p": 0.9}}
    for lang in ("en", "fr"):
        assert i18n.oos_advice(lang, inverted) == i18n.translate(lang, "oos.advice_inverted")
        assert i18n.oos_advice(lang, upside) == i18n.translate(lang, "oos.advice_orientation")
        small = {"reason_code": "oos_low_resolution", "reason_args": {"width": 10, "height": 10, "min_side": 128}}
        assert i18n.oos_advice(lang, small) == i18n.translate(lang, "oos.advice_resolution")
    assert "right way up" not in i18n.oos_advice("en", inverted) and "inverting" in i18n.oos_advice("en", inverted)


def test_saturated_image_reports_its_fraction():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 200)).astype(np.uint8)
    img[:150] = 255
    found = scope.image_check(img)
    assert found["code"] == "oos_saturated" and 0.7 < found["fraction"] < 0.8
    assert "% of the image is black or white" in scope.image_problem(img)


def test_orientation_check_gives_a_stable_view_key():
    assert orientation.VIEW_CODES[2] == "upside_down" and len(orientation.VIEW_CODES) == len(orientation.CLASSES)
    assert "upside down" in reason_text("oos_orientation", {"view": "upside_down", "p": 0.9})


# ---- heatmap scale ---------------------------------------------------------------------------------------
HEAD = {"weights": np.eye(3, dtype=np.float32)[:, :3].tolist()}  # feature d is the evidence for class d


def test_heatmap_uses_one_scale_per_model_not_the_films_own_maximum():
    weak = np.zeros((7, 7, 3), np.float32)
    weak[3, 3, 1] = 1.0
    strong = weak * 8
    head = {**HEAD, "cam_scale": [4.0, 4.0, 4.0]}
    a = H.class_activation_map(weak, head, 1, 7)
    b = H.class_activation_map(strong, head, 1, 7)
    assert a.max() == pytest.approx(0.25, abs=1e-6)  # weak evidence stays cool
    assert b.max() == pytest.approx(1.0)  # above the scale: full colour
    assert H.class_activation_map(weak, HEAD, 1, 7).max() == pytest.approx(1 / H.FIXED_CAM_SCALE, abs=1e-6)


def test_fit_scale_takes_a_high_quantile_of_validation_cells():
    rng = np.random.default_rng(1)
    maps = rng.uniform(0, 2, (20, 7, 7, 3)).astype(np.float32)
    scale = H.fit_scale(maps, HEAD)
    assert len(scale) == 3 and all(1.9 < s <= 2.0 for s in scale)
    assert H.cam_scale({**HEAD, "cam_scale": scale}, 2) == scale[2]


class GridBackend:
    """A backend whose feature map is ``cells`` x ``cells``: the classifier's decision and heatmap logic only."""

    name = "fake"

    def __init__(self, cells: int, size: int = 64):
        self.cells, self.input_shape = cells, (size, size)

    def run(self, image):
        feats = np.ones((self.cells, self.cells, 3), np.float32)
        return np.array([0.1, 0.8, 0.1], np.float32), feats


@pytest.mark.parametrize("cells, drawn", [(2, False), (4, False), (5, True), (7, True)])
def test_a_feature_map_coarser_than_5x5_gives_no_heatmap(cells, drawn):
    from edge_runtime.classifier import Classifier
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.preprocess import PreprocessConfig

    meta = ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(64), model_name="grid", model_version="0",
                         thresholds={"tuberculosis": 0.5, "refer_below": 0.5}, head=HEAD)
    rng = np.random.default_rng(2)
    film = rng.integers(0, 256, (80, 80)).astype(np.uint8)
    s = Classifier(GridBackend(cells), meta).classify(film)
    assert s.in_scope and s.heatmap_grid == (cells, cells)
    assert (s.heatmap is not None) == drawn
    assert (s.decision, s.reason_code, s.reason_args) == ("pneumonia", "most_probable", {"p": 0.8})
    assert s.reason == "most probable class (0.80)"
