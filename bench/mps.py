"""Benchmark: one training step of a wide dressed quantum circuit on the MPS engine.

A step is forward + backward + Adam step of `DressedQuantumCircuit(512, 2, config, engine)` on random
(B, 512) features, timed by `quantum_head.time_steps` (fit()'s own `train_step`, median of repeats).
Depth 6, batch 32 (the paper's circuit depth):

    mps            qtl's MPS engine, exact (bond 2**6 = 64)       16, 20, 32, 64, 128 qubits
    native         qtl's statevector engine                       16, 20 qubits
    default.tensor PennyLane's quimb MPS device, diff_method best  every size, until one exceeds the cap

Ratios are taken within the same run (a busy machine slows both sides). A step slower than the cap is
reported as "> cap" with the time of one forward pass alone (a lower bound on its step), so the ratio to
the MPS engine is then a lower bound too.

    .venv/bin/python bench/mps.py [--quick] [--cap SECONDS] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch
from machine import machine
from quantum_head import time_steps

from qtl.circuit import CircuitConfig
from qtl.heads import DressedQuantumCircuit

DEPTH, BATCH = 6, 32
SIZES = {"mps": (16, 20, 32, 64, 128), "native": (16, 20), "default.tensor": (16, 20, 32, 64, 128)}
TARGET_64_S = 1.0  # 64 qubits: under a second per step
TARGET_RATIO = 10.0  # at least 10x faster than default.tensor


def build_head(engine: str, n: int) -> DressedQuantumCircuit:
    torch.manual_seed(0)
    options = {"diff_method": "best"} if engine == "default.tensor" else {}
    return DressedQuantumCircuit(512, 2, CircuitConfig(n, DEPTH), engine=engine, **options)


def forward_seconds(head: DressedQuantumCircuit, repeats: int = 1) -> float:
    """Median seconds of a forward pass without gradients."""
    x = torch.randn(BATCH, 512, generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            head(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(engine: str, n: int, repeats: int, cap: float) -> dict:
    entry = {"engine": engine, "n_qubits": n, "depth": DEPTH, "batch": BATCH}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = build_head(engine, n)
        if engine == "default.tensor":  # its step is parameter-shift: look at one forward first
            entry["forward_s"] = forward_seconds(head)
            if entry["forward_s"] > cap / 4:
                entry.update(step_s=None, status="> cap")
                return entry
        seconds, steps = time_steps(head, BATCH, repeats, cap)
    entry.update(step_s=seconds, steps=steps, status="ok" if seconds is not None else "> cap")
    if engine == "mps":
        entry["bond"] = head.engine.bond
    return entry


def cell(e: dict, cap: float) -> str:
    if e["step_s"] is not None:
        return f"{e['step_s']:.3f} s"
    forward = f", forward alone {e['forward_s']:.1f} s" if "forward_s" in e else ""
    return f"> {cap:g} s{forward}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="16 and 32 qubits only, 2 repeats")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a step may take (default 120)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--json", help="write the results and the machine here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    sizes = sorted({n for s in SIZES.values() for n in s})
    if args.quick:
        sizes = [16, 32]
    results, stopped = [], set()
    for n in sizes:
        row = {}
        for engine, allowed in SIZES.items():
            if n not in allowed:
                continue
            if engine in stopped:
                row[engine] = {"engine": engine, "n_qubits": n, "step_s": None, "status": "skipped"}
                continue
            row[engine] = e = measure(engine, n, repeats, args.cap)
            if e["step_s"] is None:
                stopped.add(engine)  # larger sizes only take longer
            print(f"  ... {n}q {engine}: {cell(e, args.cap)}", file=sys.stderr)
        mps = row["mps"]["step_s"]
        for engine, e in row.items():
            if engine != "mps" and mps:
                if e["step_s"]:
                    e["ratio_to_mps"] = e["step_s"] / mps
                elif "forward_s" in e:
                    e["ratio_to_mps_at_least"] = e["forward_s"] / mps
        results.extend(row.values())
        print(f"{n:>3} qubits | " + " | ".join(f"{k}: {cell(v, args.cap)}" for k, v in row.items()))
        sys.stdout.flush()

    print("\n| qubits | mps (bond) | native | default.tensor |\n|---|---|---|---|")
    for n in sizes:
        row = {r["engine"]: r for r in results if r["n_qubits"] == n}
        m = row["mps"]
        cells = [f"{m['step_s']:.3f} s ({m.get('bond')})" if m["step_s"] else cell(m, args.cap)]
        for engine in ("native", "default.tensor"):
            e = row.get(engine)
            if e is None or e["status"] == "skipped":
                cells.append("-" if e is None else "skipped (a smaller size exceeded the cap)")
            elif "ratio_to_mps" in e:
                cells.append(f"{cell(e, args.cap)} ({e['ratio_to_mps']:.1f}x mps)")
            elif "ratio_to_mps_at_least" in e:
                cells.append(f"{cell(e, args.cap)} (>= {e['ratio_to_mps_at_least']:.0f}x mps)")
            else:
                cells.append(cell(e, args.cap))
        print(f"| {n} | " + " | ".join(cells) + " |")
    at64 = next((r["step_s"] for r in results if r["engine"] == "mps" and r["n_qubits"] == 64), None)
    if at64:
        print(
            f"\n64 qubits: {at64:.3f} s per step (target < {TARGET_64_S:g} s) "
            + ("OK" if at64 < TARGET_64_S else "MISSED")
        )
    ratios = [
        r.get("ratio_to_mps", r.get("ratio_to_mps_at_least"))
        for r in results
        if r["engine"] == "default.tensor"
    ]
    ratios = [x for x in ratios if x]
    if ratios:
        ok = min(ratios) >= TARGET_RATIO
        print(
            f"default.tensor / mps >= {min(ratios):.0f}x (target >= {TARGET_RATIO:g}x) "
            + ("OK" if ok else "MISSED")
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "cap_s": args.cap, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
