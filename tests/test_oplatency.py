"""benchmarks.oplatency: the cut graphs compute what the full model computes, and the profile names every
operation once with its stage."""
import json

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks import oplatency as O  # noqa: E402


def _tflite(bundle, key="tflite_int8"):
    path = bundle / f"model_{key}.tflite"
    if not path.is_file():
        pytest.skip(f"{key} not in the tiny bundle")
    return path


def _run(content, x, preserve=False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF, "experimental_preserve_all_tensors": True} \
        if preserve else {}
    it = Interpreter(model_content=content, num_threads=1, **kw)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it


@pytest.mark.parametrize("key", ["tflite_int8", "tflite_fp32"])
def test_a_cut_graph_computes_what_the_full_model_computes(tiny_bundle, key):
    path = _tflite(tiny_bundle, key)
    model = O._read(path)
    kinds = O.op_names(model)
    content = path.read_bytes()
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_content=content).get_input_details()[0]
    x = np.random.default_rng(1).integers(0, 256, size=d["shape"]).astype(d["dtype"])
    full = _run(content, x, preserve=True)
    names = {t["name"]: t["index"] for t in full.get_tensor_details()}
    for k in (1, len(kinds) // 2, len(kinds)):
        part = _run(O.cut(model, k), x, preserve=True)
        outs = part.get_output_details()
        assert outs, k
        for o in outs:  # every output of the cut is the full model's tensor of that name, bit for bit
            np.testing.assert_array_equal(part.get_tensor(o["index"]), full.get_tensor(names[o["name"]]))
    whole = {o["name"] for o in _run(O.cut(model, len(kinds)), x).get_output_details()}
    assert {o["name"] for o in full.get_output_details()} <= whole  # the last cut holds the model's outputs


def test_the_profile_names_every_operation_once_with_its_stage(tiny_bundle):
    path = _tflite(tiny_bundle)
    kinds = O.op_names(O._read(path))
    seen = []
    r = O.profile(path, every=7, repeats=1, invokes=1, rounds=2, progress=lambda done, total: seen.append((done, total)))
    assert [row["kind"] for row in r["rows"]] == kinds and [row["op"] for row in r["rows"]] == list(range(len(kinds)))
    assert seen[-1][0] == seen[-1][1] == 2 * len(set(range(7, len(kinds) + 1, 7)) | {len(kinds)})
    assert r["full_ms"] > 0 and r["rows"][-1]["cumulative_ms"] == pytest.approx(r["cut_total_ms"])
    assert 0 <= r["round_spread_ms"]["median"] <= r["round_spread_ms"]["max"]  # two rounds: the noise is measured
    assert sum(v["count"] for v in r["by_kind"].values()) == len(kinds)
    assert sum(v["ms"] for v in r["by_stage"].values()) == pytest.approx(r["cut_total_ms"])
    stage = {row["kind"]: row["stage"] for row in r["rows"]}
    assert stage["CONCATENATION"] == O.PREP  # grey to three channels, at full size
    assert stage["FULLY_CONNECTED"] == O.HEAD and stage["DEPTHWISE_CONV_2D"] == O.NET


def test_the_command_profiles_every_litert_model_of_a_bundle(tiny_bundle, tmp_path, capsys):
    out, md, png = tmp_path / "o.json", tmp_path / "o.md", tmp_path / "o.png"
    rc = O.main([str(tiny_bundle), "--every", "20", "--rounds", "1", "--repeats", "1", "--invokes", "1",
                 "--out", str(out), "--md", str(md), "--plot", str(png)])
    assert rc == 0
    res = json.loads(out.read_text())
    litert = sorted(p.stem.replace("model_", "") for p in tiny_bundle.glob("*.tflite"))
    assert sorted(k.split("/")[1] for k in res["models"]) == litert
    assert res["machine"]["cpu"] and "benchmarks.oplatency" in res["command"]
    text = md.read_text()
    assert "**Command:**" in text and "input preparation" in text and png.stat().st_size > 0


def test_bad_input_is_refused_with_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "model.tflite"
    bad.write_text("not a model")
    assert O.main([str(bad)]) == 2
    assert "not a LiteRT (.tflite) model" in capsys.readouterr().err
    cut_short = tmp_path / "short.tflite"
    cut_short.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(20))  # the header of a model, and nothing after it
    assert O.main([str(cut_short)]) == 2
    assert "LiteRT" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert O.main([str(empty)]) == 2
    assert "no LiteRT (.tflite) model" in capsys.readouterr().err
    assert O.main([str(tmp_path / "missing")]) == 2
    assert "no such bundle or model file" in capsys.readouterr().err


def test_models_of_the_same_label_are_each_reported(tiny_bundle, tmp_path):
    """Two bundles in folders of one name (runs/a/bundle, runs/b/bundle) and a file given twice: every model keeps
    its own figures in the report instead of overwriting another's."""
    path = _tflite(tiny_bundle)
    copies = []
    for side in ("a", "b"):
        (tmp_path / side / "bundle").mkdir(parents=True)
        copies.append(tmp_path / side / "bundle" / path.name)
        copies[-1].write_bytes(path.read_bytes())
    out = tmp_path / "o.json"
    rc = O.main([str(copies[0]), str(copies[1]), str(copies[1]), "--every", "50", "--rounds", "1", "--repeats", "1",
                 "--invokes", "1", "--out", str(out)])
    assert rc == 0
    labels = list(json.loads(out.read_text())["models"])
    assert labels == [str(copies[0]), str(copies[1]), f"{copies[1]} #2"]
