"""Kit self-test: classify the embedded sample images and compare with what the workstation recorded when
it built the kit (same bundle, same backend). Run by install.sh; run it again any time:

    /opt/cxr-edge/venv/bin/python /opt/cxr-edge/selftest/selftest.py \
        --bundle /opt/cxr-edge/bundle --expected /opt/cxr-edge/selftest/expected.json [--json out.json] [--strict]

Two checks per image:
- exact (LiteRT): the model run with LiteRT's portable reference kernels must reproduce the workstation's
  raw outputs (|diff| <= 1e-6). This proves the model file, the preprocessing and the runtime are right.
- production: the probabilities and decision from the runtime as the service runs it (optimised kernels)
  are compared with the workstation's (tolerance recorded in expected.json, 1e-3 by default). Optimised INT8
  kernels round differently on ARM and x86, so when the exact check passes a larger difference (or another
  decision) is reported as "kernel drift", a WARNING about the model's sensitivity to rounding, not an
  installation fault (an error with --strict). Without a reference (ONNX Runtime, OpenVINO) the production
  check decides alone.
Then the web page is started in-process (throw-away data folder) and must answer /healthz and /.
Exit 0 on success, 1 on a failed check.

The samples are synthetic phantoms (SYNTHETIC, NOT FOR CLINICAL USE): the test checks the installation, not
the model's accuracy.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

EXACT = 1e-6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--expected", required=True, type=Path, help="expected.json written by the kit builder")
    ap.add_argument("--tolerance", type=float, default=None, help="override the recorded tolerance")
    ap.add_argument("--strict", action="store_true", help="kernel drift beyond the tolerance is an error")
    ap.add_argument("--json", type=Path, default=None, help="also write the measured probabilities here")
    args = ap.parse_args(argv)

    expected = json.loads(args.expected.read_text())
    tol = args.tolerance if args.tolerance is not None else float(expected["tolerance"])
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier
    from edge_runtime.kit import ReferenceKernels

    try:
        clf = Classifier.from_bundle(args.bundle, backend=expected["backend"])
    except BundleError as exc:
        print(f"self-test FAILED: {exc}", file=sys.stderr)
        return 1
    if clf.model_path.name != expected["model"]:
        print(f"self-test FAILED: the runtime chose {clf.model_path.name}, the kit was checked with "
              f"{expected['model']}", file=sys.stderr)
        return 1
    wants_ref = any("reference_raw" in w for w in expected["samples"].values())
    ref = ReferenceKernels.available(clf) if wants_ref else None
    if wants_ref and ref is None:
        print("self-test FAILED: LiteRT's reference kernels are not available here", file=sys.stderr)
        return 1
    print(f"    {clf!r} loaded in {clf.load_ms:.0f} ms on {platform.machine()}, Python {platform.python_version()}")
    failures, drifted, measured = [], [], {}
    worst = worst_ref = 0.0
    for name, want in expected["samples"].items():
        path = args.expected.parent / "samples" / name
        t0 = time.perf_counter()
        s = clf.classify(str(path))
        ms = (time.perf_counter() - t0) * 1000
        got = {k: float(v) for k, v in s.probs.items()}
        rec = measured[name] = {"probs": got, "label": s.label, "decision": s.decision, "ms": round(ms, 2)}
        if set(got) != set(want["probs"]):
            failures.append(f"{name}: labels {sorted(got)} differ from the recorded {sorted(want['probs'])}")
            continue
        diff = max(abs(got[k] - want["probs"][k]) for k in got)
        worst = max(worst, diff)
        note = f"production |diff| {diff:.1e}"
        exact_ok = None
        if ref is not None:
            raw = rec["reference_raw"] = ref.raw(path)
            rdiff = max(abs(a - b) for a, b in zip(raw, want["reference_raw"]))
            worst_ref = max(worst_ref, rdiff)
            exact_ok = rdiff <= EXACT
            note = f"reference |diff| {rdiff:.0e} ({'exact' if exact_ok else 'DIFFERENT'}), " + note
            if not exact_ok:
                failures.append(f"{name}: reference kernels give {raw}, the workstation {want['reference_raw']}")
        status = "ok"
        if diff > tol or s.decision != want["decision"]:
            what = (f"{name}: production probabilities {_fmt(got)} ({s.decision}) vs the workstation's "
                    f"{_fmt(want['probs'])} ({want['decision']}): |diff| {diff:.3f}"
                    + (f" > {tol:g}" if diff > tol else f", decision {s.decision} != {want['decision']}"))
            if exact_ok and not args.strict:
                drifted.append(what)
                status = "kernel drift"
            else:
                failures.append(what)
                status = "MISMATCH"
        elif exact_ok is False:
            status = "MISMATCH"
        print(f"    {name}: {s.decision} ({got[s.label]:.3f}), {note}, {ms:.0f} ms  {status}")
    web = web_check(clf)
    if web:
        failures.append(web)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "backend": clf.backend,
                                         "max_abs_diff": worst, "max_reference_diff": worst_ref if ref else None,
                                         "samples": measured}, indent=2) + "\n")
    if drifted:
        print(f"WARNING: the optimised {clf.backend} kernels on this {platform.machine()} CPU give probabilities "
              f"up to {worst:.3f} away from the workstation's, while the reference kernels agree exactly: the "
              f"installation is right, the INT8 model is sensitive to rounding. Decisions near a threshold can "
              f"differ from the validated ones:\n  " + "\n  ".join(drifted))
    if failures:
        print("self-test FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    exact = f"reference kernels exact on {len(measured)} samples; " if ref else ""
    print(f"self-test passed: {exact}{len(measured)} samples, production max |diff| {worst:.1e} "
          f"({'within' if worst <= tol else 'BEYOND'} {tol:g})")
    return 0


def web_check(clf) -> str | None:
    """Start the web page in-process (Flask test client, a throw-away data folder): /healthz and / answer.
    Catches what classification alone does not, e.g. templates or message files missing from the wheel."""
    import tempfile

    try:
        from edge_runtime.web.app import create_app
    except ImportError as exc:
        return f"the web page cannot be imported: {exc}"
    with tempfile.TemporaryDirectory(prefix="cxr-selftest-") as tmp:
        try:
            client = create_app(clf, tmp, {"HOST": "127.0.0.1"}).test_client()
            codes = {path: client.get(path).status_code for path in ("/healthz", "/")}
        except Exception as exc:  # report any failure of the page as a failed self-test
            return f"the web page does not start: {type(exc).__name__}: {exc}"
    bad = {p: c for p, c in codes.items() if c != 200}
    if bad:
        return f"the web page answers {bad} (expected 200)"
    print(f"    web page: {', '.join(f'GET {p} {c}' for p, c in codes.items())}")
    return None


def _fmt(probs: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.3f}" for k, v in probs.items()) + "}"


if __name__ == "__main__":
    sys.exit(main())
