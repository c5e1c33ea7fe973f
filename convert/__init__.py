"""Conversion of a trained run into device artifacts (TFLite, OpenVINO IR, ONNX) and a model bundle."""
