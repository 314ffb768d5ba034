"""What every backbone source shares: the weights error, where weights live (`qtl.models.weights`, which
knows it without torch), seeded random init and the image transform built from a backbone's recorded
preprocessing parameters.

    transform_from_params(params, augment) -> PIL RGB image -> (3, crop, crop) float tensor
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import torch
from torch import nn
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from qtl.models.weights import WeightsStatus, checkpoints_dir  # noqa: F401  (the sources' one place)

RANDOM = "random"  # the weights id of a random-init backbone
RANDOM_INIT_SEED = 0  # random-init weights come from this seed
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable right now, or do not fit the model."""


def seeded_build(key: str, build: Callable[[], nn.Module], *, pretrained: bool = False) -> nn.Module:
    """`build()` with the random-init weights drawn from RANDOM_INIT_SEED, so the weights id "random"
    names one backbone per `key`: cached features and head-only checkpoints stay valid across runs. The
    global RNG is left as it was.

    Threads share torch's global RNG, so two seeded draws at once (two app sessions loading checkpoints,
    or one loading while a job trains) would interleave and each get other weights. The draw is made
    once per process and key, under a lock; later builds copy its weights in. pretrained=True: the
    caller replaces every weight with ImageNet's, so the draw is neither seeded nor kept.
    """
    if pretrained:
        with torch.random.fork_rng(devices=[]):
            return build()
    with _RANDOM_LOCK, torch.random.fork_rng(devices=[]):
        if key not in _RANDOM_STATES:
            torch.manual_seed(RANDOM_INIT_SEED)
            model = build()
            _RANDOM_STATES[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return model
        model = build()
    model.load_state_dict(_RANDOM_STATES[key])
    return model


_RANDOM_STATES: dict[str, dict[str, torch.Tensor]] = {}  # key -> the seeded random-init weights
_RANDOM_LOCK = threading.Lock()


def meta_build(build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` on torch's meta device: the architecture with shapes and no data (no weights read, no
    memory for them, no download; initialising meta tensors draws no random numbers, so no generator
    moves, and the device is this thread's alone), to read a backbone's feature width fast."""
    with torch.device("meta"):
        return build()


def imagenet_params() -> dict:
    """The standard ImageNet eval preprocessing: Resize(256) / CenterCrop(224), bilinear, ImageNet stats."""
    return {
        "resize": 256,
        "crop": IMAGE_SIZE,
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }


def timm_params(data_config: dict) -> dict:
    """Our params from a timm data config (input_size, crop_pct, interpolation, mean, std): the same
    pipeline as timm's eval `create_transform` (Resize(floor(size / crop_pct)) + CenterCrop(size))."""
    if data_config.get("crop_mode", "center") != "center":
        raise ValueError(f"crop mode {data_config['crop_mode']!r} is not supported (only center crops)")
    size = int(data_config["input_size"][-1])
    return {
        "resize": math.floor(size / data_config["crop_pct"]),
        "crop": size,
        "interpolation": data_config["interpolation"],
        "mean": tuple(data_config["mean"]),
        "std": tuple(data_config["std"]),
    }


def check_params(params: dict) -> dict:
    """`params` as a plain dict of resize, crop, interpolation, mean and std; ValueError if malformed."""
    try:
        out = {
            "resize": int(params["resize"]),
            "crop": int(params["crop"]),
            "interpolation": str(InterpolationMode(params["interpolation"]).value),
            "mean": tuple(float(v) for v in params["mean"]),
            "std": tuple(float(v) for v in params["std"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed transform parameters {params!r}: {exc}") from None
    if len(out["mean"]) != 3 or len(out["std"]) != 3:
        raise ValueError(f"transform mean and std need 3 channels, got {params!r}")
    return out


def transform_from_params(params: dict, augment: bool = False) -> Callable:
    """PIL RGB image -> (3, crop, crop) float tensor.

    Eval: Resize(resize, interpolation) on the short side, CenterCrop(crop), ToTensor, Normalize(mean, std)
    (the same tensors as torchvision's weights presets and timm's eval `create_transform`). augment=True:
    the PyTorch transfer-learning tutorial's RandomResizedCrop(crop) + horizontal flip, same normalisation.
    """
    p = check_params(params)
    normalize = transforms.Normalize(p["mean"], p["std"])
    if augment:
        steps = [transforms.RandomResizedCrop(p["crop"]), transforms.RandomHorizontalFlip()]
    else:
        steps = [
            transforms.Resize(p["resize"], interpolation=InterpolationMode(p["interpolation"])),
            transforms.CenterCrop(p["crop"]),
        ]
    return transforms.Compose([*steps, transforms.ToTensor(), normalize])


def params_key(params: dict, augment: bool = False) -> str:
    """A stable string naming `transform_from_params(params, augment)`, for cache keys."""
    p = check_params(params)
    norm = f"mean={','.join(f'{v:g}' for v in p['mean'])};std={','.join(f'{v:g}' for v in p['std'])}"
    if augment:
        return f"augment:rrc{p['crop']}+hflip;{norm}"
    return f"eval:resize{p['resize']}-{p['interpolation']}+crop{p['crop']};{norm}"


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
