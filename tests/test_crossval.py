"""benchmarks.crossval: out-of-fold figures pooled over the folds of one patient-grouped cross-validation."""
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks import crossval as CV
from benchmarks.study import evaluate as E
from edge_runtime import operating_point as OP

LABELS = ["normal", "pneumonia", "tuberculosis"]
REPO = Path(__file__).resolve().parent.parent


def _fold(i, y, cal, tb, refer=0.6, pn=0.5, folds=2, files=None):
    n = len(y)
    return CV.Fold(bundle=f"b{i}", fold=i, folds=folds, seed=0, data_hash="h", labels=LABELS,
                   files=files if files is not None else [f"f{i}-{k}" for k in range(n)], y=np.asarray(y),
                   sources=np.array(["nih"] * n), views=np.array([""] * n), cal=np.asarray(cal, float),
                   thresholds={"tuberculosis": tb, "refer_below": refer}, pneumonia_threshold=pn, parity=0.99)


def _probs(rng, y):
    p = rng.dirichlet([1, 1, 1], len(y))
    p[np.arange(len(y)), y] += rng.uniform(0, 1.5, len(y))
    return p / p.sum(1, keepdims=True)


def test_each_fold_keeps_its_own_thresholds_in_the_pooled_figures():
    """Pooled rule figures are the per-fold counts added up, each fold decided at its own thresholds, and the
    threshold-free figures are those of the concatenated outputs."""
    rng = np.random.default_rng(0)
    y0, y1 = rng.integers(0, 3, 80), rng.integers(0, 3, 60)
    f0, f1 = _fold(0, y0, _probs(rng, y0), tb=0.3, refer=0.5, pn=0.2), _fold(1, y1, _probs(rng, y1), tb=0.7,
                                                                               refer=0.8, pn=0.6)
    got = CV.pool([f0, f1], n_boot=20)
    y, cal = np.concatenate([y0, y1]), np.concatenate([f0.cal, f1.cal])
    assert got["accuracy"] == pytest.approx((cal.argmax(1) == y).mean())
    tb = [(f.cal[:, 2] >= f.thresholds["tuberculosis"], f.y == 2) for f in (f0, f1)]
    assert got["tb_at_threshold"]["sensitivity"] == pytest.approx(
        sum((flag & pos).sum() for flag, pos in tb) / sum(pos.sum() for _, pos in tb))
    assert got["tb_at_threshold"]["specificity"] == pytest.approx(
        sum((~flag & ~pos).sum() for flag, pos in tb) / sum((~pos).sum() for _, pos in tb))
    # one global threshold would give other figures: the per-fold ones are really applied
    assert got["tb_at_threshold"]["sensitivity"] != OP.tb_at_threshold(y, cal, LABELS, 0.5)["sensitivity"]
    pn = [OP.pneumonia_at_threshold(f.y, f.cal, LABELS, f.pneumonia_threshold) for f in (f0, f1)]
    npos = [int((f.y == 1).sum()) for f in (f0, f1)]
    assert got["pneumonia_at_threshold"]["sensitivity"] == pytest.approx(
        sum(p["sensitivity"] * k for p, k in zip(pn, npos)) / sum(npos))
    rules = [OP.refer_rule(f.y, f.cal, LABELS, f.thresholds) for f in (f0, f1)]
    assert got["refer_rule"]["referred"] == pytest.approx((rules[0]["referred"] * 80 + rules[1]["referred"] * 60) / 140)
    assert got["refer_rule"]["tuberculosis_called_normal"] == sum(r["tuberculosis_called_normal"] for r in rules)
    assert got["refer_rule"]["refer_below_per_fold"] == [0.5, 0.8]
    lo, hi = got["ci95"]["accuracy"]
    assert lo <= got["accuracy"] <= hi
    assert got["confidence_gap"] == pytest.approx(cal.max(1).mean() - (cal.argmax(1) == y).mean())


def test_the_refer_rule_is_reported_per_source_and_a_source_under_the_goal_is_named():
    """A pooled "accuracy of films not referred" can meet its goal on one source's easy films while another
    source's decisions miss it: the report gives both per source and names the one that misses."""
    rng = np.random.default_rng(3)
    folds = []
    for i in range(2):
        y = np.r_[rng.integers(0, 2, 60), np.full(60, 2)]  # 60 normal/pneumonia films, then 60 TB films
        p = _probs(rng, y)
        p[60:] = [0.01, 0.01, 0.98]  # TB films: easy, all flagged TB and right
        f = _fold(i, y, p, tb=0.5, refer=0.5)
        folds.append(replace(f, sources=np.array(["nih"] * 60 + ["tbx"] * 60)))
    got = CV.pool(folds, n_boot=20)
    by = got["refer_rule_by_source"]
    for s in ("nih", "tbx"):
        m = [f.sources == s for f in folds]
        d = [OP.OperatingPoint(tuple(LABELS), 1.0, f.thresholds).decide_batch(f.cal)[k] for f, k in zip(folds, m)]
        want = OP.rule_figures(np.concatenate([f.y[k] for f, k in zip(folds, m)]), np.concatenate(d), LABELS, 0.5)
        assert by[s]["referred"] == pytest.approx(want["referred"])
        assert by[s]["accuracy_not_referred"] == pytest.approx(want["accuracy_not_referred"])
    assert by["tbx"]["accuracy_not_referred"] == 1.0 and by["nih"]["accuracy_not_referred"] < 0.9
    res = {"format": "tflite_int8", "coverage": CV.check_folds(folds), "recipe": {}, "n": 240,
           "bundles": {f.fold: f.bundle for f in folds}, "pooled": got,
           "per_fold": {f.fold: CV.fold_row(f) for f in folds}}
    text = CV.table(res)
    assert "| accuracy of films not referred (pooled) | " in text
    assert f"misses 0.90 on nih {by['nih']['accuracy_not_referred']:.3f}" in text and "on tbx" not in text
    # ECE: pooling lowers it by construction, so the verdict also counts the folds (the models a device serves)
    ece_row = next(line for line in text.splitlines() if line.startswith("| ECE |"))
    over = sum(res["per_fold"][k]["ece"] > 0.05 for k in res["per_fold"])
    assert ("met on every fold" if not over else f"missed on {over} of 2 folds") in ece_row
    for key in ("referred", "tb_sens", "acc_kept"):  # the goal rows' pooled intervals (review28 #4)
        assert key in got["ci95"]


