"""ImageNet backbones from torchvision, with their classification layer removed.

    load_backbone(name, pretrained) -> (model, F)      model: (B, 3, 224, 224) -> (B, F)

Weights come through torchvision's weights API and are cached as files under
`torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub/checkpoints). When they are not there, a download is
tried with short timeouts; offline, `WeightsUnavailableError` names the exact file that would satisfy
it and suggests the random-init backbone instead. Nothing here ever waits on the network for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models, transforms
from torchvision.models import WeightsEnum

from qtl.config import DEFAULT_BACKBONE
from qtl.download import DEFAULT_TIMEOUT_S, OFFLINE_ENV, DownloadError, Progress, download, offline

RANDOM = "random"
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


RANDOM_INIT_SEED = 0  # random-init weights come from this seed


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable right now."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its classification layer sits."""

    builder: Callable[..., nn.Module]  # torchvision builder, called as builder(weights=None)
    weights: WeightsEnum  # the ImageNet weights used when pretrained=True
    head: str  # dotted path of the final nn.Linear that is replaced by nn.Identity


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "resnet34": BackboneSpec(models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, "fc"),
    "resnet50": BackboneSpec(models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, "fc"),
    "mobilenet_v3_large": BackboneSpec(
        models.mobilenet_v3_large, models.MobileNet_V3_Large_Weights.IMAGENET1K_V1, "classifier.3"
    ),
    "efficientnet_b0": BackboneSpec(
        models.efficientnet_b0, models.EfficientNet_B0_Weights.IMAGENET1K_V1, "classifier.1"
    ),
    "vit_b_16": BackboneSpec(models.vit_b_16, models.ViT_B_16_Weights.IMAGENET1K_V1, "heads.head"),
}


@dataclass(frozen=True)
class WeightsStatus:
    """Where a backbone's pretrained weights live and whether they are already on disk."""

    name: str
    weights_id: str  # e.g. "IMAGENET1K_V1"
    url: str
    filename: str
    path: Path  # the exact file torchvision looks for: torch.hub.get_dir()/checkpoints/<filename>
    cached: bool


def get_spec(name: str) -> BackboneSpec:
    """The BackboneSpec for `name`; ValueError listing the choices for an unknown name."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def weights_id(name: str, pretrained: bool) -> str:
    """The weights identifier: the enum member name (e.g. "IMAGENET1K_V1"), or "random"."""
    spec = get_spec(name)
    return spec.weights.name if pretrained else RANDOM


def checkpoints_dir() -> Path:
    """The folder torchvision reads weight files from: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_status(name: str) -> WeightsStatus:
    """Where `name`'s ImageNet weights are expected and whether the file is there (no network)."""
    spec = get_spec(name)
    url = spec.weights.url
    filename = os.path.basename(url)
    path = checkpoints_dir() / filename
    return WeightsStatus(name, spec.weights.name, url, filename, path, path.is_file())


def _unavailable(status: WeightsStatus, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {status.name} are not available ({reason}): put {status.filename} "
        f"(from {status.url}) in {status.path.parent}, or use the random-init backbone "
        "(pretrained=False, CLI --random-init)"
    )


