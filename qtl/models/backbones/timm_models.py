"""Any timm model as a backbone, by name: `timm/<model>` or `timm/<model>.<tag>` (e.g. `timm/convnext_atto`,
`timm/vit_tiny_patch16_224`, `timm/mobilenetv3_small_100.lamb_in1k`).

The model is built with `num_classes=0`, so it returns pooled features and `model.num_features` is F. The
weights' pretrained config (input size, interpolation, crop, mean/std) is the input pipeline, as timm's
`resolve_data_config` + `create_transform` give it. Pretrained weights come from, in order:

1. a local file `$TORCH_HOME/hub/checkpoints/timm/<model>.safetensors` (or `.pth`), passed to timm as
   `pretrained_cfg_overlay=dict(file=...)`: the way to use them offline;
2. timm's own loading (the Hugging Face hub) when downloads are allowed and huggingface.co answers.

Otherwise `WeightsUnavailableError` names the file to provide, in one line.
"""

from __future__ import annotations

from torch import nn

from qtl.models.backbones.common import (
    RANDOM,
    WeightsStatus,
    WeightsUnavailableError,
    meta_build,
    one_line,
    seeded_build,
    timm_params,
)
from qtl.models.weights import TIMM_HUB as HUB
from qtl.models.weights import timm_model_name, timm_pretrained_cfg
from qtl.models.weights import timm_weights_status as weights_status
from qtl.utils.download import OFFLINE_ENV, Progress, offline, reachable

# timm (about a second to import) is imported only when a timm backbone is asked for; where its weights
# live (the files, the hub) is `qtl.models.weights`'s business.


def weights_id(name: str, pretrained: bool) -> str:
    """`<architecture>.<tag>` of the pretrained weights (e.g. "convnext_atto.d2_in1k"), or "random"."""
    return timm_model_name(name) if pretrained else RANDOM


def _unavailable(status: WeightsStatus, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for {status.name} are not available ({reason}): put {status.filename} "
        f"(from {status.url}) in {status.path.parent}, or use the bundled pretrained efficientnet_lite0 "
        "(CLI --backbone efficientnet_lite0) or random init (pretrained=False, CLI --random-init)"
    )


def load(
    name: str, pretrained: bool, allow_download: bool, progress: Progress | None, timeout: float
) -> tuple[nn.Module, int]:
    """(model returning (B, F) pooled features, F); see `qtl.models.backbones.load_backbone`."""
    import timm

    model_name = timm_model_name(name)
    if not pretrained:
        model = seeded_build(name, lambda: timm.create_model(model_name, pretrained=False, num_classes=0))
        return model, model.num_features
    status = weights_status(name)
    if status.cached:
        options = {"pretrained_cfg_overlay": {"file": str(status.path)}}
    elif not allow_download:
        raise _unavailable(status, "no local file and downloads are disabled")
    elif offline():
        raise _unavailable(status, f"no local file and {OFFLINE_ENV} is set")
    elif not reachable(HUB, timeout):
        raise _unavailable(status, "no local file and huggingface.co cannot be reached")
    else:
        options = {}
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=0, **options)
    except Exception as exc:
        where = status.path if status.cached else status.url
        raise WeightsUnavailableError(
            f"cannot use the weights for {name} from {where} ({one_line(exc)}); replace the file, or use "
            "the bundled pretrained efficientnet_lite0 or random init (pretrained=False, CLI --random-init)"
        ) from exc
    return model, model.num_features


def feature_width(name: str) -> int:
    """F (`model.num_features`, what `load` returns) from the architecture alone (`meta_build`: no
    weights, no download); RuntimeError where timm has no such model."""
    import timm

    model_name = timm_model_name(name)
    return meta_build(lambda: timm.create_model(model_name, pretrained=False, num_classes=0)).num_features


def transform_params(name: str, pretrained: bool) -> dict:
    """The eval pipeline of the weights' pretrained config (timm's resolve_data_config); random init uses
    the same one, the architecture's."""
    import timm.data

    return timm_params(timm.data.resolve_data_config(pretrained_cfg=timm_pretrained_cfg(name)))
