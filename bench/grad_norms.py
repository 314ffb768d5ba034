"""Benchmark: what reading per-group gradient norms costs the closed-form training step, same run.

The paper's head (4 qubits, depth 6, 512-d features, batch 4) trained by the closed-form step that fit()
uses, for one epoch of `--batches` steps: without norms, with them as fit() reads them (`after_step` on
every step, sampling SAMPLES_PER_EPOCH of them), and reading every step (the worst case), alternating
the three `--repeats` times.

    .venv/bin/python bench/grad_norms.py [--batches 62] [--repeats 7]

Prints the median epoch time of each and the ratios to the plain epoch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from qtl.models.heads import DressedQuantumCircuit
from qtl.models.variants import Classifier
from qtl.quantum.circuit import CircuitConfig
from qtl.training.closed_form import closed_form_step
from qtl.training.gradients import GradientNorms
from qtl.training.optim import adam

try:
    from machine import machine  # run as `python bench/grad_norms.py`
except ImportError:  # imported as bench.grad_norms
    from bench.machine import machine


def epoch(batches: int, mode: str, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for `batches` closed-form steps on a fresh head; mode "plain", "fit" (fit()'s sampling) or
    "every" (norms read after every step)."""
    torch.manual_seed(0)
    head = DressedQuantumCircuit(512, 2, CircuitConfig(4, 6))
    model = Classifier(nn.Identity(), head, 512, frozen=True)
    optimizer = adam(head.parameters(), 4e-4)
    step = closed_form_step(head, optimizer)
    norms = GradientNorms(model, batches=1 if mode == "every" else batches)  # 1: sample every step
    start = time.perf_counter()
    for i in range(batches):
        xb, yb = x[i % len(x)], y[i % len(y)]
        step(head, optimizer, xb, yb)
        if mode != "plain":
            norms.after_step(step)
    if mode != "plain":
        norms.epoch()  # the one sync per epoch
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=62)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # what fit() uses for a small head on cached features
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batches, 4, 512, generator=g).relu()
    y = torch.randint(0, 2, (args.batches, 4), generator=g)
    modes = ("plain", "fit", "every")
    epoch(args.batches, "every", x, y)  # warm up every path
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            times[mode].append(epoch(args.batches, mode, x, y))
    median = {m: statistics.median(t) for m, t in times.items()}
    result = {"batches": args.batches, "seconds": median, "machine": machine()}
    result["ratio"] = {m: median[m] / median["plain"] for m in modes}
    print(f"{args.batches} closed-form steps, median of {args.repeats}:")
    for mode, what in (("plain", "no norms"), ("fit", "as fit() reads them"), ("every", "every step")):
        print(f"  {what:<20} {median[mode] * 1e3:7.1f} ms  x{result['ratio'][mode]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
