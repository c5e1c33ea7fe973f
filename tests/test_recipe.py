"""``python -m train --recipe FILE``: the recipe sets the defaults, flags override it, bad keys exit 2.

No training here: the parser is exercised directly, and ``main`` with ``train.train.run`` replaced by a stub
that captures the configuration it would train with.
"""
import hashlib
import os
from pathlib import Path

import pytest

pytest.importorskip("tf_keras")

from train import recipe as R  # noqa: E402
from train.__main__ import build_parser, main  # noqa: E402
from train.models import resolve_start  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "recipes" / "default.toml"


def parse(argv):
    parser = build_parser()
    info = R.apply(parser, argv)
    return parser.parse_args(argv), info


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recipe_sets_the_defaults(tmp_path):
    path = write(tmp_path, 'model = "mobilenet_v3_small"\nimage-size = 96\nepochs = 7\nlr = 1\n'
                           'equalize = "clahe"\naugment = false\nsite_augment = 0.25\n')
    args, info = parse(["--recipe", str(path), "--data", "d"])
    assert (args.model, args.image_size, args.epochs, args.equalize) == ("mobilenet_v3_small", 96, 7, "clahe")
    assert args.lr == 1.0 and isinstance(args.lr, float)  # a TOML integer for a float option
    assert args.augment is False and args.site_augment == 0.25
    assert args.qat_epochs == build_parser().parse_args(["--data", "d"]).qat_epochs  # unset keys keep the CLI default
    assert info == {"recipe": str(path), "recipe_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_command_line_flags_override_the_recipe(tmp_path):
    path = write(tmp_path, 'epochs = 7\nimage-size = 96\naugment = false\n')
    args, _ = parse(["--epochs", "3", "--recipe", str(path), "--data", "d", "--image-size", "128"])
    assert (args.epochs, args.image_size) == (3, 128)
    assert args.augment is False  # not overridden


def test_without_a_recipe_nothing_changes():
    args, info = parse(["--data", "d"])
    assert info == {} and args.recipe is None
    assert vars(args) == vars(build_parser().parse_args(["--data", "d"]))


@pytest.mark.parametrize("text, needle", [
    ("epochz = 3\n", "unknown key 'epochz'"),
    ('data = "/somewhere"\n', "'data' is a per-run option"),
    ('epochs = "many"\n', "epochs takes an integer"),
    ("augment = 1\n", "augment takes true or false"),
    ('equalize = "gamma"\n', "equalize must be one of none, clahe, hist"),
    ('model = "resnet"\n', "model must be one of"),
    ("epochs = [1, 2]\n", "epochs takes a single value"),
    ("epochs = \n", "not valid TOML"),
])
def test_a_bad_recipe_exits_2_naming_the_valid_keys(tmp_path, capsys, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(path), "--data", "d"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and str(path) in err
    if "TOML" not in needle:
        assert "Valid keys:" in err and "image-size" in err and "qat-epochs" in err and "data" not in err.split(
            "Valid keys:")[1]


def test_a_missing_recipe_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(tmp_path / "nope.toml"), "--data", "d"])
    assert exc.value.code == 2 and "cannot read recipe" in capsys.readouterr().err


class _Captured(Exception):
    pass


