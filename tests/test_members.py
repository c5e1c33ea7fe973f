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


@pytest.fixture(scope="module")
def member(synthetic_data, tiny_run, tmp_path_factory):
    """A second tiny training of tiny_run's split, with tiny_run's options but for --init-seed 1."""
    from train.__main__ import main

    def build(folder):
        assert main(["--data", str(synthetic_data), "--out", str(folder / "m1"), *TINY_TRAIN_ARGS,
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
    # the first member's classifier weights draw the heatmap on the first member's feature map (the served INT8
    # file reads the QAT model's)
    from train import keras_io as K

    for parent, f in (("float", "model_float.keras"), ("qat", "model_qat.h5")):
        assert meta.head[parent]["weights"] == K.head_weights(K.load_model(tiny_run / f))["weights"]
    card = (ensemble_bundle / "MODEL_CARD.md").read_text()
    assert "Ensemble of 2 trainings" in card and "initialisation seed 1" in card
    clf = Classifier.from_bundle(ensemble_bundle)
    assert clf.format == "tflite_int8" and clf.head == meta.head["qat"] and clf.scope == meta.scope["qat"]
    val = _val(tiny_run)
    shots = [clf.classify(x, name="film") for x in val.images[:20]]
    assert all(abs(sum(s.probs.values()) - 1) < 1e-3 for s in shots)
    assert sum(s.in_scope for s in shots) >= 16  # the input check reads the first member's features: films pass
    # the file's feature map is the first member's: the QAT member's own map, film for film
    feats = clf.predict(val.images[0])[1]
    own = K.feature_maps(K.two_output_model(K.load_model(tiny_run / "model_qat.h5")), val.images[:1])[0]
    assert feats.shape == own.shape and np.corrcoef(feats.ravel(), own.ravel())[0, 1] > 0.95


def test_ensemble_figures_in_the_bundle_are_the_ensembles_own(tiny_run, member, ensemble_bundle):
    from edge_runtime import operating_point as OP
    from train import data as D
    from train import keras_io as K

    meta = ModelMetadata.load(ensemble_bundle / "metadata.json")
    test = D.load_arrays(D.load_split(tiny_run / "split.csv")["test"], meta.labels, meta.preprocess)
    qat = [K.predict(K.two_output_model(K.load_model(r / "model_qat.h5")), test.images) for r in (tiny_run, member)]
    want = (OP.calibrate((qat[0] + qat[1]) / 2, meta.temperature).argmax(1) == test.labels).mean()
    assert meta.metrics["test"]["pooled"]["accuracy"] == pytest.approx(want, abs=1e-9)
    assert meta.metrics["test"]["pooled"]["n"] == len(test.labels)
    assert "Ensemble of 2 trainings" in (ensemble_bundle / "MODEL_CARD.md").read_text()


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
    again = copy_run(tiny_run, tmp_path / "again")  # a copy: the same seeds, so the same training
    assert main([str(tiny_run), "--member", str(again), "--out", str(tmp_path / "b5")]) == 2
    assert "share a split and initialisation seed" in capsys.readouterr().err
    # ... but the same seeds with another recipe (a site-augmented training beside a plain one) are two trainings
    cfg = json.loads((again / "train_config.json").read_text())
    (again / "train_config.json").write_text(json.dumps({**cfg, "site_augment": 0.5}))
    from convert.pipeline import check_members
    described = check_members(tiny_run, [again])
    assert [d["init_seed"] for d in described] == [cfg.get("init_seed") or cfg["seed"]] * 2
    assert [d["options"] for d in described] == [{}, {"site_augment": 0.5}]  # what the member's recipe adds
    (again / "train_config.json").write_text(json.dumps({**cfg, "init_seed": 7, "out": "elsewhere"}))
    assert [d["options"] for d in check_members(tiny_run, [again])] == [{}, {}]  # a rerun with another init seed
    other = copy_run(member, tmp_path / "other")
    meta = json.loads((other / "metadata.json").read_text())
    (other / "metadata.json").write_text(json.dumps({**meta, "data_hash": "0" * 16}))
    assert main([str(tiny_run), "--member", str(other), "--out", str(tmp_path / "b6")]) == 2
    assert "trained on other data" in capsys.readouterr().err
    assert main([str(tiny_run), "--member", str(member), "--out", str(member), "--force"]) == 2
    assert "is a training run given here" in capsys.readouterr().err and (member / "model_float.keras").is_file()


def test_crossval_tells_an_ensemble_from_its_first_training():
    from benchmarks.crossval import _ensemble_of

    assert _ensemble_of({"run_dir": "runs/cv/fold0"}) == {}
    assert _ensemble_of({"members": [{"init_seed": 0}, {"init_seed": 1}]}) == {"ensemble_init_seeds": [0, 1]}
    plain = {"members": [{"init_seed": 0, "options": {}}, {"init_seed": 1, "options": {}}]}
    assert _ensemble_of(plain) == {"ensemble_init_seeds": [0, 1]}  # comparable with pairs converted before
    mixed = {"members": [{"init_seed": 0, "options": {}}, {"init_seed": 0, "options": {"site_augment": 0.5}}]}
    assert _ensemble_of(mixed) == {"ensemble_init_seeds": [0, 0],
                                   "ensemble_member_options": [{}, {"site_augment": 0.5}]}
    def taught(k):  # the second member distilled from its own fold's teacher
        return {"members": [{"init_seed": 0, "options": {}}, {"init_seed": 1, "options": {"teacher": f"runs/t/fold{k}"}}]}
    assert _ensemble_of(taught(0)) == _ensemble_of(taught(3)) != _ensemble_of(plain)  # one recipe on every fold


def test_the_report_names_a_members_own_options():
    """The mixed pair's report said the recipes differ in ``ensemble_init_seeds [0, 1] -> [0, 0]`` only."""
    from benchmarks.crossval import recipe_difference

    base = {"model": "mobilenet_v2", "ensemble_init_seeds": [0, 1]}
    mixed = {"model": "mobilenet_v2", "ensemble_init_seeds": [0, 0],
             "ensemble_member_options": [{}, {"site_augment": 0.5}]}
    assert recipe_difference(base, mixed) == {"ensemble_init_seeds": [[0, 1], [0, 0]],
                                           "ensemble_member_options": [None, [{}, {"site_augment": 0.5}]]}


def test_member_options_compare_the_resolved_options(tmp_path):
    """review32: the raw train_config.json files were compared, so an edited recipe file (its hash) or an option
    added after the first training was trained read as the member's own options, and one recipe's folds split."""
    from benchmarks.crossval import _ensemble_of
    from train.recipe import member_options

    first = {"epochs": 30, "seed": 0, "out": "runs/f0", "extra": {"recipe": "r.toml", "recipe_sha256": "aa"}}
    rerun = {**first, "init_seed": 1, "out": "runs/f0-init1", "min_epochs": 0, "stem": "rgb",
             "extra": {"recipe": "r.toml", "recipe_sha256": "bb"}, "wall_seconds": 12.0}
    assert member_options(rerun, first) == {}
    assert member_options({**rerun, "site_augment": 0.5, "min_epochs": 5}, first) == {"min_epochs": 5,
                                                                                      "site_augment": 0.5}
    # a bundle converted before convert recorded the options: worked out from its members' runs where at hand
    runs = []
    for name, cfg in (("a", first), ("b", {**rerun, "site_augment": 0.5})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train_config.json").write_text(json.dumps(cfg))
        runs.append({"run_dir": str(tmp_path / name), "init_seed": cfg.get("init_seed", 0)})
    assert _ensemble_of({"members": runs})["ensemble_member_options"] == [{}, {"site_augment": 0.5}]
    gone = [{**m, "run_dir": str(tmp_path / "gone" / str(i))} for i, m in enumerate(runs)]
    assert _ensemble_of({"members": gone}) == {"ensemble_init_seeds": [0, 1]}  # not at hand: the seeds only


def test_the_card_names_a_members_own_options():
    from convert.card import model_card
    from edge_runtime.metadata import ModelMetadata
    from edge_runtime.preprocess import PreprocessConfig

    meta = ModelMetadata(labels=("normal", "pneumonia", "tuberculosis"), preprocess=PreprocessConfig(32),
                         model_name="m x2", model_version="1", members=(
                             {"run_dir": "runs/a", "model_version": "1", "init_seed": 0, "options": {}},
                             {"run_dir": "runs/b", "model_version": "1", "init_seed": 0,
                              "options": {"site_augment": 0.5}}))
    card = model_card(meta, {"formats": {}, "failed_formats": []})
    assert "`runs/a` (1, initialisation seed 0)" in card and "`runs/b` (1, initialisation seed 0, site-augment 0.5)" in card
