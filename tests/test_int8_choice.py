"""Convert chooses per model the LiteRT INT8 file the runtime serves first (QAT when it passed) and says why."""
import json

from convert.pipeline import choose_int8
from edge_runtime import bundle as B
from edge_runtime.metadata import ModelMetadata
from edge_runtime.preprocess import PreprocessConfig


def _row(parent, agree, acc, auc, passed=True):
    return {"ok": True, "passed": passed, "parent": parent, "agreement_vs_float": agree, "max_prob_diff_vs_float": 0.1,
            "val": {"pooled": {"accuracy": acc},
                    "by_source": {"nih_dcn": {"per_class": {"pneumonia": {"auc": auc, "support": 50},
                                                            "normal": {"support": 40}}},
                                  "tbx11k": {"per_class": {"tuberculosis": {"support": 90}}}}}}


def test_the_qat_file_is_served_when_it_passed_even_where_it_agrees_less_with_the_float_model():
    # docs/cv5v fold 2's figures: the old rule (agreement with the float model first) served the PTQ file
    results = {"tflite_int8": _row("qat", 0.888, 0.845, 0.837), "tflite_int8_ptq": _row("float", 0.983, 0.820, 0.871),
               "tflite_fp32": {"ok": True, "passed": True, "parent": "float", "agreement_vs_float": 1.0},
               "openvino_int8": _row("float", 0.99, 0.9, 0.9)}
    c = choose_int8(results)
    assert c["chosen"] == "tflite_int8" and c["backend"] == "litert"
    assert [r["format"] for r in c["candidates"]] == ["tflite_int8", "tflite_int8_ptq"]  # LiteRT INT8 only
    assert "QAT parent" in c["why"] and "88.8%" in c["why"] and "98.3%" in c["why"] and "0.871" in c["why"]
    results["tflite_int8_ptq"] = _row("float", 0.99, 0.95, 0.95)  # better on every validation figure: still QAT
    assert choose_int8(results)["chosen"] == "tflite_int8"
    results["tflite_int8"]["passed"] = False
    assert choose_int8(results) is None  # one file passed: nothing to choose; the runtime skips the failed one


def test_the_normal_vs_pneumonia_source_is_read_from_the_data_not_its_name():
    from convert.pipeline import _nih_auc

    r = {"val": {"by_source": {
        "nih_pneumonia_only": {"per_class": {"pneumonia": {"auc": 0.1, "support": 30}, "normal": {"support": 0}}},
        "clinic_a": {"per_class": {"pneumonia": {"auc": 0.77, "support": 20}, "normal": {"support": 25}}},
        "clinic_b": {"per_class": {"pneumonia": {"auc": 0.5, "support": 3}, "normal": {"support": 60}}}}}}
    assert _nih_auc(r) == 0.77  # the source with the most films of its rarer class
    del r["val"]["by_source"]["clinic_a"], r["val"]["by_source"]["clinic_b"]
    assert _nih_auc(r) != _nih_auc(r)  # NaN: no source holds both classes


def test_without_a_qat_file_accuracy_then_auc_decide_and_failed_or_lone_formats_are_not_a_choice():
    tie = {"tflite_int8": _row("float", 0.98, 0.86, 0.9), "tflite_int8_ptq": _row("float", 0.99, 0.88, 0.8)}
    c = choose_int8(tie)
    assert c["chosen"] == "tflite_int8_ptq" and "no QAT file" in c["why"]
    tie["tflite_int8"] = _row("float", 0.98, 0.88, 0.9)
    assert choose_int8(tie)["chosen"] == "tflite_int8"  # equal accuracy: the higher NIH AUC
    tie["tflite_int8"]["passed"] = False
    assert choose_int8(tie) is None
    assert choose_int8({"tflite_int8": _row("qat", 0.98, 0.88, 0.8)}) is None


def test_runtime_serves_the_preferred_int8_file_first(tmp_path):
    for key in ("tflite_int8", "tflite_int8_ptq", "tflite_fp32"):
        (tmp_path / f"model_{key}.tflite").write_bytes(key.encode())
    ModelMetadata(labels=("a", "b"), preprocess=PreprocessConfig(32), model_name="m", model_version="0").save(
        tmp_path / "metadata.json")
    status = {"validated": True, "formats": {}, "failed_formats": []}
    (tmp_path / "bundle.json").write_text(json.dumps(status))
    B.write_sums(tmp_path)
    assert B.resolve(tmp_path).key == "tflite_int8"  # no preference: the INT8 files by name
    (tmp_path / "bundle.json").write_text(json.dumps({**status, "preferred": {"litert": "tflite_int8_ptq"}}))
    B.write_sums(tmp_path)
    assert B.resolve(tmp_path).key == "tflite_int8_ptq"
    (tmp_path / "bundle.json").write_text(json.dumps({**status, "preferred": {"litert": "tflite_int8_ptq"},
                                                      "failed_formats": ["tflite_int8_ptq"]}))
    B.write_sums(tmp_path)
    assert B.resolve(tmp_path).key == "tflite_int8"  # a failed file is never preferred


def test_the_model_card_says_which_int8_file_is_served_and_why():
    from convert.card import model_card

    meta = ModelMetadata(labels=("normal", "pneumonia", "tuberculosis"), preprocess=PreprocessConfig(32),
                         model_name="m", model_version="0")
    results = {"tflite_int8": _row("qat", 0.888, 0.845, 0.837), "tflite_int8_ptq": _row("float", 0.983, 0.820, 0.871)}
    choice = choose_int8(results)
    card = model_card(meta, {"validated": True, "formats": results, "int8_choice": {"litert": choice}})
    assert f"Served first among the litert INT8 files: **tflite_int8**: {choice['why']}." in card
    assert "Served first" not in model_card(meta, {"validated": True, "formats": results})