def test_folds_must_partition_the_films_of_one_cross_validation():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 10)
    p = _probs(rng, y)
    assert CV.check_folds([_fold(0, y, p, 0.5), _fold(1, y, p, 0.5)])["complete"]
    cov = CV.check_folds([_fold(1, y, p, 0.5, folds=3)])
    assert (cov["present"], cov["missing"], cov["complete"]) == ([1], [0, 2], False)
    with pytest.raises(CV.FoldError, match="given twice"):
        CV.check_folds([_fold(0, y, p, 0.5), _fold(0, y, p, 0.5)])
    with pytest.raises(CV.FoldError, match="not a partition"):
        CV.check_folds([_fold(0, y, p, 0.5, files=["a", "b"]), _fold(1, y, p, 0.5, files=["b"])])
    with pytest.raises(CV.FoldError, match="folds 3 vs 2"):
        CV.check_folds([_fold(0, y, p, 0.5), _fold(1, y, p, 0.5, folds=3)])
    with pytest.raises(CV.FoldError, match="no folds"):
        CV.check_folds([])
    a, b = _fold(0, y, p, 0.5), _fold(1, y, p, 0.5)
    a.recipe, b.recipe = {"lr": 1e-3, "model": "mobilenet_v2"}, {"lr": 3e-4, "model": "mobilenet_v2"}
    with pytest.raises(CV.FoldError, match=r"different recipes \(differ in lr\)"):
        CV.check_folds([a, b])


def test_folds_converted_with_other_test_time_views_are_not_pooled(tmp_path):
    """review27b #5: folds of one training recipe converted with and without views were pooled as one recipe.
    A fold saved before views were recorded (None) is not refused on that count."""
    rng = np.random.default_rng(1)
    y0, y1 = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
    f0 = replace(_fold(0, y0, _probs(rng, y0), tb=0.5), test_views=["id"])
    f1 = replace(_fold(1, y1, _probs(rng, y1), tb=0.5), test_views=["id", "zoom+5", "zoom-5"])
    with pytest.raises(CV.FoldError, match="different test-time views"):
        CV.check_folds([f0, f1])
    assert CV.check_folds([f0, replace(f1, test_views=None)])["complete"]
    assert CV.check_folds([f0, replace(f1, test_views=["id"])])["complete"]


