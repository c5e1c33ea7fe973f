"""Boundary tests for the safety-critical rules with independent, hand-computed expected values (issue 13):
the decision rule (TB ``>=`` threshold, refer ``<`` refer_below, out of scope first), temperature scaling,
the refer rule fitted on validation data and the TB operating point. Each case sits at, just below or just
above a threshold, so a wrong comparison or order fails here."""
import numpy as np
import pytest

from edge_runtime import metrics as M
from edge_runtime.operating_point import (OUT_OF_SCOPE, REFER, TB, OperatingPoint, calibrate, choose_operating_points,
                                          decide)

LABELS = ("normal", "pneumonia", "tuberculosis")
T_TB, REFER_BELOW = 0.30, 0.60
below = lambda x: np.nextafter(x, 0.0)  # noqa: E731  the largest float under x
above = lambda x: np.nextafter(x, 1.0)  # noqa: E731


def meta(labels=LABELS, **thresholds):
    return OperatingPoint(labels, 1.0, thresholds or {TB: T_TB, "refer_below": REFER_BELOW})


@pytest.mark.parametrize("p_tb,expected", [
    (T_TB, TB),  # at the threshold: flagged (>=)
    (above(T_TB), TB),
    (below(T_TB), REFER),  # not flagged; top probability 0.45 < 0.60 -> refer
])
def test_tb_threshold_is_inclusive(p_tb, expected):
    assert decide(np.array([0.45, 0.25, p_tb]), meta())[0] == expected


@pytest.mark.parametrize("top,expected", [
    (REFER_BELOW, "normal"),  # at refer_below: not referred (<)
    (above(REFER_BELOW), "normal"),
    (below(REFER_BELOW), REFER),
])
def test_refer_below_is_exclusive(top, expected):
    assert decide(np.array([top, 0.35, 0.05]), meta())[0] == expected


def test_tb_is_looked_up_by_label_not_position():
    m = meta(labels=("tuberculosis", "normal", "pneumonia"))
    assert decide(np.array([T_TB, 0.45, 0.25]), m)[0] == TB
    assert decide(np.array([below(T_TB), 0.05, 0.95]), m)[0] == "pneumonia"


@pytest.mark.parametrize("probs", [[0.05, 0.05, 0.90], [0.40, 0.35, 0.25], [0.90, 0.05, 0.05]])
def test_out_of_scope_is_decided_before_tb_and_refer(probs):
    # P(TB)=0.90 is far above the TB threshold, 0.40 is a refer case and 0.90 normal: all out of scope
    decision, reason = decide(np.array(probs), meta(), in_scope=False, scope_reason="blank film")
    assert (decision, reason) == (OUT_OF_SCOPE, "blank film")


def test_tb_is_decided_before_refer_and_without_thresholds_the_top_class_wins():
    assert decide(np.array([0.36, 0.33, 0.31]), meta())[0] == TB  # unsure, but TB at or over its threshold
    assert decide(np.array([0.36, 0.33, 0.31]), meta(**{"refer_below": 0.0, "unused": 1}))[0] == "normal"
    assert decide(np.array([0.2, 0.5, 0.3]), meta(**{TB: 0.9}))[0] == "pneumonia"  # no refer_below: never refer


# ---- temperature scaling: softmax(log p / T); for two classes p1'/p2' = (p1/p2)^(1/T) ----------------------
@pytest.mark.parametrize("probs,t,expected", [
    ([0.8, 0.2], 2.0, [2 / 3, 1 / 3]),  # (0.8/0.2)^(1/2) = 2 -> 2:1
    ([0.8, 0.2], 0.5, [16 / 17, 1 / 17]),  # (0.8/0.2)^2 = 16 -> 16:1
    ([0.9, 0.1], 1.0, [0.9, 0.1]),  # T = 1 changes nothing
    ([0.5, 0.5], 3.0, [0.5, 0.5]),
    ([1.0, 0.0], 2.0, [1 / (1 + 1e-7 ** 0.5), 1e-7 ** 0.5 / (1 + 1e-7 ** 0.5)]),  # 0 is clipped to 1e-7 first
])
def test_temperature_divides_the_log_probabilities(probs, t, expected):
    out = calibrate(np.array(probs), t)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)


