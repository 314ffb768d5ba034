"""Small generated ImageFolder datasets, for tests and benchmarks (no network, no shared data)."""

from __future__ import annotations

from pathlib import Path

import torch


def make_image_folder(root: Path, classes=("cats", "dogs"), per_split=(6, 4), size=(40, 32)) -> Path:
    """Write a small ImageFolder-style dataset: root/{train,val}/<class>/*.png, distinct colours per class.

    per_split: images per class in (train, val); size: (width, height) of every image.
    """
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_split, strict=True):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = torch.full((size[1], size[0], 3), 60.0 + 120.0 * c)
                noise = torch.randint(-40, 40, (size[1], size[0], 3), generator=g).float()
                arr = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{name}_{i}.png")
    return root
