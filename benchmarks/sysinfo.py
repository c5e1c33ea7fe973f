"""What machine and which library versions a benchmark ran on (read without importing the libraries)."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

from edge_runtime.kit_selftest import cpu_info, cpuinfo

PACKAGES = ("numpy", "opencv-python-headless", "ai-edge-litert", "tflite-runtime", "onnxruntime", "openvino",
            "tensorflow", "tf-keras")


def _cpu_model() -> str:
    """The CPU's name, and what tells two CPUs of one name apart where INT8 speed is concerned: its family and
    model numbers and the INT8 features it has ("AMD EPYC" names a Zen 3 without AVX-512 and a Zen 4 with VNNI
    alike, and INT8 runs 2-3x faster on the second; an absolute time never carries across them)."""
    fields = cpuinfo()
    name = next((fields[k] for k in ("model name", "hardware", "cpu model") if fields.get(k)),
                platform.processor() or platform.machine())
    ident = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model") if fields.get(k, "").isdigit())
    features = cpu_info()["int8_features"]
    detail = "; ".join(x for x in (ident, " ".join(features) if features else "") if x)
    return f"{name} ({detail})" if detail else name


def _cpu_family() -> str:
    """The "cpu family" (x86) or "CPU architecture" (ARM) line of /proc/cpuinfo."""
    fields = cpuinfo()
    return next((fields[k] for k in ("cpu family", "cpu architecture") if fields.get(k)), "")


def _mem_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    return None


# What a report's own output may change without making the code it ran "uncommitted": the reports and saved
# folds under docs/ and the Markdown documents. A chain of report commands (each writes docs/...) thus stamps
# every report with its commit; a change to code, recipes or tests still marks it.
OUTPUTS = (":(exclude)docs", ":(exclude)*.md")


def _git_commit(root: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *OUTPUTS], capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{head}{' (uncommitted changes)' if dirty else ''}" if head else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": _cpu_model(),
        "cpu_family": _cpu_family(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _mem_gb(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _git_commit(Path(__file__).resolve().parents[1]),
        "load_average_start": load_average(),
    }


def report_header(title: str, command: str, info: dict, sources=None) -> str:
    """The opening of a markdown report: title, the screening-aid line (naming the data ``sources`` when given,
    with a SYNTHETIC banner when any is synthetic), and the command, commit, date and CPU that produced it."""
    sources = sorted(set(map(str, sources))) if sources is not None else None
    data = ("Development data (NIH and TBX11K films)." if sources is None else
            f"Data sources: {', '.join(sources) or 'none'}.")
    banner = ("**\\*\\*\\* SYNTHETIC DATA - NOT FOR CLINICAL USE \\*\\*\\***\n\n"
              if sources and any(s.startswith("synthetic") for s in sources) else "")
    return (f"# {title}\n\n{banner}> A screening aid, not a diagnosis. {data}\n\n"
            f"- **Command:** `{command}`\n- **Commit:** {info['commit']}; **date:** {info['date']}; "
            f"**CPU:** {info['cpu']}, {info['cores']} cores\n")


def describe(info: dict) -> str:
    """One paragraph for the report."""
    v = ", ".join(f"{k} {x}" for k, x in info.get("versions", {}).items())
    load = info.get("load_average_start")
    end = info.get("load_average_end")
    return (f"{info['date']}; {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
            f"{info.get('memory_gb')} GB RAM; {info['os']}; Python {info['python']}; {v}"
            + (f"; commit {info['commit']}" if info.get("commit") else "")
            + (f"; load average (1/5/15 min) {load} at start" if load else "")
            + (f", {end} at end" if end else ""))
