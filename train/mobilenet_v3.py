"""MobileNetV3 Small / Large rebuilt as a flat tf_keras graph that tfmot can quantise.

Stock ``tf_keras.applications.MobileNetV3Small/Large`` write hard-swish and hard-sigmoid as raw tensor
arithmetic (``x + 3.0`` ..., which become ``TFOpLambda`` layers), and tfmot QAT fails on them
(``'list' object has no attribute 'dtype'``). This module mirrors Keras' own implementation
(``tf_keras/src/applications/mobilenet_v3.py``: same block table, same ``_depth`` filter rounding, same
kernel sizes, same squeeze-excite structure, same layer names and BatchNorm settings) but uses the real layers
``train.layers.HardSwish`` / ``train.layers.HardSigmoid``, which ``train.qat.quantize_model`` annotates with an
output-only QuantizeConfig (as it does ``Multiply``).

Differences from the stock model, none of which changes the maths:

- no ``Rescaling``: the input is expected already scaled to [-1, 1] (``include_preprocessing=False``);
- no classifier top: the output is the last feature map (``Conv_1`` + BatchNorm + activation), as with
  ``include_top=False`` and ``pooling=None``: 576 channels for Small and 960 for Large at ``alpha`` 1.0
  (Keras computes it as 6x the last block's channels, so it scales with ``alpha``).

Pretrained weights are taken from the stock Keras model and copied onto the rebuilt layers by order; the
layer names are the stock ones, and the copy checks names and shapes layer by layer.
"""
from __future__ import annotations

import os

import tf_keras

from train.layers import HardSigmoid, HardSwish

VARIANTS = ("small", "large")

_BN = dict(axis=-1, epsilon=1e-3, momentum=0.999)

# (expansion, filters before alpha, kernel, stride, se, activation) per inverted-residual block, as in
# Keras' stack_fn. kernel "k" = 5 (3 when minimalistic); se True = se_ratio 0.25 (none when minimalistic);
# activation "a" = hard-swish (ReLU when minimalistic), "relu" = always ReLU.
_SMALL = (
    (1, 16, 3, 2, True, "relu"),
    (72.0 / 16, 24, 3, 2, False, "relu"),
    (88.0 / 24, 24, 3, 1, False, "relu"),
    (4, 40, "k", 2, True, "a"),
    (6, 40, "k", 1, True, "a"),
    (6, 40, "k", 1, True, "a"),
    (3, 48, "k", 1, True, "a"),
    (3, 48, "k", 1, True, "a"),
    (6, 96, "k", 2, True, "a"),
    (6, 96, "k", 1, True, "a"),
    (6, 96, "k", 1, True, "a"),
)
_LARGE = (
    (1, 16, 3, 1, False, "relu"),
    (4, 24, 3, 2, False, "relu"),
    (3, 24, 3, 1, False, "relu"),
    (3, 40, "k", 2, True, "relu"),
    (3, 40, "k", 1, True, "relu"),
    (3, 40, "k", 1, True, "relu"),
    (6, 80, 3, 2, False, "a"),
    (2.5, 80, 3, 1, False, "a"),
    (2.3, 80, 3, 1, False, "a"),
    (2.3, 80, 3, 1, False, "a"),
    (6, 112, 3, 1, True, "a"),
    (6, 112, 3, 1, True, "a"),
    (6, 160, "k", 2, True, "a"),
    (6, 160, "k", 1, True, "a"),
    (6, 160, "k", 1, True, "a"),
)
_BLOCKS = {"small": _SMALL, "large": _LARGE}


