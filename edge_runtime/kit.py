"""The offline install kit: everything a Raspberry Pi, Jetson or mini-PC needs, on one USB stick.

    python -m edge_runtime kit --bundle B --platform linux_aarch64 --python 3.11 --out kit.tar.gz

Run on the workstation (online, or offline from a local wheel folder with ``--no-index --find-links DIR``).
It gathers, for the target platform and Python, binary wheels of this project, its ``edge`` extra and the
chosen backend (``pip download --only-binary=:all: --platform ...``), copies the model bundle, classifies
the self-test samples with the same backend to record the expected probabilities, and writes:

    cxr-edge-kit-<platform>-py<XY>-<backend>/
      install.sh            offline installer (pip --no-index), service, self-test, prints the URL
      cxr-edge.service.in   systemd unit template (filled in by install.sh)
      requirements.txt      exact pins of every wheel in the wheelhouse
      kit.json              what the kit holds and how it was built
      wheelhouse/*.whl      the project wheel, pip, and every dependency for the target
      bundle/               the model bundle (its own SHA256SUMS inside), less what this backend cannot load
      selftest/             selftest.py, samples/*.png, expected.json (each candidate artifact's results)
      SHA256SUMS            every file above (``sha256sum -c SHA256SUMS``)

A dependency without a wheel for the target stops the build with a message naming the package.

Self-test samples: a model trained on real data (``metadata.synthetic`` false) is checked on real films,
``SAMPLES_PER_CLASS`` validation films per class from its training run's split.csv (or ``--sample``); a
synthetic demo model on the embedded phantoms. What the self-test demands (``kit_selftest``): LiteRT's
reference kernels reproduce the workstation exactly (proves the install); the optimised kernels may drift up to
``DRIFT_LIMIT`` (reported); a real-data model that already drifts more on the workstation is refused here.

Which artifact the device serves: every artifact of the backend that passed its parity check at conversion is
a candidate (``--formats`` narrows them; one the rule refuses here is left out, said in kit.json). The device's
self-test checks each, times those that pass on its own CPU and serves the fastest; install.sh writes the
choice (``selftest/choice.json``: format, reason, timings, CPU) and starts the service with ``--format``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import platform as _platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.kit_selftest import (DRIFT_LIMIT, KIT_FILES, SAMPLES_PER_CLASS, TOLERANCE, KitError,
                                       choose_samples, describe_samples, expected_candidates)

log = logging.getLogger(__name__)

PROJECT = "cxr-edge"
ARCHES = ("aarch64", "x86_64")
DEFAULT_GLIBC = "2.36"  # Debian 12 / Raspberry Pi OS Bookworm; JetPack 6 (Ubuntu 22.04) is 2.35
# --backend -> (the runtime's backend name, extras of this project, extra requirements)
BACKENDS = {
    "litert": ("litert", ("edge",), ()),
    "onnxruntime": ("onnxruntime", ("edge", "onnx"), ()),
    "openvino": ("openvino", ("edge", "openvino"), ()),
    # Jetson: NVIDIA's CUDA/TensorRT build (not on PyPI; bring it with --find-links). Same module name.
    "onnxruntime-gpu": ("onnxruntime", ("edge",), ("onnxruntime-gpu",)),
}
SOURCE_PARTS = ("edge_runtime", "train", "convert", "benchmarks", "setup.cfg", "pyproject.toml", "README.md")


@dataclass(frozen=True)
class Target:
    arch: str  # uname -m on the device
    python: str  # "3.11"
    glibc: str  # highest glibc of the device, e.g. "2.36"

    @property
    def name(self) -> str:
        return f"linux_{self.arch}-py{self.python.replace('.', '')}"

    def platform_tags(self) -> list[str]:
        """Every manylinux tag the device accepts, newest first (pip matches --platform tags exactly)."""
        major, minor = (int(v) for v in self.glibc.split("."))
        if major != 2 or minor < 17:
            raise KitError(f"glibc {self.glibc}: the kit supports glibc 2.17 or newer")
        tags = [f"manylinux_2_{m}_{self.arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{self.arch}"]
        if self.arch == "x86_64":
            tags += ["manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
        # last: plain linux_<arch> wheels (PyPI refuses them; only --find-links folders hold them, e.g. NVIDIA's
        # onnxruntime-gpu for Jetson, built for that device)
        return tags + [f"linux_{self.arch}"]


def host_glibc() -> str:
    name, version = _platform.libc_ver()
    return version if name == "glibc" and version else DEFAULT_GLIBC


def resolve_target(platform: str = "host", python: str | None = None, glibc: str | None = None) -> Target:
    """``host`` or ``linux_<arch>`` (``linux_aarch64``, ``linux_x86_64``) -> Target."""
    if platform == "host":
        host = sysconfig.get_platform()  # e.g. linux-x86_64
        if not host.startswith("linux-"):
            raise KitError(f"host platform {host}: kits are for Linux devices; pass --platform linux_aarch64")
        platform = "linux_" + host.split("-", 1)[1]
        python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        glibc = glibc or host_glibc()
    m = re.fullmatch(r"linux_(\w+)", platform)
    if not m or m.group(1) not in ARCHES:
        raise KitError(f"unknown platform {platform!r}; use host or one of "
                       f"{', '.join('linux_' + a for a in ARCHES)}")
    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"3\.\d+", python):
        raise KitError(f"--python {python!r}: give major.minor, e.g. 3.11")
    return Target(m.group(1), python, glibc or DEFAULT_GLIBC)


# ----------------------------------------------------------------------------- wheels
def project_root() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "setup.cfg").is_file() and (root / "edge_runtime").is_dir() else None


def build_project_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build this project's wheel from a clean copy of the source tree (the checkout is left untouched)."""
    source = source or project_root()
    if source is None:
        raise KitError("no source tree found to build the cxr-edge wheel from; pass --project-wheel")
    with tempfile.TemporaryDirectory(prefix="cxr-kit-src-") as tmp:
        for part in SOURCE_PARTS:
            src = source / part
            if src.is_dir():
                shutil.copytree(src, Path(tmp) / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif src.is_file():
                shutil.copy2(src, Path(tmp) / part)
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--wheel-dir", str(dest), tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise KitError(f"building the {PROJECT} wheel failed:\n{r.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("cxr_edge-*.whl"))
    if not wheels:
        raise KitError(f"building the {PROJECT} wheel produced no cxr_edge-*.whl in {dest}")
    check_wheel_data(wheels[-1], source)
    return wheels[-1]


def check_wheel_data(wheel: Path, source: Path) -> None:
    """Every data file the runtime reads (templates, messages, static files: any file under edge_runtime/
    but .py/.md and the kit's own files) must be inside the wheel, or the device's page cannot start."""
    with zipfile.ZipFile(wheel) as zf:
        inside = set(zf.namelist())
    needed = sorted(p.relative_to(source).as_posix() for p in (source / "edge_runtime").rglob("*")
                    if p.is_file() and p.suffix not in (".py", ".pyc", ".md") and "__pycache__" not in p.parts
                    and "kit_files" not in p.relative_to(source).parts)
    missing = [n for n in needed if n not in inside]
    if missing:
        dirs = sorted({n.rsplit("/", 1)[0] for n in missing})
        raise KitError(f"the {PROJECT} wheel lacks {len(missing)} data file(s) the device needs, e.g. "
                       f"{', '.join(missing[:3])}; add them to setup.cfg [options.package_data] (folders: "
                       f"{', '.join(dirs)})")


def wheel_name_version(path: Path) -> tuple[str, str]:
    """('opencv-python-headless', '5.0.0.93') from a wheel file name (normalised name)."""
    parts = path.name[:-len(".whl")].split("-")
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]