def _hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix in a torch.hub file name, 'name-<prefix>.pth', or None."""
    stem = filename.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return tail if len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) else None


def _ensure_weights(
    status: WeightsStatus, allow_download: bool, progress: Progress | None, timeout: float
) -> None:
    if status.cached:
        return
    if not allow_download:
        raise _unavailable(status, "not cached and downloads are disabled")
    if offline():
        raise _unavailable(status, f"not cached and {OFFLINE_ENV} is set")
    try:
        download(
            status.url,
            status.path,
            sha256_prefix=_hash_prefix(os.path.basename(urlparse(status.url).path)),
            progress=progress,
            timeout=timeout,
        )
    except DownloadError as exc:
        raise _unavailable(status, f"not cached and the download failed: {exc}") from exc


def _replace_head(model: nn.Module, head: str) -> int:
    """Swap the final Linear at dotted path `head` for nn.Identity; return its in_features."""
    parent_path, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    layer = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"expected nn.Linear at {head!r}, found {type(layer).__name__}")
    if attr.isdigit():
        parent[int(attr)] = nn.Identity()
    else:
        setattr(parent, attr, nn.Identity())
    return layer.in_features


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    *,
    allow_download: bool = True,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[nn.Module, int]:
    """Build a backbone without its classification layer, in eval mode.

    Returns (model, F): model maps (B, 3, 224, 224) images to (B, F) features; F is read from the
    replaced layer (512 for resnet18, 2048 for resnet50, 768 for vit_b_16, ...). Random init is drawn
    from RANDOM_INIT_SEED (the global RNG is untouched), so the weights id "random" names one backbone:
    cached features and head-only checkpoints stay valid across runs.

    Args:
        pretrained: load the ImageNet weights (cached file or download); False gives random init.
        allow_download: False never touches the network.
        progress: progress(done_bytes, total_bytes) during a weights download.
        timeout: seconds allowed for name resolution, the connection and each read of a download.

    Raises:
        ValueError: unknown backbone name.
        WeightsUnavailableError: pretrained weights are not cached and cannot be downloaded now, or the
            cached file is unreadable.
    """
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):  # random init is one fixed draw, so "random" names one backbone
        torch.manual_seed(RANDOM_INIT_SEED)
        model = spec.builder(weights=None)
    if pretrained:
        status = weights_status(name)
        _ensure_weights(status, allow_download, progress, timeout)
        try:
            model.load_state_dict(spec.weights.get_state_dict(progress=False, weights_only=True))
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsUnavailableError(
                f"cannot use weights file {status.path} ({reason}); delete it to download it again, "
                "or use the random-init backbone (pretrained=False, CLI --random-init)"
            ) from exc
    features = _replace_head(model, spec.head)
    return model.eval(), features


def image_transform(name: str, pretrained: bool, augment: bool = False) -> Callable:
    """PIL RGB image -> (3, 224, 224) float tensor, normalised for the backbone.

    Eval (augment=False): the weights' own preprocessing (resize, center crop 224, normalise), or the
    standard ImageNet Resize(256) / CenterCrop(224) / Normalize for random init. augment=True: the
    PyTorch transfer-learning tutorial's train transform (RandomResizedCrop(224) + horizontal flip).
    """
    params = _transform_params(name, pretrained)
    normalize = transforms.Normalize(params["mean"], params["std"])
    if augment:
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(params["crop"]),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalize,
            ]
        )
    if pretrained:
        return get_spec(name).weights.transforms()
    return transforms.Compose(
        [
            transforms.Resize(params["resize"]),
            transforms.CenterCrop(params["crop"]),
            transforms.ToTensor(),
            normalize,
        ]
    )


def _transform_params(name: str, pretrained: bool) -> dict:
    """resize, crop, interpolation, mean and std of the eval transform."""
    if not pretrained:
        get_spec(name)
        return {
            "resize": 256,
            "crop": IMAGE_SIZE,
            "interpolation": "bilinear",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        }
    preset = get_spec(name).weights.transforms()
    return {
        "resize": preset.resize_size[0],
        "crop": preset.crop_size[0],
        "interpolation": preset.interpolation.value,
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
    }


def transform_key(name: str, pretrained: bool, augment: bool = False) -> str:
    """A stable string naming `image_transform(name, pretrained, augment)`, for cache keys."""
    p = _transform_params(name, pretrained)
    norm = f"mean={','.join(f'{v:g}' for v in p['mean'])};std={','.join(f'{v:g}' for v in p['std'])}"
    if augment:
        return f"augment:rrc{p['crop']}+hflip;{norm}"
    return f"eval:resize{p['resize']}-{p['interpolation']}+crop{p['crop']};{norm}"
