"""The data feed: every split a model trains or is evaluated on, as (x, y) batches on the device, paired
with the part of the model that consumes them.

    feed = training_feed(model, mc, tc, machine, device, generator, root=root)
    for x, y in feed.train:                       # one epoch, in seeded order
        train_step(feed.train.forward, optimizer, x, y)
    val_loss, val_acc = loss_and_accuracy(feed.val)   # selection; feed.test (if any) is read once, after

Frozen variants read features extracted once and cached on disk: their batches are (B, F) slices of an
in-memory tensor (no DataLoader per step) and `forward` is the head. Trainable backbones, and frozen ones
that augment without cached views, read images through a DataLoader and `forward` is the whole model;
each training image's augmentation is drawn from a seed the run's generator draws for it every epoch
(`SeededOrder`), so the worker count never changes what a run learns, and an item's crop in an epoch does
not depend on the batch it lands in.
`eval_batches` builds one split for evaluation: fit()'s val pass and `qtl.analysis.inference.evaluate` both
use it.

The run's `DataRegime` (`TrainConfig.regime`) decides which images are train, val and test
(`qtl.data.protocol`): the dataset's own splits, or stratified folds of all of them, narrowed to a
few-shot subset or given noisy training labels. Every part is then a selection of the pooled features
(or images) with the labels the partition gives it. A frozen head with a `feature_dim` trains on the
training features' principal components, which `training_feed` also stores in the head.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from qtl.config import DataRegime, MachineConfig, ModelConfig, TrainConfig
from qtl.data.features import FeatureSet, extract_features
from qtl.data.folders import ALL_SPLITS
from qtl.data.images import ImageFolderDataset
from qtl.data.protocol import Partition, partition
from qtl.models.backbones import image_transform
from qtl.models.heads import pca
from qtl.utils.seeds import seeded

EVAL_BATCH = 512  # features per forward pass when evaluating a head on cached features
IMAGE_EVAL_BATCH = 32  # images per forward pass (and per extraction batch) when evaluating


def eval_batch_size(head: nn.Module, most: int = EVAL_BATCH) -> int:
    """Features per forward when evaluating `head`: `most`, halved until its simulation engine (one with
    a memory budget and `estimate_bytes`: native, density) holds an inference forward of that many, in
    the head's dtype on its device, within its budget, so a wide circuit that trains in small batches
    is evaluated too."""
    engine = next(
        (m for m in head.modules() if hasattr(m, "estimate_bytes") and hasattr(m, "memory_budget")), None
    )
    param = next((p for p in head.parameters() if p.is_floating_point()), None)
    dtype, device = (torch.float32, None) if param is None else (param.dtype, param.device)
    batch = most
    while engine is not None and batch > 1:
        if engine.estimate_bytes(batch, dtype, training=False, device=device) <= engine.memory_budget:
            break
        batch = -(-batch // 2)
    return batch


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
    """What fit() trains on and evaluates on: train batches (one epoch per pass), val batches (epoch
    selection), and the held-out test batches (scored once, on the selected epoch; None: no test split)."""

    train: Batches
    val: Batches
    test: Batches | None = None


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


class SeededOrder(Sampler[tuple[int, int]]):
    """A training pass's items as (index, seed): every pass draws from `generator` (the run's own) a new
    order (a permutation; dataset order without `shuffle`), then a new seed for each item.

    `SeededItems` draws an item's random augmentation from its seed, so what a run trains on depends on
    its generator alone: not on the worker count, the batch size or which process decodes the item.
    """

    def __init__(self, n: int, generator: torch.Generator, *, shuffle: bool = True) -> None:
        self.n, self.generator, self.shuffle = n, generator, shuffle

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = self.generator  # both draws are made when the pass starts, whoever asks first
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(2**63 - 1, (self.n,), generator=g)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class SeededItems(Dataset):
    """`dataset` keyed by `SeededOrder`'s (index, seed): item `index`, its transform's random draws (torch's
    and Python's `random`) seeded by `seed`. Nothing of a pass is kept here, so persistent workers serve
    every epoch. samples and targets: the dataset's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.samples, self.targets = dataset, dataset.samples, dataset.targets

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with seeded(seed):
            return self.dataset[index]


def _loader(dataset, batch_size: int, device: torch.device, num_workers: int, **kwargs) -> DataLoader:
    """A DataLoader of `dataset`. It draws its workers' base seed from a generator of its own (on every
    new pass, even with no workers; once with persistent ones), so torch's global generator, which
    dropout and the like draw from, goes on the same whatever the worker count. Items never draw from a
    worker's seeds: a training item's augmentation is seeded by `SeededOrder`."""
    pin, persistent = device.type == "cuda", num_workers > 0
    return DataLoader(
        dataset,
        batch_size,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
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
    exact: bool = False,
    regime: DataRegime | None = None,
    seed: int = 0,
) -> Batches:
    """One split of the dataset at `root`, in dataset order, for evaluating `model` (a `Classifier`).

    Frozen variants: the split's cached features (extracted on a miss by `backbone`, default the
    model's own) through the head, EVAL_BATCH at a time (`eval_batch_size`). Others: its images through
    the whole model, `batch_size` at a time (fewer where the head's engine holds fewer). progress:
    reports extraction or image decoding. transform: the images' eval preprocessing (default: the
    backbone's own; a loaded checkpoint passes the one it recorded).
    exact: exact features (`extract_features`), as evaluation reads them; training's val pass takes the
    fast ones it trained on.
    regime, seed: a run's own parts (`qtl.data.protocol`: its folds, classes, few-shot draw) where the
    regime is not the default: `split` is then that run's train, val or test part (its train part with
    the labels it trained on), so a model is never scored on images it trained on.
    ValueError where the dataset (or the run's partition) has no such split.
    """
    if regime is not None and regime != DataRegime():
        features = dict(batch_size=batch_size, cache_dir=cache_dir, progress=progress, exact=exact)
        parts = _run_parts(model, mc, root, device, regime, seed, backbone, transform, features)
        if split not in parts:
            raise ValueError(f"a run split {regime.label} with seed {seed} has no {split} part here")
        if mc.frozen:
            return FeatureBatches(model.head, parts[split], eval_batch_size(model.head), device)
        loader = _loader(parts[split], eval_batch_size(model.head, batch_size), device, num_workers)
        return ImageBatches(model, loader, device, progress)
    if split not in present_splits(root):
        raise ValueError(f"{Path(root).name} has no {split} split (no {split}/ folder)")
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
            exact=exact,
        )
        return FeatureBatches(model.head, fs, eval_batch_size(model.head), device)
    transform = transform or image_transform(mc.backbone, mc.pretrained, augment=False)
    batch_size = eval_batch_size(model.head, batch_size)
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
    features: tuple[FeatureSet, ...] | None = None,
    progress: Callable[[int, int], None] | None = None,
    backbone: nn.Module | Callable[[], nn.Module] | None = None,
) -> Feed:
    """The feed fit() trains `model` (a `Classifier`) with: train batches shuffled by `generator` (which
    also picks cached views, or seeds every image's augmentation each epoch), val and (where the regime
    has one) test batches, all chosen by `tc.regime` with `tc.seed`.

    features: (train, val) or (train, val, test) FeatureSets to use instead of the dataset at `root`
    (frozen only). Otherwise frozen variants train on cached features (`views` augmented ones when
    augmenting), unless they augment without cached views: then they train on fresh crops through the
    backbone every epoch. backbone: what a feature-cache miss runs (see `extract_features`).
    """
    if features is None:
        check_regime(root, tc.regime, tc.seed)
    if mc.frozen and (features is not None or not tc.augment or tc.views > 0):
        views = None  # the augmented views the training part is drawn from, when they are not `found`'s
        if features is not None:
            found = dict(zip(ALL_SPLITS[: len(features)], features, strict=True))
        else:  # cached features (and augmented views: `feature_needs`)
            got = {
                need: extract_features(
                    mc.backbone,
                    mc.pretrained,
                    root,
                    need[0],
                    views=need[1],
                    device=str(device),
                    cache_dir=machine.cache_dir,
                    progress=progress,
                    backbone=backbone,
                )  # fmt: skip
                for need in feature_needs(tc, root)
            }
            found = {split: fs for (split, v), fs in got.items() if v == 0 or tc.regime == DataRegime()}
            if tc.regime != DataRegime() and any(v for _, v in got):
                views = {split: fs for (split, v), fs in got.items() if v}
        sets = regime_features(found, tc.regime, tc.seed, train_from=views)
        head = model.head
        if mc.feature_dim is not None:  # the training features' principal components, kept in the head
            train = sets["train"].features
            head.set_projection(*pca(train.reshape(-1, train.shape[-1]), mc.feature_dim))
            sets = {k: _projected(fs, head) for k, fs in sets.items()}
            head = head.inner
        train = FeatureBatches(
            head, sets["train"], tc.batch_size, device, generator=generator, shuffle=tc.shuffle
        )
        parts = {
            k: FeatureBatches(head, sets[k], eval_batch_size(head), device)
            for k in ("val", "test")
            if k in sets
        }
        return Feed(train, parts["val"], parts.get("test"))

    # images through the model every epoch (a frozen backbone still runs without grad)
    train_transform = image_transform(mc.backbone, mc.pretrained, augment=tc.augment)
    batch = eval_batch_size(model.head, max(tc.batch_size, IMAGE_EVAL_BATCH))
    if tc.regime == DataRegime():  # the dataset's own splits, as they are
        train_set = ImageFolderDataset(root, "train", transform=train_transform)
        parts = {
            split: eval_batches(
                model,
                mc,
                root,
                split,
                device,
                batch_size=batch,
                cache_dir=machine.cache_dir,
                num_workers=machine.num_workers,
                progress=progress,
                backbone=backbone,
            )  # fmt: skip
            for split in present_splits(root)[1:]
        }
    else:
        eval_transform = image_transform(mc.backbone, mc.pretrained, augment=False)
        sets = regime_images(root, tc.regime, tc.seed, train_transform, eval_transform)
        train_set = sets.pop("train")
        parts = {
            k: ImageBatches(model, _loader(ds, batch, device, machine.num_workers), device, progress)
            for k, ds in sets.items()
        }
    order = SeededOrder(len(train_set), generator, shuffle=tc.shuffle)  # a seed per item and epoch
    loader = _loader(SeededItems(train_set), tc.batch_size, device, machine.num_workers, sampler=order)
    return Feed(ImageBatches(model, loader, device), parts["val"], parts.get("test"))


