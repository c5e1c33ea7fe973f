"""Site-style augmentation (train.site): another site's exposure, collimation, markers, sharpness/noise and
compression, applied to the film before equalisation, and nothing at all when switched off."""
import numpy as np
import pytest

from edge_runtime.preprocess import PreprocessConfig, crop, finish, prepare, resize
from train import site as S


def chest(size=96, seed=0):
    """A smooth film-like image: bright mediastinum, darker lungs, some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = 150 - 60 * (np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.03) + np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.03))
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def test_off_is_exactly_the_device_preprocessing():
    film = np.tile(chest(120), (2, 2))[:200, :180]
    cfg = PreprocessConfig(64, crop=0.1, equalize="clahe")
    raw = resize(crop(film, cfg.crop), cfg)  # what training caches when site augmentation is on
    assert np.array_equal(finish(raw, cfg), prepare(film, cfg))
    batch = np.stack([raw, raw])[..., None].astype(np.float32)
    out = S.batch_function(cfg, seed=0, p=0.0)(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    assert np.array_equal(out[0, ..., 0], prepare(film, cfg))


def test_each_change_alters_the_film_and_keeps_its_shape():
    x = chest()
    rng = np.random.default_rng(1)
    for step in S.STEPS:
        y = np.clip(np.round(step(x, rng)), 0, 255).astype(np.uint8)
        assert y.shape == x.shape, step.__name__
        assert np.abs(y.astype(int) - x).mean() > 0.2, step.__name__
    assert np.array_equal(S.augment(x, np.random.default_rng(0), p=0.0), x)
    a, b = (S.augment(x, np.random.default_rng(7), p=1.0) for _ in range(2))
    assert np.array_equal(a, b) and a.dtype == np.uint8  # seeded: reproducible


def test_collimation_blanks_edges_and_keeps_the_centre():
    x = chest()
    framed = 0
    for seed in range(20):
        y = S.collimation(x, np.random.default_rng(seed))
        assert np.array_equal(y[20:-20, 20:-20], x[20:-20, 20:-20])  # at most 10% per side
        edges = [y[0], y[-1], y[:, 0], y[:, -1]]
        framed += any(np.ptp(e) == 0 and e[0] in (0, 255) for e in edges)
    assert framed >= 15  # each side with probability 0.6: a frame almost always


def test_markers_burn_in_text_near_the_edges():
    x = chest(128)
    diffs = [np.abs(S.markers(x, np.random.default_rng(s)).astype(int) - x) > 40 for s in range(10)]
    changed = np.mean(diffs, axis=0)
    assert changed.sum() > 0
    assert changed[40:88, 40:88].sum() < 0.2 * changed.sum()  # mostly outside the central lung field


def test_exposure_spans_darker_and_brighter_films():
    x = chest()
    means = [S.exposure(x, np.random.default_rng(s)).mean() for s in range(40)]
    assert min(means) < x.mean() - 15 and max(means) > x.mean() + 15


def test_training_pipeline_applies_it_before_the_geometric_augmentation():
    pytest.importorskip("tf_keras")
    from train.data import Arrays
    from train.train import make_dataset

    cfg = PreprocessConfig(64, crop=0.1, equalize="clahe")
    raw = np.stack([chest(64, s) for s in range(8)])
    arrays = Arrays(raw, np.arange(8) % 3, [], [])
    x0, y0 = next(iter(make_dataset(arrays, 8, True, 0, augment=False,
                                    site=S.batch_function(cfg, 0, p=0.0))))
    assert x0.shape == (8, 64, 64, 1) and x0.dtype.name == "float32"
    assert {tuple(np.asarray(x0)[i, ..., 0].ravel()[:50]) for i in range(8)} == \
        {tuple(finish(r, cfg).astype(np.float32).ravel()[:50]) for r in raw}  # shuffled, finished, not altered
    x1, _ = next(iter(make_dataset(arrays, 8, True, 0, augment=True, site=S.batch_function(cfg, 0, p=1.0))))
    x1 = np.asarray(x1)
    assert x1.min() >= 0 and x1.max() <= 255
    assert not np.allclose(np.sort(x1.ravel()), np.sort(np.asarray(x0).ravel()))


def test_the_training_cli_checks_the_probability(tmp_path, capsys):
    pytest.importorskip("tf_keras")
    from train.__main__ import build_parser, main

    assert build_parser().parse_args(["--data", "x", "--site-augment", "0.5"]).site_augment == 0.5
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--site-augment", "1.5"]) == 2
    assert "--site-augment is a probability" in capsys.readouterr().err
