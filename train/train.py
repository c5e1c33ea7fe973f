"""Training: float warm-up, then quantization-aware fine-tuning, with early stopping on validation
macro-AUC, checkpoints and resume. ``run(TrainConfig)`` returns the run folder:

    run_dir/model_float.keras   the float model (best validation macro-AUC)
    run_dir/model_qat.h5        the QAT model (fake-quant graph; HDF5, since tfmot layers do not
                                reload from .keras; load with train.keras_io.load_model)
    run_dir/split.csv           the patient-level split, reused by later steps
    run_dir/metadata.json       labels, input size, preprocessing, data hash, thresholds, metrics
    run_dir/metrics.json        test (and validation) metrics, pooled and per source, both models
    run_dir/plots/*.png         confusion matrices and ROC curves
    run_dir/history.csv         one row per epoch
    run_dir/checkpoints/        last and best weights per phase, for --resume
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge_runtime import metrics as M
from edge_runtime.cli_common import rate_text
from edge_runtime.metadata import ModelMetadata
from edge_runtime.preprocess import PreprocessConfig
from train import data as D
from train import qat
from train.keras_io import predict
from train.models import AUTO, resolve_start

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One training's options. The defaults are recipes/default.toml's top level (tests/test_recipe.py checks it), with
    ``weights`` and ``head_epochs`` "auto" resolved by :func:`resolve_start` when the config is made."""
    data: str
    out: str = "runs/run"
    model: str = "efficientnet_lite0"
    alpha: float | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)  # input size, resize, harmonisation
    classes: tuple[str, ...] = D.DEFAULT_CLASSES
    weights: str | None = AUTO  # "auto", None/"none" (random initialisation), "imagenet" or a file
    epochs: int = 20  # float epochs (at most; early stopping may end sooner)
    qat_epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-4
    qat_lr: float = 1e-4
    patience: int = 6
    min_epochs: int = 0  # float epochs before validation may keep a best or stop early (0: from the first)
    head_epochs: int | str = AUTO  # epochs before the float phase that train the classifier head alone (backbone
    #                                frozen); "auto": PROBE_EPOCHS with a pretrained start, else 0
    head_lr: float = 1e-3  # peak learning rate of those head epochs (cosine decay)
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0  # the patient split's seed (and, unless init_seed is set, initialisation and augmentation)
    init_seed: int | None = None  # initialisation, shuffling and augmentation seed (None: seed); an ensemble's
    #                               members share one split (seed) and differ here
    augment: bool = True
    site_augment: float = 0.5  # probability of each site-style change (train.site); 0 = off
    class_balance: bool = True
    dropout: float = 0.2
    stem: str = "rgb"  # models.STEMS: the grey film copied to three channels, or read as one
    ema: float = 0.0  # decay of an exponential moving average of the float phase's weights (0 = off; e.g. 0.99)
    label_smoothing: float = 0.0  # targets (1 - e) x label + e / K (0 = off)
    mixup: float = 0.0  # Beta(a, a) blending of each training batch with a shuffled copy of itself (0 = off)
    teachers: tuple[str, ...] = ()  # run folders on the same split whose mean probabilities are soft targets
    distill_weight: float = 0.5  # share of the teacher in each target (train.distill.soft_targets)
    distill_temperature: float = 2.0  # temperature that softens the teachers' probabilities
    split: str | None = None  # reuse a saved split.csv
    folds: int = 0  # > 1: patient-grouped k-fold cross-validation (train.data.fold_split); test_frac unused
    fold: int = 0  # which fold is the test side (0 .. folds - 1)
    resume: bool = False
    redo_qat: bool = False  # keep the run's model_float.keras and split; redo only the QAT phase
    synthetic: bool | None = None  # None: read from the data folder (README/manifest says SYNTHETIC)
    deterministic: bool = False  # bit-exact reruns (tf op determinism); slower on CPU
    model_version: str = ""
    verbose: int = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.weights, self.head_epochs = resolve_start(self.model, self.weights, self.head_epochs)

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @property
    def run_seed(self) -> int:
        """The seed of initialisation, shuffling and augmentation (``init_seed``, else the split's ``seed``)."""
        return self.seed if self.init_seed is None else self.init_seed


