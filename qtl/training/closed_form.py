"""The closed-form training step of a dressed circuit: loss, gradients and Adam without autograd.

A training step of `DressedQuantumCircuit` on cached features spends, at 4-10 qubits, its time in
per-operation overhead (autograd records and replays about a hundred tiny operations, and
`Optimizer.step` adds its own Python); from 12 qubits on, in passes over the (B, 2**n) state, of
which autograd keeps one per layer. This step computes the same loss, gradients and Adam update with
the gradients written out by hand, as plain tensor operations and no graph:

    z = tanh(x W1^T + b1),  a = z pi/2               the pre-net
    psi_0 = (x)_w RY(a_w) v0_w                       product state: one gather, one product over wires
    psi_l = K_l P_l psi_(l-1),  l = 1..L             blocks: CNOT run P_l, then K_l = (x)_w RY(q_lw)
    e = psi_L^2 S,  logits = e W2^T + b2             <Z_i> by the sign table S, the post-net
    loss = cross_entropy(logits, y)

Every amplitude is real (H, RY, CNOT), and RY(q)' = J RY(q) / 2 with J = RY(pi), which commutes with
every RY on its wire: so the derivative of psi_0 in a_w is J_w psi_0 / 2, and that of K_l in q_lw is
J_w K_l / 2, where J_w only flips wire w's bit with a sign (a gather). The backward pass is the
transposed blocks applied in reverse, gradients of the blocks by sums of outer products, and these
flips. How the blocks are laid out depends on the width:

- up to `statevector.FULL_BLOCK_MAX_QUBITS` wires a layer is one 2**n x 2**n matrix with its CNOT run
  folded in (the native engine's gather table);
- up to `HALVES_MAX_QUBITS` the wires are split in two halves, the state is (B, 2**g1, 2**g2) and a
  layer is A s[perm] B^T; every state is kept for the backward pass;
- wider circuits (chain, ring or no entangler) as the native engine's "units" path simulates them
  (`qtl.quantum.engines._wide`, whose constants are named here): as units (`_units`), one 16 x 16
  matrix per group of 4 wires with the CNOTs folded in (from BACK_ONLY_MIN_QUBITS wires in "back"
  passes only), CHUNK_AMPLITUDES at a time so that a chunk of samples stays in cache from the
  embedding through the last layer and back, in three buffers and a quarter; the backward pass
  recovers each state from the next (the units are orthogonal), so memory does not grow with the
  depth or the batch. The layers' gradients come from one d x d cross matrix per unit. The chunks
  are shared among up to WIDE_WORKERS threads, each on one torch thread;
- but a chain's leading layers, from SPLIT_MIN_QUBITS wires, are first simulated as its two halves'
  states (`qtl.quantum.engines._split`: every CNOT across the cut doubles a sum of products, up to
  SPLIT_MAX_RANK of them held), by autograd on tensors of r 2**(n/2) amplitudes per sample; each chunk's
  state is then built from them with one product, and where they take every layer and it is cheaper,
  <Z> comes from their Gram matrices and the 2**n state is never built (at 20 qubits and depth 6,
  about a thirtieth of the units' flops).

The update is torch's fused Adam kernel on the optimizer's own state (exp_avg, exp_avg_sq, step), so
schedulers, checkpoints and later eager steps see exactly what `optimizer.step()` would leave; the
tests check loss, gradients and parameters against the autograd step to 1e-10 in float64. Its speed
against autograd and the machine's limits is measured by bench/peers.py and bench/roofline.py
(docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qtl.models.heads import DressedQuantumCircuit
from qtl.quantum.engines import _halves
from qtl.quantum.engines import _split as split
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _units as units
from qtl.quantum.engines import _wide as wide
from qtl.quantum.engines._compiler import INPUT_RY, WEIGHT_RY, Plan
from qtl.quantum.engines._memory import BufferPool, constant_tables
from qtl.quantum.engines.native import Layout, NativeEngine, device_tables
from qtl.training.optim import fused_adam_update

#: Widest circuit whose layers are one block or two halves' blocks (at most 32 x 32); wider circuits
#: take the units of `qtl.quantum.engines._units`.
HALVES_MAX_QUBITS = 10
#: Where the compiled closed-form step beats the eager one: up to this many qubits and batch * 2**n_qubits.
COMPILE_MAX_QUBITS, COMPILE_MAX_AMPLITUDES = 4, 256


def supports_closed_form(module: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether `closed_form_step` takes this pair: a `DressedQuantumCircuit` on the native engine with a
    real circuit (H, RY, CNOT; above HALVES_MAX_QUBITS wires with a chain, ring or no entangler), every
    parameter trained by one plain fused Adam (`qtl.training.optim.adam`; no weight decay, amsgrad or
    maximize) with one param group on one device."""
    if type(module) is not DressedQuantumCircuit or not isinstance(module.engine, NativeEngine):
        return False
    plan = module.engine.plan
    if not (plan.real and plan.prefix == INPUT_RY and plan.rounds in ((), WEIGHT_RY)):
        return False
    if plan.n_qubits > HALVES_MAX_QUBITS and units.compile_units(plan) is None:
        return False
    if not isinstance(optimizer, torch.optim.Adam) or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    if not group.get("fused") or group["weight_decay"] or group["amsgrad"] or group["maximize"]:
        return False
    params = list(module.parameters())
    if not all(p.requires_grad for p in params) or {id(p) for p in group["params"]} != set(map(id, params)):
        return False
    kinds = {(p.device, p.dtype) for p in params}
    return len(kinds) == 1 and params[0].dtype in (torch.float32, torch.float64)


