"""Where datasets come from: the built-in hymenoptera set, found on disk or downloaded once; scikit-learn's
bundled digits; and torchvision's datasets by name.

`resolve_dataset()` finds a dataset root (explicit path, then $QTL_DATA_DIR, then the default cache
location) or downloads hymenoptera (ants/bees) from its public address, checked by size and SHA-256 and
unpacked by `qtl.data.archive.safe_extract`. `dataset_status()` says which of these would happen,
without touching the network. Zips and other layouts: `qtl.data.datasets.open_dataset`.

Named datasets are images in memory that `qtl.data.datasets.open_dataset(name)` writes once as class
folders (PNG) under the dataset store, so everything else (features, checkpoints, the app) treats them
like any folder:

    digits                              scikit-learn's `load_digits`: 1,797 real 8x8 handwritten digits,
                                        10 classes, shipped inside the scikit-learn package (no network);
                                        a fixed stratified 60/20/20 train/val/test split
    torchvision/<Name>[:class,class]    a torchvision dataset class (CIFAR10, MNIST, FashionMNIST, SVHN ...)
                                        downloaded into <cache>/torchvision where a network is available;
                                        optionally only the named classes; at most TORCHVISION_TRAIN and
                                        TORCHVISION_TEST images per class from its train and test sets (in
                                        the dataset's order); val is a stratified 20% of train
"""

from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

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
DIGITS = "digits"
TORCHVISION_PREFIX = "torchvision/"
TORCHVISION_TRAIN, TORCHVISION_TEST = 500, 100  # images per class taken from a torchvision dataset
NAMED_SPLIT_SEED = 0  # the fixed seed of a named dataset's stratified split


DOWNLOAD_FAILED = "cannot download the dataset"
"""How a failed download of a dataset begins its DatasetError (offline, or the host out of reach): the
app tells it from other failures of a job by it."""


WHERE_TO_PUT = "put the dataset"
"""How the command-line advice that ends a missing dataset's error begins (`_where_to_put`): the app,
whose users cannot follow it, cuts the message there (`ui.datasets.download_reason`)."""


