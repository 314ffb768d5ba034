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

# page faults per training step of a 16-qubit chain, on the step fit() takes there (closed form, halves);
# the process's transparent huge pages off (PR_SET_THP_DISABLE), so that a fault is one 4 KiB page
# whatever the system's setting
WORKLOAD = """
import ctypes, json, resource
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)
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
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != "GLIBC_TUNABLES"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **(env or {})}, cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_wide_step_reuses_the_memory_it_freed():
    """With glibc's initial thresholds (128 KiB, fixed here: glibc raises them as it goes) a step's large
    tensors go back to the kernel and are faulted in again on the next step; kept, the next step finds
    them."""
    initial = {name: str(128 * 2**10) for name in ENVIRONMENT}
    default = run_python("applied = None" + WORKLOAD, initial)
    kept = run_python(
        "from qtl.utils.allocator import keep_freed_memory; applied = keep_freed_memory()" + WORKLOAD
    )
    assert default["step"] == kept["step"] == "ClosedFormStep"
    assert default["faults"] > 1000  # the premise
    assert kept["applied"] is True and kept["faults"] < default["faults"] / 5


@pytest.mark.parametrize(("trim", "applied"), [("4194304", True), ("4294967296", False), ("lots", False)])
def test_values_in_the_environment_win_and_reach_child_processes(trim, applied):
    """A value already in the environment is kept, here and in child processes; where one is not a whole
    number of bytes mallopt can take (a C int), this process keeps glibc's thresholds."""
    code = """
import json, os, subprocess, sys
import torch
from qtl.utils.allocator import keep_freed_memory
applied = keep_freed_memory()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'])"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"applied": applied, "trim": os.environ["MALLOC_TRIM_THRESHOLD_"], "child": child}))
"""
    out = run_python(code, {"MALLOC_TRIM_THRESHOLD_": trim})
    assert out == {"applied": applied, "trim": trim, "child": ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]}


@pytest.mark.parametrize(
    ("command", "kept"), [(["runs", "--db", "missing.db"], True), (["serve", "missing.pt"], False)]
)
def test_the_qtl_program_sets_them_except_for_a_server(command, kept):
    """The `qtl` program sets them before its command runs, except for `qtl serve`, a long-lived server
    (docs/hosting.md); both commands here fail at once, after that choice."""
    code = """
import json, os, sys
from qtl.cli import run
sys.argv = ["qtl", *ARGS]
status = run()
print(json.dumps({"status": status, "env": {k: os.environ.get(k) for k in NAMES}}))
""".replace("NAMES", repr(sorted(ENVIRONMENT))).replace("ARGS", repr(command))
    out = run_python(code)
    assert out["status"] == 1
    assert out["env"] == (ENVIRONMENT if kept else dict.fromkeys(ENVIRONMENT))
