"""What every command line of the toolkit shares: ``--version``, help that tells the truth about defaults, the
program name (``cxr-edge`` when run as a console script, ``python -m edge_runtime`` otherwise) and a
rate/time-left text for long loops. No heavy imports here: ``--help`` and ``--version`` stay fast everywhere.
"""
from __future__ import annotations

import argparse
import configparser
import os
import sys
from pathlib import Path

DIST = "cxr-edge"
SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def version() -> str:
    """The installed package's version; from a source checkout that is not installed, setup.cfg's."""
    from importlib import metadata

    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        pass
    cfg = configparser.ConfigParser()
    try:
        cfg.read(SETUP_CFG, encoding="utf-8")
        return cfg.get("metadata", "version")
    except (OSError, configparser.Error):
        return "unknown"


def add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                   help="print the version and exit")


def prog(module_prog: str) -> str:
    """``cxr-edge`` (etc.) when started as a console script, else ``module_prog`` (``python -m ...``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("cxr-") else module_prog


class HonestDefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after each option's help, except where it misleads: on on/off flags (``--no-augment``
    would read "(default: True)" for the value of the setting, not of the flag), where the help already
    says its default in words, and where there is no default value to show (None, "")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 or "default" in text.lower() or action.default in (None, ""):
            return text
        return super()._get_help_string(action)


class HonestRawDescriptionFormatter(HonestDefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """The same, keeping the description's own line breaks (a module docstring with a usage block)."""


def rate_text(done: int, total: int, seconds: float, start: int = 0) -> str:
    """``"3/10, 12.5 s each, ~1 min 28 s left"``: rate and time left after ``done`` of ``total`` steps, the
    rate measured over the ``done - start`` steps that took ``seconds`` (``start``: steps done before, e.g. by
    an interrupted run that was resumed)."""
    if done <= start or seconds <= 0:
        return f"{done}/{total}"
    each = seconds / (done - start)
    left = each * max(total - done, 0)
    return f"{done}/{total}, {_duration(each)} each" + (f", ~{_duration(left)} left" if done < total else "")


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec} s" if sec else f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"
