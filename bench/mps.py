"""Benchmark: one training step of a wide dressed quantum circuit on the MPS engine.

A step is forward + backward + Adam step of `DressedQuantumCircuit(512, 2, config, engine)` on random
(B, 512) features, timed by `quantum_head.time_steps` (fit()'s own `train_step`, median of repeats).
Depth 6, batch 32 (the paper's circuit depth):

    mps            qtl's MPS engine, exact (bond up to 2**6 = 64)  4, 8, 16, 20, 32, 64, 128 qubits
    native         qtl's statevector engine                       16, 20 qubits
    default.tensor PennyLane's quimb MPS device, diff_method best  every size, until one exceeds the cap

Ratios are taken within the same run (a busy machine slows both sides). Each time is given as wall
seconds and as CPU seconds of this process (all its threads): on a machine busy with other work, the
CPU seconds are what the step costs. default.tensor runs a batch as one circuit per sample and
differentiates by parameter shifts (1 + 2 x 7n circuits per sample), so it is first timed on one
sample's forward pass; when its whole step would exceed the cap, 32 x one forward (a lower bound on
its step) stands in for the step and the ratio to the MPS engine is a lower bound too.

    cd bench && PYTHONPATH=.. ../.venv/bin/python mps.py [--quick] [--sizes N ...] [--cap SECONDS]
        [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import warnings

import torch
from machine import machine

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import train_step

DEPTH, BATCH = 6, 32
WIDTHS = (4, 8, 16, 20, 32, 64, 128)
SIZES = {"mps": WIDTHS, "native": (16, 20), "default.tensor": WIDTHS}
TARGET_64_S = 1.0  # 64 qubits: under a second per step
TARGET_RATIO = 10.0  # at least 10x faster than default.tensor


def build_head(engine: str, n: int) -> DressedQuantumCircuit:
    torch.manual_seed(0)
    options = {"diff_method": "best"} if engine == "default.tensor" else {}
    return DressedQuantumCircuit(512, 2, CircuitConfig(n, DEPTH), engine=engine, **options)


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def forward_seconds(head: DressedQuantumCircuit, batch: int, cap: float) -> float | None:
    """Wall seconds of one forward pass without gradients; None past `cap` (interrupted)."""
    x = torch.randn(batch, 512, generator=torch.Generator().manual_seed(1))
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(max(1, int(cap)))
    try:
        with torch.no_grad():
            start = time.perf_counter()
            head(x)
            return time.perf_counter() - start
    except Exception as exc:  # numba wraps the alarm's Timeout in a SystemError
        while exc is not None and not isinstance(exc, Timeout):
            exc = exc.__cause__ or exc.__context__
        if exc is None:
            raise
        return None
    finally:
        signal.alarm(0)


def step_times(head: DressedQuantumCircuit, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of fit()'s train_step after one warm-up step."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(BATCH, 512, generator=g), torch.randint(0, 2, (BATCH,), generator=g)
    optimizer = adam(head.parameters(), lr=1e-3)
    train_step(head, optimizer, x, y)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        train_step(head, optimizer, x, y)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(engine: str, n: int, repeats: int, cap: float) -> dict:
    entry = {"engine": engine, "n_qubits": n, "depth": DEPTH, "batch": BATCH}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = build_head(engine, n)
        if engine == "default.tensor":
            forward_seconds(build_head(engine, 2), 1, cap)  # numba compiles quimb's kernels: not timed
            one = forward_seconds(head, 1, cap)
            entry["forward_1_s"] = one
            # its step runs 1 + 2 * (7 n) circuits per sample (parameter shifts of n inputs and 6n weights)
            if one is None or 2 * one * BATCH * (1 + 14 * n) > cap:  # warm-up + timed step over the cap
                entry.update(step_s=None, cpu_s=None, status="> cap")
                entry["bound_s"] = None if one is None else one * BATCH
                return entry
        entry["step_s"], entry["cpu_s"] = step_times(head, repeats if engine != "default.tensor" else 1)
    entry["status"] = "ok"
    if engine == "mps":
        entry["bond"] = head.engine.bond
    return entry


def cell(e: dict, cap: float) -> str:
    if e.get("step_s") is not None:
        return f"{e['step_s']:.3f} s wall, {e['cpu_s']:.3f} s CPU"
    if e.get("bound_s") is not None:
        return f"> {e['bound_s']:.1f} s (32 x one sample's forward, {e['forward_1_s']:.2f} s)"
    if e["status"] == "skipped":
        return "skipped (a smaller size exceeded the cap)"
    return f"> {cap:g} s (one sample's forward did not finish)"


def ratio(e: dict, mps: dict) -> str:
    """default.tensor or native over mps, on wall time; '>=' when only a lower bound is known."""
    if not mps.get("step_s"):
        return ""
    if e.get("step_s"):
        return f" ({e['step_s'] / mps['step_s']:.1f}x mps)"
    if e.get("bound_s"):
        return f" (>= {e['bound_s'] / mps['step_s']:.0f}x mps)"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="16 and 32 qubits only, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="only these widths")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds a step may take (default 300)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--json", help="write the results and the machine here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    sizes = [16, 32] if args.quick else sorted({n for s in SIZES.values() for n in s})
    sizes = [n for n in sizes if n in args.sizes] if args.sizes else sizes
    results, stopped = [], set()
    for n in sizes:
        for engine, allowed in SIZES.items():
            if n not in allowed:
                continue
            if engine in stopped:
                e = {"engine": engine, "n_qubits": n, "step_s": None, "status": "skipped"}
            else:
                e = measure(engine, n, repeats, args.cap)
                if e["step_s"] is None and e.get("bound_s") is None:
                    stopped.add(engine)  # not even one forward within the cap: larger sizes only take longer
            results.append(e)
            print(f"  ... {n}q {engine}: {cell(e, args.cap)}", file=sys.stderr, flush=True)

    print("\n| qubits | mps (bond) | native | default.tensor |\n|---|---|---|---|")
    for n in sizes:
        row = {r["engine"]: r for r in results if r["n_qubits"] == n}
        m = row["mps"]
        cells = [f"{cell(m, args.cap)} (bond {m.get('bond')})"]
        for engine in ("native", "default.tensor"):
            e = row.get(engine)
            cells.append("-" if e is None else cell(e, args.cap) + ratio(e, m))
        print(f"| {n} | " + " | ".join(cells) + " |")
    at64 = next((r for r in results if r["engine"] == "mps" and r["n_qubits"] == 64), None)
    if at64 and at64["step_s"]:
        ok = at64["step_s"] < TARGET_64_S  # a step's time on this machine, all its threads
        print(
            f"\n64 qubits: {at64['step_s']:.3f} s wall, {at64['cpu_s']:.3f} s CPU per step "
            f"(target < {TARGET_64_S:g} s) " + ("OK" if ok else "MISSED")
        )
    mps = {r["n_qubits"]: r for r in results if r["engine"] == "mps" and r["step_s"]}
    ratios = []
    for r in results:
        if r["engine"] == "default.tensor" and r["n_qubits"] in mps:
            other = r.get("step_s") or r.get("bound_s")
            if other:
                ratios.append(other / mps[r["n_qubits"]]["step_s"])
    if ratios:
        ok = min(ratios) >= TARGET_RATIO
        print(
            f"default.tensor / mps >= {min(ratios):.0f}x at every size measured (target >= "
            f"{TARGET_RATIO:g}x) " + ("OK" if ok else "MISSED")
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "cap_s": args.cap, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