def select_strategy():
    """Use every GPU of a workstation (MirroredStrategy), one GPU, or the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        log.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    if gpus:
        log.info("training on one GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    log.info("training on the CPU")
    return tf.distribute.get_strategy()


def make_dataset(arrays: D.Arrays, batch_size: int, training: bool, seed: int, augment: bool = True,
                 site=None, targets: np.ndarray | None = None, mixup: float = 0.0):
    """One tf.data pipeline with an ``is_training`` flag: shuffle + radiograph-safe augmentation when training.

    Augmentation: small rotation (+-5 deg), shift (5%), zoom (10%), brightness and contrast; no flips
    (a mirrored chest shows anatomy that does not exist). ``site``: a ``train.site.batch_function`` that
    site-augments and finishes (equalises) the batch first; ``arrays`` then hold un-equalised films.
    ``targets``: (N, K) soft targets (distillation, label smoothing) in place of the integer labels.
    ``mixup`` > 0 (needs ``targets``): after augmentation, film i of a batch becomes l x film i + (1 - l) x film
    p(i) of a shuffled order p, and its target likewise, l ~ Beta(mixup, mixup) per film.
    """
    import tensorflow as tf
    import tf_keras

    x = arrays.images[..., None]
    ds = tf.data.Dataset.from_tensor_slices((x, arrays.labels if targets is None else targets))
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b))
    if training and site is not None:
        def _site(a, b):
            y = tf.numpy_function(site, [a], tf.float32, stateful=True)
            return tf.ensure_shape(y, [None, *x.shape[1:]]), b
        ds = ds.map(_site)  # one call at a time: the numpy generator is not thread-safe
    if training and augment:
        aug = tf_keras.Sequential([
            tf_keras.layers.RandomRotation(5 / 360, fill_mode="nearest", seed=seed),
            tf_keras.layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed + 1),
            tf_keras.layers.RandomZoom((-0.1, 0.1), fill_mode="nearest", seed=seed + 2),
            tf_keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
            tf_keras.layers.RandomContrast(0.2, seed=seed + 4),
        ], name="augment")
        ds = ds.map(lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 255.0), b),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if training and mixup > 0:
        if targets is None:
            raise ValueError("mixup blends targets: give soft (N, K) targets")
        ds = ds.map(_mixup_function(mixup, seed))
    return ds.prefetch(tf.data.AUTOTUNE)


def _mixup_function(alpha: float, seed: int):
    """(films, targets) -> the batch blended with a shuffled copy of itself (see ``make_dataset``)."""
    import tensorflow as tf

    gen = tf.random.Generator.from_seed(seed + 5)

    def mix(a, b):
        n = tf.shape(a)[0]
        s = gen.make_seeds(3)  # fresh seeds per batch; stateless draws from them
        g1 = tf.random.stateless_gamma([n], s[:, 0], alpha=alpha, dtype=tf.float64)
        g2 = tf.random.stateless_gamma([n], s[:, 1], alpha=alpha, dtype=tf.float64)
        # Beta(alpha, alpha); both draws can underflow to 0 for a small alpha: keep the film as it is then
        lam = tf.cast(tf.where(g1 + g2 > 0, g1 / tf.maximum(g1 + g2, 1e-300), 1.0), tf.float32)
        perm = tf.argsort(tf.random.stateless_uniform([n], s[:, 2]))
        lx = tf.reshape(lam, [-1, 1, 1, 1])
        ly = tf.cast(tf.reshape(lam, [-1, 1]), b.dtype)
        return lx * a + (1 - lx) * tf.gather(a, perm), ly * b + (1 - ly) * tf.gather(b, perm)

    return mix


def smooth_targets(labels: np.ndarray, num_classes: int, epsilon: float, soft: np.ndarray | None = None) -> np.ndarray:
    """(N, K) float32 targets: the soft targets (or one-hot labels) mixed with the uniform distribution,
    (1 - epsilon) x target + epsilon / K; rows still sum to 1."""
    t = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)] if soft is None else np.asarray(soft, np.float32)
    return ((1.0 - epsilon) * t + epsilon / num_classes).astype(np.float32)


def _macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    aucs = [M.binary_auc(labels == i, probs[:, i]) for i in range(probs.shape[1]) if (labels == i).any()]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _cosine(base_lr: float, epochs: int, warmup: int = 1):
    def schedule(epoch, lr=None):
        if epoch < warmup:
            return base_lr * (epoch + 1) / (warmup + 1)
        t = (epoch - warmup) / max(1, epochs - warmup)
        return 0.5 * base_lr * (1 + math.cos(math.pi * min(t, 1.0))) + base_lr * 0.01

    return schedule


def _ema_class():
    import tensorflow as tf
    import tf_keras

    class WeightAverage(tf_keras.callbacks.Callback):
        """An exponential moving average of every model weight (BatchNorm statistics included), updated after each
        training step: ``avg = d * avg + (1 - d) * w`` with ``d = min(decay, (1 + n) / (10 + n))`` at step ``n``, so
        the first steps do not drag a random start along. The validation monitor scores and keeps the averaged
        weights (``swap``); training itself goes on with the raw ones."""

        def __init__(self, decay: float, start=None):
            super().__init__()
            self.decay, self.start, self.shadow, self.steps = float(decay), start, None, 0

        def on_train_begin(self, logs=None):
            if self.shadow is None:
                init = self.start if self.start is not None else [w.numpy() for w in self.model.weights]
                self.shadow = [tf.Variable(v, trainable=False, dtype=w.dtype)
                               for v, w in zip(init, self.model.weights)]
                self.steps = 0 if self.start is None else 10 ** 6  # a resumed average is already warm

        def on_train_batch_end(self, batch, logs=None):
            d = min(self.decay, (1 + self.steps) / (10 + self.steps))
            self.steps += 1
            for s, w in zip(self.shadow, self.model.weights):
                s.assign(d * s + (1 - d) * tf.cast(w, s.dtype))

        def swap(self):
            """Exchange the model's weights with the averaged ones (call twice to restore)."""
            for s, w in zip(self.shadow, self.model.weights):
                raw = w.numpy()
                w.assign(s)
                s.assign(raw)

    return WeightAverage


