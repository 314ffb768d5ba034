"""Another commit's version of a qtl module, imported beside this tree's, so that a benchmark can time a
change against what it replaced in the same run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import types


def module_at(ref: str, path: str) -> types.ModuleType:
    """The module at `path` (e.g. "qtl/training/closed_form.py") as of git `ref`, imported under a name of
    its own; its imports resolve against this tree."""
    source = subprocess.run(
        ["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    name = f"{os.path.splitext(os.path.basename(path))[0]}_at_{ref.replace('/', '_').replace('~', '_')}"
    file = os.path.join(tempfile.mkdtemp(prefix="qtl-baseline-"), f"{name}.py")
    with open(file, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (its dataclasses look themselves up there)
    spec.loader.exec_module(module)
    return module
