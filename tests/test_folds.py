"""Patient-grouped k-fold cross-validation (train.data.fold_split, train --folds/--fold)."""
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.data import DataError, Sample, fold_split


def _samples(sizes: dict[tuple[str, str], list[int]]) -> list[Sample]:
    """{(label, source): [films of patient 0, films of patient 1, ...]} -> samples."""
    out = []
    for (label, source), films in sizes.items():
        for p, n in enumerate(films):
            pid = f"{source}_{label}_{p}"
            out += [Sample(f"/x/{pid}_{i}.png", label, source, pid) for i in range(n)]
    return out


def _check_fold(parts, samples):
    sides = {side: {s.path for s in v} for side, v in parts.items()}
    assert sum(len(v) for v in parts.values()) == len(samples)  # every film once
    assert set().union(*sides.values()) == {s.path for s in samples}
    patients = {side: {s.patient_id for s in v} for side, v in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]


strata = st.dictionaries(st.tuples(st.sampled_from(["normal", "pneumonia", "tuberculosis"]),
                                   st.sampled_from(["nih", "tbx"])),
                         st.lists(st.integers(1, 3), min_size=1, max_size=25), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(sizes=strata, folds=st.integers(2, 6), seed=st.integers(0, 3))
def test_test_folds_partition_the_films_and_keep_patients_whole(sizes, folds, seed):
    samples = _samples(sizes)
    tested = Counter()
    for fold in range(folds):
        parts = fold_split(samples, folds, fold, 0.15, seed)
        _check_fold(parts, samples)
        tested.update(s.path for s in parts["test"])
    assert set(tested) == {s.path for s in samples} and set(tested.values()) == {1}  # each film tested once


def test_fold_shares_follow_the_request():
    sizes = {("normal", "nih"): [2] * 100, ("pneumonia", "nih"): [1] * 100, ("tuberculosis", "tbx"): [1] * 150}
    samples = _samples(sizes)
    for fold in range(5):
        parts = fold_split(samples, 5, fold, 0.15, seed=0)
        n = {k: len({s.patient_id for s in v}) for k, v in parts.items()}
        total = sum(n.values())
        assert n["test"] / total == pytest.approx(0.2, abs=0.01)
        assert n["val"] / total == pytest.approx(0.15, abs=0.01)
        for (label, source) in sizes:  # every stratum on every side, in proportion
            tested = {s.patient_id for s in parts["test"] if s.label == label}
            assert len(tested) == pytest.approx(len(sizes[(label, source)]) / 5, abs=1)


def test_the_deal_depends_on_the_seed_only():
    samples = _samples({("normal", "nih"): [1] * 40, ("pneumonia", "nih"): [1] * 40})
    a = fold_split(samples, 4, 1, 0.15, seed=0)
    assert a == fold_split(samples, 4, 1, 0.15, seed=0)
    b = fold_split(samples, 4, 1, 0.15, seed=1)
    assert {s.path for s in a["test"]} != {s.path for s in b["test"]}


@pytest.mark.parametrize("folds, fold, val, msg", [(1, 0, 0.15, "at least 2 folds"), (5, 5, 0.15, "0 to 4"),
                                                   (5, -1, 0.15, "0 to 4"), (2, 0, 0.5, "bad validation")])
def test_fold_split_refuses_impossible_requests(folds, fold, val, msg):
    with pytest.raises(DataError, match=msg):
        fold_split(_samples({("normal", "nih"): [1] * 10}), folds, fold, val)


@pytest.mark.parametrize("argv, msg", [(["--folds", "5"], "both --folds K and --fold I"),
                                       (["--fold", "1"], "both --folds K and --fold I"),
                                       (["--folds", "5", "--fold", "5"], "--fold is 0 to K-1"),
                                       (["--folds", "5", "--fold", "0", "--split", "s.csv"], "give one or the other")])
def test_cli_checks_the_fold_flags(argv, msg, tmp_path, capsys):
    from train.__main__ import main

    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), *argv]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written
