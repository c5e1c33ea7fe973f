"""benchmarks.ensemble: a teacher ensemble scored before a student is trained on it."""
import json

import pytest
from conftest import copy_run


def _copy(run, dest, move_one_val_film=False):
    """A copy of a run in another folder (``conftest.copy_run``); optionally with one validation film moved to
    training (another split)."""
    from train import data as D

    copy_run(run, dest)
    if move_one_val_film:
        parts = D.load_split(dest / "split.csv")
        parts["train"].append(parts["val"].pop(0))
        D.save_split(parts, dest / "split.csv")
        meta = json.loads((dest / "metadata.json").read_text())  # a run trained on that split says so
        meta["split"]["counts"] = {k: len(v) for k, v in parts.items()}
        (dest / "metadata.json").write_text(json.dumps(meta))
    return dest


def test_ensemble_of_identical_runs_scores_as_one(tiny_run, tmp_path, capsys):
    from benchmarks.ensemble import main

    twin = _copy(tiny_run, tmp_path / "twin")
    out, md = tmp_path / "e.json", tmp_path / "e.md"
    assert main([str(tiny_run), str(twin), "--bootstrap", "50", "--out", str(out), "--md", str(md)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert set(rows) == {str(tiny_run), str(twin), "ensemble"}
    one, ens = rows[str(tiny_run)], rows["ensemble"]
    assert ens["accuracy"] == pytest.approx(one["accuracy"]) and res["top1_agreement_with_first"] == 1.0
    assert res["ensemble_minus_first"]["accuracy"]["value"] == pytest.approx(0.0)
    assert res["n"] > 0 and res["side"] == "val" and res["unit"] == "patient"
    for r in rows.values():
        lo, hi = r["ci"]["accuracy"]
        assert 0 <= lo <= r["accuracy"] <= hi <= 1
        assert set(r["accuracy_by_source"]) and all(0 <= v <= 1 for v in r["accuracy_by_source"].values())
    text = md.read_text()
    assert "**Command:** `python -m benchmarks.ensemble" in text and "| ensemble |" in text
    assert "Ensemble minus the first run" in capsys.readouterr().out


def test_ensemble_refuses_runs_of_other_splits(tiny_run, tmp_path, capsys):
    from benchmarks.ensemble import main

    other = _copy(tiny_run, tmp_path / "other", move_one_val_film=True)
    assert main([str(tiny_run), str(other)]) == 2
    assert "holds other val films" in capsys.readouterr().err


def test_ensemble_needs_finished_runs(tiny_run, tmp_path, capsys):
    from benchmarks.ensemble import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(tiny_run), str(empty)]) == 2
    assert "not a finished training run" in capsys.readouterr().err
