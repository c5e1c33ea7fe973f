"""The model-selection study over several seeds (issue 16): the ranking rule on hand-made results, the
per-seed plan, splits and folders on a study whose training, conversion and measurements are faked (no model is
trained here), recipe files and native-size candidates as candidates."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.study import evaluate as SE
from benchmarks.study import ranking as SK
from benchmarks.study import run as SR
from benchmarks.study.plan import MODELS, NATIVE_SIZES, plan, recipe_candidate

LABELS = ["normal", "pneumonia", "tuberculosis"]
REPO = Path(__file__).resolve().parent.parent


def _row(score, ms, seed=0, name="x"):
    return {"name": name, "seed": seed, "val": {"macro_auc": score}, "latency_ms_1thread": {"p50": ms}}


def _seeded(name, scores, ms):
    return [_row(s, ms, seed, name) for seed, s in enumerate(scores)]


# --- the ranking rule ------------------------------------------------------------------------------------------

def test_mean_sd_is_the_sample_sd_over_finite_values():
    s = SK.mean_sd([0.8, 0.9, float("nan"), None, 1.0])
    assert s == {"mean": pytest.approx(0.9), "sd": pytest.approx(0.1), "n": 3}
    one = SK.mean_sd([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and math.isnan(one["sd"])


def test_a_difference_inside_the_spread_is_a_tie_and_the_faster_candidate_wins():
    # b is better by 0.02 on the mean, but the seeds scatter by 0.03: tied, and the faster a wins
    rows = {"a": _seeded("a", [0.87, 0.90, 0.93], 30), "b": _seeded("b", [0.89, 0.92, 0.95], 80)}
    chosen, summary = SK.rank(rows, ["a", "b"])
    assert chosen == "a"
    assert summary["a"]["score"]["mean"] == pytest.approx(0.90) and summary["a"]["score"]["sd"] == pytest.approx(0.03)
    assert summary["a"]["tied"] and summary["b"]["tied"] and summary["a"]["margin"] == pytest.approx(0.03)
    # the same means from steady seeds: 0.02 is outside the spread (and the 0.01 margin), so b wins
    steady = {"a": _seeded("a", [0.899, 0.90, 0.901], 30), "b": _seeded("b", [0.919, 0.92, 0.921], 80)}
    chosen, summary = SK.rank(steady, ["a", "b"])
    assert chosen == "b" and not summary["a"]["tied"] and summary["a"]["margin"] == SE.TIE_AUC
    # one seed each: no spread known, the 0.01 margin holds (the rule before seeds)
    assert SK.rank({"a": [_row(0.90, 30)], "b": [_row(0.92, 80)]}, ["a", "b"])[0] == "b"
    assert SK.rank({"a": [_row(0.915, 30)], "b": [_row(0.92, 80)]}, ["a", "b"])[0] == "a"


def test_the_best_candidates_spread_sets_the_margin_not_a_noisy_rivals():
    rows = {"best": _seeded("best", [0.94, 0.95, 0.96], 50),  # sd 0.01
            "noisy": _seeded("noisy", [0.84, 0.90, 0.96], 10),  # mean 0.90, sd 0.06: 0.05 below the best
            "weak": _seeded("weak", [0.89, 0.90, 0.91], 5)}
    chosen, summary = SK.rank(rows, ["best", "noisy", "weak"])
    assert chosen == "best" and not summary["noisy"]["tied"] and not summary["weak"]["tied"]
    assert summary["noisy"]["margin"] == pytest.approx(0.01)
    # a best that scatters by 0.06 over seeds: 0.05 below it is inside its spread, and the fastest tied wins
    rows["best"] = _seeded("best", [0.89, 0.95, 1.01], 50)
    chosen, summary = SK.rank(rows, ["best", "noisy", "weak"])
    assert chosen == "weak" and summary["noisy"]["tied"] and summary["weak"]["margin"] == pytest.approx(0.06)


def test_ranking_ignores_unconverted_and_unscored_trainings_and_non_candidates():
    rows = {"a": _seeded("a", [0.90, 0.91], 30) + [{"seed": 2, "val": {"macro_auc": 0.99}}],  # seed 2: no INT8
            "b": [_row(float("nan"), 1)], "c": _seeded("c", [0.99, 0.99], 1)}
    chosen, summary = SK.rank(rows, ["a", "b", "zzz"])
    assert chosen == "a" and set(summary) == {"a"} and summary["a"]["score"]["n"] == 2
    assert summary["a"]["seeds"] == [0, 1]
    assert SK.rank({}, ["a"]) == (None, {})
    # the single-row API is the same rule with one seed
    assert SE.choose_default({"a": _row(0.90, 30), "b": _row(0.905, 80)}, ["a", "b"]) == "a"


def test_summaries_average_validation_under_site_b_and_test_figures():
    r0 = {**_row(0.9, 10), "val_site_b": {"macro_auc": 0.7}, "test": {"accuracy": 0.8, "pair_auc": 0.85}}
    r1 = {**_row(0.8, 20, 1), "val_site_b": {"macro_auc": 0.6}, "test": {"accuracy": 0.6}}
    s = SK.summarise_seeds([r0, r1])
    assert s["score"]["mean"] == pytest.approx(0.75)  # (0.8 + 0.7) / 2 for seed 0, (0.7 + 0.6) / 2 for seed 1
    assert s["test_accuracy"]["mean"] == pytest.approx(0.7) and s["test_accuracy"]["n"] == 2
    assert s["test_pair_auc"]["n"] == 1 and s["latency_ms"]["mean"] == 15


# --- candidates: native sizes and recipe files -------------------------------------------------------------------

def test_lite1_lite2_imagenet_candidates_train_at_their_native_size():
    from train.__main__ import build_parser

    exps = {e.name: e for e in plan("crop-clahe", ["crop-clahe"], [m[0] for m in MODELS], controls=())}
    lite1, lite2 = exps["lite1-imagenet_crop-clahe"], exps["lite2-imagenet_crop-clahe"]
    assert (lite1.model, lite1.weights, lite1.image_size) == ("efficientnet_lite1", "imagenet", 240)
    assert (lite2.model, lite2.image_size) == ("efficientnet_lite2", 260) and NATIVE_SIZES == {
        "lite1-imagenet": 240, "lite2-imagenet": 260}
    assert lite2.label == "efficientnet_lite2 (ImageNet) 260 px"
    args = build_parser().parse_args(["--data", "x", *lite1.train_args(8, 1, 224)])
    assert (args.model, args.weights, args.image_size) == ("efficientnet_lite1", "imagenet", 240)
    mnv3 = exps["mnv3-small_crop-clahe"]
    assert build_parser().parse_args(["--data", "x", *mnv3.train_args(8, 1, 224)]).image_size == 224
    same = {e.name: e for e in plan("crop-clahe", ["crop-clahe"], ["lite1-imagenet"], controls=(), native_sizes=False)}
    assert same["lite1-imagenet_crop-clahe"].image_size is None


def test_a_recipe_file_competes_as_it_is(tmp_path):
    from train import recipe
    from train.__main__ import build_parser

    default = REPO / "recipes" / "default.toml"
    exp = recipe_candidate(default)
    assert (exp.name, exp.role, exp.model, exp.weights, exp.image_size) == ("recipe-default", "model",
                                                                            "efficientnet_lite0", "imagenet", 224)
    former = recipe_candidate(REPO / "recipes" / "mnv2-pair.toml")  # weights = "none": random, labelled so
    assert (former.model, former.weights, former.label) == ("mobilenet_v2", None, "mobilenet_v2 1.0 224 px")
    assert exp.from_file and exp.train_args(8, 1, 64) == ["--recipe", str(default)]  # not the study's epochs/size
    parser = build_parser()
    argv = ["--data", "x", *exp.train_args(8, 1, 64), "--seed", "2"]
    recipe.apply(parser, argv)
    args = parser.parse_args(argv)
    assert (args.epochs, args.qat_epochs, args.image_size, args.seed) == (20, 3, 224, 2)  # the study's seed wins
    names = [e.name for e in plan("plain", ["plain"], ["mnv2-0.35"], controls=("centre",), recipe_files=(str(default),))]
    assert names == ["mnv2-0.35_plain", "control-centre_plain", "recipe-default"]
    with pytest.raises(ValueError, match="two candidates"):
        plan("plain", ["plain"], ["mnv2-0.35"], recipe_files=(str(default), str(default)))


def test_study_cli_refuses_bad_seeds_and_bad_recipe_files(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "mobilenet_v2"\nwarp-speed = 9\n')
    for argv in (["--seeds", "0,x"], ["--seeds", "1,1"], ["--candidate-recipes", str(bad)],
                 ["--candidate-recipes", str(tmp_path / "missing.toml")]):
        with pytest.raises(SystemExit) as e:
            SR.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "warp-speed" in err and "cannot read recipe" in err
    assert not (tmp_path / "o").exists()  # refused before anything ran


# --- a whole study over seeds, with training and measurement faked -----------------------------------------------

def _summary(rng, quality):
    """A real ``summarise`` result for made-up predictions whose quality grows with ``quality``."""
    y = np.repeat([0, 1, 2], 20)
    raw = rng.dirichlet([1, 1, 1], size=len(y))
    raw[np.arange(len(y)), y] += quality
    raw /= raw.sum(1, keepdims=True)
    src = np.where(y == 2, "tbx11k", "nih_dcn")
    return SE.summarise(y, raw, src, LABELS, 1.0, {"tuberculosis": 0.4, "refer_below": 0.5})


def _fake_study(monkeypatch, quality):
    """Fakes train/convert/measure; ``quality(name, seed)`` sets each training's figures. Returns the train calls."""
    calls = []

    def train(exp, opts, split, seed):
        key = SR.run_key(exp.name, seed)
        run = opts.out / "train" / key
        run.mkdir(parents=True, exist_ok=True)
        (run / "split.csv").write_text(f"split of {key}\n")
        calls.append((seed, exp.name, split))
        return run

    def evaluate(exp, run, bundle):
        rng = np.random.default_rng(abs(hash(run.name)) % 2**32)
        q = quality(exp.name, int(run.name.split("_seed")[1]) if "_seed" in run.name else 0)
        row = {"name": exp.name, "role": exp.role, "label": exp.label, "recipe": exp.recipe, "keep": exp.keep,
               "preprocess": "64 px", "val": _summary(rng, q), "test": _summary(rng, q), "run": run.name}
        if bundle is not None:
            row.update(artifact="tflite_int8", size_mb=1.0, temperature=1.0, thresholds={},
                       agreement_vs_parent=0.99, latency_ms_1thread={"p50": {"mnv2-0.35": 4.0}.get(
                           exp.name.split("_")[0], 9.0)}, bundle=bundle.name)
        else:
            row["artifact"] = "keras (float)"
        return row

    def site_shift(bundle, side="test", shifts=None):
        rng = np.random.default_rng(0)
        out = {}
        for name in shifts or SE.SHIFTS:
            out[name] = _summary(rng, 1.0) | {"pair_normals_called_normal": 0.9, "pair_normals_called_pneumonia": 0.1,
                                              "pair_normals_flagged_tb": 0.0}
        return out

    monkeypatch.setattr(SR, "train", train)
    monkeypatch.setattr(SR, "convert", lambda name, run, opts, *a, **k: opts.out / "bundles" / name)
    monkeypatch.setattr(SR, "_source_probe", lambda split, opts: {})
    monkeypatch.setattr(SE, "evaluate_experiment", evaluate)
    monkeypatch.setattr(SE, "site_shift", site_shift)
    monkeypatch.setattr(SE, "heatmap_stats", lambda bundle: {})
    return calls


