"""Brick-wall circuits on a matrix product state, every site of one parity in one tensor.

The chain entangler applies CNOT(i, i+1) on the even pairs, then on the odd pairs. An even layer doubles
the bond of every even cut (between wires 2i and 2i+1), an odd layer that of every odd cut, so all
even sites share one shape and all odd sites another. Stacked as (sites, B, 2, Dl, Dr) tensors (the
physical index first), a layer of single-qubit gates is one batched product per stack and a CNOT
layer three operations, whatever the width: a 64-qubit block is about ten operations where the
site-by-site simulation (`mps._cnot`) takes several hundred.

A CNOT (control c, target c+1) is the bond-2 operator sum_k |k><k| (x) X^k. Its bond index k becomes
the major part of the cut's new index: the control's right index k * D + r keeps the projection
|k><k| of the site, the target's left index k * D + l the site with X^k applied.

The chain's ends stay uniform too: the first site's left bond and the last site's right bond are
carried at full size and read only at index 0 (the boundary vector e_0). A split of the first site's
left bond puts the unflipped site at k = 0, so index 0 is unchanged; an end site that is no control
of its layer gets its right bond doubled with zeros (`_control_masks`). Nothing is truncated or
capped: bonds near the ends exceed 2**(wires to the end), which costs little on a wide circuit.

The simulation's backward is written by hand (`_Simulate`: per block the gates' and the splits'
transposes, in reverse), and so is that of `_mps_strings.expectations`, which measures Pauli strings
on the two stacks where every site is D x D (`uniform`). Neither has second derivatives.
"""

from __future__ import annotations

import torch

from qtl.quantum.engines._memory import constant_tables
from qtl.quantum.engines._pauli import swap

#: A CNOT layer of the chain: "even" pairs (0, 1), (2, 3), ... or "odd" pairs (1, 2), (3, 4), ...
Layer = str


def chain_layers(pairs: tuple[tuple[int, int], ...], n_qubits: int) -> tuple[Layer, ...] | None:
    """A run of CNOT pairs as "even"/"odd" layers of the chain, or None if it is anything else."""
    even = [(i, i + 1) for i in range(0, n_qubits - 1, 2)]
    odd = [(i, i + 1) for i in range(1, n_qubits - 1, 2)]
    out: list[Layer] = []
    rest = list(pairs)
    while rest:
        for name, layer in (("even", even), ("odd", odd)):
            if layer and rest[: len(layer)] == layer:
                out.append(name)
                rest = rest[len(layer) :]
                break
        else:
            return None
    return tuple(out)


def stacked_log_bonds(layers: list[tuple[Layer, ...]]) -> tuple[int, int]:
    """log2 of the (even-cut, odd-cut) bonds after `layers`: one doubling per layer of that parity."""
    flat = [name for run in layers for name in run]
    return flat.count("even"), flat.count("odd")


