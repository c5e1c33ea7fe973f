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
  and reported; beyond it that artifact fails (this CPU does not run it closely enough to the validated one).
  A synthetic demo model records no limit: its drift is reported only. --strict accepts no drift. Without a
  reference (ONNX Runtime, OpenVINO) the production check decides alone.
A kit may hold several candidate artifacts of its backend (e.g. LiteRT INT8 and FP32): each is checked by
the same rule; one that fails the production check on this CPU is not served (a warning); one that does not
load or whose reference kernels differ fails the install (the installation itself is wrong), and so does a
self-test in which no candidate passes. The candidates that pass are timed here, interleaved, on the samples, and the
fastest is served (the bundle's first choice unless another is at least the recorded margin, 10%, faster);
--choice writes that choice, why, and every timing (install.sh passes it to the service as --format).
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
    ap.add_argument("--choice", type=Path, default=None,
                    help="write the artifact to serve (the fastest that passed) and every timing here (JSON)")
    ap.add_argument("--num-threads", type=int, default=None,
                    help="inference threads while timing, as the service will run (default: the backend's)")
    args = ap.parse_args(argv)

    from edge_runtime.kit_selftest import MARGIN, _model_input, choose_fastest, cpu_info, time_models

    expected = json.loads(args.expected.read_text())
    tol = args.tolerance if args.tolerance is not None else float(expected["tolerance"])
    limit = expected.get("drift_limit")  # absent in kits built before the limit: drift reported only
    # a kit of several candidate artifacts records each; an older kit, one (the top level)
    candidates = expected.get("candidates") or {expected.get("format") or expected["model"]: expected}
    if expected.get("samples_text"):
        print(f"    samples: {expected['samples_text']}")
    print(f"    candidates: {', '.join(candidates)}"
          + (f" (left out on the workstation: {', '.join(expected['excluded'])})" if expected.get("excluded") else ""))
    checked = {key: check(key, want, args, tol, say_rule=i == 0) for i, (key, want) in enumerate(candidates.items())}
    broken = [f for c in checked.values() if c["fatal"] for f in c["failures"]]
    passed = {key: c for key, c in checked.items() if not c["failures"]}
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.machine(), "candidates": {
            key: {"backend": c["backend"], "max_abs_diff": c["worst"], "max_reference_diff": c["worst_ref"],
                  "samples": c["measured"]} for key, c in checked.items()}}, indent=2) + "\n")
    for key, c in checked.items():
        if c["drifted"]:
            within = f"within the accepted limit {limit:g}" if limit is not None else "not enforced (synthetic model)"
            print(f"WARNING: kernel drift ({key}): the optimised {c['backend']} kernels on this {platform.machine()} "
                  f"CPU give probabilities up to {c['worst']:.3f} away from the workstation's ({within}), while the "
                  f"reference kernels agree exactly: the installation is right. Decisions near a threshold can "
                  f"differ from the validated ones:\n  " + "\n  ".join(c["drifted"]))
    if broken or not passed:
        failures = broken or [f for c in checked.values() for f in c["failures"]]
        print("self-test FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    for key in checked.keys() - passed.keys():
        print(f"WARNING: {key} is not served on this device: " + "; ".join(checked[key]["failures"]))

    # time every candidate that passed, on this CPU, as the service runs it; serve the fastest
    timing_clfs = {key: c["clf"] for key, c in passed.items()}
    if args.num_threads:
        from edge_runtime.classifier import Classifier

        timing_clfs = {key: Classifier.from_bundle(args.bundle, backend=c["backend"], fmt=c["format"],
                                                   num_threads=args.num_threads) for key, c in passed.items()}
    some = next(iter(timing_clfs.values()))
    inputs = [_model_input(some, args.expected.parent / "samples" / name) for name in list(expected["samples"])[:3]]
    timings = time_models({key: (lambda x, clf=clf: clf.predict(x)) for key, clf in timing_clfs.items()}, inputs)
    chosen, why = choose_fastest(timings, next(iter(candidates)), float(expected.get("margin", MARGIN)))
    for key, t in timings.items():
        print(f"    {key}: median {t['median_ms']:.1f} ms, p90 {t['p90_ms']:.1f} ms over {t['runs']} runs"
              + ("  <- served" if key == chosen else ""))
    clf = passed[chosen]["clf"]
    web = web_check(clf)
    if web:
        print("self-test FAILED:\n  " + web, file=sys.stderr)
        return 1
    if args.choice:
        args.choice.write_text(json.dumps({
            "format": clf.format, "model": clf.model_path.name, "backend": clf.backend,
            "reason": why, "timings_ms": timings, "num_threads": args.num_threads,
            "not_served": {key: checked[key]["failures"] for key in checked.keys() - passed.keys()},
            "left_out_on_workstation": expected.get("excluded", {}),
            "machine": platform.machine(), **cpu_info(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    c = passed[chosen]
    exact = f"reference kernels exact on {len(c['measured'])} samples, " if c["ref"] else f"{len(c['measured'])} samples, "
    drift = (f"optimised-kernel drift {c['worst']:.3g} ({'within the tolerance' if c['worst'] <= tol else 'accepted'}, "
             f"limit {limit:g})" if c["ref"] and limit is not None else f"production max |diff| {c['worst']:.1e} "
             f"({'within' if c['worst'] <= tol else 'BEYOND'} {tol:g})")
    print(f"self-test passed: {len(passed)} of {len(checked)} candidate(s); serving {chosen} ({why}); "
          f"{exact}{drift}")
    return 0


def check(key: str, want_all: dict, args, tol: float, say_rule: bool = True) -> dict:
    """One candidate artifact against the workstation's record: load it as the service will, then every
    sample by the rule (``edge_runtime.kit_selftest.judge``). ``fatal``: the installation itself is wrong (the
    artifact does not load, or the reference kernels differ), not merely this CPU's rounding."""
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier
    from edge_runtime.kit_selftest import EXACT, ReferenceKernels, judge, self_test_rule

    out = {"format": want_all.get("format"), "backend": want_all["backend"], "failures": [], "drifted": [],
           "measured": {}, "worst": 0.0, "worst_ref": None, "fatal": False, "ref": None, "clf": None}
    limit = want_all.get("drift_limit")
    try:
        clf = Classifier.from_bundle(args.bundle, backend=want_all["backend"], fmt=want_all.get("format"))
    except BundleError as exc:
        out["failures"].append(f"{key}: {exc}")
        out["fatal"] = True
        return out
    except Exception as exc:  # the backend cannot load the file here: the installation is wrong, say what
        out["failures"].append(f"{key}: the runtime cannot load it: {type(exc).__name__}: {exc}")
        out["fatal"] = True
        return out
    out["clf"] = clf
    if clf.model_path.name != want_all["model"]:
        out["failures"].append(f"{key}: the runtime chose {clf.model_path.name}, the kit was checked with "
                               f"{want_all['model']}")
        out["fatal"] = True
        return out
    wants_ref = any("reference_raw" in w for w in want_all["samples"].values())
    ref = out["ref"] = ReferenceKernels.available(clf) if wants_ref else None
    if wants_ref and ref is None:
        out["failures"].append(f"{key}: LiteRT's reference kernels are not available here")
        out["fatal"] = True
        return out
    print(f"    {clf!r} loaded in {clf.load_ms:.0f} ms on {platform.machine()}, Python {platform.python_version()}")
    if say_rule:  # the same for every candidate of the kit's backend
        rule = self_test_rule(ref is not None, tol, limit)
        print(f"    rule: {'no drift accepted (--strict); ' if args.strict else ''}{rule}")
    if ref is not None and want_all.get("workstation_kernel_drift") is not None:
        print(f"    (on the workstation, optimised vs reference kernels: max |diff| "
              f"{want_all['workstation_kernel_drift']:.3g})")
    worst, worst_ref = 0.0, 0.0
    for name, want in want_all["samples"].items():
        path = args.expected.parent / "samples" / name
        t0 = time.perf_counter()
        s = clf.classify(str(path))
        ms = (time.perf_counter() - t0) * 1000
        got = {k: float(v) for k, v in s.probs.items()}
        rec = out["measured"][name] = {"probs": got, "label": s.label, "decision": s.decision, "ms": round(ms, 2)}
        if set(got) != set(want["probs"]):
            out["failures"].append(f"{key} {name}: labels {sorted(got)} differ from the recorded {sorted(want['probs'])}")
            out["fatal"] = True
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
                out["failures"].append(f"{key} {name}: reference kernels give {raw}, the workstation "
                                       f"{want['reference_raw']}")
                out["fatal"] = True
        status = judge(diff, s.decision == want["decision"], exact_ok, tol, limit, args.strict)
        if status != "ok" and exact_ok is not False:
            what = (f"{key} {name}: production probabilities {_fmt(got)} ({s.decision}) vs the workstation's "
                    f"{_fmt(want['probs'])} ({want['decision']}): |diff| {diff:.3f}"
                    + (f" > {tol:g}" if diff > tol else f", decision {s.decision} != {want['decision']}")
                    + (f" (beyond the drift limit {limit:g})" if limit is not None and diff > limit else ""))
            (out["drifted"] if status == "kernel drift" else out["failures"]).append(what)
        print(f"    {name}: {s.decision} ({got[s.label]:.3f}), {note}, {ms:.0f} ms  {status}")
    out["worst"], out["worst_ref"] = worst, (worst_ref if ref is not None else None)
    return out


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
