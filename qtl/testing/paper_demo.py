"""PennyLane's "Quantum transfer learning" demo (Mari et al. 2019), transcribed: the independent reference.

Written the way the demo writes it, and deliberately NOT built from qtl's circuit or heads: a QNode on
default.qubit (H layer, RY embedding, entangling layers of CNOTs, RY layer, <Z> on every wire), called
once per sample in a Python loop, inside the demo's `DressedQuantumNet` (Linear(F, n_qubits),
tanh * pi/2, the QNode, Linear(n_qubits, 2)).

Used by tests/test_faithfulness.py (qtl's `fit()` against the demo's training, step by step) and by
bench/e2e.py (the demo's pipeline, timed). The demo fixes its sizes as module constants; here they are
the defaults of `make_quantum_net` and `DressedQuantumNet`.
"""

from __future__ import annotations

import numpy as np
import pennylane as qml
import torch
from torch import nn

# ---- the demo's settings
n_qubits = 4  # number of qubits
q_depth = 6  # depth of the quantum circuit (number of variational layers)
q_delta = 0.01  # initial spread of the random quantum weights
step = 0.0004  # learning rate (Adam)
gamma_lr_scheduler = 0.1  # StepLR factor, applied every 10 epochs


def H_layer(nqubits):
    """A layer of Hadamard gates."""
    for idx in range(nqubits):
        qml.Hadamard(wires=idx)


def RY_layer(w):
    """A layer of parametrized qubit rotations around the y axis."""
    for idx, element in enumerate(w):
        qml.RY(element, wires=idx)


def entangling_layer(nqubits):
    """A layer of CNOTs: first on even pairs (0-1, 2-3, ...), then on odd pairs (1-2, 3-4, ...)."""
    for i in range(0, nqubits - 1, 2):
        qml.CNOT(wires=[i, i + 1])
    for i in range(1, nqubits - 1, 2):
        qml.CNOT(wires=[i, i + 1])


def make_quantum_net(nqubits: int = n_qubits, depth: int = q_depth, device: str = "default.qubit"):
    """The demo's QNode: (nqubits,) input angles and (depth * nqubits,) weights -> nqubits <Z_i>."""
    dev = qml.device(device, wires=nqubits)

    @qml.qnode(dev, interface="torch")
    def quantum_net(q_input_features, q_weights_flat):
        q_weights = q_weights_flat.reshape(depth, nqubits)
        H_layer(nqubits)
        RY_layer(q_input_features)
        for k in range(depth):
            entangling_layer(nqubits)
            RY_layer(q_weights[k])
        exp_vals = [qml.expval(qml.PauliZ(position)) for position in range(nqubits)]
        return tuple(exp_vals)

    return quantum_net


class DressedQuantumNet(nn.Module):
    """The demo's dressed circuit: Linear(F, n), tanh * pi/2, one QNode call per sample, Linear(n, 2).

    device: the torch device the quantum outputs are gathered on (the demo's `device`).
    """

    def __init__(
        self,
        in_features: int = 512,
        *,
        nqubits: int = n_qubits,
        depth: int = q_depth,
        delta: float = q_delta,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        self.nqubits, self.device = nqubits, device
        self.quantum_net = make_quantum_net(nqubits, depth)
        self.pre_net = nn.Linear(in_features, nqubits)
        self.q_params = nn.Parameter(delta * torch.randn(depth * nqubits))
        self.post_net = nn.Linear(nqubits, 2)

    def forward(self, input_features):
        pre_out = self.pre_net(input_features)
        q_in = torch.tanh(pre_out) * np.pi / 2.0
        q_out = torch.Tensor(0, self.nqubits).to(self.device)
        for elem in q_in:
            q_out_elem = torch.hstack(self.quantum_net(elem, self.q_params)).float().unsqueeze(0)
            q_out = torch.cat((q_out, q_out_elem))
        return self.post_net(q_out)
