"""``python -m edge_runtime set-password [--data-dir DIR]``: set the operator password (salted hash) and
issue an API token (shown once). Needed before ``serve --host`` binds to anything but loopback; once set,
every page needs a login and every API call the token (or a login session). A running server picks the
change up at its next request; existing logins end.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from edge_runtime.web.cli import add_data_dir


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("set-password", help="set the web page's operator password and API token",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(p)
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input (for scripts)")
    p.add_argument("--keep-token", action="store_true", help="keep the current API token (default: issue a new one)")
    p.set_defaults(run=run)
    return p


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("New operator password: ")
    if getpass.getpass("Repeat it: ") != first:
        raise ValueError("the two passwords differ")
    return first


def run(args) -> int:
    from edge_runtime.web.auth import AUTH_FILE, set_password

    data_dir = Path(args.data_dir).expanduser()
    try:
        password = _read_password(args.password_stdin)
        token = set_password(data_dir, password, new_token=not args.keep_token)
    except (ValueError, OSError, EOFError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"password saved (salted hash) in {data_dir / AUTH_FILE}")
    if token:
        print("API token (shown only now; send it as 'Authorization: Bearer <token>'):")
        print(token)
    return 0