def test_study_over_seeds_trains_each_seed_on_its_own_split_and_ranks_on_the_mean(tmp_path, monkeypatch):
    # mnv2-0.35 is faster and the better model on seed 0 only; mnv3-small on average (and steady): the ranking
    # follows the mean over seeds
    q = {("mnv2-0.35_plain", 0): 6.0, ("mnv2-0.35_plain", 1): 0.3, ("mnv2-0.35_plain", 2): 0.3}
    calls = _fake_study(monkeypatch, lambda name, seed: q.get((name, seed), 2.0))
    out = tmp_path / "study"
    argv = ["--data", str(tmp_path), "--out", str(out), "--recipe", "plain", "--recipes", "plain",
            "--models", "mnv2-0.35,mnv3-small", "--controls", "border", "--extra", "", "--no-benchmark",
            "--seeds", "0,1,2"]
    assert SR.main(argv) == 0
    # seed-major, the control on the first seed only; each seed's first training draws the split and the
    # others of that seed reuse it
    assert [(s, n) for s, n, _ in calls] == [(0, "mnv2-0.35_plain"), (0, "control-border_plain"),
                                             (0, "mnv3-small_plain"), (1, "mnv2-0.35_plain"), (1, "mnv3-small_plain"),
                                             (2, "mnv2-0.35_plain"), (2, "mnv3-small_plain")]
    for seed, name, split in calls:
        first = SR.run_key("mnv2-0.35_plain", seed)
        assert split == (None if name == "mnv2-0.35_plain" else out / "train" / first / "split.csv"), (seed, name)
    assert (out / "train" / "mnv3-small_plain_seed2").is_dir() and (out / "train" / "mnv3-small_plain").is_dir()
    res = json.loads((out / "study.json").read_text())
    assert res["seeds"] == [0, 1, 2] and res["meta"]["seeds"] == [0, 1, 2]
    assert [r["seed"] for r in res["seed_rows"]["mnv3-small_plain"]] == [0, 1, 2]
    rank = res["ranking"]
    assert rank["mnv3-small_plain"]["score"]["n"] == 3 and set(rank) == {"mnv2-0.35_plain", "mnv3-small_plain"}
    best_seed0 = max(("mnv2-0.35_plain", "mnv3-small_plain"),
                     key=lambda n: SE.selection_score(res["seed_rows"][n][0]))
    assert best_seed0 == "mnv2-0.35_plain"  # a one-seed study would have chosen it
    assert rank["mnv3-small_plain"]["score"]["mean"] > rank["mnv2-0.35_plain"]["score"]["mean"]
    assert not rank["mnv2-0.35_plain"]["tied"] and res["default"] == "mnv3-small_plain"
    # every converted training was scored on validation under site B; the details use each first seed
    assert all("val_site_b" in r for rs in res["seed_rows"].values() for r in rs if "bundle" in r)
    assert res["rows"]["mnv3-small_plain"]["seed"] == 0 and "shift" in res["rows"]["mnv3-small_plain"]
    report = (out / "MODEL_SELECTION.md").read_text()
    assert "Over the 3 seeds (0, 1, 2)" in report and "over 3 seeds" in report
    s = rank["mnv3-small_plain"]["score"]
    assert f"{s['mean']:.3f} +- {s['sd']:.3f} (n=3)" in report
    assert "seeds 0, 1, 2 (every candidate and ablation once per seed, the controls on seed 0 only)" in report
    assert len(res["seed_rows"]["control-border_plain"]) == 1


