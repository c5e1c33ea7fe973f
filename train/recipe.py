"""Training recipes: a versioned TOML file whose keys are the train CLI's option names.

``apply(parser, argv)`` reads ``--recipe FILE`` from ``argv`` (if given), checks every key against the
parser's options and sets them as the parser's defaults, so a flag given on the command line still wins.
Keys are option names without the dashes (``image-size``; ``image_size`` is accepted too); on/off switches
such as ``--no-augment`` take their destination name with a boolean (``augment = false``). Unknown keys,
per-run options and values of the wrong type are errors (``parser.error``: exit status 2).

A table ``[convert]`` holds the conversion's options the same way (``python -m convert --recipe FILE``: keys are
convert's option names, e.g. ``views = "zoom3"``); training skips it, conversion reads only it.
"""
from __future__ import annotations

import argparse
import hashlib
import tomllib
from pathlib import Path

# options that describe one run, not a recipe: they stay on the command line
PER_RUN = frozenset({"data", "out", "split", "fold", "teacher", "member", "resume", "redo_qat", "verbose", "recipe", "help",
                     "version", "force"})
SECTIONS = frozenset({"convert"})  # tables of the recipe read by another command


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
    if action.choices is not None and value not in action.choices:
        return f"{key} must be one of {', '.join(map(str, action.choices))}, got {value!r}"
    return None


def load(path: str | Path, parser: argparse.ArgumentParser, section: str | None = None) -> dict:
    """The recipe (its top level, or its table ``section``) as ``{dest: value}``; raises ValueError naming the
    valid keys on any unknown key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from None
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
