"""The data feed: every split a model trains or is evaluated on, as (x, y) batches on the device, paired
with the part of the model that consumes them.

    feed = training_feed(model, mc, tc, machine, device, generator, root=root)
    for x, y in feed.train:                       # one epoch, in seeded order
        train_step(feed.train.forward, optimizer, x, y)
    val_loss, val_acc = loss_and_accuracy(feed.val)

Frozen variants read features extracted once and cached on disk: their batches are (B, F) slices of an
in-memory tensor (no DataLoader per step) and `forward` is the head. Trainable backbones, and frozen ones
that augment without cached views, read images through a DataLoader and `forward` is the whole model.
`eval_batches` builds one split for evaluation: fit()'s val pass and `qtl.analysis.inference.evaluate` both
use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from qtl.config import MachineConfig, ModelConfig, TrainConfig
from qtl.data.features import FeatureSet, extract_features
from qtl.data.images import ImageFolderDataset
from qtl.models.backbones import image_transform

EVAL_BATCH = 512  # features per forward pass when evaluating a head on cached features
IMAGE_EVAL_BATCH = 32  # images per forward pass (and per extraction batch) when evaluating


class FeatureBatches:
    """Batches of in-memory features: x (B, F), y (B,), on the device, by direct indexing.

    features (N, F), or (V, N, F) cached augmented views.
    generator: for training: each pass draws a random view per sample, and a new order when `shuffle`.
        None, for evaluation: dataset order, the first view.
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        features: FeatureSet,
        batch_size: int,
        device: torch.device,
        *,
        generator: torch.Generator | None = None,
        shuffle: bool = True,
    ) -> None:
        x = torch.as_tensor(features.features, dtype=torch.float32).to(device)  # (N, F) or (V, N, F)
        self.x = x[0] if generator is None and x.dim() == 3 else x
        self.y = torch.as_tensor(features.labels, dtype=torch.long).to(device)  # (N,)
        self.forward, self.batch_size, self.generator = forward, batch_size, generator
        self.shuffle = shuffle and generator is not None
        self.paths = [str(p) for p in features.paths]

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, x, y, g = len(self.y), self.x, self.y, self.generator
        order = (torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)).to(y.device)
        view = torch.randint(x.shape[0], (n,), generator=g).to(y.device) if x.dim() == 3 else None
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield (x[idx] if view is None else x[view[idx], idx]), y[idx]


class ImageBatches:
    """Batches of normalised images from a DataLoader: x (B, 3, H, W), y (B,), moved to the device.

    progress: progress(images done, total) after every batch (decoding images is the slow part).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        loader: DataLoader,
        device: torch.device,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.forward, self.loader, self.device, self.progress = forward, loader, device, progress
        self.paths = [str(p) for p, _ in loader.dataset.samples]
        self.y = torch.as_tensor(loader.dataset.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        done, total = 0, len(self.y)
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device)
            done += len(y)
            if self.progress is not None:
                self.progress(done, total)


Batches = FeatureBatches | ImageBatches


@dataclass
class Feed:
    """What fit() trains on and evaluates on: train batches (one epoch per pass) and val batches."""

    train: Batches
    val: Batches


@torch.no_grad()
def logits(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits (B, C), labels (B,)) for every batch, through `batches.forward`."""
    for x, y in batches:
        yield batches.forward(x), y


def loss_and_accuracy(batches: Batches) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over one pass of `batches` (summed on the device, one sync)."""
    loss = correct = n = 0
    for out, y in logits(batches):
        loss = loss + F.cross_entropy(out, y, reduction="sum")
        correct = correct + (out.argmax(1) == y).sum()
        n += len(y)
    return float(loss) / n, float(correct) / n


def _loader(dataset, batch_size: int, device: torch.device, num_workers: int, **kwargs) -> DataLoader:
    pin, persistent = device.type == "cuda", num_workers > 0
    return DataLoader(
        dataset, batch_size, num_workers=num_workers, pin_memory=pin, persistent_workers=persistent, **kwargs
    )


def eval_batches(
    model: nn.Module,
    mc: ModelConfig,
    root: str | Path,
    split: str,
    device: torch.device,
    *,
    batch_size: int = IMAGE_EVAL_BATCH,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    backbone: nn.Module | Callable[[], nn.Module] | None = None,
    transform: Callable | None = None,
) -> Batches:
    """One split of the dataset at `root`, in dataset order, for evaluating `model` (a `Classifier`).

    Frozen variants: the split's cached features (extracted on a miss by `backbone`, default the
    model's own) through the head, EVAL_BATCH at a time. Others: its images through the whole model,
    `batch_size` at a time. progress: reports extraction or image decoding. transform: the images'
    eval preprocessing (default: the backbone's own; a loaded checkpoint passes the one it recorded).
    """
    if mc.frozen:
        fs = extract_features(
            mc.backbone,
            mc.pretrained,
            root,
            split,
            views=0,
            device=str(device),
            batch_size=batch_size,
            cache_dir=cache_dir,
            progress=progress,
            backbone=backbone if backbone is not None else model.backbone,
        )
        return FeatureBatches(model.head, fs, EVAL_BATCH, device)
    transform = transform or image_transform(mc.backbone, mc.pretrained, augment=False)
    loader = _loader(ImageFolderDataset(root, split, transform=transform), batch_size, device, num_workers)
    return ImageBatches(model, loader, device, progress)


def training_feed(
    model: nn.Module,
    mc: ModelConfig,
    tc: TrainConfig,
    machine: MachineConfig,
    device: torch.device,
    generator: torch.Generator,
    *,
    root: str | Path | None = None,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    progress: Callable[[int, int], None] | None = None,
    backbone: nn.Module | Callable[[], nn.Module] | None = None,
) -> Feed:
    """The feed fit() trains `model` (a `Classifier`) with: train batches shuffled by `generator`.

    features: a (train, val) pair of FeatureSets to use instead of the dataset at `root` (frozen only).
    Otherwise frozen variants train on cached features (`views` augmented ones when augmenting), unless
    they augment without cached views: then they train on fresh crops through the backbone every epoch.
    backbone: what a feature-cache miss runs (see `extract_features`).
    """
    if features is not None:
        train_set, val_set = features
        train = FeatureBatches(
            model.head, train_set, tc.batch_size, device, generator=generator, shuffle=tc.shuffle
        )
        return Feed(train, FeatureBatches(model.head, val_set, EVAL_BATCH, device))

    if mc.frozen and (not tc.augment or tc.views > 0):  # cached features, or cached augmented views
        views = tc.views if tc.augment else 0
        train_set = extract_features(
            mc.backbone,
            mc.pretrained,
            root,
            "train",
            views=views,
            device=str(device),
            cache_dir=machine.cache_dir,
            progress=progress,
            backbone=backbone,
        )
        train = FeatureBatches(
            model.head, train_set, tc.batch_size, device, generator=generator, shuffle=tc.shuffle
        )
    else:  # images through the model every epoch (a frozen backbone still runs without grad)
        transform = image_transform(mc.backbone, mc.pretrained, augment=tc.augment)
        dataset = ImageFolderDataset(root, "train", transform=transform)
        loader = _loader(
            dataset, tc.batch_size, device, machine.num_workers, shuffle=tc.shuffle, generator=generator
        )
        train = ImageBatches(model, loader, device)

    val = eval_batches(
        model,
        mc,
        root,
        "val",
        device,
        batch_size=max(tc.batch_size, IMAGE_EVAL_BATCH),
        cache_dir=machine.cache_dir,
        num_workers=machine.num_workers,
        progress=progress,
        backbone=backbone,
    )
    return Feed(train, val)
