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
