"""Frozen-backbone features, extracted once and cached on disk.

    extract_features(backbone, pretrained, root, split) -> FeatureSet   features: (N, F) or (V, N, F)

A frozen backbone maps each image to the same feature vector at every epoch, so the frozen variants
train on these tensors instead of images. The cache key covers everything the features depend on: the
backbone, its weights, the transform, the number of augmented views and their seed, the arithmetic
(float32 or bfloat16), the torchvision version, and every image's relative path, class and bytes
(SHA-256), in sorted order. Augmented views are seeded per image and view, so they do not depend on
batch size or worker count. A hit is read with torch.load(weights_only=True) and never builds or runs
the backbone.

A miss runs the backbone as fast as its function allows, each step checked against the exact pass
(tests/test_features.py; how close, and how fast, in docs/benchmarks.md, "End to end"):

- batch norms that follow a convolution are folded into its weights (`fold_batchnorm`): the same
  function up to rounding, one pass over each activation fewer;
- on a CPU with native bfloat16 arithmetic (AVX512-BF16, AMX), under bfloat16 autocast
  (`extraction_dtype`), the features rounded accordingly;
- for the eval transform, JPEGs much larger than its resize target are decoded at reduced scale
  (`DRAFT_MARGIN`), in channels-last memory format, one decoding worker beside the backbone.

`exact=True` gives up all three: the features an exported or served model computes, which evaluation
(`qtl evaluate`, Compare, Noise) reads, so the accuracy it reports is the one the exported files give on
every machine, with or without bfloat16 arithmetic.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import DataLoader, Dataset

from qtl.data.folders import list_images, validate_dataset
from qtl.data.images import ImageFolderDataset
from qtl.models.backbones import (
    backbone_libraries,
    image_transform,
    is_shared,
    load_backbone,
    transform_key,
    transform_params,
    weights_id,
)
from qtl.paths import cache_root
from qtl.utils.atomic import WriteError, atomic_save
from qtl.utils.download import sha256_file
from qtl.utils.seeds import seeded

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # bump when the payload layout or the extraction changes (2: folded batch norms, drafts;
# 3: images turned by their EXIF orientation)
#: The eval transform decodes a JPEG at reduced scale only where that keeps this many source pixels per
#: pixel of its resize target on the short side: the resize still averages, so the features barely move.
DRAFT_MARGIN = 2
#: Largest relative difference a folded backbone may show against the original on the probe batch.
FOLD_TOLERANCE = 1e-4


@dataclass
class FeatureSet:
    """Backbone features of one split, in the order of the dataset's samples."""

    features: torch.Tensor  # (N, F) float32; (V, N, F) when extracted with V augmented views
    labels: torch.Tensor  # (N,) long class indices
    paths: list[str]  # N image paths
    classes: list[str]  # class names; labels index into this list
    skipped: list[str] = field(default_factory=list)  # undecodable files left out
    key: str = ""  # the cache key these features were stored under

    @property
    def feature_dim(self) -> int:
        """F, the size of one feature vector."""
        return self.features.shape[-1]

    @property
    def views(self) -> int:
        """V for augmented features, 0 for the single deterministic eval view."""
        return self.features.shape[0] if self.features.dim() == 3 else 0


def default_cache_dir() -> Path:
    """<$QTL_CACHE_DIR or ~/.cache/qtl>/features."""
    return cache_root() / "features"


