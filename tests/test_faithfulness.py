"""Faithfulness: qtl's `quantum` variant trains exactly like the paper's PennyLane demo.

The reference (qtl/testing/paper_demo.py) is written independently, the way the PennyLane "quantum transfer
learning" demo writes it: a QNode on default.qubit (H layer, RY embedding, entangling layers, RY layer,
<Z>), called once per sample in a Python loop, inside its own Linear layers. Both sides start from
the same weights, see the same features in the same batch order, and use the paper's recipe (Adam 4e-4,
StepLR(10, 0.1), batch 4). qtl trains through its own `fit()`; the per-step losses must agree to 1e-5.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from qtl.config import ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.variants import build_model
from qtl.testing.paper_demo import DressedQuantumNet, gamma_lr_scheduler, step
from qtl.training.fit import Callback, fit

CLASSES = ("ants", "bees")


def reference_losses(net, features, labels, epochs, batch_size):
    """The demo's training loop over a fixed batch order; one loss per optimisation step."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=step)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=gamma_lr_scheduler)
    losses = []
    for _ in range(epochs):
        for i in range(0, len(labels), batch_size):
            inputs, target = features[i : i + batch_size], labels[i : i + batch_size]
            optimizer.zero_grad()
            loss = criterion(net(inputs), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
    return losses


class LossRecorder(Callback):
    def __init__(self):
        self.losses = []

    def on_batch_end(self, progress):
        self.losses.append(progress.loss)


def test_quantum_variant_matches_the_pennylane_demo_step_by_step():
    """24 Adam steps across the StepLR boundary: qtl's fit() and the demo loop give the same losses."""
    g = torch.Generator().manual_seed(7)
    n_train, epochs = 8, 12  # 2 batches of 4 per epoch -> 24 steps; the lr drops after epoch 10
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    features = torch.randn(n_train, 512, generator=g) + 0.5 * labels[:, None].float()  # (N, F), learnable
    val = FeatureSet(features[:4].clone(), labels[:4].clone(), ["v"] * 4, list(CLASSES))
    train = FeatureSet(features.clone(), labels.clone(), ["t"] * n_train, list(CLASSES))

    config = ModelConfig("quantum", backbone="resnet18", pretrained=False, class_names=CLASSES)
    torch.manual_seed(3)
    model = build_model(config)
    reference = DressedQuantumNet(512)
    with torch.no_grad():
        reference.pre_net.load_state_dict(model.head.pre_net.state_dict())
        reference.post_net.load_state_dict(model.head.post_net.state_dict())
        reference.q_params.copy_(model.head.q_params.reshape(-1))
    assert model.head.q_params.abs().max() > 0

    train_config = dataclasses.replace(recipe("quantum"), epochs=epochs, shuffle=False)
    assert (train_config.optimizer, train_config.lr, train_config.batch_size) == ("adam", 4e-4, 4)
    assert (train_config.step_size, train_config.gamma) == (10, 0.1)
    recorder = LossRecorder()
    fit(config, train_config, features=(train, val), model=model, callbacks=[recorder])

    expected = reference_losses(reference, features, labels, epochs, train_config.batch_size)
    assert len(recorder.losses) == len(expected) == 24
    np.testing.assert_allclose(recorder.losses, expected, rtol=0, atol=1e-5)
    assert max(expected) - min(expected) > 1e-3  # the trajectory moves, so agreement is not trivial
