"""Benchmark: one frozen-backbone feature-extraction pass over hymenoptera (train + val).

Compares, in the same run on the same machine:
  * baseline: the PyTorch tutorial's loop (torchvision ImageFolder, DataLoader without workers,
    torch.no_grad, default memory format);
  * qtl.features.extract_features with the cache bypassed (the cold pass), for several worker counts;
  * a cache hit (what every later epoch and run of a frozen variant costs).

Random-init weights have the same cost as ImageNet weights, so no download is needed.

    .venv/bin/python bench/feature_extraction.py [--root PATH] [--backbone resnet18] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from qtl.backbones import image_transform, load_backbone
from qtl.data import resolve_dataset
from qtl.features import extract_features

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"


def tutorial_pass(backbone: str, root: Path) -> float:
    """Seconds for the tutorial-style pass over train and val."""
    start = time.perf_counter()
    model, _ = load_backbone(backbone, pretrained=False)
    transform = image_transform(backbone, pretrained=False)
    with torch.no_grad():
        for split in ("train", "val"):
            loader = DataLoader(ImageFolder(str(root / split), transform), batch_size=32, num_workers=0)
            for x, _ in loader:
                model(x)
    return time.perf_counter() - start


def qtl_pass(backbone: str, root: Path, workers: int | None) -> float:
    """Seconds for extract_features on train and val, cache bypassed."""
    start = time.perf_counter()
    for split in ("train", "val"):
        extract_features(backbone, False, root, split, use_cache=False, num_workers=workers)
    return time.perf_counter() - start


def cache_hit(backbone: str, root: Path, cache: Path) -> float:
    """Seconds for reading both splits from a warm cache."""
    for split in ("train", "val"):
        extract_features(backbone, False, root, split, cache_dir=cache)
    start = time.perf_counter()
    for split in ("train", "val"):
        extract_features(backbone, False, root, split, cache_dir=cache)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED if SHARED.is_dir() else None)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = resolve_dataset(args.root)
    n = sum(1 for p in root.rglob("*") if p.is_file())
    print(f"{args.backbone} random-init, {n} files under {root}, torch threads {torch.get_num_threads()}")

    runs: dict[str, list[float]] = {}
    candidates = {
        "tutorial loop (baseline)": lambda: tutorial_pass(args.backbone, root),
        "qtl, 0 workers": lambda: qtl_pass(args.backbone, root, 0),
        "qtl, 1 worker": lambda: qtl_pass(args.backbone, root, 1),
        "qtl, 2 workers": lambda: qtl_pass(args.backbone, root, 2),
        "qtl default": lambda: qtl_pass(args.backbone, root, None),
    }
    for _ in range(args.repeats):  # interleaved, so that background load hits every candidate alike
        for name, run in candidates.items():
            runs.setdefault(name, []).append(run())
    with tempfile.TemporaryDirectory() as cache:
        runs["qtl cache hit"] = [cache_hit(args.backbone, root, Path(cache))]

    base = statistics.median(runs["tutorial loop (baseline)"])
    print(f"{'pass':28s} {'median s':>9s} {'runs':>20s} {'vs baseline':>12s}")
    for name, times in runs.items():
        med = statistics.median(times)
        shown = " ".join(f"{t:.2f}" for t in times)
        print(f"{name:28s} {med:9.2f} {shown:>20s} {base / med:11.2f}x")


if __name__ == "__main__":
    main()
