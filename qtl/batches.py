"""How `fit()` feeds a model: in-memory batches of cached features, image loaders, evaluation passes.

Frozen variants train on (N, F) features indexed in a seeded order (no DataLoader per step); trainable
backbones get DataLoaders of normalised image tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from qtl.config import MachineConfig, ModelConfig, TrainConfig

EVAL_BATCH = 512  # features per forward pass when evaluating a head on cached features


@torch.no_grad()
def evaluate_tensors(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = EVAL_BATCH,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `forward` on in-memory x (N, ...) and labels y (N,)."""
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for i in range(0, len(y), batch_size):
        logits = forward(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(y), correct.item() / len(y)


@torch.no_grad()
def evaluate_loader(model: nn.Module, loader, device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` over an image DataLoader."""
    loss, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    return loss / n, correct / n


def feature_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, generator: torch.Generator
):
    """Yield (x (B, F), y (B,)) batches of in-memory features in a seeded order, by direct indexing.

    x is (N, F), or (V, N, F) cached augmented views, from which each sample gets a random view.
    """
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(y.device)
    view = torch.randint(x.shape[0], (n,), generator=generator).to(y.device) if x.dim() == 3 else None
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        yield (x[idx] if view is None else x[view[idx], idx]), y[idx]


def split_features(
    mc: ModelConfig, tc: TrainConfig, machine: MachineConfig, root, device: torch.device, progress, backbone
):
    """Cached (train, val) FeatureSets; train holds `views` augmented views when augmenting.

    backbone: the frozen backbone (or a function returning it) that a cache miss runs.
    """
    from qtl.features import extract_features

    views = tc.views if tc.augment else 0
    common = dict(device=str(device), cache_dir=machine.cache_dir, progress=progress, backbone=backbone)
    train = extract_features(mc.backbone, mc.pretrained, root, "train", views=views, **common)
    val = extract_features(mc.backbone, mc.pretrained, root, "val", views=0, **common)
    return train, val


def image_loaders(
    mc: ModelConfig,
    tc: TrainConfig,
    machine: MachineConfig,
    root,
    generator: torch.Generator,
    device: torch.device,
):
    """(train, val) DataLoaders of normalised image tensors; train is shuffled by the seeded generator.

    Frozen variants get val None: their val features come from the cache.
    """
    from torch.utils.data import DataLoader

    from qtl.backbones import image_transform
    from qtl.data import ImageFolderDataset

    train_ds = ImageFolderDataset(
        root, "train", transform=image_transform(mc.backbone, mc.pretrained, augment=tc.augment)
    )
    pin = device.type == "cuda"
    opts = dict(num_workers=machine.num_workers, pin_memory=pin, persistent_workers=machine.num_workers > 0)
    train = DataLoader(train_ds, batch_size=tc.batch_size, shuffle=tc.shuffle, generator=generator, **opts)
    if mc.frozen:
        return train, None
    val_ds = ImageFolderDataset(
        root, "val", transform=image_transform(mc.backbone, mc.pretrained, augment=False)
    )
    val = DataLoader(val_ds, batch_size=max(tc.batch_size, 32), shuffle=False, **opts)
    return train, val