def test_main_trains_with_the_recipe_and_records_it(tmp_path, monkeypatch):
    import train.train

    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        raise _Captured

    monkeypatch.setattr(train.train, "run", fake_run)
    path = write(tmp_path, 'model = "mobilenet_v2"\nalpha = 0.35\nepochs = 2\nclasses = "a,b"\n')
    with pytest.raises(_Captured):
        main(["--recipe", str(path), "--data", "d", "--out", str(tmp_path / "run"), "--epochs", "1"])
    cfg = seen["cfg"]
    assert (cfg.model, cfg.alpha, cfg.epochs, cfg.classes) == ("mobilenet_v2", 0.35, 1, ("a", "b"))
    assert cfg.extra == {"recipe": str(path), "recipe_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_the_default_recipe_is_valid_and_is_the_site_augmented_lite0_pair():
    args, info = parse(["--recipe", str(DEFAULT), "--data", "d"])
    assert len(info["recipe_sha256"]) == 64
    assert (args.model, args.weights, args.head_epochs, args.image_size) == ("efficientnet_lite0", "imagenet", 5, 224)
    assert (args.crop, args.equalize, args.site_augment, args.keep) == (0.0, "none", 0.5, "all")
    assert args.epochs >= 20 and args.qat_epochs >= 1 and R.member_seeds(DEFAULT) == [1]  # two trainings
    from convert.__main__ import build_parser as convert_parser
    from edge_runtime import views as V

    cp = convert_parser()
    R.apply(cp, ["run", "--recipe", str(DEFAULT), "--out", "b"], "convert")
    assert V.parse(cp.parse_args(["run", "--out", "b"]).views) == V.SETS["zoom3"]  # the device reads three views


def test_the_former_default_keeps_its_own_recipe():
    """recipes/mnv2-pair.toml trains what the served MobileNetV2 pair was trained with, whatever the CLI's defaults."""
    args, _ = parse(["--recipe", str(ROOT / "recipes" / "mnv2-pair.toml"), "--data", "d"])
    assert (args.model, args.alpha, args.image_size, args.epochs, args.lr) == ("mobilenet_v2", 1.0, 224, 30, 1e-3)
    assert (args.site_augment, args.crop, args.equalize) == (0.0, 0.0, "none")
    assert resolve_start(args.model, args.weights, args.head_epochs) == (None, 0)  # random start, no probe
    assert R.member_seeds(ROOT / "recipes" / "mnv2-pair.toml") == [1]


def test_the_train_defaults_are_the_default_recipe():
    """``python -m train --data D`` trains what ``--recipe recipes/default.toml`` trains (issue 16)."""
    plain, _ = parse(["--data", "d"])
    with_recipe, _ = parse(["--recipe", str(DEFAULT), "--data", "d"])
    differ = {k: (getattr(plain, k), v) for k, v in vars(with_recipe).items()
              if k != "recipe" and getattr(plain, k) != v}
    # alpha None: the model's own width (EfficientNet-Lite has none to set); "auto" resolves to the recipe's start
    assert differ == {"alpha": (None, 1.0), "weights": ("auto", "imagenet"), "head_epochs": ("auto", 5)}
    assert resolve_start(plain.model, plain.weights, plain.head_epochs) == ("imagenet", 5)
    from train.train import TrainConfig

    cfg = TrainConfig(data="d")
    assert (cfg.model, cfg.weights, cfg.head_epochs, cfg.epochs, cfg.qat_epochs, cfg.lr, cfg.qat_lr, cfg.patience,
            cfg.site_augment) == (plain.model, "imagenet", 5, plain.epochs, plain.qat_epochs, plain.lr, plain.qat_lr,
                                  plain.patience, plain.site_augment)


@pytest.mark.parametrize("model, weights, head, start", [
    ("efficientnet_lite0", "auto", "auto", ("imagenet", 5)),
    ("efficientnet_lite2", "auto", None, ("imagenet", 5)),
    ("efficientnet_lite0", "none", "auto", (None, 0)),      # random start: no probe of a random backbone
    ("efficientnet_lite0", "auto", 0, ("imagenet", 0)),     # a given number wins
    ("efficientnet_lite3", "auto", "auto", (None, 0)),      # no offline ImageNet weights for Lite3
    ("mobilenet_v2", "auto", "auto", (None, 0)),            # Keras' ImageNet weights need the internet
    ("mobilenet_v2", "imagenet", "auto", ("imagenet", 5)),  # asked for: tried (and fails offline, said plainly)
    ("mobilenet_v2", "w.h5", "auto", ("w.h5", 5)),
    ("mobilenet_v2", None, 2, (None, 2)),                   # refused by train.train.run, not here
    ("efficientnet_lite0", "None", "auto", (None, 0)),      # the keywords in any case, never taken as file names
    ("efficientnet_lite1", "Auto", "auto", ("imagenet", 5)),
    ("mobilenet_v2", "IMAGENET", 0, ("imagenet", 0)),
])
def test_auto_start_resolves_by_the_model(model, weights, head, start):
    assert resolve_start(model, weights, head) == start


def test_a_probe_of_a_random_start_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "r"), "--weights", "none", "--head-epochs", "2"]) == 2
    assert "frozen random backbone learns nothing" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_head_epochs_takes_auto_or_a_whole_number(tmp_path, capsys):
    assert parse(["--data", "d", "--head-epochs", "AUTO"])[0].head_epochs == "auto"
    assert parse(["--data", "d", "--head-epochs", "3"])[0].head_epochs == 3
    with pytest.raises(SystemExit):
        parse(["--data", "d", "--head-epochs", "-1"])
    assert "is below 0" in capsys.readouterr().err
    assert parse(["--recipe", str(write(tmp_path, 'head-epochs = "auto"\n')), "--data", "d"])[0].head_epochs == "auto"
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(write(tmp_path, "head-epochs = -2\n", "bad.toml")), "--data", "d"])
    assert exc.value.code == 2 and "head-epochs" in capsys.readouterr().err


