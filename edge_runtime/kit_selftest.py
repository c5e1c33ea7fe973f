"""The kit's self-test, workstation side: what it demands of a model (``self_test_rule``, ``judge``), which
images it classifies (``choose_samples``) and the numbers it records (``expected_results``). The device side
is ``kit_files/selftest.py``, which applies the same rule with this module.

The rule: LiteRT's portable reference kernels must reproduce the workstation's outputs exactly (|diff| <=
``EXACT``): that proves the model file, the preprocessing and the runtime. The optimised kernels round
differently on each CPU: a probability drift up to ``DRIFT_LIMIT`` is accepted and reported; more fails the
install. A model trained on real data whose optimised kernels already drift more than the limit on the
workstation is refused when the kit is built (it is sensitive to rounding: ship its OpenVINO/ONNX artifact or
a robust model). A synthetic demo model is built anyway and its drift is only reported.

Which artifact the device serves: every artifact of the kit's backend that passed its parity check at
conversion is a candidate (``candidate_formats``; ``--formats`` narrows them). The workstation records each
candidate's expected results; on the device the self-test checks every candidate by the rule above, times the
ones that pass on that CPU (``time_models``, interleaved rounds) and serves the fastest (``choose_fastest``;
the bundle's own first choice unless another is at least ``MARGIN`` faster), writing the choice and the
timings to ``choice.json``. INT8 is not always the fastest (a first-generation Zen runs INT8 no faster than
FP32; LiteRT's INT8 hard-swish is slow): this measures it where it matters, on the device.

Samples: real validation films (``SAMPLES_PER_CLASS`` per class, from the training run's split.csv) for a
model trained on real data, the embedded phantoms for a synthetic one, or the images given with ``--sample``.
"""
from __future__ import annotations

import json
import logging
import os
import platform as _platform
from pathlib import Path

log = logging.getLogger(__name__)

KIT_FILES = Path(__file__).with_name("kit_files")


class KitError(RuntimeError):
    """The kit cannot be built as asked; the message says what is missing and for which target."""


# ----------------------------------------------------------------------------- the self-test's rule
EXACT = 1e-6  # reference kernels vs the workstation: the same bits (float32 round-off at most)
TOLERANCE = 1e-3  # production probabilities "match" within this (and must, without reference kernels)
# optimised-kernel drift of a probability accepted (and reported) on a device, and refused at build time when
# the workstation's own optimised and reference kernels differ more. Measured (issue 13, real cxr-dev models):
# MobileNetV2 1.0 QAT INT8 (the default candidate) drifts up to 0.054-0.058 between the two on x86 (6-18
# validation films) and 0.016-0.024 from x86 to aarch64; MobileNetV3-small INT8 (hard-swish) 0.07 on x86 and 0.117 on aarch64. 0.1 leaves a robust model
# about 2x headroom and refuses drift as large as the hard-swish model's on ARM.
DRIFT_LIMIT = 0.1
# LiteRT ops whose INT8 reference kernels were measured to differ between x86 and aarch64 (up to 0.05 on the
# cxr-dev MobileNetV3-small): with them the device cannot reproduce the workstation exactly, so the install
# cannot be proven; a real-data model containing them is refused.
NON_PORTABLE_OPS = ("HARD_SWISH",)
SAMPLES_PER_CLASS = 2  # real validation films per class in the self-test
# the device serves another candidate than the bundle's first choice only when it is at least this much
# faster (median inference time): a few percent is within the run-to-run noise of a small CPU
MARGIN = 0.10


def self_test_rule(reference: bool, tolerance: float, drift_limit: float | None) -> str:
    """What the self-test demands of the device and the model, in words (kit build and install output)."""
    if not reference:
        return (f"the probabilities must match the workstation's within {tolerance:g} on every sample "
                f"(no reference kernels with this backend)")
    drift = (f"a drift up to {drift_limit:g} is accepted and reported; an artifact that drifts more is not served, "
             f"and the install fails when no artifact is left; the kit builder leaves out an artifact whose "
             f"optimised kernels already drift more than {drift_limit:g} on the workstation (an INT8 model "
             f"sensitive to rounding: ship its FP32, OpenVINO or ONNX artifact, or a robust model)"
             if drift_limit is not None else
             "any drift is reported, not enforced (a synthetic demo model: its numbers mean nothing for a patient)")
    return (f"LiteRT's reference kernels must reproduce the workstation's outputs exactly (|diff| <= {EXACT:g}): "
            f"this proves the model file, the preprocessing and the runtime. Its optimised kernels round "
            f"differently on each CPU: {drift}")


