"""Classify images with an ONNX file written by `qtl export`, using only onnxruntime, numpy and Pillow.

    python standalone.py quantum.onnx bee.jpg ant.png     # one JSON line per image: label, probabilities

A model or image it cannot use (no such file, a checkpoint or TorchScript file instead of ONNX, an ONNX
file without qtl's metadata, an image that does not decode) is one line on stderr naming the file, exit
status 1 (2: no model or image given).

This file imports nothing from qtl (nor torch, nor PennyLane): copy it beside an exported model to run
the model anywhere onnxruntime installs. The preprocessing is the one the file's metadata records,
computed as torchvision computes it on PIL images, so the pixels, and the probabilities, are qtl's.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

METADATA_KEY = "qtl"
# a corrupt EXIF block is read as no tag (`load`): Pillow's two-line warning of it is left unsaid, as in qtl
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
#: An image with one side over this many times the other is refused before decoding: resizing its short
#: side would blow it up (a 16,000 x 1 strip at 256 is 4,096,000 x 256). qtl's MAX_ASPECT: keep in step.
MAX_ASPECT = 100
#: torchvision's interpolation names -> Pillow's resampling filters (torchvision's own mapping)
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


NEEDED = ("class_names", "preprocessing", "input", "output")
"""The metadata keys this script reads (qtl's `check_metadata` checks more)."""
#: The first bytes of files that are plainly no ONNX model: a zip (a qtl checkpoint, a TorchScript
#: file) or a pickle (an older torch file): said so, not as onnxruntime's protobuf parse error.
NOT_ONNX = {b"PK\x03\x04": "a zip archive", b"\x80": "a pickle"}


def metadata(session, name: str = "the model") -> dict:
    """The qtl document an exported file carries: class_names, preprocessing, input and output names...
    ValueError, one line naming the file `name`, for an ONNX file that has none (not written by qtl
    export) or a damaged or incomplete one."""
    document = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if not document:
        raise ValueError(f"{name} is an ONNX file not written by qtl export (no '{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(document)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"{name} has damaged '{METADATA_KEY}' metadata (not a JSON object)")
    if missing := [key for key in NEEDED if key not in meta]:
        raise ValueError(f"{name} has incomplete '{METADATA_KEY}' metadata: no {', '.join(missing)}")
    return meta


def open_model(path: str):
    """An onnxruntime session on the exported file `path` and its metadata; ValueError, one line naming
    the file, where there is no such file, it is no ONNX model (a checkpoint, a TorchScript file: said by
    its first bytes), onnxruntime cannot load it, or it carries no qtl metadata (`metadata`)."""
    import onnxruntime

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not an ONNX file") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from None
    for magic, what in NOT_ONNX.items():
        if head.startswith(magic):
            raise ValueError(
                f"{path} is not an ONNX file but {what} (a qtl checkpoint or a TorchScript file?): this "
                "script runs the .onnx files `qtl export` writes"
            )
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own types (InvalidProtobuf, Fail, NoSuchFile ...)
        said = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{path} cannot be opened as an ONNX model: {said}") from None
    return session, metadata(session, path)


def shape_refusal(width: int, height: int) -> str | None:
    """Why an image of `width` x `height` is refused, or None (`qtl.data.images.shape_refusal`'s copy)."""
    if width < 1 or height < 1:
        return f"has no pixels ({width} x {height})"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (
            f"is {width:,} x {height:,} pixels, one side over {MAX_ASPECT} times the other: resizing its "
            "short side for a model would blow it up"
        )
    return None


def load(path: str) -> Image.Image:
    """The image file at `path` as RGB, turned by its EXIF orientation as qtl turns it; ValueError, one
    line naming the file, for no such file, no image, a shape `shape_refusal` refuses (checked before
    its pixels are decoded) or pixels that do not decode (truncated, corrupt)."""
    try:
        with Image.open(path) as image:
            if reason := shape_refusal(*image.size):
                raise ValueError(f"{path} {reason}")
            image.load()
            if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):  # `qtl...upright`
                return rgb(ImageOps.exif_transpose(image))
            return rgb(image).copy()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image Pillow reads") from None
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:  # truncated, corrupt, huge
        said = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{path} cannot be decoded: {said}") from None


def rgb(image: Image.Image) -> Image.Image:
    """`image` as RGB, as qtl decodes it (a copy of `qtl.data.images.to_rgb`: keep them in step): palette
    images with transparency go through RGBA; 16-bit grayscale ("I;16*", "I") keeps its top 8 bits (a
    32-bit "I" image of values 0..255 keeps them),
    float ("F") is 0..1 scaled to 0..255 when no value exceeds 1, else 0..255, clipped."""
    if image.mode.startswith("I") or image.mode == "F":
        pixels = np.asarray(image)
        if image.mode == "F":
            pixels = np.nan_to_num(pixels.astype(np.float64))
            scale = 255.0 if pixels.size and pixels.max() <= 1.0 else 1.0
            pixels = np.clip(np.rint(pixels * scale), 0, 255)
        else:
            pixels = pixels.astype(np.int64)
            if not (image.mode == "I" and pixels.size and 0 <= pixels.min() and pixels.max() <= 255):
                pixels = np.clip(pixels, 0, 65535) >> 8  # 16-bit levels; a 32-bit image of 0..255 kept
        image = Image.fromarray(pixels.astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(image: Image.Image, params: dict) -> np.ndarray:
    """RGB PIL image -> (3, crop, crop) float32: resize the short side, centre-crop, scale, normalise.
    ValueError for an image `shape_refusal` refuses."""
    width, height = image.size
    if reason := shape_refusal(width, height):
        raise ValueError(f"the image {reason}")
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = params["resize"], int(params["resize"] * long / short)
    size = (new_short, new_long) if width <= height else (new_long, new_short)  # (width, height)
    if size != image.size:
        image = image.resize(size, RESAMPLING[params["interpolation"]])
    crop = params["crop"]
    if min(image.size) < crop:
        raise ValueError(f"resize {params['resize']} is smaller than the crop {crop}")
    top = int(round((image.size[1] - crop) / 2.0))
    left = int(round((image.size[0] - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)  # (crop, crop, 3)
    mean = np.asarray(params["mean"], dtype=np.float32)
    std = np.asarray(params["std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


def classify(session, images: list[Image.Image], meta: dict | None = None) -> list[dict]:
    """One {"label", "probabilities": {class: p}} per image, from one run of the session (`meta`: its
    metadata, where read already)."""
    meta = meta or metadata(session)
    batch = np.stack([preprocess(rgb(im), meta["preprocessing"]) for im in images])
    (probs,) = session.run([meta["output"]["name"]], {meta["input"]["name"]: batch})
    names = meta["class_names"]
    return [
        {"label": names[int(row.argmax())], "probabilities": dict(zip(names, map(float, row), strict=True))}
        for row in probs
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python standalone.py MODEL.onnx IMAGE [IMAGE ...]", file=sys.stderr)
        return 2
    try:  # every image before the model: a bad one is one line, without a model's load time
        images = [load(path) for path in args[1:]]
        session, meta = open_model(args[0])
        answers = classify(session, images, meta)
    except ValueError as exc:  # each names its file: no file, no image, a refused shape, no qtl model
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for path, answer in zip(args[1:], answers, strict=True):
        print(json.dumps({"image": path, **answer}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
