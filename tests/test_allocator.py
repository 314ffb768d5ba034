"""The allocator settings of `qtl.utils.allocator`: a wide step's freed memory comes back without page
faults, values already in the environment win and reach child processes, and the `qtl` program sets
them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
from conftest import REPO

from qtl.utils.allocator import ENVIRONMENT

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)

# page faults per training step of a 16-qubit chain, on the step fit() takes there (closed form, halves)
WORKLOAD = """
import json, resource
import torch
from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import step_for_run, train_step
torch.manual_seed(0)
model = DressedQuantumCircuit(512, 2, CircuitConfig(16, 6))
optimizer = adam(model.parameters(), lr=1e-3)
x, y = torch.randn(32, 512), torch.randint(0, 2, (32,))
step = step_for_run(train_step, model, optimizer, 1, 32)
for _ in range(8):  # until the heap holds what a step needs
    step(model, optimizer, x, y)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step(model, optimizer, x, y)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
print(json.dumps({"faults": faults, "applied": applied, "step": type(step).__name__}))
"""


def run_python(code: str, env: dict | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_wide_step_reuses_the_memory_it_freed():
    """glibc's defaults hand a step's large tensors back to the kernel and fault them in again on the next
    step (thousands of page faults per step); kept, the next step finds them."""
    default = run_python("applied = None" + WORKLOAD)
    kept = run_python(
        "from qtl.utils.allocator import keep_freed_memory; applied = keep_freed_memory()" + WORKLOAD
    )
    assert default["step"] == kept["step"] == "ClosedFormStep"
    assert default["faults"] > 1000  # the premise
    assert kept["applied"] is True and kept["faults"] < default["faults"] / 5


def test_values_in_the_environment_win_and_reach_child_processes():
    code = """
import json, os, subprocess, sys
import torch
from qtl.utils.allocator import keep_freed_memory
applied = keep_freed_memory()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'])"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"applied": applied, "trim": os.environ["MALLOC_TRIM_THRESHOLD_"], "child": child}))
"""
    out = run_python(code, {"MALLOC_TRIM_THRESHOLD_": "4194304"})
    assert out["trim"] == "4194304" and out["child"] == ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]
    assert out["applied"] is True


def test_the_qtl_program_sets_them():
    code = """
import json, os, sys
from qtl.cli import run
sys.argv = ["qtl"]
status = run()  # no command: usage, status 2
print(json.dumps({"status": status, "env": {k: os.environ.get(k) for k in NAMES}}))
""".replace("NAMES", repr(sorted(ENVIRONMENT)))
    out = run_python(code)
    assert out["status"] == 2 and out["env"] == ENVIRONMENT