def test_a_recipe_is_compared_with_its_baseline_film_by_film():
    """``versus``: the other recipe's outputs are put in the baseline's film order, and the paired interval of a
    difference is zero-width for the same model and brackets a real gain."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 150)
    base = _fold(0, y, _probs(rng, y), tb=0.5, folds=1)
    base.patients = np.array([f"p{k // 2}" for k in range(150)])  # two films per patient
    k = rng.permutation(150)  # the same films, another order
    shuffled = replace(base, files=[base.files[i] for i in k], y=base.y[k], sources=base.sources[k],
                          views=base.views[k], cal=base.cal[k], patients=base.patients[k])
    same = CV.versus([base], [CV.align(shuffled, base)], n_boot=50)
    assert same["delta_ci95"]["accuracy"] == [0.0, 0.0] and same["pooled"]["accuracy"] == pytest.approx(
        (base.cal.argmax(1) == y).mean()) and same["unit"] == "patient"
    better = replace(base, cal=0.5 * base.cal + 0.5 * np.eye(3)[y])  # half way to the truth
    gain = CV.versus([base], [better], n_boot=200)
    d = gain["pooled"]["accuracy"] - (base.cal.argmax(1) == y).mean()
    lo, hi = gain["delta_ci95"]["accuracy"]
    assert d > 0 and 0 < lo <= d <= hi
    with pytest.raises(CV.FoldError, match="same test films"):
        CV.align(_fold(0, y[:10], base.cal[:10], tb=0.5, folds=1), base)


def test_saved_folds_score_and_pair_like_the_folds_they_were_saved_from(tmp_path):
    """Folds saved in one session give the same pooled figures when read back, and pair film by film with folds of
    another recipe scored in another clone whose data folder lies elsewhere."""
    rng = np.random.default_rng(3)
    ys = [rng.integers(0, 3, 40), rng.integers(0, 3, 30)]
    names = [[f"{LABELS[c]}/film{i}-{k}.png" for k, c in enumerate(y)] for i, y in enumerate(ys)]
    assert CV.film_name(f"/clone-a/data/{names[0][0]}") == CV.film_name(f"/b/x/data/{names[0][0]}") == names[0][0]
    here = [_fold(i, y, _probs(rng, y), 0.4, files=nm) for i, (y, nm) in enumerate(zip(ys, names))]
    here = [replace(f, patients=np.array([n.split("-")[0] for n in f.files]), recipe={"epochs": 30},
                    site_shift={E.SITE_B: {"accuracy": 0.5 + f.fold / 10}}, test_views=["id", "zoom+5"]) for f in here]
    saved = tmp_path / "folds.json"
    CV.save_folds(here, saved, "tflite_int8", {}, {"command": "cv", "machine": {"commit": "abc1234"}})
    back = CV.load_saved(saved)
    assert [f.files for f in back] == [f.files for f in here] and back[1].site_shift == here[1].site_shift
    assert np.array_equal(back[0].cal, here[0].cal) and back[0].scored["commit"] == "abc1234"
    assert back[0].recipe == CV.ADDED_LATER | {"epochs": 30}  # an option newer than the saved folds counts as off
    assert CV.pool(back, 50)["accuracy"] == CV.pool(here, 50)["accuracy"]
    assert CV.pool(back, 50)["ci95"]["patients"] == CV.pool(here, 50)["ci95"]["patients"]
    assert "scored at commit abc1234" in CV.where(back[0])
    assert back[0].test_views == ["id", "zoom+5"]  # kept: a later fold of other views is refused against it
    broken = json.loads(saved.read_text())
    del broken["folds"][1]["thresholds"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(CV.FoldError, match="lacks or garbles a field .*thresholds"):  # not a bare KeyError
        CV.load_saved(tmp_path / "broken.json")

    # another recipe's folds: the same films in another order, other outputs, paired back into the saved order
    k = rng.permutation(len(ys[1]))
    there = [_fold(0, ys[0], _probs(rng, ys[0]), 0.4, files=names[0]),
             _fold(1, ys[1][k], _probs(rng, ys[1][k]), 0.4, files=[names[1][j] for j in k])]
    paired = CV.paired_with(there, back)
    assert np.array_equal(paired[1].cal[k], there[1].cal) and np.array_equal(paired[1].y, back[1].y)
    with pytest.raises(CV.FoldError, match="does not keep"):  # saved without them: no what-if
        CV.what_if(back, CV.WhatIf("tb", tb_sensitivity=0.95), 10, log=lambda m: None)
    with pytest.raises(CV.FoldError, match="not tflite_fp32"):
        CV.load_saved(saved, "tflite_fp32")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(CV.FoldError, match="neither a fold bundle nor a saved-folds file"):
        CV.load_saved(tmp_path / "other.json")


def test_some_folds_of_a_saved_file_are_read_with_file_colon_folds(tmp_path):
    """``FILE:0,2`` reads only those folds (a baseline whose other folds were trained again), refuses a fold the
    file does not hold, and a file whose own name ends in such a suffix is still read whole."""
    rng = np.random.default_rng(5)
    ys = [rng.integers(0, 3, 12) for _ in range(3)]
    folds = [_fold(i, y, _probs(rng, y), 0.4, files=[f"{LABELS[c]}/f{i}-{k}.png" for k, c in enumerate(y)],
                   folds=3) for i, y in enumerate(ys)]
    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    quiet = dict(log=lambda m: None)
    assert [f.fold for f in CV.load_folds([Path(f"{saved}:0,2")], **quiet)] == [0, 2]
    assert [f.fold for f in CV.load_folds([saved], **quiet)] == [0, 1, 2]
    with pytest.raises(CV.FoldError, match="holds no fold 4"):
        CV.load_folds([Path(f"{saved}:1,4")], **quiet)
    with pytest.raises(CV.FoldError, match="fold 1 is given twice"):  # the file whole beside its fold 1 again
        CV.load_folds([saved, Path(f"{saved}:1")], **quiet)
    odd = tmp_path / "odd:1"
    odd.write_bytes(saved.read_bytes())
    assert [f.fold for f in CV.load_folds([odd], **quiet)] == [0, 1, 2]
    # through the command: FILE:0,2 beside a file of another fold, as a baseline (the paired differences)
    other = tmp_path / "fold1.json"
    CV.save_folds([folds[1]], other, "tflite_int8", {}, {"command": "cv", "machine": {}})
    out = tmp_path / "cv.json"
    assert CV.main([str(saved), "--bootstrap", "30", "--no-shift", "--baseline", f"{saved}:0,2", str(other),
                    "--out", str(out)]) == 0
    vs = json.loads(out.read_text())["versus_baseline"]
    assert vs["bundles"]["1"].startswith(f"b1 (as saved in {other}") and f"in {saved}" in vs["bundles"]["2"]
    assert vs["baseline_pooled"]["n"] == 36 and vs["baseline_pooled"]["accuracy"] == vs["pooled"]["accuracy"]
    assert CV.main([str(saved), "--baseline", f"{tmp_path / 'none.json'}:0,2"]) == 2


def test_an_option_newer_than_a_run_counts_as_off(tmp_path):
    """Folds trained before --mixup/--label-smoothing existed pool with folds trained after, with both off."""
    old, new, lever = tmp_path / "old", tmp_path / "new", tmp_path / "lever"
    for run, extra in ((old, {}), (new, {"mixup": 0.0, "label_smoothing": 0.0}), (lever, {"mixup": 0.2})):
        run.mkdir()
        (run / "train_config.json").write_text(json.dumps({"model": "mobilenet_v2", "fold": 1, **extra}))
    assert CV.recipe_of(old) == CV.recipe_of(new) != CV.recipe_of(lever)
    assert "fold" not in CV.recipe_of(old)


def test_each_folds_own_teachers_are_one_recipe():
    """A student distilled per fold names its fold's teachers; the folds are one recipe (two teachers each), and a
    student of one teacher is another."""
    a = CV.normalise_recipe({"epochs": 30, "teachers": ["runs/f0", "runs/f0-init1"]})
    b = CV.normalise_recipe({"epochs": 30, "teachers": ["runs/f1", "runs/f1-init1"]})
    assert a == b and a["teachers"] == 2
    assert CV.normalise_recipe({"epochs": 30, "teachers": ["runs/f1"]}) != a
    assert CV.normalise_recipe({"epochs": 30, "teachers": []})["teachers"] == 0


def test_the_recipe_files_hash_is_not_the_recipe():
    """Folds trained from one recipe file before and after an edit that leaves its options alone (a comment, its
    [convert] table) are one recipe; a teacher or other extra record still counts."""
    cfg = {"model": "mobilenet_v2", "epochs": 30}
    a = CV.normalise_recipe({**cfg, "extra": {"recipe": "recipes/default.toml", "recipe_sha256": "aa"}})
    b = CV.normalise_recipe({**cfg, "extra": {"recipe": "recipes/default.toml", "recipe_sha256": "bb"}})
    assert a == b == CV.normalise_recipe(cfg)
    assert CV.normalise_recipe({**cfg, "extra": {"recipe_sha256": "aa", "teacher": "t"}}) != a
    assert CV.normalise_recipe({**cfg, "epochs": 20}) != a


def _with_validation(f, rng, n=90):
    """``f`` with validation films and thresholds fitted on them by the operating-point module (as convert fits)."""
    vy = np.repeat([0, 1, 2], n // 3)
    vcal = _probs(rng, vy)
    thr, _ = OP.choose_operating_points(vy, vcal, LABELS)
    pn = OP.pneumonia_point(vy, vcal, LABELS)["threshold"]
    return replace(f, val_y=vy, val_cal=vcal, val_files=[f"{LABELS[c]}/v{f.fold}-{k}.png" for k, c in enumerate(vy)],
                   thresholds=thr, pneumonia_threshold=pn, tb_target=OP.TB_FIT_SENSITIVITY,
                   pn_target=OP.PNEUMONIA_FIT_SENSITIVITY)


def test_what_ifs_refit_each_folds_operating_point_on_its_validation_films(tmp_path):
    """Refitted at the deployed targets a fold is unchanged; a higher TB target lowers each fold's TB threshold (the
    validation sensitivity reaches it) and moves the scored test figures; the validation films survive saving."""
    rng = np.random.default_rng(5)
    folds = []
    for i in range(2):
        y = rng.integers(0, 3, 60)
        folds.append(_with_validation(_fold(i, y, _probs(rng, y), 0.5), rng))
    same, fitted = CV.refit(folds[0], CV.WhatIf("check"))
    assert same.thresholds == folds[0].thresholds and same.pneumonia_threshold == folds[0].pneumonia_threshold
    assert np.array_equal(same.cal, folds[0].cal) and "bias" not in fitted
    for f in folds:
        hi, fit = CV.refit(f, CV.WhatIf("tb97", tb_sensitivity=0.97))
        assert hi.thresholds[OP.TB] < f.thresholds[OP.TB] and fit["thresholds"] == hi.thresholds
        assert OP.tb_at_threshold(f.val_y, f.val_cal, LABELS, hi.thresholds[OP.TB])["sensitivity"] >= 0.97
        pn, _ = CV.refit(f, CV.WhatIf("pn95", pneumonia_sensitivity=0.95))
        assert pn.pneumonia_threshold < f.pneumonia_threshold and pn.thresholds == f.thresholds
    res = CV.what_if(folds, CV.WhatIf("tb97", tb_sensitivity=0.97), 30, log=lambda m: None)
    base = CV.pool(folds, 30)
    assert res["pooled"]["tb_at_threshold"]["sensitivity"] >= base["tb_at_threshold"]["sensitivity"]
    assert sorted(res["fitted_per_fold"]) == [0, 1] and "97% validation TB sensitivity" in res["what"]
    biased, fit = CV.refit(folds[1], CV.WhatIf("cb", class_bias=True))
    assert len(fit["bias"]) == 3 and fit["bias"][0] == 0 and not np.allclose(biased.cal, folds[1].cal)

    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    back = CV.load_saved(saved)
    assert all(np.array_equal(a.val_cal, b.val_cal) and np.array_equal(a.val_y, b.val_y) and a.val_files == b.val_files
               for a, b in zip(back, folds))
    again = CV.what_if(back, CV.WhatIf("tb97", tb_sensitivity=0.97), 30, log=lambda m: None)
    assert again["pooled"]["tb_at_threshold"] == res["pooled"]["tb_at_threshold"]
    # the names hold no dot (benchmarks.selection addresses "what_if.NAME"); a value given twice runs once
    assert CV.what_ifs(True, [0.95, 0.975, 0.95], [0.9]) == (
        CV.WhatIf("class_bias", class_bias=True), CV.WhatIf("tb_sensitivity_95", tb_sensitivity=0.95),
        CV.WhatIf("tb_sensitivity_97_5", tb_sensitivity=0.975),
        CV.WhatIf("pneumonia_sensitivity_90", pneumonia_sensitivity=0.9))
    assert res["refit_drift"] == {}  # refitted at the deployed targets, every fold gives back its thresholds
    moved = replace(folds[0], thresholds={**folds[0].thresholds, OP.TB: folds[0].thresholds[OP.TB] + 0.01})
    assert CV.refit_drift(moved) == pytest.approx(0.01)

    # the class bias: a bias fitted on the validation films, the temperature and every threshold fitted after it
    # as convert's operating_point.fit would fit them on the biased outputs
    b = OP.fit_class_bias(folds[1].val_y, folds[1].val_cal)
    ref = OP.fit(folds[1].val_y, OP.apply_class_bias(folds[1].val_cal, b), LABELS)
    assert biased.thresholds == ref["thresholds"] and fit["temperature_after_bias"] == ref["temperature"]
    assert biased.pneumonia_threshold == ref["operating_point"]["pneumonia"]["threshold"]
    assert np.allclose(biased.cal, OP.calibrate(OP.apply_class_bias(folds[1].cal, b), ref["temperature"]))
    text = CV._fitted_text({0: fit})
    assert "bias (normal, pneumonia, TB) +0.00" in text and "pneumonia point" in text and "TB threshold" in text

    # threshold figures get paired intervals too: the what-if moves TB sensitivity, not accuracy
    ci = res["delta_ci95"]
    assert ci["accuracy"] == [0.0, 0.0] and 0 <= ci["tb_sens"][0] <= ci["tb_sens"][1] and ci["tb_sens"][1] > 0
    assert ci["tb_spec"][0] <= ci["tb_spec"][1] <= 0  # a lower TB threshold never flags fewer films
    assert {"tb_spec", "referred", "acc_kept", "pneumonia_sens_point", "pneumonia_sens"} <= set(ci)


def test_a_saved_fold_without_validation_films_reports_but_refuses_a_what_if(tmp_path):
    """Folds saved before validation outputs were kept (no "validation" key) still report and pair; a what-if
    on them is refused with what to do."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 30)
    old = {"format": CV.SAVED, "artifact": "tflite_int8", "provenance": {}, "folds": [{
        "bundle": "runs/f0-bundle", "fold": 0, "folds": 1, "seed": 0, "data_hash": "h", "labels": LABELS,
        "thresholds": {"tuberculosis": 0.5, "refer_below": 0.6}, "pneumonia_threshold": 0.4, "parity": 0.99,
        "recipe": {"epochs": 30}, "films": [{"film": f"{LABELS[c]}/f{k}.png", "y": int(c), "source": "nih",
                                             "view": "PA", "patient": f"p{k}", "p": list(p)}
                                            for k, (c, p) in enumerate(zip(y, _probs(rng, y)))]}]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    back = CV.load_saved(tmp_path / "old.json")
    assert back[0].val_cal is None and CV.pool(back, 10)["accuracy"] >= 0
    with pytest.raises(CV.FoldError, match="give the fold bundles"):
        CV.crossval([tmp_path / "old.json"], n_boot=10, shift=False, log=lambda m: None,
                    what_ifs=CV.what_ifs(tb=[0.95]))
    with pytest.raises(SystemExit):  # argparse refuses it, with the reason
        CV.main([str(tmp_path / "old.json"), "--tb-sensitivity", "abc"])


def test_class_bias_undoes_a_shift_of_the_log_probabilities():
    """Probabilities that over-call classes 1 and 2 by a known log-factor: the bias fitted on them takes the
    factor back off (within sampling), and never raises the validation NLL."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 3000)
    true = _probs(rng, y)
    shifted = OP.apply_class_bias(true, [0.0, 0.8, 1.5])
    b = OP.fit_class_bias(y, shifted)
    assert b[0] == 0
    np.testing.assert_allclose(b, [0.0, -0.8, -1.5], atol=0.25)

    def nll(p):
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    assert nll(OP.apply_class_bias(shifted, b)) <= nll(shifted)


def test_intervals_resample_patients_with_all_their_films():
    """Films of one patient move together: two patients of three films each, one read right and one wrong, can
    only give resampled accuracies of 0, 1/2 or 1; resampling films would give sixths."""
    from benchmarks.default_figures import bootstrap_figures

    y = np.zeros(6, int)
    probs = np.array([[0.9, 0.05, 0.05]] * 3 + [[0.1, 0.8, 0.1]] * 3)
    src = np.array(["nih"] * 6)
    grouped = bootstrap_figures(y, {"m": probs}, src, LABELS, 300, groups=["a"] * 3 + ["b"] * 3)
    assert grouped["unit"] == "patient"
    assert set(grouped["ci"]["m"]["accuracy"]) <= {0.0, 0.5, 1.0}
    films = bootstrap_figures(y, {"m": probs}, src, LABELS, 300)
    assert films["unit"] == "film" and not set(films["ci"]["m"]["accuracy"]) <= {0.0, 0.5, 1.0}


def _as_fold(tiny_bundle, tmp_path, fold, folds, keep):
    """A copy of the tiny bundle posing as fold ``fold`` of ``folds``: its run's split keeps the test films whose
    index satisfies ``keep`` (the same model on a part of the films; metadata and checksums rewritten)."""
    from edge_runtime import bundle as B
    from train import data as D

    status = json.loads((tiny_bundle / "bundle.json").read_text())
    run = tmp_path / f"run{fold}"
    run.mkdir()
    cfg = json.loads(Path(f"{status['run_dir']}/train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**cfg, "folds": folds, "fold": fold}))
    parts = D.load_split(f"{status['run_dir']}/split.csv")
    parts["test"] = [x for k, x in enumerate(parts["test"]) if keep(k)]
    D.save_split(parts, run / "split.csv")  # paths rewritten relative to the new folder
    other = shutil.copytree(tiny_bundle, tmp_path / f"fold{fold}")
    (other / "bundle.json").write_text(json.dumps({**status, "run_dir": str(run)}))
    meta = json.loads((other / "metadata.json").read_text())
    meta["split"] = {**meta.get("split", {}), "folds": folds, "fold": fold,
                     "counts": {k: len(v) for k, v in parts.items()}}  # the run's split is the bundle's own
    (other / "metadata.json").write_text(json.dumps(meta))
    B.write_sums(other)
    return other


@pytest.mark.slow
def test_two_folds_of_one_model_score_as_that_model_on_all_films(tiny_bundle, tmp_path, capsys):
    """End to end through the device runtime: the tiny model posing as both folds of a 2-fold CV (its test films
    dealt between them) scores exactly what it scores on all its test films at once."""
    from benchmarks.paired import compare

    f0 = _as_fold(tiny_bundle, tmp_path, 0, 2, lambda k: k % 2 == 0)
    f1 = _as_fold(tiny_bundle, tmp_path, 1, 2, lambda k: k % 2 == 1)
    md, js = tmp_path / "cv.md", tmp_path / "cv.json"
    assert CV.main([str(f1), str(f0), "--bootstrap", "30", "--no-shift", "--md", str(md), "--out", str(js),
                    "--class-bias"]) == 0
    res = json.loads(js.read_text())
    whole = compare(tiny_bundle, tiny_bundle, "test", n_boot=10)
    assert res["n"] == whole["n"] and res["coverage"]["complete"]
    assert res["pooled"]["accuracy"] == pytest.approx(whole["figures"]["A"]["accuracy"])
    assert res["pooled"]["refer_rule"]["referred"] == pytest.approx(whole["rule"]["A"]["referred"])
    assert res["pooled"]["tb_auc"] == pytest.approx(whole["figures"]["A"]["tb_auc"], nan_ok=True)
    text = md.read_text()
    assert "python -m benchmarks.crossval" in text and "**Commit:**" in text and "2 of 2 folds" in text
    assert "| accuracy | >= 0.88 |" in text
    cb = res["what_if"]["class_bias"]  # the what-if: one bias per fold, both folds scored again
    assert sorted(cb["fitted_per_fold"]) == ["0", "1"] and all(
        len(x["bias"]) == 3 and x["bias"][0] == 0 for x in cb["fitted_per_fold"].values())
    assert 0 <= cb["pooled"]["accuracy"] <= 1 and "What if (class_bias" in text
    # the fold's validation outputs are what convert fitted its thresholds on: refitted as convert does, unchanged
    live0 = CV.load_fold(f0)
    same, _ = CV.refit(live0, CV.WhatIf("check"))
    assert same.thresholds == pytest.approx(live0.thresholds) and live0.val_cal.shape == (len(live0.val_y), 3)
    assert same.pneumonia_threshold == pytest.approx(live0.pneumonia_threshold)

    # the recipe against a baseline of the same folds: here the same bundles, so every difference is nil
    assert CV.main([str(f0), str(f1), "--bootstrap", "30", "--no-shift", "--baseline", str(f1), str(f0),
                    "--out", str(js)]) == 0
    vb = json.loads(js.read_text())["versus_baseline"]
    assert vb["recipe_difference"] == {} and vb["delta_ci95"]["accuracy"] == [0.0, 0.0]
    assert "nothing (a rerun)" in capsys.readouterr().out

    # saved: the report and the pairing need no bundle afterwards, and give the same figures
    saved = tmp_path / "folds.json"
    assert CV.main([str(f0), str(f1), "--bootstrap", "30", "--no-shift", "--save-folds", str(saved),
                    "--out", str(js)]) == 0
    live = json.loads(js.read_text())
    f0.rename(tmp_path / "gone0"), f1.rename(tmp_path / "gone1")  # the bundles are gone
    assert CV.main([str(saved), "--bootstrap", "30", "--out", str(js), "--baseline", str(saved)]) == 0
    again = json.loads(js.read_text())
    assert again["pooled"]["accuracy"] == live["pooled"]["accuracy"]
    assert again["pooled"]["ci95"]["accuracy"] == live["pooled"]["ci95"]["accuracy"]
    assert again["versus_baseline"]["delta_ci95"]["accuracy"] == [0.0, 0.0]
    assert "as saved in" in capsys.readouterr().out
    # the what-ifs run from the saved validation films as from the bundles
    assert CV.main([str(saved), "--bootstrap", "30", "--out", str(js), "--class-bias", "--tb-sensitivity", "0.99"]) == 0
    wi = json.loads(js.read_text())["what_if"]
    assert wi["class_bias"]["pooled"]["accuracy"] == cb["pooled"]["accuracy"]
    assert "tb_sensitivity_99" in wi and "What if (tb_sensitivity_99" in capsys.readouterr().out
    (tmp_path / "gone0").rename(f0), (tmp_path / "gone1").rename(f1)
    # a saved fold beside a live one, and live folds against the saved ones as baseline
    one = tmp_path / "fold1.json"
    assert CV.main([str(f1), "--bootstrap", "30", "--no-shift", "--save-folds", str(one)]) == 0
    assert CV.main([str(f0), str(one), "--bootstrap", "30", "--no-shift", "--out", str(js),
                    "--baseline", str(saved)]) == 0
    mixed = json.loads(js.read_text())
    assert mixed["pooled"]["accuracy"] == live["pooled"]["accuracy"] and mixed["coverage"]["complete"]
    assert mixed["versus_baseline"]["delta_ci95"]["accuracy"] == [0.0, 0.0]
    assert CV.main([str(tmp_path / "nothing.json")]) == 2
    assert "neither a bundle folder" in capsys.readouterr().err

    # make cv across sessions: a committed file with fold 0 saved, fold 1's bundle made now, nothing to train
    zero, cv = tmp_path / "kept" / "folds.json", tmp_path / "cv"
    assert CV.main([str(f0), "--bootstrap", "30", "--no-shift", "--save-folds", str(zero)]) == 0
    capsys.readouterr()
    assert CV.main([str(f0), str(f1), "--bootstrap", "30", "--no-shift", "--baseline", str(zero), "--out", str(js)]) == 0
    assert list(json.loads(js.read_text())["versus_baseline"]["bundles"]) == ["0"]  # only the fold both hold
    assert "on the folds both hold (1 of 2" in capsys.readouterr().out
    assert CV.main([str(f1), "--no-shift", "--baseline", str(zero)]) == 2
    assert "no fold in common" in capsys.readouterr().err
    shutil.copytree(f1, cv / "fold1-bundle")
    shutil.copytree(f0, cv / "fold0-bundle")  # also present, but fold 0 is kept as saved, not given twice
    done = subprocess.run(["make", "-C", str(REPO), "-o", "setup", "cv", f"PY={sys.executable}", f"CV_OUT={cv}",
                           f"CV_ARGS=--baseline {zero} --bootstrap 30",
                           f"CV_SAVED={zero}", "CV_TRAIN=", "FOLDS=2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "folds saved in" in done.stdout and "2 of 2 folds" in (cv / "report.md").read_text()
    assert "on the folds both hold (1 of 2" in (cv / "report.md").read_text()  # CV_ARGS reached the report
    assert [f.fold for f in CV.load_saved(zero)] == [0, 1]  # the committed file now holds both folds
    assert json.loads((cv / "crossval.json").read_text())["pooled"]["accuracy"] == live["pooled"]["accuracy"]

    # the same films twice, or a training that is not a fold, are refused with a clear message
    assert CV.main([str(f0), str(f0), "--no-shift"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert CV.main([str(tiny_bundle), "--no-shift"]) == 2
    assert "not a cross-validation fold" in capsys.readouterr().err


@pytest.mark.slow
def test_a_bundle_is_never_scored_on_another_runs_films(tiny_bundle, tmp_path):
    """The run folder a bundle names must hold the bundle's own split (review27b #3: fold 0's model was scored on
    fold 1's test films, most of which it trained on, with no warning); a same-named run elsewhere is refused."""
    from benchmarks.study import evaluate as E
    from edge_runtime.metadata import ModelMetadata

    f0 = _as_fold(tiny_bundle, tmp_path, 0, 2, lambda k: k % 2 == 0)
    f1 = _as_fold(tiny_bundle, tmp_path, 1, 2, lambda k: k % 2 == 1)
    meta0 = ModelMetadata.load(f0 / "metadata.json")
    assert E.run_mismatch(tmp_path / "run0", meta0) == ""
    why = E.run_mismatch(tmp_path / "run1", meta0)
    assert "not the run this bundle was made from" in why and "fold 1 against the bundle's 0" in why
    status = json.loads((f0 / "bundle.json").read_text())
    (f0 / "bundle.json").write_text(json.dumps({**status, "run_dir": str(tmp_path / "run1")}))
    with pytest.raises(CV.FoldError, match="fold 1 against the bundle's 0"):
        CV.load_fold(f0)


def test_a_missing_fold_is_named_and_site_b_is_scored(tiny_bundle, tmp_path, capsys):
    f1 = _as_fold(tiny_bundle, tmp_path, 1, 3, lambda k: True)
    assert CV.main([str(f1), "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 folds" in out and "folds [0, 2] missing" in out
    assert f"films {E.SITE_B}: accuracy" in out


@pytest.mark.slow
def test_served_scores_the_artifact_each_fold_serves(tiny_bundle, tmp_path, capsys):
    """A fold whose tflite_int8 failed its parity check: the default report says the device serves another file
    there; ``--format served`` scores that file (per fold), and saved folds keep what was scored and served."""
    from edge_runtime import bundle as B

    f0 = _as_fold(tiny_bundle, tmp_path, 0, 2, lambda k: k % 2 == 0)
    f1 = _as_fold(tiny_bundle, tmp_path, 1, 2, lambda k: k % 2 == 1)
    status = json.loads((f0 / "bundle.json").read_text())
    status["failed_formats"] = sorted(set(status.get("failed_formats", [])) | {"tflite_int8", "tflite_int8_ptq"})
    (f0 / "bundle.json").write_text(json.dumps(status))  # every LiteRT INT8 file failed: the device serves FP32
    B.write_sums(f0)
    other, usual = B.resolve(f0).key, B.resolve(f1).key
    assert other == "tflite_fp32" and usual in ("tflite_int8", "tflite_int8_ptq")
    js, md = tmp_path / "cv.json", tmp_path / "cv.md"
    assert CV.main([str(f0), str(f1), "--bootstrap", "20", "--no-shift", "--out", str(js), "--md", str(md)]) == 0
    res = json.loads(js.read_text())
    assert res["per_fold"]["0"]["artifact"] == "tflite_int8" and res["per_fold"]["0"]["served"] == other
    assert f"fold 0: tflite_int8 scored, {other} served" in capsys.readouterr().out
    assert f"a device would serve {other} from this bundle, not tflite_int8" in md.read_text()

    saved = tmp_path / "served.json"
    assert CV.main([str(f0), str(f1), "--format", "served", "--bootstrap", "20", "--no-shift", "--out", str(js),
                    "--save-folds", str(saved)]) == 0
    res = json.loads(js.read_text())
    assert [res["per_fold"][k]["artifact"] for k in ("0", "1")] == [other, usual]
    assert "would serve another" not in capsys.readouterr().out
    alone = CV.load_fold(f0, other)  # fold 0 scored as the served artifact, asked for by name
    assert res["per_fold"]["0"]["accuracy"] == pytest.approx(CV.fold_row(alone)["accuracy"])
    back = CV.load_saved(saved, "served")
    assert [(f.artifact, f.served) for f in back] == [(other, other), (usual, usual)]
    with pytest.raises(CV.FoldError, match="--format served"):
        CV.load_saved(saved)  # a file of served outputs is not read as tflite_int8 outputs


def _another_training(f, rng, noise=0.6):
    """A second training of fold ``f``: the same test and validation films (in another order), other outputs."""
    def other(p):
        q = p * np.exp(rng.normal(0, noise, p.shape))
        return q / q.sum(1, keepdims=True)

    k, kv = rng.permutation(len(f.y)), rng.permutation(len(f.val_y))
    return replace(f, bundle=f"other-{f.fold}", files=[f.files[i] for i in k], y=f.y[k], sources=f.sources[k],
                   views=f.views[k], cal=other(f.cal)[k], val_y=f.val_y[kv], val_cal=other(f.val_cal)[kv],
                   val_files=[f.val_files[i] for i in kv])


def test_an_ensemble_what_if_combines_trainings_of_one_fold_as_views_and_refits_on_the_combination(tmp_path):
    """--mean-with: each fold's outputs combined with another training's of the same films (matched by name,
    not by order) as views are combined, a temperature and every threshold fitted on the combined validation
    outputs as convert fits them; only the folds every training holds are scored, against those folds as
    deployed; trainings of other films are refused."""
    from edge_runtime.views import combine

    rng = np.random.default_rng(11)
    folds = []
    for i in range(2):
        y = rng.integers(0, 3, 60)
        folds.append(_with_validation(_fold(i, y, _probs(rng, y), 0.5), rng))
    others = [_another_training(f, rng) for f in folds]
    got, fitted = CV.refit(folds[0], CV.WhatIf(CV.ENSEMBLE, mean_with=("B",)), [others[0]])
    back = CV.align(others[0], folds[0])
    kv = [others[0].val_files.index(n) for n in folds[0].val_files]
    val = combine([folds[0].val_cal, others[0].val_cal[kv]])
    ref = OP.fit(folds[0].val_y, val, LABELS)  # what convert would store for the combined model
    assert fitted["temperature_of_mean"] == pytest.approx(ref["temperature"])
    assert np.allclose(got.cal, OP.calibrate(combine([folds[0].cal, back.cal]), ref["temperature"]))
    assert got.thresholds == pytest.approx(ref["thresholds"])
    assert got.pneumonia_threshold == pytest.approx(ref["operating_point"]["pneumonia"]["threshold"])
    assert got.files == folds[0].files and np.array_equal(got.y, folds[0].y)
    assert not np.allclose(got.cal, folds[0].cal)

    # the other training holds fold 0 only: fold 1 is left out, and fold 0 as deployed is what it is set against
    res = CV.what_if(folds, CV.WhatIf(CV.ENSEMBLE, mean_with=("B",)), 20, log=lambda m: None, members=[others[:1]])
    assert sorted(res["per_fold"]) == [0] and sorted(res["base_per_fold"]) == [0]
    assert res["base_pooled"]["n"] == len(folds[0].y) == res["pooled"]["n"]
    assert res["pooled"]["accuracy"] == pytest.approx((got.cal.argmax(1) == got.y).mean())

    moved = replace(others[0], val_files=[n.replace("v0-", "w0-") for n in others[0].val_files])
    with pytest.raises(CV.FoldError, match="other validation films"):
        CV.refit(folds[0], CV.WhatIf(CV.ENSEMBLE, mean_with=("B",)), [moved])
    with pytest.raises(CV.FoldError, match="do not hold the same test films"):
        CV.refit(folds[0], CV.WhatIf(CV.ENSEMBLE, mean_with=("B",)), [replace(others[1], fold=0)])
    twice = replace(others[0], files=[others[0].files[0]] + others[0].files[1:-1] + [others[0].files[0]])
    with pytest.raises(CV.FoldError, match="names two test films alike"):  # pairing by name needs unique names
        CV.refit(folds[0], CV.WhatIf(CV.ENSEMBLE, mean_with=("B",)), [twice])

    # from the command line, on saved folds: the what-if "ensemble", named in the report
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    CV.save_folds(folds, a, "tflite_int8", {}, {"command": "cv", "machine": {}})
    CV.save_folds(others, b, "tflite_int8", {}, {"command": "cv", "machine": {}})
    js, md = tmp_path / "r.json", tmp_path / "r.md"
    assert CV.main([str(a), "--mean-with", str(b), "--bootstrap", "20", "--no-shift", "--out", str(js),
                    "--md", str(md)]) == 0
    wi = json.loads(js.read_text())["what_if"][CV.ENSEMBLE]
    assert sorted(wi["per_fold"], key=int) == ["0", "1"] and "base_pooled" not in wi
    assert "What if (ensemble" in md.read_text() and "temperature of the combined outputs" in md.read_text()
    assert CV.main([str(a), "--mean-with", str(tmp_path / "none.json")]) == 2


def test_a_baseline_fitted_for_another_tb_target_is_named_in_the_comparison():
    """Bundles converted before and after the TB fit target changed are one recipe, but their TB thresholds (and
    the refer rule fitted after them) differ for that reason: the comparison says so; equal targets say nothing."""
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 60)
    base = _fold(0, y, _probs(rng, y), tb=0.5, folds=1)
    new = replace(base, cal=_probs(rng, y), tb_target=0.95)
    old = replace(base, tb_target=0.90)
    res = CV.against_baseline([new], [old], 20)
    assert res["tb_targets"] == {"baseline": [0.90], "this": [0.95]}
    text = "\n".join(CV._tb_target_warning(res["tb_targets"]))
    assert "baseline 90%, this recipe 95%" in text and "refer rule" in text
    assert CV._tb_target_warning(CV.against_baseline([replace(new, tb_target=0.9)], [old], 20)["tb_targets"]) == []


def test_decisions_vectorised_match_the_device_rule():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 400)
    cal = _probs(rng, y)
    th = {"tuberculosis": 0.45, "refer_below": 0.55}
    device = OP.OperatingPoint(tuple(LABELS), 1.0, th).decide_batch(cal)
    fast = CV._decide(cal, LABELS, th)
    assert np.array_equal(np.where(fast == -1, OP.REFER, np.asarray(LABELS, dtype=object)[fast.clip(0)]), device)


def test_goal_rows_and_threshold_differences_carry_intervals_that_know_where_thresholds_came_from():
    """review28 #4/#5: every goal row of a recipe gets a pooled interval (the verdict can say 'not settled'), and a
    comparison with its baseline gets a second interval for the threshold figures that refits each fold's
    thresholds on resampled validation patients: the same model against itself still differs by exactly nothing,
    while a model whose scores are the baseline's plus noise gets a wider interval than with thresholds held fixed."""
    rng = np.random.default_rng(12)
    folds = []
    for i in range(2):
        y = rng.integers(0, 3, 150)
        f = _with_validation(_fold(i, y, _probs(rng, y), 0.5), rng, n=60)
        folds.append(replace(f, patients=np.array([f"p{i}-{k // 2}" for k in range(150)])))
    pooled = CV.pool(folds, 200)
    for key in ("tb_sens", "pneumonia_sens_point", "referred", "acc_kept"):
        lo, hi = pooled["ci95"][key]
        assert lo < hi and np.isfinite(lo)
        rlo, rhi = pooled["ci95_refitted"][key]  # where a rebuild on other validation films would put it
        assert rlo <= rhi and np.isfinite(rlo)
    assert pooled["ci95_refitted"]["referred"][1] - pooled["ci95_refitted"]["referred"][0] > \
        pooled["ci95"]["referred"][1] - pooled["ci95"]["referred"][0]
    assert "ci95_refitted" not in CV.pool([replace(f, val_cal=None) for f in folds], 20)  # nothing to refit on
    same = CV.versus(folds, folds, 100, refitted=True)
    assert all(v == [0.0, 0.0] for v in same["delta_ci95_refitted"].values())

    def noisy(f):
        def jitter(p):
            q = p * np.exp(rng.normal(0, 0.3, p.shape))
            return q / q.sum(1, keepdims=True)
        g = replace(f, cal=jitter(f.cal), val_cal=jitter(f.val_cal))
        th, _ = OP.choose_operating_points(g.val_y, g.val_cal, LABELS, tb_sensitivity=g.tb_target)
        return replace(g, thresholds=th, pneumonia_threshold=OP.pneumonia_point(g.val_y, g.val_cal, LABELS)["threshold"])
    other = [noisy(f) for f in folds]
    cmp = CV.versus(folds, other, 300, refitted=True)
    fixed, refit = cmp["delta_ci95"], cmp["delta_ci95_refitted"]
    for key in ("pneumonia_sens_point", "referred"):
        assert refit[key][1] - refit[key][0] > fixed[key][1] - fixed[key][0], key
    md = "\n".join(CV._versus_table(CV.pool(folds, 30), {f.fold: CV.fold_row(f) for f in folds}, cmp, "a", "b"))
    assert "thresholds fitted again on resampled validation patients" in md
