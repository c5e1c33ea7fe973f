"""Label smoothing and mixup (``train --label-smoothing E --mixup ALPHA``): the targets and the blended batches."""
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from train.data import Arrays, Sample  # noqa: E402
from train.train import make_dataset, smooth_targets  # noqa: E402


def test_smoothed_targets_keep_the_label_on_top_and_sum_to_one():
    t = smooth_targets(np.array([0, 2, 1]), 3, 0.1)
    assert t.dtype == np.float32 and np.allclose(t.sum(1), 1)
    assert np.allclose(t[0], [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]) and t[1].argmax() == 2
    teacher = np.array([[0.6, 0.3, 0.1]])
    assert np.allclose(smooth_targets(np.array([0]), 3, 0.0, teacher), teacher)  # distillation alone: unchanged
    assert np.allclose(smooth_targets(np.array([0]), 3, 0.3, teacher), 0.7 * teacher + 0.1)


def _batch(n=64, size=8):
    """Films whose every pixel says their class (0, 100 or 200), so a blend can be read off the film."""
    y = np.arange(n) % 3
    images = np.broadcast_to((100 * y)[:, None, None], (n, size, size)).astype(np.uint8)
    return Arrays(images, y, [Sample(f"{i}.png", "x", "s", str(i)) for i in range(n)], [])


def test_mixup_blends_films_and_targets_by_the_same_weight():
    arr = _batch()
    targets = smooth_targets(arr.labels, 3, 0.0)
    ds = make_dataset(arr, 64, True, seed=3, augment=False, targets=targets, mixup=0.4)
    x, t = (v.numpy() for v in next(iter(ds)))
    assert x.shape == (64, 8, 8, 1) and np.allclose(t.sum(1), 1, atol=1e-6)
    assert np.allclose(x[:, 0, 0, 0], t @ np.array([0.0, 100.0, 200.0]), atol=1e-3)  # film and target agree
    assert np.allclose(x.std(axis=(1, 2, 3)), 0, atol=1e-3)  # each film blended whole, by one weight
    assert (t.max(1) < 0.999).sum() > 20  # most films are blends
    lam = t.max(1)  # Beta(0.4, 0.4) puts its mass near 0 and 1: most blends stay close to one film
    assert np.median(lam) > 0.75
    # another epoch draws other weights and partners
    x2, _ = (v.numpy() for v in next(iter(ds)))
    assert not np.allclose(x2, x)


def test_a_tiny_mixup_alpha_never_gives_a_film_that_is_not_a_number():
    """Beta(0.01, 0.01): both gamma draws often underflow to zero; the film then stays as it is."""
    arr = _batch(n=256)
    ds = make_dataset(arr, 256, True, seed=0, augment=False, targets=smooth_targets(arr.labels, 3, 0.0), mixup=0.01)
    for _ in range(3):
        x, t = (v.numpy() for v in next(iter(ds)))
        assert np.isfinite(x).all() and np.isfinite(t).all() and np.allclose(t.sum(1), 1, atol=1e-6)
        assert np.allclose(x[:, 0, 0, 0], t @ np.array([0.0, 100.0, 200.0]), atol=1e-3)


def test_mixup_without_soft_targets_is_refused():
    with pytest.raises(ValueError, match="soft"):
        make_dataset(_batch(), 8, True, seed=0, augment=False, mixup=0.2)


def test_bad_values_are_refused_before_training(tmp_path, capsys):
    from train.__main__ import main

    for flags in (["--label-smoothing", "1.0"], ["--mixup", "-0.1"], ["--mixup", "nan"]):
        assert main(["--data", str(tmp_path), "--out", str(tmp_path / "r"), *flags]) == 2
        assert "--label-smoothing" in capsys.readouterr().err
