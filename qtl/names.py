"""The names of the variants and backbones, torch-free: the command line builds its choices from them
without importing torch. `qtl.variants` and `qtl.backbones` import (and re-export) them from here."""

VARIANTS = ("quantum", "finetuned", "linear", "hybrid", "dressed-classical")
FROZEN_VARIANTS = frozenset({"quantum", "linear", "dressed-classical"})
QUANTUM_VARIANTS = frozenset({"quantum", "hybrid"})
DEFAULT_VARIANT = "quantum"

BUNDLED_BACKBONE = "efficientnet_lite0"
"""The pretrained backbone whose ImageNet weights ship with an installed package: it needs no network."""
BACKBONE_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "vit_b_16",
    BUNDLED_BACKBONE,
)
"""torchvision's backbones (the keys of `qtl.backbones.BACKBONES`, in order), then the bundled one."""
DEFAULT_BACKBONE = "resnet18"