def judge(diff: float, same_decision: bool, exact_ok: bool | None, tolerance: float,
          drift_limit: float | None, strict: bool = False) -> str:
    """One self-test sample: "ok", "kernel drift" (accepted, reported) or "MISMATCH" (the install fails).

    ``diff``: the largest |probability difference| of the production kernels vs the workstation;
    ``exact_ok``: the reference kernels reproduced the workstation (None: no reference with this backend);
    ``drift_limit``: None accepts any drift (synthetic demo models); ``strict``: no drift accepted."""
    if exact_ok is False:
        return "MISMATCH"
    if diff <= tolerance and same_decision:
        return "ok"
    if exact_ok is None or strict or (drift_limit is not None and diff > drift_limit):
        return "MISMATCH"
    return "kernel drift"


# ----------------------------------------------------------------------------- samples
def sample_images(samples: list[Path] | None = None) -> list[Path]:
    paths = list(samples) if samples else sorted((KIT_FILES / "samples").glob("*.png"))
    if not paths:
        raise KitError("no sample images for the self-test")
    for p in paths:
        if not Path(p).is_file():
            raise KitError(f"sample image {p}: no such file")
    names = [Path(p).name for p in paths]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise KitError(f"sample images must have distinct file names; repeated: {', '.join(dupes)}")
    return [Path(p) for p in paths]


def find_split(bundle: Path) -> Path | None:
    """The training run's split.csv for a bundle: beside the bundle's files, or in the run folder that
    bundle.json's ``run_dir`` names (absolute, or relative to the current folder or to a folder above the
    bundle: the converter records it as it was given)."""
    bundle = Path(bundle)
    if (bundle / "split.csv").is_file():
        return bundle / "split.csv"
    try:
        run_dir = json.loads((bundle / "bundle.json").read_text()).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return None
    if not run_dir:
        return None
    run_dir = Path(run_dir)
    bases = [Path()] if run_dir.is_absolute() else [Path.cwd(), *bundle.resolve().parents]
    for base in bases:
        if (base / run_dir / "split.csv").is_file():
            return base / run_dir / "split.csv"
    return None


def validation_films(split_csv: Path, labels: list[str], per_class: int = SAMPLES_PER_CLASS) -> list[Path]:
    """The first ``per_class`` readable validation films of each class, in the split file's order (paths are
    relative to the split file's folder). Never more than ``per_class`` x classes files."""
    import csv

    base = Path(split_csv).resolve().parent
    picked: dict[str, list[Path]] = {label: [] for label in labels}
    with open(split_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            got = picked.get(row.get("label", ""))
            if row.get("split") != "val" or got is None or len(got) >= per_class:
                continue
            path = Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]
            if path.is_file():
                got.append(Path(os.path.normpath(path)))
    if missing := [label for label, films in picked.items() if not films]:
        raise KitError(f"{split_csv}: no readable validation film of class {', '.join(missing)} for the self-test; "
                       f"pass real films with --sample")
    return [p for label in labels for p in picked[label]]


def choose_samples(bundle: Path, metadata, samples: list[Path] | None = None) -> tuple[list[Path], dict]:
    """The self-test's images and what they are: given (``--sample``), real validation films (a model trained
    on real data: a synthetic phantom means nothing to it), or the embedded phantoms (a synthetic model)."""
    if samples:
        paths = sample_images(samples)
        return paths, {"kind": "given", "from": None, "files": [p.name for p in paths]}
    if metadata.synthetic:
        paths = sample_images()
        return paths, {"kind": "phantoms", "from": None, "files": [p.name for p in paths]}
    split = find_split(bundle)
    if split is None:
        raise KitError(f"{bundle}: the model was trained on real data, so the self-test needs real films, and the "
                       f"training run's split.csv (bundle.json run_dir) is not found from here; pass "
                       f"{SAMPLES_PER_CLASS} validation films per class with --sample")
    paths = sample_images(validation_films(split, list(metadata.labels)))
    return paths, {"kind": "validation films", "from": str(split), "files": [p.name for p in paths]}