def _depth(v, divisor=8, min_value=None):
    """Keras' (and TF-slim's) channel rounding: a multiple of 8, never more than 10% below ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _correct_pad(x, kernel_size):
    """Same as ``imagenet_utils.correct_pad`` (channels_last)."""
    size = tuple(x.shape[1:3])
    adjust = (1, 1) if size[0] is None else (1 - size[0] % 2, 1 - size[1] % 2)
    c = kernel_size // 2
    return ((c - adjust[0], c), (c - adjust[1], c))


class _Builder:
    """Builds the backbone and records the layers that own weights, in creation order."""

    def __init__(self, minimalistic: bool):
        self.minimalistic = minimalistic
        self.kernel = 3 if minimalistic else 5
        self.se_ratio = None if minimalistic else 0.25
        self.weighted: list[tf_keras.layers.Layer] = []

    def __call__(self, layer, x):
        if layer.name and (isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D,
                                              tf_keras.layers.BatchNormalization))):
            self.weighted.append(layer)
        return layer(x)

    def act(self, kind, x, name):
        """``kind``: "relu" or "hswish" (the block's activation already resolved)."""
        if kind == "relu":
            return tf_keras.layers.ReLU(name=name + "/relu")(x)
        return HardSwish(name=name + "/hard_swish")(x)

    def se_block(self, inputs, filters, prefix):
        L = tf_keras.layers
        x = L.GlobalAveragePooling2D(keepdims=True, name=prefix + "squeeze_excite/AvgPool")(inputs)
        # Keras has Conv2D then a separate ReLU layer here. tfmot's LayerReLUQuantize transform gives a Conv2D
        # followed by a ReLU layer a no-op QuantizeConfig, which leaves that conv's kernel unquantised in QAT;
        # a fused activation (same maths, same weights) keeps kernel and output fake-quantised, as TFLite runs it.
        x = self(L.Conv2D(_depth(filters * self.se_ratio), kernel_size=1, padding="same", activation="relu",
                          name=prefix + "squeeze_excite/Conv"), x)
        x = self(L.Conv2D(filters, kernel_size=1, padding="same", name=prefix + "squeeze_excite/Conv_1"), x)
        x = HardSigmoid(name=prefix + "squeeze_excite/hard_sigmoid")(x)
        return L.Multiply(name=prefix + "squeeze_excite/Mul")([inputs, x])

    def inverted_res_block(self, x, expansion, filters, kernel_size, stride, se, activation, block_id):
        L = tf_keras.layers
        shortcut = x
        prefix = "expanded_conv/"
        infilters = x.shape[-1]
        if block_id:
            prefix = f"expanded_conv_{block_id}/"
            x = self(L.Conv2D(_depth(infilters * expansion), kernel_size=1, padding="same", use_bias=False,
                              name=prefix + "expand"), x)
            x = self(L.BatchNormalization(name=prefix + "expand/BatchNorm", **_BN), x)
            x = self.act(activation, x, prefix + "expand")
        if stride == 2:
            x = L.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=prefix + "depthwise/pad")(x)
        x = self(L.DepthwiseConv2D(kernel_size, strides=stride, padding="same" if stride == 1 else "valid",
                                   use_bias=False, name=prefix + "depthwise"), x)
        x = self(L.BatchNormalization(name=prefix + "depthwise/BatchNorm", **_BN), x)
        x = self.act(activation, x, prefix + "depthwise")
        if se:
            x = self.se_block(x, _depth(infilters * expansion), prefix)
        x = self(L.Conv2D(filters, kernel_size=1, padding="same", use_bias=False, name=prefix + "project"), x)
        x = self(L.BatchNormalization(name=prefix + "project/BatchNorm", **_BN), x)
        if stride == 1 and infilters == filters:
            x = L.Add(name=prefix + "Add")([shortcut, x])
        return x

    def build(self, x, variant, alpha):
        L = tf_keras.layers
        block_act = "relu" if self.minimalistic else "hswish"
        x = self(L.Conv2D(16, kernel_size=3, strides=(2, 2), padding="same", use_bias=False, name="Conv"), x)
        x = self(L.BatchNormalization(name="Conv/BatchNorm", **_BN), x)
        x = self.act(block_act, x, "Conv")
        for block_id, (expansion, filters, kernel, stride, se, act) in enumerate(_BLOCKS[variant]):
            x = self.inverted_res_block(
                x, expansion, _depth(filters * alpha), self.kernel if kernel == "k" else kernel, stride,
                se and self.se_ratio is not None, block_act if act == "a" else "relu", block_id)
        x = self(L.Conv2D(_depth(x.shape[-1] * 6), kernel_size=1, padding="same", use_bias=False, name="Conv_1"), x)
        x = self(L.BatchNormalization(name="Conv_1/BatchNorm", **_BN), x)
        return self.act(block_act, x, "Conv_1")


def weights_file_name(variant: str, alpha: float = 1.0, minimalistic: bool = False) -> str:
    """The name of Keras' no-top ImageNet weights file for this configuration (cached in ~/.keras/models)."""
    return (f"weights_mobilenet_v3_{variant}{'_minimalistic' if minimalistic else ''}_224_{float(alpha)}"
            "_float_no_top_v2.h5")


