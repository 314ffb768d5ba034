"""Classifier heads that sit on a backbone's features.

DressedQuantumCircuit is the paper's "dressed quantum circuit":

    features (B, F) -> Linear(F, n) -> tanh * pi/2 -> circuit -> <Z> (B, n) -> Linear(n, C) -> logits (B, C)

DressedClassical is its parameter-matched control: the same sandwich with a classical layer of equal
width (Linear(n, n) + tanh) where the circuit was.

Projected puts a fixed linear projection in front of any head: the reduced-feature-width regime
(`ModelConfig.feature_dim`), whose projection is the training features' principal components (`pca`),
kept as buffers so a checkpoint carries it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qtl.config import NATIVE
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import make_engine

QUANTUM_PARAM = "q_params"


class DressedQuantumCircuit(nn.Module):
    """Linear(in_features -> n_qubits), tanh * pi/2, variational circuit, Linear(n_qubits -> n_classes).

    Args:
        in_features: size F of the backbone's feature vector.
        n_classes: number of output classes C.
        config: the circuit; defaults to the paper's 4 qubits, depth 6.
        engine: "native" or a PennyLane device name.
        q_delta: spread of the initial circuit angles, q_params = q_delta * N(0, 1).
        engine_options: passed to `make_engine` (diff_method, shots, memory_budget).
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        config: CircuitConfig | None = None,
        engine: str = NATIVE,
        q_delta: float = 0.01,
        **engine_options,
    ) -> None:
        super().__init__()
        self.config = config or CircuitConfig()
        self.engine_name = engine
        self.pre_net = nn.Linear(in_features, self.config.n_qubits)
        self.q_params = nn.Parameter(q_delta * torch.randn(self.config.weight_shape))
        self.engine = make_engine(self.config, engine, **engine_options)
        self.post_net = nn.Linear(self.config.n_qubits, n_classes)

    def angles(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_qubits) embedding angles in (-pi/2, pi/2)."""
        return torch.tanh(self.pre_net(features)) * (math.pi / 2)

    def expvals(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_qubits) <Z_i> of the circuit."""
        return self.engine(self.angles(features), self.q_params)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_classes) logits."""
        return self.post_net(self.expvals(features))


class DressedClassical(nn.Module):
    """The dressed sandwich with a classical (n -> n, tanh) layer in place of the circuit."""

    def __init__(self, in_features: int, n_classes: int, width: int = 4) -> None:
        super().__init__()
        self.pre_net = nn.Linear(in_features, width)
        self.hidden = nn.Linear(width, width)
        self.post_net = nn.Linear(width, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_classes) logits."""
        x = torch.tanh(self.pre_net(features)) * (math.pi / 2)
        return self.post_net(torch.tanh(self.hidden(x)))


class Projected(nn.Module):
    """(B, F) features -> (x - mean) @ components.T (B, k) -> `inner` head -> (B, C) logits.

    mean (F,) and components (k, F) are buffers: zero until `set_projection` (fit() sets them from the
    training features), saved and loaded with the head's weights. The circuit accessors of a quantum
    head (angles, expvals, q_params, engine, post_net) see the projected features too.
    """

    def __init__(self, in_features: int, width: int, inner: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("components", torch.zeros(width, in_features))
        self.inner = inner

    def set_projection(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        """mean (F,) and components (k, F), e.g. from `pca`."""
        self.mean.copy_(mean)
        self.components.copy_(components)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, k)."""
        return (features - self.mean) @ self.components.T

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_classes) logits."""
        return self.inner(self.project(features))

    def angles(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_qubits) embedding angles of a quantum inner head."""
        return self.inner.angles(self.project(features))

    def expvals(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_qubits) <Z_i> of a quantum inner head."""
        return self.inner.expvals(self.project(features))

    q_params = property(lambda self: self.inner.q_params)
    engine = property(lambda self: self.inner.engine)
    post_net = property(lambda self: self.inner.post_net)


def pca(features: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) features -> mean (F,) and the `width` leading principal components (width, F), by
    scikit-learn's PCA; rows past what N samples can span (N - 1 components) are zero."""
    from sklearn.decomposition import PCA

    x = features.detach().cpu().double().numpy()
    k = min(width, max(len(x) - 1, 0), x.shape[1])
    components = torch.zeros(width, x.shape[1], dtype=torch.float64)
    mean = torch.as_tensor(x.mean(0))
    if k:
        fitted = PCA(n_components=k, svd_solver="full").fit(x)
        components[:k] = torch.as_tensor(fitted.components_)
    return mean.to(features.dtype), components.to(features.dtype)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> dict[str, int]:
    """Classical and quantum parameter counts of a module: {"classical": int, "quantum": int}."""
    counts = {"classical": 0, "quantum": 0}
    for name, p in module.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        kind = "quantum" if name.split(".")[-1] == QUANTUM_PARAM else "classical"
        counts[kind] += p.numel()
    return counts
