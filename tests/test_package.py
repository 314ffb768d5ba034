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
