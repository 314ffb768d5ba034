"""The app's settings: where things live and what a visitor may do.

Environment variables win over `.streamlit/secrets.toml`'s `[qtl]` table:

| env                   | secrets `[qtl]`      | meaning                                                |
|-----------------------|----------------------|--------------------------------------------------------|
| `QTL_DEMO=1`          | `demo = true`        | shared demo: read-only models/, own area, limits       |
| `QTL_DEMO_MAX_EPOCHS` | `max_epochs`         | demo cap on epochs per run (default 5)                 |
| `QTL_DEMO_MAX_QUBITS` | `max_qubits`         | demo cap on qubits (default 8)                         |
| `QTL_AUTOLOAD=0`      | `autoload = false`   | new sessions start empty (default: the shipped ones)   |
| `QTL_PRETRAINED=0`    | `pretrained = false` | start with random init instead of ImageNet weights     |
| `QTL_TORCH_THREADS`   | `torch_threads`      | torch intra-op threads (default 1, see below)          |
| `QTL_DEMO_DATA_MB`    | `max_data_mb`        | demo cap on one visitor's uploaded datasets (200 MB)   |
| `QTL_DEMO_MAX_IMAGES` | `max_images`         | demo cap on images Classify takes at once (16)         |
| `QTL_ZIP_MAX_*`       | -                    | caps on one uploaded zip (`qtl.data.archive`)          |
| `QTL_MODELS_DIR`      | -                    | the checkpoint store (default `models/`)               |
| `QTL_DATA_DIR`        | -                    | the dataset root (default: `qtl.data.sources`)         |

Every session's script runs in a thread of its own, beside the browser, other sessions and training, so
torch computes each request on one thread: on 2 cores that answered an upload on Classify in 0.6 s
where torch's default of one thread per core took 1.9 s (docs/benchmarks.md, "App").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from qtl.paths import models_dir
from qtl.quantum.circuit import MAX_QUBITS

LOCAL_MAX_QUBITS = MAX_QUBITS  # the form's range in local mode; above 24 qubits only the MPS engine runs


DEMO_MAX_IMAGES = 16  # as `qtl serve` takes per request (ServeLimits.max_images)


@dataclass(frozen=True)
class Settings:
    """Where things live and what a visitor may do."""

    demo: bool  # shared demo mode
    models_dir: Path  # shipped / local checkpoints
    data_dir: str | None  # dataset root override; None lets qtl.data.folders find or download it
    pretrained: bool  # default of the pretrained switch
    max_epochs: int  # per run
    max_qubits: int
    max_queued: int  # training requests that may wait while one runs (0: refuse)
    max_runs: int  # (variant, seed) runs per training request
    autoload: bool  # new sessions start with models/'s checkpoints loaded
    torch_threads: int | None  # intra-op threads per request; None keeps torch's default (one per core)
    max_data_mb: int | None  # demo: one visitor's uploaded datasets together; None: only the zip caps
    max_images: int | None  # demo: images one classification takes (uploads and picks); None: any number


def _secret(name: str, default):
    try:
        return st.secrets.get("qtl", {}).get(name, default)
    except FileNotFoundError:  # no secrets.toml: StreamlitSecretNotFoundError subclasses it
        return default


def _flag(env: str, secret: str, default: bool) -> bool:
    raw = os.environ.get(env)
    if raw is None:
        return bool(_secret(secret, default))
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _int_setting(env: str, secret: str, default: int | None) -> int | None:
    raw = os.environ.get(env) or _secret(secret, None)
    return default if raw in (None, "") else int(raw)


def settings() -> Settings:
    """Read the settings (cheap; re-read each run so tests can change the environment)."""
    demo = _flag("QTL_DEMO", "demo", False)
    return Settings(
        demo=demo,
        models_dir=models_dir(),
        data_dir=os.environ.get("QTL_DATA_DIR") or None,
        pretrained=_flag("QTL_PRETRAINED", "pretrained", True),
        max_epochs=int(os.environ.get("QTL_DEMO_MAX_EPOCHS") or _secret("max_epochs", 5)) if demo else 500,
        max_qubits=int(os.environ.get("QTL_DEMO_MAX_QUBITS") or _secret("max_qubits", 8))
        if demo
        else LOCAL_MAX_QUBITS,
        max_queued=0 if demo else 4,
        max_runs=6 if demo else 100,
        autoload=_flag("QTL_AUTOLOAD", "autoload", True),
        torch_threads=_int_setting("QTL_TORCH_THREADS", "torch_threads", 1),
        max_data_mb=_int_setting("QTL_DEMO_DATA_MB", "max_data_mb", 200) if demo else None,
        max_images=_int_setting("QTL_DEMO_MAX_IMAGES", "max_images", DEMO_MAX_IMAGES) if demo else None,
    )
