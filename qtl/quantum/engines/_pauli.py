"""Pauli strings: how CNOTs carry one through a circuit (Heisenberg picture), and Pauli operators moved
onto the bra side of a tensor's physical index, as the MPS engine's observables need them."""

from __future__ import annotations

import torch

#: A Pauli string: (sign, ((wire, "X" | "Y" | "Z"), ...)) with the wires in increasing order.
PauliString = tuple[int, tuple[tuple[int, str], ...]]


def conjugate_by_cnots(pauli: str, wire: int, pairs: list[tuple[int, int]], n: int) -> PauliString:
    """C^dagger P_wire C for C the CNOTs `pairs` applied in order (first pair first), as a Pauli string.

    Heisenberg picture: conjugate by the last CNOT first. Each CNOT (a, b) maps the string's bits by
    x_b ^= x_a, z_a ^= z_b and flips its sign where x_a z_b (x_b ^ z_a ^ 1) (Aaronson and Gottesman).
    """
    x, z = [0] * n, [0] * n
    x[wire], z[wire] = int(pauli in "XY"), int(pauli in "YZ")
    sign = 0
    for a, b in reversed(pairs):
        sign ^= x[a] & z[b] & (x[b] ^ z[a] ^ 1)
        x[b] ^= x[a]
        z[a] ^= z[b]
    names = {(1, 0): "X", (1, 1): "Y", (0, 1): "Z"}
    return (-1 if sign else 1), tuple((w, names[x[w], z[w]]) for w in range(n) if x[w] or z[w])


_MATRICES = {
    "X": torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.complex128),
    "Y": torch.tensor([[0.0, -1.0j], [1.0j, 0.0]], dtype=torch.complex128),
    "Z": torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.complex128),
}


def pauli_matrix(name: str, like: torch.Tensor) -> torch.Tensor:
    """The (2, 2) Pauli matrix `name` in the dtype and on the device of `like` (X and Z real)."""
    m = _MATRICES[name]
    return (m if like.is_complex() else m.real).to(dtype=like.dtype, device=like.device)


class _Swap(torch.autograd.Function):
    """x with its two entries along `dim` exchanged, a gather whose backward is the same gather (flip's
    kernel is several times slower, and index_select's backward zero-fills a whole gradient first)."""

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return x.index_select(dim, torch.tensor([1, 0], device=x.device))

    @staticmethod
    def backward(ctx, grad):
        return grad.index_select(ctx.dim, torch.tensor([1, 0], device=grad.device)), None


def swap(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x with its two entries along `dim` (of size 2) exchanged, differentiable."""
    return _Swap.apply(x, dim % x.dim())


def bra(a: torch.Tensor, pauli: str | None) -> torch.Tensor:
    """conj(a) (B, Dl, 2, Dr) with `pauli` moved onto its physical index: entry s is the sum over s' of
    P[s', s] conj(a)[s']. None: conj(a) itself. Elementwise products and a gather only, whose backward
    writes no zero-filled gradient (a select's or a stack's would)."""
    c = a.conj()
    if pauli is None:
        return c
    if pauli == "Z":
        return c * torch.tensor([1.0, -1.0], dtype=c.dtype, device=c.device).view(2, 1)
    if pauli == "X":
        return swap(c, 2)
    return swap(c, 2) * torch.tensor([1j, -1j], dtype=c.dtype, device=c.device).view(2, 1)  # Y