def cache_key(
    backbone_name: str,
    pretrained: bool,
    root: str | Path,
    split: str,
    *,
    views: int = 0,
    seed: int = 0,
    precision: torch.dtype = torch.float32,
    exact: bool = False,
) -> str:
    """Hex SHA-256 naming the features of `split`: backbone, weights, transform, views, the arithmetic
    the backbone ran in and file bytes."""
    root = Path(root)
    classes = validate_dataset(root)
    header = {
        "format": CACHE_FORMAT,
        "backbone": backbone_name,
        "weights": weights_id(backbone_name, pretrained),
        "transform": transform_key(backbone_name, pretrained, augment=views > 0),
        "views": views,
        "seed": seed if views > 0 else None,
        "precision": str(precision).removeprefix("torch."),
        "exact": exact,
        "torchvision": torchvision.__version__,
        **backbone_libraries(backbone_name),
        "classes": classes,
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    files = sorted(
        (p.relative_to(root).as_posix(), label, p) for p, label in list_images(root, split, classes)
    )
    for rel, label, path in files:
        digest.update(f"\n{rel}\t{label}\t{sha256_file(path)}".encode())
    return digest.hexdigest()


class _Views(Dataset):
    """Items: (3, H, W) eval tensor, or (V, 3, H, W) augmented views with per-image seeds."""

    def __init__(self, images: ImageFolderDataset, transform: Callable, views: int, seed: int) -> None:
        self.images, self.transform, self.views, self.seed = images, transform, views, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        image, _ = self.images[index]
        if self.views == 0:
            return self.transform(image)
        out = []
        for v in range(self.views):
            with seeded(hash((self.seed, index, v))):
                out.append(self.transform(image))
        return torch.stack(out)


def extraction_dtype(device: str | torch.device) -> torch.dtype:
    """The arithmetic a frozen backbone extracts features in: bfloat16 (autocast) on a CPU with native
    bfloat16 instructions (AVX512-BF16 or AMX), else float32."""
    if torch.device(device).type != "cpu":
        return torch.float32
    native = [
        getattr(torch.cpu, name, lambda: False)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return torch.bfloat16 if any(check() for check in native) else torch.float32


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> nn.Module:
    """For `model` in eval mode (which it does not change): a copy in which every batch norm that
    directly follows a convolution (two consecutive children of one module, as torchvision and timm
    build them) is folded into that convolution's weight and bias (`torch.nn.utils.fusion.
    fuse_conv_bn_eval`); a batch norm with an activation (timm's BatchNormAct2d) leaves the activation
    in its place.

    The copy computes the same function up to rounding; it is checked on `probe` (B, 3, H, W) and
    returned only if its output differs from `model`'s by at most FOLD_TOLERANCE relative to the
    output's largest value. Otherwise, or when nothing folds, `model` itself is returned.
    """
    folded, count = copy.deepcopy(model), 0
    for parent in folded.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, norm = parent._modules[a], parent._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)):
                continue
            if not norm.track_running_stats or norm.running_mean is None:
                continue
            parent._modules[a] = fuse_conv_bn_eval(conv, norm)
            act = getattr(norm, "act", None)
            parent._modules[b] = (
                nn.Identity() if act is None else nn.Sequential(getattr(norm, "drop", nn.Identity()), act)
            )
            count += 1
    if not count:
        return model
    with torch.inference_mode():
        want, got = model(probe), folded(probe)
    if (got - want).abs().max() > FOLD_TOLERANCE * want.abs().max():
        log.warning("batch norms not folded: the folded backbone differs from the original")
        return model
    return folded


def _default_workers(n_images: int, batch_size: int) -> int:
    """One decoding worker beside the main process when there is a spare core and more than one batch."""
    return 1 if (os.cpu_count() or 1) > 1 and n_images > batch_size else 0


def _load_cached(path: Path, root: Path, key: str) -> FeatureSet | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("key") != key:
            raise ValueError("key mismatch")
        return FeatureSet(
            features=payload["features"],
            labels=payload["labels"],
            paths=[str(root / rel) for rel in payload["paths"]],
            classes=list(payload["classes"]),
            skipped=[str(root / rel) for rel in payload["skipped"]],
            key=key,
        )
    except Exception as exc:
        log.warning("ignoring unreadable feature cache %s: %s", path, exc)
        return None


def _save_cached(path: Path, root: Path, fs: FeatureSet) -> None:
    payload = {
        "key": fs.key,
        "features": fs.features,
        "labels": fs.labels,
        "paths": [Path(p).relative_to(root).as_posix() for p in fs.paths],
        "classes": fs.classes,
        "skipped": [Path(p).relative_to(root).as_posix() for p in fs.skipped],
    }
    atomic_save(payload, path)


