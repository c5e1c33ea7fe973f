import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")

from train import keras_io, models, qat  # noqa: E402


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*mobilenet_v2"):
        models.get_spec("resnet50")


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_every_registered_model_builds_and_takes_uint8_range_gray(name):
    alpha = 0.35 if name.startswith("mobilenet_v2") else 0.75 if name.startswith("mobilenet_v3") else None
    m = models.build_model(name, image_size=32, num_classes=3, alpha=alpha)
    assert m.input_shape == (None, 32, 32, 1)
    assert m.get_layer("normalize") is not None and m.get_layer(models.FEATURES) is not None
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    p = m(x, training=False).numpy()
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small_minimalistic", "efficientnet_lite0"])
def test_qat_wraps_layers_and_round_trips_through_h5(name, tmp_path):
    m = models.build_model(name, image_size=32, num_classes=3, alpha=0.35 if name == "mobilenet_v2" else None)
    q = qat.quantize_model(m)
    wrapped = [l for l in q.layers if type(l).__name__ == "QuantizeWrapperV2"]
    convs = [l for l in m.layers if isinstance(l, (tf_keras.layers.Conv2D, tf_keras.layers.Dense))]
    assert len(wrapped) >= len(convs)
    q.save(tmp_path / "q.h5")
    back = keras_io.load_model(tmp_path / "q.h5")
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    assert np.allclose(back.predict(x, verbose=0), q.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"])
def test_a_grey_stem_computes_what_the_rgb_stem_computes_with_its_kernel_summed(name):
    alpha = 0.35 if name.startswith("mobilenet") else None
    rgb = models.build_model(name, image_size=64, num_classes=3, alpha=alpha)
    grey = models.build_model(name, image_size=64, num_classes=3, alpha=alpha, stem="grey")
    assert "gray_to_rgb" in [layer.name for layer in rgb.layers]
    assert "gray_to_rgb" not in [layer.name for layer in grey.layers]
    x = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1)).astype("float32")
    feats = [models.FEATURES]

    def features(m):
        import tf_keras

        return tf_keras.Model(m.input, m.get_layer(feats[0]).output).predict(x, verbose=0)

    want = features(rgb)
    grey.set_weights(models.grey_stem_weights(rgb, grey))
    np.testing.assert_allclose(features(grey), want, atol=1e-4 * np.abs(want).max())
    wrong = [w[:, :, :1] if w.ndim == 4 and w.shape[2] == 3 and g.shape[2] == 1 else w
             for w, g in zip(rgb.get_weights(), grey.get_weights())]  # one channel's kernel, not the sum
    grey.set_weights(wrong)
    assert np.abs(features(grey) - want).max() > 1e-2 * np.abs(want).max()


def test_an_unknown_stem_and_mismatched_models_are_refused():
    with pytest.raises(ValueError, match="unknown stem"):
        models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35, stem="rgba")
    a = models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)
    b = models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.5, stem="grey")
    with pytest.raises(ValueError):
        models.grey_stem_weights(a, b)


def test_pretrained_weights_reach_a_grey_stem_summed(tmp_path):
    rgb = models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)
    path = tmp_path / "w.weights.h5"
    rgb.save_weights(str(path))
    a = models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35, weights=str(path))
    b = models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35, weights=str(path), stem="grey")
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype("float32")
    ka = a.get_layer("Conv1").get_weights()[0]
    assert np.allclose(b.get_layer("Conv1").get_weights()[0], ka.sum(axis=2, keepdims=True))
    np.testing.assert_allclose(b.predict(x, verbose=0), a.predict(x, verbose=0), atol=1e-5)
