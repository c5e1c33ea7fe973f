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


def two_output_model(model, name: str | None = None):
    """The classifier with the last convolutional feature map as a second output (heatmap, input check). A model
    that has two outputs already (an ensemble, ``ensemble_model``, as a bundle's ``keras_fp32`` file holds it) is
    returned as it is."""
    import tf_keras

    if len(model.outputs) == 2:
        return model
    names = {layer.name for layer in model.layers}
    pre = "quant_" if "quant_probs" in names else ""
    return tf_keras.Model(model.input, [model.get_layer(pre + "probs").output,
                                        model.get_layer(pre + "features").output], name=name or model.name + "_export")


def ensemble_model(members: list):
    """One two-output model from several two-output models of the same input (an ensemble of trainings): the
    probabilities are the members' arithmetic mean (an average quantises to INT8 as plainly as any layer; a
    geometric mean needs a logarithm of 8-bit probabilities, which is -inf at 0), the feature map is the first
    member's (the heatmap and the input check read it with the first member's classifier weights). Every
    converted format then holds the whole ensemble in one file: one load, one call per view, one parity check.
    The members must carry distinct names (``two_output_model(m, name=...)``)."""
    import tf_keras

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"ensemble members need distinct names, got {names}")
    inp = tf_keras.Input(members[0].input_shape[1:], name="image")
    outs = [m(inp) for m in members]
    probs = tf_keras.layers.Average(name="probs")([o[0] for o in outs])
    return tf_keras.Model(inp, [probs, outs[0][1]], name="ensemble_of_%d" % len(members))


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
