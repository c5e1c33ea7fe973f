"""QAT set-up: the input normalisation is exact in INT8, activation ranges start from data, --redo-qat."""
import numpy as np
import pytest
from conftest import copy_run

pytest.importorskip("tf_keras")

from train import models, qat  # noqa: E402


@pytest.fixture(scope="module")
def tiny_float():
    return models.build_model("mobilenet_v2", image_size=32, num_classes=3, alpha=0.35)


def _images(n=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 1)).astype(np.float32)


def test_split_rescaling_is_the_float_model_half_a_grey_level_away(tiny_float):
    split = qat.split_input_rescaling(tiny_float)
    names = [layer.name for layer in split.layers]
    assert names[1:3] == ["normalize", "normalize_centre"] and len(names) == len(tiny_float.layers) + 1
    x = _images(4)
    np.testing.assert_allclose(split(x).numpy(), tiny_float(x - 0.5).numpy(), atol=1e-5)


def test_calibrated_ranges_come_from_the_data_and_the_input_range_is_exact(tiny_float):
    q = qat.quantize_model(tiny_float)
    ranges = {v.name.split(":")[0]: v for layer in q.layers for v in layer.weights if v.name.endswith(("_min:0", "_max:0"))}
    assert ranges["quant_Conv1_relu/output_min"].numpy() == -6.0  # tfmot's start, far from a ReLU6's [0, 6]
    n = qat.calibrate_ranges(q, tiny_float, [_images(16, seed=1), _images(16, seed=2)])
    assert n >= 30
    assert ranges["quant_normalize/output_min"].numpy() == 0.0
    assert ranges["quant_normalize/output_max"].numpy() == pytest.approx(2.0)
    assert ranges["quant_gray_to_rgb/output_min"].numpy() == pytest.approx(-128 / 127.5)
    assert ranges["quant_gray_to_rgb/output_max"].numpy() == pytest.approx(127 / 127.5)
    assert ranges["quant_Conv1_relu/output_min"].numpy() == 0.0
    assert 0 < ranges["quant_Conv1_relu/output_max"].numpy() <= 6.0
    logits = tiny_float.get_layer("embedding").output
    import tf_keras

    emb = tf_keras.Model(tiny_float.input, logits)(_images(16, seed=1)).numpy()
    dense = tiny_float.get_layer("probs")
    z = emb @ dense.kernel.numpy() + dense.bias.numpy()
    lo, hi = ranges["quant_probs/pre_activation_min"].numpy(), ranges["quant_probs/pre_activation_max"].numpy()
    assert lo <= min(z.min(), 0) + 1e-3 and hi >= max(z.max(), 0) - 1e-3  # mean of two batches' extremes


@pytest.mark.slow
def test_int8_file_sees_every_grey_level_as_the_qat_model_does(tiny_float, tmp_path):
    """The converted INT8 model's normalised input is (x - 128) / 127.5 for every grey level x, as in the QAT
    model (the unsplit Rescaling merged a third of the grey levels in TFLite)."""
    import tensorflow as tf
    from ai_edge_litert import interpreter as lite

    q = qat.quantize_model(tiny_float)
    qat.calibrate_ranges(q, tiny_float, [_images(16)])
    q.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    q.fit(_images(16), np.zeros(16), epochs=1, verbose=0)  # sets the input quantiser's [0, 255]
    # the light SavedModel convert.export writes (variables and one serving function): from_keras_model traces
    # every layer's call variants of a QAT model, minutes here
    mod = tf.Module()
    mod.vars = list(q.variables)
    mod.serve = tf.function(lambda x: q(x, training=False), input_signature=[tf.TensorSpec([1, 32, 32, 1], tf.float32)])
    tf.saved_model.save(mod, str(tmp_path / "sm"), signatures=mod.serve.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in _images(16, seed=3))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    path = tmp_path / "m.tflite"
    path.write_bytes(conv.convert())
    it = lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                          experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    grey = np.arange(32 * 32) % 256
    it.set_tensor(it.get_input_details()[0]["index"], grey.reshape(1, 32, 32, 1).astype(np.uint8))
    it.invoke()
    first_conv = next(o for o in it._get_ops_details() if o["op_name"] == "CONV_2D")
    t = next(d for d in it.get_tensor_details() if d["index"] == first_conv["inputs"][0])
    scale, zero = t["quantization"]
    seen = (it.get_tensor(t["index"])[0, ..., 0].astype(np.float64).ravel() - zero) * scale
    np.testing.assert_allclose(seen, (grey - 128) / 127.5, atol=1e-6)


@pytest.mark.slow
def test_redo_qat_keeps_the_float_phase_and_replaces_the_qat_model(tiny_run, tmp_path):
    from train.__main__ import main

    copy = tmp_path / "copy"
    copy_run(tiny_run, copy)
    float_bytes = (copy / "model_float.keras").read_bytes()
    split = (copy / "split.csv").read_text()
    old_qat = (copy / "model_qat.h5").read_bytes()
    float_rows = [r for r in (copy / "history.csv").read_text().splitlines() if r.startswith("float,")]
    rc = main(["--data", "unused", "--out", str(copy), "--model", "mobilenet_v2", "--alpha", "0.35",
               "--image-size", "64", "--qat-epochs", "1", "--no-augment", "--site-augment", "0", "--redo-qat"])
    assert rc == 0
    assert (copy / "model_float.keras").read_bytes() == float_bytes and (copy / "split.csv").read_text() == split
    assert (copy / "model_qat.h5").read_bytes() != old_qat
    rows = (copy / "history.csv").read_text().splitlines()
    assert [r for r in rows if r.startswith("float,")] == float_rows
    assert sum(r.startswith("qat,") for r in rows) == 1
    from train import keras_io

    names = {layer.name for layer in keras_io.load_model(copy / "model_qat.h5").layers}
    assert "quant_normalize_centre" in names  # the new QAT set-up, not the old model


def test_redo_qat_needs_a_trained_float_model(tmp_path, capsys):
    from train.__main__ import main

    (tmp_path / "run").mkdir()
    assert main(["--data", "unused", "--out", str(tmp_path / "run"), "--redo-qat"]) == 2
    assert "cannot redo QAT without model_float.keras" in capsys.readouterr().err