def test_the_convert_table_is_read_by_convert_and_skipped_by_train(tmp_path, capsys):
    from convert.__main__ import build_parser as convert_parser
    from convert.__main__ import main as convert_main

    path = write(tmp_path, 'epochs = 7\n[convert]\nviews = "zoom3"\nformats = "tflite_int8"\nmin-agreement = 0.95\n')
    args, _ = parse(["--recipe", str(path), "--data", "d"])
    assert args.epochs == 7                                         # training: the top level, the table skipped
    cp = convert_parser()
    R.apply(cp, ["run", "--recipe", str(path), "--out", "b"], "convert")
    c = cp.parse_args(["run", "--recipe", str(path), "--out", "b", "--min-agreement", "0.9"])
    assert (c.views, c.formats, c.min_agreement) == ("zoom3", "tflite_int8", 0.9)   # a flag still wins
    assert c.refer_share is None                                    # not in the recipe: the kept-accuracy rule
    cd = convert_parser()
    R.apply(cd, ["run", "--recipe", str(DEFAULT), "--out", "b"], "convert")
    assert 0 < cd.parse_args(["run", "--out", "b"]).refer_share < 0.5   # the default stores a share (docs/refer-share)
    bad = write(tmp_path, '[convert]\nviews = "zoom3"\nepochs = 3\n', "bad.toml")
    with pytest.raises(SystemExit) as exc:
        convert_main(["run", "--recipe", str(bad), "--out", str(tmp_path / "b")])
    assert exc.value.code == 2 and "unknown key 'epochs'" in capsys.readouterr().err
    odd = write(tmp_path, '[convert]\nviews = "rot90"\n', "odd.toml")
    assert convert_main([str(tmp_path), "--recipe", str(odd), "--out", str(tmp_path / "b")]) == 2
    assert "unknown view" in capsys.readouterr().err


