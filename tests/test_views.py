"""edge_runtime.views: test-time views, their average, and how metadata and the Classifier carry them."""
import json

import numpy as np
import pytest

from edge_runtime import views as V
from edge_runtime.classifier import Classifier
from edge_runtime.metadata import SCHEMA_VERSION, ModelMetadata
from edge_runtime.preprocess import PreprocessConfig

LABELS = ("normal", "pneumonia", "tuberculosis")
SIZE = 32


def test_parse_names_sets_and_lists_and_puts_the_film_itself_first():
    assert V.parse("none") == V.parse(None) == ("id",)
    assert V.parse("zoom3") == ("id", "zoom+5", "zoom-5")
    assert V.parse("x+3,id") == ("id", "x+3")          # the film as it is always first
    assert V.parse("y-3") == ("id", "y-3")
    assert len(V.parse("all7")) == 7
    with pytest.raises(ValueError, match="unknown view.*rot90"):
        V.parse("rot90")
    with pytest.raises(ValueError, match="repeated"):
        V.parse("x+3,x+3")


def test_views_keep_the_image_shape_and_move_its_content():
    img = np.zeros((SIZE, SIZE), np.uint8)
    img[8:24, 8:24] = 200
    assert V.view(img, "id") is img
    for name in V.VIEWS:
        out = V.view(img, name)
        assert out.shape == img.shape and out.dtype == np.uint8
    assert V.view(img, "zoom+5").astype(int).sum() > img.astype(int).sum()    # zoomed in: the square grows
    assert V.view(img, "zoom-5").astype(int).sum() < img.astype(int).sum()
    shifted = V.view(img, "x+3")                                               # 3% of 32 px: about one pixel right
    assert shifted[16, 8] < 100 and shifted[16, 24] > 100


def test_combine_is_a_renormalised_geometric_mean():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    q = np.array([[0.5, 0.4, 0.1], [0.2, 0.1, 0.7]])
    assert V.combine([p]) is p
    c = V.combine([p, q])
    np.testing.assert_allclose(c.sum(1), 1.0)
    g = np.sqrt(p * q)
    np.testing.assert_allclose(c, g / g.sum(1, keepdims=True))
    assert (c.argmax(1) == p.argmax(1)).all()


class Backend:
    """P(pneumonia) rises with the mean grey of the centre, so a zoom changes the answer; counts its calls."""

    name = "fake"
    input_shape = (SIZE, SIZE)

    def __init__(self):
        self.films = 0

    def _probs(self, image):
        m = image[8:24, 8:24].mean() / 255.0
        p = np.array([1 - m, m, 0.1]) + 0.05
        return p / p.sum()

    def run(self, image):
        self.films += 1
        return self._probs(image), np.full((2, 2, 4), image.mean(), np.float32)

    def run_batch(self, images):
        self.films += len(images)
        return np.stack([self._probs(im) for im in images])


def _meta(views=V.NONE):
    return ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(SIZE), model_name="m", model_version="1",
                         views=views)


def _films(n=4):
    rng = np.random.default_rng(0)
    imgs = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        a = int(rng.integers(4, 12))
        imgs[i, a:SIZE - a, a:SIZE - a] = rng.integers(60, 250)
    return imgs


def test_the_classifier_averages_its_views_and_keeps_the_films_own_features():
    films = _films()
    be = Backend()
    clf = Classifier(be, _meta(V.parse("zoom3")))
    be.films = 0
    got = clf.predict_batch(films)
    assert be.films == 3 * len(films)                                  # one inference per view
    want = V.combine([np.stack([be._probs(V.view(f, v)) for f in films]) for v in V.parse("zoom3")])
    np.testing.assert_allclose(got, want)
    assert not np.allclose(got, np.stack([be._probs(f) for f in films]))   # the views changed the answer
    probs, feats = clf.predict(films[0])
    np.testing.assert_allclose(probs, got[0])                           # one film = the same as in a batch
    assert feats[0, 0, 0] == pytest.approx(films[0].mean())             # features of the film as it is
    one = Classifier(Backend(), _meta())
    np.testing.assert_allclose(one.predict_batch(films), np.stack([be._probs(f) for f in films]))


def test_metadata_keeps_its_views_and_the_lowest_schema_that_describes_it(tmp_path):
    plain = json.loads(_meta().to_json())
    assert plain["views"] == ["id"] and plain["schema_version"] == 2      # older runtimes still read it
    with_views = json.loads(_meta(V.parse("zoom3")).to_json())
    assert with_views["schema_version"] == SCHEMA_VERSION == 3          # older runtimes refuse it, not ignore it
    assert ModelMetadata.from_dict(with_views).views == ("id", "zoom+5", "zoom-5")
    old = {k: v for k, v in plain.items() if k != "views"}              # a bundle made before views
    assert ModelMetadata.from_dict(old).views == ("id",)
    with pytest.raises(ValueError, match="unknown view.*sharpen"):
        ModelMetadata.from_dict({**with_views, "views": ["id", "sharpen"]})
    with pytest.raises(ValueError, match="comes first"):
        _meta(("zoom+5", "id"))
