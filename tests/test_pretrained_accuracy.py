"""Accuracy on the real hymenoptera data (ants vs bees), offline, on the bundled efficientnet_lite0:
the checkpoints shipped in models/ and the paper's quantum recipe. These assert what the models do."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from qtl.analysis.inference import evaluate
from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.models.checkpoint import load_checkpoint
from qtl.training.fit import fit

SHIPPED = {
    "quantum": "quantum-efficientnet_lite0-imagenet-q4d6-s0.pt",
    "linear": "linear-efficientnet_lite0-imagenet-s0.pt",
    "finetuned": "finetuned-efficientnet_lite0-imagenet-s1.pt",
    "dressed-classical": "dressed-classical-efficientnet_lite0-imagenet-w4-s0.pt",
}
"""The checkpoints a fresh clone classifies with (added with git add -f)."""


@pytest.mark.parametrize("variant", list(SHIPPED))
def test_shipped_checkpoints_classify_val(hymenoptera_dir, variant):
    """Each shipped checkpoint loads through the safe loader, names its bundled backbone and scores
    >= 0.93 on val."""
    path = REPO / "models" / SHIPPED[variant]
    assert path.is_file(), f"{path} is not shipped"
    loaded = load_checkpoint(path)
    assert (loaded.variant, loaded.model_config.backbone) == (variant, "efficientnet_lite0")
    assert loaded.model_config.pretrained and loaded.transform is not None
    assert path.stat().st_size <= 20 * 2**20
    accuracy = evaluate(loaded, hymenoptera_dir, "val").metrics["accuracy"]
    assert accuracy >= 0.93, f"{variant}: {accuracy:.4f}"


def test_every_shipped_checkpoint_stores_what_qtl_evaluate_gives_and_none_repeats_another(hymenoptera_dir):
    """Every file in models/ (the SHIPPED manifest's) stores as its val accuracy the accuracy
    `qtl evaluate` gives on the images in the repository's dataset, and no two give the same outputs
    (a copy under another name only costs memory and a line on every page)."""
    from qtl.data.datasets import open_dataset

    names = shipped_names()
    assert sorted(names) == sorted(p.name for p in (REPO / "models").glob("*.pt"))
    record = open_dataset(hymenoptera_dir, download=False).record()
    outputs = {}
    for name in names:
        loaded = load_checkpoint(REPO / "models" / name)
        # each records the dataset it was trained on, so pages score it there, not on the active one
        recorded = loaded.meta["dataset"]
        assert (recorded["name"], recorded["counts"]) == (record["name"], record["counts"]), name
        ev = evaluate(loaded, hymenoptera_dir, "val")
        assert loaded.metrics["val_acc"] == ev.metrics["accuracy"], name
        outputs[name] = torch.tensor([s.probs for s in ev.samples])  # (153, 2)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-6), f"{a} and {b} give the same outputs"


def shipped_names() -> list[str]:
    """The file names models/SHIPPED lists (one per line, # comments)."""
    lines = (line.split("#", 1)[0].strip() for line in (REPO / "models" / "SHIPPED").read_text().splitlines())
    return [name for name in lines if name]


def test_paper_recipe_quantum_on_bundled_features(hymenoptera_dir):
    """The paper's recipe for the dressed quantum circuit (4 qubits, depth 6, Adam 4e-4, batch 4, 30
    epochs, seed 0) on efficientnet_lite0 features reaches >= 0.90 val accuracy at its best epoch."""
    mc = ModelConfig("quantum", backbone="efficientnet_lite0")
    result = fit(mc, recipe("quantum"), MachineConfig(data_dir=str(hymenoptera_dir)))
    assert len(result.history) == 30
    assert result.best["val_acc"] >= 0.90, result.best
