"""Tensor kernels of the native engine: gate matrices, Kronecker products, layers, permutations, <Z>.

Conventions: a batch of states is a (B, 2**n) tensor with one state per row; wire 0 is the most
significant bit of the basis index (as in PennyLane). A linear map A acts on the rows as S -> S @ A.T.
Every function here is pure and differentiable by torch autograd.
"""

from __future__ import annotations

import math

import torch

from qtl.quantum.engines._memory import constant_tables

#: Layers on at most this many wires are applied as one 2**n x 2**n Kronecker block (one matmul).
FULL_BLOCK_MAX_QUBITS = 6
#: Wider layers are split into balanced groups of at most this many wires, one block matmul per group.
GROUP_MAX_QUBITS = 4
#: The cyclic contraction handles at most this many trailing wires (rows of 2**12 amplitudes stay in
#: cache); wider layers contract their leading groups in place.
ROTATE_MAX_QUBITS = 12
#: Kronecker products of up to this many factors use one gather and one prod (`kron_gather`).
GATHER_KRON_MAX_QUBITS = 6
#: Up to this many qubits <Z_i> is one matmul with a (2**n, n) sign table; above, a halving reduction.
SIGN_TABLE_MAX_QUBITS = 12

SINGLE_QUBIT_GATES = ("Hadamard", "RY", "RZ")
PARAMETRIC_GATES = ("RY", "RZ")

_HADAMARD = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64) / math.sqrt(2.0)


