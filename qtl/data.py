"""Datasets: where they live, the hymenoptera download, validation and a robust image-folder dataset.

A dataset root is ImageFolder-style::

    root/train/<class>/*.jpg
    root/val/<class>/*.jpg

`resolve_dataset()` finds it (explicit path, then $QTL_DATA_DIR, then the default cache location) or
downloads the hymenoptera (ants/bees) set. `validate_dataset()` rejects degenerate layouts before any
work starts. `ImageFolderDataset` decodes every file once when built, reports bad ones once and skips
them, so training never stops on a broken image.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from qtl.download import (
    DEFAULT_TIMEOUT_S,
    OFFLINE_ENV,
    ChecksumError,
    DownloadError,
    OfflineError,
    Progress,
    download,
    offline,
)
from qtl.paths import default_data_dir

log = logging.getLogger(__name__)

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
# Published by pytorch/tutorials (.jenkins/download_data.py); the size is the server's Content-Length.
HYMENOPTERA_SHA256 = "fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209"
HYMENOPTERA_SIZE = 47_286_322

SPLITS = ("train", "val")  # required
ALL_SPLITS = (*SPLITS, "test")  # test/ is optional
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MIN_CLASSES = 2


class DatasetError(ValueError):
    """The dataset is missing, cannot be fetched, or has an unusable layout."""


class ImageLoadError(ValueError):
    """An image file or upload cannot be decoded."""


# --- locations -----------------------------------------------------------------------------------


def _where_to_put(target: Path) -> str:
    return (
        f"put the dataset (train/ and val/ with one folder per class) in {target}, "
        "or point to it with --data PATH or the QTL_DATA_DIR environment variable"
    )


def _locate(path: Path) -> Path:
    """`path` itself when it holds train/, else its single subfolder that does (an unzipped archive)."""
    if (path / "train").is_dir() or not path.is_dir():
        return path
    inner = [p for p in path.iterdir() if p.is_dir() and (p / "train").is_dir()]
    return inner[0] if len(inner) == 1 else path


def _present(path: Path) -> bool:
    """Something is at `path`: a file, or a folder that is not empty."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


# --- validation and listing ----------------------------------------------------------------------


def is_image_file(path: Path) -> bool:
    """True for a visible file with an accepted image extension (case-insensitive)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, class index) for every image file of `split`, sorted by class then file name."""
    return [
        (p, i)
        for i, name in enumerate(classes)
        for p in sorted((Path(root) / split / name).iterdir())
        if is_image_file(p)
    ]


def validate_dataset(root: str | Path) -> list[str]:
    """Check the layout of a dataset root and return its sorted class names.

    Requires train/ and val/ (and test/, if present) with the same class subfolders, at least two
    classes, and at least one image file in every class folder. Files are not decoded here (see
    ImageFolderDataset).

    Raises:
        DatasetError: with a one-line message saying what is wrong and where.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DatasetError(f"{root} has no {split}/ folder; expected {root}/{split}/<class>/<images>")
    splits = [s for s in ALL_SPLITS if (root / s).is_dir()]
    classes = _class_dirs(root / "train")
    for split in splits[1:]:
        other = _class_dirs(root / split)
        if classes != other:
            raise DatasetError(
                f"train/ and {split}/ in {root} must have the same class folders; got {classes} and {other}"
            )
    if len(classes) < MIN_CLASSES:
        raise DatasetError(
            f"{root} needs at least {MIN_CLASSES} class folders in train/ and val/, found {len(classes)}"
            + (f" ({classes[0]})" if classes else "")
        )
    for split in splits:
        for name in classes:
            folder = root / split / name
            if not any(is_image_file(p) for p in folder.iterdir()):
                raise DatasetError(
                    f"{folder} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                    "every class needs images in both splits"
                )
    return classes


# --- finding or downloading ----------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStatus:
    """What `resolve_dataset` would do now, for status displays; found without touching the network."""

    state: Literal["found", "downloadable", "missing"]
    path: Path
    message: str


def dataset_status(path: str | Path | None = None) -> DatasetStatus:
    """Report whether a dataset is ready at `path` (or the default location), never using the network."""
    if path is not None:
        root = _locate(Path(path).expanduser())
        try:
            classes = validate_dataset(root)
        except DatasetError as exc:
            return DatasetStatus("missing", root, str(exc))
        return DatasetStatus("found", root, f"{len(classes)} classes at {root}")
    root = _locate(default_data_dir())
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
    layouts: `qtl.datasets.open_dataset`, the entry point that arranges them and calls this.

    Raises:
        DatasetError: nothing valid found and no download possible; the message says where to put it.
    """
    if path is not None:
        root = _locate(Path(path).expanduser())
        validate_dataset(root)
        return root
    target = default_data_dir()
    root = _locate(target)
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
        _extract(archive, extracted)
        root = _locate(extracted)
        validate_dataset(root)
        if dest.exists():
            dest.rmdir()
        os.replace(root, dest)
    return dest


