"""The command lines as a user meets them (issue 14, "The commands"): --version on every entry point and console
script, user errors as one line and exit status 2 (no traceback, no TensorFlow loaded to say so), help text
that tells the truth about defaults, and the batch CSV's columns. Fast: no training, the hand-built ONNX bundle."""
import configparser
import csv
import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli_common import rate_text, version
from fake_bundle import make_bundle

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "0"}  # TF noise would show if TF loaded
MODULES = ["edge_runtime", "train", "convert", "benchmarks", "benchmarks.study"]
SCRIPTS = {"cxr-edge": "edge_runtime.__main__:main", "cxr-train": "train.__main__:main",
           "cxr-convert": "convert.__main__:main", "cxr-bench": "benchmarks.__main__:main"}


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return cfg


def console_scripts() -> dict:
    text = setup_cfg().get("options.entry_points", "console_scripts")
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in text.splitlines() if line.strip()))


def py(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=timeout)


def test_the_version_is_the_package_version():
    assert version() == setup_cfg().get("metadata", "version")


@pytest.mark.parametrize("module", MODULES)
def test_version_on_every_entry_point(module):
    res = py("-m", module, "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"python -m {module} {version()}" and "Traceback" not in res.stderr


def test_setup_cfg_installs_the_console_scripts():
    assert console_scripts() == SCRIPTS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_functions_print_the_version_under_their_own_name(script, monkeypatch, capsys):
    module, func = console_scripts()[script].split(":")
    main = getattr(importlib.import_module(module), func)
    monkeypatch.setattr(sys, "argv", [f"/usr/local/bin/{script}", "--version"])
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"{script} {version()}"
    if shutil.which(script):  # installed from this version of the package: the real script too
        res = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.startswith(f"{script} "), res.stderr


def test_cxr_edge_has_the_device_subcommands(monkeypatch, capsys):
    from edge_runtime.__main__ import main

    monkeypatch.setattr(sys, "argv", ["cxr-edge"])
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: cxr-edge ")
    for sub in ("classify", "serve", "kit", "set-password"):
        assert sub in out


def test_convert_on_a_missing_run_folder_exits_2_before_tensorflow(tmp_path):
    code = ("import sys; from convert.__main__ import main; "
            f"rc = main([{str(tmp_path / 'no_run')!r}, '--out', {str(tmp_path / 'b')!r}]); "
            "print('rc', rc, 'tf', 'tensorflow' in sys.modules)")
    res = py("-c", code)
    assert res.stdout.strip() == "rc 2 tf False", res.stderr
    assert f"error: {tmp_path / 'no_run'}: no such run folder" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b").exists()


def test_convert_refuses_a_non_empty_out_without_force(tmp_path, capsys):
    from convert.__main__ import main

    run = tmp_path / "run"
    run.mkdir()
    for f in ("metadata.json", "model_float.keras", "split.csv"):
        (run / f).write_text("{}")
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(run), "--out", str(out)]) == 2
    assert "is not an empty folder" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_train_help_imports_no_tensorflow_and_prints_no_noise():
    code = ("import sys\nfrom train.__main__ import build_parser\ntry:\n    build_parser().parse_args(['--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print('LOADED', [m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules])")
    res = py("-c", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("LOADED []") and "--no-augment" in res.stdout
    assert res.stderr == ""  # no TensorFlow log lines


def test_the_registry_names_need_no_tensorflow():
    res = py("-c", "import sys; from train.models import REGISTRY; print(sorted(REGISTRY)[0], 'tensorflow' in sys.modules)")
    assert res.stdout.split() == ["efficientnet_lite0", "False"], res.stderr


def _help(main, argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main(argv)
    return capsys.readouterr().out


def test_train_help_tells_the_truth_about_defaults(capsys):
    from train.__main__ import build_parser

    text = " ".join(build_parser().format_help().split())  # unwrapped
    assert "--no-augment turn augmentation off" in text and "(default: True)" not in text
    assert "(default: False)" not in text and "(default: )" not in text and "(default: None)" not in text
    assert "(default: a timestamp)" in text and "(default: a timestamp) (default" not in text
    assert "--epochs EPOCHS float epochs (early stopping may end sooner) (default: 20)" in text
    assert "'auto' (the default: imagenet for efficientnet_lite0..2" in text and "(default: auto)" not in text
    assert "--site-augment P" in text and "0 = off (default 0.5)" in text and "(default 0.5) (default" not in text
    assert (build_parser().get_default("site_augment"), build_parser().get_default("weights")) == (0.5, "auto")


@pytest.mark.parametrize("argv", [["classify", "--help"], ["serve", "--help"], ["kit", "--help"], ["--help"]])
def test_device_help_has_no_flag_defaults(argv, capsys):
    from edge_runtime.__main__ import main

    text = _help(main, argv, capsys)
    assert "(default: True)" not in text and "(default: False)" not in text


def test_classify_and_serve_threads_say_what_they_are(capsys):
    from edge_runtime.__main__ import build_parser, main

    classify = " ".join(_help(main, ["classify", "--help"], capsys).split())
    serve = " ".join(_help(main, ["serve", "--help"], capsys).split())
    assert "--num-threads NUM_THREADS inference threads" in classify and "--threads" not in classify
    assert "--threads THREADS HTTP worker threads" in serve
    args = build_parser().parse_args(["classify", "x.png", "--threads", "3"])  # the old name still works
    assert args.num_threads == 3


def film(mean: int) -> bytes:
    rng = np.random.default_rng(mean)
    return cv2.imencode(".png", np.clip(rng.normal(mean, 20, (64, 64)), 0, 255).astype(np.uint8))[1].tobytes()


def test_classify_with_a_missing_bundle_exits_2(tmp_path, capsys):
    from edge_runtime.__main__ import main

    (tmp_path / "a.png").write_bytes(film(40))
    rc = main(["classify", str(tmp_path / "a.png"), "--bundle", str(tmp_path / "nope"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.startswith("error: ") and "Traceback" not in err


def test_batch_csv_names_the_answer_and_what_made_it(tmp_path, capsys):
    from edge_runtime.__main__ import main

    bundle = make_bundle(tmp_path / "bundle")
    (tmp_path / "dark.png").write_bytes(film(30))  # the fake model: dark -> normal, bright -> tuberculosis
    (tmp_path / "bright.png").write_bytes(film(220))
    (tmp_path / "notes.txt").write_text("not a film")
    rc = main(["classify", str(tmp_path), "--bundle", str(bundle), "--num-threads", "1", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == ["file", "decision", "top_class", "p_normal", "p_pneumonia", "p_tuberculosis",
                                 "in_scope", "ms", "reason", "error", "model_name", "model_version", "backend",
                                 "synthetic", "tb_threshold", "refer_below", "temperature"]
    rows = {Path(r["file"]).name: r for r in reader}
    assert rows["dark.png"]["top_class"] == "normal" and rows["bright.png"]["top_class"] == "tuberculosis"
    assert rows["bright.png"]["decision"] == "tuberculosis" and rows["notes.txt"]["decision"] == "skipped"
    for r in rows.values():  # the skipped row too: every row says which model and rule it was made with
        assert (r["model_name"], r["model_version"], r["backend"], r["synthetic"]) == ("fake", "0", "onnxruntime", "1")
        assert (r["tb_threshold"], r["refer_below"], r["temperature"]) == ("0.5", "0.5", "1")
    assert "label" not in reader.fieldnames


def test_rate_text_gives_the_pace_and_the_time_left():
    assert rate_text(0, 5, 0.0) == "0/5"
    assert rate_text(3, 17, 7.2) == "3/17, 2.4 s each, ~34 s left"
    assert rate_text(5, 17, 4.0, start=3) == "5/17, 2.0 s each, ~24 s left"  # resumed at 3: rate of this session
    assert rate_text(10, 10, 4000) == "10/10, 6 min 40 s each"
    assert rate_text(1, 100, 120) == "1/100, 2 min each, ~3 h 18 min left"


def test_batch_progress_on_a_terminal_shows_rate_and_leaves_the_csv_alone(tmp_path, monkeypatch, capsys):
    from edge_runtime.__main__ import main

    class Tty(io.StringIO):
        def isatty(self):
            return True

    bundle = make_bundle(tmp_path / "bundle")
    for i in range(3):
        (tmp_path / f"f{i}.png").write_bytes(film(40 + i))
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["classify", *(str(tmp_path / f"f{i}.png") for i in range(3)), "--bundle", str(bundle)]) == 0
    bar = err.getvalue().split("\r")[-1]
    assert "3/3" in bar and "film/s" in bar
    assert len(list(csv.DictReader(io.StringIO(capsys.readouterr().out)))) == 3
