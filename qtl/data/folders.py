"""The one rule for image class folders: which files are images, which folders are classes, which
layouts are datasets.

A dataset root is ImageFolder-style::

    root/train/<class>/*.jpg
    root/val/<class>/*.jpg
    root/test/<class>/*.jpg        (optional)

`skip_reason` says why a file or folder is not an image (hidden, junk, a folder, another extension);
`is_image_file` and `is_class_dir` are that rule as predicates; `list_images` and `validate_dataset`
read a canonical root with it, and `scan` finds the layout of anything else (a folder or an unpacked
zip) with the same rule, recording every skipped entry once with its reason. `scan` also opens each
image file's header (`header_refusal`, the pixels are not decoded), so a file named .png that is no
image is skipped and listed there, and a class folder left with no readable image is refused; a
canonical root is read by name only here, its files decoded where it is loaded
(`qtl.data.images.ImageFolderDataset`).
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val")  # required
ALL_SPLITS = (*SPLITS, "test")  # test/ is optional
#: Folder names that mean a split, in any letter case.
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
SPLIT_NAMES |= {"test": "test", "testing": "test"}
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Entries that operating systems leave in folders and archives, with what they are.
JUNK = {"__MACOSX": "macOS archive metadata", "Thumbs.db": "Windows thumbnail cache"}
JUNK |= {"desktop.ini": "Windows folder settings"}
MIN_CLASSES = 2


class DatasetError(ValueError):
    """The dataset is missing, cannot be fetched, or has an unusable layout."""


# --- the rule --------------------------------------------------------------------------------------


def _hidden_or_junk(path: Path) -> bool:
    return path.name.startswith(".") or path.name in JUNK


def skip_reason(path: Path) -> str | None:
    """Why an entry of a class folder is not an image to use, or None for an image file."""
    if path.name in JUNK:
        return JUNK[path.name]
    if path.name.startswith("."):
        return "hidden file"
    if path.is_dir():
        return "a folder inside a class folder"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file ({path.suffix or 'no extension'})"
    if not path.is_file():
        return "not a regular file"
    return None


def header_refusal(path: Path) -> str | None:
    """Why a file does not open as an image, in one line, else None: Pillow reads its header only (its
    pixels are not decoded, so a truncated image passes here and is skipped where images are decoded,
    `qtl.data.images.check_image`)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "not a readable image (an empty file)"
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return "not a readable image"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"not a readable image ({' '.join(detail.split())})"


def is_image_file(path: Path) -> bool:
    """True for a visible regular file with an accepted image extension (case-insensitive)."""
    return skip_reason(path) is None


def is_class_dir(path: Path) -> bool:
    """True for a visible folder that is not operating-system junk."""
    return path.is_dir() and not _hidden_or_junk(path)


def class_names(split_dir: Path) -> list[str]:
    """The sorted class folder names in one split folder."""
    return sorted(p.name for p in split_dir.iterdir() if is_class_dir(p))


# --- a canonical root ------------------------------------------------------------------------------


def list_images(root: Path, split: str, classes: list[str]) -> list[tuple[Path, int]]:
    """(path, class index) for every image file of `split`, sorted by class then file name."""
    return [
        (p, i)
        for i, name in enumerate(classes)
        for p in sorted((Path(root) / split / name).iterdir())
        if is_image_file(p)
    ]


def stray_entries(root: Path, classes: list[str]) -> list[tuple[str, str]]:
    """(path relative to `root`, reason) of the entries of a canonical root outside its class folders:
    beside the splits and beside a split's class folders, with the reasons `scan` gives them."""
    root = Path(root)
    out = []
    for p in sorted(root.iterdir()):
        if p.name not in ALL_SPLITS or not p.is_dir():
            out.append((_rel(p, root), skip_reason(p) if _hidden_or_junk(p) else "not in train/val/test"))
    for split in (s for s in ALL_SPLITS if (root / s).is_dir()):
        for p in sorted((root / split).iterdir()):
            if p.name not in classes or not p.is_dir():
                reason = skip_reason(p) if _hidden_or_junk(p) else "not inside a class folder"
                out.append((_rel(p, root), reason))
    return out


def file_listing_id(root: str | Path) -> str | None:
    """16 hex digits naming which images a dataset root holds: a SHA-256 over every image's
    split/class/file name (not its bytes: a dataset fetched or arranged again names the same files, where
    a re-encoded copy would differ in bytes). None where `root` is no dataset. Runs record it, so that
    results on a folder whose images changed, or on another folder of the same name, are told apart
    (`qtl.experiments.sweeps.run_sweep`)."""
    import hashlib

    try:
        classes = validate_dataset(root)
    except DatasetError:
        return None
    digest = hashlib.sha256()
    for split in (s for s in ALL_SPLITS if (Path(root) / s).is_dir()):
        for path, label in list_images(Path(root), split, classes):
            digest.update(f"{split}/{classes[label]}/{path.name}\n".encode())
    return digest.hexdigest()[:16]


