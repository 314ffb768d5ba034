"""Datasets from anywhere: the built-in hymenoptera, a folder or a zip becomes a ready train/val(/test) root.

    ds = open_dataset()                       # hymenoptera (found, or downloaded once)
    ds = open_dataset("~/scans")              # a folder
    ds = open_dataset("my_images.zip")        # a zip, extracted safely into <cache>/datasets/ once
    ds = open_dataset("digits")               # a named dataset (`qtl.data.sources`), written out once
    ds.root, ds.classes, ds.counts, ds.skipped, ds.record()

Accepted layouts, found below a single wrapping folder if there is one:

    train/<class>/*, val/<class>/* (+ test/<class>/*)   "splits" (valid/ or validation/ name val/ too;
                                                        without val/, val is split off train)
    <class>/*                                           "classes": a seeded, stratified train/val split

`__MACOSX/`, hidden files, non-image files, image files whose header does not open ("not a readable
image"), files outside class folders and folders inside class folders are skipped and listed once in
`.skipped` with the reason; a class left with no readable image is refused. A folder already in the
canonical layout is used in place (its files are read by name; see `describe`); anything else is arranged
into a new folder under the store (`<cache>/datasets`): a zip's files are moved there from the safe
extraction, a folder's are symlinked. The arranged folder holds a `qtl-dataset.json` manifest (source,
layout, split ratio and seed), which `fit()` copies into every checkpoint, so `open_dataset(source,
val_ratio=..., seed=...)` reproduces the same split.

Byte-identical images (`Duplicates`: the same SHA-256 in two splits, under two classes, or twice in one
class folder) are found once when a dataset is arranged and kept in its manifest; `ds.check_duplicates()`
finds them for a folder used in place or an older manifest (once per process while its folders are
unchanged), so opening a dataset for training never hashes its images.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qtl.data.archive import ArchiveLimits, safe_extract
from qtl.data.folders import (
    ALL_SPLITS,
    MIN_CLASSES,
    DatasetError,
    header_refusal,
    is_image_file,
    list_images,
    scan,
    skip_reason,
    stray_entries,
    validate_dataset,
)
from qtl.data.sources import (
    TORCHVISION_PREFIX,
    TORCHVISION_TEST,
    TORCHVISION_TRAIN,
    find_root,
    is_named,
    named_images,
    resolve_dataset,
)
from qtl.paths import cache_root, default_data_dir
from qtl.utils.download import Progress, sha256_file

DEFAULT_VAL_RATIO = 0.2  # share of each class held out for val when the dataset has no val/ split
MANIFEST = "qtl-dataset.json"
DUPLICATE_EXAMPLES = 3  # (image, twin) pairs kept per kind of duplicate


def datasets_dir() -> Path:
    """Where arranged datasets live: <cache root>/datasets."""
    return cache_root() / "datasets"


Pairs = tuple[tuple[str, str], ...]  # (image, its byte-identical twin), paths relative to the root


@dataclass(frozen=True)
class Leak:
    """Images of a later split byte-identical to images of an earlier one (val or test to train, test to
    val): a leak that flatters the accuracy measured on `split`."""

    split: str  # val or test
    twin_split: str  # the earliest split holding a twin: train (or val, for test images)
    count: int  # images of `split` with a twin in `twin_split`
    examples: Pairs = ()  # the first DUPLICATE_EXAMPLES (image, twin)


@dataclass(frozen=True)
class Duplicates:
    """Byte-identical image files (the same SHA-256) in a dataset, by how much they matter: `leaks` across
    splits, the same image under more than one class (`across_classes`, distinct images), and extra copies
    inside one split and class (`within`, less serious: those images weigh more)."""

    images: int  # image files hashed
    leaks: tuple[Leak, ...] = ()
    across_classes: int = 0
    across_examples: Pairs = ()
    within: int = 0
    within_examples: Pairs = ()
    unread: int = 0  # image files that could not be read, so not checked

    @property
    def checked(self) -> str:
        """What was hashed, in words: "245 image files" (", 2 unreadable not checked")."""
        return f"{self.images} image files" + (
            f", {self.unread} unreadable not checked" if self.unread else ""
        )

    @property
    def found(self) -> bool:
        return bool(self.leaks or self.across_classes or self.within)

    def summary(self) -> list[tuple[str, str]]:
        """(level, sentence) per kind found, "warning" for leaks and classes, "note" for copies within one
        class; [] where there are none. What `qtl data` prints and the Data page shows."""

        def eg(pairs: Pairs) -> str:
            return ", e.g. " + ", ".join(f"{a} = {b}" for a, b in pairs) if pairs else ""

        out = []
        for leak in self.leaks:
            n, split, twin = leak.count, leak.split, leak.twin_split
            said = (
                f"1 {split} image is byte-identical to a {twin} image (a leak: it flatters {split} accuracy)"
                if n == 1
                else f"{n} {split} images are byte-identical to {twin} images (a leak: they flatter {split} "
                "accuracy)"
            )
            out.append(("warning", said + eg(leak.examples)))
        if n := self.across_classes:
            said = f"the same image under two or more classes: {n} image{'s' * (n > 1)}"
            out.append(("warning", said + eg(self.across_examples)))
        if n := self.within:
            copies = "1 extra copy of an image" if n == 1 else f"{n} extra copies of images"
            said = f"{copies} inside one split and class (less serious: such images weigh more in training)"
            out.append(("note", said + eg(self.within_examples)))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Duplicates:
        """The Duplicates that `asdict` (a manifest's JSON) holds."""

        def pairs(rows) -> Pairs:
            return tuple((a, b) for a, b in rows)

        leaks = tuple(Leak(r["split"], r["twin_split"], r["count"], pairs(r["examples"])) for r in d["leaks"])
        return cls(
            d["images"],
            leaks,
            d["across_classes"],
            pairs(d["across_examples"]),
            d["within"],
            pairs(d["within_examples"]),
            d.get("unread", 0),
        )


def find_duplicates(root: str | Path, classes: list[str]) -> Duplicates:
    """Hash every image of a canonical root (`list_images`) and sort the byte-identical ones: an image of
    val or test with a twin in an earlier split is a `Leak` (counted once, against the earliest such split),
    an image found under two or more classes counts once in `across_classes`, and each copy after the first
    in one split and class counts in `within`. One image may count in more than one kind. Files that are
    empty or do not open as an image (`header_refusal`) are counted in `unread`, never paired: two
    empty files are byte-identical but no image."""
    root = Path(root)
    groups: dict[str, list[tuple[int, int, str]]] = defaultdict(list)  # sha256 -> (split, class, path)
    images = unread = 0
    for s, split in enumerate(ALL_SPLITS):
        if (root / split).is_dir():
            for p, k in list_images(root, split, classes):
                try:
                    digest = sha256_file(p) if header_refusal(p) is None else None
                except OSError:
                    digest = None
                if digest is None:  # unreadable, empty or no image: skipped at load time too, cannot leak
                    unread += 1
                    continue
                groups[digest].append((s, k, p.relative_to(root).as_posix()))
                images += 1
    leaks: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    across, within = [], []
    for files in groups.values():  # in listing order: split, class, name
        if len(files) < 2:
            continue
        first_in_split, first_in_class, first_in_cell = {}, {}, {}
        for s, k, rel in files:
            first_in_split.setdefault(s, rel)
            first_in_class.setdefault(k, rel)
            if (s, k) in first_in_cell:
                within.append((rel, first_in_cell[s, k]))
            first_in_cell.setdefault((s, k), rel)
        for s, _, rel in files:
            earlier = [t for t in first_in_split if t < s]
            if earlier:
                leaks[s, min(earlier)].append((rel, first_in_split[min(earlier)]))
        if len(first_in_class) > 1:
            across.append(tuple(list(first_in_class.values())[:2]))
    n = DUPLICATE_EXAMPLES
    return Duplicates(
        images,
        tuple(
            Leak(ALL_SPLITS[s], ALL_SPLITS[t], len(pairs), tuple(pairs[:n]))
            for (s, t), pairs in sorted(leaks.items())
        ),
        len(across),
        tuple(across[:n]),
        len(within),
        tuple(within[:n]),
        unread,
    )


@lru_cache(maxsize=16)
def _found_duplicates(root: str, classes: tuple[str, ...], folders: tuple) -> Duplicates:
    """find_duplicates, once per root and version of its split and class folders (`folders`)."""
    return find_duplicates(Path(root), list(classes))


def _folder_versions(root: Path, classes: list[str]) -> tuple:
    """(path, mtime_ns) of the root's split and class folders: a file added, removed or renamed in one
    changes its mtime (an image rewritten in place does not)."""
    dirs = [root / s for s in ALL_SPLITS if (root / s).is_dir()]
    dirs += [d / c for d in dirs for c in classes if (d / c).is_dir()]
    return tuple((d.as_posix(), d.stat().st_mtime_ns) for d in [root, *dirs])


@dataclass
class PreparedDataset:
    """A dataset ready for training: `root` holds train/ and val/ (and maybe test/) with one folder per
    class, in `classes` order."""

    root: Path
    name: str
    source: str  # what was asked for: a folder, a zip, or "hymenoptera"
    layout: str  # "splits" or "classes" (split here, from val_ratio and seed)
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path in the source, reason)
    val_ratio: float | None = None  # set when val was split off here
    seed: int | None = None
    source_sha256: str | None = None  # of a zip source
    duplicates: Duplicates | None = None  # found when arranged; None: not checked (in place, older manifest)
    # what `open_dataset` was asked for and did not do, one sentence each, for the caller to show (the
    # split options on a dataset with its own val split); not kept in the manifest or a checkpoint
    notes: list[str] = field(default_factory=list)

    def check_duplicates(self) -> Duplicates:
        """The dataset's byte-identical images: as its manifest recorded them, else found now (every image
        hashed, once per process while its folders are unchanged) and kept here."""
        if self.duplicates is None:
            root = Path(self.root).resolve()
            versions = _folder_versions(root, self.classes)
            self.duplicates = _found_duplicates(str(root), tuple(self.classes), versions)
        return self.duplicates

    @property
    def n_images(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    @property
    def imbalance(self) -> float:
        """Largest over smallest class in train (1.0: balanced)."""
        train = list(self.counts.get("train", {}).values())
        return max(train) / max(min(train), 1) if train else 1.0

    def record(self) -> dict:
        """What a checkpoint keeps about its data: enough to rebuild the same split (plain values).

        `root` and `source` never hold an absolute path of this machine: a folder inside the dataset store
        or the data folder is recorded relative to it, anything else by its name; `recorded_root` finds
        the folder again.
        """
        d = asdict(self)
        d["root"], d["source"] = _portable(self.root), _portable(self.source)
        d["n_skipped"] = len(self.skipped)
        del d["skipped"], d["duplicates"], d["notes"]  # the data's own summary, not a split's recipe
        return d


def _bases() -> tuple[Path, ...]:
    """The folders a recorded dataset path is relative to: the dataset store, the data folder, then the
    working folder (a project's `data/tv3`, trained and scored from the project's folder), unless that is
    a file system's root."""
    cwd = Path.cwd()
    return (datasets_dir(), default_data_dir().parent) + ((cwd,) if cwd != Path(cwd.anchor) else ())


def _portable(path: str | Path) -> str:
    """`path` relative to the dataset store, the data folder or the working folder when inside one (the
    first that holds it), else its last name."""
    here = Path(path).expanduser()
    if len(here.parts) == 1 and not here.is_absolute():
        return here.as_posix()  # already a name: "hymenoptera", "scans.zip"
    here = here.absolute()
    for base in _bases():
        if here.is_relative_to(base.absolute()):
            return here.relative_to(base.absolute()).as_posix()
    return here.name


def recorded_root(record: dict | None) -> Path | None:
    """The folder on this machine that a checkpoint's `meta["dataset"]` names, or None where it is not here
    (checkpoints written before recording relative paths hold an absolute root, used as it is). A relative
    root is looked for in each of `_bases` (the store, beside today's data folder, the working folder); a
    folder of that name whose images per split and class differ from the record's `counts` is another
    dataset, so it is not returned."""
    root = Path(str((record or {}).get("root") or ""))
    if not root.parts:
        return None
    found = [root] if root.is_absolute() else [base / root for base in _bases()]
    return next((p for p in found if p.is_dir() and _same_counts(p, (record or {}).get("counts"))), None)


def _same_counts(root: Path, counts: dict | None) -> bool:
    """Whether the dataset at `root` holds `counts` images per split and class (True without counts):
    as its manifest says where a zip was arranged here (its files moved into the store: no listing),
    else as `describe` counts them. A folder's arrangement is links to its images, which `describe` counts
    only where they still lead to one: its manifest held the counts of a folder since moved or changed,
    and scoring then failed on "train/ants has no image files"."""
    if not counts:
        return True
    try:
        manifest = read_manifest(root)
        if manifest is not None and manifest.source_sha256 is not None:
            return manifest.counts == counts
        return describe(root, root.name).counts == counts
    except (OSError, ValueError):
        return False


def open_dataset(
    source: str | Path | BinaryIO | None = None,
    *,
    val_ratio: float = DEFAULT_VAL_RATIO,
    seed: int = 0,
    download: bool = True,
    progress: Progress | None = None,
    limits: ArchiveLimits | None = None,
    store: str | Path | None = None,
) -> PreparedDataset:
    """The one entry point for data: hymenoptera (source None), a folder, a zip (path or binary file), or
    a named dataset ("digits", "torchvision/<Name>[:classes]"; a folder of that name wins).

    val_ratio, seed: the stratified split of a dataset without val/ (each class keeps at least one image
        on each side). limits: the archive caps (default `ArchiveLimits.from_env()`).
    store: where arranged datasets go (default `datasets_dir()`); a zip is extracted there once and
        found again by its SHA-256. progress(done, total) while downloading or extracting.

    A dataset with its own val split ignores val_ratio and seed (it is arranged once, not once per split
    asked for); where they differ from the defaults, `.notes` says so.

    Raises:
        DatasetError: no usable dataset (one line saying why); qtl.data.archive.ArchiveError (a DatasetError's
            sibling ValueError): the zip is refused.
    """
    if not 0 < val_ratio < 1:
        raise DatasetError(f"the val ratio must lie strictly between 0 and 1, got {val_ratio}")
    ds = _open(source, val_ratio, seed, download, progress, limits, store)
    if ds.val_ratio is None and (val_ratio, seed) != (DEFAULT_VAL_RATIO, 0):
        ds.notes.append(
            f"the split asked for (val ratio {val_ratio:g}, seed {seed}) does not apply: {ds.source} has its "
            "own val split, used as it is"
        )
    return ds


def _open(source, val_ratio, seed, download, progress, limits, store) -> PreparedDataset:
    """`open_dataset` after its argument check."""
    store = Path(store) if store is not None else datasets_dir()
    if source is None:
        return describe(resolve_dataset(None, download=download, progress=progress), "hymenoptera")
    if not isinstance(source, (str, Path)):
        return _from_zip(source, val_ratio, seed, store, progress, limits)
    path = Path(source).expanduser()
    if is_named(source) and not path.exists():
        return _from_named(str(source), store, download)
    if path.is_file():
        return _from_zip(path, val_ratio, seed, store, progress, limits)
    if not path.is_dir():
        raise DatasetError(f"dataset {path} does not exist; give a folder of class folders or a zip file")
    root = find_root(path)
    manifest = read_manifest(root)
    if manifest is not None:
        return manifest
    try:
        validate_dataset(root)
    except DatasetError:
        return _from_folder(path, val_ratio, seed, store)
    return describe(root, str(path))


def stratified_split(files: dict[str, list], val_ratio: float, seed: int) -> tuple[dict, dict]:
    """Split {class: items} into (train, val) dicts: per class, round(n * val_ratio) items (at least one,
    at most n - 1) go to val, chosen by a permutation seeded with (seed, class position). Deterministic."""
    train, val = {}, {}
    for i, (name, items) in enumerate(sorted(files.items())):
        items = sorted(items)
        if len(items) < 2:
            raise DatasetError(
                f"class {name!r} has {len(items)} image: at least 2 are needed to split train/val"
            )
        order = np.random.default_rng([seed, i]).permutation(len(items))
        n_val = min(len(items) - 1, max(1, round(len(items) * val_ratio)))
        val[name] = sorted(items[j] for j in order[:n_val])
        train[name] = sorted(items[j] for j in order[n_val:])
    return train, val


def describe(root: Path, source: str) -> PreparedDataset:
    """A PreparedDataset for a root already in the canonical layout (counted, not decoded). Entries that are
    not images are listed in `.skipped` as an arranged folder lists them: in a class folder, beside the
    class folders of a split, and beside the splits."""
    root = Path(root)
    classes = validate_dataset(root)
    counts, skipped = {}, stray_entries(root, classes)
    for split in ALL_SPLITS:
        if (root / split).is_dir():
            found = list_images(root, split, classes)
            counts[split] = {c: sum(1 for _, i in found if i == k) for k, c in enumerate(classes)}
            for c in classes:
                for p in (root / split / c).iterdir():
                    if not is_image_file(p):
                        skipped.append((p.relative_to(root).as_posix(), skip_reason(p)))
    return PreparedDataset(root, root.name, source, "splits", classes, counts, sorted(skipped))


def read_manifest(root: Path) -> PreparedDataset | None:
    """The PreparedDataset an arranged folder describes, or None where there is no readable manifest."""
    try:
        d = json.loads((Path(root) / MANIFEST).read_text())
        d["root"], d["skipped"] = Path(root), [tuple(s) for s in d["skipped"]]
        d["counts"] = {s: d["counts"][s] for s in ALL_SPLITS if s in d["counts"]}  # older ones: by name
        d["duplicates"] = _read_duplicates(d.get("duplicates"))
        return PreparedDataset(**d)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read_duplicates(d: dict | None) -> Duplicates | None:
    """A manifest's duplicates; None (not checked) where an older manifest has none or it is unreadable."""
    try:
        return None if d is None else Duplicates.from_dict(d)
    except (TypeError, KeyError, ValueError):
        return None


def list_datasets(store: str | Path | None = None) -> list[PreparedDataset]:
    """The arranged datasets in `store` (default `datasets_dir()`), newest first."""
    store = Path(store) if store is not None else datasets_dir()
    found = [read_manifest(p) for p in store.iterdir() if p.is_dir()] if store.is_dir() else []
    return sorted((d for d in found if d), key=lambda d: d.root.stat().st_mtime, reverse=True)


def delete_dataset(root: str | Path, store: str | Path | None = None) -> None:
    """Remove an arranged dataset from `store` (never anything outside it, never a user's own folder)."""
    store = (Path(store) if store is not None else datasets_dir()).resolve()
    root = Path(root).resolve()
    if root.parent != store or read_manifest(root) is None:
        raise DatasetError(f"{root} is not a dataset qtl arranged in {store}; it was left alone")
    shutil.rmtree(root)


# --- arranging ---------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "dataset"


def split_suffix(val_ratio: float, seed: int) -> str:
    """How a val split made here is named beside its source's name: "" for the default (0.2, seed 0),
    else "-r<ratio>-s<seed>" (arranged folders, rows' dataset names)."""
    return "" if (val_ratio, seed) == (DEFAULT_VAL_RATIO, 0) else f"-r{val_ratio:g}-s{seed}"


def _arrange(source: Path, out: Path, val_ratio: float, seed: int, place, info: dict) -> PreparedDataset:
    """Lay `source`'s images out under `out` as train/val(/test)/<class>/, with `place(src, dst)`."""
    try:
        layout, found, skipped = scan(source)
    except DatasetError as exc:  # a class with no readable image, named inside the source
        raise DatasetError(f"{info['source']}: {exc}") from None
    classes = sorted(found["train"])
    if len(classes) < MIN_CLASSES:  # what was skipped says what to move (nested folders, a second top)
        shown = "; ".join(f"{name} ({why})" for name, why in skipped[:3]) + (
            "; ..." if len(skipped) > 3 else ""
        )
        raise DatasetError(
            f"{info['source']} needs at least {MIN_CLASSES} class folders with images, found {len(classes)}"
            + (f" ({classes[0]})" if classes else "")
            + (f"; skipped {shown}" if skipped else "")
            + ": images go directly in <class>/ folders, or in train/<class>/ and val/<class>/"
        )
    if layout == "classes" or "val" not in found:
        found["train"], found["val"] = stratified_split(found["train"], val_ratio, seed)
        ratio, split_seed = val_ratio, seed
    else:
        ratio, split_seed = None, None
    counts = {}
    for split in (s for s in ALL_SPLITS if s in found):  # train, val, test (scan finds them by name)
        by_class = found[split]
        missing = sorted(set(classes) - set(by_class))
        if missing:
            raise DatasetError(f"{info['source']}: {split}/ has no images of class(es) {', '.join(missing)}")
        for name, files in by_class.items():
            if name not in classes:
                skipped.append((f"{split}/{name}/", "class not in train/"))
                continue
            (out / split / name).mkdir(parents=True)
            for f in files:
                place(f, out / split / name / f.name)
        counts[split] = {c: len(by_class.get(c, [])) for c in classes}
    ds = PreparedDataset(
        out,
        info["name"],
        info["source"],
        layout,
        classes,
        counts,
        skipped,
        ratio,
        split_seed,
        info.get("sha256"),
    )
    validate_dataset(out)  # the same checks as any dataset (every class in every split)
    return ds


def _arranged_name(base: Path, ds: PreparedDataset) -> Path:
    """Where an arranged dataset goes: `base` (its source's name and key), + `split_suffix` where val was
    split off here; a dataset with its own val split has one arrangement, whatever split was asked for."""
    return base if ds.val_ratio is None else base.with_name(base.name + split_suffix(ds.val_ratio, ds.seed))


def _find_arranged(base: Path, val_ratio: float, seed: int) -> PreparedDataset | None:
    """The dataset arranged from `base`'s source for this split: the one at `base` where it has its own val
    split (the split asked for does not apply), else the one split off with `val_ratio` and `seed`."""
    for place in (base, base.with_name(base.name + split_suffix(val_ratio, seed))):
        found = read_manifest(place)
        if found is not None and (found.val_ratio, found.seed) in ((None, None), (val_ratio, seed)):
            return found
    return None


def _publish(ds: PreparedDataset, tmp: Path, final: Path) -> PreparedDataset:
    """Find the duplicates, write the manifest and rename the arranged folder into place (another process
    may have won)."""
    ds.duplicates = find_duplicates(tmp, ds.classes)
    d = asdict(ds)
    del d["root"], d["notes"]
    (tmp / MANIFEST).write_text(json.dumps(d, indent=1))
    try:
        os.replace(tmp, final)
    except OSError:
        if read_manifest(final) is None:
            raise
    return read_manifest(final)


def _sha256(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(1 << 20):
        digest.update(chunk)
    f.seek(0)
    return digest.hexdigest()


def _from_zip(archive, val_ratio, seed, store: Path, progress, limits) -> PreparedDataset:
    label = Path(str(archive if isinstance(archive, (str, Path)) else getattr(archive, "name", "upload.zip")))
    with open(archive, "rb") if isinstance(archive, Path) else _keep_open(archive) as f:
        sha = _sha256(f)
        base = store / f"{_slug(label.stem)}-{sha[:12]}"
        if (found := _find_arranged(base, val_ratio, seed)) is not None:
            return found
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=store, prefix=".arranging-") as tmp:
            raw = safe_extract(f, Path(tmp) / "raw", limits, progress=progress)
            info = {"name": label.stem, "source": label.name, "sha256": sha}
            ds = _arrange(raw, Path(tmp) / "out", val_ratio, seed, os.replace, info)
            return _publish(ds, Path(tmp) / "out", _arranged_name(base, ds))


class _keep_open:
    """A context manager over an already open file that leaves it open (the caller owns it)."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self.f

    def __exit__(self, *exc) -> None:
        return None


def _from_named(name: str, store: Path, download: bool) -> PreparedDataset:
    """Write a named dataset's images (`qtl.data.sources.named_images`) as PNG class folders under `store`,
    once; later calls find the folder by name."""
    caps = f"-{TORCHVISION_TRAIN}-{TORCHVISION_TEST}" if name.startswith(TORCHVISION_PREFIX) else ""
    final = store / f"{_slug(name)}{caps}"
    if (found := read_manifest(final)) is not None:
        return found
    classes, splits = named_images(name, download=download)
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store, prefix=".arranging-") as tmp:
        out = Path(tmp) / "out"
        for split, items in splits.items():
            for c in classes:
                (out / split / c).mkdir(parents=True)
            for i, (image, k) in enumerate(items):
                image.save(out / split / classes[k] / f"{i:05d}.png")
        ds = describe(out, name)
        ds.name = name
        return _publish(ds, out, final)


def _from_folder(path: Path, val_ratio, seed, store: Path) -> PreparedDataset:
    """Arrange a non-canonical folder as symlinks under `store`, keyed by its path and file listing."""
    path = path.resolve()
    base = store / f"{_slug(path.name)}-{_listing_digest(path)[:12]}"
    if (found := _find_arranged(base, val_ratio, seed)) is not None:
        return found
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store, prefix=".arranging-") as tmp:
        info = {"name": path.name, "source": str(path)}
        ds = _arrange(path, Path(tmp) / "out", val_ratio, seed, lambda s, d: os.symlink(s.resolve(), d), info)
        return _publish(ds, Path(tmp) / "out", _arranged_name(base, ds))


def _listing_digest(path: Path) -> str:
    """SHA-256 over `path` and every entry below it (relative name, size, mtime), links to folders
    followed as the arrangement follows them, each folder read once (a link loop ends there); a link's
    size and mtime are its target's, so an image added, removed or rewritten behind a link changes it."""
    digest = hashlib.sha256(str(path).encode())
    seen: set[Path] = set()

    def walk(folder: Path) -> None:
        if (real := folder.resolve()) in seen:
            return
        seen.add(real)
        try:
            entries = sorted(folder.iterdir())
        except OSError:  # unreadable: the arrangement cannot read it either
            return
        for p in entries:
            try:
                st = p.stat()
            except OSError:  # a broken link
                st = p.lstat()
            digest.update(f"\n{p.relative_to(path)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
            if stat.S_ISDIR(st.st_mode):
                walk(p)

    walk(path)
    return digest.hexdigest()
