"""The five transfer-learning variants: names, recipes, `ModelConfig` and `build_model`.

| variant             | backbone  | head                                  |
|---------------------|-----------|---------------------------------------|
| `quantum`           | frozen    | dressed quantum circuit (the paper)   |
| `finetuned`         | trainable | Linear(F, C)                          |
| `linear`            | frozen    | Linear(F, C)                          |
| `hybrid`            | trainable | dressed quantum circuit               |
| `dressed-classical` | frozen    | dressed sandwich, classical middle    |

Every model is a `Classifier`: a backbone mapping images (B, 3, H, W) to features (B, F), and a head
mapping features (B, F) to logits (B, C). Frozen variants train only the head, on cached features.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import torch
from torch import nn

from qtl.circuit import CircuitConfig
from qtl.heads import DressedClassical, DressedQuantumCircuit
from qtl.names import DEFAULT_VARIANT, FROZEN_VARIANTS, QUANTUM_VARIANTS, VARIANTS
from qtl.noise import NoiseConfig

if TYPE_CHECKING:
    from qtl.train import TrainConfig


def check_variant(variant: str) -> str:
    """Return `variant` if it is known, else raise ValueError listing the choices."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return variant


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (not its weights)."""

    variant: str = DEFAULT_VARIANT  # one of VARIANTS
    backbone: str = "resnet18"  # a name in qtl.backbones.BACKBONES
    pretrained: bool = True  # ImageNet weights; False gives a seeded random-init backbone
    class_names: tuple[str, ...] = ()  # output classes in label order; empty: fit() takes the dataset's
    circuit: CircuitConfig = field(default_factory=CircuitConfig)  # the circuit; also the classical width
    engine: str = "native"  # simulator of the quantum variants: "native" or a PennyLane device name
    diff_method: str = "best"  # PennyLane engines only: how gradients are computed
    shots: int | None = None  # PennyLane engines only: None gives exact expectation values
    q_delta: float = 0.01  # spread of the initial circuit angles, as in the paper
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # quantum variants: channels, readout, shots

    def __post_init__(self) -> None:
        check_variant(self.variant)
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if len(self.class_names) == 1:
            raise ValueError(f"a classifier needs at least 2 class names, got {list(self.class_names)}")
        if isinstance(self.circuit, dict):
            object.__setattr__(self, "circuit", CircuitConfig.from_dict(self.circuit))
        if self.noise is None or isinstance(self.noise, dict):
            object.__setattr__(self, "noise", NoiseConfig.from_dict(self.noise))

    @property
    def frozen(self) -> bool:
        """True when the backbone is frozen and only the head trains (on cached features)."""
        return self.variant in FROZEN_VARIANTS

    @property
    def is_quantum(self) -> bool:
        """True when the head contains a variational circuit."""
        return self.variant in QUANTUM_VARIANTS

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def engine_options(self) -> dict:
        """Keyword options for `make_engine`; the native engine takes none of the PennyLane ones."""
        noise = {} if self.noise.is_ideal else {"noise": self.noise}
        if self.engine == "native":
            return noise
        return {"diff_method": self.diff_method, "shots": self.shots, **noise}

    def to_dict(self) -> dict:
        """Plain Python values only (str, int, float, bool, None, list, dict): safe in checkpoints."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["class_names"] = list(self.class_names)
        d["circuit"] = self.circuit.to_dict()
        d["noise"] = self.noise.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "circuit" in d and isinstance(d["circuit"], dict):
            d["circuit"] = CircuitConfig.from_dict(d["circuit"])
        if "noise" in d:  # checkpoints written before noise existed have none: ideal
            d["noise"] = NoiseConfig.from_dict(d["noise"])
        if "class_names" in d:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)


# The paper's recipe (Mari et al. 2019) and the PyTorch transfer learning tutorial's.
_PAPER = dict(epochs=30, batch_size=4, optimizer="adam", lr=4e-4, step_size=10, gamma=0.1)
_TUTORIAL = dict(
    epochs=25, batch_size=4, optimizer="sgd", lr=1e-3, momentum=0.9, step_size=7, gamma=0.1, augment=True
)
#: TrainConfig fields per variant; `recipe` builds them.
RECIPES = {
    "quantum": _PAPER,
    "dressed-classical": _PAPER,
    "finetuned": _TUTORIAL,
    "linear": {**_TUTORIAL, "views": 5},  # 5 cached augmented views: its epochs never run the backbone
    "hybrid": {**_PAPER, "epochs": 25, "backbone_lr": 1e-4, "augment": True},
}


def recipe(variant: str) -> TrainConfig:
    """The training defaults of a variant (the issue's table); override fields with dataclasses.replace.

    quantum, dressed-classical: Adam lr 4e-4, StepLR(10, 0.1), batch 4, 30 epochs, no augmentation.
    finetuned, linear: SGD lr 1e-3 momentum 0.9, StepLR(7, 0.1), batch 4, 25 epochs,
        RandomResizedCrop + flip (linear caches 5 augmented views so its epochs skip the backbone).
    hybrid: Adam, head lr 4e-4 and backbone lr 1e-4, StepLR(10, 0.1), batch 4, 25 epochs, augmentation.
    """
    from qtl.train import TrainConfig

    return TrainConfig(**RECIPES[check_variant(variant)])


class Classifier(nn.Module):
    """A backbone (B, 3, H, W) -> (B, F) followed by a head (B, F) -> (B, C) logits.

    When `frozen`, the backbone's parameters do not require grad and it stays in eval mode even when
    the classifier is put in train mode (batch-norm statistics never move), so cached features stay valid.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, in_features: int, *, frozen: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_features = in_features
        self.frozen = frozen
        if frozen:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
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
    """A freshly initialised head for the variant, (B, in_features) -> (B, n_classes)."""
    c, n = model_config, model_config.n_classes
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
        from qtl.backbones import load_backbone

        backbone = load_backbone(
            model_config.backbone, model_config.pretrained, allow_download=allow_download
        )
    module, in_features = backbone
    head = build_head(model_config, in_features)
    return Classifier(module, head, in_features, frozen=model_config.frozen)