def _embed_phases(plan: Plan, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, 2) phases: RY(a) v0 = cos(a / 2 + phases) for v0 each wire's starting state."""
    phi = torch.tensor([math.atan2(v[1].real, v[0].real) for v in plan.v0], dtype=torch.float64)
    return torch.stack((phi, phi - math.pi / 2), 1).to(device=device, dtype=dtype)


@dataclass(frozen=True, eq=False)
class _Tables:
    """Constant tensors of one circuit on one device in one dtype; built once, never written."""

    embed_phases: torch.Tensor  # (n, 2): RY(a) v0 = cos(a / 2 + phases), v0 each wire's starting state
    wire_index: tuple[torch.Tensor, ...]  # per half, gather [w, k] -> 2 w + bit_w(k): its state's factors
    block_index: tuple[torch.Tensor, ...]  # per half (one or two): gather building the layers' blocks
    perms: tuple[torch.Tensor, ...]  # two halves: per layer, the CNOT run's permutation and its inverse
    inverses: tuple[torch.Tensor, ...]
    signs: torch.Tensor  # (2**n, n) Z eigenvalues
    signs_t: torch.Tensor  # (n, 2**n), contiguous
    ry_phases: torch.Tensor  # (4,) cos(q/2 + phase) gives RY(q) = [[c, -s], [s, c]]: `sv.ry_shifts`
    flips: dict[int, tuple[torch.Tensor, torch.Tensor]]  # per width m: `flip_table(m)` on the device
    halves: tuple[int, ...]  # wires per half: (n,) when every layer is one matrix with its CNOTs folded in