def test_temperature_applies_row_by_row():
    out = calibrate(np.array([[0.8, 0.2], [0.2, 0.8]], np.float32), 2.0)
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], rtol=1e-6)


# ---- the refer rule fitted on validation (edge_runtime.operating_point.choose_operating_points) ------------------------
# Ten films, two classes (no TB rule involved). Top probability and whether the top class is right:
TOPS = [0.955, 0.905, 0.855, 0.805, 0.755, 0.705, 0.655, 0.605, 0.555, 0.525]
RIGHT = [True] * 6 + [False] * 3 + [True]
# Keeping films with top >= c:  c <= 0.52: 7/10;  0.53-0.55: 6/9;  0.56-0.60: 6/8 = 0.75;
#                               0.61-0.65: 6/7;    0.66-0.70: 6/6.  The rule is the lowest c reaching the target.


def _refer_case():
    probs = np.array([[t, 1 - t] for t in TOPS])
    y = np.array([0 if r else 1 for r in RIGHT])
    return y, probs


@pytest.mark.parametrize("target,refer_below,referred", [
    (6 / 7, 0.61, 0.3),  # exactly reached at 0.61 (>=): 3 of 10 films referred
    (above(6 / 7), 0.66, 0.4),  # just above 6/7: needs 6/6
    (0.75, 0.56, 0.2),  # exactly 6/8
    (0.70, 0.0, 0.0),  # every film already at 7/10: refer none
    (below(0.70), 0.0, 0.0),
])
def test_refer_threshold_is_the_lowest_cut_reaching_the_target_accuracy(target, refer_below, referred):
    y, probs = _refer_case()
    thresholds, report = choose_operating_points(y, probs, ["normal", "pneumonia"], target_accuracy=target)
    assert thresholds == {"refer_below": refer_below}
    assert report["refer"]["val_refer_fraction"] == pytest.approx(referred)
    assert report["refer"]["val_accuracy_not_referred"] >= target


def test_refer_threshold_when_no_cut_reaches_the_target():
    y, probs = _refer_case()
    thresholds, _ = choose_operating_points(1 - y, probs, ["normal", "pneumonia"], target_accuracy=0.9)
    assert thresholds["refer_below"] == 0.95  # the most cautious rule the grid has


def test_films_flagged_tb_do_not_count_for_the_refer_rule():
    # 10 TB films and one normal film all at p_TB 0.9 (flagged; the normal one is a confident mistake that
    # would need a cut above 0.9 if it counted), and 4 others: right at 0.8 and 0.7, wrong at 0.65 and 0.6
    tb = [[0.05, 0.05, 0.90]] * 11
    rest = [[0.80, 0.15, 0.05], [0.70, 0.25, 0.05], [0.30, 0.65, 0.05], [0.35, 0.60, 0.05]]
    y = np.array([2] * 10 + [0] + [0, 0, 0, 0])
    thresholds, report = choose_operating_points(y, np.array(tb + rest), list(LABELS), target_accuracy=1.0)
    # TB threshold: the 90% sensitivity point among the TB films, moved into the gap down to the next score
    assert thresholds[TB] == pytest.approx((0.90 + 0.05) / 2)
    # among the 4 others: cut 0.66..0.70 keeps 0.8 and 0.7 (2/2 right); lower cuts keep a wrong one
    assert thresholds["refer_below"] == 0.66 and report["refer"]["val_refer_fraction"] == pytest.approx(2 / 15)


# ---- the TB operating point (edge_runtime.metrics) ------------------------------------------------------------
POS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]  # ten TB films
NEG = [0.5, 0.08, 0.02]


