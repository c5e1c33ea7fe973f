"""The model-selection study (``python -m benchmarks.study``): ``plan`` (recipes, candidates, controls),
``run`` (train, convert, resume), ``evaluate`` (every figure through the device runtime), ``report``
(MODEL_SELECTION.md and its plots)."""