def complex_dtype(real_dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32, complex128 for float64."""
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


def constant_matrix(name: str) -> torch.Tensor:
    """(2, 2) float64 matrix of a parameter-free single-qubit gate."""
    if name == "Hadamard":
        return _HADAMARD
    raise ValueError(f"unsupported parameter-free gate {name!r}; supported: Hadamard")


def rotation_matrices(name: str, theta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(...,) angles -> (..., 2, 2) matrices of RY or RZ in `dtype` (real only for RY)."""
    if name == "RY":  # [[c, -s], [s, c]] as one cosine: -sin(x) = cos(x + pi/2), sin(x) = cos(x - pi/2)
        shifts = ry_shifts(theta.dtype, theta.device)
        m = torch.cos(torch.addcmul(shifts, theta.unsqueeze(-1), theta.new_tensor(0.5)))
        return m.to(dtype).unflatten(-1, (2, 2))
    if name == "RZ":
        if not dtype.is_complex:
            raise ValueError("RZ needs complex arithmetic")
        c, s = torch.cos(theta * 0.5), torch.sin(theta * 0.5)
        zero = torch.zeros_like(c)
        m = torch.stack((torch.complex(c, -s), zero, zero, torch.complex(c, s)), dim=-1)
        return m.to(dtype).unflatten(-1, (2, 2))
    raise ValueError(f"unsupported rotation {name!r}; supported: {PARAMETRIC_GATES}")


def kron_gather(m: torch.Tensor) -> torch.Tensor:
    """(..., k, a, b) with a, b in {1, 2} -> (..., a**k, b**k), the Kronecker product of the k factors.

    Entry (i, j) is the product over factors w of m[w, bit_w(i), bit_w(j)]: one gather and one prod,
    O(k a**k b**k) work, so use it for few factors (GATHER_KRON_MAX_QUBITS).
    """
    k, a, b = m.shape[-3:]
    out = m.flatten(-3).index_select(-1, _kron_index_on(k, a, b, m.device))
    return product(out.unflatten(-1, (k, a**k, b**k)), dim=-3)


def product(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x.prod(dim) for a few factors, as plain multiplications (prod's backward must guard against zeros)."""
    factors = x.unbind(dim)
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out


def kron_index(k: int, a: int, b: int) -> torch.Tensor:
    """(k, a**k, b**k) positions into a flattened (k, a, b) tensor: [w, i, j] -> (w, bit_w(i), bit_w(j))."""
    w = torch.arange(k)
    rows = (torch.arange(a**k)[None, :] >> (k - 1 - w[:, None])) & (a - 1)  # (k, a**k) bits
    cols = (torch.arange(b**k)[None, :] >> (k - 1 - w[:, None])) & (b - 1)
    return w[:, None, None] * a * b + rows[:, :, None] * b + cols[:, None, :]


# Constant tensors per device live in `constant_tables` caches (thread-safe; the tensors are never written).


@constant_tables(64)
def _kron_index_on(k: int, a: int, b: int, device: torch.device) -> torch.Tensor:
    return kron_index(k, a, b).reshape(-1).to(device)


@constant_tables(16)
def ry_shifts(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Phases that turn cos(theta/2 + shift) into the entries [[c, -s], [s, c]] of RY(theta)."""
    return torch.tensor([0.0, math.pi / 2, -math.pi / 2, 0.0], dtype=dtype).to(device)


def kron_pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(..., a, b) and (..., c, d) -> (..., a*c, b*d): the Kronecker product x (x) y, batched."""
    a, b = x.shape[-2:]
    c, d = y.shape[-2:]
    out = x[..., :, None, :, None] * y[..., None, :, None, :]
    return out.reshape(*out.shape[:-4], a * c, b * d)


def kron_chain(m: torch.Tensor) -> torch.Tensor:
    """(..., k, a, b) -> (..., a**k, b**k): m[..., 0] (x) m[..., 1] (x) ... (x) m[..., k-1].

    Pairs neighbours in log2(k) rounds, so the number of tensor operations stays small.
    """
    tails = []
    while m.shape[-3] > 1:
        if m.shape[-3] % 2:
            tails.append(m[..., -1, :, :])
            m = m[..., :-1, :, :]
        m = kron_pair(m[..., 0::2, :, :], m[..., 1::2, :, :])
    out = m.squeeze(-3)  # a view, unlike indexing, whose backward would allocate a full-size zero tensor
    for t in reversed(tails):  # the first tail split off holds the last wire
        out = kron_pair(out, t)
    return out


def chain_product(m: torch.Tensor) -> torch.Tensor:
    """(..., L, d, d) -> (..., d, d): m[..., 0, :, :] @ m[..., 1, :, :] @ ... @ m[..., L-1, :, :]."""
    factors = m.unbind(-3)
    out = factors[0]
    for f in factors[1:]:
        out = out @ f
    return out


def wire_groups(n_qubits: int) -> list[int]:
    """Sizes of the contiguous wire groups a full single-qubit layer is applied in (sum = n_qubits)."""
    if n_qubits <= FULL_BLOCK_MAX_QUBITS:
        return [n_qubits]
    count = -(-n_qubits // GROUP_MAX_QUBITS)
    size, extra = divmod(n_qubits, count)
    return [size + 1] * extra + [size] * (count - extra)


def group_blocks(mats: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """(..., n, 2, 2) per-wire matrices -> per group, (..., 2**g, 2**g) Kronecker blocks, in wire order.

    Groups of equal size are built together, so the cost is a few operations per distinct size.
    """
    blocks: list[torch.Tensor] = []
    start = 0
    for size in sorted(set(sizes), reverse=True):
        count = sizes.count(size)
        part = mats[..., start : start + count * size, :, :]
        part = part.reshape(*part.shape[:-3], count, size, 2, 2)
        built = kron_gather(part) if size <= GATHER_KRON_MAX_QUBITS else kron_chain(part)
        blocks += [built[..., j, :, :] for j in range(count)]
        start += count * size
    return blocks


def leading_groups(sizes: list[int]) -> int:
    """How many of a layer's groups (sizes in wire order) are contracted in place; the rest, at most
    ROTATE_MAX_QUBITS wires (and at least one group), by the cyclic trick of `apply_blocks`."""
    n_tail, tail_qubits = 0, 0
    for size in reversed(sizes):
        if n_tail and tail_qubits + size > ROTATE_MAX_QUBITS:
            break
        n_tail, tail_qubits = n_tail + 1, tail_qubits + size
    return len(sizes) - n_tail


class _ContractLast(torch.autograd.Function):
    """(B, M, d) x, (d, d) k -> (B, d, M) k @ x.mT, with gradients laid out like the inputs.

    torch.bmm's own backward returns the gradient of a transposed view as a contiguous tensor, which
    costs a full copy of the state per group in the backward pass; this one does not.
    """

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x, k)
        b, _, d = x.shape
        return torch.bmm(k.expand(b, d, d), x.mT)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, k = ctx.saved_tensors
        b, _, d = x.shape
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad.mT, k.expand(b, d, d).conj())  # (B, M, d), contiguous like x
        if ctx.needs_input_grad[1]:
            grad_k = torch.bmm(grad, x.conj()).sum(0)  # (d, d)
        return grad_x, grad_k


def apply_blocks(state: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Apply a layer of Kronecker blocks (wire order, covering every wire) to (B, 2**n) states.

    A block is a (d, d) matrix shared by the batch. One block is one matmul. With several, the
    leading groups are contracted in place, K @ x over a (rows, d, rest) view, and the trailing ones
    (at most ROTATE_MAX_QUBITS wires) by the cyclic trick: each product contracts the last group and
    moves it to the front of the trailing wires, so after all of them the wire order is restored.
    Every product is one batched matmul whose per-row operand stays about cache-sized.
    """
    b = state.shape[0]
    if len(blocks) == 1:
        return state @ blocks[0].mT
    sizes = [k.shape[-1].bit_length() - 1 for k in blocks]
    head = leading_groups(sizes)
    left = 0
    for k, size in zip(blocks[:head], sizes[:head], strict=True):
        x = state.reshape(b * 2**left, 2**size, -1)  # (rows, d, rest)
        state = torch.bmm(k.expand(x.shape[0], -1, -1), x)
        left += size
    rows = b * 2**left
    for k in reversed(blocks[head:]):
        x = state.reshape(rows, -1, k.shape[-1])  # (rows, M, d)
        state = _ContractLast.apply(x, k)  # (rows, d, M): this group leads
    return state.reshape(b, -1)


def apply_wires(state: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """(B, 2**n) states and (B, n, 2, 2) per-sample one-qubit matrices, wire w's at [:, w] -> (B, 2**n)
    with every wire's matrix applied (wire 0 is the most significant bit)."""
    batch, n = mats.shape[0], mats.shape[1]
    for w in range(n):
        view = state.reshape(batch, 2**w, 2, 2 ** (n - w - 1))
        state = torch.einsum("bij,bajc->baic", mats[:, w], view).reshape(batch, -1)
    return state


def cnot_permutation(n_qubits: int, pairs: list[tuple[int, int]]) -> torch.Tensor:
    """(2**n,) int64 index p with (C_k ... C_1 psi)[j] = psi[p[j]] for CNOTs C_1..C_k on (control, target)."""
    x = torch.arange(2**n_qubits, dtype=torch.int64)
    for control, target in reversed(pairs):
        x = x ^ (((x >> (n_qubits - 1 - control)) & 1) << (n_qubits - 1 - target))
    return x


class _Permute(torch.autograd.Function):
    """state.index_select(dim, perm) whose backward is the inverse gather (no scatter-add)."""

    @staticmethod
    def forward(ctx, state, perm, inverse, dim):
        ctx.save_for_backward(inverse, perm)
        ctx.dim = dim
        return state.index_select(dim, perm)

    @staticmethod
    def backward(ctx, grad):
        inverse, perm = ctx.saved_tensors
        return _Permute.apply(grad, inverse, perm, ctx.dim), None, None, None


def permute(state: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(B, 2**n) -> (B, 2**n) with out[:, j] = state[:, perm[j]] (along `dim`, the last by default);
    `inverse` is perm's inverse."""
    return _Permute.apply(state, perm, inverse, dim)


def probabilities(state: torch.Tensor) -> torch.Tensor:
    """(B, 2**n) real or complex amplitudes -> (B, 2**n) real probabilities."""
    if state.is_complex():
        return torch.view_as_real(state).square().sum(-1)
    return state.square()


def sign_table(n_qubits: int) -> torch.Tensor:
    """(2**n, n) float64 table of Z eigenvalues: +1 where wire i is |0> in basis state j, else -1."""
    j = torch.arange(2**n_qubits)[:, None]
    bits = (j >> torch.arange(n_qubits - 1, -1, -1)) & 1
    return (1 - 2 * bits).to(torch.float64)


def z_expvals_halving(probs: torch.Tensor, n_qubits: int) -> torch.Tensor:
    """(B, 2**n) probabilities -> (B, n) <Z_i>, in O(B 2**n) without any table."""
    b = probs.shape[0]
    marginals = []
    for _ in range(n_qubits):
        p = probs.reshape(b, 2, probs.shape[-1] // 2)  # (B, 2, rest): the leading wire first
        marginals.append(p.sum(-1))  # (B, 2) probabilities of the leading wire
        probs = p.sum(1)  # marginalise the leading wire
    m = torch.stack(marginals, dim=1)  # (B, n, 2)
    return m[..., 0] - m[..., 1]


def z_expvals_table(probs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, 2**n) probabilities and a (2**n, n) `sign_table` in their dtype -> (B, n) <Z_i>."""
    return probs @ table


def flip_table(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(m * 2**m,) index [w, k] -> k with wire w's bit flipped, and (m, 2**m, 1) signs: for J = RY(pi)
    on wire w, (J_w x)[k] = signs[w, k] * x[index[w, k]] along the first axis of x."""
    k = torch.arange(2**m)
    flip = k[None, :] ^ (1 << (m - 1 - torch.arange(m)))[:, None]
    return flip.reshape(-1), -sign_table(m).T.unsqueeze(-1)  # -1 where wire w is |0>


def flip_dot(psi: torch.Tensor, h: torch.Tensor, flip: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B, 2**m) states and (B, 2**m) vectors -> (B, m) <h, J_w psi> for every wire w (J = RY(pi));
    `flip` is `flip_table(m)` on their device and in their dtype."""
    index, signs = flip
    batch, d = psi.shape
    moved = psi.index_select(1, index).view(batch, -1, d).mul_(signs.squeeze(-1))
    return moved.mul_(h.unsqueeze(1)).sum(-1)