@constant_tables(32)
def _tables(plan: Plan, layout: Layout, device: torch.device, dtype: torch.dtype) -> _Tables:
    n = plan.n_qubits
    t = device_tables(plan, layout, device, dtype)
    embed_phases = _embed_phases(plan, device, dtype)
    g1 = (n + 1) // 2
    halves = (n,) if n <= sv.FULL_BLOCK_MAX_QUBITS else (g1, n - g1)
    starts, signs = [0, *halves[:-1]], sv.sign_table(n)
    common = dict(
        embed_phases=embed_phases,
        wire_index=tuple(
            (2 * a + sv.kron_index(m, 2, 1)).reshape(-1).to(device)
            for a, m in zip(starts, halves, strict=True)
        ),
        signs=signs.to(device=device, dtype=dtype),
        signs_t=signs.T.contiguous().to(device=device, dtype=dtype),
        ry_phases=sv.ry_shifts(dtype, device),
        flips={
            m: tuple(
                x.to(device=device, dtype=dtype if x.is_floating_point() else None) for x in sv.flip_table(m)
            )
            for m in {n, *halves}
        },
    )
    if n <= sv.FULL_BLOCK_MAX_QUBITS:
        folded = () if t.folded is None else (t.folded,)
        return _Tables(block_index=folded, perms=(), inverses=(), halves=(n,), **common)
    block_index = []
    for size in (g1, n - g1):  # [layer, w, i, j] -> 4 (layer * size + w) + 2 bit_w(i) + bit_w(j)
        base = sv.kron_index(size, 2, 2).reshape(-1)
        rows = [layer * 4 * size + base for layer in range(plan.n_layers)]
        block_index.append((torch.cat(rows) if rows else base[:0]).to(device))
    perms = tuple(t.perms[e][0] for e in plan.entanglers)
    inverses = tuple(t.perms[e][1] for e in plan.entanglers)
    return _Tables(block_index=tuple(block_index), perms=perms, inverses=inverses, halves=halves, **common)


@dataclass(frozen=True, eq=False)
class _WideTables:
    """A wide circuit's constants: the embedding's phases, its units and their tables, and the leading
    layers its halves take (`qtl.quantum.engines._split`), if any."""

    embed_phases: torch.Tensor
    plan: units.UnitPlan
    units: units.UnitTables
    split: tuple[split.SplitPlan, _halves.HalvesTables] | None = None


@constant_tables(32)
def _wide_tables(
    plan: Plan, device: torch.device, dtype: torch.dtype, back_only: bool, sp: split.SplitPlan | None
) -> _WideTables:
    t = wide.wide_tables(plan, device, dtype, back_only, sp)
    return _WideTables(_embed_phases(plan, device, dtype), t.plan, t.units, t.split)


def _blocks(q: torch.Tensor, index: torch.Tensor, m: int, d: int, phases: torch.Tensor) -> torch.Tensor:
    """(L, m) RY angles -> (L, d, d) Kronecker products of each layer's m RY matrices (gathered by
    `index`, which may fold a row permutation in)."""
    return units.ry_table(q, phases).index_select(0, index).reshape(-1, m, d, d).prod(1)


