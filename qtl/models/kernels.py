"""The kernel baselines: support vector machines (scikit-learn's SVC) on the same frozen features.

    head = KernelSVM(1280, 2, "quantum-kernel", CircuitConfig(4, 6))
    chosen = head.fit(x_train, y_train, x_val, y_val)      # C and kernel width chosen on val
    head(x_test)                                           # (B, C) decision values: argmax = the class

Both kernels see the same inputs as the dressed circuit's embedding: the training features' leading
n_qubits principal components (`qtl.models.heads.pca`), standardised on the training set, squashed to
angles tanh(z) * pi/2, then scaled by the kernel width w:

    quantum-kernel  the fidelity kernel |<psi(w a)|psi(w a')>|^2 of the circuit (`qtl.quantum.kernel`)
    rbf-svm         exp(-gamma |a - a'|^2) with gamma = w / n_qubits

For every (C, w) in C_GRID x WIDTHS an SVM is fitted on the training split and scored on val; the pair
with the best val accuracy (ties: the smaller width, then the smaller C) is kept. Test accuracy is then
read once, as for every other head. The fitted head is a working module (fit() returns it, `predict`
can use it in a session) but it is not saved as a checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from qtl.models.heads import pca
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.kernel import FeatureMap, fidelities

C_GRID = (0.1, 1.0, 10.0, 100.0)
WIDTHS = (0.25, 0.5, 1.0, 2.0)
KINDS = ("quantum-kernel", "rbf-svm")


class KernelSVM(nn.Module):
    """(B, F) features -> (B, C) SVM decision values, for a `KINDS` kernel (see the module docstring)."""

    def __init__(self, in_features: int, n_classes: int, kind: str, circuit: CircuitConfig) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.n_classes, self.width = kind, n_classes, circuit.n_qubits
        self.feature_map = FeatureMap(circuit) if kind == "quantum-kernel" else None
        self.register_buffer("mean", torch.zeros(in_features, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(circuit.n_qubits, in_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(circuit.n_qubits, dtype=torch.float64))
        self.svc = None  # the fitted sklearn SVC
        self.chosen: dict = {}  # C, width, val_acc, train_acc, support vectors
        self._train_embedded: torch.Tensor | None = None  # the training inputs, embedded at the chosen width

    def inputs(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_qubits) angles in (-pi/2, pi/2), float64."""
        z = (features.double().cpu() - self.mean) @ self.components.T / self.scale
        return torch.tanh(z) * (math.pi / 2)

    def _embed(self, angles: torch.Tensor, width: float) -> torch.Tensor:
        """(N, n) angles -> what the kernel compares: the states psi(w a) (N, 2**n), or w a / sqrt(n)."""
        if self.feature_map is not None:
            return self.feature_map.states(angles * width)
        return angles * math.sqrt(width / self.width)

    def _gram(self, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """(N, .), (M, .) embedded inputs -> (N, M) kernel values."""
        if self.feature_map is not None:
            return fidelities(a, b).numpy()
        return torch.exp(-torch.cdist(a, b).square()).numpy()

    def fit(self, x_train, y_train, x_val, y_val) -> dict:
        """Fit on (N, F) features and (N,) labels, choosing C and the width on val; returns `chosen`."""
        from sklearn.svm import SVC

        mean, components = pca(torch.as_tensor(x_train, dtype=torch.float64), self.width)
        self.mean.copy_(mean)
        self.components.copy_(components)
        spread = ((torch.as_tensor(x_train, dtype=torch.float64) - mean) @ components.T).std(0, correction=0)
        self.scale.copy_(torch.where(spread > 0, spread, torch.ones_like(spread)))
        a_train, a_val = self.inputs(torch.as_tensor(x_train)), self.inputs(torch.as_tensor(x_val))
        y_train, y_val = np.asarray(y_train), np.asarray(y_val)
        best = None
        for width in WIDTHS:
            e_train, e_val = self._embed(a_train, width), self._embed(a_val, width)
            k_train, k_val = self._gram(e_train, e_train), self._gram(e_val, e_train)
            for c in C_GRID:
                svc = SVC(C=c, kernel="precomputed").fit(k_train, y_train)
                score = float((svc.predict(k_val) == y_val).mean())
                if best is None or score > best[0]:
                    train_acc = float((svc.predict(k_train) == y_train).mean())
                    best = (score, svc, {"C": c, "width": width, "val_acc": score, "train_acc": train_acc})
        _, self.svc, self.chosen = best
        self.chosen["support"] = int(self.svc.support_.size)
        self._train_embedded = self._embed(a_train, self.chosen["width"])
        self.dual_coef = nn.Parameter(torch.as_tensor(self.svc.dual_coef_), requires_grad=False)
        self.intercept = nn.Parameter(torch.as_tensor(self.svc.intercept_), requires_grad=False)
        return self.chosen

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, n_classes) decision values (one-vs-rest; binary: -d/2, d/2)."""
        if self.svc is None:
            raise RuntimeError("this kernel SVM has not been fitted")
        k = self._gram(self._embed(self.inputs(features), self.chosen["width"]), self._train_embedded)
        d = torch.as_tensor(self.svc.decision_function(k), dtype=torch.float32, device=features.device)
        return torch.stack((-d / 2, d / 2), 1) if d.dim() == 1 else d
