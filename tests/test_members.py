"""Several trainings served as one ensemble: `train --init-seed` makes members of one split, `convert RUN
--member RUN2` puts them in one file per format whose probabilities are their mean."""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tf_keras")

from edge_runtime.classifier import Classifier  # noqa: E402
from edge_runtime.formats import FORMATS  # noqa: E402
from edge_runtime.metadata import ModelMetadata  # noqa: E402
from tests.conftest import TINY_TRAIN_ARGS, _once, copy_run  # noqa: E402

pytestmark = pytest.mark.slow


def _args(**change):
    """TINY_TRAIN_ARGS with some options replaced (a shorter schedule for a second member)."""
    args = list(TINY_TRAIN_ARGS)
    for flag, value in change.items():
        i = args.index("--" + flag.replace("_", "-"))
        args[i + 1] = str(value)
    return args


@pytest.fixture(scope="module")
def member(synthetic_data, tiny_run, tmp_path_factory):
    """A second tiny training of tiny_run's split (same --seed 0) from another initialisation (--init-seed 1)."""
    from train.__main__ import main

    def build(folder):
        assert main(["--data", str(synthetic_data), "--out", str(folder / "m1"), *_args(epochs=12, qat_epochs=1),
                     "--init-seed", "1"]) == 0

    return _once(tmp_path_factory, "member", build) / "m1"


@pytest.fixture(scope="module")
def ensemble_bundle(tiny_run, member, tmp_path_factory):
    from convert.__main__ import main

    def build(folder):
        rc = main([str(tiny_run), "--member", str(member), "--formats", "tflite_int8,tflite_fp32,keras_fp32",
                   "--out", str(folder / "ens"), "--min-agreement", "0.85"])
        assert rc in (0, 3), rc

    return _once(tmp_path_factory, "ensemble", build) / "ens"


def _val(run):
    from train import data as D

    meta = ModelMetadata.load(run / "metadata.json")
    return D.load_arrays(D.load_split(run / "split.csv")["val"], meta.labels, meta.preprocess)


def test_init_seed_keeps_the_split_and_changes_the_training(tiny_run, member):
    assert (member / "split.csv").read_text() == (tiny_run / "split.csv").read_text()
    cfg = json.loads((member / "train_config.json").read_text())
    assert cfg["seed"] == 0 and cfg["init_seed"] == 1
    assert json.loads((tiny_run / "train_config.json").read_text())["init_seed"] is None
    from train import keras_io as K

    a, b = (K.load_model(r / "model_float.keras") for r in (tiny_run, member))
    assert not np.allclose(a.get_layer("probs").get_weights()[0], b.get_layer("probs").get_weights()[0])


def test_ensemble_file_serves_the_mean_of_its_members(tiny_run, member, ensemble_bundle):
    from train import keras_io as K

    val = _val(tiny_run)
    each = [K.predict(K.load_model(r / "model_float.keras"), val.images) for r in (tiny_run, member)]
    assert not np.allclose(each[0], each[1], atol=1e-3)  # two different models
    fp32 = Classifier.from_bundle(ensemble_bundle, fmt="tflite_fp32")
    np.testing.assert_allclose(fp32.predict_batch(val.images), (each[0] + each[1]) / 2, atol=1e-4)
    # the Keras reference in the bundle is the ensemble too (the benchmark's baseline row)
    keras = K.two_output_model(K.load_model(ensemble_bundle / FORMATS["keras_fp32"].filename))
    np.testing.assert_allclose(K.predict(keras, val.images), (each[0] + each[1]) / 2, atol=1e-5)
    # the INT8 file quantises both QAT members in one graph and tracks the QAT ensemble
    qat = [K.predict(K.two_output_model(K.load_model(r / "model_qat.h5")), val.images) for r in (tiny_run, member)]
    int8 = Classifier.from_bundle(ensemble_bundle, fmt="tflite_int8").predict_batch(val.images)
    assert (int8.argmax(1) == ((qat[0] + qat[1]) / 2).argmax(1)).mean() >= 0.85


def test_ensemble_bundle_records_its_members_and_classifies_with_a_heatmap(tiny_run, member, ensemble_bundle):
    status = json.loads((ensemble_bundle / "bundle.json").read_text())
    assert [m["run_dir"] for m in status["members"]] == [str(tiny_run), str(member)]
    assert [m["init_seed"] for m in status["members"]] == [0, 1] and all(m["qat"] for m in status["members"])
    meta = ModelMetadata.load(ensemble_bundle / "metadata.json")
    assert len(meta.members) == 2 and meta.members[1]["init_seed"] == 1
    # an identity of its own, so that a site profile made for one member's bundle does not bind to it
    one = ModelMetadata.load(tiny_run / "metadata.json")
    assert meta.model_name == one.model_name + " x2"
    assert meta.model_version == f"{one.model_version}+{meta.members[1]['model_version']}"
    # the first member's classifier weights draw the heatmap on the first member's feature map
    from train import keras_io as K

    first = K.head_weights(K.load_model(tiny_run / "model_float.keras"))["weights"]
    assert meta.head["float"]["weights"] == first
    card = (ensemble_bundle / "MODEL_CARD.md").read_text()
    assert "Ensemble of 2 trainings" in card and "initialisation seed 1" in card
    clf = Classifier.from_bundle(ensemble_bundle)
    assert clf.format == "tflite_int8"
    val = _val(tiny_run)
    s = clf.classify(val.images[0], name="film")
    assert abs(sum(s.probs.values()) - 1) < 1e-3 and s.decision
    assert s.heatmap is None or s.heatmap.shape == val.images[0].shape


def test_the_benchmark_baseline_of_an_ensemble_is_its_own_keras_file(tiny_run, ensemble_bundle, tmp_path):
    from benchmarks.runner import check_artifact

    path, why = check_artifact("keras_fp32", ensemble_bundle, tiny_run, None, members=2)
    assert path == ensemble_bundle / FORMATS["keras_fp32"].filename and not why
    bare = tmp_path / "bare"
    shutil.copytree(ensemble_bundle, bare)
    (bare / FORMATS["keras_fp32"].filename).unlink()
    path, why = check_artifact("keras_fp32", bare, tiny_run, None, members=2)
    assert path is None and "ensemble of 2 trainings" in why
    path, why = check_artifact("keras_fp32", bare, tiny_run, None)  # one training: the run's own float model
    assert path == tiny_run / "model_float.keras"


def test_members_of_another_split_or_given_twice_are_refused(tiny_run, member, tmp_path, capsys):
    from convert.__main__ import main
    from train import data as D

    moved = copy_run(member, tmp_path / "moved")
    parts = D.load_split(moved / "split.csv")
    parts["train"].append(parts["val"].pop())  # one validation film the other member would have trained on
    D.save_split(parts, moved / "split.csv")
    assert main([str(tiny_run), "--member", str(moved), "--out", str(tmp_path / "b1")]) == 2
    assert "split differs" in capsys.readouterr().err and not (tmp_path / "b1" / "bundle.json").exists()
    assert main([str(tiny_run), "--member", str(tiny_run), "--out", str(tmp_path / "b2")]) == 2
    assert "given twice" in capsys.readouterr().err
    noqat = copy_run(member, tmp_path / "noqat")
    (noqat / "model_qat.h5").unlink()
    assert main([str(tiny_run), "--member", str(noqat), "--out", str(tmp_path / "b3")]) == 2
    assert "lacks a QAT model" in capsys.readouterr().err
    assert main([str(tiny_run), "--member", str(tmp_path / "nothing"), "--out", str(tmp_path / "b4")]) == 2
    assert "no such run folder" in capsys.readouterr().err
