"""A model that has learnt something from the home site, without TensorFlow: a softmax over the 4x4 grid of
mean brightness of the 32 px film, fitted in numpy on ``synthetic_a`` phantoms and written as a hand-built
ONNX graph in a signed bundle, with thresholds chosen on the home site's films by the same
``operating_point.choose_operating_points`` as training. On ``synthetic_b`` (darker, noisier, a collimation
border) its home thresholds no longer hold: what a site profile is for."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

LABELS = ("normal", "pneumonia", "tuberculosis")
SIZE, GRID = 32, 4
EMBED_GRID = 8  # the embedding for the input check: 8x8 grid means (finer than the classifier's 4x4)


def phantom_set(root: Path, per_class: int = 150, seed: int = 3) -> dict[str, list[dict]]:
    """Phantom films (64-96 px) and one manifest per site: ``root/synthetic_a.csv``, ``root/synthetic_b.csv``."""
    from train.phantom import generate_dataset

    generate_dataset(root, per_class=per_class, seed=seed, min_size=64, max_size=96)
    rows = list(csv.DictReader(open(root / "manifest.csv", encoding="utf-8")))
    by_site = {}
    for site in ("synthetic_a", "synthetic_b"):
        by_site[site] = [r for r in rows if r["source"] == site]
        write_manifest(root / f"{site}.csv", by_site[site])
    return by_site


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file", "class", "source", "patient_id"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def features(images: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(N, grid*grid) grid means in [0, 1] of (N, 32, 32) uint8 films: what the ONNX graph computes."""
    x = np.asarray(images, np.float64).reshape(len(images), grid, SIZE // grid, grid, SIZE // grid)
    return x.mean(axis=(2, 4)).reshape(len(images), -1) / 255.0


def fit_softmax(x: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 2.0, l2: float = 1e-3):
    """Multinomial logistic regression by gradient descent on standardised features -> (W, b) on raw ones."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    k = len(LABELS)
    w, b = np.zeros((x.shape[1], k)), np.zeros(k)
    onehot = np.eye(k)[y]
    for _ in range(steps):
        logits = z @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(y)
        w -= lr * (z.T @ g + l2 * w)
        b -= lr * g.sum(0)
    return w / sd[:, None], b - (mu / sd) @ w


def load_images(root: Path, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    from edge_runtime.preprocess import PreprocessConfig, load

    cfg = PreprocessConfig(SIZE)
    return (np.stack([load(str(root / r["file"]), cfg) for r in rows]),
            np.array([LABELS.index(r["class"]) for r in rows]))


def write_grid_bundle(folder: Path, w: np.ndarray, b: np.ndarray, thresholds: dict, scope: dict | None = None,
                      reference: dict | None = None) -> Path:
    """The grid model as a signed bundle; with ``scope`` (``edge_runtime.scope.fit`` of home-site grid features)
    it also outputs the 8x8 grid means as a (1, 1, 1, 64) feature map, so the runtime measures the embedding
    distance."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_runtime.bundle import write_sums
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.preprocess import PreprocessConfig

    folder.mkdir(parents=True, exist_ok=True)
    k = SIZE // GRID
    inits = [numpy_helper.from_array(np.array([1, 1, SIZE, SIZE], np.int64), "nchw"),
             numpy_helper.from_array(np.array([1, GRID * GRID], np.int64), "flat"),
             numpy_helper.from_array(np.array([255.0], np.float32), "k255"),
             numpy_helper.from_array(np.array([1, 1, 1, EMBED_GRID ** 2], np.int64), "fmap"),
             numpy_helper.from_array(w.astype(np.float32), "W"), numpy_helper.from_array(b.astype(np.float32)[None], "B")]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["f", "nchw"], ["x4"]),  # one channel: NHWC and NCHW hold the same order
             helper.make_node("AveragePool", ["x4"], ["g"], kernel_shape=[k, k], strides=[k, k]),
             helper.make_node("Reshape", ["g", "flat"], ["g2"]),
             helper.make_node("Div", ["g2", "k255"], ["x"]),
             helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])]
    if scope:
        e = SIZE // EMBED_GRID
        nodes += [helper.make_node("AveragePool", ["x4"], ["e8"], kernel_shape=[e, e], strides=[e, e]),
                  helper.make_node("Reshape", ["e8", "fmap"], ["e255"]),
                  helper.make_node("Div", ["e255", "k255"], ["features"])]
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 1, 1, EMBED_GRID ** 2]))
    graph = helper.make_graph(nodes, "grid", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, SIZE, SIZE, 1])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model_onnx_fp32.onnx"))
    ModelMetadata(labels=LABELS, preprocess=PreprocessConfig(SIZE), model_name="grid-home", model_version="1",
                  data_hash="home-a", data_sources=("synthetic_a",), synthetic=True,
                  thresholds={k: float(v) for k, v in thresholds.items()}, scope=scope or {},
                  reference=reference or {}).save(folder / "metadata.json")
    write_sums(folder)
    return folder


def home_bundle(root: Path, rows_a: list[dict], folder: Path, with_scope: bool = False) -> Path:
    """Fit on half the home-site films, choose thresholds on the other half, write the bundle (with input-check
    statistics of the fitting half when ``with_scope``, and the other half's score summary as the reference,
    as convert stores the validation films')."""
    from edge_runtime import reference as R
    from edge_runtime import scope
    from edge_runtime.operating_point import OperatingPoint, calibrate, choose_operating_points

    x, y = load_images(root, rows_a)
    f = features(x)
    fit, val = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    w, b = fit_softmax(f[fit], y[fit])
    z = f[val] @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    thresholds, _ = choose_operating_points(y[val], calibrate(p, 1.0), list(LABELS))
    stats = scope.fit(features(x[fit], EMBED_GRID), k=6) if with_scope else None
    ref = R.summarize(y[val], p, LABELS, OperatingPoint(LABELS, 1.0, thresholds).decide_batch(p))
    return write_grid_bundle(folder, w, b, thresholds, stats, ref)
