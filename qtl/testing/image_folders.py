"""Small generated ImageFolder datasets, for tests and benchmarks (no network, no shared data)."""

from __future__ import annotations

import colorsys
import zipfile
from pathlib import Path

import torch
from PIL import Image


def make_image_folder(root: Path, classes=("cats", "dogs"), per_split=(6, 4), size=(40, 32)) -> Path:
    """Write a small ImageFolder-style dataset: root/{train,val}/<class>/*.png, distinct colours per class.

    per_split: images per class in (train, val); size: (width, height) of every image.
    """
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


def class_colour(c: int, n_classes: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour for class c of n (hues spread around the circle)."""
    r, g, b = colorsys.hsv_to_rgb(c / n_classes, 0.9, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def make_class_folders(root: Path, n_classes: int, per_class: int, size=(40, 32), fmt="png") -> Path:
    """root/class_<k>/<k>_<i>.<fmt>: `per_class` noisy images of one colour per class, no splits."""
    g = torch.Generator().manual_seed(n_classes)
    for c in range(n_classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = torch.tensor(class_colour(c, n_classes), dtype=torch.float32)
        for i in range(per_class):
            noise = torch.randint(-30, 30, (size[1], size[0], 3), generator=g).float()
            arr = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(d / f"{c}_{i}.{fmt}")
    return root


def zip_folder(folder: Path, archive: Path, prefix: str = "", extra: dict[str, bytes] | None = None) -> Path:
    """Zip every file under `folder` as `prefix` + its relative path, plus `extra` {name: bytes}."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive
