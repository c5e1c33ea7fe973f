"""Training recipes: a versioned TOML file whose keys are the train CLI's option names.

``apply(parser, argv)`` reads ``--recipe FILE`` from ``argv`` (if given), checks every key against the
parser's options and sets them as the parser's defaults, so a flag given on the command line still wins.
Keys are option names without the dashes (``image-size``; ``image_size`` is accepted too); on/off switches
such as ``--no-augment`` take their destination name with a boolean (``augment = false``). Unknown keys,
per-run options and values of the wrong type are errors (``parser.error``: exit status 2).

A table ``[convert]`` holds the conversion's options the same way (``python -m convert --recipe FILE``: keys are
convert's option names, e.g. ``views = "zoom3"``); training skips it, conversion reads only it.

A table ``[ensemble]`` says the recipe's model is served as several trainings of one split in one bundle:
``init-seeds = [1]`` trains one more with ``--init-seed 1`` and converts the two together (``convert --member``).
``make model`` and ``make cv`` read it (``python -m train.recipe members FILE``); training and conversion skip it.

A table ``[distill]`` says the served model is one more training, a student taught by the recipe's own trainings:
``teachers = "ensemble"`` (the first training and its ``[ensemble]`` members, trained as usual and never served),
``init-seed`` (the student's, other than every teacher's), ``temperature`` and ``weight`` (``--distill-temperature``,
``--distill-weight``). ``make model`` and ``make cv`` train the student after its teachers and convert it alone
(``python -m train.recipe student FILE --out RUN`` prints its options); training and conversion skip the table.
"""
from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import tomllib
from pathlib import Path

# options that describe one run, not a recipe: they stay on the command line
PER_RUN = frozenset({"data", "out", "split", "fold", "teacher", "member", "resume", "redo_qat", "verbose", "recipe", "help",
                     "version", "force"})
SECTIONS = frozenset({"convert", "ensemble", "distill"})  # tables of the recipe read by another command
# options newer than some runs: a train_config.json without one was trained with this (off)
ADDED_LATER = {"label_smoothing": 0.0, "mixup": 0.0, "init_seed": None, "stem": "rgb", "min_epochs": 0, "head_epochs": 0,
               "head_lr": 1e-3}
# train_config.json keys that differ between two runs of one training (where, when, how it was started)
RUN_RECORD = frozenset({"data", "out", "split", "fold", "resume", "redo_qat", "verbose", "recipe", "wall_seconds",
                        "model_version"})


RECIPE_FILE = ("recipe", "recipe_sha256")  # ``extra``'s record of the file a run's options were read from


def without_recipe_file(options: dict) -> dict:
    """``options`` less the recipe file's name and hash in ``extra``: the resolved options are what a run trains
    with, so the same options read from another file (or from an edited one) are the same run."""
    extra = options.get("extra")
    if isinstance(extra, dict):
        options = options | {"extra": {k: v for k, v in extra.items() if k not in RECIPE_FILE}}
    return options


def comparable(cfg: dict, per_run=RUN_RECORD) -> dict:
    """A run's ``train_config.json`` as options to compare with another run's: less the ``per_run`` keys, an option
    added after the run was trained counted as off, less the recipe file's name and hash (``extra``: the resolved
    options are compared, so an edit of the file that leaves them alone keeps the runs one recipe), and a distilled
    student's teachers (each fold's own) as how many there are."""
    cfg = ADDED_LATER | cfg
    out = {k: v for k, v in sorted(cfg.items()) if k not in per_run}
    if isinstance(out.get("teachers"), (list, tuple)):
        out["teachers"] = len(out["teachers"])
    out = without_recipe_file(out)
    extra = out.pop("extra", None) or {}
    return out | ({"extra": extra} if extra else {})


def member_options(cfg: dict, first: dict) -> dict:
    """The training options in which an ensemble member (its ``train_config.json``) differs from the first training,
    with the member's values (``{"site_augment": 0.5}``); empty for the first and for a rerun of it with another
    --init-seed. ``convert --member`` records them so that a report names what the members' own recipes add."""
    a, b = comparable(cfg, RUN_RECORD | {"init_seed"}), comparable(first, RUN_RECORD | {"init_seed"})
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def recipe_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Valid recipe keys (kebab-case destination names) -> the parser action they set."""
    return {a.dest.replace("_", "-"): a for a in parser._actions
            if a.option_strings and a.dest not in PER_RUN}


def _check_value(key: str, action: argparse.Action, value) -> str | None:
    """Why ``value`` cannot be ``action``'s default, or None when it can."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return None if isinstance(value, bool) else f"{key} takes true or false, got {value!r}"
    if isinstance(value, (dict, list)):
        return f"{key} takes a single value, got {type(value).__name__}"
    if isinstance(value, bool):
        return f"{key} takes a {getattr(action.type, '__name__', 'string')}, got {value!r}"
    if action.type is int and not isinstance(value, int):
        return f"{key} takes an integer, got {value!r}"
    if action.type is float and not isinstance(value, (int, float)):
        return f"{key} takes a number, got {value!r}"
    if action.type in (None, str) and not isinstance(value, str):
        return f"{key} takes a string, got {value!r}"
    if callable(action.type) and action.type not in (int, float, str):  # a checked type, e.g. "integer >= 1"
        if getattr(action.type, "__name__", "").startswith("integer") and not isinstance(value, int):
            return f"{key} takes an integer, got {value!r}"
        try:
            action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            return f"{key}: {exc}"
    if action.choices is not None and value not in action.choices:
        return f"{key} must be one of {', '.join(map(str, action.choices))}, got {value!r}"
    return None


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from None


