"""Benchmark: one training step of a wide dressed quantum circuit on the MPS engine.

A step is forward + backward + Adam step of `DressedQuantumCircuit(512, 2, config, engine)` on random
(B, 512) features, timed by `quantum_head.time_steps` (fit()'s own `train_step`, median of repeats).
Depth 6, batch 32 (the paper's circuit depth):

    mps            qtl's MPS engine, exact (bond up to 2**6 = 64)  4, 8, 16, 20, 32, 64, 128 qubits
    mps-sites      the same, always site by site (never the stacked  12, 14, 16, 20, 32 qubits
                   chain of `_brickwall`): where the paths cross
    mps@REF        with --baseline REF: the MPS engine of git commit REF (`git show REF:qtl/quantum/
                   engines/mps.py`, imported beside this tree's), the same sizes
    native         qtl's statevector engine                       16, 20 qubits
    default.tensor PennyLane's quimb MPS device, diff_method best  every size, until one exceeds the cap

Ratios are taken within the same run (a busy machine slows both sides). Each time is given as wall
seconds and as CPU seconds of this process (all its threads): on a machine busy with other work, the
CPU seconds are what the step costs. default.tensor runs a batch as one circuit per sample and
differentiates by parameter shifts (1 + 2 x 7n circuits per sample), so it is first timed on one
sample's forward pass; when its whole step would exceed the cap, 32 x one forward (a lower bound on
its step) stands in for the step and the ratio to the MPS engine is a lower bound too.

With --recipe, the paper's whole recipe (30 epochs, batch 4, Adam 4e-4, StepLR) of the quantum head at 128
qubits on the MPS engine, trained by fit() on cached efficientnet_lite0 features of hymenoptera (extracted
first, not timed): its wall time and best val accuracy.

Targets: 64 qubits, depth 6, batch 32: <= 0.2 s per step; the 128-qubit recipe in minutes (<= 10);
default.tensor >= 10x slower. Each prints PASS or FAIL.

    cd bench && PYTHONPATH=.. ../.venv/bin/python mps.py [--quick] [--sizes N ...] [--cap SECONDS]
        [--threads N] [--baseline REF] [--engines mps native ...] [--recipe [--data PATH]] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
import warnings
from pathlib import Path

import torch
from baseline import module_at
from machine import machine
from report import verdict
from timing import step_seconds

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import train_step
from qtl.utils.allocator import keep_freed_memory

DEPTH, BATCH = 6, 32
WIDTHS = (4, 8, 16, 20, 32, 64, 128)
SIZES = {"mps": WIDTHS, "mps-sites": (12, 14, 16, 20, 32), "native": (16, 20), "default.tensor": WIDTHS}
TARGET_64_S = 0.2  # 64 qubits, depth 6, batch 32: seconds per step
TARGET_RATIO = 10.0  # at least 10x faster than default.tensor
TARGET_RECIPE_S = 600.0  # the 128-qubit recipe in minutes: at most ten
RECIPE_QUBITS = 128
HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"
BASELINE: dict = {}  # "mps@REF" -> that commit's mps module


def build_head(engine: str, n: int) -> DressedQuantumCircuit:
    torch.manual_seed(0)
    options = {"diff_method": "best"} if engine == "default.tensor" else {}
    name = "mps" if engine == "mps-sites" else engine.split("@")[0]
    head = DressedQuantumCircuit(512, 2, CircuitConfig(n, DEPTH), engine=name, **options)
    if engine in BASELINE:
        head.engine = BASELINE[engine].MPSEngine(CircuitConfig(n, DEPTH))
    if engine == "mps-sites":  # the site-by-site simulation, where mps may take the stacked chain
        head.engine._stacked = dict.fromkeys(head.engine._stacked, False)
    return head


def recipe_run(data: Path, threads: int) -> dict:
    """fit() of the quantum head at RECIPE_QUBITS qubits on the MPS engine, the paper's recipe, on cached
    efficientnet_lite0 features of `data` (extracted first, not timed)."""
    import tempfile

    from qtl.config import MachineConfig, ModelConfig, recipe
    from qtl.data.features import extract_features
    from qtl.training.fit import fit

    with tempfile.TemporaryDirectory(prefix="qtl-mps-recipe-") as tmp:
        sets = tuple(
            extract_features("efficientnet_lite0", True, data, s, cache_dir=tmp) for s in ("train", "val")
        )
    mc = ModelConfig(
        "quantum", backbone="efficientnet_lite0", circuit=CircuitConfig(RECIPE_QUBITS, DEPTH), engine="mps"
    )
    tc = recipe("quantum")
    start = time.perf_counter()
    result = fit(mc, tc, MachineConfig(cpu_threads=threads), features=sets)
    seconds = time.perf_counter() - start
    return {
        "n_qubits": RECIPE_QUBITS,
        "epochs": tc.epochs,
        "batch": tc.batch_size,
        "seconds": seconds,
        "best_val_acc": result.best["val_acc"],
        "recipe": dataclasses.asdict(tc),
    }


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
    return step_seconds(train_step, head, adam(head.parameters(), lr=1e-3), x, y, repeats)


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
    if engine.startswith("mps"):
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
    parser.add_argument("--engines", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--baseline", metavar="REF", help="also time the MPS engine of git commit REF")
    parser.add_argument(
        "--recipe", action="store_true", help=f"also train the recipe at {RECIPE_QUBITS} qubits"
    )
    parser.add_argument("--data", type=Path, default=HYMENOPTERA, help="dataset of --recipe")
    parser.add_argument("--json", help="write the results and the machine here")
    args = parser.parse_args()
    keep_freed_memory()  # every engine runs as under the `qtl` program (bench/allocator.py)
    torch.set_num_threads(args.threads)
    engines = {name: SIZES[name] for name in args.engines}
    if args.baseline:
        BASELINE[f"mps@{args.baseline}"] = module_at(args.baseline, "qtl/quantum/engines/mps.py")
        engines = {"mps": WIDTHS, f"mps@{args.baseline}": WIDTHS, **engines}
    if "mps-sites" in engines:  # mps beside it at its sizes, so that each has a ratio
        engines["mps"] = tuple(sorted({*engines.get("mps", ()), *SIZES["mps-sites"]}))
    repeats = 2 if args.quick else args.repeats
    sizes = [16, 32] if args.quick else sorted({n for s in engines.values() for n in s})
    sizes = [n for n in sizes if n in args.sizes] if args.sizes else sizes
    results, stopped = [], set()
    for n in sizes:
        for engine, allowed in engines.items():
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

    others = [e for e in engines if e != "mps"]
    print("\n| qubits | mps (bond) | " + " | ".join(others) + " |\n" + "|---" * (2 + len(others)) + "|")
    for n in sizes:
        row = {r["engine"]: r for r in results if r["n_qubits"] == n}
        m = row.get("mps", {"status": "not run"})
        cells = [f"{cell(m, args.cap)} (bond {m.get('bond')})"]
        for engine in others:
            e = row.get(engine)
            cells.append("-" if e is None else cell(e, args.cap) + ratio(e, m))
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()
    failed = False
    at64 = next((r for r in results if r["engine"] == "mps" and r["n_qubits"] == 64), None)
    if at64 and at64["step_s"]:
        text = (
            f"64 qubits, depth {DEPTH}, batch {BATCH}: {at64['step_s']:.3f} s wall, {at64['cpu_s']:.3f} s "
            f"CPU per step on {args.threads} threads (target <= {TARGET_64_S:g} s)"
        )
        failed |= not verdict(at64["step_s"] <= TARGET_64_S, text)  # wall time on this machine, its threads
    mps = {r["n_qubits"]: r for r in results if r["engine"] == "mps" and r["step_s"]}
    ratios = []
    for r in results:
        if r["engine"] == "default.tensor" and r["n_qubits"] in mps:
            other = r.get("step_s") or r.get("bound_s")
            if other:
                ratios.append(other / mps[r["n_qubits"]]["step_s"])
    if ratios:
        text = f"default.tensor / mps >= {min(ratios):.0f}x at every size measured"
        text += f" (target >= {TARGET_RATIO:g}x)"
        failed |= not verdict(min(ratios) >= TARGET_RATIO, text)
    run = None
    if args.recipe:
        run = recipe_run(args.data, args.threads)
        text = (
            f"the recipe at {RECIPE_QUBITS} qubits ({run['epochs']} epochs, batch {run['batch']}, cached "
            f"efficientnet_lite0 features): {run['seconds'] / 60:.1f} min, best val acc "
            f"{run['best_val_acc']:.3f} (target <= {TARGET_RECIPE_S / 60:g} min)"
        )
        failed |= not verdict(run["seconds"] <= TARGET_RECIPE_S, text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"machine": machine(), "cap_s": args.cap, "results": results, "recipe": run}, f, indent=1
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
