"""Refer a fixed share of films (``benchmarks.crossval --refer-share``, docs/refer-share/PLAN.md): each fold's refer
threshold is a quantile of its own validation films' confidence, at a share its own films did not choose."""
from dataclasses import replace

import numpy as np
import pytest

from benchmarks import crossval as CV
from edge_runtime import operating_point as OP
from tests.test_refer_pooled import LABELS, _fold, _probs


def test_the_share_fit_refers_that_share_of_the_films_not_flagged_tb():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 301)
    p = _probs(rng, y, 0.8)
    is_tb = p[:, 2] > 0.8
    rest = (~is_tb).sum()
    for share in (0.0, 0.1, 0.18, 0.5):
        t = OP.fit_refer_share(p, is_tb, share)
        got = OP.refer_share(p, is_tb, t)
        assert abs(got - share) <= 1.0 / rest  # within one film
    # flagged films play no part: changing their confidence leaves the threshold alone
    q = p.copy()
    q[is_tb] = [0.34, 0.33, 0.33]
    assert OP.fit_refer_share(q, is_tb, 0.2) == OP.fit_refer_share(p, is_tb, 0.2)
    assert OP.fit_refer_share(p, is_tb, 0.1) < OP.fit_refer_share(p, is_tb, 0.3)  # more referred, higher threshold
    with pytest.raises(ValueError, match="between 0 and 1"):
        OP.fit_refer_share(p, is_tb, 1.5)
    assert OP.fit_refer_share(p, np.ones(len(y), bool), 0.2) == 0.0  # nothing left to refer


def test_each_folds_share_is_what_the_kept_accuracy_rule_refers_on_the_other_folds():
    rng = np.random.default_rng(1)
    folds = [_fold(i, rng) for i in range(3)]
    tb = [f.thresholds[OP.TB] for f in folds]
    got = CV.pooled_shares(folds, tb)
    lofo = CV.pooled_refer(folds, tb)

    def by_hand(k):
        o = [j for j in range(3) if j != k]
        probs = np.concatenate([folds[j].val_cal for j in o])
        flags = np.concatenate([folds[j].val_cal[:, 2] >= tb[j] for j in o])
        top = probs.max(1)[~flags]
        return float((top < lofo[k]).mean())
    assert got == pytest.approx([by_hand(k) for k in range(3)])
    assert all(0 <= s <= 1 for s in got)


def test_a_folds_share_never_reads_films_of_its_own_test_patients():
    """Fold 1's validation films that are fold 0's test patients (confidently wrong) are left out of fold 0's share
    and counted in fold 2's."""
    rng = np.random.default_rng(5)
    folds = [_fold(i, rng) for i in range(3)]
    tb = [f.thresholds[OP.TB] for f in folds]
    got = CV.pooled_shares(folds, tb)
    n = 30
    f0 = replace(folds[0], files=[f"normal/t0-x{k}.png" for k in range(n)] + folds[0].files[n:],
                 y=np.r_[np.zeros(n, int), folds[0].y[n:]],
                 patients=np.r_[[f"p-t0-x{k}" for k in range(n)], folds[0].patients[n:]])
    f1 = replace(folds[1], val_y=np.r_[folds[1].val_y, np.zeros(n, int)],
                 val_cal=np.r_[folds[1].val_cal, np.tile([0.02, 0.97, 0.01], (n, 1))],
                 val_files=folds[1].val_files + [f"normal/t0-x{k}.png" for k in range(n)])
    again = CV.pooled_shares([f0, f1, folds[2]], tb)
    assert again[0] == got[0] and again[2] != got[2]


def test_a_fold_converted_with_a_share_is_refitted_by_its_share_and_not_mixed_with_other_rules(tmp_path):
    rng = np.random.default_rng(6)
    folds = [replace(_fold(i, rng), refer_share=0.25) for i in range(2)]
    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    back = CV.load_folds([saved], "tflite_int8", lambda m: None, validation=True)
    assert [f.refer_share for f in back] == [0.25, 0.25]
    g, fitted = CV.refit(back[0], CV.WhatIf("check"))
    f = back[0]
    want = OP.fit_refer_share(f.val_cal, f.val_cal[:, 2] >= fitted["thresholds"][OP.TB], 0.25)
    assert fitted["thresholds"]["refer_below"] == pytest.approx(want)
    with pytest.raises(CV.FoldError, match="different refer rules"):
        CV.check_folds([back[0], replace(back[1], refer_share=None)])
    base = tmp_path / "base.json"
    CV.save_folds([replace(x, refer_share=None) for x in folds], base, "tflite_int8", {}, {"command": "b", "machine": {}})
    res = CV.crossval([saved], n_boot=20, shift=False, log=lambda m: None, baseline=[base])
    assert res["versus_baseline"]["refer_shares"] == {"baseline": None, "this": 0.25}
    assert "fitted by different rules" in CV.table(res)


