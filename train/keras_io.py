"""Keras I/O in one place: load a model this project saved, give it the feature map as a second output,
predict a batch of uint8 images, read the classifier weights for the heatmap. Conversion, evaluation, the
benchmark's Keras baseline and the study all call these."""
from __future__ import annotations

import numpy as np


def load_model(path, compile: bool = False):
    """Load a float or QAT model saved by this project (``.keras``, ``.h5`` or SavedModel)."""
    import tf_keras

    from train import qat

    with qat.quantize_scope():
        return tf_keras.models.load_model(path, compile=compile)


def two_output_model(model):
    """The classifier with the last convolutional feature map as a second output (heatmap, input check)."""
    import tf_keras

    names = {layer.name for layer in model.layers}
    pre = "quant_" if "quant_probs" in names else ""
    return tf_keras.Model(model.input, [model.get_layer(pre + "probs").output,
                                        model.get_layer(pre + "features").output], name=model.name + "_export")


def predict(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities (N, K) of a one- or two-output model for uint8 images (N, H, W)."""
    return predict_with_embeddings(model, images, batch)[0]


def predict_with_embeddings(model, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities (N, K), mean-pooled feature maps (N, D) or None for a one-output model)."""
    probs, embs = [], []
    for i in range(0, len(images), batch):
        out = model(np.asarray(images[i:i + batch])[..., None].astype(np.float32), training=False)
        if isinstance(out, (list, tuple)):
            probs.append(out[0].numpy())
            embs.append(out[1].numpy().mean(axis=(1, 2)))
        else:
            probs.append(out.numpy())
    if not probs:
        return np.zeros((0, int(model.output_shape[0][-1] if isinstance(model.output_shape, list)
                                else model.output_shape[-1])), np.float32), None
    return np.concatenate(probs), (np.concatenate(embs) if embs else None)


def feature_maps(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The last convolutional feature maps (N, h, w, D) of a two-output model for uint8 images (N, H, W)."""
    maps = [model(np.asarray(images[i:i + batch])[..., None].astype(np.float32), training=False)[1].numpy()
            for i in range(0, len(images), batch)]
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1, 1), np.float32)


def head_with_scale(model, images: np.ndarray, n: int = 256) -> dict:
    """``head_weights`` plus the heatmap's colour scale for this model (``edge_runtime.heatmap.fit_scale`` on
    the feature maps of up to ``n`` validation films), so every film is drawn on the same scale."""
    from edge_runtime import heatmap as H

    head = head_weights(model)
    if len(images):
        head["cam_scale"] = H.fit_scale(feature_maps(model, np.asarray(images)[:n]), head)
    return head


def head_weights(model) -> dict:
    """Classifier weights (D x K) for the class activation map, from the (possibly QAT-wrapped) Dense layer."""
    names = {layer.name for layer in model.layers}
    layer = model.get_layer("quant_probs" if "quant_probs" in names else "probs")
    kernel = next(w for w in layer.weights if "kernel" in w.name and w.shape.rank == 2).numpy()
    return {"weights": np.round(kernel, 6).tolist()}
