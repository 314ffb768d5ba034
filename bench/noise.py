"""Benchmark: one noisy training step, the native density-matrix engine against PennyLane default.mixed.

A step is forward + backward + Adam step (fit()'s own `train_step` and optimizer) of
`DressedQuantumCircuit(512, 2, config, engine, noise=NOISE)` on random (B, 512) features, where the
circuit runs with a channel after every gate (`qtl.quantum.noise.noisy_ops`) and readout error:

    native         qtl's density-matrix engine (qtl/quantum/engines/density.py)
    default.mixed  PennyLane's mixed-state simulator, one parameter-broadcast call, backprop

Both heads start from the same weights and their first outputs are compared (max |difference|), so the
two time the same computation. Times are medians of repeated steps, measured in the same run:

    .venv/bin/python bench/noise.py [--configs 4,6,32 8,6,32] [--repeats N] [--json PATH] [--threads N]
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

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.noise import NoiseConfig
from qtl.training.optim import adam
from qtl.training.steps import train_step

NOISE = NoiseConfig(
    depolarizing=0.01, depolarizing_2q=0.02, amplitude_damping=0.005, phase_damping_2q=0.01, readout=0.02
)
ENGINES = ("default.mixed", "native")


def build_head(engine: str, config: CircuitConfig) -> DressedQuantumCircuit:
    torch.manual_seed(0)
    options = {} if engine == "native" else {"diff_method": "backprop"}
    return DressedQuantumCircuit(512, 2, config, engine=engine, noise=NOISE, **options)


def time_steps(head, batch: int, repeats: int) -> list[float]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 512, generator=g), torch.randint(0, 2, (batch,), generator=g)
    optimizer = adam(head.parameters(), lr=1e-3)
    train_step(head, optimizer, x, y)  # warm-up: caches, compiled stages, PennyLane tapes
    times = []
    while len(times) < repeats or (sum(times) < 0.5 and len(times) < 200):
        start = time.perf_counter()
        train_step(head, optimizer, x, y)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["4,6,32", "8,6,32"], help="n_qubits,depth,batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per engine (at least)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch threads {info['torch_threads']}, "
          f"load average {info['load_avg_at_start']}", file=sys.stderr)  # fmt: skip
    print(f"noise: {NOISE.label()}")
    rows = []
    for spec in args.configs:
        n, depth, batch = (int(v) for v in spec.split(","))
        config = CircuitConfig(n, depth)
        heads = {engine: build_head(engine, config) for engine in ENGINES}
        with torch.no_grad():
            probe = torch.randn(4, 512, generator=torch.Generator().manual_seed(2))
            diff = (
                (heads["native"](probe).double() - heads["default.mixed"](probe).double()).abs().max().item()
            )
        medians = {}
        for engine, head in heads.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                medians[engine] = statistics.median(time_steps(head, batch, args.repeats)) * 1e3
        ratio = medians["default.mixed"] / medians["native"]
        rows.append(
            {"n_qubits": n, "depth": depth, "batch": batch, "ms": medians, "speedup": ratio, "max_diff": diff}
        )
        print(
            f"{n} qubits, depth {depth}, batch {batch}: default.mixed {medians['default.mixed']:.1f} ms, "
            f"native {medians['native']:.2f} ms per step -> {ratio:.0f}x (outputs agree to {diff:.1e})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "noise": NOISE.to_dict(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