def load(path: str | Path, parser: argparse.ArgumentParser, section: str | None = None) -> dict:
    """The recipe (its top level, or its table ``section``) as ``{dest: value}``; raises ValueError naming the
    valid keys on any unknown key."""
    path = Path(path)
    raw = _read_toml(path)
    if section is not None:
        raw = raw.get(section, {})
        if not isinstance(raw, dict):
            raise ValueError(f"recipe {path}: {section!r} must be a table ([{section}])")
        path = f"{path} [{section}]"
    else:
        raw = {k: v for k, v in raw.items() if not (k in SECTIONS and isinstance(v, dict))}
    valid = recipe_keys(parser)
    out, problems = {}, []
    for key, value in raw.items():
        norm = key.replace("_", "-")
        if norm in {k.replace("_", "-") for k in PER_RUN}:
            problems.append(f"{key!r} is a per-run option; pass --{norm} on the command line")
            continue
        action = valid.get(norm)
        if action is None:
            problems.append(f"unknown key {key!r}")
            continue
        why = _check_value(key, action, value)
        if why:
            problems.append(why)
            continue
        out[action.dest] = float(value) if action.type is float else value
    if problems:
        raise ValueError(f"recipe {path}: {'; '.join(problems)}. Valid keys: {', '.join(sorted(valid))}")
    return out


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def apply(parser: argparse.ArgumentParser, argv=None, section: str | None = None) -> dict:
    """Read ``--recipe`` from ``argv`` and set its values (the table ``section``'s, if given) as ``parser``'s
    defaults.

    Returns ``{"recipe": path, "recipe_sha256": hex}`` for the run's records, or ``{}`` without a recipe.
    A bad recipe ends the program through ``parser.error`` (exit status 2).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    known, _ = pre.parse_known_args(argv)
    if not known.recipe:
        return {}
    try:
        values = load(known.recipe, parser, section)
    except ValueError as exc:
        parser.error(str(exc))
    parser.set_defaults(**values)
    return {"recipe": str(known.recipe), "recipe_sha256": sha256(known.recipe)}


def check_seeds(seeds, own: int, where: str) -> list[int]:
    """``seeds`` as further trainings' init seeds, or ValueError: distinct non-negative integers, none of them
    ``own`` (the first training's initialisation seed)."""
    if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
        raise ValueError(f"{where}: init seeds are non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: a seed is given twice ({seeds})")
    if own in seeds:
        raise ValueError(f"{where}: {own} is the first training's own seed (its --init-seed, else the split seed), "
                         f"so that member would repeat it; choose other seeds")
    return seeds


def first_init_seed(path: str | Path, train_flags: str = "", split_seed: int | None = None) -> int:
    """The first training's initialisation seed as make runs it: ``--init-seed`` in ``train_flags`` (TRAIN_FLAGS),
    else the recipe's ``init-seed``, else the split seed: ``--seed`` in ``train_flags``, else ``split_seed``
    (make cv's CV_SEED), else the recipe's ``seed``, else 0."""
    raw = _read_toml(Path(path))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--seed", type=int)
    pre.add_argument("--init-seed", type=int)
    flags, _ = pre.parse_known_args(shlex.split(train_flags))
    for value in (flags.init_seed, raw.get("init-seed", raw.get("init_seed")), flags.seed, split_seed):
        if value is not None:
            return value
    return raw.get("seed", 0)


def member_seeds(path: str | Path, own: int | None = None) -> list[int]:
    """The recipe's ``[ensemble] init-seeds``: the ``--init-seed`` of each further training served with the first
    (empty: one training), checked against ``own`` (default: ``first_init_seed`` of the recipe alone).
    ValueError on an unknown key or a bad list (``check_seeds``)."""
    path = Path(path)
    table = _read_toml(path).get("ensemble", {})
    if not isinstance(table, dict):
        raise ValueError(f"recipe {path}: 'ensemble' must be a table ([ensemble])")
    if unknown := sorted(set(table) - {"init-seeds", "init_seeds"}):
        raise ValueError(f"recipe {path} [ensemble]: unknown key {unknown[0]!r}. Valid keys: init-seeds")
    return check_seeds(table.get("init-seeds", table.get("init_seeds", [])),
                       first_init_seed(path) if own is None else own, f"recipe {path} [ensemble] init-seeds")


DISTILL_KEYS = ("teachers", "init-seed", "temperature", "weight")


def student_flags(path: str | Path, out: str, members: list[int], own: int) -> list[str]:
    """The student's own train options from the recipe's ``[distill]`` table (empty without one): a ``--teacher``
    for the first training (``out``) and for each member (``out-initS``, ``S`` in ``members``), the student's
    ``--init-seed``, ``--distill-temperature`` and ``--distill-weight``. ValueError on an unknown key, a missing or
    bad value, or a student seed that repeats a teacher's (``own``: the first training's)."""
    path = Path(path)
    table = _read_toml(path).get("distill")
    if table is None:
        return []
    where = f"recipe {path} [distill]"
    if not isinstance(table, dict):
        raise ValueError(f"recipe {path}: 'distill' must be a table ([distill])")
    table = {k.replace("_", "-"): v for k, v in table.items()}
    if unknown := sorted(set(table) - set(DISTILL_KEYS)):
        raise ValueError(f"{where}: unknown key {unknown[0]!r}. Valid keys: {', '.join(DISTILL_KEYS)}")
    if missing := [k for k in DISTILL_KEYS if k not in table]:
        raise ValueError(f"{where}: {missing[0]!r} is missing (give {', '.join(DISTILL_KEYS)})")
    if table["teachers"] != "ensemble":
        raise ValueError(f"{where}: teachers = \"ensemble\" (the recipe's own trainings) is the one kind, got "
                         f"{table['teachers']!r}; other teachers are run folders: python -m train --teacher RUN")
    seed = table["init-seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{where}: init-seed is a non-negative integer, got {seed!r}")
    if seed in [own, *members]:
        raise ValueError(f"{where}: init-seed {seed} is a teacher's own seed (teachers {[own, *members]}); "
                         "the student must start elsewhere")
    for key, v in (("temperature", table["temperature"]), ("weight", table["weight"])):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 or (key == "weight" and v > 1):
            raise ValueError(f"{where}: {key} is a number {'in (0, 1]' if key == 'weight' else 'above 0'}, got {v!r}")
    teachers = [out] + [f"{out}-init{s}" for s in members]
    return [x for run in teachers for x in ("--teacher", run)] + [
        "--init-seed", str(seed), "--distill-temperature", repr(float(table["temperature"])),
        "--distill-weight", repr(float(table["weight"]))]


def main(argv=None) -> int:
    """``python -m train.recipe members FILE [--given SEEDS] [--train-flags FLAGS] [--seed N]``: print the
    ensemble's further init seeds, space-separated (nothing for one training), for make. ``--given`` (make's
    MODEL_MEMBERS/CV_MEMBERS): seeds chosen on the command line instead of the recipe's (its table is then not
    read; the word ``recipe`` means the recipe's). Either way none may repeat the first training's own seed, as
    ``--train-flags`` (TRAIN_FLAGS) and ``--seed`` (CV_SEED) make it.

    ``python -m train.recipe student FILE --out RUN [--members SEEDS] ...``: print the student's train options from
    the recipe's ``[distill]`` table, shell-quoted (nothing without one), for make (``student_flags``)."""
    ap = argparse.ArgumentParser(prog="python -m train.recipe", description=main.__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("members", help="the further trainings' --init-seed values of FILE's [ensemble] table")
    m.add_argument("recipe")
    m.add_argument("--given", default="recipe", help="seeds given instead, e.g. '1 2' ('' for one training)")
    m.add_argument("--train-flags", default="", help="options every training gets (make's TRAIN_FLAGS)")
    m.add_argument("--seed", type=int, default=None, help="the split seed in use, if not the recipe's (make cv)")
    st = sub.add_parser("student", help="the student's train options from FILE's [distill] table (nothing "
                        "without one): its teachers are RUN and RUN-initS for each member seed S")
    st.add_argument("recipe")
    st.add_argument("--out", required=True, help="the first training's run folder (the members' are OUT-initS)")
    st.add_argument("--members", default="", help="the member seeds make trains (train.recipe members' answer)")
    st.add_argument("--train-flags", default="", help="options every training gets (make's TRAIN_FLAGS)")
    st.add_argument("--seed", type=int, default=None, help="the split seed in use, if not the recipe's (make cv)")
    args = ap.parse_args(argv)
    try:
        own = first_init_seed(args.recipe, args.train_flags, args.seed)
        if args.command == "student":
            words = args.members.split()
            if not all(w.isdigit() for w in words):
                raise ValueError(f"student --members {args.members!r}: give non-negative integers, e.g. '1 2'")
            print(shlex.join(student_flags(args.recipe, args.out, [int(w) for w in words], own)))
            return 0
        if args.given.strip() == "recipe":
            seeds = member_seeds(args.recipe, own)
        else:
            words = args.given.split()
            if not all(w.isdigit() for w in words):
                raise ValueError(f"members {args.given!r}: give non-negative integers, e.g. '1 2'")
            seeds = check_seeds([int(w) for w in words], own, f"members {args.given!r}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(" ".join(map(str, seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
