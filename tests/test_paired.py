"""benchmarks.paired: two bundles of one split compared film by film, with intervals of the difference."""
import json
import shutil

import pytest

from benchmarks.paired import compare, main

pytestmark = pytest.mark.slow


def test_a_bundle_against_itself_differs_by_nothing(tiny_bundle):
    r = compare(tiny_bundle, tiny_bundle, "test", n_boot=50)
    assert r["n"] > 0 and r["unit"] == "patient"
    split = json.loads((tiny_bundle / "metadata.json").read_text())["split"]
    assert r["split"]["seed"] == split["seed"] and "fold" not in r["split"]  # one split, not a CV fold
    for f, d in r["delta"].items():
        if d["value"] == d["value"]:  # NaN where a figure is undefined on these films
            assert d["value"] == 0 and d["ci95"] == [0.0, 0.0], f
    assert r["figures"]["A"]["accuracy"] == r["figures"]["B"]["accuracy"]
    assert r["rule"]["A"] == r["rule"]["B"]


def test_bundles_of_different_splits_are_refused(tiny_bundle, tmp_path, capsys):
    from edge_runtime import bundle as B

    status = json.loads((tiny_bundle / "bundle.json").read_text())
    run = shutil.copytree(status["run_dir"], tmp_path / "run")
    rows = (run / "split.csv").read_text().splitlines()
    test_rows = [i for i, row in enumerate(rows) if row.endswith(",test")]
    assert test_rows, rows[:3]
    del rows[test_rows[-1]]  # one test film fewer
    (run / "split.csv").write_text("\n".join(rows) + "\n")
    other = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (other / "bundle.json").write_text(json.dumps({**status, "run_dir": str(run)}))
    meta = json.loads((other / "metadata.json").read_text())  # a bundle of that split (its own run's)
    meta["split"]["counts"]["test"] -= 1
    (other / "metadata.json").write_text(json.dumps(meta))
    B.write_sums(other)
    assert main([str(tiny_bundle), str(other), "--bootstrap", "20"]) == 2
    assert "do not hold the same test films" in capsys.readouterr().err
    (other / "bundle.json").write_text(json.dumps({**status, "run_dir": status["run_dir"]}))  # another run's split
    B.write_sums(other)
    assert main([str(tiny_bundle), str(other), "--bootstrap", "20"]) == 2
    assert "is not the run this bundle was made from" in capsys.readouterr().err


def test_bundles_come_in_pairs(tiny_bundle, capsys):
    with pytest.raises(SystemExit):
        main([str(tiny_bundle)])
    assert "in pairs" in capsys.readouterr().err


def test_the_markdown_report_names_its_command_and_pairs(tiny_bundle, tmp_path):
    md = tmp_path / "r.md"
    assert main([str(tiny_bundle), str(tiny_bundle), "--bootstrap", "20", "--md", str(md), "--title", "Self"]) == 0
    text = md.read_text()
    assert text.startswith("# Self") and "python -m benchmarks.paired" in text and "**Commit:**" in text
    assert "| 0 |" in text and "+0.000 to +0.000" in text


def test_two_artifacts_of_one_bundle_qat_against_post_training_int8(tiny_bundle, tmp_path, capsys):
    """``--format-b``: the same films through two artifacts; the difference is what the second adds, and an
    artifact the bundle lacks is a clear error."""
    from edge_runtime import formats as F

    r = compare(tiny_bundle, tiny_bundle, "test", fmt="tflite_int8_ptq", n_boot=50, fmt_b="tflite_int8")
    assert (r["format"], r["format_b"]) == ("tflite_int8_ptq", "tflite_int8")
    ptq = compare(tiny_bundle, tiny_bundle, "test", fmt="tflite_int8_ptq", n_boot=20)
    qat = compare(tiny_bundle, tiny_bundle, "test", fmt="tflite_int8", n_boot=20)
    assert r["figures"]["A"]["accuracy"] == ptq["figures"]["A"]["accuracy"]
    assert r["figures"]["B"]["accuracy"] == qat["figures"]["A"]["accuracy"]
    assert r["delta"]["accuracy"]["value"] == pytest.approx(qat["figures"]["A"]["accuracy"] - ptq["figures"]["A"]["accuracy"])
    lacking = shutil.copytree(tiny_bundle, tmp_path / "lacking")
    (lacking / F.FORMATS["onnx_int8"].filename).unlink()
    assert main([str(lacking), str(lacking), "--format-b", "onnx_int8", "--bootstrap", "20"]) == 2
    assert "no onnx_int8 artifact" in capsys.readouterr().err


def test_bundles_with_other_class_orders_are_refused(tiny_bundle, tmp_path, capsys):
    """review28 #1: B trained with another --classes order had its columns read in A's order (the same model
    scored accuracy 1.0 against 0.38); refused now, with the reason."""
    from edge_runtime import bundle as B

    other = shutil.copytree(tiny_bundle, tmp_path / "b")
    meta = json.loads((other / "metadata.json").read_text())
    meta["labels"] = [meta["labels"][1], meta["labels"][0], *meta["labels"][2:]]
    (other / "metadata.json").write_text(json.dumps(meta))
    B.write_sums(other)
    assert main([str(tiny_bundle), str(other), "--bootstrap", "20"]) == 2
    assert "other classes or class orders" in capsys.readouterr().err
