"""One refer threshold for a recipe (``benchmarks.crossval --refer-pooled``): fitted on a cross-validation's pooled
validation films, judged leave-one-fold-out, never on films of the fold it scores."""
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import crossval as CV
from edge_runtime import operating_point as OP

LABELS = ["normal", "pneumonia", "tuberculosis"]


def _probs(rng, y, sharp=1.5):
    p = rng.dirichlet([1, 1, 1], len(y))
    p[np.arange(len(y)), y] += rng.uniform(0, sharp, len(y))
    return p / p.sum(1, keepdims=True)


def _fold(i, rng, n_test=60, n_val=90, folds=3, sharp=1.5):
    """Fold ``i`` with test films ``t{i}-k`` (patients ``p-t{i}-k``) and validation films ``v{i}-k``, thresholds
    fitted on its validation films as convert fits them."""
    y, vy = rng.integers(0, 3, n_test), np.repeat([0, 1, 2], n_val // 3)
    cal, vcal = _probs(rng, y, sharp), _probs(rng, vy, sharp)
    thr, _ = OP.choose_operating_points(vy, vcal, LABELS)
    return CV.Fold(bundle=f"b{i}", fold=i, folds=folds, seed=0, data_hash="h", labels=LABELS,
                   files=[f"{LABELS[c]}/t{i}-{k}.png" for k, c in enumerate(y)], y=y,
                   sources=np.array(["nih"] * n_test), views=np.array([""] * n_test), cal=cal, thresholds=thr,
                   pneumonia_threshold=OP.pneumonia_point(vy, vcal, LABELS)["threshold"], parity=0.99,
                   patients=np.array([f"p-t{i}-{k}" for k in range(n_test)]), val_y=vy, val_cal=vcal,
                   val_files=[f"{LABELS[c]}/v{i}-{k}.png" for k, c in enumerate(vy)],
                   tb_target=OP.TB_FIT_SENSITIVITY)


def test_the_refer_fit_is_one_function_the_lowest_threshold_whose_kept_films_reach_the_target():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = _probs(rng, y, 0.8)
    thr, report = OP.choose_operating_points(y, p, LABELS)
    is_tb = p[:, 2] >= thr[OP.TB]
    c = OP.fit_refer_below(y, p, is_tb)
    assert c == thr["refer_below"] == report["refer"]["refer_below"]
    keep = ~is_tb & (p.max(1) >= c)
    assert (p.argmax(1)[keep] == y[keep]).mean() >= OP.REFER_TARGET_ACCURACY
    if c > 0:  # one grid step lower misses the target
        lower = ~is_tb & (p.max(1) >= round(c - 0.01, 2))
        assert (p.argmax(1)[lower] == y[lower]).mean() < OP.REFER_TARGET_ACCURACY
    # TB-flagged films are not counted: flagging every wrong film lets the lowest threshold through
    assert OP.fit_refer_below(y, p, p.argmax(1) != y) == 0.0
    assert OP.fit_refer_below(y, np.full((len(y), 3), 1 / 3), np.zeros(len(y), bool)) == 0.95  # never reached


def test_each_fold_gets_a_threshold_its_own_films_did_not_choose():
    """Leave-one-fold-out: fold k's threshold is fitted on the other folds' validation films only, less the films
    of fold k's test patients (another fold's validation films come from its training part)."""
    rng = np.random.default_rng(1)
    folds = [_fold(i, rng) for i in range(3)]
    tb = [f.thresholds[OP.TB] for f in folds]
    got = CV.pooled_refer(folds, tb)

    def by_hand(k):
        o = [j for j in range(3) if j != k]
        return OP.fit_refer_below(np.concatenate([folds[j].val_y for j in o]),
                                  np.concatenate([folds[j].val_cal for j in o]),
                                  np.concatenate([folds[j].val_cal[:, 2] >= tb[j] for j in o]))
    assert got == [by_hand(k) for k in range(3)]
    # fold 0's own validation films play no part in its threshold: garbling them changes the others' only
    garbled = [replace(folds[0], val_cal=np.roll(folds[0].val_cal, 1, axis=1))] + folds[1:]
    again = CV.pooled_refer(garbled, tb)
    assert again[0] == got[0]

    # fold 1's validation films that are fold 0's test films (the same patients), all confidently wrong: left out
    # of fold 0's threshold, counted in fold 2's
    n = 30
    leak_y = np.zeros(n, int)
    leak_p = np.tile([0.02, 0.97, 0.01], (n, 1))
    f0 = replace(folds[0], files=folds[0].files[:0] + [f"normal/t0-x{k}.png" for k in range(n)] + folds[0].files[n:],
                 y=np.r_[leak_y, folds[0].y[n:]],
                 patients=np.r_[[f"p-t0-x{k}" for k in range(n)], folds[0].patients[n:]])
    f1 = replace(folds[1], val_y=np.r_[folds[1].val_y, leak_y], val_cal=np.r_[folds[1].val_cal, leak_p],
                 val_files=folds[1].val_files + [f"normal/t0-x{k}.png" for k in range(n)])
    leaky = [f0, f1, folds[2]]
    out = CV._outside_tests(leaky)
    assert (~out[0][1]).sum() == n and out[2][1].all() and out[0][2].all()
    got2 = CV.pooled_refer(leaky, tb)
    assert got2[0] == got[0]  # the leaked films never reach fold 0's threshold
    assert got2[2] > got[2]  # ... but are fold 2's to fit on: wrong and confident, they push its threshold up


def test_the_what_if_scores_every_fold_at_its_leave_one_fold_out_threshold_and_names_the_recipes(tmp_path):
    rng = np.random.default_rng(2)
    folds = [_fold(i, rng, n_test=80, sharp=1.2) for i in range(3)]
    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    res = CV.crossval([saved], n_boot=40, shift=False, log=lambda m: None,
                      what_ifs=CV.what_ifs(refer_pooled=True))
    wi = res["what_if"]["refer_pooled"]
    lofo = CV.pooled_refer(folds, [f.thresholds[OP.TB] for f in folds])
    assert [wi["refer_pooled"]["leave_one_fold_out"][k] for k in range(3)] == lofo
    assert [wi["fitted_per_fold"][k]["thresholds"]["refer_below"] for k in range(3)] == lofo
    assert wi["refer_pooled"]["as_deployed"] == {f.fold: f.thresholds["refer_below"] for f in folds}
    y = np.concatenate([f.val_y for f in folds])
    p = np.concatenate([f.val_cal for f in folds])
    flags = np.concatenate([f.val_cal[:, 2] >= f.thresholds[OP.TB] for f in folds])
    assert wi["refer_pooled"]["all_folds"] == {"refer_below": OP.fit_refer_below(y, p, flags),
                                               "validation_films": 270, "folds": [0, 1, 2]}
    # the scored figures are the device rule's at those thresholds
    d = np.concatenate([OP.OperatingPoint(tuple(LABELS), 1.0, dict(f.thresholds, refer_below=r)).decide_batch(f.cal)
                        for f, r in zip(folds, lofo)])
    assert wi["pooled"]["refer_rule"]["referred"] == pytest.approx((d == OP.REFER).mean())
    # refitted intervals for both ways of fitting and for each fold's model alone, in the same draws
    both = wi["ci95_refitted_both"]
    for side in ("base", "other"):
        for key in ("referred", "acc_kept", "referred_fold0", "referred_fold1", "referred_fold2"):
            lo, hi = both[side][key]
            assert 0 <= lo <= hi <= 1
    assert "referred_fold0" in wi["delta_ci95_refitted"]
    text = CV.table(res)
    assert "(what a recipe would store)" in text and "fold 2's model alone" in text and "narrower in" in text

    with pytest.raises(CV.FoldError, match="two folds or more"):
        CV.what_if(folds[:1], CV.WhatIf("refer_pooled", refer_pooled=True), 10, log=lambda m: None)


def test_leave_one_fold_out_thresholds_move_less_than_one_folds_own(tmp_path):
    """The reason for the lever, on films made alike: refitted on resampled validation patients, a threshold
    fitted on four folds' films spreads less than one fitted on a fold's own (a quarter as many films)."""
    rng = np.random.default_rng(4)
    folds = [_fold(i, rng, n_test=40, n_val=60, folds=5, sharp=1.0) for i in range(5)]
    from benchmarks.default_figures import by_patient, draw_patients
    members = [by_patient(f.val_files) for f in folds]
    outside = CV._outside_tests(folds)
    per, pooled = [], []
    for _ in range(150):
        v = [draw_patients(m, rng) for m in members]
        th = [OP.choose_operating_points(f.val_y[x], f.val_cal[x], LABELS)[0] for f, x in zip(folds, v)]
        per.append(th[0]["refer_below"])
        pooled.append(CV.pooled_refer(folds, [t[OP.TB] for t in th], v, outside)[0])
    assert np.std(pooled) < np.std(per)
