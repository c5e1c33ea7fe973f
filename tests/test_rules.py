"""benchmarks.rules: the device's rule reproduced, and what each alternative changes (synthetic scores)."""
import numpy as np
import pytest

from benchmarks import rules as R
from edge_runtime import operating_point as OP

LABELS = ["normal", "pneumonia", "tuberculosis"]


def _films(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1.2, (n, 3)) + 2.0 * np.eye(3)[y]
    logits[y == 2, 2] += 2.5  # TB easy, normal vs pneumonia hard (as on cxr-dev)
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_the_current_rule_is_the_devices_rule():
    y, p = _films()
    thresholds, _ = OP.choose_operating_points(y, p, LABELS)
    th = R.fit("current", y, p, LABELS)
    assert (th["tb"], th["refer"], th["pneumonia"]) == (thresholds["tuberculosis"], thresholds["refer_below"], None)
    device = OP.OperatingPoint(tuple(LABELS), 1.0, thresholds).decide_batch(p)
    assert (R.decide(p, LABELS, th["tb"], th["refer"]) == device).all()


def test_counting_tb_flags_refers_no_more_films_and_a_pneumonia_flag_finds_more_pneumonia():
    y, p = _films()
    yt, pt = _films(seed=1)
    got = {}
    for rule in R.RULES:
        th = R.fit(rule, y, p, LABELS)
        got[rule] = R.score(R.decide(pt, LABELS, th["tb"], th["refer"], th["pneumonia"]), yt, LABELS)
        got[rule]["refer"] = th["refer"]
    assert R.fit("count_tb_flags", y, p, LABELS)["refer"] <= R.fit("current", y, p, LABELS)["refer"]
    assert got["count_tb_flags"]["referred"] <= got["current"]["referred"]
    assert got["pneumonia_flag"]["pneumonia_given_pneumonia"] > got["count_tb_flags"]["pneumonia_given_pneumonia"]
    # the fitted target holds on validation for the rules that count every decision
    for rule in ("count_tb_flags", "pneumonia_flag"):
        th = R.fit(rule, y, p, LABELS)
        val = R.score(R.decide(p, LABELS, th["tb"], th["refer"], th["pneumonia"]), y, LABELS)
        assert val["accuracy_not_referred"] >= 0.9 or th["refer"] == R.REFER_GRID[-1]


def test_score_counts_sick_films_given_a_normal_decision():
    d = np.array(["normal", "normal", "refer", "tuberculosis", "normal"], dtype=object)
    s = R.score(d, np.array([0, 2, 1, 2, 1]), LABELS)
    assert (s["tuberculosis_called_normal"], s["pneumonia_called_normal"]) == (1, 1)
    assert s["referred"] == pytest.approx(0.2) and s["accuracy_not_referred"] == pytest.approx(0.5)


def test_not_a_bundle_exits_2(tmp_path, capsys):
    assert R.main([str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err
