"""Device command line: ``cxr-edge`` or ``python -m edge_runtime {classify,serve,set-password,kit} ...``.

Each sub-command lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``, imported
only when chosen, so ``--help`` and the classify path stay light.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_runtime.cli_common import add_version, prog

COMMANDS = {  # name -> module providing add_parser(sub) and run(args)
    "classify": "edge_runtime.cli_classify",
    "serve": "edge_runtime.web.cli",
    "set-password": "edge_runtime.web.cli_password",
    "kit": "edge_runtime.kit",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog("python -m edge_runtime"),
                                description="Chest X-ray screening aid on the device (not a diagnosis).")
    add_version(p)
    p.add_argument("--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:  # an optional part (e.g. the web page) not installed
            s = sub.add_parser(name, help=f"(unavailable: {exc})")
            s.set_defaults(_unavailable=str(exc))
            continue
        mod.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if getattr(args, "_unavailable", None):
        print(f"error: '{args.command}' is not available here: {args._unavailable}", file=sys.stderr)
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
