"""Where qtl keeps things, from the environment or the defaults. Torch-free, so the app's first page and
the CLI's `--help` can ask without loading torch.

| what | variable | default |
|---|---|---|
| cache root (features, downloaded data) | QTL_CACHE_DIR | ~/.cache/qtl |
| the default dataset | QTL_DATA_DIR | <cache root>/data/hymenoptera_data |
| the checkpoint store | QTL_MODELS_DIR | models/ at the repository root |
| the results database (sweeps) | QTL_RESULTS_DB | <checkpoint store>/results.db |
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_ENV = "QTL_MODELS_DIR"
HYMENOPTERA_DIRNAME = "hymenoptera_data"
DEFAULT_DATASET = "hymenoptera"  # the name runs, sweeps and their rows give qtl's default dataset


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """qtl's cache folder: $QTL_CACHE_DIR, else ~/.cache/qtl."""
    return _from_env("QTL_CACHE_DIR") or Path.home() / ".cache" / "qtl"


def default_data_dir() -> Path:
    """Where the default dataset lives: $QTL_DATA_DIR, else <cache root>/data/hymenoptera_data."""
    return _from_env("QTL_DATA_DIR") or cache_root() / "data" / HYMENOPTERA_DIRNAME


def models_dir() -> Path:
    """The checkpoint store: $QTL_MODELS_DIR, else models/ at the repository root."""
    return _from_env(MODELS_ENV) or REPO_ROOT / "models"


def results_db() -> Path:
    """The sweeps' results database: $QTL_RESULTS_DB, else results.db in the checkpoint store."""
    return _from_env("QTL_RESULTS_DB") or models_dir() / "results.db"


def portable(text: str) -> str:
    """`text` as it may be shared: the working folder's paths made relative ("./x" -> "x") and the
    home folder written "~", so a report or a command line names no folder of this machine.
    Other absolute paths are left as given."""
    folders = sorted(((Path.cwd(), ""), (Path.home(), "~/")), key=lambda f: -len(str(f[0])))
    for folder, short in folders:  # the deeper folder first, where one holds the other
        text = text.replace(f"{folder}/", short).replace(str(folder), short.rstrip("/") or ".")
    return text
