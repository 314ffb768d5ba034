"""Offline-safe availability checks for status displays: are a backbone's ImageNet weights cached,
downloadable or out of reach (`WeightsAvailability`; where the file lives is `qtl.backbones.WeightsStatus`).
Nothing here downloads, and every check is bounded in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from qtl.download import offline, reachable

DEFAULT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class WeightsAvailability:
    """What using `pretrained=True` would do now for one backbone."""

    state: Literal["cached", "downloadable", "offline"]
    path: Path  # the exact file torchvision reads
    message: str  # one line for a status display


def weights_availability(backbone: str, timeout: float = DEFAULT_TIMEOUT_S) -> WeightsAvailability:
    """Cached (file present), downloadable (host reachable) or offline (neither: use random init)."""
    from qtl.backbones import weights_status

    status = weights_status(backbone)
    if status.cached:
        message = f"{status.weights_id} weights cached at {status.path}"
        return WeightsAvailability("cached", status.path, message)
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
        f"(from {status.url}) in {status.path.parent}, or use random init",
    )
