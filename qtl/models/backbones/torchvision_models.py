"""torchvision's ImageNet backbones, with their classification layer removed.

Weights come through torchvision's weights API and are cached as files under
`torch.hub.get_dir()/checkpoints` ($TORCH_HOME/hub/checkpoints). When they are not there, a download is
tried with short timeouts; offline, `WeightsUnavailableError` names the exact file that would satisfy
it and suggests the bundled `efficientnet_lite0` or the random-init backbone instead. Nothing here ever
waits on the network for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum

import qtl.models.weights
from qtl.models.backbones.common import (
    RANDOM,
    WeightsStatus,
    WeightsUnavailableError,
    imagenet_params,
    meta_build,
    one_line,
    seeded_build,
)
from qtl.utils.download import OFFLINE_ENV, DownloadError, Progress, download, offline

ALTERNATIVES = (
    "use the bundled pretrained efficientnet_lite0 (CLI --backbone efficientnet_lite0) "
    "or random init (pretrained=False, CLI --random-init)"
)


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


def weights_id(name: str, pretrained: bool) -> str:
    """The weights enum member's name (e.g. "IMAGENET1K_V1"), or "random"."""
    return BACKBONES[name].weights.name if pretrained else RANDOM


def weights_status(name: str) -> WeightsStatus:
    """Where `name`'s ImageNet weights are expected and whether the file is there (no network)."""
    return qtl.models.weights.weights_status(name)


def _unavailable(status: WeightsStatus, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"ImageNet weights for {status.name} are not available ({reason}): put {status.filename} "
        f"(from {status.url}) in {status.path.parent}, or {ALTERNATIVES}"
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


def replace_head(model: nn.Module, head: str) -> int:
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


def load(
    name: str, pretrained: bool, allow_download: bool, progress: Progress | None, timeout: float
) -> tuple[nn.Module, int]:
    """(model without its classification layer, F); see `qtl.models.backbones.load_backbone`."""
    spec = BACKBONES[name]
    model = seeded_build(name, lambda: spec.builder(weights=None), pretrained=pretrained)
    if pretrained:
        status = weights_status(name)
        _ensure_weights(status, allow_download, progress, timeout)
        try:
            model.load_state_dict(spec.weights.get_state_dict(progress=False, weights_only=True))
        except Exception as exc:
            raise WeightsUnavailableError(
                f"cannot use weights file {status.path} ({one_line(exc)}); delete it to download it "
                f"again, or {ALTERNATIVES}"
            ) from exc
    return model, replace_head(model, spec.head)


def feature_width(name: str) -> int:
    """F, the width of `name`'s features (its classification layer's inputs), from the architecture alone
    (`meta_build`: no weights)."""
    spec = BACKBONES[name]
    return replace_head(meta_build(lambda: spec.builder(weights=None)), spec.head)


def transform_params(name: str, pretrained: bool) -> dict:
    """resize, crop, interpolation, mean and std of the weights' own eval preset (ImageNet's for random)."""
    if not pretrained:
        return imagenet_params()
    preset = BACKBONES[name].weights.transforms()
    return {
        "resize": preset.resize_size[0],
        "crop": preset.crop_size[0],
        "interpolation": preset.interpolation.value,
        "mean": tuple(preset.mean),
        "std": tuple(preset.std),
    }
