"""benchmarks.sysinfo: the CPU recorded beside every figure tells apart two CPUs of one name whose INT8 speed
differs (a Zen 3 and a Zen 4 both call themselves "AMD EPYC")."""
import pytest

from benchmarks import sysinfo
from edge_runtime import kit_selftest

ZEN3 = {"model name": "AMD EPYC", "cpu family": "25", "model": "1", "flags": "fpu sse avx avx2 fma"}
ZEN4 = {"model name": "AMD EPYC", "cpu family": "25", "model": "17",
        "flags": "fpu sse avx avx2 fma avx512f avx512bw avx512_vnni"}
PI4 = {"hardware": "BCM2835", "model": "Raspberry Pi 4 Model B Rev 1.4", "cpu architecture": "8",
       "features": "fp asimd evtstrm crc32 cpuid"}


def _cpu(monkeypatch, fields):
    monkeypatch.setattr(sysinfo, "cpuinfo", lambda: dict(fields))
    monkeypatch.setattr(kit_selftest, "cpuinfo", lambda: dict(fields))
    return sysinfo.machine_info()["cpu"]


def test_two_cpus_of_one_name_are_told_apart(monkeypatch):
    zen3, zen4 = _cpu(monkeypatch, ZEN3), _cpu(monkeypatch, ZEN4)
    assert zen3 != zen4
    assert zen3 == "AMD EPYC (cpu family 25, model 1; avx2)"
    assert zen4 == "AMD EPYC (cpu family 25, model 17; avx2 avx512f avx512_vnni)"


def test_an_arm_board_is_named_with_its_int8_features(monkeypatch):
    # the board's "model" line is a name, not a model number: it is not taken for one
    assert _cpu(monkeypatch, PI4) == "BCM2835 (asimd)"


@pytest.mark.parametrize("fields", [{}, {"model name": "Some CPU"}])
def test_a_cpu_without_details_keeps_its_bare_name(monkeypatch, fields):
    name = _cpu(monkeypatch, fields)
    assert name and "(" not in name


def test_a_reports_own_output_does_not_mark_the_commit_but_a_code_change_does(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "docs").mkdir()
    for name in ("code.py", "docs/folds.json", "REPORT.md"):
        (tmp_path / name).write_text("1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = sysinfo._git_commit(tmp_path)
    assert head and "uncommitted" not in head
    (tmp_path / "docs/folds.json").write_text("2\n")  # what a chain of report commands writes
    (tmp_path / "REPORT.md").write_text("2\n")
    assert sysinfo._git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("2\n")
    assert sysinfo._git_commit(tmp_path) == f"{head} (uncommitted changes)"


def test_a_report_names_its_data_sources_and_flags_synthetic_ones():
    """review27b #5: a cross-validation of synthetic bundles said "Development data (NIH and TBX11K films)"."""
    from benchmarks.sysinfo import report_header

    info = {"commit": "abc", "date": "d", "cpu": "c", "cores": 2}
    synth = report_header("T", "cmd", info, sources=["synthetic_b", "synthetic_a", "synthetic_a"])
    assert "SYNTHETIC DATA - NOT FOR CLINICAL USE" in synth and "Data sources: synthetic_a, synthetic_b." in synth
    real = report_header("T", "cmd", info, sources=["tbx11k", "nih_dcn"])
    assert "SYNTHETIC" not in real and "Data sources: nih_dcn, tbx11k." in real and "NIH and TBX11K" not in real
    assert "Development data (NIH and TBX11K films)." in report_header("T", "cmd", info)  # sources not given
