"""Custom tf_keras layers used by the model registry (real layers, so QAT can annotate them)."""
from __future__ import annotations

import tf_keras



@tf_keras.utils.register_keras_serializable(package="cxr")
class HardSigmoid(tf_keras.layers.Layer):
    """relu6(x + 3) / 6, as in MobileNetV3."""

    quantize_output_only = True

    def call(self, x):
        return tf_keras.backend.relu(x + 3.0, max_value=6.0) * (1.0 / 6.0)


@tf_keras.utils.register_keras_serializable(package="cxr")
class HardSwish(tf_keras.layers.Layer):
    """x * relu6(x + 3) / 6, as in MobileNetV3."""

    quantize_output_only = True

    def call(self, x):
        return x * tf_keras.backend.relu(x + 3.0, max_value=6.0) * (1.0 / 6.0)


CUSTOM_OBJECTS = {"HardSigmoid": HardSigmoid, "HardSwish": HardSwish}