def describe_samples(info: dict) -> str:
    n = len(info["files"])
    if info["kind"] == "validation films":
        return f"{n} real validation films ({SAMPLES_PER_CLASS} per class, from {info['from']})"
    if info["kind"] == "phantoms":
        return f"{n} synthetic phantoms (they check the installation, not the model's accuracy)"
    return f"{n} images given with --sample"


class ReferenceKernels:
    """LiteRT's portable reference kernels (``OpResolverType.BUILTIN_REF``) for a Classifier's model.

    The optimised INT8 kernels (XNNPACK, ruy) round differently on x86 and on ARM, so INT8 probabilities are
    not bit-identical across CPUs (measured: 1 to 53 output steps of 1/256 on small MobileNetV2 models, see
    firmware_notes/). The reference kernels are plain C++ and give the same bits on every CPU: comparing
    them with the workstation's proves the installation (model file, preprocessing, runtime) exactly.
    Uses the Classifier's own preprocessing and the backend's own input/output handling.
    """

    def __init__(self, clf):
        from edge_runtime.classifier import Classifier

        self.clf = clf
        # the same artifact, metadata and input handling, on another interpreter with the reference kernels
        self.ref = Classifier.from_bundle(clf.model_path, verify=False, reference_kernels=True)

    @classmethod
    def available(cls, clf) -> "ReferenceKernels | None":
        if clf.backend != "litert":
            return None
        try:
            return cls(clf)
        except (ImportError, AttributeError, ValueError, RuntimeError):
            return None

    def raw(self, path: Path) -> list[float]:
        """The model's raw outputs (before temperature scaling) for one image file."""
        return [float(v) for v in self.ref.predict(_model_input(self.clf, path))[0]]

    def probs(self, path: Path) -> dict[str, float]:
        """The reference kernels' probabilities as the service shows them (calibrated), for one image file."""
        return {k: float(v) for k, v in self.ref.classify(str(path)).probs.items()}


def candidate_formats(bundle: Path, backend: str, formats: list[str] | None = None) -> list[str]:
    """The format keys the device may serve with ``backend``: the bundle's artifacts for it that passed their
    parity check at conversion, the bundle's own first choice first (``bundle.resolve``). Of its INT8 files only
    that first choice competes (convert chose it on accuracy, ``convert.pipeline.choose_int8``: the QAT file
    over the post-training one); speed picks between INT8 and FP32, never an INT8 file conversion passed over.
    ``formats`` narrows them, or names another INT8 file on purpose (an unknown one, another backend's or a
    failed one is an error)."""
    from edge_runtime import formats as F
    from edge_runtime.bundle import BundleError, artifacts, read_status, resolve

    bundle = Path(bundle)
    try:
        first = resolve(bundle, backend, verify=False).key
    except BundleError as exc:
        raise KitError(f"the bundle cannot be used with backend {backend}: {exc}") from exc
    status = read_status(bundle)
    failed = set(status.get("failed_formats", []))
    mine = [k for k, f in artifacts(bundle, status) if k and F.backend_of(f) == backend]
    if formats:
        for k in formats:
            if k not in mine:
                raise KitError(f"--formats {k}: the bundle holds no {backend} artifact {k} "
                               f"(it holds {', '.join(mine) or 'none'})")
            if k in failed:
                raise KitError(f"--formats {k}: it failed its parity check at conversion (bundle.json)")
        keys = list(dict.fromkeys(formats))
    else:
        def int8(k):
            return bool((spec := F.FORMATS.get(k)) and spec.int8)
        keys = [k for k in mine if k not in failed and (k == first or not int8(k))]
    if first in keys:
        keys.remove(first)
        keys.insert(0, first)
    if not keys:
        raise KitError(f"the bundle has no {backend} artifact that passed its parity check at conversion")
    return keys


