"""Quantization-aware training with tensorflow-model-optimization on tf_keras (Keras 2) models.

tfmot knows the stock layers (Conv2D, DepthwiseConv2D, Dense, BatchNormalization, ReLU, Add, ...).
Layers it does not know are annotated here with one of two small configs:

- ``NoOpQuantizeConfig``: nothing quantised (the input ``Rescaling``'s offset; see ``split_input_rescaling``).
- ``OutputQuantizeConfig``: only the output is fake-quantised (hard-swish, hard-sigmoid, multiply, and the
  input ``Rescaling``'s scaling).

A layer class opts into the second by setting the class attribute ``quantize_output_only = True``.
"""
from __future__ import annotations

import tensorflow_model_optimization as tfmot
import tf_keras

from train import layers

_q = tfmot.quantization.keras


class NoOpQuantizeConfig(_q.QuantizeConfig):
    """Leave a layer in float: no weights, activations or outputs quantised."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class OutputQuantizeConfig(NoOpQuantizeConfig):
    """Fake-quantise only the layer output (8-bit, asymmetric, moving average of the range)."""

    def get_output_quantizers(self, layer):
        return [_q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                     narrow_range=False)]


def custom_objects() -> dict:
    """Everything ``tf_keras.models.load_model`` needs to read a model saved by this project."""
    objs = {"NoOpQuantizeConfig": NoOpQuantizeConfig, "OutputQuantizeConfig": OutputQuantizeConfig}
    objs.update(layers.CUSTOM_OBJECTS)
    return objs


def split_input_rescaling(model: tf_keras.Model) -> tf_keras.Model:
    """A copy of the float ``model`` whose input ``Rescaling(1/127.5, offset=-1)`` is two layers, ``x / 127.5``
    then ``- 128/127.5`` (the same values moved by half a grey level), so that its INT8 form is exact.

    With the one layer, the TFLite converter puts the multiplication's result on a grid it calibrates by itself
    (step 1.5 grey levels in the default run: a third of the grey levels merged with a neighbour, and the
    INT8 file saw a different image from the QAT model). Split, the first layer's output is fake-quantised
    on [0, 2] (step 1/127.5: one grey level) and the second lands on [-128/127.5, 127/127.5] with the same
    step and zero point 0, so the QAT model and its INT8 file see the same input, bit for bit.
    Other models are returned unchanged. Every layer must be called once (true of the registry's models)."""
    import tensorflow as tf

    rescale = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Rescaling)]
    cfg = rescale[0].get_config() if rescale else {}
    if not rescale or abs(cfg["scale"] - 1 / 127.5) > 1e-9 or abs(cfg["offset"] + 1.0) > 1e-9:
        return model
    new_in = tf_keras.Input(batch_shape=model.input_shape, name=model.layers[0].name)
    outs = {}
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            outs[layer.name] = new_in
            continue
        if len(layer.inbound_nodes) != 1:
            raise ValueError(f"split_input_rescaling: layer {layer.name} is called {len(layer.inbound_nodes)} times")
        node = layer.inbound_nodes[0]
        feeds = [outs[f.name] for f in tf.nest.flatten(node.inbound_layers)]
        if layer is rescale[0]:
            x = tf_keras.layers.Rescaling(1 / 127.5, name=layer.name)(feeds[0])
            outs[layer.name] = tf_keras.layers.Rescaling(1.0, offset=-128 / 127.5, name=layer.name + "_centre")(x)
            continue
        copy = type(layer).from_config(layer.get_config())
        outs[layer.name] = copy(feeds if isinstance(node.call_args[0], (list, tuple)) else feeds[0],
                                **node.call_kwargs)
        copy.set_weights(layer.get_weights())
    return tf_keras.Model(new_in, [outs[t._keras_history.layer.name] for t in model.outputs], name=model.name)


def _annotate(layer):
    if isinstance(layer, tf_keras.layers.InputLayer):
        return layer
    if isinstance(layer, tf_keras.layers.Rescaling):  # a pure scaling keeps its (exact) output grid
        scale_only = layer.get_config()["offset"] == 0
        return _q.quantize_annotate_layer(layer, OutputQuantizeConfig() if scale_only else NoOpQuantizeConfig())
    if getattr(layer, "quantize_output_only", False) or isinstance(layer, tf_keras.layers.Multiply):
        return _q.quantize_annotate_layer(layer, OutputQuantizeConfig())
    return _q.quantize_annotate_layer(layer)


def quantize_model(model: tf_keras.Model) -> tf_keras.Model:
    """Return a QAT copy of a float functional ``model`` (its weights are kept)."""
    model = split_input_rescaling(model)
    annotated = tf_keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    with _q.quantize_scope(custom_objects()):
        return _q.quantize_apply(annotated)