def test_one_seed_behaves_as_before(tmp_path, monkeypatch):
    calls = _fake_study(monkeypatch, lambda name, seed: 2.0 if name.startswith("mnv3") else 1.0)
    out = tmp_path / "study"
    assert SR.main(["--data", str(tmp_path), "--out", str(out), "--recipe", "plain", "--recipes", "plain",
                    "--models", "mnv2-0.35,mnv3-small", "--controls", "", "--extra", "", "--no-benchmark"]) == 0
    assert [(s, n) for s, n, _ in calls] == [(0, "mnv2-0.35_plain"), (0, "mnv3-small_plain")]
    res = json.loads((out / "study.json").read_text())
    assert res["seeds"] == [0] and "seed_rows" not in res
    assert res["default"] == SE.choose_default(res["rows"], ["mnv2-0.35_plain", "mnv3-small_plain"])
    report = (out / "MODEL_SELECTION.md").read_text()
    assert "Over the" not in report and "One split, one seed" in report and "seed 0," in report
    # --seed N alone is one seed too; its folders are named by the seed so they never pass for seed 0's
    calls.clear()
    assert SR.main(["--data", str(tmp_path), "--out", str(out), "--recipe", "plain", "--recipes", "plain",
                    "--models", "mnv2-0.35", "--controls", "", "--extra", "", "--no-benchmark", "--seed", "3"]) == 0
    assert calls == [(3, "mnv2-0.35_plain", None)] and (out / "train" / "mnv2-0.35_plain_seed3").is_dir()