def expected_candidates(bundle: Path, backend: str, samples: list[Path], formats: list[str] | None = None,
                        tolerance: float = TOLERANCE, drift_limit: float | None = DRIFT_LIMIT,
                        samples_info: dict | None = None) -> dict:
    """``expected_results`` for every candidate artifact (``candidate_formats``). A candidate the rule refuses
    here (kernel drift beyond the limit, non-portable ops) is left out and the reason kept; if every candidate
    is refused, the first refusal is raised. The first admitted candidate's results are also the top level
    (what a kit of one artifact records; older self-tests read only that)."""
    keys = candidate_formats(bundle, backend, formats)
    admitted, excluded, first_error = {}, {}, None
    for k in keys:
        log.info("self-test expectations for %s (%d/%d)", k, len(admitted) + len(excluded) + 1, len(keys))
        try:
            admitted[k] = expected_results(bundle, backend, samples, tolerance, drift_limit, samples_info, fmt=k)
        except KitError as exc:
            if len(keys) == 1:
                raise
            first_error = first_error or exc
            excluded[k] = str(exc)
            log.warning("candidate %s left out of the kit: %s", k, exc)
    if not admitted:
        raise first_error
    top = dict(next(iter(admitted.values())))
    top.update({"candidates": admitted, "excluded": excluded, "margin": MARGIN})
    return top


def time_models(models: dict, inputs: list, rounds: int = 12, budget_s: float = 6.0, warmup: int = 2) -> dict:
    """Median and 90th-percentile inference time (ms) of each model on the same inputs: ``models`` maps a
    name to a callable taking one prepared input. Rounds are interleaved (every model once per input, then
    the next round) so that a CPU's clock changes touch them all alike; fewer rounds when ``budget_s`` runs out
    (at least 3)."""
    import time

    import numpy as np

    if not models or not inputs:
        raise ValueError("time_models needs at least one model and one input")
    for fn in models.values():
        for x in inputs[:warmup] or inputs:
            fn(x)
    times = {name: [] for name in models}
    t_start = time.perf_counter()
    for r in range(rounds):
        for name, fn in models.items():
            for x in inputs:
                t0 = time.perf_counter()
                fn(x)
                times[name].append((time.perf_counter() - t0) * 1000)
        if r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return {name: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
            for name, t in times.items()}


def cpuinfo() -> dict[str, str]:
    """The fields of /proc/cpuinfo, names lower-cased (one CPU's values; empty where it cannot be read)."""
    try:
        lines = [ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().splitlines() if ":" in ln]
    except OSError:
        return {}
    return {k.strip().lower(): v.strip() for k, v in lines}


def cpu_info() -> dict:
    """The CPU's model name and the instruction-set features INT8 speed hangs on (recorded beside every
    timing: absolute times do not carry across CPUs; a CPU without VNNI/dot-product runs INT8 no faster)."""
    fields = cpuinfo()
    # x86: "model name"; Raspberry Pi and Jetson kernels: "model" (the board) or "hardware"
    name = next((fields[k] for k in ("model name", "model", "hardware") if fields.get(k)), _platform.machine())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm")
    return {"processor": name, "int8_features": [f for f in wanted if f in flags], "cores": os.cpu_count()}


def choose_fastest(timings: dict, first: str, margin: float = MARGIN) -> tuple[str, str]:
    """(the format to serve, why) from ``time_models``' result over the candidates that passed: the fastest,
    unless it is less than ``margin`` faster than the bundle's first choice ``first`` (then ``first``). A
    ``first`` that did not pass (absent from ``timings``) leaves the fastest of the others."""
    if not timings:
        raise ValueError("no candidate to choose from")
    fastest = min(timings, key=lambda k: timings[k]["median_ms"])
    if first not in timings:
        return fastest, f"fastest of the artifacts that passed ({first}, the bundle's first choice, did not)"
    t_first, t_fast = timings[first]["median_ms"], timings[fastest]["median_ms"]
    if fastest == first:
        return first, "the bundle's first choice, and the fastest here"
    if t_fast <= (1 - margin) * t_first:
        return fastest, (f"{t_fast:.1f} ms against {t_first:.1f} ms for {first} (the bundle's first choice): "
                         f"{100 * (1 - t_fast / t_first):.0f}% faster on this CPU")
    return first, (f"the bundle's first choice: {fastest} ({t_fast:.1f} ms against {t_first:.1f} ms) is less than "
                   f"{100 * margin:.0f}% faster here")


