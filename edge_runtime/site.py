"""A site profile: one clinic's own thresholds (and optionally temperature), chosen on its own films.

    bundle/
      model_*.onnx, metadata.json, SHA256SUMS   (the model: never edited)
      site.json                                  (this file: made by ``python -m benchmarks.validate``)

``site.json`` is small, versioned JSON: who made it, when, from how many films of each class and which data,
the thresholds (and temperature) it sets, the bundle it was made for (model name, version, training-data hash,
artifact format) and a sha256 of its own content. ``Classifier.from_bundle`` reads it when present and replaces
the matching values of the artifact's ``OperatingPoint``, so the site profile is one more input to the same
decision (``edge_runtime.operating_point``). Removing the file restores the bundle's own values.

A profile that does not verify (changed by hand or corrupt, made for another model, a newer schema, values out of
range) is refused with :class:`SiteProfileError`, a ``BundleError``: the device does not serve with thresholds it
cannot trust, and it does not silently fall back either. The checksum detects corruption and hand edits; it is
not a signature (anyone who can write the folder can write a new profile, as they could replace the bundle).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_runtime.bundle import BundleError
from edge_runtime.operating_point import OperatingPoint

SITE_FILE = "site.json"
SCHEMA_VERSION = 1
BOUND_TO = ("model_name", "model_version", "data_hash")  # the bundle identity a profile is made for


class SiteProfileError(BundleError):
    """A site.json that cannot be trusted or does not belong to this bundle; the message says why."""


@dataclass(frozen=True)
class SiteProfile:
    thresholds: dict  # replaces these keys of the artifact's thresholds ({"tuberculosis": t, "refer_below": r})
    made_for: dict  # {"model_name", "model_version", "data_hash", "format"} of the bundle artifact
    made_by: str
    created: str  # ISO 8601 time
    films: dict  # {class: number of local films} the values were chosen on
    data: str  # what the local data was (folder, clinic, period)
    temperature: float | None = None  # None: keep the bundle's temperature
    evidence: dict = field(default_factory=dict)  # local figures at these values, with 95% intervals
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not isinstance(self.thresholds, dict) or not self.thresholds:
            raise SiteProfileError("a site profile must set at least one threshold")
        for k, v in self.thresholds.items():
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise SiteProfileError(f"site profile threshold {k!r} = {v!r} is not a number in [0, 1]")
        if self.temperature is not None and not (isinstance(self.temperature, (int, float))
                                                 and math.isfinite(self.temperature) and self.temperature > 0):
            raise SiteProfileError(f"site profile temperature {self.temperature!r} is not a positive number")
        if not self.made_by.strip():
            raise SiteProfileError("a site profile must say who made it (made_by)")
        missing = [k for k in BOUND_TO if k not in self.made_for]
        if missing:
            raise SiteProfileError(f"site profile lacks made_for keys {missing}")

    # --------------------------------------------------------------------------- file
    def content(self) -> dict:
        return asdict(self)

    def to_dict(self) -> dict:
        d = self.content()
        d["sha256"] = checksum(d)
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir():
            path = path / SITE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, d: dict, where: str = SITE_FILE) -> "SiteProfile":
        if not isinstance(d, dict):
            raise SiteProfileError(f"{where}: not a JSON object")
        version = d.get("schema_version")
        if not isinstance(version, int):
            raise SiteProfileError(f"{where}: no schema_version")
        if version > SCHEMA_VERSION:
            raise SiteProfileError(f"{where}: site profile schema {version} is newer than this runtime understands "
                                   f"({SCHEMA_VERSION}); update the runtime or remove {SITE_FILE}")
        stored = d.get("sha256")
        body = {k: v for k, v in d.items() if k != "sha256"}
        if stored != checksum(body):
            raise SiteProfileError(f"{where}: checksum mismatch (the profile was changed by hand or is corrupt); "
                                   f"make it again with `python -m benchmarks.validate --make-profile`, or remove it "
                                   f"to use the bundle's own thresholds")
        known = {"thresholds", "made_for", "made_by", "created", "films", "data", "temperature", "evidence",
                 "schema_version"}
        missing = sorted({"thresholds", "made_for", "made_by", "created", "films", "data"} - set(body))
        if missing:
            raise SiteProfileError(f"{where}: lacks {missing}")
        try:
            return cls(**{k: v for k, v in body.items() if k in known})
        except TypeError as exc:
            raise SiteProfileError(f"{where}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> "SiteProfile":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SiteProfileError(f"{path}: cannot read the site profile ({exc})") from exc
        return cls.from_dict(d, str(path))

    # --------------------------------------------------------------------------- use
    def check(self, metadata, format_key: str | None) -> None:
        """Refuse a profile made for another model, training data, artifact format or class list."""
        for k in BOUND_TO:
            if str(self.made_for.get(k, "")) != str(getattr(metadata, k)):
                raise SiteProfileError(
                    f"{SITE_FILE} was made for {k} {self.made_for.get(k)!r} but this bundle has "
                    f"{getattr(metadata, k)!r}: its thresholds do not apply to this model; make a new profile for "
                    f"this bundle or remove {SITE_FILE}")
        made = self.made_for.get("format")
        if made and format_key and made != format_key:
            raise SiteProfileError(
                f"{SITE_FILE} was chosen on the outputs of the {made} artifact but this device loads {format_key}; "
                f"ask for that backend, or make the profile with this artifact")
        unknown = sorted(set(self.thresholds) - set(metadata.labels) - {"refer_below"})
        if unknown:
            raise SiteProfileError(f"{SITE_FILE}: thresholds {unknown} are not classes of this model "
                                   f"{list(metadata.labels)} nor 'refer_below'")

    def apply(self, op: OperatingPoint) -> OperatingPoint:
        """The artifact's operating point with this profile's values in place of the bundle's."""
        temp = float(self.temperature) if self.temperature is not None else op.temperature
        return OperatingPoint(op.labels, temp, {**op.thresholds, **{k: float(v) for k, v in self.thresholds.items()}})

    def summary_fields(self) -> dict:
        """What :meth:`summary` says, as fields the web page words in the reader's language."""
        return {"made_by": self.made_by, "date": self.created[:10], "films": dict(self.films),
                "thresholds": {k: float(v) for k, v in sorted(self.thresholds.items())},
                "temperature": None if self.temperature is None else float(self.temperature)}

    def summary(self) -> str:
        films = ", ".join(f"{n} {c}" for c, n in self.films.items())
        vals = ", ".join(f"{k} {float(v):.3f}" for k, v in sorted(self.thresholds.items()))
        temp = f", temperature {self.temperature:.2f}" if self.temperature is not None else ""
        return f"site profile by {self.made_by} ({self.created[:10]}; {films}): {vals}{temp}"


