"""python -m benchmarks.adabn --run RUN --data DATA --out DIR [--films 300] [--bootstrap 1000]

AdaBN, measured (issue 17, item 5): re-estimate the float Keras model's BatchNorm moving statistics on a few
hundred *unlabelled* films as another site would make them, and see whether that helps there without hurting
the home site. Nothing here ships: it is a measurement on the workstation, before any folding or quantisation.

- The other site is simulated: "site B" of ``benchmarks.study.evaluate.SHIFTS`` (gamma, a black collimation
  border, burnt-in markers, blur and noise, applied to the decoded film before the one preprocessing), as the
  study's and ``benchmarks.default_figures``' site-B figures make it.
- Adaptation films: ``--films`` drawn (seeded) from the run's train+val split, labels unused. Every BatchNorm
  layer's moving mean and variance become the average of its per-batch statistics over those films, each layer
  seeing the layers before it already normalised with the new films' batch statistics (forward passes in
  training mode with a cumulative momentum); nothing else changes.
- Evaluation: the run's test films, never used for adaptation, (a) under the same site-B change and (b)
  untouched. Accuracy (argmax), the normal-vs-pneumonia AUC within the source holding both classes (NIH) and
  TB-vs-rest AUC, before and after, with 95% bootstrap intervals (patients resampled; the same resamples for
  before and after, so the paired difference has its own interval).
- Home: the same procedure run at home (statistics from untouched home films) on the untouched test films
  decides "does not hurt home". The site-B statistics on home films are reported too: an adapted model belongs
  to the site it was adapted at.

Verdict: keep when at site B some figure's paired difference has an interval wholly above 0 and none wholly
below, and at home no figure's interval lies wholly below 0. Writes ``report.md`` and ``results.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.default_figures import FIGURES, bootstrap_figures, patients
from benchmarks.study import evaluate as E


# ----------------------------------------------------------------------------- BatchNorm re-estimation
def bn_layers(model) -> list:
    """Every BatchNormalization layer of a (possibly nested) Keras model."""
    import tf_keras

    out = []
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            out.append(layer)
        elif isinstance(layer, tf_keras.Model):
            out += bn_layers(layer)
    return out


def bn_stats(model) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()) for layer in bn_layers(model)]


def adapt(model, images: np.ndarray, batch: int = 32) -> int:
    """AdaBN in place: each BatchNorm layer's moving statistics become the mean of its batch statistics over
    ``images`` (uint8 (N, H, W)). Returns the number of layers re-estimated."""
    layers = bn_layers(model)
    saved = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for layer in layers:
            layer.trainable = True  # a frozen BatchNorm layer ignores training=True
        for k, i in enumerate(range(0, len(images), batch)):
            for layer in layers:
                layer.momentum = k / (k + 1)  # moving = running mean of the batch statistics (first batch: itself)
            model(np.asarray(images[i:i + batch])[..., None].astype(np.float32), training=True)
    finally:
        for layer, (m, t) in zip(layers, saved):
            layer.momentum, layer.trainable = m, t
    return len(layers)


# ----------------------------------------------------------------------------- data
def _films(samples, labels, data: Path | None):
    """Decoded films (list of uint8 arrays) with their class indices, sources and patients (the bootstrap's
    unit); a split path that is gone is looked for under ``data`` by its class folder and name."""
    from edge_runtime.preprocess import decode_image

    films, kept = [], []
    for s in samples:
        p = Path(s.path)
        if not p.is_file() and data is not None and (data / p.parent.name / p.name).is_file():
            p = data / p.parent.name / p.name
        try:
            films.append(decode_image(str(p)))
        except Exception:  # noqa: BLE001 - an unreadable film is left out (counted in the report)
            continue
        kept.append(s)
    y = np.array([list(labels).index(s.label) for s in kept], int)
    return films, y, np.array([s.source for s in kept]), patients(kept)


def _prepare(films, preprocess, shift: str) -> np.ndarray:
    from edge_runtime.preprocess import prepare

    fn = E.SHIFTS[shift]
    return np.stack([prepare(fn(im, i), preprocess) for i, im in enumerate(films)])


# ----------------------------------------------------------------------------- the run
def run(run_dir: Path, out: Path, data: Path | None = None, n_films: int = 300, n_boot: int = 1000,
        shift: str = E.SITE_B, seed: int = 0, batch: int = 32, command: str = "") -> dict:
    from edge_runtime.metadata import ModelMetadata
    from train import data as D
    from train import keras_io as K

    t0 = time.time()
    meta = ModelMetadata.load(run_dir / "metadata.json")
    labels = list(meta.labels)
    parts = D.load_split(run_dir / "split.csv")
    pool = parts["train"] + parts["val"]
    pick = np.random.default_rng(seed).permutation(len(pool))[:n_films]
    adapt_films, *_ = _films([pool[i] for i in sorted(pick)], labels, data)  # labels never used
    test_films, y, src, units = _films(parts["test"], labels, data)
    if not adapt_films or not len(y):
        raise SystemExit(f"{run_dir}: no readable adaptation or test films (moved data? pass --data)")
    home_x, site_x = _prepare(test_films, meta.preprocess, "none"), _prepare(test_films, meta.preprocess, shift)

    model = K.load_model(run_dir / "model_float.keras")
    original = model.get_weights()
    before = bn_stats(model)
    probs = {"home": K.predict(model, home_x), "site": K.predict(model, site_x)}
    n_bn = adapt(model, _prepare(adapt_films, meta.preprocess, shift), batch)
    moved = float(np.mean([np.abs(a[0] - b[0]).mean() / (np.sqrt(b[1]).mean() + 1e-6)
                           for a, b in zip(bn_stats(model), before)]))
    probs["site_adabn"], probs["home_with_site_stats"] = K.predict(model, site_x), K.predict(model, home_x)
    model.set_weights(original)
    adapt(model, _prepare(adapt_films, meta.preprocess, "none"), batch)
    probs["home_adabn"] = K.predict(model, home_x)

    figs = {k: {"accuracy": float((p.argmax(1) == y).mean()), "pair_auc": _pair(y, p, src, labels),
                "tb_auc": E.tb_auc(y, p, labels)} for k, p in probs.items()}
    pairs = (("site_adabn", "site"), ("home_adabn", "home"), ("home_with_site_stats", "home"))
    boot = bootstrap_figures(y, probs, src, labels, n_boot, seed, pairs, groups=units)
    site_d, home_d = boot["delta"]["site_adabn - site"], boot["delta"]["home_adabn - home"]
    helps = any(v[0] > 0 for v in site_d.values()) and not any(v[1] < 0 for v in site_d.values())
    hurts = any(v[1] < 0 for v in home_d.values())
    from benchmarks.sysinfo import machine_info

    res = {"run": str(run_dir), "data": str(data) if data else None, "shift": shift, "seed": seed,
           "adaptation_films": {"requested": n_films, "used": len(adapt_films), "from": "train+val split, labels unused"},
           "test_films": int(len(y)), "unreadable_test_films": len(parts["test"]) - int(len(y)),
           "bn_layers": n_bn, "bn_mean_shift_in_sd": moved, "figures": figs, "bootstrap": boot,
           "verdict": {"helps_site": helps, "hurts_home": hurts, "keep": helps and not hurts},
           "command": command or f"python -m benchmarks.adabn --run {run_dir} --out {out} --films {n_films}",
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
           "seconds": round(time.time() - t0, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=E.jsonable) + "\n")
    (out / "report.md").write_text(report(res))
    return res


def _pair(y, p, src, labels) -> float:
    pair = E.pair_source(y, src, labels)
    return E.pair_auc(y[src == pair], p[src == pair], labels) if pair else float("nan")


ROWS = (("home", "home test films, the model as trained"),
        ("home_adabn", "home test films, BatchNorm re-estimated on home films"),
        ("home_with_site_stats", "home test films, BatchNorm re-estimated on site-B films"),
        ("site", "site-B test films, the model as trained"),
        ("site_adabn", "site-B test films, BatchNorm re-estimated on site-B films"))
NAMES = {"accuracy": "accuracy", "pair_auc": "normal-vs-pneumonia AUC", "tb_auc": "TB-vs-rest AUC"}


def _f(v, lo_hi=None) -> str:
    if v is None or np.isnan(v):
        return "-"
    return f"{v:.3f}" + (f" ({lo_hi[0]:.3f}-{lo_hi[1]:.3f})" if lo_hi and not np.isnan(lo_hi[0]) else "")


def _moved(delta: dict) -> str:
    up = [NAMES[f] for f in FIGURES if delta[f][0] > 0]
    down = [NAMES[f] for f in FIGURES if delta[f][1] < 0]
    return ", ".join([*(f"{n} up" for n in up), *(f"{n} down" for n in down)]) or "no change beyond chance"


def report(r: dict) -> str:
    b, m = r["bootstrap"], r["machine"]
    v = r["verdict"]
    verdict = ("KEEP: it helps the shifted site and does not hurt home" if v["keep"] else
               "DO NOT SHIP: " + ("it does not clearly help the shifted site" if not v["helps_site"] else "")
               + (" and " if not v["helps_site"] and v["hurts_home"] else "")
               + ("it hurts the home site" if v["hurts_home"] else ""))
    moves = "; ".join(f"{where}: {_moved(b['delta'][pair])}" for where, pair in
                      (("site B", "site_adabn - site"), ("home", "home_adabn - home")))
    lines = [f"# AdaBN on {r['run']}: BatchNorm statistics from unlabelled films of the other site", "",
             f"Verdict: **{verdict}** ({moves}). Rule: at site B some paired difference's 95% interval lies wholly "
             "above 0 and none wholly below; at home, with statistics from home films, none wholly below 0.", "",
             f"Adaptation: {r['adaptation_films']['used']} films drawn from the run's {r['adaptation_films']['from']}, "
             f"changed as '{r['shift']}' would make them; {r['bn_layers']} BatchNorm layers re-estimated (their "
             f"moving means moved by {r['bn_mean_shift_in_sd']:.2f} standard deviations on average). Evaluation: "
             f"the run's {r['test_films']} test films ({b['pair_source']} holds both normals and pneumonia). "
             f"95% intervals: {b['n_boot']} bootstrap resamples of the {b['unit']}s (each with all their films).", "",
             "| films, model | " + " | ".join(NAMES[f] for f in FIGURES) + " |", "|---|---|---|---|"]
    for key, what in ROWS:
        lines.append(f"| {what} | " + " | ".join(_f(r["figures"][key][f], b["ci"][key][f]) for f in FIGURES) + " |")
    lines += ["", "Paired differences (after - before, same films, same resamples):", "",
              "| | " + " | ".join(NAMES[f] for f in FIGURES) + " |", "|---|---|---|---|"]
    for pair, d in b["delta"].items():
        a, c = pair.split(" - ")
        lines.append(f"| {pair} | " + " | ".join(_f(r["figures"][a][f] - r["figures"][c][f], d[f]) for f in FIGURES) + " |")
    lines += ["", "The last row is a caution, not part of the verdict: statistics re-estimated at one site belong "
              "to that site's bundle.", "",
              f"Command: `{r['command']}`; commit {m.get('commit') or '-'}; {r['date']}; CPU {m.get('cpu')} "
              f"(family {m.get('cpu_family', '-')}), {m.get('usable_cores')} usable cores; {r['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.adabn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder (model_float.keras, split.csv)")
    p.add_argument("--data", type=Path, help="the data folder, where the split's film paths no longer resolve")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--films", type=int, default=300, help="unlabelled adaptation films (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not (a.run / "model_float.keras").is_file() or not (a.run / "split.csv").is_file():
        print(f"error: {a.run} is not a training run (needs model_float.keras and split.csv)", file=sys.stderr)
        return 2
    if a.films < 1:
        print("error: --films must be at least 1", file=sys.stderr)
        return 2
    r = run(a.run, a.out, a.data, a.films, a.bootstrap, seed=a.seed,
            command="python -m benchmarks.adabn " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