def _run_parts(model, mc, root, device, regime, seed, backbone, transform, features: dict) -> dict:
    """A run's train/val(/test) parts under a regime (`eval_batches`): FeatureSets of every split's
    eval features (`extract_features` with `features`' options) for frozen variants, else Selections of
    the images with the eval transform."""
    if mc.frozen:
        backbone = backbone if backbone is not None else model.backbone
        sets = {
            s: extract_features(
                mc.backbone,
                mc.pretrained,
                root,
                s,
                views=0,
                device=str(device),
                backbone=backbone,
                **features,
            )
            for s in present_splits(root)
        }
        return regime_features(sets, regime, seed)
    transform = transform or image_transform(mc.backbone, mc.pretrained, augment=False)
    return regime_images(root, regime, seed, transform, transform)


def present_splits(root: str | Path) -> list[str]:
    """The splits a dataset root has: train, val, and test where test/ exists."""
    return [s for s in ALL_SPLITS if s != "test" or (Path(root) / "test").is_dir()]


def _projected(fs: FeatureSet, head) -> FeatureSet:
    with torch.no_grad():
        x = head.project(torch.as_tensor(fs.features, dtype=head.mean.dtype))
    return FeatureSet(x, fs.labels, fs.paths, fs.classes, fs.skipped)