def checksum(content: dict) -> str:
    """sha256 of the canonical JSON of a profile's content (every key but ``sha256``)."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def profile_path(model_or_bundle: str | Path) -> Path:
    """Where the profile of a bundle folder (or of a model file's folder) lives."""
    p = Path(model_or_bundle)
    return (p if p.is_dir() else p.parent) / SITE_FILE


def find(model_or_bundle: str | Path, metadata, format_key: str | None, path: str | Path | None = None
         ) -> SiteProfile | None:
    """The verified profile beside a bundle (or at ``path``: a device whose bundle is read-only keeps it in its
    data folder), or None when there is none; raises SiteProfileError."""
    path = Path(path) if path is not None else profile_path(model_or_bundle)
    if not path.exists():
        return None
    profile = SiteProfile.load(path)
    profile.check(metadata, format_key)
    return profile


def carry_over(bundle: str | Path, data_dir: str | Path, format_key: str | None = None) -> list[str]:
    """At install (the kit's install.sh): the device keeps its site profile in its data folder
    (``serve --site-profile DATA_DIR/site.json``), which outlives a bundle. A profile there that does not hold
    for the bundle now installed (another model, training data or artifact format) is set aside as
    ``site.json.previous`` (the service would refuse to start with it); a profile shipped inside the bundle is
    copied there when the device has none. Returns what was done, one line each."""
    from edge_runtime.metadata import ModelMetadata

    bundle, data_dir = Path(bundle), Path(data_dir)
    mine, shipped = data_dir / SITE_FILE, bundle / SITE_FILE
    meta = ModelMetadata.load(bundle / "metadata.json")
    said = []
    if mine.is_file():
        try:
            find(bundle, meta, format_key or None, mine)
            said.append(f"this device's site profile {mine} is kept: it was made for this model")
        except SiteProfileError as exc:
            aside = mine.with_name(SITE_FILE + ".previous")
            mine.replace(aside)
            said.append(f"this device's site profile does not hold for the bundle installed now, set aside as "
                        f"{aside}: {exc}")
    if shipped.is_file() and not mine.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        mine.write_bytes(shipped.read_bytes())
        said.append(f"the bundle's site profile is copied to {mine} (the page reads and writes it there)")
    return said