def _missing(output: str) -> list[str]:
    """Package names pip could find no wheel for, from both of its ways of saying so."""
    names = set(re.findall(r"No matching distribution found for ([^\s]+)", output))
    # with constraints the resolver reports a conflict, then lists the packages without any distribution
    block = re.search(r"no matching distributions available for your environment:\n((?:[ \t]+\S.*\n?)+)", output)
    if block:
        names.update(line.strip() for line in block.group(1).splitlines() if line.strip())
    pins = dict(re.findall(r"requested \(constraint\) (([A-Za-z0-9_.\-]+)==\S+)", output))
    pins = {name: spec for spec, name in pins.items()}
    return sorted(pins.get(n, n) for n in names)


def download_wheels(requirements: list[str], dest: Path, target: Target, constraints: Path | None = None,
                    find_links: tuple = (), no_index: bool = False, python: str = sys.executable) -> list[Path]:
    """``pip download`` binary wheels for the target; a requirement without one raises KitError naming it."""
    cmd = [python, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:", "--implementation", "cp",
           "--python-version", target.python, "--progress-bar", "off"]
    for tag in target.platform_tags():
        cmd += ["--platform", tag]
    if constraints:
        cmd += ["--constraint", str(constraints)]
    if no_index:
        cmd.append("--no-index")
    for fl in find_links:
        cmd += ["--find-links", str(fl)]
    log.info("pip download for %s (glibc <= %s): %s", target.name, target.glibc, " ".join(requirements))
    returncode, out = _pip_with_progress(cmd + list(requirements))
    if returncode:
        out = out.strip()
        missing = _missing(out)
        where = f"linux {target.arch}, CPython {target.python}, glibc <= {target.glibc}"
        if missing:
            names = ", ".join(missing)
            raise KitError(f"no wheel for {where}: {names}. Nothing was installed. Pick another backend or Python, "
                           f"bring the wheel with --find-links DIR, or relax the pin (--constraints none).\n"
                           f"pip said:\n{_tail(out)}")
        raise KitError(f"pip download for {where} failed:\n{_tail(out)}")
    return sorted(dest.glob("*.whl"))


