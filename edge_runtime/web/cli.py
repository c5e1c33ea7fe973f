"""``python -m edge_runtime serve --bundle B [--host 127.0.0.1] [--port 8080] [--data-dir DIR]``

Serves the clinic page with waitress (a production WSGI server that runs on a Raspberry Pi), never Flask's
development server. Binding to anything but loopback needs an operator password (``set-password``) first.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

DEFAULT_DATA_DIR = os.environ.get("CXR_DATA_DIR", "~/cxr-edge-data")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                   help="folder for the screening history, images, password hash and session key "
                        "(default: $CXR_DATA_DIR or %(default)s)")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="serve the clinic web page (upload, result, history, monitoring)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="model bundle folder (or a model file with metadata.json)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s; any other needs set-password first)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default %(default)s; 0 = any free port)")
    add_data_dir(p)
    p.add_argument("--backend", default=None, help="force a runtime backend (litert, onnxruntime, openvino)")
    p.add_argument("--format", default=None, metavar="KEY",
                   help="serve this artifact of the bundle (a format key, e.g. tflite_fp32; default: the bundle's "
                        "first choice; the kit's install.sh passes the one its self-test timed fastest here)")
    p.add_argument("--num-threads", type=int, default=None, help="inference threads (default: the backend's)")
    p.add_argument("--threads", type=int, default=4,
                   help="HTTP worker threads (default %(default)s); inferences still run one at a time")
    p.add_argument("--max-file-mb", type=float, default=40, help="largest upload per file (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=50_000_000,
                   help="largest image, width x height (default %(default)s)")
    p.add_argument("--lang", choices=("en", "fr"), default="en", help="default page language")
    p.add_argument("--site-profile", default=None, metavar="FILE",
                   help="the site profile to read, and where the page writes one (default: site.json beside the "
                        "bundle; a read-only bundle, as the kit installs it, needs a file in a writable folder)")
    p.set_defaults(run=run)
    return p


def _lock(data_dir: Path):
    """One server per data directory (the lock goes with the process, even on kill -9)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    fh = open(data_dir / ".serve.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RuntimeError(f"{data_dir}: another server is already using this data directory") from None
    return fh


def listen(app, host: str, port: int, threads: int = 4):
    """A waitress server bound to host:port (not yet serving). Raises OSError when it cannot listen there."""
    import logging

    from waitress.server import create_server

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # uploads queue for the model by design
    # waitress refuses a larger Content-Length (413) before reading the body; below it, waitress buffers the
    # body (in a temporary file past 512 kB) before the app sees the request, and the app then refuses what
    # the endpoint cannot use (app.body_limit) without reading further
    body = int(app.config["MAX_CONTENT_LENGTH"])
    return create_server(app, host=host, port=port, threads=threads, max_request_body_size=body,
                         ident="cxr-edge", channel_timeout=120)


def run_server(server, host: str) -> None:
    """Serve until interrupted; prints the URL (with the real port when port 0 was asked)."""
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{server.effective_port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def serve(app, host: str, port: int, threads: int = 4) -> None:
    """Run ``app`` under waitress until interrupted."""
    run_server(listen(app, host, port, threads), host)


def listen_error(host: str, port: int, exc: OSError) -> str:
    """One line that says why the server cannot listen, and what to do."""
    reason = exc.strerror or str(exc)
    hint = {errno.EADDRINUSE: "another program (or another server) is using that port: stop it or choose "
                              "another --port",
            errno.EACCES: "ports below 1024 need administrator rights: choose a --port above 1023",
            errno.EADDRNOTAVAIL: "that address is not one of this machine's: check --host"}.get(exc.errno, "")
    return f"error: cannot listen on {host}:{port}: {reason}" + (f" ({hint})" if hint else "")


def run(args) -> int:
    from edge_runtime.web.auth import is_loopback, load_auth
    from edge_runtime.web.store import private_dir

    data_dir = Path(args.data_dir).expanduser()
    try:
        private_dir(data_dir)
        if not is_loopback(args.host) and load_auth(data_dir) is None:
            print(f"error: serving on {args.host} (reachable from other machines) needs an operator password.\n"
                  f"  Set one first: python -m edge_runtime set-password --data-dir {args.data_dir}",
                  file=sys.stderr)
            return 2
        lock = _lock(data_dir)  # noqa: F841 (held for the life of the process)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401
    except ImportError as exc:
        print(f"error: the web page needs Flask and waitress ({exc}); install the 'edge' extra", file=sys.stderr)
        return 2
    from edge_runtime.bundle import BundleError
    from edge_runtime.classifier import Classifier
    from edge_runtime.web.app import create_app

    try:
        clf = Classifier.from_bundle(args.bundle, backend=args.backend, num_threads=args.num_threads, fmt=args.format,
                                     serving=True, site_profile=args.site_profile)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(clf, data_dir, {"HOST": args.host, "MAX_FILE_MB": args.max_file_mb,
                                     "MAX_PIXELS": args.max_pixels, "DEFAULT_LANG": args.lang})
    web = app.extensions["cxr"]
    swept = web.store.sweep_orphans()
    if swept:
        print(f"removed {swept} image file(s) left by an interrupted upload", file=sys.stderr)
    for line in web.warnings_text():
        print(f"WARNING: {line}", file=sys.stderr)
    meta = clf.metadata
    print(f"model {meta.model_name} {meta.model_version} ({clf.name}, {clf.backend}); data in {data_dir}", file=sys.stderr)
    try:
        server = listen(app, args.host, args.port, args.threads)
    except OSError as exc:  # a busy port, a port that needs root, an address not on this machine
        print(listen_error(args.host, args.port, exc), file=sys.stderr)
        return 1
    run_server(server, args.host)
    return 0
