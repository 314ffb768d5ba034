"""qtl is a plain library: importing every module of it never loads streamlit."""

import subprocess
import sys

from conftest import REPO

PROBE = """
import importlib, pkgutil, sys
import qtl
names = [m.name for m in pkgutil.walk_packages(qtl.__path__, "qtl.")]
for name in names:
    importlib.import_module(name)
print(len(names), "streamlit" in sys.modules)
"""


def test_no_module_of_qtl_imports_streamlit():
    """Every qtl module imports in a fresh interpreter, and none of them pulls in streamlit."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    assert int(out[0]) >= 20  # the walk really found the package's modules
    assert out[1] == "False"


def test_paths_are_known_without_torch():
    """qtl.paths (asked by the app's first page and the CLI) answers without loading torch."""
    probe = "import sys, qtl.paths as p; p.models_dir(); p.default_data_dir(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
