"""The rebuilt MobileNetV3 (train/mobilenet_v3.py) matches Keras' own and quantises with tfmot."""
from __future__ import annotations

import numpy as np
import pytest

from train import qat
import tf_keras

from train import mobilenet_v3, models

SIZE = 32


def _randomise(model, rng):
    """Random values for every weight, BatchNorm statistics included, so a swapped tensor cannot hide."""
    values = []
    for w in model.weights:
        name, shape = w.name, tuple(w.shape)
        if "gamma" in name or "moving_variance" in name:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif "beta" in name or "moving_mean" in name or "bias" in name:
            values.append(rng.normal(0.0, 0.1, shape))
        else:
            values.append(rng.normal(0.0, 1.0, shape) * w.numpy().std())
    model.set_weights(values)


@pytest.mark.parametrize("variant,minimalistic,channels,via_file", [
    ("small", False, 576, False), ("small", True, 576, True), ("large", False, 960, False),
    ("large", True, 960, False)])
def test_same_outputs_as_keras_with_weights_copied_by_order(variant, minimalistic, channels, via_file, tmp_path):
    """Random Keras weights copied by order give the same feature map: the architectures match exactly.

    ``via_file``: go through the public path instead (Keras weights saved to an .h5 file, then
    ``backbone(weights=path)``), as a user with Keras' downloaded weights file would.
    """
    rng = np.random.default_rng(0)
    stock = mobilenet_v3.stock_model(variant, minimalistic=minimalistic, input_shape=(SIZE, SIZE, 3))
    _randomise(stock, rng)

    inp = tf_keras.Input((SIZE, SIZE, 3))
    if via_file:
        path = str(tmp_path / mobilenet_v3.weights_file_name(variant, 1.0, minimalistic))
        stock.save_weights(path)
        out = mobilenet_v3.backbone(inp, variant=variant, minimalistic=minimalistic, weights=path)
    else:
        builder = mobilenet_v3._Builder(minimalistic)
        out = builder.build(inp, variant, 1.0)
        mobilenet_v3.copy_weights(stock, builder.weighted)
    rebuilt = tf_keras.Model(inp, out)
    assert out.shape[-1] == channels
    assert rebuilt.count_params() == stock.count_params()

    x = rng.uniform(-1.0, 1.0, (2, SIZE, SIZE, 3)).astype("float32")
    want = stock(x, training=False).numpy()
    got = rebuilt(x, training=False).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # No stock activation arithmetic (TFOpLambda) left: that is what tfmot cannot quantise.
    assert not [l.name for l in rebuilt.layers if type(l).__name__ in ("TFOpLambda", "Lambda")]


def test_imagenet_download_failure_says_how_to_work_offline(monkeypatch):
    from tf_keras.src.applications import mobilenet_v3 as keras_mnv3

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras_mnv3.data_utils, "get_file", offline)
    inp = tf_keras.Input((SIZE, SIZE, 3))
    with pytest.raises(RuntimeError, match="internet.*--weights"):
        mobilenet_v3.backbone(inp, variant="small", minimalistic=True, weights="imagenet")


def test_unknown_variant_raises():
    inp = tf_keras.Input((SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="unknown MobileNetV3 variant 'medium'"):
        mobilenet_v3.backbone(inp, variant="medium")
    with pytest.raises(FileNotFoundError):
        mobilenet_v3.backbone(inp, variant="small", weights="/nonexistent/weights.h5")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilenet_v3_small_minimalistic"])
def test_quantize_and_train_one_step(name):
    model = models.build_model(name, image_size=SIZE, num_classes=3)
    q = qat.quantize_model(model)

    wrapped = {l.name: l for l in q.layers if hasattr(l, "quantize_config")}
    plain = [l.name for l in q.layers
             if l.name not in wrapped and type(l).__name__ not in ("InputLayer", "QuantizeLayer")]
    assert not plain, f"layers left outside QAT: {plain}"
    for layer in wrapped.values():
        if isinstance(layer.layer, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D, tf_keras.layers.Dense)):
            assert any("kernel_min" in w.name for w in layer.weights), f"{layer.name}: kernel not fake-quantised"
    if name == "mobilenet_v3_small":
        for suffix in ("AvgPool", "Conv", "Conv_1", "hard_sigmoid", "Mul"):
            layer = wrapped[f"quant_expanded_conv_3/squeeze_excite/{suffix}"]
            assert layer.quantize_config.get_output_quantizers(layer.layer) or \
                layer.quantize_config.get_activations_and_quantizers(layer.layer), layer.name
        assert type(wrapped["quant_Conv/hard_swish"].quantize_config).__name__ == "OutputQuantizeConfig"

    # One eager step: tracing the graph train function costs ~1 min on 2 cores, an eager step a few seconds.
    q.compile(tf_keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, SIZE, SIZE, 1)).astype("float32")
    y = rng.integers(0, 3, 2)
    kernel = next(w for w in q.get_layer("quant_Conv").trainable_weights if w.name.endswith("kernel:0"))
    before = kernel.numpy().copy()
    loss = q.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert not np.array_equal(before, kernel.numpy())
