"""The five transfer-learning variants as models: `Classifier`, `build_head` and `build_model`.

| variant             | backbone  | head                                  |
|---------------------|-----------|---------------------------------------|
| `quantum`           | frozen    | dressed quantum circuit (the paper)   |
| `finetuned`         | trainable | Linear(F, C)                          |
| `linear`            | frozen    | Linear(F, C)                          |
| `hybrid`            | trainable | dressed quantum circuit               |
| `dressed-classical` | frozen    | dressed sandwich, classical middle    |
| `quantum-kernel`    | frozen    | SVM with the circuit's fidelity kernel|
| `rbf-svm`           | frozen    | SVM with an RBF kernel, same inputs   |

Every model is a `Classifier`: a backbone mapping images (B, 3, H, W) to features (B, F), and a head
mapping features (B, F) to logits (B, C). Frozen variants train only the head, on cached features.
A `feature_dim` puts the training features' principal components in front of a frozen head
(`qtl.models.heads.Projected`). The kernel baselines are fitted, not trained (`qtl.models.kernels`).
Their names, `ModelConfig` and recipes live in the torch-free `qtl.config`.
"""

from __future__ import annotations

import torch
from torch import nn

from qtl.config import ModelConfig
from qtl.models.backbones import feature_width, load_backbone
from qtl.models.heads import DressedClassical, DressedQuantumCircuit, Projected
from qtl.models.kernels import KernelSVM


class Classifier(nn.Module):
    """A backbone (B, 3, H, W) -> (B, F) followed by a head (B, F) -> (B, C) logits.

    When `frozen`, the backbone's parameters do not require grad and it stays in eval mode even when
    the classifier is put in train mode (batch-norm statistics never move), so cached features stay valid.
    A frozen backbone may be the process's shared one (`qtl.models.backbones.shared_backbone`): the
    classifier then never writes to it, not even its mode, and `.to()` converts the head alone.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, in_features: int, *, frozen: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_features = in_features
        self.frozen = frozen
        if frozen:
            if any(p.requires_grad for p in backbone.parameters()):
                backbone.requires_grad_(False)
            if backbone.training:
                backbone.eval()

    def train(self, mode: bool = True) -> Classifier:
        """Train (or eval) mode for the head and a trainable backbone; a frozen backbone stays in eval
        mode, untouched when it already is (another thread may be running it)."""
        if not self.frozen:
            return super().train(mode)
        self.training = mode
        self.head.train(mode)
        if self.backbone.training:
            self.backbone.eval()
        return self

    def _apply(self, fn, recurse: bool = True):
        """What `.to()`, `.float()` and the like run: a shared backbone is never converted (other models
        and threads use it), only the head, which must then sit on the backbone's device and keep its
        dtype (ValueError, before anything is converted, for `.double()`, `.half()`, `.to(dtype)`)."""
        from qtl.models.backbones import is_shared

        if not (recurse and is_shared(self.backbone)):
            return super()._apply(fn, recurse)
        weight = next(self.backbone.parameters())
        converted = fn(torch.empty(0, dtype=weight.dtype, device=next(self.head.parameters(), weight).device))
        if converted.dtype != weight.dtype:
            raise ValueError(
                f"this model's backbone is the shared one, in {weight.dtype}, which is never converted: "
                f"its head cannot run in {converted.dtype} on its features. Convert the head alone "
                "(model.head.to(dtype)) and give it features of that dtype, or build the model on a "
                "private backbone (build_model(config, backbone=load_backbone(...)))"
            )
        self.head._apply(fn)
        where = {p.device for p in self.parameters()}
        if len(where) > 1:
            raise ValueError(
                f"this model's backbone is the shared one on {next(self.backbone.parameters()).device}: "
                "load the checkpoint with device= the device you want instead of moving the model"
            )
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, F) features; no autograd graph when frozen."""
        if self.frozen:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, C) logits: the head alone."""
        return self.head(features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C) logits."""
        return self.head(self.features(images))


def build_head(model_config: ModelConfig, in_features: int) -> nn.Module:
    """A freshly initialised head for the variant, (B, in_features) -> (B, n_classes); with a
    `feature_dim`, behind a (not yet fitted) projection to that width."""
    c = model_config
    if c.feature_dim is not None:
        if refusal := feature_dim_refusal(c.feature_dim, c.backbone, in_features):
            raise ValueError(refusal)
        return Projected(in_features, c.feature_dim, _head(c, c.feature_dim))
    return _head(c, in_features)


def check_feature_dim(mc: ModelConfig) -> None:
    """ValueError where `mc.feature_dim` is wider than its backbone's features (`feature_dim_refusal`,
    the width from the architecture alone), so `fit` and `qtl train` refuse it before the dataset opens
    (it may download) or the backbone loads (offline, resnet18's refusal read as its missing weights)."""
    if mc.feature_dim is not None and (refusal := feature_dim_refusal(mc.feature_dim, mc.backbone)):
        raise ValueError(refusal)


def feature_dim_refusal(
    feature_dim: int, backbone: str, width: int | None = None, every: str = "none"
) -> str | None:
    """Why `feature_dim` cannot take `backbone`'s `width` features (its principal components beyond the
    features' own would be zeros), saying that `every` (none, or a spec's "all") takes them all; None
    where it fits. Without `width`, the backbone's from its architecture alone (`feature_width`: no
    weights read; ValueError for an unknown name, and None, nothing refused, where timm cannot build it)."""
    width = feature_width(backbone) if width is None else width
    if width is None or feature_dim <= width:
        return None
    return (
        f"feature_dim {feature_dim} is wider than the {width} features of {backbone}: give at most {width}, "
        f"or {every} for all of them"
    )


def _head(model_config: ModelConfig, in_features: int) -> nn.Module:
    c, n = model_config, model_config.n_classes
    if c.is_kernel:
        return KernelSVM(in_features, n, c.variant, c.circuit)
    if c.is_quantum:
        return DressedQuantumCircuit(in_features, n, c.circuit, c.engine, c.q_delta, **c.engine_options())
    if c.variant == "dressed-classical":
        return DressedClassical(in_features, n, width=c.circuit.n_qubits)
    return nn.Linear(in_features, n)


def build_model(
    model_config: ModelConfig, *, backbone: tuple[nn.Module, int] | None = None, allow_download: bool = True
) -> Classifier:
    """A fresh `Classifier` for `model_config`: the backbone (ImageNet or random init) plus a new head.

    backbone: an already loaded `(module, F)` pair to use instead of loading one (its weights are kept).
    allow_download: passed to `load_backbone`; False fails fast when ImageNet weights are not cached.
    The head's initial weights come from torch's global RNG: seed it first for a reproducible model.
    """
    if model_config.n_classes < 2:
        raise ValueError(
            "model_config.class_names is empty: set it (or let fit() take the dataset's classes)"
        )
    if backbone is None:
        backbone = load_backbone(
            model_config.backbone, model_config.pretrained, allow_download=allow_download
        )
    module, in_features = backbone
    head = build_head(model_config, in_features)
    return Classifier(module, head, in_features, frozen=model_config.frozen)
