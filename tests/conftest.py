"""Shared fixtures. Tests never touch the network: weights are random-init or files the tests write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera_data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Keep TORCH_HOME and qtl's caches inside a temporary folder for the whole session."""
    root = tmp_path_factory.mktemp("caches")
    old = {k: os.environ.get(k) for k in ("TORCH_HOME", "QTL_CACHE_DIR")}
    os.environ["TORCH_HOME"] = str(root / "torch")
    os.environ["QTL_CACHE_DIR"] = str(root / "qtl")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def hymenoptera_dir() -> Path:
    """The real ants/bees dataset shipped beside the repo (train/val, 245/153 images)."""
    if not SHARED_HYMENOPTERA.is_dir():
        pytest.fail(f"hymenoptera dataset missing at {SHARED_HYMENOPTERA}")
    return SHARED_HYMENOPTERA


def make_image_folder(root: Path, classes=("cats", "dogs"), per_split=(6, 4), size=(40, 32)) -> Path:
    """Write a small ImageFolder-style dataset: root/{train,val}/<class>/*.png, distinct colours per class."""
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


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """A 2-class dataset with 6 train and 4 val images per class."""
    return make_image_folder(tmp_path / "tiny")
