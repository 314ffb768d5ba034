"""The names of the variants and backbones, torch-free: the command line builds its choices from them
without importing torch. `qtl.variants` and `qtl.backbones` import (and re-export) them from here."""

VARIANTS = ("quantum", "finetuned", "linear", "hybrid", "dressed-classical")
FROZEN_VARIANTS = frozenset({"quantum", "linear", "dressed-classical"})
QUANTUM_VARIANTS = frozenset({"quantum", "hybrid"})
DEFAULT_VARIANT = "quantum"

BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "vit_b_16")
"""The keys of `qtl.backbones.BACKBONES`, in order."""
DEFAULT_BACKBONE = "resnet18"