CKPT = ".weights.npz"  # checkpoints/{phase}_{last,best,ema_last}.weights.npz


def save_checkpoint(model, path: Path) -> None:
    """The model's weights (in ``model.weights`` order) as one .npz, written atomically (a kill mid-write leaves
    the previous checkpoint whole). tf_keras' ``save_weights`` walks the object graph in Python: seconds per save,
    most of a tiny model's epoch; this takes milliseconds."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, *[w.numpy() for w in model.weights])
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_checkpoint(model, path: Path) -> None:
    """Weights saved by :func:`save_checkpoint` into ``model``; an older run's ``.weights.h5`` beside it (tf_keras
    ``save_weights``) when there is no .npz. A checkpoint of another architecture is an error, never a partial load."""
    path = Path(path)
    if not path.is_file() and (legacy := _legacy_checkpoint(path)) is not None:
        model.load_weights(legacy)
        return
    with np.load(path) as z:
        arrays = [z[f"arr_{i}"] for i in range(len(z.files))]
    shapes = [tuple(w.shape) for w in model.weights]
    if [a.shape for a in arrays] != shapes:
        raise ValueError(f"{path}: checkpoint of another model ({len(arrays)} arrays, the model has {len(shapes)} "
                         "weights or other shapes); train into a new --out")
    model.set_weights(arrays)


def _legacy_checkpoint(path: Path) -> Path | None:
    """The tf_keras ``.weights.h5`` an older run wrote where ``path`` (a .npz checkpoint) would be, if it exists."""
    legacy = path.with_name(path.name[: -len(CKPT)] + ".weights.h5") if path.name.endswith(CKPT) else None
    return legacy if legacy is not None and legacy.is_file() else None


def has_checkpoint(path: Path) -> bool:
    path = Path(path)
    return path.is_file() or _legacy_checkpoint(path) is not None


def _callback_class():
    import tf_keras

    class ValidationMonitor(tf_keras.callbacks.Callback):
        """Validation macro-AUC each epoch; keeps the best weights, stops early, writes checkpoints."""

        def __init__(self, phase, val: D.Arrays, ckpt_dir: Path, history: Path, patience: int, state: dict,
                     ema=None, min_epochs: int = 0):
            super().__init__()
            self.min_epochs = min_epochs  # epochs before this one neither become the best nor count towards patience
            self.ema = ema  # a WeightAverage: score and keep its averaged weights
            self.phase, self.val, self.ckpt_dir, self.history = phase, val, ckpt_dir, history
            self.patience = patience
            self.best = state.get("best", -1.0)
            self.wait = state.get("wait", 0)
            self.t0 = self.t_first = time.time()
            self.first = None  # the first epoch of this fit (after a resume, not 0)

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()
            if self.first is None:
                self.first, self.t_first = epoch, self.t0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            if self.ema is not None:  # the raw weights are saved to resume from; the averaged ones are scored
                save_checkpoint(self.model, self.ckpt_dir / f"{self.phase}_last{CKPT}")
                self.ema.swap()
                save_checkpoint(self.model, self.ckpt_dir / f"{self.phase}_ema_last{CKPT}")
            try:
                self._score(epoch, logs)
            finally:
                if self.ema is not None:
                    self.ema.swap()

        def _score(self, epoch, logs):
            probs = predict(self.model, self.val.images)
            auc = _macro_auc(self.val.labels, probs)
            acc = float((probs.argmax(1) == self.val.labels).mean()) if len(probs) else float("nan")
            secs = time.time() - self.t0
            counted = epoch + 1 >= self.min_epochs  # an early spike of a noisy validation curve is not kept
            improved = counted and auc > self.best + 1e-4
            if improved:
                self.best, self.wait = auc, 0
                save_checkpoint(self.model, self.ckpt_dir / f"{self.phase}_best{CKPT}")
            elif counted:
                self.wait += 1
            if self.ema is None:
                save_checkpoint(self.model, self.ckpt_dir / f"{self.phase}_last{CKPT}")
            (self.ckpt_dir / "state.json").write_text(json.dumps(
                {"phase": self.phase, "epoch": epoch, "best": self.best, "wait": self.wait}))
            row = {"phase": self.phase, "epoch": epoch + 1, "seconds": round(secs, 1),
                   "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
                   "val_accuracy": acc, "val_macro_auc": auc, "lr": float(self.model.optimizer.learning_rate.numpy())}
            new = not self.history.exists()
            with self.history.open("a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            epochs = self.params.get("epochs") or epoch + 1  # rate and time left (early stopping may end sooner)
            pace = rate_text(epoch + 1, epochs, time.time() - self.t_first, start=self.first or 0)
            log.info("[%s] epoch %d: loss %.4f acc %.3f | val acc %.3f macro-AUC %.4f%s | %.1f s | epoch %s",
                     self.phase, epoch + 1, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
                     acc, auc, " (best)" if improved else "" if counted else " (before --min-epochs)", secs, pace)
            if self.wait >= self.patience:
                log.info("[%s] early stop: no macro-AUC gain for %d epochs", self.phase, self.patience)
                self.model.stop_training = True

    return ValidationMonitor


def _fit(model, phase, train_ds, val, epochs, lr, cfg, class_weight, ckpt_dir, history, state, ema: float = 0.0,
         min_epochs: int = 0):
    import tf_keras

    start = state.get("epoch", -1) + 1 if state.get("phase") == phase else 0
    if start >= epochs:
        log.info("[%s] already complete (%d epochs)", phase, epochs)
    else:
        last = ckpt_dir / f"{phase}_last{CKPT}"
        if start > 0 and has_checkpoint(last):  # resuming this phase: go on from its last epoch's weights
            load_checkpoint(model, last)
            log.info("[%s] resuming from the weights of epoch %d (the optimiser's moments start afresh)", phase, start)
        average = None
        if ema > 0:
            start_avg = None
            ema_last = ckpt_dir / f"{phase}_ema_last{CKPT}"
            if start > 0 and has_checkpoint(ema_last):  # the average goes on from where it was
                raw = [w.numpy() for w in model.weights]
                load_checkpoint(model, ema_last)
                start_avg = [w.numpy() for w in model.weights]
                model.set_weights(raw)
            average = _ema_class()(ema, start_avg)
            log.info("[%s] weight averaging (EMA, decay %g): the averaged weights are scored and kept", phase, ema)
        monitor = _callback_class()(phase, val, ckpt_dir, history, cfg.patience,
                                    state if state.get("phase") == phase else {}, ema=average, min_epochs=min_epochs)
        if state.get("phase") == phase and monitor.wait >= cfg.patience:
            log.info("[%s] had stopped early before the resume", phase)
        else:
            model.fit(train_ds, epochs=epochs, initial_epoch=start, class_weight=class_weight,
                      verbose=cfg.verbose if cfg.verbose < 2 else 0,
                      callbacks=[tf_keras.callbacks.LearningRateScheduler(_cosine(lr, epochs))]
                      + ([average] if average is not None else []) + [monitor])
    best = ckpt_dir / f"{phase}_best{CKPT}"
    if has_checkpoint(best):
        load_checkpoint(model, best)
    return model


def freeze_backbone(model, frozen: bool) -> int:
    """Freeze (or thaw) every layer of ``model`` with weights but the classifier (``probs``); a frozen BatchNorm runs
    in inference mode (its pretrained statistics kept). Returns how many layers changed; compile again after it."""
    from train.models import PROBS

    changed = 0
    for layer in model.layers:
        if layer.name != PROBS and layer.weights and layer.trainable == frozen:
            layer.trainable = not frozen
            changed += 1
    return changed


def _compile(model, lr, soft: bool = False):
    import tf_keras

    model.compile(optimizer=tf_keras.optimizers.Adam(lr),
                  loss="categorical_crossentropy" if soft else "sparse_categorical_crossentropy",
                  metrics=["accuracy"])


CALIBRATION_BATCHES = 8  # training batches that set the QAT activation ranges before fine-tuning


class UsageError(ValueError):
    """The run cannot start as asked (its folder already holds a run, a resume with other options, ...): the CLI
    says it and exits 2, as for any other argument error; nothing has been written."""


def _prepare_redo_qat(cfg: TrainConfig, out: Path, ckpt_dir: Path, history: Path) -> TrainConfig:
    """Check the run can redo its QAT phase; forget the old QAT checkpoints and history rows."""
    missing = [f for f in ("model_float.keras", "split.csv") if not (out / f).is_file()]
    if missing:
        raise UsageError(f"{out}: cannot redo QAT without {', '.join(missing)} (train the run first)")
    if cfg.qat_epochs <= 0:
        raise UsageError("--redo-qat needs --qat-epochs > 0")
    for f in (f"qat_best{CKPT}", f"qat_last{CKPT}", "qat_best.weights.h5", "qat_last.weights.h5", "state.json"):
        (ckpt_dir / f).unlink(missing_ok=True)
    if history.is_file():
        with history.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("phase") != "qat"]
        with history.open("w", newline="") as fh:
            if rows:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    log.info("redo QAT: keeping %s and %s", out / "model_float.keras", out / "split.csv")
    return replace(cfg, split=str(out / "split.csv"))


def _is_synthetic(data: str) -> bool:
    p = Path(data)
    readme = (p if p.is_dir() else p.parent) / "README.txt"
    return readme.is_file() and "SYNTHETIC" in readme.read_text(errors="ignore").upper()


STARTED = "started_config.json"  # checkpoints/: the options a run was started with
# options a --resume may change: where and how loudly it runs, and how long it trains (extending a schedule)
RESUMABLE = frozenset({"resume", "redo_qat", "verbose", "out", "data", "epochs", "qat_epochs", "patience"})


# options of the float phase alone: --redo-qat keeps the run's own (its float model was trained with them)
FLOAT_PHASE = frozenset({"lr", "epochs", "patience", "min_epochs", "head_epochs", "head_lr", "weights", "ema"})
# what --redo-qat may change besides the float phase's: the QAT phase's own length and learning rate
REDO_QAT_MAY_CHANGE = RESUMABLE | FLOAT_PHASE | {"qat_lr", "split"}


def _options(cfg) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))


def started_record(out: str | Path) -> dict:
    """The options a run in ``out`` was started with (checkpoints/started_config.json, else its train_config.json);
    empty when it has neither."""
    for f in (Path(out) / "checkpoints" / STARTED, Path(out) / "train_config.json"):
        if f.is_file():
            return json.loads(f.read_text())
    return {}


def going_on(cfg: TrainConfig) -> TrainConfig:
    """The options a --resume or --redo-qat of the run in ``cfg.out`` trains with: ``cfg`` checked against the
    options the run was started with (``check_resumed_options``); --redo-qat takes the float phase's options
    (FLOAT_PHASE) from that record, as its float model was trained with them, and may change the QAT phase's."""
    started = Path(cfg.out) / "checkpoints" / STARTED
    if cfg.redo_qat and started.is_file():
        cfg = replace(cfg, **{k: v for k, v in json.loads(started.read_text()).items() if k in FLOAT_PHASE})
        check_resumed_options(cfg, started, REDO_QAT_MAY_CHANGE)
    else:
        check_resumed_options(cfg, started)
    return cfg