def extract_features(
    backbone_name: str,
    pretrained: bool,
    root: str | Path,
    split: str,
    *,
    views: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 0,
    use_cache: bool = True,
    num_workers: int | None = None,
    allow_download: bool = True,
    backbone: torch.nn.Module | Callable[[], torch.nn.Module] | None = None,
    exact: bool = False,
) -> FeatureSet:
    """Features of the frozen backbone (eval mode, inference only) for every image of `split`.

    Args:
        views: 0 for one deterministic eval view per image -> features (N, F); k > 0 for k augmented
            views (RandomResizedCrop + flip) per image -> features (k, N, F), reproducible from `seed`.
        device: where the backbone runs; the returned tensors are always on the CPU.
        cache_dir: cache folder, default `default_cache_dir()`.
        progress: progress(done_images, total_images) after every batch of a real extraction.
        use_cache: False bypasses the cache (neither read nor written).
        num_workers: DataLoader worker processes for decoding; default one when a spare core exists and
            there is more than one batch. Pass 0 where forking is unwelcome (e.g. inside a web server).
        allow_download: passed to `load_backbone` on a cache miss.
        backbone: on a cache miss, run this already built backbone of `backbone_name` and `pretrained`
            (or call this function for one) instead of building one, so that several splits need one
            build; it is moved to `device` in channels-last memory format (same weights). Unused on a hit.
        exact: the backbone's own function with nothing traded for speed: float32, batch norms as they
            are, every image decoded at full size; the features an exported or served model computes.
            Evaluation reads these (`qtl.analysis.inference`), training the fast ones.

    Raises:
        DatasetError: the dataset layout is unusable. WeightsUnavailableError: see `load_backbone`.
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ValueError(f"views must be an int >= 0, got {views!r}")
    root = Path(root)
    precision = torch.float32 if exact else extraction_dtype(device)
    key = cache_key(
        backbone_name, pretrained, root, split, views=views, seed=seed, precision=precision, exact=exact
    )
    path = Path(cache_dir or default_cache_dir()) / f"{backbone_name}-{split}-{key[:32]}.pt"
    if use_cache and path.is_file():
        cached = _load_cached(path, root, key)
        if cached is not None:
            return cached

    if backbone is None:
        model, _ = load_backbone(backbone_name, pretrained, allow_download=allow_download)
    else:
        model = backbone if isinstance(backbone, torch.nn.Module) else backbone()
    resize = transform_params(backbone_name, pretrained)["resize"]
    draft = None if views > 0 or exact else DRAFT_MARGIN * resize
    images = ImageFolderDataset(root, split, draft=draft)
    transform = image_transform(backbone_name, pretrained, augment=views > 0)
    dataset = _Views(images, transform, views, seed)
    fs = _run(model, dataset, device, batch_size, progress, num_workers, precision, fold=not exact)
    result = FeatureSet(
        features=fs if views > 0 else fs[0],
        labels=torch.tensor(images.targets, dtype=torch.long),
        paths=[str(p) for p, _ in images.samples],
        classes=list(images.classes),
        skipped=[str(p) for p, _ in images.skipped],
        key=key,
    )
    if use_cache:
        try:
            _save_cached(path, root, result)
        except WriteError as exc:  # the cache only saves time: a full disk must not stop the run here
            log.warning("features not cached: %s", exc)
    return result


def _run(
    model: torch.nn.Module,
    dataset: _Views,
    device: str | torch.device,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
    num_workers: int | None,
    precision: torch.dtype,
    fold: bool = True,
) -> torch.Tensor:
    """Run the model over the dataset in order -> (max(V, 1), N, F) float32 CPU tensor, batch norms
    folded (with `fold`), in `precision` (bfloat16: autocast)."""
    device = torch.device(device)
    shared = is_shared(model)  # a shared backbone is read-only, in eval mode on its device: never touched
    if not shared:
        model.eval()
    home = next(model.parameters()).device  # the probe runs where the given backbone lives
    probe = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(home)
    folded = fold_batchnorm(model, probe) if fold else model  # a copy, or `model` itself
    if folded is not model or not shared:
        model = folded.to(device, memory_format=torch.channels_last)
    workers = _default_workers(len(dataset), batch_size) if num_workers is None else num_workers
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"
    )
    total, done, chunks = len(dataset), 0, []
    autocast = torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32)
    with torch.inference_mode(), autocast:
        for batch in loader:  # (B, 3, H, W) or (B, V, 3, H, W)
            b = batch.shape[0]
            x = batch.reshape(-1, *batch.shape[-3:]).to(device, non_blocking=True)
            out = model(x.contiguous(memory_format=torch.channels_last))  # (B * V, F)
            chunks.append(out.float().reshape(b, -1, out.shape[-1]).cpu())  # (B, V, F)
            done += b
            if progress is not None:
                progress(done, total)
    # Leave inference mode before building the result so that it can feed autograd-tracked heads.
    return torch.cat(chunks).transpose(0, 1).contiguous().clone()  # (V, N, F)