def _angle_grads(
    g_block: torch.Tensor, block: torch.Tensor, flip: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """(L, d, d) blocks K = (x)_w RY(q_w) over m wires and their gradients -> (L, m) gradients of the
    angles, by dK/dq_w = J_w K / 2 (RY' = J RY / 2 with J = RY(pi), and J_w commutes with K)."""
    index, signs = flip
    n_layers, d, m = block.shape[0], block.shape[-1], signs.shape[0]
    moved = block.index_select(1, index).view(n_layers, m, d, d) * signs  # J_w K for every w
    return 0.5 * (moved * g_block.unsqueeze(1)).sum((-1, -2))


def _pre_net(embed_phases, w1, b1, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, F) features -> z (B, n) = tanh(x W1^T + b1) and v (B, n, 2) = RY(z pi/2) v0 on every wire."""
    z = torch.tanh(torch.addmm(b1, x, w1.T))
    return z, torch.cos(torch.add(embed_phases, z.unsqueeze(-1), alpha=math.pi / 4))


def _post_net(e, w2, b2, y, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, n) <Z_i> of b samples of a batch of `batch` -> their share of the mean cross-entropy, their
    correct count and d loss / d logits (b, C)."""
    logits = torch.addmm(b2, e, w2.T)
    logp = torch.log_softmax(logits, 1)
    nll = torch.nn.functional.nll_loss
    loss = nll(logp, y) if len(y) == batch else nll(logp, y, reduction="sum") / batch
    correct = (logits.argmax(1) == y).sum()
    return loss, correct, logp.exp_().scatter_(1, y.unsqueeze(1), -1.0, reduce="add").div_(batch)


def _grads(z, g_a, x, g_q, g_logits, e) -> list[torch.Tensor]:
    """The gradients [W1, b1, q, W2, b2] from those of the embedding angles (x2, g_a (B, n)), the
    weights and the logits."""
    g_pre = g_a.mul_(math.pi / 4).mul_(1.0 - z.square())  # the factor 1/2 of J_w / 2, then d a / d z
    return [g_pre.T @ x, g_pre.sum(0), g_q, g_logits.T @ e, g_logits.sum(0)]


def _loss_and_grads(t: _Tables, n_layers: int, w1, b1, q, w2, b2, x, y, scratch: Callable = torch.empty):
    """The step's loss, correct count and gradients [W1, b1, q, W2, b2] up to HALVES_MAX_QUBITS wires:
    plain tensor operations only.

    `scratch(shape, dtype=, device=)` gives the large intermediate buffers (`ClosedFormStep` passes its
    pool's; fresh ones by default).
    """
    batch, n = x.shape[0], w1.shape[0]
    dim = 2**n

    # forward: the pre-net, the product state, then the blocks; states[l] is the state after l blocks
    z, v = _pre_net(t.embed_phases, w1, b1, x)  # v = RY(a) v0, (B, n, 2)
    states = scratch((n_layers + 1, batch, dim), dtype=x.dtype, device=x.device)
    s, mids = states.unbind(0), []
    # each half's product state (one gather, one product over its wires); two halves: their outer product
    flat, halves = v.view(batch, 2 * n), []
    for index, m in zip(t.wire_index, t.halves, strict=True):
        out = s[0] if len(t.halves) == 1 else None
        halves.append(torch.prod(flat.index_select(1, index).view(batch, m, 2**m), 1, out=out))
    if len(halves) == 2:
        (g1, g2), (d1, d2) = t.halves, (2 ** t.halves[0], 2 ** t.halves[1])
        torch.mul(halves[0].unsqueeze(2), halves[1].unsqueeze(1), out=s[0].view(batch, d1, d2))
    if len(t.halves) == 1 and n_layers:
        kt = _blocks(q, t.block_index[0], n, dim, t.ry_phases).unbind(0)  # K.T per layer, CNOTs folded in
        for layer in range(n_layers):
            torch.mm(s[layer], kt[layer], out=s[layer + 1])
    elif n_layers:
        ka = _blocks(q[:, :g1].contiguous(), t.block_index[0], g1, d1, t.ry_phases)  # on wires < g1
        kb = _blocks(q[:, g1:].contiguous(), t.block_index[1], g2, d2, t.ry_phases)
        for layer in range(n_layers):  # s -> A s[perm] B^T, as (B, d1, d2)
            p = s[layer].index_select(1, t.perms[layer]).view(batch, d1, d2)
            u = p @ kb[layer].T
            mids.append((p, u))
            torch.matmul(ka[layer], u, out=s[layer + 1].view(batch, d1, d2))
    e = s[-1].square() @ t.signs
    loss, correct, g_logits = _post_net(e, w2, b2, y, batch)

    # backward: the loss, the post-net, then the blocks in reverse; grads[l] = d loss / d states[l]
    grads = scratch(states.shape, dtype=x.dtype, device=x.device)
    g = grads.unbind(0)
    torch.mul(s[-1], (g_logits @ w2) @ t.signs_t, out=g[-1]).mul_(2.0)
    if len(t.halves) == 1:
        for layer in reversed(range(n_layers)):
            torch.mm(g[layer + 1], kt[layer].T, out=g[layer])
        # every angle w of layer l (and of the embedding, l = 0) moves states[l] by J_w states[l] / 2
        index, signs = t.flips[n]
        moved = scratch(((n_layers + 1) * batch, n * dim), dtype=x.dtype, device=x.device)
        torch.index_select(states.view(-1, dim), 1, index, out=moved)
        moved = moved.view(n_layers + 1, batch, n, dim)
        per_sample = moved.mul_(signs.squeeze(-1)).mul_(grads.unsqueeze(2)).sum(-1)  # (L + 1, B, n), x2
        g_a, g_q = per_sample[0], per_sample[1:].sum(1).mul_(0.5)
    else:
        g_q = torch.zeros_like(q)
        if n_layers:
            g_ka, g_kb = torch.empty_like(ka), torch.empty_like(kb)
            for layer in reversed(range(n_layers)):
                p, u = mids[layer]
                g3 = g[layer + 1].view(batch, d1, d2)
                torch.sum(g3 @ u.mT, 0, out=g_ka[layer])
                g_u = ka[layer].T @ g3
                torch.sum(g_u.mT @ p, 0, out=g_kb[layer])
                torch.index_select((g_u @ kb[layer]).view(batch, dim), 1, t.inverses[layer], out=g[layer])
            g_q = torch.cat((_angle_grads(g_ka, ka, t.flips[g1]), _angle_grads(g_kb, kb, t.flips[g2])), 1)
        # the embedding: d psi0 / d a_w = J_w psi0 / 2 with psi0 = psi_a (x) psi_b, so for a wire w of
        # the first half <g, J_w psi0> = <J_w psi_a, g psi_b> (and likewise for the second half)
        g0 = g[0].view(batch, d1, d2)
        contracted = ((g0 @ halves[1].unsqueeze(2)).squeeze(2), (halves[0].unsqueeze(1) @ g0).squeeze(1))
        g_a = torch.cat(
            [sv.flip_dot(h, c, t.flips[m]) for h, c, m in zip(halves, contracted, t.halves, strict=True)], 1
        )  # x2
    return loss, correct, _grads(z, g_a, x, g_q.reshape(q.shape), g_logits, e)


def _wide_loss_and_grads(t: _WideTables, w1, b1, q, w2, b2, x, y, scratch: Callable = torch.empty):
    """`_loss_and_grads` above HALVES_MAX_QUBITS wires: a chain's leading layers on its two halves
    (`_split`, by autograd: small tensors, `_split.part_size` samples at a time so that memory stays flat in
    the batch), then the units of `t`, a chunk of samples at a time; where the halves take every
    layer and it takes fewer flops, <Z> comes from them (`_split.expvals`) and the state is never
    built.
    """
    z, v = _pre_net(t.embed_phases, w1, b1, x)
    batch = len(y)
    if t.split is None:
        sims = wide.unit_steps(t.plan, t.units, q, batch, scratch)
        loss, correct, e, g_logits, g_a = _chunks(t, sims, w2, b2, y, v, batch)
        return loss, correct, _grads(z, g_a, x, wide.angle_grads(sims, q), g_logits, e)
    sp, tables = t.split
    gram = not t.plan.units and sp.gram
    size = split.part_size(sp, x.element_size(), batch)
    sims = None if gram else wide.unit_steps(t.plan, t.units, q, min(batch, size), scratch)
    v_in, q_in = v.detach().requires_grad_(), q[: sp.layers].detach().requires_grad_()
    e, g_logits = torch.empty_like(z), torch.empty((batch, w2.shape[0]), dtype=x.dtype, device=x.device)
    loss, correct = 0, 0
    build = functools.partial(split.matrices, sp) if gram else _halves.matrices
    with _halves.shared_matrices(functools.partial(build, tables, q_in), backward=True) as mats:  # once
        for start in range(0, batch, size):
            part = slice(start, start + size)
            with torch.enable_grad():
                if gram:
                    e_in = split.expvals(sp, tables, t.plan, t.units, v_in[part], q_in, mats)
                else:
                    product = units.product_halves(t.plan, t.units, v_in[part])
                    halves = _halves.halves(sp, tables, product[1], product[3], q_in, mats=mats)
            if gram:
                e[part] = e_in.detach()
                share, right, g_logits[part] = _post_net(e[part], w2, b2, y[part], batch)
                outputs, g_outputs = (e_in,), (g_logits[part] @ w2,)
            else:
                start_state = tuple(h.detach() for h in halves)
                share, right, e[part], g_logits[part], g_outputs = _chunks(
                    t, sims, w2, b2, y[part], start_state, batch
                )
                outputs = halves
            loss, correct = loss + share, correct + right
            with torch.enable_grad():
                torch.autograd.backward(outputs, g_outputs)
    angle_grads = wide.angle_grads(sims or [], q)  # zeros on the Gram route (no units)
    angle_grads[: sp.layers] += q_in.grad
    # v = cos(a / 2 + phases): twice d loss / d a, as the units' `backward` gives it
    g_a = (v_in.grad * -torch.sin(torch.add(t.embed_phases, z.unsqueeze(-1), alpha=math.pi / 4))).sum(-1)
    return loss, correct, _grads(z, g_a, x, angle_grads, g_logits, e)


def _chunks(t: _WideTables, sims: list[units.UnitStep], w2, b2, y, start, total: int) -> tuple:
    """The units of `t` a chunk of samples at a time, from `start`: each wire's state after the
    embedding (b, n, 2), or the halves' (A, B) after their layers (`_halves.halves`), for b samples of a
    batch of `total`. Returns their share of the loss, correct count, <Z_i>, d loss / d logits and the
    gradient of `start` (of the embedding angles, x2; or of A and B); `sims` add up the cross matrices.

    With several chunks and torch on more than one CPU thread, the chunks are shared among the workers
    (`sims`, WIDE_WORKERS at most), each a thread simulating its chunks on one torch thread with buffers
    of its own: the products of a chunk are too small for torch's threads to share them well.
    """
    from_halves = isinstance(start, tuple)
    if from_halves:
        a, b = start  # (b, r, 2**m) each
        g_start = tuple(torch.empty(h.shape, dtype=h.dtype, device=h.device) for h in (a, b))
    else:
        g_start = torch.empty(start.shape[:2], dtype=start.dtype, device=start.device)
    like = a if from_halves else start
    batch, n = len(y), t.plan.n_qubits
    rows = wide.chunk_rows(t.plan, batch)
    e = torch.empty((batch, n), dtype=like.dtype, device=like.device)
    g_logits = torch.empty((batch, w2.shape[0]), dtype=like.dtype, device=like.device)

    def run(sim, mine: list[int]) -> tuple:
        loss, correct = 0, 0
        for first in mine:
            part = slice(first, first + rows)
            e[part] = sim.forward_from(a[part], b[part]) if from_halves else sim.forward(start[part])
            share, right, g_logits[part] = _post_net(e[part], w2, b2, y[part], total)
            loss, correct = loss + share, correct + right
            if from_halves:
                sim.backward_to(g_logits[part] @ w2, a[part], b[part], g_start[0][part], g_start[1][part])
            else:
                g_start[part] = sim.backward(g_logits[part] @ w2)
        return loss, correct

    parts = wide.share_chunks(sims, batch, rows, run)
    return sum(p[0] for p in parts), sum(p[1] for p in parts), e, g_logits, g_start


class ClosedFormStep:
    """`qtl.training.steps.train_step(module, optimizer, x, y)` for a `supports_closed_form` pair, in closed
    form; returns (loss, correct).

    The step's gradients are never written to `.grad`; `last_grads` holds the last step's, in the order
    of `params` (fit() samples their norms: `qtl.training.gradients`).
    With `compile_batch`, batches of that size run the loss and gradients as one `torch.compile`d graph
    (it compiles on the first such batch; `compile_seconds` says how long that took), other sizes the
    same operations eagerly.
    """

    def __init__(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, compile_batch: int | None = None
    ) -> None:
        if not supports_closed_form(module, optimizer):
            raise ValueError(
                "the closed-form step takes a real DressedQuantumCircuit on the native engine and fused Adam"
            )
        self.module, self.optimizer = module, optimizer
        self.params = [module.pre_net.weight, module.pre_net.bias, module.q_params]
        self.params += [module.post_net.weight, module.post_net.bias]
        self.n_layers = module.engine.plan.n_layers
        self.wide = module.engine.n_qubits > HALVES_MAX_QUBITS  # the units, a chunk at a time
        self._tables: tuple | None = None  # ((device, dtype), _Tables or _WideTables) of the last step
        # the large intermediate buffers, kept from step to step: a fresh allocation of that size would
        # page-fault in again on every step (in huge pages where large enough: `huge_page_empty`); all
        # of them, however large, since the next step takes the same ones
        self._pool = BufferPool(max_bytes=sys.maxsize)
        self.compile_batch, self.compile_seconds = compile_batch, None
        self._compiled = None
        self.last_grads: list[torch.Tensor] | None = None
        if compile_batch is not None:  # (only the tiniest steps: `worth_compiling_closed_form`)
            # cpp_wrapper: a C++ wrapper calls the kernels, so a call costs less Python
            options = {"cpp_wrapper": True}
            self._compiled = torch.compile(_loss_and_grads, fullgraph=True, dynamic=False, options=options)

    def __call__(self, module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        if module is not self.module or optimizer is not self.optimizer:
            raise ValueError("this closed-form step belongs to another module or optimizer")
        with torch.no_grad():
            loss, correct, grads = self.loss_and_grads(x, y)
            fused_adam_update(self.optimizer, self.params, grads)
        self.last_grads = grads
        return loss, correct

    @torch.no_grad()
    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Cross-entropy loss, correct predictions and the gradients of [W1, b1, q, W2, b2] on a batch."""
        w1 = self.params[0]
        if self._tables is None or self._tables[0] != (w1.device, w1.dtype):  # first step, or moved
            engine: NativeEngine = self.module.engine
            plan = engine.plan
            built = (
                _wide_tables(plan, w1.device, w1.dtype, wide.back_only(plan), wide.split_plan(plan))
                if self.wide
                else _tables(engine.plan, engine.layout, w1.device, w1.dtype)
            )
            self._tables = (w1.device, w1.dtype), built
        tables, x = self._tables[1], x.to(w1.dtype)
        lease = self._pool.lease()
        try:
            if self.wide:
                return _wide_loss_and_grads(tables, *self.params, x, y, lease.take)
            args = (tables, self.n_layers, *self.params, x, y)
            if self._compiled is None or len(x) != self.compile_batch:
                return _loss_and_grads(*args, lease.take)
        finally:
            lease.release()
        start = time.perf_counter()
        out = self._compiled(*args)  # its own buffers: inductor plans them
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        return out


def worth_compiling_closed_form(batch_size: int, n_qubits: int) -> bool:
    """Whether compiling the closed-form step makes it faster: only for the tiniest steps, where the eager
    step is all per-operation overhead (COMPILE_MAX_QUBITS, COMPILE_MAX_AMPLITUDES; the measurements
    behind them are in docs/benchmarks.md, "Peers")."""
    return n_qubits <= COMPILE_MAX_QUBITS and batch_size * 2**n_qubits <= COMPILE_MAX_AMPLITUDES


def closed_form_step(
    module: nn.Module, optimizer: torch.optim.Optimizer, compile_batch: int | None = None
) -> Callable:
    """A drop-in for `qtl.training.steps.train_step(module, optimizer, x, y)` for a
    `supports_closed_form` pair; with `compile_batch`, compiled for batches of that size
    (`ClosedFormStep`)."""
    return ClosedFormStep(module, optimizer, compile_batch)