def validate_dataset(root: str | Path) -> list[str]:
    """Check the layout of a dataset root and return its sorted class names.

    Requires train/ and val/ (and test/, if present) with the same class subfolders, at least two
    classes, and at least one image file in every class folder. Files are not decoded here (see
    `qtl.data.images.ImageFolderDataset`).

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
    classes = class_names(root / "train")
    for split in splits[1:]:
        other = class_names(root / split)
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


# --- any folder --------------------------------------------------------------------------------------


def _rel(p: Path, source: Path) -> str:
    return p.relative_to(source).as_posix() + ("/" if p.is_dir() else "")


def _class_files(folder: Path, source: Path, skipped: list) -> list[Path]:
    """The readable image files directly in a class folder, in name order; everything else goes to
    `skipped`, image files whose header does not open (`header_refusal`) too.

    Raises:
        DatasetError: the folder holds image files and none of them opens (a class with no image to use).
    """
    images, unreadable = [], []
    for p in sorted(folder.iterdir()):
        reason = skip_reason(p)
        if reason is None and (reason := header_refusal(p)) is not None:
            unreadable.append((p.name, reason))
        if reason is None:
            images.append(p)
        else:
            skipped.append((p.relative_to(source).as_posix(), reason))
    if unreadable and not images:
        names = ", ".join(name for name, _ in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
        raise DatasetError(
            f"{_rel(folder, source)} has no readable image ({len(unreadable)} unreadable: {names}: "
            f"{unreadable[0][1]}): replace or remove them, or add a readable image"
        )
    return images


def _classes_in(folder: Path, source: Path, skipped: list) -> dict[str, list[Path]]:
    """{class name: image files} for the class folders in `folder`; stray files and empty classes skipped."""
    out = {}
    for p in sorted(folder.iterdir()):
        if is_class_dir(p):
            files = _class_files(p, source, skipped)
            if files:
                out[p.name] = files
            else:
                skipped.append((_rel(p, source), "class folder without images"))
        else:
            reason = skip_reason(p) if _hidden_or_junk(p) else "not inside a class folder"
            skipped.append((_rel(p, source), reason))
    return out


def scan(source: Path) -> tuple[str, dict[str, dict[str, list[Path]]], list[tuple[str, str]]]:
    """Find the layout under `source`: ("splits" | "classes", {split: {class: files}}, skipped).

    "splits": train/ (+ val/, test/, in any of the `SPLIT_NAMES` spellings) holding class folders;
    "classes": class folders only (one called train among them too, where it holds images and no class
    folders). A single wrapping folder (with nothing but junk beside it) is looked through where it holds
    folders; one that holds only files is a class folder, the only one. Image files whose header does not
    open are skipped with the reason (`header_refusal`).

    Raises:
        DatasetError: a class folder whose image files all fail to open (named relative to `source`).
    """
    skipped: list[tuple[str, str]] = []
    top = source
    while True:
        entries = sorted(top.iterdir())
        real = [p for p in entries if not _hidden_or_junk(p)]
        wraps = len(real) == 1 and real[0].is_dir() and any(is_class_dir(p) for p in real[0].iterdir())
        if wraps and real[0].name.lower() not in SPLIT_NAMES:
            skipped += [
                (p.relative_to(source).as_posix(), skip_reason(p) or "") for p in entries if p not in real
            ]
            top = real[0]
            continue
        break
    splits = {}
    for p in sorted(top.iterdir()):
        name = SPLIT_NAMES.get(p.name.lower())
        if p.is_dir() and name is not None and name not in splits:
            splits[name] = p
    # a train/ of image files, no class folders, beside class folders that are no split ("train", "bus",
    # "car": vehicles) is a class, not the training split (it was, and the dataset had 0 classes); beside
    # splits alone (train/ and test/ of unlabelled images) it stays a split, refused below for want of classes
    others = [p for p in top.iterdir() if is_class_dir(p) and p not in splits.values()]
    a_class = "train" in splits and others and not any(is_class_dir(c) for c in splits["train"].iterdir())
    if "train" in splits and not a_class:
        found = {}
        for p in sorted(top.iterdir()):
            if p not in splits.values():
                reason = skip_reason(p) if _hidden_or_junk(p) else "not in train/val/test"
                skipped.append((p.relative_to(source).as_posix(), reason))
        for name, folder in splits.items():
            found[name] = _classes_in(folder, source, skipped)
        return "splits", found, skipped
    return "classes", {"train": _classes_in(top, source, skipped)}, skipped