def check_resumed_options(cfg, started: Path, may_change=RESUMABLE) -> None:
    """A resumed run must keep the options it was started with (input size, harmonisation, classes and their
    order, model, learning rate, ...): otherwise it goes on training the saved weights under other settings and
    its metadata records the new ones as if they had held throughout. UsageError naming each change; runs
    started before this check (no record) resume as before."""
    if not started.is_file():
        return
    from train.recipe import ADDED_LATER, without_recipe_file

    # an option added after the run started was off then (a record without it resumes under its off value)
    then = without_recipe_file(ADDED_LATER | json.loads(started.read_text()))
    now = without_recipe_file(_options(cfg))
    changed = [f"{k}: {then.get(k)!r} when started, {now.get(k)!r} now" for k in sorted(set(then) | set(now))
               if k not in may_change and then.get(k) != now.get(k)]
    if changed:
        how = "--redo-qat" if cfg.redo_qat else "--resume"
        raise UsageError(f"{cfg.out}: {how} with other options than the run was started with ("
                         + "; ".join(changed) + f"); {how} with the same options, or start a new --out (the train "
                         "CLI's defaults are recipes/default.toml's since 2026-12-05: a run started with the earlier "
                         "defaults goes on with --model mobilenet_v2 --weights none --lr 1e-3 --site-augment 0)")


