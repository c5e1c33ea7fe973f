"""Quantization-aware training with tensorflow-model-optimization on tf_keras (Keras 2) models.

tfmot knows the stock layers (Conv2D, DepthwiseConv2D, Dense, BatchNormalization, ReLU, Add, ...).
Layers it does not know are annotated here with one of two small configs:

- ``NoOpQuantizeConfig``: nothing quantised (``Rescaling`` at the input: its output is re-quantised by
  the next layer anyway).
- ``OutputQuantizeConfig``: only the output is fake-quantised (hard-swish, hard-sigmoid, multiply).

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


def _annotate(layer):
    if isinstance(layer, tf_keras.layers.InputLayer):
        return layer
    if isinstance(layer, tf_keras.layers.Rescaling):
        return _q.quantize_annotate_layer(layer, NoOpQuantizeConfig())
    if getattr(layer, "quantize_output_only", False) or isinstance(layer, tf_keras.layers.Multiply):
        return _q.quantize_annotate_layer(layer, OutputQuantizeConfig())
    return _q.quantize_annotate_layer(layer)


def quantize_model(model: tf_keras.Model) -> tf_keras.Model:
    """Return a QAT copy of a float functional ``model`` (its weights are kept)."""
    annotated = tf_keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    with _q.quantize_scope(custom_objects()):
        return _q.quantize_apply(annotated)


def quantize_scope():
    """The scope in which tf_keras can read a QAT model saved by this project (``train.keras_io.load_model``)."""
    return _q.quantize_scope(custom_objects())
