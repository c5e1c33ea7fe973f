"""The offline install kit: targets, a missing wheel named clearly, and a real host-platform kit installed
offline (pip --no-index) into a fresh venv whose self-test passes."""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from edge_runtime import kit as K
from edge_runtime import kit_selftest as S

ROOT = Path(__file__).resolve().parents[1]  # install.sh runs from here: the checkout must not leak in


@pytest.fixture(scope="session")
def package_index():
    """Skip (with the reason) when pip cannot reach its package index: building a kit downloads the target's
    wheels. Asked of pip itself, so whatever index this machine is configured with counts."""
    with __import__("tempfile").TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--dest", tmp, "--timeout", "10", "--retries", "0", "pip"],
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip("offline: pip cannot download from its package index, and building a kit downloads the "
                    "target's wheels (" + (r.stderr.strip().splitlines() or ["no output"])[-1][:200] + ")")


@pytest.fixture
def bundle(request):
    """The session's tiny_bundle, or any bundle folder named by $CXR_KIT_TEST_BUNDLE."""
    if os.environ.get("CXR_KIT_TEST_BUNDLE"):
        return Path(os.environ["CXR_KIT_TEST_BUNDLE"])
    try:
        return Path(request.getfixturevalue("tiny_bundle"))
    except pytest.FixtureLookupError:
        pytest.skip("no tiny_bundle fixture in conftest.py (or set CXR_KIT_TEST_BUNDLE)")


