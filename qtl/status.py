"""Offline-safe status checks for status displays: can a host be reached, and are a backbone's ImageNet
weights cached, downloadable or out of reach. Nothing here downloads, and every check is bounded in time.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

DEFAULT_TIMEOUT_S = 2.0


def reachable(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when a TCP connection to `url`'s host and port opens within `timeout` s (lookup included)."""
    parsed = urlparse(url)
    if not parsed.hostname:
        raise ValueError(f"not a URL with a host: {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome = {"ok": False}

    def connect() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                outcome["ok"] = True
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return outcome["ok"]


@dataclass(frozen=True)
class WeightsState:
    """What using `pretrained=True` would do now for one backbone."""

    state: Literal["cached", "downloadable", "offline"]
    path: Path  # the exact file torchvision reads
    message: str  # one line for a status display


def weights_state(backbone: str, timeout: float = DEFAULT_TIMEOUT_S) -> WeightsState:
    """Cached (file present), downloadable (host reachable) or offline (neither: use random init)."""
    from qtl.backbones import OFFLINE_ENV, weights_status

    status = weights_status(backbone)
    if status.cached:
        return WeightsState("cached", status.path, f"{status.weights_id} weights cached at {status.path}")
    if os.environ.get(OFFLINE_ENV, "") in ("", "0") and reachable(status.url, timeout):
        return WeightsState(
            "downloadable",
            status.path,
            f"{status.filename} is downloaded into {status.path.parent} on first use",
        )
    return WeightsState(
        "offline",
        status.path,
        f"not cached and {urlparse(status.url).hostname} cannot be reached: put {status.filename} "
        f"(from {status.url}) in {status.path.parent}, or use random init",
    )