def _parts(labels_by_split: dict[str, list | torch.Tensor], regime: DataRegime, seed: int, names=None):
    """The partition of the pooled splits, and per part its (split, local indices) runs in pool order.
    names: the class names, for `partition`'s errors."""
    order = list(labels_by_split)
    labels = torch.cat([torch.as_tensor(labels_by_split[s], dtype=torch.long) for s in order]).numpy()
    origin = [s for s in order for _ in range(len(labels_by_split[s]))]
    parts: Partition = partition(labels, origin, regime, seed, class_names=names)
    sizes = [len(labels_by_split[s]) for s in order]
    starts = dict(zip(order, [0, *itertools.accumulate(sizes)][:-1], strict=True))

    def runs(idx) -> list[tuple[str, list[int]]]:
        out: list[tuple[str, list[int]]] = []
        for i in idx.tolist():
            split = origin[i]
            if not out or out[-1][0] != split:
                out.append((split, []))
            out[-1][1].append(i - starts[split])
        return out

    named = {"train": (parts.train, parts.train_labels), "val": (parts.val, labels[parts.val])}
    if len(parts.test):
        named["test"] = (parts.test, labels[parts.test])
    return parts.n_classes, {
        k: (runs(idx), torch.as_tensor(y, dtype=torch.long)) for k, (idx, y) in named.items()
    }


