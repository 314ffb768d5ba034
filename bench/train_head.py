"""Benchmark: qtl's frozen-feature training loop against a plain DataLoader loop, same run, same head.

The paper's recipe for the `quantum` variant: 30 epochs at batch 4 over 245 cached (512-d) features,
4 qubits, depth 6, native engine, plus a val pass over 153 features per epoch. Both sides train the
same head; the baseline is the usual PyTorch loop (DataLoader over a TensorDataset, a val loop).

    .venv/bin/python bench/train_head.py [--epochs 30] [--repeats 3] [--threads N] [--baseline REF]

Prints the median wall time of each and the ratio baseline / qtl. Without --threads, the baseline runs
with torch's default thread count and fit() with its own choice (MachineConfig.cpu_threads=None). With
--baseline REF, fit() also runs (alternated with the others) with the closed-form step of git commit REF
(`git show REF:qtl/training/closed_form.py`, imported beside this tree's and handed to `step_for_run`),
so a change to the step is measured against what it replaced in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F
from baseline import module_at
from report import verdict
from torch.utils.data import DataLoader, TensorDataset

from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.variants import build_model
from qtl.training import steps
from qtl.training.fit import fit

CLASSES = ["ants", "bees"]
NOISE = 0.05  # with --baseline, fit() may be this much slower than the baseline's (a run's noise), no more


def features(n: int, seed: int) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    return FeatureSet(torch.randn(n, 512, generator=g).relu(), labels, ["x"] * n, CLASSES)


def baseline(head, train: FeatureSet, val: FeatureSet, epochs: int, batch_size: int) -> None:
    """The textbook loop: DataLoader batches, Adam + StepLR, a val loop each epoch."""
    optimizer = torch.optim.Adam(head.parameters(), lr=4e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.1)
    train_loader = DataLoader(
        TensorDataset(train.features, train.labels), batch_size=batch_size, shuffle=True
    )
    val_loader = DataLoader(TensorDataset(val.features, val.labels), batch_size=batch_size)
    for _ in range(epochs):
        head.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(head(x), y)
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            for x, y in val_loader:
                F.cross_entropy(head(x), y)
        scheduler.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both loops")
    parser.add_argument(
        "--baseline", metavar="REF", help="also run fit() with the closed-form step of commit REF"
    )
    args = parser.parse_args()
    sides = {"qtl fit()": contextlib.nullcontext}
    if args.baseline:
        old = module_at(args.baseline, "qtl/training/closed_form.py")
        names = ("supports_closed_form", "closed_form_step", "worth_compiling_closed_form")

        def with_old():
            return mock.patch.multiple(steps, **{name: getattr(old, name) for name in names})

        sides[f"fit() @{args.baseline}"] = with_old

    train, val = features(245, 0), features(153, 1)
    mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES)
    tc = dataclasses.replace(recipe("quantum"), epochs=args.epochs)
    machine = MachineConfig(cpu_threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(mc)
    times: dict[str, list[float]] = {name: [] for name in sides}
    base_times = []
    for r in range(args.repeats):
        for name, patched in list(sides.items())[:: 1 if r % 2 else -1]:  # each side first in turn
            torch.manual_seed(0)
            model.head = build_model(mc, backbone=(model.backbone, model.in_features)).head
            with patched():
                t = time.perf_counter()
                fit(mc, tc, machine, features=(train, val), model=model)
                times[name].append(time.perf_counter() - t)

        torch.manual_seed(0)
        head = build_model(mc, backbone=(model.backbone, model.in_features)).head
        t = time.perf_counter()
        baseline(head, train, val, args.epochs, tc.batch_size)
        base_times.append(time.perf_counter() - t)

    n_steps = args.epochs * -(-245 // tc.batch_size)
    b = statistics.median(base_times)
    print(
        f"quantum head, {args.epochs} epochs x 245 features, batch {tc.batch_size} ({n_steps} steps), native"
    )
    print(f"torch threads: {torch.get_num_threads()} (fit() picks 1 for this small head unless --threads)")
    print(f"repeats: {args.repeats} (median), alternated")
    for name, runs in times.items():
        q = statistics.median(runs)
        print(
            f"{name + ':':24s}{q:7.2f} s  ({q / n_steps * 1e3:.2f} ms/step incl. val), "
            f"plain loop / it {b / q:.2f}x"
        )
    print(f"{'plain DataLoader loop:':24s}{b:7.2f} s  ({b / n_steps * 1e3:.2f} ms/step incl. val)")
    if args.baseline:
        q, old_q = (statistics.median(runs) for runs in times.values())
        text = f"fit() @{args.baseline} / fit() = {old_q / q:.2f} (no slowdown: >= {1 - NOISE:g})"
        verdict(old_q / q >= 1 - NOISE, text)


if __name__ == "__main__":
    main()
