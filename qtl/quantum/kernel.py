"""The quantum fidelity kernel: k(x, x') = |<psi(x)|psi(x')>|^2, from the native engine's statevectors.

    fm = FeatureMap(CircuitConfig(4, 2))          # H, then [RY(x), CNOTs ... RY(x)] blocks
    k = fm.kernel(a, b)                           # a (N, n), b (M, n) angles -> (N, M) in [0, 1]

The feature map is the circuit of `config` with data re-uploading switched on and every trainable
angle at zero: H and RY(x) on every wire, then per block the CNOT run and RY(x) again. Re-uploading is
what makes the kernel more than a product of one-qubit kernels: with the data only in the first layer,
the CNOTs (a permutation, the same on both states) cancel in the overlap, leaving
prod_i cos^2((x_i - x'_i) / 2). `product_kernel` is that closed form, used by the tests.
"""

from __future__ import annotations

import dataclasses

import torch

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.native import NativeEngine


class FeatureMap:
    """The states psi(x) of the kernel's circuit (see the module docstring)."""

    def __init__(self, config: CircuitConfig) -> None:
        self.config = dataclasses.replace(config, reupload=True)
        self.engine = NativeEngine(self.config)

    def states(self, angles: torch.Tensor) -> torch.Tensor:
        """(N, n) angles -> (N, 2**n) statevectors (real for an RY circuit, else complex)."""
        weights = torch.zeros(self.config.weight_shape, dtype=angles.dtype)
        with torch.no_grad():
            return self.engine.state(angles, weights)

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, n) and (M, n) angles -> (N, M) fidelities |<psi(a_i)|psi(b_j)>|^2."""
        return fidelities(self.states(a), self.states(b))


def fidelities(states_a: torch.Tensor, states_b: torch.Tensor) -> torch.Tensor:
    """(N, d) and (M, d) statevectors -> (N, M) |<a_i|b_j>|^2."""
    overlap = states_a.conj() @ states_b.T
    return overlap.abs().square() if overlap.is_complex() else overlap.square()


def product_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, n) and (M, n) angles -> (N, M) prod_i cos^2((a_i - b_i) / 2): the fidelity of RY(x) H|0> states."""
    return torch.cos((a[:, None, :] - b[None, :, :]) / 2).square().prod(-1)
