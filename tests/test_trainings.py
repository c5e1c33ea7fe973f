"""benchmarks.trainings: several trainings of the same folds, alone and as ensembles."""
import json
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import crossval as CV
from benchmarks import trainings as T
from benchmarks.study import evaluate as E
from edge_runtime.views import combine

LABELS = ["normal", "pneumonia", "tuberculosis"]


def _training(rng, y, files, noise, fold=0):
    n = len(y)
    p = rng.dirichlet([1, 1, 1], n) * noise
    p[np.arange(n), y] += rng.uniform(0, 1, n)
    p /= p.sum(1, keepdims=True)
    src = np.where(y == 2, "tbx11k", "nih_dcn")
    return CV.Fold(bundle="b", fold=fold, folds=5, seed=0, data_hash="h", labels=LABELS, files=list(files),
                   y=np.asarray(y), sources=src, views=np.array([""] * n), cal=p,
                   thresholds={"tuberculosis": 0.5, "refer_below": 0.6}, pneumonia_threshold=0.5, parity=0.99,
                   patients=np.array([f"p{k}" for k in range(n)]))


def test_ensembles_of_trainings_are_scored_against_the_mean_and_best_of_their_members(tmp_path):
    """Each combination's figures are those of the views-style combination of its members' outputs (matched by
    film name), its gain is that minus the mean (and the best) of its members; a fold one training alone holds is
    left out; the saved files round-trip through the command."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    files = [f"{LABELS[c]}/f{k}.png" for k, c in enumerate(y)]
    a, b, c = (_training(rng, y, files, 1.5) for _ in range(3))
    k = rng.permutation(len(y))  # b saved in another film order
    b = replace(b, files=[b.files[i] for i in k], y=b.y[k], sources=b.sources[k], views=b.views[k], cal=b.cal[k],
                patients=b.patients[k])
    lone = _training(rng, y[:30], [f"x{i}" for i in range(30)], 1.0, fold=1)  # fold 1: one training only
    res = T.compare({"a": [a, lone], "b": [b], "c": [c]})
    assert list(res["per_fold"]) == [0]
    fold = res["per_fold"][0]
    bb = CV.align(b, a)
    want = E.summarise(a.y, combine([a.cal, bb.cal]), a.sources, LABELS, 1.0, None)
    e = fold["ensembles"]["a + b"]
    assert e["figures"]["accuracy"] == pytest.approx(want["accuracy"])
    assert e["figures"]["pair_auc"] == pytest.approx(want["pair_auc"])
    alone = fold["alone"]
    assert alone["b"]["accuracy"] == pytest.approx((bb.cal.argmax(1) == y).mean())
    assert e["gain_over_mean"]["accuracy"] == pytest.approx(
        want["accuracy"] - (alone["a"]["accuracy"] + alone["b"]["accuracy"]) / 2)
    assert e["gain_over_best"]["pair_auc"] == pytest.approx(
        want["pair_auc"] - max(alone["a"]["pair_auc"], alone["b"]["pair_auc"]))
    assert set(fold["ensembles"]) == {"a + b", "a + c", "b + c", "a + b + c"}
    assert fold["range"]["accuracy"] == pytest.approx(np.ptp([alone[n]["accuracy"] for n in "abc"]))
    assert res["gain_by_size"][2]["accuracy"]["n"] == 3 and res["gain_by_size"][3]["accuracy"]["n"] == 1
    # noisy trainings: averaging removes noise, so the ensemble of all three beats its members' mean
    assert fold["ensembles"]["a + b + c"]["gain_over_mean"]["accuracy"] > 0

    with pytest.raises(CV.FoldError, match="at least two"):
        T.compare({"a": [a]})
    with pytest.raises(CV.FoldError, match="no fold"):
        T.compare({"a": [lone], "b": [b]})
    with pytest.raises(CV.FoldError, match="same test films"):
        T.compare({"a": [a], "x": [replace(lone, fold=0)]})

    paths = []
    for name, f in (("a", [a, lone]), ("b", [b]), ("c", [c])):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "folds.json")
        CV.save_folds(f, paths[-1], "tflite_int8", {}, {"command": "cv", "machine": {}})
    out, md = tmp_path / "t.json", tmp_path / "t.md"
    assert T.main([str(p) for p in paths] + ["--out", str(out), "--md", str(md)]) == 0
    back = json.loads(out.read_text())
    assert back["trainings"] == ["a", "b", "c"]
    assert back["per_fold"]["0"]["ensembles"]["a + b"]["figures"]["accuracy"] == pytest.approx(want["accuracy"])
    assert "ensemble a + b + c" in md.read_text() and "run-to-run spread" in md.read_text()
    assert T.main([str(paths[0])]) == 2


def test_a_fold_held_by_one_training_is_named_not_dropped_silently():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    files = [f"{LABELS[c]}/f{k}.png" for k, c in enumerate(y)]
    lone = _training(rng, y[:20], [f"x{i}" for i in range(20)], 1.0, fold=3)
    res = T.compare({"a": [_training(rng, y, files, 1.0), lone], "b": [_training(rng, y, files, 1.0)]})
    assert res["folds_held_by_one"] == {3: ["a"]}
    assert "fold 3: a" in T.table(res)
