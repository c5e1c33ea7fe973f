"""``python -m benchmarks.orientation --data DIR``: how well the film-orientation check works on real films.

Fits ``edge_runtime.orientation`` on the training films of a patient-level split (as ``convert`` does), then
on the test films: the share of their turned / grey-inverted copies caught, the share of the films as they
are falsely flagged, and the false flags under each simulated site change (exposure, borders, markers,
noise: a film from another X-ray unit must not be called upside down). Prints a markdown table with the
command, commit, date and CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def run(data: str, image_size: int, seed: int) -> dict:
    from benchmarks.study.evaluate import SHIFTS
    from edge_runtime import orientation as O
    from edge_runtime.preprocess import PreprocessConfig, decode_image, prepare
    from train import data as D

    cfg = PreprocessConfig(image_size)
    parts = D.split_samples(D.scan(data, D.DEFAULT_CLASSES), 0.15, 0.15, seed)
    train = D.load_arrays(parts["train"], D.DEFAULT_CLASSES, cfg).images
    t0 = time.perf_counter()
    table = O.fit(train)
    fit_s = time.perf_counter() - t0
    films = [decode_image(s.path) for s in parts["test"]]
    test = np.stack([prepare(f, cfg) for f in films])
    res = {"n_train": len(train), "fit_seconds": round(fit_s, 1), "test": O.evaluate(test, table), "shift_false_flags": {}}
    for name, fn in SHIFTS.items():
        shifted = np.stack([prepare(fn(f, i), cfg) for i, f in enumerate(films)])
        res["shift_false_flags"][name] = float(((1 - O.probabilities(shifted, table)[:, 0]) > O.FLAG_ABOVE).mean())
    return res


def markdown(res: dict, command: str) -> str:
    from benchmarks.sysinfo import describe, machine_info

    t = res["test"]
    lines = [f"Film-orientation check on {t['n']} test films (fitted on {res['n_train']} training films in "
             f"{res['fit_seconds']} s); `{command}`; {describe(machine_info())}", "",
             "| view | share flagged |", "|---|---|", f"| as they are (false flags) | {t['false_flags']:.1%} |"]
    lines += [f"| {name} | {share:.1%} |" for name, share in t["caught"].items()]
    lines += ["", "| simulated site change (films upright) | false flags |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in res["shift_false_flags"].items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.orientation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/cxr-dev", help="labelled films (folder or manifest)")
    p.add_argument("--image-size", type=int, default=224, help="model input size the check sees")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not Path(args.data).exists():
        print(f"error: {args.data}: no such data folder or manifest", file=sys.stderr)
        return 2
    res = run(args.data, args.image_size, args.seed)
    print(markdown(res, "python -m benchmarks.orientation " + " ".join(argv if argv is not None else sys.argv[1:])))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