def expected_results(bundle: Path, backend: str, samples: list[Path], tolerance: float = TOLERANCE,
                     drift_limit: float | None = DRIFT_LIMIT, samples_info: dict | None = None,
                     fmt: str | None = None) -> dict:
    """Classify the samples here, with the backend the device will use: the numbers the self-test compares.

    ``probs``: the production kernels' probabilities; ``reference_raw`` (LiteRT): the portable reference
    kernels' raw outputs, which the device must reproduce exactly. ``workstation_kernel_drift``: the largest
    |probability difference| between the optimised and the reference kernels here; above ``drift_limit``
    the model is refused (a real-data model; a synthetic one is only warned about, and its drift is not
    enforced on the device).
    """
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier

    try:
        clf = Classifier.from_bundle(bundle, backend=backend, fmt=fmt)
    except BundleError as exc:
        raise KitError(f"the bundle cannot be used with backend {backend}: {exc}") from exc
    ref = ReferenceKernels.available(clf)
    synthetic = bool(clf.metadata.synthetic)
    if ref and (bad := non_portable_ops(clf)):
        why = (f"{clf.model_path.name} contains {', '.join(bad)}: LiteRT's reference kernels for it give other "
               f"results on aarch64 than on x86 (measured up to 0.05 on MobileNetV3-small INT8), so the device "
               f"cannot reproduce this workstation exactly and the install cannot be proven")
        if not synthetic:
            raise KitError(f"{why}. Refused: ship its OpenVINO or ONNX artifact (--backend openvino or "
                           f"onnxruntime) or a model without it (e.g. MobileNetV2 INT8)")
        log.warning("%s (a synthetic demo model: built anyway)", why)
    results, drift = {}, 0.0
    for p in samples:
        s = clf.classify(str(p))
        probs = {k: float(v) for k, v in s.probs.items()}
        results[p.name] = {"probs": probs, "label": s.label, "decision": s.decision}
        if ref:
            results[p.name]["reference_raw"] = ref.raw(p)
            ref_probs = ref.probs(p)
            drift = max(drift, max(abs(probs[k] - ref_probs[k]) for k in probs))
    enforced = drift_limit if ref and not synthetic else None
    if ref and drift_limit is not None and drift > drift_limit:
        why = (f"{clf.model_path.name}: on this {_platform.machine()} workstation LiteRT's optimised INT8 kernels "
               f"and its reference kernels give probabilities up to {drift:.3f} apart on the self-test images "
               f"(limit {drift_limit:g}): this model is sensitive to rounding, and a device's CPU would move its "
               f"probabilities by as much or more away from the validated ones")
        if not synthetic:
            raise KitError(f"{why}. Refused: ship its OpenVINO or ONNX artifact (--backend openvino or "
                           f"onnxruntime) or a model robust to rounding (e.g. MobileNetV2 INT8), or accept the "
                           f"drift knowingly with --drift-limit")
        log.warning("%s (a synthetic demo model: built anyway, drift not enforced on the device)", why)
    return {"backend": backend, "model": clf.model_path.name, "format": getattr(clf, "format", None),
            "labels": list(clf.metadata.labels),
            "exact": EXACT, "tolerance": tolerance, "drift_limit": enforced, "synthetic": synthetic,
            "rule": self_test_rule(ref is not None, tolerance, enforced),
            "samples_kind": (samples_info or {}).get("kind"),
            "samples_text": describe_samples(samples_info) if samples_info else None,
            "recorded_on": f"{_platform.machine()} {_platform.python_version()}",
            "workstation_kernel_drift": drift if ref else None, "samples": results}


def non_portable_ops(clf) -> list[str]:
    """The ``NON_PORTABLE_OPS`` in a LiteRT Classifier's model (empty when the interpreter cannot say)."""
    interp = getattr(getattr(clf, "_backend", None), "interp", None)
    try:
        ops = {o["op_name"] for o in interp._get_ops_details()}
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError):
        return []
    return sorted(ops & set(NON_PORTABLE_OPS))


def _model_input(clf, path: Path):
    from edge_runtime.preprocess import decode_image, prepare

    return prepare(decode_image(str(path), Path(path).name), clf.metadata.preprocess)
