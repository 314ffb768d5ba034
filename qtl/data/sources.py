"""Where datasets come from: the built-in hymenoptera set, found on disk or downloaded once.

`resolve_dataset()` finds a dataset root (explicit path, then $QTL_DATA_DIR, then the default cache
location) or downloads hymenoptera (ants/bees) from its public address, checked by size and SHA-256 and
unpacked by `qtl.data.archive.safe_extract`. `dataset_status()` says which of these would happen,
without touching the network. Zips and other layouts: `qtl.data.datasets.open_dataset`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qtl.data.archive import ArchiveError, safe_extract
from qtl.data.folders import DatasetError, validate_dataset
from qtl.paths import default_data_dir
from qtl.utils.download import (
    DEFAULT_TIMEOUT_S,
    OFFLINE_ENV,
    ChecksumError,
    DownloadError,
    OfflineError,
    Progress,
    download,
    offline,
)

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
# Published by pytorch/tutorials (.jenkins/download_data.py); the size is the server's Content-Length.
HYMENOPTERA_SHA256 = "fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209"
HYMENOPTERA_SIZE = 47_286_322


def _where_to_put(target: Path) -> str:
    return (
        f"put the dataset (train/ and val/ with one folder per class) in {target}, "
        "or point to it with --data PATH or the QTL_DATA_DIR environment variable"
    )


def find_root(path: Path) -> Path:
    """`path` itself when it holds train/, else its single subfolder that does (an unzipped archive)."""
    if (path / "train").is_dir() or not path.is_dir():
        return path
    inner = [p for p in path.iterdir() if p.is_dir() and (p / "train").is_dir()]
    return inner[0] if len(inner) == 1 else path


def _present(path: Path) -> bool:
    """Something is at `path`: a file, or a folder that is not empty."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


@dataclass(frozen=True)
class DatasetStatus:
    """What `resolve_dataset` would do now, for status displays; found without touching the network."""

    state: Literal["found", "downloadable", "missing"]
    path: Path
    message: str


def dataset_status(path: str | Path | None = None) -> DatasetStatus:
    """Report whether a dataset is ready at `path` (or the default location), never using the network."""
    if path is not None:
        root = find_root(Path(path).expanduser())
        try:
            classes = validate_dataset(root)
        except DatasetError as exc:
            return DatasetStatus("missing", root, str(exc))
        return DatasetStatus("found", root, f"{len(classes)} classes at {root}")
    root = find_root(default_data_dir())
    try:
        classes = validate_dataset(root)
    except DatasetError as exc:
        if _present(root):
            return DatasetStatus("missing", root, str(exc))
        if offline():
            return DatasetStatus("missing", root, f"{OFFLINE_ENV} is set: {_where_to_put(root)}")
        return DatasetStatus(
            "downloadable",
            root,
            f"not at {root} yet: hymenoptera ({HYMENOPTERA_SIZE / 1e6:.0f} MB) is downloaded on first use",
        )
    return DatasetStatus("found", root, f"{len(classes)} classes at {root}")


def resolve_dataset(
    path: str | Path | None = None, *, download: bool = True, progress: Progress | None = None
) -> Path:
    """The dataset root to use: `path`, else $QTL_DATA_DIR, else the default location, else download.

    An explicit `path` must hold a valid dataset (or a single subfolder that does). Without one, the
    hymenoptera set is downloaded into `default_data_dir()` when `download` is True. Zips and other
    layouts: `qtl.data.datasets.open_dataset`, the entry point that arranges them and calls this.

    Raises:
        DatasetError: nothing valid found and no download possible; the message says where to put it.
    """
    if path is not None:
        root = find_root(Path(path).expanduser())
        validate_dataset(root)
        return root
    target = default_data_dir()
    root = find_root(target)
    if _present(root) or not download:
        if not _present(root):
            raise DatasetError(f"no dataset at {root} and downloading is off: {_where_to_put(target)}")
        validate_dataset(root)
        return root
    return download_hymenoptera(target, progress=progress)


def download_hymenoptera(
    dest: str | Path | None = None,
    *,
    url: str = HYMENOPTERA_URL,
    size: int | None = HYMENOPTERA_SIZE,
    sha256: str | None = HYMENOPTERA_SHA256,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download, check and extract a dataset zip so that `dest` becomes its root; return `dest`.

    The zip is streamed to a temporary file (progress(done_bytes, total_bytes) per chunk), its size and
    SHA-256 are checked, it is extracted into a temporary folder beside `dest`, validated, and renamed
    into place in one step, so `dest` is either absent or complete.

    Raises:
        DatasetError: offline (saying where to put the data), bad checksum, bad archive or layout.
    """
    dest = Path(dest).expanduser() if dest is not None else default_data_dir()
    if dest.exists() and any(dest.iterdir()):
        raise DatasetError(f"{dest} already exists and is not empty; remove it or use it with --data {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            download(url, archive, size=size, sha256=sha256, progress=progress, timeout=timeout)
        except OfflineError as exc:
            raise DatasetError(f"cannot download the dataset ({exc}): {_where_to_put(dest)}") from exc
        except ChecksumError as exc:
            raise DatasetError(f"downloaded dataset is corrupt ({exc}); try again") from exc
        except DownloadError as exc:
            raise DatasetError(f"cannot download the dataset ({exc}): {_where_to_put(dest)}") from exc
        extracted = Path(tmp) / "extracted"
        _unpack(archive, extracted)
        root = find_root(extracted)
        validate_dataset(root)
        if dest.exists():
            dest.rmdir()
        os.replace(root, dest)
    return dest


def _unpack(archive: Path, out: Path) -> None:
    """Extract a downloaded zip into `out` with the checks every archive gets; DatasetError if refused."""
    try:
        safe_extract(archive, out)
    except ArchiveError as exc:
        raise DatasetError(f"downloaded archive refused: {exc}") from exc
