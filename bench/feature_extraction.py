"""Benchmark: one frozen-backbone feature-extraction pass over hymenoptera (train + val).

Compares, in the same run on the same machine:
  * baseline: the PyTorch tutorial's loop (torchvision ImageFolder, DataLoader without workers,
    torch.no_grad, default memory format);
  * qtl.data.features.extract_features with the cache bypassed (the cold pass), for several worker counts;
  * a cache hit (what every later epoch and run of a frozen variant costs).

Random-init weights have the same cost as ImageNet weights, so no download is needed. Each pass is
reported as wall time and as CPU time (this process plus its decoding workers): on a loaded machine the
CPU time is the steadier figure, the wall time shows what worker overlap buys.

    .venv/bin/python bench/feature_extraction.py [--root PATH] [--backbone resnet18] [--repeats 2]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from qtl.data.features import extract_features
from qtl.data.sources import resolve_dataset
from qtl.models.backbones import image_transform, load_backbone


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


def warm_cache(backbone: str, root: Path, cache: Path) -> None:
    for split in ("train", "val"):
        extract_features(backbone, False, root, split, cache_dir=cache)


def cache_hit(backbone: str, root: Path, cache: Path) -> float:
    """Seconds for reading both splits from a warm cache (hashing every image file included)."""
    start = time.perf_counter()
    for split in ("train", "val"):
        extract_features(backbone, False, root, split, cache_dir=cache)
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of run()."""
    cpu = cpu_seconds()
    wall = run()
    return wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=None, help="dataset root (default: found as qtl finds it)"
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    root = resolve_dataset(args.root)
    n = sum(1 for p in root.rglob("*") if p.is_file())
    print(f"{args.backbone} random-init, {n} files under {root}, torch threads {torch.get_num_threads()}")

    runs: dict[str, list[tuple[float, float]]] = {}
    candidates = {
        "tutorial loop (baseline)": lambda: tutorial_pass(args.backbone, root),
        "qtl, 0 workers": lambda: qtl_pass(args.backbone, root, 0),
        "qtl, 1 worker": lambda: qtl_pass(args.backbone, root, 1),
        "qtl, 2 workers": lambda: qtl_pass(args.backbone, root, 2),
        "qtl default": lambda: qtl_pass(args.backbone, root, None),
    }
    for _ in range(args.repeats):  # interleaved, so that background load hits every candidate alike
        for name, run in candidates.items():
            runs.setdefault(name, []).append(timed(run))
    with tempfile.TemporaryDirectory() as cache:
        warm_cache(args.backbone, root, Path(cache))
        runs["qtl cache hit"] = [timed(lambda: cache_hit(args.backbone, root, Path(cache)))]

    base_wall = statistics.median(w for w, _ in runs["tutorial loop (baseline)"])
    base_cpu = statistics.median(c for _, c in runs["tutorial loop (baseline)"])
    print(f"{'pass':26s} {'wall s':>8s} {'cpu s':>8s} {'wall runs':>18s} {'speed-up wall':>14s} {'cpu':>8s}")
    for name, times in runs.items():
        wall = statistics.median(w for w, _ in times)
        cpu = statistics.median(c for _, c in times)
        shown = " ".join(f"{w:.1f}" for w, _ in times)
        print(
            f"{name:26s} {wall:8.2f} {cpu:8.2f} {shown:>18s} {base_wall / wall:13.2f}x {base_cpu / cpu:7.2f}x"
        )


if __name__ == "__main__":
    main()
