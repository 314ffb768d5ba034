"""Offline-safe status checks for status displays and the fallback backbone: can a host be reached, are
a backbone's ImageNet weights cached, downloadable or out of reach, and which backbone to use when they
are out of reach. Nothing here downloads, and every check is bounded in time.

    resolve_backbone("resnet18", True)  # offline: BackboneChoice("efficientnet_lite0", True, notice="...")
    describe_backbone("efficientnet_lite0", True)  # "efficientnet_lite0 (ImageNet, bundled)"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from qtl.config import BUNDLED_BACKBONE
from qtl.utils.download import offline, reachable

# Torch-free until a check runs: qtl.models.backbones is imported inside the checks.

DEFAULT_TIMEOUT_S = 2.0

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "BackboneChoice",
    "WeightsAvailability",
    "describe_backbone",
    "reachable",
    "resolve_backbone",
    "weights_label",
    "weights_availability",
]


@dataclass(frozen=True)
class WeightsAvailability:
    """What using `pretrained=True` would do now for one backbone."""

    state: Literal["cached", "downloadable", "offline"]
    path: Path  # the exact file that is read
    message: str  # one line for a status display


def weights_availability(backbone: str, timeout: float = DEFAULT_TIMEOUT_S) -> WeightsAvailability:
    """Cached (file present or bundled), downloadable (host reachable) or offline (neither)."""
    from qtl.models.backbones import weights_status

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
