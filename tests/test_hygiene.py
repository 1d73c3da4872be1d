"""edge/ must run on the Nano: Python 3.6, numpy and OpenCV only, nothing happening at import."""
import os
import pkgutil
import shutil
import subprocess
import sys

import pytest

import edge

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ["torch", "ultralytics", "onnxruntime", "tensorrt", "pycuda", "jtop", "pynvml", "yaml", "psutil",
         "matplotlib", "tqdm", "onnx", "trainer"]


def _edge_modules():
    return sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge.") if m.name != "edge.__main__")


def test_edge_is_python36_compatible():
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install reefwatch[dev])")
    result = subprocess.run([vermin, "--no-tips", "--violations", "--backport", "dataclasses", "--backport", "typing",
                             "-t=3.6-", os.path.join(ROOT, "edge")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout


def test_every_edge_module_imports_with_heavy_dependencies_absent(tmp_path):
    """Heavy modules are poisoned in sys.modules: importing any of them raises ImportError."""
    script = ("import sys\nfor name in %r: sys.modules[name] = None\n"
              "import importlib\nfor name in %r: importlib.import_module(name)\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] not in ('edge',) and sys.modules[m])\n"
              "print('cv2' in loaded, 'numpy' in loaded)\n") % (HEAVY, _edge_modules())
    result = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout
    assert os.listdir(str(tmp_path)) == []  # importing wrote nothing


def test_module_sizes_stay_focused():
    too_long = []
    for folder in ("edge", "trainer", "benchmarks"):
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(base, name)
                    with open(path) as f:
                        lines = sum(1 for _ in f)
                    if lines > 450:
                        too_long.append("%s: %d lines" % (os.path.relpath(path, ROOT), lines))
    assert not too_long, too_long


def _python_files(*folders):
    for folder in folders:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if name.endswith(".py"):
                    yield os.path.join(base, name)


def test_exceptions_live_in_their_package_errors_module():
    """One exception hierarchy per package: a class deriving from an exception is defined in errors.py."""
    import ast

    stray = []
    for path in _python_files("edge", "trainer"):
        if os.path.basename(path) == "errors.py":
            continue
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception", "Infeasible", "Warning"))
                    for b in node.bases):
                stray.append("%s:%d %s" % (os.path.relpath(path, ROOT), node.lineno, node.name))
    assert not stray, stray


def test_loggers_are_named_logger():
    import re

    pattern = re.compile(r"^(\w+) = logging\.getLogger\(", re.M)
    wrong = []
    for path in _python_files("edge", "trainer", "benchmarks"):
        with open(path) as f:
            names = pattern.findall(f.read())
        wrong += ["%s: %s" % (os.path.relpath(path, ROOT), n) for n in names if n != "logger"]
    assert not wrong, wrong