def test_threshold_for_90_percent_sensitivity_is_the_ninth_highest_positive():
    y = np.r_[np.ones(10, bool), np.zeros(3, bool)]
    s = np.array(POS + NEG)
    assert M.threshold_for_sensitivity(y, s, 0.9) == 0.1  # ceil(0.9 * 10) = 9th highest
    assert M.threshold_for_sensitivity(y, s, 0.91) == 0.05  # needs all 10
    assert M.threshold_for_sensitivity(y, s, 0.8) == 0.2
    assert M.threshold_in_gap(y, s, 0.9) == pytest.approx((0.1 + 0.08) / 2)  # next lower score is a negative's


@pytest.mark.parametrize("thr,sens,spec", [
    (0.1, 9 / 10, 2 / 3),  # at a positive's score: counted (>=)
    (above(0.1), 8 / 10, 2 / 3),
    (0.5, 5 / 10, 2 / 3),  # 0.5 is both a positive's and a negative's score
    (above(0.5), 4 / 10, 3 / 3),
    (below(0.08), 9 / 10, 1 / 3),
])
def test_sensitivity_and_specificity_at_a_threshold(thr, sens, spec):
    y = np.r_[np.ones(10, bool), np.zeros(3, bool)]
    assert M.sens_spec_at(y, np.array(POS + NEG), thr) == (pytest.approx(sens), pytest.approx(spec))


def test_pneumonia_point_is_fitted_among_normal_and_pneumonia_films_and_not_applied():
    """Issue 16's pneumonia operating point: the P(pneumonia) threshold reaching its fit target (90%: a margin over
    the 85% goal) on the normal and pneumonia validation films (TB films ignored), reported with its specificity; the decision rule ignores it."""
    from edge_runtime import operating_point as OP

    labels = ["normal", "pneumonia", "tuberculosis"]
    rng = np.random.default_rng(4)
    y = np.r_[np.zeros(40, int), np.ones(40, int), np.full(40, 2)]
    pn = np.r_[rng.uniform(0.0, 0.6, 40), rng.uniform(0.3, 1.0, 40), rng.uniform(0.9, 1.0, 40)]  # TB films high
    probs = np.c_[1 - pn, pn, np.zeros(120)] * 0.9 + np.c_[np.zeros((120, 2)), np.full(120, 0.1)]
    thresholds, report = OP.choose_operating_points(y, probs, labels)
    point = report["pneumonia"]
    assert point["applied"] is False and "pneumonia" not in thresholds
    sens, spec = M.sens_spec_at(y[:80] == 1, probs[:80, 1], point["threshold"])
    assert (sens, spec) == (point["val_sensitivity"], point["val_specificity"])
    target = OP.PNEUMONIA_FIT_SENSITIVITY
    assert point["target_sensitivity"] == target == 0.90
    assert target <= sens < target + 1 / 40 + 1e-9  # the highest threshold that reaches the target
    # scored on other films with the same threshold
    got = OP.pneumonia_at_threshold(y, probs, labels, point["threshold"])
    assert (got["sensitivity"], got["specificity"]) == (sens, spec)
    assert OP.pneumonia_point(y, probs[:, [0, 2]], ["normal", "tuberculosis"]) is None


def test_refer_rule_counts_sick_films_given_a_normal_decision():
    from edge_runtime import operating_point as OP

    labels = ["normal", "pneumonia", "tuberculosis"]
    probs = np.array([[.9, .05, .05], [.8, .1, .1], [.7, .1, .2], [.5, .45, .05], [.1, .1, .8]])
    y = np.array([0, 1, 2, 1, 2])
    r = OP.refer_rule(y, probs, labels, {"tuberculosis": 0.5, "refer_below": 0.6})
    # film 2 (TB, P(TB) 0.2 < 0.5, normal 0.7) and film 1 (pneumonia, normal 0.8) are called normal; film 3 referred
    assert (r["tuberculosis_called_normal"], r["pneumonia_called_normal"]) == (1, 1)
    assert r["referred"] == pytest.approx(1 / 5)
