"""The device side must never need TensorFlow or Keras."""
import subprocess
import sys

from conftest import ROOT


def test_edge_runtime_imports_without_tensorflow():
    code = ("import sys\n"
            "for m in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_model_optimization', 'torch'):\n"
            "    sys.modules[m] = None\n"
            "import edge_runtime, edge_runtime.preprocess, edge_runtime.metrics, edge_runtime.metadata\n"
            "import numpy as np\n"
            "from edge_runtime.preprocess import PreprocessConfig, load\n"
            "import cv2\n"
            "ok, buf = cv2.imencode('.png', np.full((50, 60), 7, np.uint8))\n"
            "assert load(buf.tobytes(), PreprocessConfig(32)).shape == (32, 32)\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_no_training_framework_import_in_edge_runtime_sources():
    import re

    bad = re.compile(r"^\s*(import|from)\s+(tensorflow|keras|tf_keras|tensorflow_model_optimization|torch)\b", re.M)
    offenders = [p.name for p in (ROOT / "edge_runtime").rglob("*.py") if bad.search(p.read_text())]
    assert offenders == []
