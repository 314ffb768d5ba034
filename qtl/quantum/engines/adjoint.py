"""The adjoint method for wide circuits: a backward pass that keeps no intermediate states.

Every block of the circuit (a CNOT run, then a layer of Kronecker blocks on wire groups) is unitary,
so the state before it is U^H times the state after it. The forward pass applies the blocks through
two alternating buffers and saves only the final state. The backward pass walks the blocks in
reverse with the state psi and its gradient g stacked in one (2B, 2**n) buffer. For a layer it takes,
for every wire group j, the gradient of its block K_j as M_j K_j with M_j = sum g psi^H over all other
wires (the groups of a layer act on different wires and commute, so every M_j comes from the same psi
and g); then it un-applies the layer from both halves at once and un-permutes the CNOT run.

Memory: about `TRAINING_STATES` (B, 2**n) states whatever the depth, where autograd keeps one per
group product. Every kernel writes into a buffer allocated once per pass (`out=`), so large states
are not re-allocated (and page-faulted) per operation.
"""

from __future__ import annotations

import torch

from qtl.quantum.engines import _statevector as sv

#: (B, 2**n) states a training forward + backward holds at its peak: the output, its gradient and
#: two stacked (2B, 2**n) buffers in the backward pass, plus the probabilities' gradient and
#: temporaries (8.0 measured at 18 qubits, batch 32, as growth of the peak resident memory).
TRAINING_STATES = 8
#: States an inference forward holds: the input and two buffers.
INFERENCE_STATES = 3

Span = tuple[int, int, int]  # a wire group as (wires before it, its size, wires after it)


def spans(groups: tuple[int, ...]) -> tuple[Span, ...]:
    """Wire-group sizes (in wire order) -> (left, size, right) bit counts of each group."""
    n, out, left = sum(groups), [], 0
    for size in groups:
        out.append((left, size, n - left - size))
        left += size
    return tuple(out)


def _apply_group(src: torch.Tensor, dst: torch.Tensor, k: torch.Tensor, span: Span) -> None:
    """dst = src with the (d, d) block k applied to the group's wires; src, dst (R, 2**n) contiguous."""
    left, size, right = span
    d = 2**size
    if right == 0:  # the group is the fastest-varying index: one (R * 2**left, d) @ (d, d) product
        torch.mm(src.view(-1, d), k.mT, out=dst.view(-1, d))
    else:
        x = src.view(-1, d, 2**right)  # (R * 2**left, d, 2**right)
        torch.bmm(k.expand(x.shape[0], d, d), x, out=dst.view(x.shape))


class _Buffers:
    """Two (R, 2**n) buffers used in turn: each operation reads `current` and writes the other one.

    `current` is one of the two when `owned` (the caller's scratch), else two new ones are made.
    """

    def __init__(self, current: torch.Tensor, owned: bool) -> None:
        self.current = current
        self._pool = [current] if owned else [torch.empty_like(current)]
        self._pool.append(torch.empty_like(current))

    def next(self) -> torch.Tensor:
        return self._pool[0] if self._pool[0] is not self.current else self._pool[1]

    def advance(self, dst: torch.Tensor) -> None:
        self.current = dst


def _apply_layer(
    buf: _Buffers, blocks: list[torch.Tensor], group_spans: tuple[Span, ...], batch: int | None = None
) -> list[torch.Tensor]:
    """Apply one layer's (d, d) blocks to the rows of `buf.current`, as `statevector.apply_blocks` does.

    Leading groups are contracted in place, K @ x over (rows, d, rest) views; the trailing ones (at
    most ROTATE_MAX_QUBITS wires) by the cyclic trick, each contracting the group that is last at that
    moment and moving it to the front, which restores the wire order at the end. With `batch`, the
    rows are stacked [psi; g] and each group's M = sum g psi^H is returned, taken just before its
    block is applied.
    """
    sizes = [size for _, size, _ in group_spans]
    head = sv.leading_groups(sizes)
    ms: list[torch.Tensor] = []
    for k, span in zip(blocks[:head], group_spans[:head], strict=True):
        if batch is not None:
            ms.append(_cross(buf.current, batch, span))
        dst = buf.next()
        _apply_group(buf.current, dst, k, span)
        buf.advance(dst)
    rows = buf.current.shape[0] * 2 ** sum(sizes[:head])
    tail_ms = []
    for k, size in zip(reversed(blocks[head:]), reversed(sizes[head:]), strict=True):
        if batch is not None:
            tail_ms.append(_cross(buf.current, batch, (0, size, 0)))
        d = 2**size
        x = buf.current.view(rows, -1, d)  # (rows, M, d): this group is last now
        dst = buf.next()
        torch.bmm(k.expand(rows, d, d), x.mT, out=dst.view(rows, d, x.shape[1]))  # it leads after
        buf.advance(dst)
    return ms + tail_ms[::-1]