def _pip_with_progress(cmd: list[str]) -> tuple[int, str]:
    """Run pip, logging each wheel as it is saved with the count, the pace and the time so far (pip cannot
    say how many will come before it has resolved them all); (exit status, everything pip printed)."""
    import time

    t0, saved, lines = time.perf_counter(), 0, []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("Saved ", "File was already downloaded ")):
                saved += 1
                secs = time.perf_counter() - t0
                log.info("  wheel %d (%.1f s each, %.0f s so far): %s", saved, secs / saved, secs,
                         line.split()[-1].rsplit("/", 1)[-1])
    return proc.returncode, "".join(lines)


def _tail(text: str, lines: int = 12) -> str:
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("WARNING: Location", "Looking in"))]
    return "\n".join("  " + line for line in keep[-lines:])


# ----------------------------------------------------------------------------- the kit
@dataclass
class Kit:
    path: Path  # the folder or the .tar.gz
    target: Target
    backend: str
    wheels: list[str] = field(default_factory=list)
    size_bytes: int = 0
    samples: str = ""  # what the self-test classifies, in words
    rule: str = ""  # what the self-test demands, in words
    workstation_drift: float | None = None
    candidates: list[str] = field(default_factory=list)  # artifacts the device may serve (fastest that passes)
    excluded: dict = field(default_factory=dict)  # candidates left out here, and why


def _fill(template: str, values: dict) -> str:
    for k, v in values.items():
        template = template.replace(f"@{k}@", str(v))
    if left := re.findall(r"@[A-Z_]+@", template):
        raise KitError(f"kit template has unfilled placeholders {sorted(set(left))}")
    return template


