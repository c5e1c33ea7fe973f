"""Kit self-test: classify the embedded sample images and compare with what the workstation recorded when
it built the kit (same bundle, same backend). Run by install.sh; run it again any time:

    /opt/cxr-edge/venv/bin/python /opt/cxr-edge/selftest/selftest.py \
        --bundle /opt/cxr-edge/bundle --expected /opt/cxr-edge/selftest/expected.json [--json out.json] [--strict]

Two checks per image (the rule is printed first; ``edge_runtime.kit_selftest.judge`` applies it):
- exact (LiteRT): the model run with LiteRT's portable reference kernels must reproduce the workstation's
  raw outputs (|diff| <= 1e-6). This proves the model file, the preprocessing and the runtime are right.
- production: the probabilities and decision from the runtime as the service runs it (optimised kernels)
  are compared with the workstation's (tolerance recorded in expected.json, 1e-3 by default). Optimised INT8
  kernels round differently on ARM and x86: when the exact check passes, a larger difference (or another
  decision) up to the drift limit recorded in expected.json (0.1 by default) is "kernel drift", accepted
  and reported; beyond it the install fails (this CPU does not run the validated model closely enough).
  A synthetic demo model records no limit: its drift is reported only. --strict accepts no drift. Without a
  reference (ONNX Runtime, OpenVINO) the production check decides alone.
Then the web page is started in-process (throw-away data folder) and must answer /healthz and /.
Exit 0 on success, 1 on a failed check.

The samples are real validation films for a model trained on real data, synthetic phantoms for a synthetic
demo model: either way the test checks the installation, not the model's accuracy.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path



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
    from edge_runtime.kit_selftest import EXACT, ReferenceKernels, judge, self_test_rule

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
    limit = expected.get("drift_limit")  # absent in kits built before the limit: drift reported only
    print(f"    {clf!r} loaded in {clf.load_ms:.0f} ms on {platform.machine()}, Python {platform.python_version()}")
    if expected.get("samples_text"):
        print(f"    samples: {expected['samples_text']}")
    rule = self_test_rule(ref is not None, tol, limit)
    print(f"    rule: {'no drift accepted (--strict); ' if args.strict else ''}{rule}")
    if ref is not None and expected.get("workstation_kernel_drift") is not None:
        print(f"    (on the workstation, optimised vs reference kernels: max |diff| "
              f"{expected['workstation_kernel_drift']:.3g})")
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
            exact_ok = bool(rdiff <= EXACT)
            note = f"reference |diff| {rdiff:.0e} ({'exact' if exact_ok else 'DIFFERENT'}), " + note
            if not exact_ok:
                failures.append(f"{name}: reference kernels give {raw}, the workstation {want['reference_raw']}")
        status = judge(diff, s.decision == want["decision"], exact_ok, tol, limit, args.strict)
        if status != "ok" and exact_ok is not False:
            what = (f"{name}: production probabilities {_fmt(got)} ({s.decision}) vs the workstation's "
                    f"{_fmt(want['probs'])} ({want['decision']}): |diff| {diff:.3f}"
                    + (f" > {tol:g}" if diff > tol else f", decision {s.decision} != {want['decision']}")
                    + (f" (beyond the drift limit {limit:g})" if limit is not None and diff > limit else ""))
            (drifted if status == "kernel drift" else failures).append(what)
        print(f"    {name}: {s.decision} ({got[s.label]:.3f}), {note}, {ms:.0f} ms  {status}")
    web = web_check(clf)
    if web:
        failures.append(web)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "backend": clf.backend,
                                         "max_abs_diff": worst, "max_reference_diff": worst_ref if ref else None,
                                         "samples": measured}, indent=2) + "\n")
    if drifted:
        within = f"within the accepted limit {limit:g}" if limit is not None else "not enforced (synthetic model)"
        print(f"WARNING: kernel drift: the optimised {clf.backend} kernels on this {platform.machine()} CPU give "
              f"probabilities up to {worst:.3f} away from the workstation's ({within}), while the reference "
              f"kernels agree exactly: the installation is right. Decisions near a threshold can differ from "
              f"the validated ones:\n  " + "\n  ".join(drifted))
    if failures:
        print("self-test FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    exact = f"reference kernels exact on {len(measured)} samples, " if ref else f"{len(measured)} samples, "
    drift = (f"optimised-kernel drift {worst:.3g} ({'within the tolerance' if worst <= tol else 'accepted'}, "
             f"limit {limit:g})" if ref and limit is not None else f"production max |diff| {worst:.1e} "
             f"({'within' if worst <= tol else 'BEYOND'} {tol:g})")
    print(f"self-test passed: {exact}{drift}")
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
