"""The film-orientation check: learnt from upright films only (self-supervised), it flags turned and
grey-inverted films and leaves upright ones alone."""
import numpy as np
import pytest

from edge_runtime import orientation as O


def _films(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Upright chest-like inputs: dark lungs either side of a bright spine, bright abdomen at the bottom,
    varied in exposure, width and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        w = rng.uniform(0.06, 0.12)
        img = 0.55 + 0.35 * (np.abs(xx - 0.5) < w) + 0.4 * (yy > rng.uniform(0.72, 0.85))
        img -= 0.3 * ((np.abs(xx - 0.3) < 0.13) | (np.abs(xx - 0.7) < 0.13)) * (yy > 0.15) * (yy < 0.75)
        img = img * rng.uniform(0.6, 1.0) + rng.normal(0, 0.04, img.shape)
        out.append(np.clip(img * 200, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_views_are_what_their_names_say():
    a = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    up, quarter, half, three, neg = O.transforms(a)
    assert up[0, 0, 0] == 0 and half[0, 0, 0] == 15 and neg[0, 0, 0] == 255
    assert quarter[0, 3, 0] == 0 and three[0, 0, 3] == 0  # top-left corner moves down / right
    assert O.CLASSES[2] == "upside down"


def test_fitted_check_catches_turned_and_inverted_films_and_passes_upright_ones():
    table = O.fit(_films(120, seed=1), iterations=300)
    res = O.evaluate(_films(60, seed=2), table)
    assert res["false_flags"] <= 0.02 and res["caught_all"] >= 0.97, res
    film = _films(1, seed=3)[0]
    assert O.problem(film, table) is None
    assert "upside down" in O.problem(np.rot90(film, 2).copy(), table)
    assert "inverted" in O.problem(255 - film, table)
    # exposure does not matter: a darker upright film is still upright
    assert O.problem((film * 0.6).astype(np.uint8), table) is None


def test_no_table_means_no_check():
    assert O.problem(np.zeros((32, 32), np.uint8), {}) is None


@pytest.mark.slow
def test_bundle_carries_the_check_and_the_runtime_flags_an_upside_down_film(tiny_bundle, synthetic_data):
    from edge_runtime.classifier import Classifier
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.operating_point import OUT_OF_SCOPE
    from edge_runtime.preprocess import decode_image

    meta = ModelMetadata.load(tiny_bundle / "metadata.json")
    assert set(meta.orientation["classes"]) == set(O.CLASSES)
    test = meta.orientation["test"]
    assert test["caught_all"] >= 0.95 and test["false_flags"] <= 0.05, test  # phantoms, 64 px
    clf = Classifier.from_bundle(tiny_bundle)
    film = decode_image(sorted(synthetic_data.rglob("*.png"))[0])
    flipped = clf.classify(np.ascontiguousarray(np.rot90(film, 2)))
    assert flipped.decision == OUT_OF_SCOPE and "upside down" in flipped.reason