def run(cfg: TrainConfig) -> Path:
    import tensorflow as tf
    import tf_keras

    from train import evaluate, models

    t_start = time.time()
    if cfg.head_epochs and not cfg.weights:
        raise ValueError("--head-epochs trains the classifier on a frozen pretrained backbone: give --weights "
                         "(e.g. imagenet); a frozen random backbone learns nothing")
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    history = out / "history.csv"
    state = {}
    if cfg.redo_qat:
        cfg = _prepare_redo_qat(going_on(cfg), out, ckpt_dir, history)
        state = {"phase": "float_done"}
    elif cfg.resume and (ckpt_dir / "state.json").is_file():
        state = json.loads((ckpt_dir / "state.json").read_text())
        cfg = going_on(cfg)
        log.info("resuming from %s: phase %s, epoch %d", ckpt_dir, state["phase"], state["epoch"] + 1)
    elif out.exists() and any(out.iterdir()) and not cfg.resume and not cfg.redo_qat:
        if (out / "metadata.json").exists() or ckpt_dir.exists():
            raise UsageError(f"{out} already holds a run; choose another --out or pass --resume")
    elif cfg.resume:
        log.warning("--resume: %s holds no checkpoint to resume from; starting a new run there", ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if not state:  # a new run: the options it was started with, which a --resume must keep
        (ckpt_dir / STARTED).write_text(json.dumps(_options(cfg), indent=2) + "\n")
    if not cfg.resume and not cfg.redo_qat and history.exists():
        history.unlink()
    models.get_spec(cfg.model)  # unknown names fail before any work
    tf_keras.utils.set_random_seed(cfg.run_seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()

    # --- data -------------------------------------------------------------------------------------
    split_file = Path(cfg.split) if cfg.split else out / "split.csv"
    if split_file.is_file() and (cfg.split or cfg.resume):
        parts = D.load_split(split_file)
        log.info("using the saved split %s", split_file)
        D.check_labels([s for v in parts.values() for s in v], cfg.classes, str(split_file))
    else:
        samples = D.scan(cfg.data, cfg.classes)
        if cfg.folds:
            parts = D.fold_split(samples, cfg.folds, cfg.fold, cfg.val_frac, cfg.seed)
        else:
            parts = D.split_samples(samples, cfg.val_frac, cfg.test_frac, cfg.seed)
    D.save_split(parts, out / "split.csv")
    what = f"fold {cfg.fold} of {cfg.folds}, " if cfg.folds else ""
    log.info("patient-level split (%sseed %d):\n%s", what, cfg.seed, D.split_summary(parts))
    if cfg.init_seed is not None:
        log.info("initialisation, shuffling and augmentation seed %d (the split's is %d)", cfg.init_seed, cfg.seed)
    for side in ("train", "val"):
        D.check_labels(parts[side], cfg.classes, f"{side} split")
    pre = cfg.preprocess
    log.info("input preparation: %s", pre.describe())
    arrays = {side: D.load_arrays(parts[side], cfg.classes, pre, out / "cache") for side in parts}
    failed = [f for a in arrays.values() for f in a.failed]
    if failed:
        (out / "unreadable.txt").write_text("".join(f"{p}\t{r}\n" for p, r in failed))
        log.warning("%d unreadable file(s) skipped; list in %s", len(failed), out / "unreadable.txt")
    if len(arrays["train"].images) == 0 or len(arrays["val"].images) == 0:
        raise D.DataError("no readable images left in the train or validation split")
    counts = np.bincount(arrays["train"].labels, minlength=len(cfg.classes))
    class_weight = ({i: float(counts.sum() / (len(counts) * c)) for i, c in enumerate(counts) if c}
                    if cfg.class_balance else None)
    by_path = {}
    if cfg.teachers:
        from train import distill

        teacher_probs, teacher_report = distill.teacher_probabilities(
            list(cfg.teachers), parts, cfg.classes, arrays["train"], arrays["val"], out / "cache")
        (out / "teachers.json").write_text(json.dumps(teacher_report.as_dict(), indent=2) + "\n")
        by_path = dict(zip((s.path for s in arrays["train"].samples),
                           distill.soft_targets(arrays["train"].labels, teacher_probs, cfg.distill_weight,
                                                cfg.distill_temperature)))
        log.info("distillation: targets = %.2f x label + %.2f x teachers at temperature %g",
                 1 - cfg.distill_weight, cfg.distill_weight, cfg.distill_temperature)

    use_soft = bool(by_path) or cfg.label_smoothing > 0 or cfg.mixup > 0

    def soft(a: D.Arrays):  # the (N, K) targets in the order of ``a``'s films, or None for integer labels
        if not use_soft:
            return None
        teach = np.stack([by_path[s.path] for s in a.samples]) if by_path else None
        return smooth_targets(a.labels, len(cfg.classes), cfg.label_smoothing, teach)

    if cfg.label_smoothing > 0 or cfg.mixup > 0:
        log.info("targets: label smoothing %g; mixup %s", cfg.label_smoothing,
                 f"Beta({cfg.mixup:g}, {cfg.mixup:g})" if cfg.mixup else "off")

    site = None
    if cfg.augment and cfg.site_augment > 0:
        from train import site as S

        raw = D.load_arrays(parts["train"], cfg.classes, replace(pre, equalize="none", keep="all"), out / "cache")
        site = S.batch_function(pre, cfg.run_seed, cfg.site_augment)
        log.info("site-style augmentation (exposure, collimation, markers, sharpness/noise, JPEG), each with "
                 "probability %.2f, before %s", cfg.site_augment, pre.equalize if pre.equalize != "none" else "the model")
        train_ds = make_dataset(raw, cfg.batch_size, True, cfg.run_seed, cfg.augment, site=site, targets=soft(raw),
                                mixup=cfg.mixup)
    else:
        train_ds = make_dataset(arrays["train"], cfg.batch_size, True, cfg.run_seed, cfg.augment,
                                targets=soft(arrays["train"]), mixup=cfg.mixup)

    # --- model --------------------------------------------------------------------------------------
    strategy = select_strategy()
    weights = cfg.weights
    if weights is None and not cfg.redo_qat and not state:
        log.info("no pretrained weights given: training %s from random initialisation", cfg.model)
    elif state:
        log.info("building %s to load the checkpoint's weights into", cfg.model)
    with strategy.scope():
        if cfg.redo_qat:
            from train.keras_io import load_model

            float_model = load_model(out / "model_float.keras")
            log.info("redoing QAT from %s (the float phase is kept)", out / "model_float.keras")
        else:
            float_model = models.build_model(cfg.model, image_size=cfg.image_size, num_classes=len(cfg.classes),
                                             alpha=cfg.alpha, weights=weights, dropout=cfg.dropout,
                                             stem=cfg.stem)
        _compile(float_model, cfg.lr, soft=use_soft)
    log.info("%s: %d parameters, input %dx%d", cfg.model, float_model.count_params(), cfg.image_size, cfg.image_size)
    if cfg.head_epochs and not cfg.redo_qat and state.get("phase") in (None, "head"):
        # linear probe, then fine-tune (LP-FT): the pretrained features are not torn up by a random classifier's
        # first gradients; the float phase then trains every layer from the head's best epoch
        n = freeze_backbone(float_model, True)
        _compile(float_model, cfg.head_lr, soft=use_soft)
        log.info("classifier head alone for up to %d epochs (%d layers frozen), then every layer", cfg.head_epochs, n)
        float_model = _fit(float_model, "head", train_ds, arrays["val"], cfg.head_epochs, cfg.head_lr, cfg,
                           class_weight, ckpt_dir, history, state)
        freeze_backbone(float_model, False)
        _compile(float_model, cfg.lr, soft=use_soft)
    if cfg.redo_qat:
        pass
    elif state.get("phase") != "qat":
        float_model = _fit(float_model, "float", train_ds, arrays["val"], cfg.epochs, cfg.lr, cfg, class_weight,
                           ckpt_dir, history, state, ema=cfg.ema, min_epochs=cfg.min_epochs)
    else:
        load_checkpoint(float_model, ckpt_dir / f"float_best{CKPT}")
    if not cfg.redo_qat:
        float_model.save(out / "model_float.keras")

    qat_model = None
    if cfg.qat_epochs > 0:
        log.info("quantization-aware fine-tuning for up to %d epochs", cfg.qat_epochs)
        with strategy.scope():
            qat_model = qat.quantize_model(float_model)
            _compile(qat_model, cfg.qat_lr, soft=use_soft)
        n = qat.calibrate_ranges(qat_model, float_model, (x.numpy() for x, _ in train_ds.take(CALIBRATION_BATCHES)))
        log.info("QAT: %d activation ranges started from the float model on %d training batches", n,
                 CALIBRATION_BATCHES)
        qat_model = _fit(qat_model, "qat", train_ds, arrays["val"], cfg.qat_epochs, cfg.qat_lr, cfg,
                         class_weight, ckpt_dir, history, state if state.get("phase") == "qat" else {})
        qat_model.save(out / "model_qat.h5")

    # --- evaluation and metadata -----------------------------------------------------------------------
    result = evaluate.evaluate_models({"qat": qat_model, "float": float_model}, arrays, cfg.classes, out)
    synthetic = _is_synthetic(cfg.data) if cfg.synthetic is None else cfg.synthetic
    all_samples = [s for v in parts.values() for s in v]
    meta = ModelMetadata(
        labels=tuple(cfg.classes), preprocess=cfg.preprocess,
        model_name=cfg.model + (f"_{float(cfg.alpha)!r}" if cfg.alpha else ""),  # mobilenet_v2_1.0
        model_version=cfg.model_version or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"),
        data_hash=D.data_hash(all_samples), data_sources=tuple(sorted({s.source for s in all_samples})),
        synthetic=synthetic, quantization="qat-int8" if qat_model is not None else "float32",
        temperature=result["temperature"], thresholds=result["thresholds"],
        metrics={"test": result["deployed_test"], "val": result["deployed_val"],
                 **({"operating_point": result["operating_point"]} if result["operating_point"] else {})},
        split={"file": "split.csv", "seed": cfg.seed, "val_frac": cfg.val_frac,
               "test_frac": 1 / cfg.folds if cfg.folds else cfg.test_frac,
               **({"folds": cfg.folds, "fold": cfg.fold} if cfg.folds else {}),
               "unit": "patient (or pseudo-patient group)",
               "counts": {k: len(v) for k, v in parts.items()}},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    cfg_dict = asdict(cfg)
    cfg_dict["wall_seconds"] = round(time.time() - t_start, 1)
    (out / "train_config.json").write_text(json.dumps(cfg_dict, indent=2, default=str) + "\n")
    meta.save(out / "metadata.json")  # last: a finished run is one with metadata.json (make cv's marker)
    return out