def stock_model(variant: str, *, alpha: float = 1.0, minimalistic: bool = False, weights=None,
                input_shape=(224, 224, 3)) -> tf_keras.Model:
    """The stock Keras model this module mirrors (``include_top=False``, ``include_preprocessing=False``)."""
    _check_variant(variant)
    app = tf_keras.applications.MobileNetV3Small if variant == "small" else tf_keras.applications.MobileNetV3Large
    return app(input_shape=input_shape, alpha=alpha, minimalistic=minimalistic, include_top=False,
               weights=weights, include_preprocessing=False)


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown MobileNetV3 variant {variant!r}; valid: {', '.join(VARIANTS)}")


def _weighted_layers(model: tf_keras.Model) -> list:
    return [layer for layer in model.layers if layer.weights]


def copy_weights(source: tf_keras.Model, targets: list) -> None:
    """Copy the weights of ``source``'s layers onto ``targets`` (layers, creation order) by order.

    Every weighted layer of ``source`` must map onto one target with the same name and the same weight shapes;
    nothing is skipped.
    """
    src = _weighted_layers(source)
    if len(src) != len(targets):
        raise ValueError(f"MobileNetV3 weight copy: {len(src)} weighted layers in the Keras model, "
                         f"{len(targets)} in the rebuilt one")
    for s, t in zip(src, targets):
        s_w = s.get_weights()
        t_shapes = [tuple(w.shape) for w in t.weights]
        if s.name != t.name or [w.shape for w in s_w] != t_shapes:
            raise ValueError(f"MobileNetV3 weight copy: Keras layer {s.name!r} "
                             f"{[w.shape for w in s_w]} does not match rebuilt layer {t.name!r} {t_shapes}")
    for s, t in zip(src, targets):
        t.set_weights(s.get_weights())


def _pretrained_source(variant, alpha, minimalistic, weights) -> tf_keras.Model:
    if weights == "imagenet":
        try:
            return stock_model(variant, alpha=alpha, minimalistic=minimalistic, weights="imagenet")
        except ValueError:
            raise  # Keras' own message, e.g. alpha not one with published weights
        except Exception as exc:
            raise RuntimeError(
                f"could not get the ImageNet weights for MobileNetV3-{variant.capitalize()} "
                f"(alpha={alpha}, minimalistic={minimalistic}): Keras downloads them at run time, which needs "
                f"the internet. Offline, pass a local file with --weights PATH (Keras' "
                f"{weights_file_name(variant, alpha, minimalistic)}), or put it in ~/.keras/models/. "
                f"Cause: {type(exc).__name__}: {exc}") from exc
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MobileNetV3 weights file not found: {path}")
    model = stock_model(variant, alpha=alpha, minimalistic=minimalistic, weights=None)
    try:
        model.load_weights(path)
    except Exception as exc:
        raise ValueError(
            f"could not load {path} into MobileNetV3-{variant.capitalize()} (alpha={alpha}, "
            f"minimalistic={minimalistic}, no top): expected Keras' "
            f"{weights_file_name(variant, alpha, minimalistic)} or a file with the same layers. "
            f"Cause: {type(exc).__name__}: {exc}") from exc
    return model


def backbone(x, *, variant: str = "small", alpha: float = 1.0, minimalistic: bool = False, weights=None):
    """Apply MobileNetV3 to ``x`` (a 3-channel tf_keras tensor in [-1, 1]; 1 channel for a grey stem, without
    ``weights``); return the last feature map.

    ``variant``: "small" or "large". ``alpha``: width multiplier. ``minimalistic``: ReLU, 3x3 kernels, no
    squeeze-excite. ``weights``: None (random), "imagenet" (Keras download: alpha 0.75 or 1.0, or 1.0 when
    minimalistic) or a path to Keras' no-top weights file for the same configuration.
    The layers are added to ``x``'s graph with Keras' stock names (``Conv``, ``expanded_conv_3/expand``, ...),
    so one model can hold only one such backbone.
    """
    _check_variant(variant)
    if alpha is None:
        alpha = 1.0
    if x.shape[-1] not in (1, 3) or (weights is not None and x.shape[-1] != 3):
        raise ValueError(f"MobileNetV3 expects a 3-channel input (1 channel: a grey stem, without weights; "
                         f"train.models.build_model sums pretrained ones), got shape {tuple(x.shape)}")
    source = None
    if weights is not None:
        source = _pretrained_source(variant, alpha, minimalistic, weights)  # fail before building anything
    builder = _Builder(minimalistic)
    out = builder.build(x, variant, alpha)
    if source is not None:
        copy_weights(source, builder.weighted)
        del source
    return out