def write_sums(folder: Path) -> Path:
    """SHA256SUMS of every file in the kit (``sha256sum -c`` format), the bundle's own sums file included."""
    lines = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p != folder / "SHA256SUMS":
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            lines.append(f"{h.hexdigest()}  {p.relative_to(folder).as_posix()}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))
    return folder / "SHA256SUMS"


def copy_bundle(bundle: Path, dest: Path, runtime_backend: str) -> list[str]:
    """Copy a verified bundle into a kit for one runtime backend; return the names left out.

    Left out, by suffix: what the device cannot load with that backend (the workstation's ``.keras`` model, which
    for an ensemble holds every member's float model, and other backends' files, OpenVINO's ``.xml``/``.bin``).
    The copy's SHA256SUMS keeps the conversion's digest of every file it holds, so the device's check still ties
    each file to the conversion; the copy is verified before the kit is written."""
    from edge_runtime import formats as F
    from edge_runtime.bundle import SUMS, verify_sums

    def loads_here(p: Path) -> bool:  # by suffix, so a leftover (a .bin without its .xml) goes too
        if p.suffix == ".keras":
            return False
        owner = "openvino" if p.suffix in (".xml", ".bin") else F.backend_of(p)
        return owner is None or owner == runtime_backend

    drop = {p.name for p in bundle.iterdir() if p.is_file() and not loads_here(p)}
    shutil.copytree(bundle, dest, ignore=lambda d, names: [n for n in names if n == "__pycache__"
                                                           or (Path(d) == bundle and n in drop)])
    if drop:
        kept = [line for line in (bundle / SUMS).read_text(encoding="utf-8").splitlines(keepends=True)
                if line.strip() and re.sub(r"^[0-9a-fA-F]{64} [ *]", "", line.rstrip("\n")) not in drop]
        (dest / SUMS).write_text("".join(kept), encoding="utf-8")
    verify_sums(dest)
    return sorted(drop)


def _default_constraints() -> Path | None:
    root = project_root()
    path = root / "requirements" / "constraints.txt" if root else None
    return path if path and path.is_file() else None


def build_kit(bundle: str | Path, out: str | Path, platform: str = "host", python: str | None = None,
              backend: str = "litert", glibc: str | None = None, constraints: str | Path | None = "default",
              find_links: tuple = (), no_index: bool = False, project_wheel: str | Path | None = None,
              samples: list[Path] | None = None, tolerance: float = TOLERANCE,
              drift_limit: float = DRIFT_LIMIT, formats: list[str] | None = None) -> Kit:
    """Build the kit into ``out`` (a folder, or a ``.tar.gz``/``.tgz`` file). See the module docstring."""
    from edge_runtime.bundle import BundleError, verify_sums
    from edge_runtime.metadata import ModelMetadata

    bundle, out = Path(bundle), Path(out)
    if backend not in BACKENDS:
        raise KitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    runtime_backend, extras, extra_reqs = BACKENDS[backend]
    target = resolve_target(platform, python, glibc)
    try:
        verify_sums(bundle)
    except BundleError as exc:
        raise KitError(str(exc)) from exc
    if constraints == "default":
        constraints = _default_constraints()
    elif constraints in (None, "", "none"):
        constraints = None
    elif not Path(constraints).is_file():
        raise KitError(f"--constraints {constraints}: no such file")
    try:
        metadata = ModelMetadata.load(bundle / "metadata.json")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise KitError(f"{bundle}/metadata.json: {exc}") from exc
    paths, info = choose_samples(bundle, metadata, samples)
    expected = expected_candidates(bundle, runtime_backend, paths, formats, tolerance, drift_limit, info)

    tarball = out.name.endswith((".tar.gz", ".tgz"))
    if not tarball and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KitError(f"{out}: exists and is not an empty folder; choose a new --out")
    try:
        return _assemble(bundle, out, tarball, target, backend, extras, extra_reqs, expected, constraints,
                         find_links, no_index, project_wheel, paths, info)
    except BaseException:
        if not tarball:
            shutil.rmtree(out, ignore_errors=True)  # nothing half-built left behind
        raise


def _assemble(bundle, out, tarball, target, backend, extras, extra_reqs, expected, constraints, find_links,
              no_index, project_wheel, samples, samples_info) -> Kit:
    runtime_backend = BACKENDS[backend][0]
    top = f"cxr-edge-kit-{target.name}-{backend}"
    with tempfile.TemporaryDirectory(prefix="cxr-kit-") as tmp:
        kit = Path(tmp) / top if tarball else out
        wheelhouse = kit / "wheelhouse"
        wheelhouse.mkdir(parents=True)
        if project_wheel:
            own = wheelhouse / Path(project_wheel).name
            shutil.copy2(project_wheel, own)  # as given (the device's self-test starts the page to check it)
        else:
            own = build_project_wheel(wheelhouse)
        spec = f"{own}[{','.join(extras)}]"
        wheels = download_wheels([spec, "pip", *extra_reqs], wheelhouse, target, constraints and Path(constraints),
                                 tuple(find_links), no_index)
        pins = sorted(wheel_name_version(w) for w in wheels)
        version = wheel_name_version(own)[1]
        (kit / "requirements.txt").write_text(  # extra requirements (onnxruntime-gpu) are among the pins
            f"# {PROJECT} kit for {target.name}, backend {backend}: install with pip --no-index\n"
            f"{PROJECT}[{','.join(extras)}]=={version}\n"
            + "".join(f"{n}=={v}\n" for n, v in pins if n not in (PROJECT, "pip")))

        left_out = copy_bundle(bundle, kit / "bundle", runtime_backend)
        st = kit / "selftest"
        (st / "samples").mkdir(parents=True)
        shutil.copy2(KIT_FILES / "selftest.py", st / "selftest.py")
        for p in samples:  # a handful of films at most (choose_samples)
            shutil.copy2(p, st / "samples" / p.name)
        (st / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
        values = {"ARCH": target.arch, "PYTHON_VERSION": target.python, "BACKEND": backend,
                  "RUNTIME_BACKEND": runtime_backend, "KIT_NAME": top, "VERSION": version}
        (kit / "install.sh").write_text(_fill((KIT_FILES / "install.sh").read_text(), values))
        (kit / "install.sh").chmod(0o755)
        shutil.copy2(KIT_FILES / "cxr-edge.service.in", kit / "cxr-edge.service.in")
        shutil.copy2(KIT_FILES / "README.txt", kit / "README.txt")
        meta = {"kit": top, "project": PROJECT, "version": version, "platform": f"linux_{target.arch}",
                "python": target.python, "glibc_max": target.glibc, "platform_tags": target.platform_tags(),
                "backend": backend, "runtime_backend": runtime_backend, "extras": list(extras),
                "wheels": [w.name for w in wheels], "model": expected["model"],
                "candidates": {k: c["model"] for k, c in expected["candidates"].items()},
                "bundle_left_out": left_out,  # files of the bundle this backend cannot load (copy_bundle)
                "left_out": expected["excluded"], "choice_margin": expected["margin"],
                "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "built_on": f"{_platform.machine()} Python {_platform.python_version()}",
                "constraints": str(constraints) if constraints else None,
                "samples": samples_info,
                "self_test": {k: expected[k] for k in ("exact", "tolerance", "drift_limit", "workstation_kernel_drift",
                                                       "rule")}}
        (kit / "kit.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_sums(kit)
        if tarball:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w:gz", compresslevel=1) as tf:  # wheels are zip-compressed already
                tf.add(kit, arcname=top)
            size = out.stat().st_size
        else:
            size = sum(p.stat().st_size for p in kit.rglob("*") if p.is_file())
    return Kit(out, target, backend, [w.name for w in wheels], size, describe_samples(samples_info),
               expected["rule"], expected["workstation_kernel_drift"], list(expected["candidates"]),
               expected["excluded"])


# ----------------------------------------------------------------------------- command line
def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "kit", help="build an offline install kit (wheels, bundle, install.sh, service) for a device",
        description="Build an offline install kit for a device. Runs on the workstation; the device needs no "
                    "internet: copy the kit, then `sudo ./install.sh`.")
    p.add_argument("--bundle", required=True, type=Path, help="model bundle folder (with SHA256SUMS)")
    p.add_argument("--out", required=True, type=Path, help="kit.tar.gz (or .tgz), or an empty/new folder")
    p.add_argument("--platform", default="host",
                   help="host, linux_aarch64 (Raspberry Pi 4/5, Jetson) or linux_x86_64 (default: %(default)s)")
    p.add_argument("--python", default=None, help="the device's Python, major.minor (default: this one)")
    p.add_argument("--glibc", default=None,
                   help=f"the device's glibc (default: {DEFAULT_GLIBC}, Bookworm; host: this one); JetPack 6: 2.35")
    p.add_argument("--backend", default="litert", choices=list(BACKENDS),
                   help="inference backend to ship (default: %(default)s)")
    p.add_argument("--constraints", default="default",
                   help="pins file for pip (default: the project's requirements/constraints.txt; 'none' for none)")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR",
                   help="also take wheels from this folder (repeatable), e.g. NVIDIA's onnxruntime-gpu wheel")
    p.add_argument("--no-index", action="store_true", help="do not contact a package index (offline build)")
    p.add_argument("--project-wheel", type=Path, help="use this cxr_edge wheel instead of building one")
    p.add_argument("--sample", "--samples", dest="sample", action="append", type=Path, default=None,
                   metavar="IMAGE", help=f"self-test image(s), repeatable (default: a model trained on real data: "
                   f"{SAMPLES_PER_CLASS} validation films per class from its run's split.csv; a synthetic one: "
                   f"the embedded phantoms)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help="self-test: probabilities match within this (default: %(default)s)")
    p.add_argument("--drift-limit", type=float, default=DRIFT_LIMIT,
                   help="LiteRT: largest optimised-kernel drift of a probability accepted on the device, and on "
                        "this workstation at build time (default: %(default)s)")
    p.add_argument("--formats", default=None, metavar="KEYS",
                   help="candidate artifacts the device may serve, comma-separated format keys (default: every "
                        "artifact of the backend that passed its parity check; the device's self-test serves the "
                        "fastest that passes there). One key: the device serves that artifact, untimed "
                        "(the bundle's other files of this backend are still copied)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    try:
        kit = build_kit(args.bundle, args.out, platform=args.platform, python=args.python, backend=args.backend,
                        glibc=args.glibc, constraints=args.constraints, find_links=tuple(args.find_links),
                        no_index=args.no_index, project_wheel=args.project_wheel, samples=args.sample,
                        tolerance=args.tolerance, drift_limit=args.drift_limit,
                        formats=[k.strip() for k in args.formats.split(",") if k.strip()] if args.formats else None)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"kit for {kit.target.name} ({kit.backend}, glibc <= {kit.target.glibc}): {kit.path} "
          f"({kit.size_bytes / 1e6:.1f} MB, {len(kit.wheels)} wheels)")
    print(f"self-test samples: {kit.samples}")
    if kit.workstation_drift is not None:
        print(f"optimised vs reference kernels on this workstation: max |probability diff| {kit.workstation_drift:.3g}")
    print(f"self-test rule: {kit.rule}")
    print(f"candidates the device may serve (the fastest that passes its self-test there): {', '.join(kit.candidates)}")
    for key, why in kit.excluded.items():
        print(f"left out: {key}: {why}")
    if kit.path.is_dir():
        print(f"on the device: copy the folder, then: cd {kit.path.name} && sudo ./install.sh")
    else:
        print(f"on the device: tar xzf {kit.path.name} && cd cxr-edge-kit-*/ && sudo ./install.sh")
    return 0
