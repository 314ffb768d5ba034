"""Gradient norms per parameter group, the vanishing-circuit warning, and what fit() reports on a held-out
test split (qtl.training.gradients, qtl.training.fit)."""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
import torch.nn.functional as F
from torch import nn

from qtl.config import ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.checkpoint import load_checkpoint
from qtl.models.heads import DressedQuantumCircuit
from qtl.models.variants import Classifier
from qtl.quantum.circuit import CircuitConfig
from qtl.training.closed_form import closed_form_step
from qtl.training.fit import Callback, fit
from qtl.training.gradients import GradientNorms
from qtl.training.optim import adam


def test_closed_form_norms_equal_autograds():
    """The norms read from the closed-form step's own gradients equal those autograd puts in .grad for
    the same batch and weights, group by group."""
    torch.manual_seed(0)
    head = DressedQuantumCircuit(16, 3, CircuitConfig(4, 3)).double()
    reference = copy.deepcopy(head)
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    F.cross_entropy(reference(x), y).backward()
    want = {
        "pre_net": torch.cat([reference.pre_net.weight.grad.flatten(), reference.pre_net.bias.grad]).norm(),
        "circuit": reference.q_params.grad.norm(),
        "post_net": torch.cat(
            [reference.post_net.weight.grad.flatten(), reference.post_net.bias.grad]
        ).norm(),
    }
    model = Classifier(nn.Identity(), head, 16, frozen=True)
    optimizer = adam(head.parameters(), 1e-3)
    step = closed_form_step(head, optimizer)
    norms = GradientNorms(model, batches=1)
    step(head, optimizer, x, y)
    norms.after_step(step)
    got = norms.epoch()
    for group, value in want.items():
        assert abs(got[f"grad_{group}"] - float(value)) < 1e-10
    assert got["grad_backbone"] is None and got["grad_hidden"] is None


def feature_sets(n: int, seed: int, flip: bool = False) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 512, generator=g) + 3.0 * (2 * y[:, None] - 1) * (torch.arange(512) < 4)
    return FeatureSet(x, 1 - y if flip else y, [str(i) for i in range(n)], ["a", "b"])


class Warnings(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, p):
        self.seen.append(p.warning)


def test_a_circuit_whose_gradients_vanish_is_warned_about(caplog):
    """All angles at 0 from |0>: every <Z> sits at an extremum, so the circuit's gradient is 0 (to float32
    rounding; plain SGD keeps it there) while the post-net's is not; fit() logs the warning once and hands
    it to the callbacks every epoch."""
    mc = ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(3, 2, hadamard=False), q_delta=0.0)
    model = fit_model(mc)
    with torch.no_grad():
        model.head.pre_net.weight.zero_()
        model.head.pre_net.bias.zero_()
    tc = dataclasses.replace(recipe("quantum"), epochs=2, optimizer="sgd")
    seen = Warnings()
    with caplog.at_level(logging.WARNING, logger="qtl.training.fit"):
        result = fit(
            mc, tc, features=(feature_sets(16, 0), feature_sets(8, 1)), model=model, callbacks=[seen]
        )
    assert result.history[0]["grad_circuit"] < 1e-6 < 1e-2 < result.history[0]["grad_post_net"]
    assert all(w and "circuit's gradients vanish" in w for w in seen.seen)
    assert sum("circuit's gradients vanish" in r.message for r in caplog.records) == 1


def test_a_circuit_of_no_angles_is_not_warned_about():
    """Depth 0 has no angles to train: its "gradient" is 0, and fit() advised a shallower circuit."""
    mc = ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(2, 0))
    seen = Warnings()
    tc = dataclasses.replace(recipe("quantum"), epochs=1)
    result = fit(mc, tc, features=(feature_sets(16, 0), feature_sets(8, 1)), callbacks=[seen])
    assert result.history[0]["grad_circuit"] == 0 < result.history[0]["grad_post_net"]
    assert seen.seen == [None]


def fit_model(mc: ModelConfig) -> Classifier:
    from qtl.models.variants import build_model

    return build_model(dataclasses.replace(mc, class_names=("a", "b")))


def test_the_test_split_is_scored_once_on_the_epoch_val_selected(tmp_path):
    """Test images = the val images with every label flipped: whatever epoch val selects, its test accuracy
    is exactly 1 - its val accuracy, so selection saw val only; the checkpoint records both, and a head
    on reduced features (feature_dim) carries its projection into the checkpoint."""
    mc = ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(2, 1), feature_dim=8)
    tc = dataclasses.replace(recipe("quantum"), epochs=4, lr=0.05)
    sets = (feature_sets(40, 0), feature_sets(20, 1), feature_sets(20, 1, flip=True))
    result = fit(mc, tc, features=sets, checkpoint_path=tmp_path / "q.pt")
    m = result.metrics
    assert m["epoch"] == max(result.history, key=lambda r: (r["val_acc"], -r["val_loss"]))["epoch"]
    assert abs(m["test_acc"] - (1 - m["val_acc"])) < 1e-12 and m["n_test"] == 20 and m["n_train"] == 40
    loaded = load_checkpoint(tmp_path / "q.pt")
    assert loaded.metrics["test_acc"] == m["test_acc"]
    head = loaded.model.head
    assert head.components.abs().sum() > 0 and torch.equal(head.components, result.model.head.components)
    with torch.no_grad():
        torch.testing.assert_close(head(sets[1].features), result.model.head(sets[1].features))