def _extract(archive: Path, out: Path) -> None:
    """Extract a zip, refusing members that would land outside `out`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            base = out.resolve()
            for member in zf.namelist():
                target = (out / member).resolve()
                if target != base and base not in target.parents:
                    raise DatasetError(f"refusing archive member {member!r}: it points outside the folder")
            zf.extractall(out)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"downloaded file is not a valid zip archive: {exc}") from exc
    macos = out / "__MACOSX"
    if macos.is_dir():
        shutil.rmtree(macos)


# --- images --------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def load_image(source: str | Path | bytes | BinaryIO) -> Image.Image:
    """Decode an image from a path, raw bytes or a binary file-like object into an RGB PIL image.

    Raises:
        ImageLoadError: the input is missing or not a decodable image; the message names it.
    """
    label = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "uploaded image")
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as image:
            image.load()
            return _to_rgb(image)
    except FileNotFoundError as exc:
        raise ImageLoadError(f"no such image file: {label}") from exc
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode {label}: {exc}") from exc


def check_image(path: Path) -> str | None:
    """None when `path` decodes fully, else the reason it does not (JPEGs decode at reduced scale)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    return None


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder-style dataset; items are (image, class index).

    Every file is decoded once at construction; files that fail are logged once (path and reason),
    listed in `.skipped` and left out of `.samples`. If a file breaks later, __getitem__ logs it and
    returns the next good sample, so a training run never stops on a bad image.

    Attributes:
        classes: sorted class names, shared by both splits.
        samples: list of (path, class index) of the decodable images.
        targets: the class index of each sample.
        skipped: list of (path, reason) of the files left out.
    """

    def __init__(self, root: str | Path, split: str, transform=None, *, verify: bool = True) -> None:
        if split not in ALL_SPLITS:
            raise ValueError(f"split must be one of {ALL_SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.classes = validate_dataset(self.root)
        if not (self.root / split).is_dir():
            raise DatasetError(f"{self.root} has no {split}/ split")
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        for path, target in list_images(self.root, split, self.classes):
            reason = check_image(path) if verify else None
            if reason is None:
                self.samples.append((path, target))
            else:
                self._skip(path, reason)
        if not self.samples:
            raise DatasetError(f"no decodable images in {self.root / split}")
        self.targets = [t for _, t in self.samples]

    def _skip(self, path: Path, reason: str) -> None:
        log.warning("skipping image %s: %s", path, reason)
        self.skipped.append((path, reason))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        """(transform(image), class index); the image is an RGB PIL image when there is no transform."""
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                image = load_image(path)
            except ImageLoadError as exc:
                if all(p != path for p, _ in self.skipped):
                    self._skip(path, str(exc))
                continue
            return (self.transform(image) if self.transform is not None else image), target
        raise ImageLoadError(f"no image in {self.root / self.split} can be decoded any more")
