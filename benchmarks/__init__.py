"""The benchmark: quality, calibration and speed of every format of a bundle, side by side, in one run.

``python -m benchmarks --bundle B | --run RUN_DIR [--data DIR] [--formats ...] [--threads 1,2] [--out DIR]``

- ``runner``: finds the bundle, the Keras baseline and the evaluation images; runs one worker subprocess per
  format (``worker``), collects the results and applies the gates;
- ``worker``: loads one artifact through ``edge_runtime`` (or the Keras model), measures load time,
  latency per thread count, the end-to-end path and peak memory, then predicts the evaluation images;
- ``quality``: the metrics of every format from ``edge_runtime.metrics`` (the one metrics module), the
  agreement with the float Keras model and the INT8 flags;
- ``report``: Markdown tables, CSV and JSON; ``plots``: confusion matrices, ROC, latency/accuracy chart;
- ``sysinfo``: the machine and the library versions.
"""