def quantize_scope():
    """The scope in which tf_keras can read a QAT model saved by this project (``train.keras_io.load_model``)."""
    return _q.quantize_scope(custom_objects())


# tfmot's activation quantisers start at the range [-6, 6] and move towards each batch's range by a moving
# average with decay 0.999, so a QAT phase of a few hundred steps never reaches the real ranges: the default
# run's ReLU6 outputs still had [-5.8, 6.0] (half the 8-bit grid below zero, never used) and its [-1, 1] input
# a grid step of 0.046 (44 levels). ``calibrate_ranges`` starts every range where the moving average would end.
_RANGE_KINDS = ("output", "post_activation", "pre_activation")


def _input_ranges(qat_model) -> dict:
    """{layer name: (min, max)} for tensors that are an exact function of the uint8 input (0..255): a chain of
    ``Rescaling`` layers from the input and ``Concatenate`` layers of such tensors only."""
    import tensorflow as tf

    known = {}
    for wrapper in qat_model.layers:
        inner = getattr(wrapper, "layer", wrapper)
        feeds = [getattr(f, "layer", f).name for n in wrapper.inbound_nodes for f in tf.nest.flatten(n.inbound_layers)]
        if isinstance(wrapper, tf_keras.layers.InputLayer) or type(wrapper).__name__ == "QuantizeLayer":
            known[inner.name] = (0.0, 255.0)
        elif isinstance(inner, tf_keras.layers.Rescaling) and len(feeds) == 1 and feeds[0] in known:
            cfg = inner.get_config()
            lo, hi = sorted(v * cfg["scale"] + cfg["offset"] for v in known[feeds[0]])
            known[inner.name] = (min(lo, 0.0), max(hi, 0.0))
        elif isinstance(inner, tf_keras.layers.Concatenate) and feeds and all(f in known for f in feeds):
            known[inner.name] = (min(known[f][0] for f in feeds), max(known[f][1] for f in feeds))
    return known


def _range_probes(qat_model, float_model):
    """[(min_var, max_var, float tensor or a fixed (min, max))] for every moving-average range of ``qat_model``."""
    fixed = _input_ranges(qat_model)
    probes = []
    for wrapper in qat_model.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None:
            continue
        found = {v.name.split("/")[-1].split(":")[0]: v for v in wrapper.weights}
        for kind in _RANGE_KINDS:
            if kind + "_min" not in found:
                continue
            target = fixed.get(inner.name) if kind != "pre_activation" else None
            if target is None:
                layer = float_model.get_layer(inner.name)
                target = layer.output
            if kind == "pre_activation":  # the layer's output before its activation (e.g. logits before softmax)
                linear = type(layer).from_config({**layer.get_config(), "activation": "linear",
                                                  "name": layer.name + "_linear_probe"})
                target = linear(layer.input)
                linear.set_weights(layer.get_weights())
            probes.append((found[kind + "_min"], found[kind + "_max"], target))
    return probes


def calibrate_ranges(qat_model, float_model, batches, chunk: int = 8) -> int:
    """Set each activation range of a fresh ``qat_model`` (from ``quantize_model(float_model)``) to the mean
    per-batch [min(x, 0), max(x, 0)] of the float model's tensor on ``batches`` (float images, N x H x W x 1),
    the value tfmot's moving average converges to; tensors that are an exact function of the uint8 input get
    their exact range. Returns the number of ranges set."""
    import numpy as np

    probes = _range_probes(qat_model, float_model)
    measured = [i for i, p in enumerate(probes) if not isinstance(p[2], tuple)]
    lo = np.zeros(len(probes), np.float32)
    hi = np.zeros(len(probes), np.float32)
    if measured:
        probe = tf_keras.Model(float_model.input, [probes[i][2] for i in measured])
        lows, highs = [], []
        for batch in batches:
            batch = np.asarray(batch, np.float32)
            blo, bhi = np.zeros(len(measured), np.float32), np.zeros(len(measured), np.float32)
            for i in range(0, len(batch), chunk):
                outs = probe(batch[i:i + chunk], training=False)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                blo = np.minimum(blo, [float(np.min(o)) for o in outs])
                bhi = np.maximum(bhi, [float(np.max(o)) for o in outs])
            lows.append(blo)
            highs.append(bhi)
        if not lows:
            raise ValueError("calibrate_ranges: no calibration batches")
        lo[measured], hi[measured] = np.mean(lows, axis=0), np.mean(highs, axis=0)
    for i, (vmin, vmax, target) in enumerate(probes):
        a, b = target if isinstance(target, tuple) else (lo[i], hi[i])
        vmin.assign(np.full(vmin.shape, a, np.float32))
        vmax.assign(np.full(vmax.shape, max(b, a + 1e-6), np.float32))
    return len(probes)
