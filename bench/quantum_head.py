"""Benchmark: one training step of the dressed quantum circuit on each simulation engine.

A step is forward + backward + Adam step of `DressedQuantumCircuit(512, 2, config, engine)` on random
(B, 512) features with cross-entropy; every engine gets qtl's optimizer
(`qtl.training.optim.adam`, fused where torch supports it), so the step is the one qtl trains with.
Each engine's time is the median of repeated steps, and its ratio to the native engine is taken within
the same run:

    (a) demo-loop        the paper's demo: a PennyLane default.qubit QNode called once per sample,
                         the results torch.stack'ed (PennyLaneEngine's QNode, diff_method "best")
    (b) default.qubit    one parameter-broadcast call, backprop
    (c) lightning.qubit  adjoint
    (d) native           qtl's engine

    .venv/bin/python bench/quantum_head.py [--quick] [--json PATH] [--cap SECONDS] [--threads N] [--cpu-time]
        [--max-qubits N] [--device cuda]

With --device cuda the heads and batches live on the GPU in float32 and every step ends with a
synchronize, so a step's time is its GPU time (PennyLane's CPU simulators still run on the CPU).

A step slower than the cap stops that configuration and is reported as "> cap"; a configuration
on a PennyLane engine whose smaller sibling (same batch, fewer qubits) predicts more than
EXTRAPOLATE_FACTOR x cap, since a statevector step grows about 2x per qubit, is skipped and reported
the same way. The native engine is always run (its memory budget bounds it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import warnings

import torch
from machine import machine
from torch import nn

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.training.optim import adam
from qtl.training.steps import train_step

ENGINES = ("demo-loop", "default.qubit", "lightning.qubit", "native")
#: (n_qubits, depth, batch), smallest first within each batch size.
CONFIGS = [(4, 6, 4), (4, 6, 64), (4, 6, 32), (8, 6, 32), (12, 6, 32), (16, 6, 32), (20, 6, 32)]
#: Skip a configuration whose extrapolated step time exceeds this many caps.
EXTRAPOLATE_FACTOR = 5
#: Address-space limit of this process, so a PennyLane simulation too large for the machine fails
#: with a MemoryError instead of swapping or waking the OOM killer.
MEMORY_LIMIT_BYTES = 11 * 2**30
NATIVE_MEMORY_BUDGET = 10 * 2**30


class DemoLoopEngine(nn.Module):
    """The paper demo's quantum layer: call the QNode on each sample and stack the results."""

    def __init__(self, qnode) -> None:
        super().__init__()
        self.qnode = qnode

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles -> (B, n) <Z_i>, one QNode call per sample."""
        return torch.stack([torch.hstack(list(self.qnode(x, weights))).float() for x in angles])


def build_head(engine: str, config: CircuitConfig) -> nn.Module:
    torch.manual_seed(0)
    if engine == "native":
        return DressedQuantumCircuit(512, 2, config, engine="native", memory_budget=NATIVE_MEMORY_BUDGET)
    if engine == "demo-loop":
        head = DressedQuantumCircuit(512, 2, config, engine="default.qubit", diff_method="best")
        head.engine = DemoLoopEngine(head.engine.qnode)
        return head
    method = "adjoint" if engine == "lightning.qubit" else "backprop"
    return DressedQuantumCircuit(512, 2, config, engine=engine, diff_method=method)


#: The clock steps are timed with: wall-clock, or with --cpu-time this process's CPU time, which on a
#: machine busy with other work measures the step's own work (with --threads 1) rather than waits.
CLOCK = {"clock": time.perf_counter}
DEVICE = {"device": torch.device("cpu")}


def time_steps(head: nn.Module, batch: int, repeats: int, cap: float) -> tuple[float | None, int]:
    """(median seconds per step or None if a step exceeded `cap`, number of timed steps)."""
    device = DEVICE["device"]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 512, generator=g), torch.randint(0, 2, (batch,), generator=g)
    head, x, y = head.to(device), x.to(device), y.to(device)
    optimizer = adam(head.parameters(), lr=1e-3)  # what qtl's fit() uses: fused where supported
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> float:
        clock = CLOCK["clock"]
        sync()
        start = clock()
        train_step(head, optimizer, x, y)  # fit()'s own step
        sync()
        return clock() - start

    warm = step()  # the first step also builds caches (PennyLane tapes, lightning's state): a second try
    if warm > cap:
        warm = step()
        if warm > cap:
            return None, 2
    want = repeats if warm < 0.05 * cap else min(repeats, 3)
    times, spent = [], 0.0
    while len(times) < want or (spent < 0.5 and len(times) < 50 * repeats):  # fast steps: >= 0.5 s in all
        t = step()
        if t > cap:
            return None, len(times) + 1
        times.append(t)
        spent += t
    return statistics.median(times), len(times)


def run(configs, engines, repeats: int, cap: float) -> list[dict]:
    results: list[dict] = []
    limit_ms = EXTRAPOLATE_FACTOR * cap * 1e3
    for n, depth, batch in configs:
        row = {}
        for engine in engines:
            entry = {"n_qubits": n, "depth": depth, "batch": batch, "engine": engine}
            smaller = [
                r for r in results if r["engine"] == engine and r["batch"] == batch and r["depth"] == depth
            ]
            last = smaller[-1] if smaller else None
            if last and last["status"] != "ok":
                entry.update(status=last["status"], median_ms=None)
            elif engine != "native" and last and last["median_ms"] * 2 ** (n - last["n_qubits"]) > limit_ms:
                entry.update(status="> cap (extrapolated)", median_ms=None)
            else:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        seconds, steps = time_steps(
                            build_head(engine, CircuitConfig(n, depth)), batch, repeats, cap
                        )
                    status = "ok" if seconds is not None else "> cap"
                    entry.update(
                        status=status, median_ms=None if seconds is None else seconds * 1e3, steps=steps
                    )
                except MemoryError:
                    entry.update(status="out of memory", median_ms=None)
                except (
                    RuntimeError
                ) as exc:  # torch allocation failures (SimulationTooLargeError: a ValueError)
                    if "alloc" not in str(exc).lower() and "memory" not in str(exc).lower():
                        raise
                    entry.update(status="out of memory", median_ms=None)
                gc.collect()
            row[engine] = entry
            results.append(entry)
            print_entry(entry, cap)
        native = row.get("native", {}).get("median_ms")
        for entry in row.values():
            if native and entry["median_ms"]:
                entry["ratio_to_native"] = entry["median_ms"] / native
        print_row(row, cap)
    return results


def describe(entry: dict, cap: float) -> str:
    """Why an entry has no time: "> cap (10 s)", "> cap (extrapolated) (10 s)" or "out of memory (11 GiB)"."""
    if entry["status"] == "out of memory":
        return f"out of memory ({MEMORY_LIMIT_BYTES / 2**30:g} GiB limit)"
    return f"{entry['status']} ({cap:g} s)"


def print_entry(entry: dict, cap: float) -> None:
    """Progress line on stderr, so long runs show where they are."""
    t = f"{entry['median_ms']:.2f} ms" if entry["median_ms"] else describe(entry, cap)
    print(
        f"  ... {entry['n_qubits']}q d{entry['depth']} b{entry['batch']} {entry['engine']}: {t}",
        file=sys.stderr,
    )


def print_row(row: dict, cap: float) -> None:
    first = next(iter(row.values()))
    cells = []
    for engine, e in row.items():
        if e["median_ms"] is None:
            cells.append(f"{engine}: {describe(e, cap)}")
        else:
            ratio = f" ({e['ratio_to_native']:.1f}x)" if "ratio_to_native" in e and engine != "native" else ""
            cells.append(f"{engine}: {e['median_ms']:.2f} ms{ratio}")
    print(
        f"{first['n_qubits']:>2} qubits, depth {first['depth']}, batch {first['batch']:>2} | "
        + " | ".join(cells)
    )
    sys.stdout.flush()


def markdown_table(results: list[dict], engines: list[str], cap: float) -> str:
    """The results as a Markdown table: one row per configuration, ms per step and ratio to native."""
    lines = ["| qubits | depth | batch | " + " | ".join(engines) + " |", "|---" * (3 + len(engines)) + "|"]
    configs = list(dict.fromkeys((r["n_qubits"], r["depth"], r["batch"]) for r in results))
    for n, depth, batch in configs:
        cells = []
        for engine in engines:
            e = next(
                r
                for r in results
                if (r["n_qubits"], r["depth"], r["batch"], r["engine"]) == (n, depth, batch, engine)
            )
            if e["median_ms"] is None:
                cells.append(describe(e, cap))
            elif engine == "native" or "ratio_to_native" not in e:
                cells.append(f"{e['median_ms']:.2f} ms")
            else:
                cells.append(f"{e['median_ms']:.1f} ms ({e['ratio_to_native']:.0f}x)")
        lines.append(f"| {n} | {depth} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats and a 2 s cap")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per engine (default 7)")
    parser.add_argument("--cap", type=float, default=None, help="seconds one step may take (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--cpu-time", action="store_true", help="time by process CPU time (busy machines)")
    parser.add_argument("--max-qubits", type=int, default=None, help="skip configurations above this width")
    parser.add_argument("--device", default="cpu", help="torch device of heads and batches (e.g. cuda)")
    parser.add_argument("--json", metavar="PATH", help="also write machine, command and results as JSON")
    args = parser.parse_args(argv)
    DEVICE["device"] = torch.device(args.device)
    if args.cpu_time:
        CLOCK["clock"] = time.process_time
    repeats = args.repeats or (3 if args.quick else 7)
    cap = args.cap or (2.0 if args.quick else 10.0)
    if args.threads:
        torch.set_num_threads(args.threads)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # (CUDA reserves far more address space than it uses: no limit there)
    if DEVICE["device"].type == "cpu" and (soft == resource.RLIM_INFINITY or soft > MEMORY_LIMIT_BYTES):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, hard))

    info = machine()
    command = " ".join([os.path.relpath(sys.executable), *sys.argv]) if argv is None else " ".join(argv)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
        f"torch {info['torch']}, pennylane {info['pennylane']}"
    )
    print(
        f"step = forward + backward + Adam of DressedQuantumCircuit(512, 2); median of {repeats}+ steps; "
        f"cap {cap:g} s per step; (Nx) = time / native time"
    )
    configs = [c for c in CONFIGS if args.max_qubits is None or c[0] <= args.max_qubits]
    results = run(configs, args.engines, repeats, cap)
    print()
    print(markdown_table(results, args.engines, cap))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "command": command, "cap_s": cap, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
