"""Decoding images: one RGB loader for files, bytes and uploads, and a robust image-folder dataset.

`load_image` decodes anything qtl is handed; `ImageFolderDataset` decodes every file of a split once
when built, reports bad ones once and skips them, so training never stops on a broken image. Both can
decode a JPEG at reduced scale (`draft`) when the pixels are to be shrunk anyway.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from qtl.data.folders import ALL_SPLITS, DatasetError, list_images, validate_dataset

log = logging.getLogger(__name__)
# A camera's corrupt EXIF block is read as no tag (`upright`), and Pillow said so in a two-line warning
# on stderr from every command that opened such a photo: this one message, nothing else, is left unsaid,
# process-wide from this import (a `catch_warnings` around each open would not be thread-safe).
CORRUPT_EXIF = "Corrupt EXIF data"
warnings.filterwarnings("ignore", message=CORRUPT_EXIF, category=UserWarning)


#: The most times an image's long side may be its short side. A model's eval transform resizes the
#: short side to its `resize` (256 pixels for most backbones), so a 16,000 x 1 strip (a PNG of 129 bytes)
#: would become 4,096,000 x 256 pixels (gigabytes) and 20,000,000 x 1 overflows; at 100:1 the resized
#: image is at most 100 x 256 x 256 = 6.6 million pixels. No photo is that thin.
MAX_ASPECT = 100


class ImageLoadError(ValueError):
    """An image file or upload cannot be decoded."""


def shape_refusal(width: int, height: int) -> str | None:
    """Why an image of `width` x `height` pixels is refused before its pixels are decoded (it has none, or
    its sides are further apart than MAX_ASPECT:1), else None. Shared by `load_image`, the training
    loader and the server (`qtl.deploy.limits.decode_upload`); `qtl.deploy.standalone` keeps a copy."""
    if width < 1 or height < 1:
        return f"has no pixels ({width} x {height})"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"is {width:,} x {height:,} pixels, one side over {MAX_ASPECT} times the other: resizing its "
            "short side for a model would blow it up"
        )
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as RGB, its intensities kept (the one conversion of the loader, the training data and the
    server's uploads; `qtl.deploy.standalone.rgb` is a copy: keep them in step).

    A palette with transparency goes through RGBA. 16-bit grayscale ("I;16", "I;16B" ...) keeps its top
    8 bits (level >> 8), where Pillow's own conversion clips at 255 and a photo turns white; 32-bit
    integer ("I") is read the same way, as 16-bit levels (what integer image files hold), values
    outside 0..65535 clipped, unless no value exceeds 255 (8-bit levels in a 32-bit image, e.g. an int
    array's Image.fromarray), which are kept. Float ("F") is taken as 0..1 and scaled by 255 when no
    value exceeds 1, else as 0..255 levels; clipped to 0..255 either way."""
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_8bit(np.asarray(image), image.mode))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """`image` turned the way its EXIF orientation tag says, the tag dropped; `image` itself when it has no
    such tag. Cameras and phones store a portrait photo sideways with this tag, and every viewer and
    browser applies it, so a model that ignored it would classify a photo lying on its side.
    `load_image` (files, bytes, uploads, the training data) and `qtl.analysis.inference.as_images`
    (PIL images) apply it, as does the server (`qtl.deploy.limits`) and `qtl.deploy.standalone`'s copy;
    an image already turned by `ImageOps.exif_transpose` has no tag left and is not turned twice."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):  # a corrupt block: no tag
        return ImageOps.exif_transpose(image)
    return image


def _to_8bit(pixels: np.ndarray, mode: str) -> np.ndarray:
    """The uint8 gray levels of one-channel 16-bit, 32-bit integer or float pixels (see `to_rgb`)."""
    if mode == "F":
        pixels = np.nan_to_num(pixels.astype(np.float64))
        scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0
        return np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    pixels = pixels.astype(np.int64)
    if mode == "I" and pixels.size and 0 <= pixels.min() and pixels.max() <= 255:  # 8-bit levels
        return pixels.astype(np.uint8)
    return (np.clip(pixels, 0, 65535) >> 8).astype(np.uint8)


def load_image(source: str | Path | bytes | BinaryIO, draft: int | None = None) -> Image.Image:
    """Decode an image from a path, raw bytes or a binary file-like object into an RGB PIL image, turned
    upright by its EXIF orientation (`upright`).

    draft: a JPEG is decoded at the smallest of libjpeg's scales (1, 1/2, 1/4, 1/8) that keeps both of
    its sides at least `draft` pixels (PIL's `Image.draft`: the DCT is scaled, most of the decoding is
    skipped); other formats, and None, decode at full size.

    Raises:
        ImageLoadError: the input is missing, not a decodable image, or of a shape `shape_refusal` refuses
            (checked before the pixels are decoded); the message names it.
    """
    label = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "uploaded image")
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(stream) as image:
            if reason := shape_refusal(*image.size):
                raise ImageLoadError(f"{label} {reason}")
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", (draft, draft))
            image.load()
            return to_rgb(upright(image))
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(f"no such image file: {label}") from exc
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode {label}: {exc}") from exc


def check_image(path: Path) -> str | None:
    """None when `path` decodes fully, else the reason it does not, or why its shape is refused
    (`shape_refusal`; JPEGs decode at reduced scale)."""
    try:
        if path.stat().st_size == 0:
            return "an empty file (0 bytes)"
        with Image.open(path) as image:
            if reason := shape_refusal(*image.size):
                return f"the image {reason}"
            image.draft("RGB", (64, 64))
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc) or type(exc).__name__
    return None


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder-style dataset; items are (image, class index).

    Every file is decoded once at construction; files that fail are logged once (path and reason),
    listed in `.skipped` and left out of `.samples`; a class left with no image in the split is refused
    (DatasetError), as `validate_dataset` refuses a class folder with no image file. If a file breaks
    later, __getitem__ logs it and returns the next good sample, so a training run never stops on a bad
    image.

    Attributes:
        classes: sorted class names, shared by both splits.
        samples: list of (path, class index) of the decodable images.
        targets: the class index of each sample.
        skipped: list of (path, reason) of the files left out.
        draft: passed to `load_image` for every item (None: full size).
    """

    def __init__(
        self, root: str | Path, split: str, transform=None, *, verify: bool = True, draft: int | None = None
    ) -> None:
        if split not in ALL_SPLITS:
            raise ValueError(f"split must be one of {ALL_SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.transform, self.draft = transform, draft
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
        self.targets = [t for _, t in self.samples]
        present = set(self.targets)
        for k, name in enumerate(self.classes):  # a class with none would train or score with 0 images
            if k not in present:
                bad = [(p, why) for p, why in self.skipped if p.parent.name == name]
                files = ", ".join(p.name for p, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
                why = f": {bad[0][1].replace(str(bad[0][0]), bad[0][0].name)}" if bad else ""
                # where the files are: an arranged copy links to the user's own (its folder is qtl's)
                folder = bad[0][0].resolve().parent if bad else self.root / split / name
                raise DatasetError(
                    f"{split}/{name} has no readable image ({len(bad)} unreadable: {files}{why}) in "
                    f"{folder}: replace or remove them, or add a readable image"
                )

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
                image = load_image(path, self.draft)
            except ImageLoadError as exc:
                if all(p != path for p, _ in self.skipped):
                    self._skip(path, str(exc))
                continue
            return (self.transform(image) if self.transform is not None else image), target
        raise ImageLoadError(f"no image in {self.root / self.split} can be decoded any more")
