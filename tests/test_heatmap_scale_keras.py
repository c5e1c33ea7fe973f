"""The heatmap's colour scale is fitted at conversion from a Keras model's validation feature maps."""
from __future__ import annotations

import numpy as np
import pytest


def test_head_with_scale_fits_one_scale_per_class_from_feature_maps():
    tf_keras = pytest.importorskip("tf_keras")
    from edge_runtime import heatmap as H
    from train import keras_io as K

    x = tf_keras.Input((32, 32, 1))
    f = tf_keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu", name="features")(x / 255.0)
    p = tf_keras.layers.Dense(3, activation="softmax", name="probs")(tf_keras.layers.GlobalAveragePooling2D()(f))
    model = K.two_output_model(tf_keras.Model(x, p))
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32)).astype(np.uint8)
    maps = K.feature_maps(model, images, batch=4)
    assert maps.shape == (10, 8, 8, 8)
    head = K.head_with_scale(model, images)
    assert len(head["cam_scale"]) == 3 and all(s > 0 for s in head["cam_scale"])
    assert head["cam_scale"] == H.fit_scale(maps, head)
    cam = H.class_activation_map(maps[0], head, 0, 32)
    assert cam.shape == (32, 32) and 0 <= cam.min() and cam.max() <= 1
