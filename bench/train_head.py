"""Benchmark: qtl's frozen-feature training loop against a plain DataLoader loop, same run, same head.

The paper's recipe for the `quantum` variant: 30 epochs at batch 4 over 245 cached (512-d) features,
4 qubits, depth 6, native engine, plus a val pass over 153 features per epoch. Both sides train the
same head; the baseline is the usual PyTorch loop (DataLoader over a TensorDataset, a val loop).

    .venv/bin/python bench/train_head.py [--epochs 30] [--repeats 3] [--threads N]

Prints the median wall time of each and the ratio baseline / qtl. Without --threads, the baseline runs
with torch's default thread count and fit() with its own choice (MachineConfig.cpu_threads=None).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.variants import build_model
from qtl.training.fit import fit

CLASSES = ["ants", "bees"]


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
    args = parser.parse_args()

    train, val = features(245, 0), features(153, 1)
    mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES)
    tc = dataclasses.replace(recipe("quantum"), epochs=args.epochs)
    machine = MachineConfig(cpu_threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(mc)
    qtl_times, base_times = [], []
    for _ in range(args.repeats):
        torch.manual_seed(0)
        model.head = build_model(mc, backbone=(model.backbone, model.in_features)).head
        t = time.perf_counter()
        fit(mc, tc, machine, features=(train, val), model=model)
        qtl_times.append(time.perf_counter() - t)

        torch.manual_seed(0)
        head = build_model(mc, backbone=(model.backbone, model.in_features)).head
        t = time.perf_counter()
        baseline(head, train, val, args.epochs, tc.batch_size)
        base_times.append(time.perf_counter() - t)

    steps = args.epochs * -(-245 // tc.batch_size)
    q, b = statistics.median(qtl_times), statistics.median(base_times)
    print(f"quantum head, {args.epochs} epochs x 245 features, batch {tc.batch_size} ({steps} steps), native")
    print(f"torch threads: {torch.get_num_threads()} (fit() picks 1 for this small head unless --threads)")
    print(f"repeats: {args.repeats} (median)")
    print(f"qtl fit():              {q:7.2f} s  ({q / steps * 1e3:.2f} ms/step incl. val)")
    print(f"plain DataLoader loop:  {b:7.2f} s  ({b / steps * 1e3:.2f} ms/step incl. val)")
    print(f"ratio baseline / qtl:   {b / q:7.2f}x")


if __name__ == "__main__":
    main()
