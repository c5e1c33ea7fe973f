"""``make demo``: the main job on the embedded synthetic data, end to end, on a fresh machine.

1. generate the synthetic phantom data set (deterministic; SYNTHETIC, NOT FOR CLINICAL USE),
2. train a small MobileNetV2 (float warm-up, then QAT) with a patient-level split,
3. print test metrics pooled and per (synthetic) source, and the paths of what it made.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    from train.__main__ import print_summary, quiet_tensorflow, setup_logging

    quiet_tensorflow()
    from edge_runtime.cli_common import HonestDefaultsFormatter, add_version

    p = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__,
                                formatter_class=HonestDefaultsFormatter)
    add_version(p)
    p.add_argument("--out", default="runs/demo", help="folder for the data and the run")
    p.add_argument("--per-class", type=int, default=150, help="synthetic images per class")
    p.add_argument("--model", default="mobilenet_v2", help="architecture from the registry")
    p.add_argument("--alpha", type=float, default=0.35, help="width multiplier")
    p.add_argument("--image-size", type=int, default=64, help="input size in pixels")
    p.add_argument("--epochs", type=int, default=30, help="float epochs")
    p.add_argument("--qat-epochs", type=int, default=3, help="QAT epochs")
    p.add_argument("--seed", type=int, default=0, help="seed for data, split and training")
    p.add_argument("--augment", action="store_true",
                   help="augment (off by default: the phantoms already vary, and a tiny model learns them faster)")
    args = p.parse_args(argv)
    setup_logging()
    log = logging.getLogger("demo")

    from train import phantom
    from edge_runtime.preprocess import PreprocessConfig
    from train.train import TrainConfig, run

    t0 = time.time()
    out = Path(args.out)
    data_dir = out / "data"
    if (data_dir / "manifest.csv").is_file():
        log.info("[1/2] synthetic data already in %s", data_dir)
    else:
        log.info("[1/2] generating %d synthetic phantom radiographs per class in %s", args.per_class, data_dir)
        phantom.generate_dataset(data_dir, per_class=args.per_class, seed=args.seed)
    run_dir = out / "run"
    log.info("[2/2] training %s (alpha %s, %d px) -> %s", args.model, args.alpha, args.image_size, run_dir)
    cfg = TrainConfig(data=str(data_dir), out=str(run_dir), model=args.model, alpha=args.alpha,
                      preprocess=PreprocessConfig(args.image_size), epochs=args.epochs, qat_epochs=args.qat_epochs,
                      seed=args.seed, patience=10, verbose=0, synthetic=True, augment=args.augment, lr=3e-3,
                      site_augment=0.0,  # the phantoms have no site to generalise across
                      resume=(run_dir / "checkpoints" / "state.json").is_file())
    try:
        run(cfg)
    except ValueError as exc:  # bad data, or the folder holds a run that cannot be resumed: said, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(run_dir)
    print(f"\nDemo finished in {time.time() - t0:.0f} s. Synthetic data: {data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