def feature_needs(tc: TrainConfig, root: str | Path) -> list[tuple[str, int]]:
    """(split, views) of every cached FeatureSet a frozen run on cached features reads: with the default
    regime the train split's augmented views (when augmenting) and the other splits' eval features; with
    any other, every split's eval features plus the views of every split its training images may come
    from (train for the given split, all of them for folds)."""
    augmented, splits = tc.augment and tc.views > 0, present_splits(root)
    if tc.regime == DataRegime():
        return [(s, tc.views if augmented and s == "train" else 0) for s in splits]
    sources = ["train"] if tc.regime.split == "given" else splits
    return [(s, 0) for s in splits] + ([(s, tc.views) for s in sources] if augmented else [])


def regime_features(
    sets: dict[str, FeatureSet],
    regime: DataRegime,
    seed: int,
    *,
    train_from: dict[str, FeatureSet] | None = None,
) -> dict[str, FeatureSet]:
    """The train/val(/test) FeatureSets a run with `seed` uses, selected from the dataset's splits `sets`
    by `regime` (`qtl.data.protocol`); the sets themselves when the regime is the default one.

    train_from: per split, the augmented views (V, N, F) the training part is taken from (default: `sets`).
    ValueError when a part would mix views with single features (views of a split that are not given).
    """
    if regime == DataRegime():
        return sets
    n_classes, chosen = _parts({k: fs.labels for k, fs in sets.items()}, regime, seed, sets["train"].classes)
    out = {}
    for name, (runs, labels) in chosen.items():
        pool = train_from if name == "train" and train_from is not None else sets
        if any(split not in pool for split, _ in runs) or len({pool[s].features.dim() for s, _ in runs}) > 1:
            raise ValueError(
                "augmented views are cached for the dataset's own train split only: train with "
                "augment = false (or split = given) to use folds on these features"
            )
        pieces = [pool[split].features[..., idx, :] for split, idx in runs]
        paths = [pool[split].paths[i] for split, idx in runs for i in idx]
        classes = list(sets["train"].classes)[:n_classes]
        out[name] = FeatureSet(torch.cat(pieces, dim=-2), labels, paths, classes)
    return out


class Selection(torch.utils.data.Dataset):
    """Some images of a dataset's splits (ImageFolderDatasets without a transform), with the labels a
    partition gives them and one transform: items (transform(image), label)."""

    def __init__(self, items: list[tuple[ImageFolderDataset, int]], labels: torch.Tensor, transform) -> None:
        self.items, self.transform = items, transform
        self.targets = labels.tolist()
        self.samples = [(ds.samples[i][0], y) for (ds, i), y in zip(items, self.targets, strict=True)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        ds, i = self.items[index]
        image, _ = ds[i]
        return self.transform(image), self.targets[index]


def labels_listed(root: str | Path) -> tuple[dict[str, list[int]], list[str]]:
    """({split: the class index of each image file}, class names) from the dataset's file listing."""
    listed = {split: ImageFolderDataset(root, split, verify=False) for split in present_splits(root)}
    return {k: ds.targets for k, ds in listed.items()}, listed["train"].classes


def check_regime(root: str | Path, regime: DataRegime, seed: int, listing=None) -> None:
    """Raise `partition`'s ValueError where the dataset at `root` cannot serve `regime` with `seed`
    (more classes than it has, too few images of a class for the folds or the few-shot draw), from its
    file listing alone: before a run spends minutes extracting features. listing: `labels_listed(root)`
    where the caller checks many runs of one dataset."""
    if regime == DataRegime():
        return
    labels, classes = listing or labels_listed(root)
    _parts(labels, regime, seed, classes)


def regime_images(
    root, regime: DataRegime, seed: int, train_transform, eval_transform
) -> dict[str, Selection]:
    """`regime_features` for image batches: train/val(/test) Selections of the dataset's splits."""
    found = {split: ImageFolderDataset(root, split) for split in present_splits(root)}
    _, chosen = _parts({k: ds.targets for k, ds in found.items()}, regime, seed, found["train"].classes)
    return {
        name: Selection(
            [(found[split], i) for split, idx in runs for i in idx],
            labels,
            train_transform if name == "train" else eval_transform,
        )
        for name, (runs, labels) in chosen.items()
    }
