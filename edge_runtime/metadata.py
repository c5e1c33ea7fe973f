"""Model metadata: written into every artifact by training/conversion, read back by the runtime.

The preprocessing settings travel as one nested ``PreprocessConfig`` (``metadata.preprocess``): the model was
trained with them, so the runtime takes them from the metadata only and nothing overrides them. Schema 1
(before 2026-12-01) stored the same fields flat at the top level; ``from_dict`` still reads it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from edge_runtime import views as V
from edge_runtime.operating_point import OperatingPoint
from edge_runtime.preprocess import PreprocessConfig

SCHEMA_VERSION = 3  # 3: test-time views; 2: preprocessing nested under "preprocess" (1: flat)
# a file is written with the lowest schema that describes it: one view (as every bundle before views) stays 2, so
# older runtimes keep reading it; views need 3, which older runtimes refuse rather than ignore (their thresholds
# were fitted on the views' average, not on one view)
SYNTHETIC_WARNING = "SYNTHETIC DATA - NOT FOR CLINICAL USE"


@dataclass(frozen=True)
class ModelMetadata:
    labels: tuple[str, ...]
    preprocess: PreprocessConfig
    model_name: str
    model_version: str
    channels: int = 1
    input_range: tuple[float, float] = (0.0, 255.0)  # the model takes raw uint8-range pixels
    data_hash: str = ""
    data_sources: tuple[str, ...] = ()
    synthetic: bool = False
    quantization: str = "float32"  # or "qat-int8" / "int8" for what the artifact holds
    thresholds: dict = field(default_factory=dict)  # per-class decision thresholds from validation
    metrics: dict = field(default_factory=dict)  # pooled and per-source validation/test metrics
    split: dict = field(default_factory=dict)  # how the patient-level split was made
    created: str = ""
    temperature: float = 1.0  # temperature scaling fitted on validation (1.0 = none)
    head: dict = field(default_factory=dict)  # per parent model: {"weights": DxK, "cam_scale": [K]} for the heatmap
    scope: dict = field(default_factory=dict)  # per parent model: embedding statistics of the training images
    orientation: dict = field(default_factory=dict)  # the film-orientation check (edge_runtime.orientation)
    # per artifact (format key, e.g. "onnx_int8"): {"temperature", "thresholds", "operating_point"} fitted on
    # that artifact's own validation outputs; the top-level temperature/thresholds are the deployed Keras parent's
    calibration: dict = field(default_factory=dict)
    # the deployed parent's calibrated scores and decisions on the validation films (edge_runtime.reference);
    # each calibration entry carries its artifact's own under "reference". Empty in bundles made before it.
    reference: dict = field(default_factory=dict)
    # test-time views (edge_runtime.views) whose averaged probabilities the temperature and thresholds were fitted
    # on; ("id",): the film as it is, once
    views: tuple[str, ...] = V.NONE
    # an ensemble (python -m convert RUN --member RUN2): one entry per training whose probabilities the model
    # file averages ({"run_dir", "model_name", "model_version", "seed", "init_seed", "qat", "options": what its
    # training options add to the first's, train.recipe.member_options, absent before 2026-12-05}); the heatmap and
    # the input check read the first member's feature map. Empty: one training. A runtime that does not know
    # this key still serves the file correctly (it is one model with one output), so the schema stays.
    members: tuple = ()
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if len(self.labels) < 2:
            raise ValueError(f"metadata needs at least 2 labels, got {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in metadata: {list(self.labels)}")
        if tuple(self.views) != V.parse(tuple(self.views)):
            raise ValueError(f"metadata views {list(self.views)}: the film as it is ('id') comes first, once")
        if not isinstance(self.preprocess, PreprocessConfig):
            raise TypeError(f"metadata.preprocess must be a PreprocessConfig, not {type(self.preprocess).__name__}")

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    def for_format(self, key: str | None) -> "ModelMetadata":
        """This metadata with the temperature, thresholds, operating-point report and reference score summary
        (none when the entry has none: another artifact's would not match these thresholds) of one artifact.

        Each converted artifact (an INT8 file quantised from the float model, say) gives slightly different
        probabilities from the Keras model the bundle-level figures were fitted on, so convert calibrates
        every artifact on its own validation outputs. Unknown keys keep the bundle-level values."""
        entry = (self.calibration or {}).get(key or "")
        if not entry:
            return self
        op = entry.get("operating_point")
        return replace(self, temperature=float(entry["temperature"]), thresholds=dict(entry["thresholds"]),
                       reference=dict(entry.get("reference") or {}),
                       metrics={**self.metrics, "operating_point": op} if op else self.metrics)

    @property
    def operating_point(self) -> OperatingPoint:
        """Temperature and thresholds (of one artifact after ``for_format``) for the decision rule."""
        return OperatingPoint(self.labels, float(self.temperature), dict(self.thresholds))

    @property
    def refer_share(self) -> float | None:
        """The share of validation films not flagged TB that the refer threshold was fitted to refer (``convert
        --refer-share``), None when it was fitted the older way (the lowest threshold at which the films kept reach
        90% accuracy). A site profile fits its refer threshold by the same rule (``site_eval.propose``)."""
        share = ((self.metrics or {}).get("operating_point") or {}).get("refer", {}).get("target_share")
        return None if share is None else float(share)

    @property
    def warning(self) -> str:
        return SYNTHETIC_WARNING if self.synthetic else ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schema_version"] = SCHEMA_VERSION if tuple(self.views) != V.NONE else 2
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        flat = [f.name for f in fields(PreprocessConfig)]
        if "preprocess" in d and (mixed := [k for k in flat if k in d]):
            raise ValueError(f"metadata has both flat ({', '.join(mixed)}) and nested preprocessing settings; "
                             "which one the model was trained with is unknown")
        if "preprocess" not in d and "image_size" in d:  # schema 1: the preprocessing fields at the top level
            d = {**{k: v for k, v in d.items() if k not in flat},
                 "preprocess": {k: d[k] for k in flat if k in d}}
        missing = [k for k in ("labels", "preprocess", "model_name", "model_version") if k not in d]
        if missing:
            raise ValueError(f"metadata lacks required keys: {', '.join(missing)}")
        if int(d.get("schema_version", 1)) > SCHEMA_VERSION:
            raise ValueError(f"metadata schema {d['schema_version']} is newer than this runtime understands "
                             f"({SCHEMA_VERSION}); update the runtime")
        kw = {k: v for k, v in d.items() if k in known}
        pre = d["preprocess"]
        if not isinstance(pre, dict) or "image_size" not in pre:
            raise ValueError("metadata.preprocess must be an object with at least image_size")
        kw["preprocess"] = PreprocessConfig(**{k: v for k, v in pre.items() if k in flat})
        kw["schema_version"] = SCHEMA_VERSION  # read into the current schema
        kw["labels"] = tuple(kw["labels"])
        kw["data_sources"] = tuple(kw.get("data_sources", ()))
        kw["input_range"] = tuple(kw.get("input_range", (0.0, 255.0)))
        kw["members"] = tuple(kw.get("members") or ())
        kw["views"] = V.parse(kw.get("views"))  # a view this runtime does not know: refused, not ignored
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "ModelMetadata":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read metadata ({exc})") from exc
