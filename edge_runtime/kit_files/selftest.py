"""Kit self-test: classify the embedded sample images and compare with the probabilities the workstation
recorded when it built the kit (same bundle, same backend). Exit 0 when every probability is within the
tolerance, 1 otherwise. Run by install.sh; run it again any time:

    /opt/cxr-edge/venv/bin/python /opt/cxr-edge/selftest/selftest.py \
        --bundle /opt/cxr-edge/bundle --expected /opt/cxr-edge/selftest/expected.json [--json out.json]

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--expected", required=True, type=Path, help="expected.json written by the kit builder")
    ap.add_argument("--tolerance", type=float, default=None, help="override the recorded tolerance")
    ap.add_argument("--json", type=Path, default=None, help="also write the measured probabilities here")
    args = ap.parse_args(argv)

    expected = json.loads(args.expected.read_text())
    tol = args.tolerance if args.tolerance is not None else float(expected["tolerance"])
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier

    try:
        clf = Classifier(args.bundle, backend=expected["backend"])
    except BundleError as exc:
        print(f"self-test FAILED: {exc}", file=sys.stderr)
        return 1
    if clf.model_path.name != expected["model"]:
        print(f"self-test FAILED: the runtime chose {clf.model_path.name}, the kit was checked with "
              f"{expected['model']}", file=sys.stderr)
        return 1
    print(f"    {clf!r} loaded in {clf.load_ms:.0f} ms on {platform.machine()}, Python {platform.python_version()}")
    failures, measured, worst = [], {}, 0.0
    for name, want in expected["samples"].items():
        path = args.expected.parent / "samples" / name
        t0 = time.perf_counter()
        s = clf.classify(str(path))
        ms = (time.perf_counter() - t0) * 1000
        got = {k: float(v) for k, v in s.probs.items()}
        measured[name] = {"probs": got, "label": s.label, "decision": s.decision, "ms": round(ms, 2)}
        if set(got) != set(want["probs"]):
            failures.append(f"{name}: labels {sorted(got)} differ from the recorded {sorted(want['probs'])}")
            continue
        diff = max(abs(got[k] - want["probs"][k]) for k in got)
        worst = max(worst, diff)
        ok = diff <= tol and s.label == want["label"]
        print(f"    {name}: {s.label} ({got[s.label]:.3f}), max |diff| {diff:.1e}, {ms:.1f} ms  "
              f"{'ok' if ok else 'MISMATCH'}")
        if not ok:
            failures.append(f"{name}: got {got} ({s.label}), recorded {want['probs']} ({want['label']}); "
                            f"max |diff| {diff:.2e} > {tol:g}" if diff > tol else f"{name}: label {s.label} != "
                            f"{want['label']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "backend": clf.backend,
                                         "max_abs_diff": worst, "samples": measured}, indent=2) + "\n")
    if failures:
        print("self-test FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print(f"self-test passed: {len(measured)} samples, max |diff| {worst:.1e} <= {tol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