def fake_wheel(folder: Path, name="cxr_edge", version="0.1.0", requires=()) -> Path:
    """A minimal valid pure-Python wheel whose metadata requires ``requires`` (offline pip tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\nProvides-Extra: edge\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{name}_pkg/__init__.py": "", f"{dist}/METADATA": meta,
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return path


def test_targets_and_platform_tags():
    t = K.resolve_target("linux_aarch64", "3.11", "2.36")
    assert t.name == "linux_aarch64-py311"
    tags = t.platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and not any("x86_64" in x for x in tags)
    assert tags[-1] == "linux_aarch64"  # local --find-links wheels only (PyPI has none with this tag)
    assert K.resolve_target("linux_aarch64", "3.10", "2.31").platform_tags()[0] == "manylinux_2_31_aarch64"
    host = K.resolve_target("host")
    assert host.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(K.KitError, match="linux_aarch64"):
        K.resolve_target("win_amd64")
    with pytest.raises(K.KitError, match="major.minor"):
        K.resolve_target("linux_aarch64", "311")
    with pytest.raises(K.KitError, match="glibc"):
        K.resolve_target("linux_aarch64", "3.11", "2.12").platform_tags()


def test_missing_wheel_names_the_package(tmp_path):
    """Offline: the wheel folder lacks one dependency; the error names it and the target."""
    links = tmp_path / "links"
    own = fake_wheel(links, requires=['no-such-dependency-kit-test>=1; extra == "edge"'])
    target = K.resolve_target("linux_aarch64", "3.11", "2.36")
    with pytest.raises(K.KitError) as err:
        K.download_wheels([f"{own}[edge]"], tmp_path / "wh", target, find_links=(links,), no_index=True)
    msg = str(err.value)
    assert "no wheel for linux aarch64, CPython 3.11" in msg
    assert "no-such-dependency-kit-test" in msg.split("\n")[0]

    # a pin (constraints file) for which no wheel exists: the resolver's conflict names the package and pin
    links2 = tmp_path / "links2"
    own = fake_wheel(links2, requires=['kit-test-pinned>=1; extra == "edge"'])
    fake_wheel(links2, name="kit_test_pinned", version="1.0")
    pins = tmp_path / "constraints.txt"
    pins.write_text("kit-test-pinned==2.0\n")
    with pytest.raises(K.KitError) as err:
        K.download_wheels([f"{own}[edge]"], tmp_path / "wh2", target, constraints=pins, find_links=(links2,),
                          no_index=True)
    assert "kit-test-pinned==2.0" in str(err.value).split("\n")[0], str(err.value)


def test_kit_refuses_bad_inputs(tmp_path, bundle):
    with pytest.raises(K.KitError, match="unknown backend"):
        K.build_kit(bundle, tmp_path / "k1", backend="tensorflow")
    with pytest.raises(K.KitError, match="SHA256SUMS"):
        K.build_kit(tmp_path, tmp_path / "k2")  # not a bundle
    if not list(bundle.glob("*.onnx")):
        with pytest.raises(K.KitError, match="onnxruntime"):
            K.build_kit(bundle, tmp_path / "k3", backend="onnxruntime")
    rc = subprocess.run([sys.executable, "-m", "edge_runtime", "kit", "--bundle", str(bundle), "--out",
                         str(tmp_path / "k4"), "--platform", "linux_riscv64"], capture_output=True, text=True)
    assert rc.returncode == 2 and "unknown platform 'linux_riscv64'" in rc.stderr


def test_cli_missing_wheel_exit_code(tmp_path, bundle, capsys):
    """The command line: exit 2 and a message naming the package (offline, a wheel folder without it)."""
    from edge_runtime.__main__ import main

    links = tmp_path / "links"
    own = fake_wheel(links, requires=['no-such-dependency-kit-test; extra == "edge"'])
    fake_wheel(links, name="pip", version="99.0")
    rc = main(["kit", "--bundle", str(bundle), "--out", str(tmp_path / "kit"), "--platform", "linux_aarch64",
               "--python", "3.11", "--no-index", "--find-links", str(links), "--project-wheel", str(own),
               "--constraints", "none"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no wheel for linux aarch64" in err and "no-such-dependency-kit-test" in err
    assert not (tmp_path / "kit").exists()  # nothing half-built left behind


def test_templates_are_complete():
    unit = (K.KIT_FILES / "cxr-edge.service.in").read_text()
    for line in ("Restart=on-failure", "User={{USER}}", "WantedBy=multi-user.target", "ReadWritePaths={{DATA_DIR}}",
                 "ExecStart={{PREFIX}}/venv/bin/python -I -m edge_runtime serve --bundle {{PREFIX}}/bundle --backend {{BACKEND}}"):
        assert line in unit
    filled = K._fill((K.KIT_FILES / "install.sh").read_text(),
                     {"ARCH": "aarch64", "PYTHON_VERSION": "3.11", "BACKEND": "litert", "RUNTIME_BACKEND": "litert",
                      "KIT_NAME": "k", "VERSION": "0"})
    r = subprocess.run(["bash", "-n"], input=filled, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    for placeholder in set(re.findall(r"\{\{[A-Z_]+\}\}", unit)):  # install.sh fills every one of the unit's
        assert f"s|{placeholder}|" in filled, placeholder
    assert len(list((K.KIT_FILES / "samples").glob("*.png"))) == 3


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


@pytest.mark.slow
def test_host_kit_installs_offline_and_selftest_passes(tmp_path, package_index, bundle):
    """Build a kit for this machine, install it into a fresh venv with pip --no-index, self-test passes;
    a damaged kit and a changed expectation are both refused."""
    out = tmp_path / "kit.tar.gz"
    # host platform, LiteRT, the project's constraints; the project wheel built from this checkout
    # (or $CXR_KIT_TEST_WHEEL, e.g. to try a packaging change)
    kit = K.build_kit(bundle, out, project_wheel=os.environ.get("CXR_KIT_TEST_WHEEL") or None)
    assert out.is_file() and kit.size_bytes == out.stat().st_size
    names = {K.wheel_name_version(Path(w))[0] for w in kit.wheels}
    assert {"cxr-edge", "pip", "numpy", "opencv-python-headless", "ai-edge-litert", "flask", "waitress",
            "pydicom"} <= names
    assert not names & {"tensorflow", "onnxruntime", "openvino", "tf-keras"}
    with tarfile.open(out) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    (root,) = (tmp_path / "x").iterdir()
    meta = json.loads((root / "kit.json").read_text())
    assert meta["backend"] == "litert" and meta["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    # the kit's bundle holds what LiteRT loads; the other backends' files stay on the workstation, named
    others = sorted(p.name for p in Path(bundle).iterdir() if p.suffix in (".onnx", ".xml", ".bin", ".keras"))
    assert others and meta["bundle_left_out"] == others
    assert not [p for p in (root / "bundle").iterdir() if p.suffix in (".onnx", ".xml", ".bin", ".keras")]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    prefix = tmp_path / "prefix"
    cmd = ["bash", str(root / "install.sh"), "--prefix", str(prefix), "--no-service", "--python", _base_python()]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)  # -I keeps the checkout out
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-test passed" in r.stdout and "Start the page with" in r.stdout
    # the device timed every candidate that passed and serves the fastest: recorded, and on the service's line
    choice = json.loads((prefix / "selftest" / "choice.json").read_text())
    assert choice["format"] in meta["candidates"] and set(choice["timings_ms"]) <= set(meta["candidates"])
    assert f"--format {choice['format']} " in r.stdout and f"serving {choice['format']}" in r.stdout
    vpy = prefix / "venv" / "bin" / "python"
    probe = subprocess.run([str(vpy), "-c", "import sys, edge_runtime.classifier; "
                            "assert 'tensorflow' not in sys.modules; print(edge_runtime.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode == 0 and str(prefix) in probe.stdout, probe.stderr

    # the installed self-test: a different exact (reference-kernel) result fails; a production difference
    # with exact reference results is kernel drift (a warning; an error with --strict)
    exp = prefix / "selftest" / "expected.json"
    original = exp.read_text()
    selftest = [str(vpy), str(prefix / "selftest" / "selftest.py"), "--bundle", str(prefix / "bundle"),
                "--expected", str(exp)]
    d = json.loads(original)
    for cand in d["candidates"].values():  # every candidate drifts (within the limit) on one film
        first = next(iter(cand["samples"].values()))
        assert len(first["reference_raw"]) == len(first["probs"])  # LiteRT: reference kernels recorded
        first["probs"][next(iter(first["probs"]))] += 0.01
    exp.write_text(json.dumps(d))
    st = subprocess.run(selftest, capture_output=True, text=True)
    assert st.returncode == 0 and "kernel drift" in st.stdout and "WARNING" in st.stdout, st.stdout + st.stderr
    st = subprocess.run(selftest + ["--strict"], capture_output=True, text=True)  # no candidate left to serve
    assert st.returncode == 1 and "MISMATCH" in st.stdout and "self-test FAILED" in st.stderr
    d = json.loads(original)
    first = next(iter(next(iter(d["candidates"].values()))["samples"].values()))
    first["reference_raw"][0] += 1 / 256  # on one candidate: the installation is wrong, whatever else passes
    exp.write_text(json.dumps(d))
    st = subprocess.run(selftest, capture_output=True, text=True)
    assert st.returncode == 1 and "reference kernels give" in st.stderr, st.stdout + st.stderr
    exp.write_text(original)

    # --skip-selftest: no check, no timing; the service gets the first candidate the workstation admitted
    r = subprocess.run(cmd + ["--skip-selftest"], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0 and "self-test passed" not in r.stdout, r.stdout + r.stderr
    assert f"--format {json.loads(original)['format']} " in r.stdout

    # a damaged kit is refused before anything is installed
    meta_file = root / "bundle" / "metadata.json"
    meta_file.write_text(meta_file.read_text() + " ")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "damaged" in r.stderr and "bundle/metadata.json: FAILED" in r.stdout
    shutil.rmtree(prefix)


def test_kit_bundle_leaves_out_what_its_backend_cannot_load(tmp_path):
    """copy_bundle: the Keras model and other backends' files (an IR's .bin with its .xml) are left out, the copy's
    SHA256SUMS keeps the conversion's digests of the rest and verifies; a file changed since the conversion is
    refused rather than signed again."""
    from edge_runtime.bundle import BundleError, verify_sums, write_sums

    src = tmp_path / "bundle"
    src.mkdir()
    files = ["metadata.json", "bundle.json", "MODEL_CARD.md", "model_tflite_int8.tflite", "model_tflite_fp32.tflite",
             "model_keras_fp32.keras", "model_openvino_int8.xml", "model_openvino_int8.bin", "model_onnx_int8.onnx",
             "model_openvino_fp32.bin"]  # the last: a failed export's leftover weights, without their graph
    for i, name in enumerate(files):
        (src / name).write_bytes(f"{name} {i}".encode())
    write_sums(src)
    (src / "site.json").write_text("{}")  # a clinic's own file: never in SHA256SUMS, kept
    original = (src / "SHA256SUMS").read_text().splitlines()

    left = K.copy_bundle(src, tmp_path / "litert", "litert")
    assert left == ["model_keras_fp32.keras", "model_onnx_int8.onnx", "model_openvino_fp32.bin",
                    "model_openvino_int8.bin", "model_openvino_int8.xml"]
    kept = sorted(p.name for p in (tmp_path / "litert").iterdir())
    assert kept == sorted(set(files) - set(left) | {"SHA256SUMS", "site.json"})
    sums = (tmp_path / "litert" / "SHA256SUMS").read_text().splitlines()
    assert set(sums) <= set(original) and len(sums) == len(files) - len(left)  # the conversion's own lines
    assert sorted(verify_sums(tmp_path / "litert")) == sorted(set(files) - set(left))

    left = K.copy_bundle(src, tmp_path / "ov", "openvino")
    assert "model_openvino_int8.bin" not in left and "model_openvino_int8.xml" not in left
    ov = tmp_path / "ov"
    assert (ov / "model_openvino_int8.bin").is_file() and not (ov / "model_tflite_int8.tflite").exists()

    (src / "model_tflite_int8.tflite").write_bytes(b"changed")
    with pytest.raises(BundleError, match="model_tflite_int8.tflite"):
        K.copy_bundle(src, tmp_path / "changed", "litert")


# ----------------------------------------------------------------------------- the self-test's rule and samples
def test_judge_boundaries():
    """Hand-picked cases at, below and above each limit (tolerance 1e-3, drift limit 0.05)."""
    tol, lim = 1e-3, 0.05
    assert S.judge(1e-3, True, True, tol, lim) == "ok"  # at the tolerance
    assert S.judge(0.0011, True, True, tol, lim) == "kernel drift"  # just above: drift, accepted
    assert S.judge(0.05, True, True, tol, lim) == "kernel drift"  # at the limit: accepted
    assert S.judge(0.0501, True, True, tol, lim) == "MISMATCH"  # beyond the limit: the install fails
    assert S.judge(0.0, False, True, tol, lim) == "kernel drift"  # another decision with exact reference
    assert S.judge(0.0, True, False, tol, lim) == "MISMATCH"  # reference kernels differ: install fault
    assert S.judge(0.01, True, True, tol, lim, strict=True) == "MISMATCH"
    assert S.judge(0.5, True, True, tol, None) == "kernel drift"  # synthetic model: drift reported only
    assert S.judge(0.0011, True, None, tol, lim) == "MISMATCH"  # no reference (ONNX/OpenVINO): tolerance only
    assert S.judge(0.0009, True, None, tol, lim) == "ok"
    rule = S.self_test_rule(True, tol, lim)
    assert "exactly" in rule and "up to 0.05 is accepted and reported" in rule and "leaves out" in rule
    assert "within 0.001" in S.self_test_rule(False, tol, lim)
    assert "not enforced" in S.self_test_rule(True, tol, None)


def _png(path: Path, value: int) -> Path:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8), value, np.uint8))
    return path


def _real_run(tmp_path: Path) -> Path:
    """A fake bundle of a real-data model whose bundle.json names its run folder relative to a folder above
    (as the converter records it), with a split.csv whose paths are relative to the split file."""
    data, run, bundle = tmp_path / "data", tmp_path / "runs" / "r1", tmp_path / "runs" / "r1-bundle"
    rows = ["path,label,source,patient_id,group,split"]
    for label in ("normal", "pneumonia", "tuberculosis"):
        for i in range(4):
            f = _png(data / label / f"{label}_{i}.png", 10 * i)
            rows.append(f"../../data/{label}/{f.name},{label},s,{label}{i},,{'train' if i == 0 else 'val'}")
    rows.append("../../data/normal/missing.png,normal,s,x,,val")
    rows.insert(2, "../../data/normal/missing.png,normal,s,x,,val")  # unreadable: skipped
    run.mkdir(parents=True)
    (run / "split.csv").write_text("\n".join(rows) + "\n")
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"run_dir": "runs/r1"}))
    return bundle


def test_samples_real_model_uses_validation_films(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.chdir(tmp_path / "..")  # run_dir is not relative to the current folder here
    bundle = _real_run(tmp_path)
    real = SimpleNamespace(synthetic=False, labels=("normal", "pneumonia", "tuberculosis"))
    paths, info = S.choose_samples(bundle, real)
    assert [p.name for p in paths] == ["normal_1.png", "normal_2.png", "pneumonia_1.png", "pneumonia_2.png",
                                       "tuberculosis_1.png", "tuberculosis_2.png"]  # val only, 2 per class
    assert info["kind"] == "validation films" and Path(info["from"]) == tmp_path / "runs" / "r1" / "split.csv"
    assert "6 real validation films (2 per class" in S.describe_samples(info)

    synthetic = SimpleNamespace(synthetic=True, labels=real.labels)
    paths, info = S.choose_samples(bundle, synthetic)
    assert info["kind"] == "phantoms" and {p.name for p in paths} == {
        "phantom_normal.png", "phantom_pneumonia.png", "phantom_tuberculosis.png"}
    given = _png(tmp_path / "mine.png", 5)
    paths, info = S.choose_samples(bundle, real, [given])
    assert paths == [given] and info["kind"] == "given"

    (bundle / "bundle.json").write_text(json.dumps({"run_dir": "runs/elsewhere"}))
    with pytest.raises(S.KitError, match="--sample"):
        S.choose_samples(bundle, real)
    (bundle / "split.csv").write_text("path,label,source,patient_id,group,split\n"
                                      f"{tmp_path}/data/normal/normal_3.png,normal,s,n,,val\n")
    with pytest.raises(S.KitError, match="no readable validation film of class pneumonia, tuberculosis"):
        S.choose_samples(bundle, real)


class _FakeClassifier:
    """Stands in for a LiteRT Classifier: fixed probabilities per image name (optimised kernels)."""

    backend, load_ms = "litert", 1.0

    def __init__(self, probs: dict, synthetic=False):
        from types import SimpleNamespace

        self.table = probs
        self.model_path = Path("model_tflite_int8.tflite")
        self.metadata = SimpleNamespace(labels=("normal", "tuberculosis"), synthetic=synthetic)

    def predict(self, x):  # the self-test times this (x: what _fake_runtime's _model_input gives)
        return x

    def classify(self, path, name=None):
        from types import SimpleNamespace

        p = self.table[Path(path).name]
        label = max(p, key=p.get)
        return SimpleNamespace(probs=dict(p), label=label, decision=label)


class _FakeReference:
    def __init__(self, probs: dict):
        self.table = probs

    def raw(self, path):
        return list(self.table[Path(path).name].values())

    def probs(self, path):
        return dict(self.table[Path(path).name])


def _fake_runtime(monkeypatch, optimised: dict, reference: dict, synthetic=False):
    from edge_runtime.classifier import Classifier

    monkeypatch.setattr(Classifier, "from_bundle", classmethod(lambda cls, *a, **k: _FakeClassifier(optimised, synthetic)))
    monkeypatch.setattr(S.ReferenceKernels, "available", classmethod(lambda cls, clf: _FakeReference(reference)))
    monkeypatch.setattr(S, "_model_input", lambda clf, path: Path(path).name)


def test_kit_refuses_a_model_that_drifts_on_the_workstation(tmp_path, monkeypatch):
    from types import SimpleNamespace

    a, b = _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)
    ref = {"a.png": {"normal": 0.80, "tuberculosis": 0.20}, "b.png": {"normal": 0.10, "tuberculosis": 0.90}}
    sensitive = {"a.png": {"normal": 0.68, "tuberculosis": 0.32}, "b.png": ref["b.png"]}  # drift 0.12 > 0.1
    _fake_runtime(monkeypatch, sensitive, ref)
    with pytest.raises(S.KitError) as err:
        S.expected_results(tmp_path, "litert", [a, b])
    assert "sensitive to rounding" in str(err.value) and "0.120" in str(err.value) and "OpenVINO" in str(err.value)
    e = S.expected_results(tmp_path, "litert", [a, b], drift_limit=0.13)  # accepted knowingly
    assert e["drift_limit"] == 0.13 and e["workstation_kernel_drift"] == pytest.approx(0.12)

    robust = {"a.png": {"normal": 0.71, "tuberculosis": 0.29}, "b.png": ref["b.png"]}  # drift 0.09, below 0.1
    _fake_runtime(monkeypatch, robust, ref)
    e = S.expected_results(tmp_path, "litert", [a, b])
    assert e["drift_limit"] == 0.1 and e["exact"] == 1e-6 and e["samples"]["a.png"]["reference_raw"] == [0.8, 0.2]
    assert "up to 0.1 is accepted" in e["rule"]

    # an op whose reference kernels differ between x86 and aarch64 (INT8 hard-swish): refused
    hard_swish = SimpleNamespace(_get_ops_details=lambda: [{"op_name": "CONV_2D"}, {"op_name": "HARD_SWISH"}])
    monkeypatch.setattr(_FakeClassifier, "_backend", SimpleNamespace(interp=hard_swish), raising=False)
    with pytest.raises(S.KitError, match="contains HARD_SWISH.*cannot be proven"):
        S.expected_results(tmp_path, "litert", [a, b])
    monkeypatch.undo()

    _fake_runtime(monkeypatch, sensitive, ref, synthetic=True)  # a synthetic demo model: built, not enforced
    e = S.expected_results(tmp_path, "litert", [a, b])
    assert e["drift_limit"] is None and "not enforced" in e["rule"]


def test_selftest_accepts_drift_within_the_limit_and_says_so(tmp_path, monkeypatch, capsys):
    """The device side: the rule is printed; exact reference + drift <= limit passes with a report;
    drift beyond the limit, or a reference that differs, fails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kit_selftest", K.KIT_FILES / "selftest.py")
    st = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(st)
    monkeypatch.setattr(st, "web_check", lambda clf: None)
    ref = {"a.png": {"normal": 0.80, "tuberculosis": 0.20}}
    (tmp_path / "samples").mkdir()
    _png(tmp_path / "samples" / "a.png", 1)
    expected = {"backend": "litert", "model": "model_tflite_int8.tflite", "tolerance": 1e-3, "drift_limit": 0.05,
                "workstation_kernel_drift": 0.01, "samples_text": "1 real validation film",
                "samples": {"a.png": {"probs": ref["a.png"], "label": "normal", "decision": "normal",
                                      "reference_raw": [0.8, 0.2]}}}
    exp = tmp_path / "expected.json"
    exp.write_text(json.dumps(expected))
    argv = ["--bundle", str(tmp_path), "--expected", str(exp)]

    _fake_runtime(monkeypatch, {"a.png": {"normal": 0.776, "tuberculosis": 0.224}}, ref)  # device drift 0.024
    assert st.main(argv) == 0
    out = capsys.readouterr().out
    assert "rule: LiteRT's reference kernels must reproduce" in out and "samples: 1 real validation film" in out
    assert "kernel drift" in out and "within the accepted limit 0.05" in out
    assert "self-test passed: 1 of 1 candidate(s); serving model_tflite_int8.tflite" in out
    assert "reference kernels exact on 1 samples, optimised-kernel drift 0.024 (accepted" in out

    _fake_runtime(monkeypatch, {"a.png": {"normal": 0.74, "tuberculosis": 0.26}}, ref)  # 0.06 > 0.05
    assert st.main(argv) == 1
    assert "beyond the drift limit 0.05" in capsys.readouterr().err

    _fake_runtime(monkeypatch, ref, {"a.png": {"normal": 0.8 - 1 / 256, "tuberculosis": 0.2 + 1 / 256}})
    assert st.main(argv) == 1
    assert "reference kernels give" in capsys.readouterr().err