@constant_tables(32)
def _control_masks(sites: int, last_unpaired: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(sites, 1, 2, 1, 2, 1) masks [s, k] of a control split: delta(s, k) (the projections), and for an
    unpaired last site [s, 0] = 1, [s, 1] = 0 (its right bond doubled with zeros)."""
    mask = torch.eye(2, dtype=dtype).expand(sites, 2, 2).clone()
    if last_unpaired:
        mask[-1] = torch.tensor([[1, 0], [1, 0]], dtype=dtype)
    return mask.view(sites, 1, 2, 1, 2, 1).to(device)


def _control(x: torch.Tensor, last_unpaired: bool) -> torch.Tensor:
    """Stacked sites (k, B, 2, L, R) as CNOT controls: right bond R -> 2R, index k * R + r."""
    k, b, _, left, right = x.shape
    mask = _control_masks(k, last_unpaired, x.dtype, x.device)
    return (x.unsqueeze(4) * mask).reshape(k, b, 2, left, 2 * right)


def _control_backward(g: torch.Tensor, last_unpaired: bool) -> torch.Tensor:
    """The gradient of `_control`'s input from that of its output (k, B, 2, L, 2R)."""
    k, b, _, left, right = g.shape
    mask = _control_masks(k, last_unpaired, g.dtype, g.device)
    return (g.view(k, b, 2, left, 2, right // 2) * mask).sum(4)


def _target(x: torch.Tensor) -> torch.Tensor:
    """Stacked sites (k, B, 2, L, R) as CNOT targets: left bond L -> 2L, index k * L + l holds X^k x."""
    return torch.cat((x, swap(x, 2)), 3)


def no_second_derivatives() -> None:
    """Raise in a hand-written backward run with create_graph=True: its products are not recorded, so a
    second derivative through it would silently miss their share (autograd.grad prunes a
    once_differentiable error node that leads to none of its inputs)."""
    if torch.is_grad_enabled():
        raise RuntimeError("the MPS engine's stacked chain has no second derivatives (create_graph=True)")


def _gates(m: torch.Tensor) -> torch.Tensor:
    """Each site's gate, (k, 2, 2) or per sample (B, k, 2, 2), as (k, B or 1, 2, 2)."""
    return m.movedim(-3, 0) if m.dim() == 4 else m.unsqueeze(1)


def _steps(layers: list[tuple[Layer, ...]], n: int):
    """Per block, its CNOT layers as (control stack, target stack, last control unpaired)."""
    out = []
    for run in layers:
        block = []
        for name in run:
            control = 0 if name == "even" else 1
            # the last site is a control without a target when its parity is the control's
            block.append((control, 1 - control, (n - 1) % 2 == control))
        out.append(block)
    return out


class _Simulate(torch.autograd.Function):
    """The brick wall's stacks from the product state and the blocks' gates; backward by hand (autograd
    would keep every block's split copies and zero-fill a gradient for each)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, mats: torch.Tensor | None, layers: tuple, n: int):
        batch = v.shape[0]
        stacks = [v[:, p::2].movedim(1, 0).reshape(-1, batch, 2, 1, 1) for p in (0, 1)]  # even, odd
        before = []  # each block's stacks before its gates
        for index, block in enumerate(_steps(list(layers), n)):
            for control, target, last_unpaired in block:
                stacks[control] = _control(stacks[control], last_unpaired)
                stacks[target] = _target(stacks[target])
            before.append(stacks)
            layer = mats[..., index, :, :, :]
            stacks = [
                (_gates(layer[..., p::2, :, :]) @ x.flatten(3)).view(x.shape) for p, x in enumerate(stacks)
            ]
        ctx.layers, ctx.n, ctx.before, ctx.batch = layers, n, before, batch
        ctx.save_for_backward(mats)
        return stacks[0], stacks[1]

    @staticmethod
    def backward(ctx, d_even, d_odd):
        no_second_derivatives()
        (mats,) = ctx.saved_tensors
        grads, d_mats = [d_even, d_odd], None if mats is None else torch.zeros_like(mats)
        for index, block in reversed(list(enumerate(_steps(list(ctx.layers), ctx.n)))):
            for p, x in enumerate(ctx.before[index]):
                m = _gates(mats[..., index, p::2, :, :])  # y = m x: dm = dy x^H, dx = m^H dy
                dy = grads[p].flatten(3)
                dm = dy @ x.flatten(3).mH  # (k, B, 2, 2); conjugates: complex gradients
                d_mats[..., index, p::2, :, :] = dm.movedim(0, -3) if mats.dim() == 5 else dm.sum(1)
                grads[p] = (m.mH @ dy).view(x.shape)
            for control, target, last_unpaired in reversed(block):
                grads[control] = _control_backward(grads[control], last_unpaired)
                g = grads[target]
                half = g.shape[3] // 2
                grads[target] = g[:, :, :, :half] + swap(g[:, :, :, half:], 2)
        d_v = torch.empty(ctx.batch, ctx.n, 2, dtype=grads[0].dtype, device=grads[0].device)
        for p in (0, 1):
            d_v[:, p::2] = grads[p].reshape(-1, ctx.batch, 2).movedim(0, 1)
        return d_v, d_mats, None, None


def simulate(
    v: torch.Tensor, mats: torch.Tensor | None, layers: list[tuple[Layer, ...]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MPS of a brick-wall circuit as two stacks, even sites (ne, B, 2, Do, De) and odd sites
    (no, B, 2, De, Do), ends padded (read at index 0).

    v: (B, n, 2) every wire's state before the first CNOT (the product prefix); mats: (B?, L, n, 2, 2)
    the single-qubit gates after each CNOT run (a product per wire), None when L == 0; layers: the
    first runs as chain layers (`chain_layers`), each followed by its gates.
    """
    return _Simulate.apply(v, mats, tuple(layers), v.shape[1])


def sites(stacks: tuple[torch.Tensor, torch.Tensor], n: int) -> list[torch.Tensor]:
    """The stacks as n site tensors (B, Dl, 2, Dr) in wire order, the ends cut to their boundary index."""
    parts = [stack.transpose(2, 3).unbind(0) for stack in stacks]  # one backward for all of a stack
    out = [parts[j % 2][j // 2] for j in range(n)]
    out[0] = out[0][:, :1]
    out[-1] = out[-1][..., :1]
    return out


def uniform(stacks: tuple[torch.Tensor, torch.Tensor]) -> bool:
    """Whether every site of both stacks is D x D for one D (after whole blocks of a chain)."""
    even, odd = stacks
    return even.shape[1:] == odd.shape[1:] and even.shape[-1] == even.shape[-2]