def test_the_ensemble_table_names_further_trainings(tmp_path, capsys):
    """``[ensemble] init-seeds``: read by ``python -m train.recipe members`` (make), skipped by training; bad
    lists are refused naming the problem, and a seed given on make's command line replaces the recipe's."""
    path = write(tmp_path, 'epochs = 7\nseed = 3\n[ensemble]\ninit-seeds = [1, 2]\n')
    args, _ = parse(["--recipe", str(path), "--data", "d"])
    assert args.epochs == 7 and args.init_seed is None               # training: the table skipped
    assert R.member_seeds(path) == [1, 2] and R.member_seeds(DEFAULT) == [1]  # the served pair
    assert R.main(["members", str(path)]) == 0 and capsys.readouterr().out == "1 2\n"
    assert R.main(["members", str(path), "--given", "4"]) == 0 and capsys.readouterr().out == "4\n"
    assert R.main(["members", str(path), "--given", ""]) == 0 and capsys.readouterr().out == "\n"
    for given, needle in [("3", "3 is the first training's own seed"), ("1 1", "given twice"),
                          ("x", "non-negative integers")]:
        assert R.main(["members", str(path), "--given", given]) == 2
        assert needle in capsys.readouterr().err
    assert R.main(["members", str(path), "--seed", "1"]) == 2      # make cv's split seed is the own one there
    assert "1 is the first training's own seed" in capsys.readouterr().err
    assert R.main(["members", str(path), "--train-flags", "--epochs 2 --seed 2"]) == 2   # TRAIN_FLAGS' --seed
    assert "2 is the first training's own seed" in capsys.readouterr().err
    assert R.main(["members", str(path), "--train-flags", "--init-seed 5", "--given", "3"]) == 0  # 5 is its own
    assert capsys.readouterr().out == "3\n"
    bad = write(tmp_path, "[ensemble]\ninit-seeds = [3]\n", "own.toml")
    assert R.main(["members", str(bad), "--given", ""]) == 0     # the recipe's table is not read when overridden
    assert capsys.readouterr().out == "\n"
    for text, needle in [("[ensemble]\ninit-seeds = [0]\n", "own seed"), ("[ensemble]\ninit-seeds = 1\n", "integers"),
                         ("[ensemble]\ninit-seeds = [-1]\n", "integers"), ("[ensemble]\nseeds = [1]\n", "unknown key"),
                         ("ensemble = 2\n", "must be a table")]:
        with pytest.raises(ValueError, match=needle):
            R.member_seeds(write(tmp_path, text, "bad.toml"))


def _fake_python(tmp_path) -> tuple[Path, Path]:
    """A PY for make that runs ``-m train.recipe`` for real and only logs every other command (no training).
    Environment knobs: FAIL_END (a command ending so fails), WAIT_MEMBER (the first training waits up to 10 s for a
    member to have started: it succeeds only when members train beside it), SLOW_MEMBER (a member takes 4 s, then
    leaves member-finished), SLOW_FIRST (the first training writes its pid to first-pid, takes 30 s, then leaves
    first-finished: long enough that a member failing at once fails first even on a loaded machine)."""
    import sys

    log, fake = tmp_path / "calls.log", tmp_path / "py"
    fake.write_text(f'#!/bin/sh\nif [ "$2" = train.recipe ]; then exec "{sys.executable}" "$@"; fi\n'
                    f'echo "$@" >> "{log}"\n'
                    'case "$*" in\n'
                    f'  *"--init-seed "*) touch "{tmp_path}/member-started"\n'
                    f'    [ -n "$SLOW_MEMBER" ] && sleep 4 && touch "{tmp_path}/member-finished";;\n'
                    f'  "-m train "*) [ -n "$SLOW_FIRST" ] && echo $$ > "{tmp_path}/first-pid" && sleep 30 && '
                    f'touch "{tmp_path}/first-finished"\n'
                    '    [ -z "$WAIT_MEMBER" ] || { i=0;\n'
                    f'    while [ ! -f "{tmp_path}/member-started" ]; do i=$((i + 1)); [ $i -gt 100 ] && exit 1; '
                    'sleep 0.1; done; };;\n'
                    'esac\n'
                    'case "$*" in *"${FAIL_END:-@none@}") exit 1;; esac\n'
                    '[ "$2" = convert ] && exit 3\n'  # convert's "written, a format below the gate": make goes on
                    'exit 0\n')
    fake.chmod(0o755)
    return fake, log