def test_the_what_if_scores_each_fold_at_its_own_quantile_and_reports_one_model_per_row(tmp_path):
    rng = np.random.default_rng(2)
    folds = [_fold(i, rng, n_test=80, sharp=1.2) for i in range(3)]
    saved = tmp_path / "folds.json"
    CV.save_folds(folds, saved, "tflite_int8", {}, {"command": "cv", "machine": {}})
    res = CV.crossval([saved], n_boot=40, shift=False, log=lambda m: None, what_ifs=CV.what_ifs(refer_share=True))
    wi = res["what_if"]["refer_share"]
    tb = [f.thresholds[OP.TB] for f in folds]
    shares = CV.pooled_shares(folds, tb)
    want = [OP.fit_refer_share(f.val_cal, f.val_cal[:, 2] >= t, s) for f, t, s in zip(folds, tb, shares)]
    assert [wi["refer_share"]["leave_one_fold_out"][k] for k in range(3)] == pytest.approx(want)
    assert [wi["refer_share"]["share_leave_one_fold_out"][k] for k in range(3)] == pytest.approx(shares)
    assert [wi["fitted_per_fold"][k]["thresholds"]["refer_below"] for k in range(3)] == pytest.approx(want)
    # each fold's own validation films are referred at about its share
    for f, t, s, r in zip(folds, tb, shares, want):
        assert abs(OP.refer_share(f.val_cal, f.val_cal[:, 2] >= t, r) - s) <= 1.0 / 50
    # the recipe's share: the kept-accuracy rule's on all folds' validation films pooled
    allf = wi["refer_share"]["all_folds"]
    probs = np.concatenate([f.val_cal for f in folds])
    flags = np.concatenate([f.val_cal[:, 2] >= t for f, t in zip(folds, tb)])
    assert allf["share"] == pytest.approx(OP.refer_share(probs, flags, allf["refer_below"]))
    both = wi["ci95_refitted_both"] | {"redrawn": wi["ci95_refitted_redrawn"]}
    for side in ("base", "other", "redrawn"):
        for key in ("referred_fold0", "acc_kept_fold2"):
            lo, hi = both[side][key]
            assert 0 <= lo <= hi <= 1
    width = {side: [both[side][f"referred_fold{k}"][1] - both[side][f"referred_fold{k}"][0] for k in range(3)]
             for side in both}
    assert np.median(width["other"]) < np.median(width["base"])  # the held share: a quantile, steadier
    assert np.median(width["other"]) < np.median(width["redrawn"])  # choosing the share again adds its own error
    text = CV.table(res)
    assert "share chosen again in each draw" in text and "With the share chosen again in each draw" in text
    assert "fixed share" in text and "(what a recipe would store)" in text and "accuracy kept, fold 1's model alone" in text
    with pytest.raises(CV.FoldError, match="one refer rule per what-if"):
        CV.what_if(folds, CV.WhatIf("both", refer_pooled=True, refer_share=True), 10, log=lambda m: None)
    with pytest.raises(CV.FoldError, match="two folds or more"):
        CV.what_if(folds[:1], CV.WhatIf("refer_share", refer_share=True), 10, log=lambda m: None)


def test_a_quantile_refers_a_steadier_share_of_unseen_films_than_the_kept_accuracy_crossing():
    """The reason for the lever, on films made alike: thresholds refitted on resampled validation patients, the
    share of the same test films referred spreads less when the threshold is a quantile at a fixed share."""
    rng = np.random.default_rng(4)
    f = _fold(0, rng, n_test=400, n_val=150, sharp=0.9)
    from benchmarks.default_figures import by_patient, draw_patients
    members = by_patient(f.val_files)
    share = OP.refer_share(f.val_cal, f.val_cal[:, 2] >= f.thresholds[OP.TB], f.thresholds["refer_below"])
    test_tb = f.cal[:, 2]
    crossing, quantile = [], []
    for _ in range(200):
        v = draw_patients(members, rng)
        th = OP.choose_operating_points(f.val_y[v], f.val_cal[v], LABELS)[0]
        flags_v = f.val_cal[v, 2] >= th[OP.TB]
        q = OP.fit_refer_share(f.val_cal[v], flags_v, share)
        rest = test_tb < th[OP.TB]
        crossing.append((f.cal.max(1)[rest] < th["refer_below"]).mean())
        quantile.append((f.cal.max(1)[rest] < q).mean())
    assert np.std(quantile) < np.std(crossing)
