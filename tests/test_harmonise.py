"""Input harmonisation and the shortcut-audit masks: part of the one preprocessing path, stored in the
metadata, so that training, conversion and the device prepare pixels identically."""
import numpy as np
import pytest

from edge_runtime.heatmap import uncrop
from edge_runtime.metadata import ModelMetadata
from edge_runtime.preprocess import PreprocessConfig, crop, frame_mask, load, prepare


def film(h=200, w=180, seed=0):
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w)) * 60 + 90).astype(np.uint8)
    img[:20, :] = 255  # a bright burnt-in band on the top edge
    return img


def test_crop_trims_each_side_by_the_fraction():
    img = np.arange(100 * 80, dtype=np.int32).reshape(100, 80)
    out = crop(img, 0.1)
    assert out.shape == (80, 64)
    assert out[0, 0] == img[10, 8]
    assert crop(img, 0.0) is img


def test_crop_removes_an_edge_marker_before_resizing():
    img = film()
    plain = prepare(img, PreprocessConfig(64))
    cropped = prepare(img, PreprocessConfig(64, crop=0.12))
    assert plain[0].mean() == 255  # the band reaches the model without cropping
    assert cropped.max() < 200  # and not with it


@pytest.mark.parametrize("method", ["clahe", "hist"])
def test_equalisation_spreads_a_low_contrast_film(method):
    img = film()[30:]  # 90..150 only
    x = prepare(img, PreprocessConfig(64, equalize=method))
    assert x.dtype == np.uint8 and x.shape == (64, 64)
    assert np.ptp(x) > 1.5 * np.ptp(prepare(img, PreprocessConfig(64)))


def test_equalisation_evens_out_exposure_between_sites():
    """The same film at two exposures: global histogram equalisation maps both to nearly the same image."""
    img = film()[30:]
    dark = (img.astype(np.float32) * 0.6).astype(np.uint8)
    cfg = PreprocessConfig(64, equalize="hist")
    before = np.abs(prepare(img, PreprocessConfig(64)).astype(int) - prepare(dark, PreprocessConfig(64))).mean()
    after = np.abs(prepare(img, cfg).astype(int) - prepare(dark, cfg)).mean()
    assert after < before / 4


def test_border_and_centre_controls_blank_complementary_regions():
    img = np.full((256, 256), 200, np.uint8)
    border = prepare(img, PreprocessConfig(64, keep="border"))
    centre = prepare(img, PreprocessConfig(64, keep="centre"))
    m = frame_mask(64, 24 / 256)
    assert m[0, 0] and not m[32, 32] and m.sum() == 64 * 64 - (64 - 12) ** 2  # a 6-pixel frame at 64 px
    assert (border[m] == 200).all() and (border[~m] == 0).all()
    assert (centre[~m] == 200).all() and (centre[m] == 0).all()


@pytest.mark.parametrize("kw, message", [({"crop": 0.5}, "crop"), ({"equalize": "gamma"}, "equalize"),
                                         ({"keep": "lungs"}, "keep"), ({"frame": 0.6}, "frame")])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(64, **kw)


def test_metadata_carries_the_recipe_and_old_metadata_means_none(tmp_path):
    meta = ModelMetadata(labels=("a", "b"), preprocess=PreprocessConfig(64, crop=0.1, equalize="clahe"),
                         model_name="m", model_version="1")
    back = ModelMetadata.load(meta.save(tmp_path / "m.json"))
    assert back.preprocess == PreprocessConfig(64, crop=0.1, equalize="clahe")
    old = ModelMetadata.from_dict({"labels": ["a", "b"], "image_size": 64, "model_name": "m", "model_version": "1"})
    assert old.preprocess == PreprocessConfig(64) and not old.preprocess.harmonised
    with pytest.raises(ValueError, match="equalize"):
        ModelMetadata.from_dict({"labels": ["a", "b"], "image_size": 64, "model_name": "m", "model_version": "1",
                                 "equalize": "magic"})


def test_load_applies_the_recipe(make_png, tmp_path):
    path = make_png(tmp_path / "x.png", size=(120, 100))
    cfg = PreprocessConfig(32, crop=0.1, equalize="clahe")
    from edge_runtime.preprocess import decode_image

    assert np.array_equal(load(path, cfg), prepare(decode_image(path), cfg))


def test_uncrop_puts_the_heatmap_back_over_the_centre_of_the_film():
    heat = np.ones((80, 80), np.float32)
    full = uncrop(heat, 0.1)
    assert full.shape == (100, 100)  # 80 px is the central 80% of the film
    assert full[10:90, 10:90].min() == 1 and full[:10].max() == 0 and full[:, 90:].max() == 0
    assert uncrop(heat, 0.0) is heat
