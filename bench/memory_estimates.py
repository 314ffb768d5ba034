"""Benchmark: the native engine's memory estimates against the peak memory they stand for, in one run.

`NativeEngine.estimate_bytes` decides whether a batch fits the engine's memory budget: how large an
evaluation batch is (`qtl.data.feed.eval_batch_size`) and whether a run is refused. Too low, and a run
the budget should stop can exhaust the machine; too high, and evaluation takes smaller batches than it
could, and a run that fits is refused. For each configuration, a fresh process (two torch threads)
builds `DressedQuantumCircuit(512, 2, CircuitConfig(n, depth))`, runs it on batches of 1 and 2 (the
tables and the allocator's first pages), then measures one forward on the batch (under
`torch.inference_mode`), or one forward and backward (`training`): its peak resident memory (VmHWM,
reset through /proc/self/clear_refs) over the memory resident before it. With --keep, the process's
allocator keeps freed memory as the `qtl` program's does (`qtl.utils.allocator`). Linux only.

Target: every estimate at least the measured peak; printed as PASS or FAIL.

    cd bench && PYTHONPATH=.. ../.venv/bin/python memory_estimates.py [--quick] [--keep] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# one measurement, in a fresh process: argv n, depth, batch, "train" or "infer", dtype, keep
WORKLOAD = """
import json, sys
n, depth, batch, mode, dtype, keep = sys.argv[1:]
if keep == "1":
    from qtl.utils.allocator import keep_freed_memory
    keep_freed_memory()
import torch
torch.set_num_threads(2)
from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
dtype, training = getattr(torch, dtype), mode == "train"
head = DressedQuantumCircuit(512, 2, CircuitConfig(int(n), int(depth))).to(dtype)
x = torch.randn(int(batch), 512, dtype=dtype)
def run(x):
    if training:
        head(x).sum().backward()
    else:
        with torch.inference_mode():
            head(x)
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
run(x[:1])
run(x[:2])
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
run(x)
engine = head.engine
print(json.dumps({"path": engine.path_for(len(x), training, None), "peak": status("VmHWM:") - before,
                  "estimate": engine.estimate_bytes(len(x), dtype, training)}))
"""

# (qubits, depth, batch, training, dtype): the halves path and the units path (the table's "path")
CONFIGS = [
    (16, 7, 64, False, "float32"),
    (20, 6, 64, False, "float32"),
    (22, 6, 128, False, "float32"),
    (23, 4, 32, False, "float32"),
    (24, 6, 32, False, "float32"),
    (20, 6, 32, False, "float64"),
    (16, 7, 64, True, "float32"),
    (20, 6, 128, True, "float32"),
    (22, 8, 32, True, "float32"),
    (23, 7, 32, True, "float32"),
    (24, 6, 32, True, "float32"),
    (22, 6, 32, True, "float64"),
    (18, 8, 32, False, "float32"),
    (20, 9, 256, False, "float32"),
    (22, 9, 32, False, "float32"),
    (18, 8, 32, True, "float32"),
    (20, 9, 256, True, "float32"),
    (22, 9, 128, True, "float32"),
]
# the rows tests/test_engine_native.py runs
QUICK = [(22, 6, 64, False, "float32"), (22, 6, 32, True, "float32"), (20, 9, 64, True, "float32")]
# settings a child must not inherit: the allocator's (--keep sets them), the engine's budget, huge pages
INHERITED = ("MALLOC_", "QTL_NATIVE_MEMORY_BUDGET", "THP_MEM_ALLOC_ENABLE")


def measure(
    n: int, depth: int, batch: int, training: bool, dtype: str = "float32", keep: bool = False
) -> dict:
    """The path, the peak bytes over the resident ones before, and the engine's estimate of one forward
    (+ backward where `training`), in a fresh process."""
    args = [str(n), str(depth), str(batch), "train" if training else "infer", dtype, "1" if keep else "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, *args], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode:
        tail = "\n".join(out.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"the measurement of {' '.join(args)} failed:\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    from report import save_json, verdict

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three configurations")
    parser.add_argument("--keep", action="store_true", help="the allocator keeps freed memory")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    print(f"allocator keeps freed memory: {args.keep}\n")
    print("| qubits | depth | batch | mode | dtype | path | peak MiB | estimate MiB | estimate / peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n, depth, batch, training, dtype in QUICK if args.quick else CONFIGS:
        m = measure(n, depth, batch, training, dtype, args.keep)
        rows.append({"qubits": n, "depth": depth, "batch": batch, "training": training, "dtype": dtype, **m})
        mode = "train" if training else "infer"
        print(
            f"| {n} | {depth} | {batch} | {mode} | {dtype} | {m['path']} | {m['peak'] / 2**20:.0f} | "
            f"{m['estimate'] / 2**20:.0f} | {m['estimate'] / m['peak']:.2f} |"
        )
    low = [r for r in rows if r["estimate"] < r["peak"]]
    print()
    ok = verdict(not low, f"every estimate at least its measured peak ({len(low)} of {len(rows)} below)")
    if args.json:
        save_json(args.json, {"keep": args.keep, "rows": rows})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
