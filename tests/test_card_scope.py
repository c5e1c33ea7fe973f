"""The model card states what the data can show, computed from where each class came from."""
from convert.card import data_scope
from edge_runtime.metadata import ModelMetadata
from edge_runtime.preprocess import PreprocessConfig


def meta_with(by_source):
    metrics = {"test": {"by_source": {src: {"per_class": {c: {"support": n} for c, n in classes.items()}}
                                      for src, classes in by_source.items()}}}
    return ModelMetadata(labels=("normal", "pneumonia", "tuberculosis"), preprocess=PreprocessConfig(64), model_name="m",
                         model_version="1", metrics=metrics)


def test_a_class_from_its_own_source_is_called_confounded():
    text = "\n".join(data_scope(meta_with({"nih": {"normal": 5, "pneumonia": 4, "tuberculosis": 0},
                                           "tbx": {"normal": 0, "pneumonia": 0, "tuberculosis": 7}})))
    assert "Every **tuberculosis** image came from one source (`tbx`)" in text
    assert "upper bound" in text and "normal, pneumonia" in text
    assert "**normal**" not in text


def test_classes_sharing_sources_are_not_called_confounded():
    text = "\n".join(data_scope(meta_with({"a": {"normal": 5, "pneumonia": 4, "tuberculosis": 2},
                                           "b": {"normal": 3, "pneumonia": 0, "tuberculosis": 7}})))
    assert "Every **" not in text and "same origin" in text


def test_no_per_source_metrics_says_so():
    assert "do not say which source" in data_scope(meta_with({}))[0]


def test_the_card_says_whether_the_int8_files_come_from_qat():
    """review27b #9: a run trained without QAT had a card saying "trained with quantization-aware training:
    float32"; it now says its INT8 files are post-training quantised."""
    from dataclasses import replace

    from convert.card import model_card

    meta = meta_with({})
    status = {"validated": True, "formats": {}, "failed_formats": []}
    assert "no quantization-aware training" in model_card(replace(meta, quantization="float32"), status)
    qat = model_card(replace(meta, quantization="qat-int8"), status)
    assert "fine-tuned with quantization-aware training (QAT)" in qat and "no quantization-aware" not in qat