def _where_to_put(target: Path) -> str:
    return (
        f"{WHERE_TO_PUT} (train/ and val/ with one folder per class) in {target}, "
        "or point to it with --data PATH (a sweep spec: dataset = PATH) or the QTL_DATA_DIR environment "
        "variable"
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
            raise DatasetError(f"{DOWNLOAD_FAILED} ({exc}): {_where_to_put(dest)}") from exc
        except ChecksumError as exc:
            raise DatasetError(f"downloaded dataset is corrupt ({exc}); try again") from exc
        except DownloadError as exc:
            raise DatasetError(f"{DOWNLOAD_FAILED} ({exc}): {_where_to_put(dest)}") from exc
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


# ---- named datasets: images in memory, written as class folders by qtl.data.datasets


def is_named(name) -> bool:
    """Whether `name` names a dataset by name ("digits", "torchvision/<Name>[:classes]")."""
    return isinstance(name, str) and (name == DIGITS or name.startswith(TORCHVISION_PREFIX))


def named_images(name: str, *, download: bool = True) -> tuple[list[str], dict[str, list]]:
    """(class names, {split: [(PIL image, class index), ...]}) of a named dataset, train/val/test.

    Raises DatasetError for an unknown name, or a torchvision dataset that is neither on disk nor
    downloadable (offline, or QTL_OFFLINE set)."""
    if name == DIGITS:
        return _digits()
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision(name, download=download and not offline())
    raise DatasetError(f"unknown dataset name {name!r}; named datasets: {DIGITS}, {TORCHVISION_PREFIX}<Name>")


def _split_off(index: np.ndarray, labels: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(rest, part): a stratified `share` of `index` (labels: of all images), fixed by NAMED_SPLIT_SEED."""
    from sklearn.model_selection import train_test_split

    rest, part = train_test_split(
        index, test_size=share, stratify=labels[index], random_state=NAMED_SPLIT_SEED
    )
    return np.sort(rest), np.sort(part)


def _three_way(labels: np.ndarray, test: float = 0.2, val: float = 0.2) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices (fractions of the whole)."""
    rest, test_idx = _split_off(np.arange(len(labels)), labels, test)
    train, val_idx = _split_off(rest, labels, val / (1 - test))
    return {"train": train, "val": val_idx, "test": test_idx}


def _digits() -> tuple[list[str], dict[str, list]]:
    """scikit-learn's digits: ink 0-16 as dark strokes on white 8x8 greyscale images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (255 - np.rint(bunch.images * (255 / 16))).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    parts = _three_way(labels)
    images = {s: [(Image.fromarray(pixels[i], "L"), int(labels[i])) for i in idx] for s, idx in parts.items()}
    return [str(c) for c in bunch.target_names], images


def _torchvision(name: str, *, download: bool) -> tuple[list[str], dict[str, list]]:
    """A torchvision dataset by class name, optionally restricted to some classes (see the module
    docstring); read (and downloaded when allowed) with torchvision's own class."""
    import torchvision

    from qtl.paths import cache_root

    spec = name[len(TORCHVISION_PREFIX) :]
    cls_name, _, wanted = spec.partition(":")
    cls = getattr(torchvision.datasets, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torchvision.datasets.VisionDataset)):
        raise DatasetError(
            f"torchvision has no dataset {cls_name!r} (e.g. CIFAR10, MNIST, FashionMNIST, SVHN)"
        )
    params = inspect.signature(cls).parameters
    if "train" in params:
        sets = {s: {"train": s == "train"} for s in ("train", "test")}
    elif "split" in params:
        sets = {s: {"split": s} for s in ("train", "test")}
    else:
        raise DatasetError(
            f"torchvision's {cls_name} has no train/test split (train= or split=) qtl can read"
        )
    root = cache_root() / "torchvision"
    loaded = {}
    for split, kwargs in sets.items():
        try:
            loaded[split] = cls(str(root), download=download, **kwargs)
        except (RuntimeError, OSError, ValueError) as exc:
            how = "downloading is off (QTL_OFFLINE or no network)" if not download else f"{exc}"
            raise DatasetError(f"torchvision's {cls_name} is not in {root} and cannot be had: {how}") from exc
    classes = [str(c) for c in getattr(loaded["train"], "classes", [])]
    targets = {s: _targets(ds) for s, ds in loaded.items()}
    if not classes:
        classes = [str(c) for c in sorted(set(targets["train"].tolist()))]
    keep = [c.strip() for c in wanted.split(",")] if wanted else classes
    unknown = [c for c in keep if c not in classes]
    if unknown or len(keep) < 2:
        raise DatasetError(f"choose 2 or more of {cls_name}'s classes {classes}, not {wanted!r}")
    out: dict[str, list] = {}
    for split, caps in (("train", TORCHVISION_TRAIN), ("test", TORCHVISION_TEST)):
        chosen = [
            (int(i), k)
            for k, c in enumerate(keep)
            for i in np.flatnonzero(targets[split] == classes.index(c))[:caps]
        ]
        out[split] = [(_rgb(loaded[split][i][0]), k) for i, k in sorted(chosen)]
    labels = np.array([k for _, k in out["train"]])
    train, val = _split_off(np.arange(len(labels)), labels, 0.2)
    out["train"], out["val"] = [out["train"][i] for i in train], [out["train"][i] for i in val]
    return [_folder_name(c) for c in keep], out


def _targets(dataset) -> np.ndarray:
    """A torchvision dataset's class indices (its `targets` or `labels`), as an int array."""
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None:
            return np.asarray(values, dtype=np.int64).reshape(-1)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def _rgb(image):
    """A PIL image (or an array) as the PIL image qtl writes."""
    from PIL import Image

    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


def _folder_name(name: str) -> str:
    """A class name usable as a folder name (no separators, not hidden)."""
    cleaned = name.replace("/", "-").replace("\\", "-").strip().lstrip(".")
    return cleaned or "class"