@pytest.mark.parametrize("target", ["model", "cv"])
def test_make_trains_and_converts_the_recipes_members(tmp_path, target):
    """make model / make cv: the recipe's [ensemble] seeds become trainings with --init-seed and --member flags of
    one conversion; MODEL_MEMBERS/CV_MEMBERS on the command line replace them ('' = one training); a bad seed stops
    make before anything is trained."""
    import os
    import subprocess

    fake, log = _fake_python(tmp_path)
    three = DEFAULT.read_text().replace("init-seeds = [1]", "init-seeds = [1, 2]")
    assert three != DEFAULT.read_text()
    recipe = write(tmp_path, three, "ens.toml")
    var = {"model": "MODEL_MEMBERS", "cv": "CV_MEMBERS"}[target]
    out = tmp_path / "m"
    extra = [f"MODEL_OUT={out}"] if target == "model" else [f"CV_OUT={out}", "CV_TRAIN=0", "FOLDS=2"]

    env = {k: v for k, v in os.environ.items()  # not the outer make's flags or variables (make test)
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MODEL_MEMBERS", "CV_MEMBERS", "TRAIN_FLAGS",
                         "MODEL_PARALLEL", "MODEL_PUBLISH")}

    def make(*more, recipe=recipe, **knobs):
        log.unlink(missing_ok=True)
        for marker in ("member-started", "member-finished", "first-finished"):
            (tmp_path / marker).unlink(missing_ok=True)
        r = subprocess.run(["make", "-C", str(ROOT), "-o", "setup", target, f"PY={fake}", f"RECIPE={recipe}",
                            *extra, *more], capture_output=True, text=True, env={**env, **knobs})
        return r, (log.read_text().splitlines() if log.is_file() else [])

    def trainings(calls):
        return [c.split("--out ")[1].split()[0] for c in calls if c.startswith("-m train ")]

    r, calls = make()
    assert r.returncode == 0, r.stderr[-2000:]
    run = str(out) if target == "model" else f"{out}/fold0"
    assert trainings(calls) == [run, f"{run}-init1", f"{run}-init2"]
    trains = [c for c in calls if c.startswith("-m train ")]
    assert trains[1].endswith("--init-seed 1") and trains[2].endswith("--init-seed 2")
    (conv,) = [c for c in calls if c.startswith("-m convert ")]
    assert f"-m convert {run} --member {run}-init1 --member {run}-init2 " in conv
    assert calls[-1].startswith("-m benchmarks")  # went on after convert's exit status 3
    if target == "model":  # an ensemble's Keras baseline is converted; figures come before the (publishing) benchmark
        assert ",keras_fp32 " in conv
        assert calls[-2].startswith("-m benchmarks.default_figures ") and calls[-1].startswith("-m benchmarks --bundle")

    r, calls = make("TRAIN_FLAGS=--resume")  # a flag alone is not taken for the members check's own option
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(c.endswith("--resume") or "--resume --init-seed" in c for c in calls if c.startswith("-m train "))
    r, calls = make(f"{var}=")  # one training, asked
    assert r.returncode == 0, r.stderr[-2000:]
    assert trainings(calls) == [run] and "--member" not in " ".join(calls)
    assert "keras_fp32" not in " ".join(calls)  # one training: the benchmark reads the run's own float model
    r, calls = make(recipe=DEFAULT)  # the default recipe: the served pair
    assert r.returncode == 0, r.stderr[-2000:]
    assert trainings(calls) == [run, f"{run}-init1"] and f"--member {run}-init1 " in " ".join(calls)

    if target == "model":  # the members trained beside the first, each with its own log
        import time

        r, calls = make("MODEL_PARALLEL=1", WAIT_MEMBER="1")  # the first finishes only if a member runs beside it
        assert r.returncode == 0, r.stderr[-2000:]
        assert sorted(trainings(calls)) == sorted([run, f"{run}-init1", f"{run}-init2"])
        assert calls[-1].startswith("-m benchmarks") and f"--member {run}-init2 " in " ".join(calls)
        assert (tmp_path / "m-init1.log").is_file() and "in the background" in r.stdout
        r, calls = make(WAIT_MEMBER="1")  # one after another: the same fake first training fails
        assert r.returncode != 0 and trainings(calls) == [run]
        r, calls = make("MODEL_PUBLISH=pub")
        assert r.returncode == 0, r.stderr[-2000:]
        assert calls[-1].startswith("-m benchmarks ") and calls[-1].endswith(" --publish pub")
        r, calls = make("MODEL_PARALLEL=1", FAIL_END="--init-seed 2")  # a member failed: nothing converted
        assert r.returncode != 0 and "member's training failed" in r.stderr
        assert not any(c.startswith("-m convert ") for c in calls)
        r, calls = make("MODEL_PARALLEL=1", SLOW_FIRST="1", FAIL_END="--init-seed 1")  # a member fails at once:
        assert r.returncode != 0 and "member's training failed" in r.stderr  # make stops without waiting for the
        assert not (tmp_path / "first-finished").exists()  # first training (30 s), and that training was stopped:
        pid_file = tmp_path / "first-pid"
        for _ in range(30):  # make may stop it before it wrote its pid (then it never ran its 30 s)
            if pid_file.is_file() and pid_file.read_text().strip():
                break
            time.sleep(0.1)
        if pid_file.is_file() and pid_file.read_text().strip():
            first = int(pid_file.read_text())
            for _ in range(50):  # its process is gone (a kill lands within moments; a wait for it would take 30 s)
                try:
                    os.kill(first, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"the first training (pid {first}) is still running after make stopped")
        assert not any(c.startswith("-m convert ") for c in calls)
        r, calls = make("MODEL_PARALLEL=1", WAIT_MEMBER="1", SLOW_MEMBER="1", FAIL_END=f"--out {run}")
        assert r.returncode != 0 and not any(c.startswith("-m convert ") for c in calls)
        time.sleep(5)  # the first training failed: its members were stopped, not left training
        assert (tmp_path / "member-started").is_file() and not (tmp_path / "member-finished").exists()

    r, calls = make(f"{var}=0")
    assert r.returncode != 0 and "0 is the first training's own seed" in r.stderr and calls == []
    r, calls = make("TRAIN_FLAGS=--init-seed 2")  # the first training would repeat member 2
    assert r.returncode != 0 and "2 is the first training's own seed" in r.stderr and calls == []