def run_blocks(
    state: torch.Tensor,
    perms: list[torch.Tensor],
    layers: list[list[torch.Tensor]],
    group_spans: tuple[Span, ...],
) -> torch.Tensor:
    """(R, 2**n) states after every block: permutation perms[l], then the (d, d) blocks of layers[l].

    Runs without autograd through two buffers; returns one of them.
    """
    buf = _Buffers(state.contiguous(), owned=False)
    with torch.no_grad():
        for perm, blocks in zip(perms, layers, strict=True):
            dst = buf.next()
            torch.index_select(buf.current, 1, perm, out=dst)
            buf.advance(dst)
            _apply_layer(buf, blocks, group_spans)
    return buf.current


def _cross(stacked: torch.Tensor, batch: int, span: Span) -> torch.Tensor:
    """(d, d) M = sum over samples and the other wires of g psi^H, for stacked rows [psi; g]."""
    left, size, right = span
    d = 2**size
    psi, g = stacked[:batch], stacked[batch:]
    if right == 0:
        return g.reshape(-1, d).mT @ psi.reshape(-1, d).conj()
    gv, pv = g.reshape(-1, d, 2**right), psi.reshape(-1, d, 2**right)
    return torch.bmm(gv, pv.mH).sum(0)


class AdjointBlocks(torch.autograd.Function):
    """(B, 2**n) state -> (B, 2**n) state after every block, with an adjoint backward.

    Call as `AdjointBlocks.apply(state, perms, inverses, group_spans, *blocks)` with per layer a
    (2**n,) permutation, its inverse, and one (d, d) block per wire group (`blocks` flattened layer by
    layer); gradients flow to `state` and to every block.
    """

    @staticmethod
    def forward(ctx, state, perms, inverses, group_spans, *blocks):
        n_groups = len(group_spans)
        layers = [list(blocks[i : i + n_groups]) for i in range(0, len(blocks), n_groups)]
        out = run_blocks(state, perms, layers, group_spans)
        ctx.inverses, ctx.group_spans = inverses, group_spans
        ctx.save_for_backward(out, *blocks)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        out, *blocks = ctx.saved_tensors
        spans_, n_groups = ctx.group_spans, len(ctx.group_spans)
        batch = out.shape[0]
        stacked = torch.empty((2 * batch, out.shape[1]), dtype=out.dtype, device=out.device)
        stacked[:batch] = out
        stacked[batch:] = grad
        buf = _Buffers(stacked, owned=True)
        grads: list[torch.Tensor | None] = [None] * len(blocks)
        want_blocks = any(ctx.needs_input_grad[4:])
        for layer in reversed(range(len(ctx.inverses))):
            ks = blocks[layer * n_groups : (layer + 1) * n_groups]
            adjoints = [k.mH.resolve_conj() for k in ks]
            ms = _apply_layer(buf, adjoints, spans_, batch if want_blocks else None)
            for j, (m, k) in enumerate(zip(ms, ks, strict=True) if want_blocks else ()):
                grads[layer * n_groups + j] = m @ k
            dst = buf.next()
            torch.index_select(buf.current, 1, ctx.inverses[layer], out=dst)
            buf.advance(dst)
        grad_state = buf.current[batch:] if ctx.needs_input_grad[0] else None
        return (grad_state, None, None, None, *grads)