def test_counts_below_their_floor_are_refused_on_the_command_line_and_in_a_recipe(tmp_path, capsys):
    """review27b #8: --epochs -1 saved an untrained model and exited 0; --batch-size 0 failed in TensorFlow
    after the data had loaded. Both are argument errors (exit 2) before any work, from a recipe too."""
    from train.__main__ import main

    for args in (["--epochs", "-1"], ["--epochs", "0"], ["--batch-size", "0"], ["--patience", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["--data", "x", *args])
        assert e.value.code == 2 and "is below" in capsys.readouterr().err
    recipe = tmp_path / "r.toml"
    recipe.write_text("epochs = -2\n")
    with pytest.raises(SystemExit) as e:
        main(["--recipe", str(recipe), "--data", "x"])
    assert e.value.code == 2 and "epochs: -2 is below 1" in capsys.readouterr().err


DISTILL = '\n[distill]\nteachers = "ensemble"\ninit-seed = 4\ntemperature = 1.0\nweight = 0.5\n'


def test_the_distill_table_names_a_student_taught_by_the_recipes_own_trainings(tmp_path, capsys):
    """``[distill]``: skipped by training, read by ``python -m train.recipe student`` (make): teachers are the first
    training and each member, the student starts from its own seed; bad tables are refused naming the problem."""
    path = write(tmp_path, DEFAULT.read_text() + DISTILL)
    args, _ = parse(["--recipe", str(path), "--data", "d"])
    assert not args.teacher and args.init_seed is None  # the teachers train without distillation
    assert R.student_flags(path, "runs/m", [1], 0) == [
        "--teacher", "runs/m", "--teacher", "runs/m-init1", "--init-seed", "4", "--distill-temperature", "1.0",
        "--distill-weight", "0.5"]
    assert R.student_flags(DEFAULT, "runs/m", [1], 0) == []  # no table: the trainings are what is served
    assert R.main(["student", str(path), "--out", "runs/a b", "--members", "1"]) == 0
    assert capsys.readouterr().out.startswith("--teacher 'runs/a b' --teacher 'runs/a b-init1' --init-seed 4 ")
    assert R.main(["student", str(DEFAULT), "--out", "x", "--members", "1"]) == 0 and capsys.readouterr().out == "\n"
    assert R.main(["student", str(path), "--out", "x", "--members", "1 4"]) == 2  # a teacher's seed
    assert "init-seed 4 is a teacher's own seed" in capsys.readouterr().err
    assert R.main(["student", str(path), "--out", "x", "--train-flags", "--init-seed 4"]) == 2  # the first's own
    assert "teacher's own seed" in capsys.readouterr().err
    for table, needle in [('teachers = "runs/t"\ninit-seed = 4\ntemperature = 1.0\nweight = 0.5', "the one kind"),
                          ('teachers = "ensemble"\ninit-seed = 4\ntemperature = 1.0', "'weight' is missing"),
                          ('teachers = "ensemble"\ninit-seed = 4\ntemperature = 0\nweight = 0.5', "temperature"),
                          ('teachers = "ensemble"\ninit-seed = 4\ntemperature = 1.0\nweight = 1.5', "weight"),
                          ('teachers = "ensemble"\ninit-seed = -1\ntemperature = 1.0\nweight = 0.5', "non-negative"),
                          ('teachers = "ensemble"\nseed = 4\ntemperature = 1.0\nweight = 0.5', "unknown key 'seed'")]:
        with pytest.raises(ValueError, match=needle):
            R.student_flags(write(tmp_path, f"[distill]\n{table}\n", "bad.toml"), "x", [1], 0)


@pytest.mark.parametrize("target", ["model", "cv"])
def test_make_trains_the_student_after_its_teachers_and_serves_it_alone(tmp_path, target):
    """With ``[distill]``, make model / make cv train the recipe's trainings (the teachers), then the student with
    --teacher for each of them, and convert and benchmark the student alone; a bad table stops make before any
    training."""
    import os
    import subprocess

    fake, log = _fake_python(tmp_path)
    recipe = write(tmp_path, DEFAULT.read_text() + DISTILL, "st.toml")
    out = tmp_path / "m"
    extra = [f"MODEL_OUT={out}"] if target == "model" else [f"CV_OUT={out}", "CV_TRAIN=0", "FOLDS=2"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MODEL_MEMBERS", "CV_MEMBERS", "TRAIN_FLAGS",
                        "MODEL_PARALLEL", "MODEL_PUBLISH")}

    def make(recipe=recipe):
        log.unlink(missing_ok=True)
        r = subprocess.run(["make", "-C", str(ROOT), "-o", "setup", target, f"PY={fake}", f"RECIPE={recipe}", *extra],
                           capture_output=True, text=True, env=env)
        return r, (log.read_text().splitlines() if log.is_file() else [])

    r, calls = make()
    assert r.returncode == 0, r.stderr[-2000:]
    run = str(out) if target == "model" else f"{out}/fold0"
    trains = [c for c in calls if c.startswith("-m train ")]
    assert [c.split("--out ")[1].split()[0] for c in trains] == [run, f"{run}-init1", f"{run}-student"]
    assert "--teacher" not in trains[0] + trains[1]
    assert trains[2].endswith(f"--teacher {run} --teacher {run}-init1 --init-seed 4 --distill-temperature 1.0 "
                              "--distill-weight 0.5")
    (conv,) = [c for c in calls if c.startswith("-m convert ")]
    assert conv.startswith(f"-m convert {run}-student ") and "--member" not in conv
    assert calls.index(conv) > calls.index(trains[2])
    if target == "model":
        assert "keras_fp32" not in conv  # one training served: the benchmark reads its run's own float model
        assert calls[-1].startswith(f"-m benchmarks --bundle {out}-bundle --run {run}-student ")

    bad = write(tmp_path, DEFAULT.read_text() + DISTILL.replace("init-seed = 4", "init-seed = 1"), "bad.toml")
    r, calls = make(recipe=bad)
    assert r.returncode == 2 and "teacher's own seed" in r.stderr and calls == []
