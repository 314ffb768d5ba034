"""A wide circuit simulated a chunk of samples at a time: its leading layers on its two halves, then units.

What the closed-form training step (`qtl.training.closed_form`, above 10 wires) and the native engine's
"units" path (`qtl.quantum.engines.native`) share:

- a chain's leading layers, from SPLIT_MIN_QUBITS wires, as its two halves' states (`_split`: every
  CNOT across the cut doubles a sum of products, up to SPLIT_MAX_RANK of them held): `split_plan`;
- the layers after them as units (`_units`: one 16 x 16 matrix per group of 4 wires, the CNOTs folded
  in), in "back" passes only from BACK_ONLY_MIN_QUBITS wires or after the halves: `wide_units`;
- about CHUNK_AMPLITUDES amplitudes of samples at a time (`chunk_rows`), so that a chunk stays in cache
  from the first unit to the last, shared among up to WIDE_WORKERS threads (`wide_workers`).

`expvals` is <Z_i> of a batch by them, never more than the workers' chunks of the 2**n state at once
(the engine's other paths build the whole batch's state), differentiable: the backward runs each
chunk's forward again, then its backward as the closed-form step does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qtl.quantum.engines import _halves
from qtl.quantum.engines import _split as split
from qtl.quantum.engines import _units as units
from qtl.quantum.engines._compiler import Plan
from qtl.quantum.engines._memory import constant_tables
from qtl.utils.threads import side_by_side

#: Wide circuits are simulated a chunk of samples at a time, about this many amplitudes of the state
#: (and as many of its gradient), so that a chunk stays in cache through every layer.
CHUNK_AMPLITUDES = 2**18
#: Most threads a wide step shares its chunks among (never more than torch's CPU threads).
WIDE_WORKERS = 2
#: From this many qubits on every pass is a "back" pass, the chunk's samples the products' batch
#: (`compile_units`'s back_only): its groups are all of 4 wires where the width is a multiple of 4.
BACK_ONLY_MIN_QUBITS = 14
#: A chain's leading layers are simulated as its two halves' states while their sum has at most this
#: many products (`qtl.quantum.engines._split`; 0: never), from SPLIT_MIN_QUBITS wires (below, the
#: autograd of the halves costs more than the layers it saves; measured in docs/benchmarks.md).
SPLIT_MAX_RANK, SPLIT_MIN_QUBITS = 128, 12
#: Chunks' worth of memory each worker holds: the state, its gradient and the next product's output,
#: and a quarter of one (`_units.UnitStep`; a forward alone writes all but the gradient, but the
#: allocator may hand out pages already written), and temporaries up to about one more (a ring's flips).
BUFFERS = 4.5
#: A part's halves at their peak while a forward builds them (`_halves.halves`), over their final size (A
#: and B), and with every product's input kept for the backward and A's and B's gradients. With these,
#: the units path's estimate was 1.3-2.7x its peak RSS measured at 18-22 qubits, depth 8 and 9, batch
#: 32-256 (`bench/memory_estimates.py`; docs/benchmarks.md, "The memory estimates").
HALVES_PEAK, HALVES_TRAINING_PEAK = 4, 6
#: Bytes a forward takes besides its tensors, and a forward and backward: the worker threads', autograd's
#: and the math library's own (peak RSS measured up to 15 and 45 MiB over the tensors at 16-20 qubits).
RUNTIME_BYTES, TRAINING_RUNTIME_BYTES = 32 * 2**20, 64 * 2**20


@dataclass(frozen=True, eq=False)
class WideTables:
    """A wide circuit's units and their tables, and the leading layers its halves take, if any."""

    plan: units.UnitPlan
    units: units.UnitTables
    split: tuple[split.SplitPlan, _halves.HalvesTables] | None = None


def split_plan(plan: Plan, gram: bool = True) -> split.SplitPlan | None:
    """The leading layers a wide chain's halves take (`_split`), at most SPLIT_MAX_RANK products held and
    no more than the smaller half's states (the units' product state cut at the same wire: `wide_units`),
    every layer where <Z> comes from their Gram matrices (`_split.whole_plan`; not with `gram`
    False, for a forward that builds the state from the halves' products: at most SPLIT_MAX_RANK of
    them): from BACK_ONLY_MIN_QUBITS wires (the units after them in back passes), below where they take
    every layer (no units left)."""
    if plan.n_qubits < SPLIT_MIN_QUBITS:
        return None
    sp = (gram and split.whole_plan(plan, SPLIT_MAX_RANK)) or split.leading_plan(plan, SPLIT_MAX_RANK)
    if sp and plan.n_qubits < BACK_ONLY_MIN_QUBITS and sp.layers < plan.n_layers:
        return None
    return sp


def back_only(plan: Plan) -> bool:
    """Whether every pass of the plan's units is a "back" pass."""
    return plan.n_qubits >= BACK_ONLY_MIN_QUBITS or split_plan(plan) is not None


def wide_units(plan: Plan, batch: int, gram: bool = True) -> tuple[units.UnitPlan, int]:
    """The units a wide circuit runs (back passes only from BACK_ONLY_MIN_QUBITS wires, after the layers
    its halves take: `split_plan(plan, gram)`) and how many of a batch's samples a chunk holds."""
    sp = split_plan(plan, gram)
    uplan = units.compile_units(plan, back_only(plan), sp.layers if sp else 0, sp.cut if sp else None)
    return uplan, chunk_rows(uplan, batch)


def chunk_rows(uplan: units.UnitPlan, batch: int) -> int:
    """Samples per chunk: about CHUNK_AMPLITUDES amplitudes."""
    return max(1, min(batch, CHUNK_AMPLITUDES >> uplan.n_qubits))


def wide_workers(batch: int, rows: int) -> int:
    """Threads a wide CPU simulation shares its chunks of `rows` samples among: WIDE_WORKERS at most,
    never more than torch's threads or the chunks."""
    return min(WIDE_WORKERS, torch.get_num_threads(), -(-batch // rows))


@constant_tables(32)
def wide_tables(
    plan: Plan, device: torch.device, dtype: torch.dtype, back_only: bool, sp: split.SplitPlan | None
) -> WideTables:
    uplan = units.compile_units(plan, back_only, sp.layers if sp else 0, sp.cut if sp else None)
    return WideTables(
        uplan,
        units.unit_tables(uplan, plan.n_layers, device, dtype),
        (sp, _halves.halves_tables(sp, device, dtype)) if sp else None,
    )


def units_tables(plan: Plan, device: torch.device, dtype: torch.dtype) -> WideTables:
    """`wide_tables` of the plan for `expvals`: the halves' layers never past SPLIT_MAX_RANK products
    (`split_plan(plan, gram=False)`), as `back_only` and `split_plan` take the plan now."""
    return wide_tables(plan, device, dtype, back_only(plan), split_plan(plan, gram=False))


def forward_bytes(plan: Plan, batch: int, itemsize: int, training: bool = False) -> int:
    """Bytes `expvals` holds for a batch, forward and, `training`, backward: each worker's chunk buffers
    (the backward's beside the forward's, which the allocator may keep), one part's halves
    (`_split.part_size` samples) at their peak where the halves take layers, <Z> and the runtime's
    own."""
    uplan, rows = wide_units(plan, batch, gram=False)
    workers = min(WIDE_WORKERS, -(-batch // rows)) if batch else 1
    buffers = BUFFERS * workers * rows * 2**plan.n_qubits * itemsize * (2 if training else 1)
    total = int(buffers) + batch * plan.n_qubits * itemsize
    total += TRAINING_RUNTIME_BYTES if training else RUNTIME_BYTES
    sp = split_plan(plan, gram=False)
    if sp is not None:
        peak = HALVES_TRAINING_PEAK if training else HALVES_PEAK
        total += peak * sp.states * itemsize * split.part_size(sp, itemsize, batch)
    return total


def unit_steps(
    uplan: units.UnitPlan, ut: units.UnitTables, q: torch.Tensor, batch: int, scratch: Callable = torch.empty
) -> list[units.UnitStep]:
    """One `UnitStep` of the units `uplan` (tables `ut`) per worker (`wide_workers` on CPU, else one) for
    batches of up to `batch` samples, each with its buffers from `scratch` (taken in the calling
    thread); they add up the cross matrices of every chunk they run backward."""
    n, rows = uplan.n_qubits, chunk_rows(uplan, batch)
    workers = wide_workers(batch, rows) if q.device.type == "cpu" else 1
    sims = []
    for _ in range(workers):
        buffers = tuple(scratch((rows, 2**n), dtype=q.dtype, device=q.device) for _ in range(3))
        buffers += (scratch((rows, 2**n // 4), dtype=q.dtype, device=q.device),)
        sims.append(units.UnitStep(uplan, ut, q, q.shape[0], buffers))
    return sims


def angle_grads(sims: list[units.UnitStep], q: torch.Tensor) -> torch.Tensor:
    """The gradients of the layers' angles q from the cross matrices the unit steps added up (zeros for
    none)."""
    zeros = torch.zeros(q.numel(), dtype=q.dtype, device=q.device)
    return sum((sim.angle_grads() for sim in sims), zeros).view(q.shape)


def share_chunks(sims: list[units.UnitStep], batch: int, rows: int, run: Callable) -> list:
    """`run(sim, firsts)` for each worker's share of the batch's chunks (the first sample of each, in
    turn among the sims), side by side, each on one torch thread (MKL's products in two workers ran
    1.7x slower on three or more); their results."""
    starts = list(range(0, batch, rows))
    workers = min(len(sims), len(starts))
    return side_by_side([functools.partial(run, sims[k], starts[k::workers]) for k in range(workers)])


def expvals(plan: Plan, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """<Z_i> (B, n) of a plan the units run (`_units.compile_units`), from each wire's state after the
    embedding v (B, n, 2) and the layers' RY angles q (L, n). The halves take the leading layers
    (`split_plan(plan, gram=False)`: the state is built from their products), a part of the batch at a
    time (`_split.part_size`), then each part's chunks run through the units, shared among the workers
    (`wide_workers`) on CPU. Differentiable in v and q (`_UnitsExpvals`: the backward runs each chunk's
    forward again, then the units' transposes in reverse, as the closed-form step does)."""
    if torch.is_grad_enabled() and (v.requires_grad or q.requires_grad):
        return _UnitsExpvals.apply(plan, v, q)
    with torch.no_grad():
        return _run(plan, v, q)


class _UnitsExpvals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan, v, q):
        ctx.plan = plan
        ctx.save_for_backward(v, q)
        return _run(plan, v, q)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_e):
        v, q = ctx.saved_tensors
        return None, *_run(ctx.plan, v.detach(), q.detach(), g_e.contiguous(), ctx.needs_input_grad[1])


def _run(plan: Plan, v: torch.Tensor, q: torch.Tensor, g_e: torch.Tensor | None = None, grad_v: bool = True):
    """`expvals`' work: with g_e None, <Z_i>; else, from d loss / d <Z_i>, the gradients of v (None
    without `grad_v`) and q."""
    batch = v.shape[0]
    t = units_tables(plan, v.device, v.dtype)
    rows = chunk_rows(t.plan, batch)
    sims = unit_steps(t.plan, t.units, q, batch)
    out = torch.empty((batch, plan.n_qubits), dtype=v.dtype, device=v.device) if g_e is None else None
    v_in = v if g_e is None else v.detach().requires_grad_(grad_v)
    sp, st = t.split if t.split else (None, None)
    q_in = q[: sp.layers] if sp else None
    if sp and g_e is not None:
        q_in = q_in.detach().requires_grad_()
    size = split.part_size(sp, v.dtype.itemsize, batch) if sp else max(batch, 1)
    backward = g_e is not None
    matrices = functools.partial(_halves.matrices, st, q_in)  # once for every part
    with _halves.shared_matrices(matrices, backward) if sp else contextlib.nullcontext() as mats:
        for start in range(0, batch, size):
            part = slice(start, start + size)
            with torch.set_grad_enabled(backward):
                product = units.product_halves(t.plan, t.units, v_in[part])
                halves = _halves.halves(sp, st, product[1], product[3], q_in, mats=mats) if sp else None
            if g_e is None:
                del product  # one part's halves at a time (`forward_bytes`)
                _chunks(sims, halves if sp else v[part], None, out[part], None, rows)
                continue
            ends = halves if sp else (product[1], product[3])  # what the units start from, and its graph
            grads = tuple(torch.empty_like(h) for h in ends)
            _chunks(sims, tuple(h.detach() for h in halves) if sp else v[part], grads, None, g_e[part], rows)
            if ends[0].requires_grad:  # else neither v nor the halves' angles need it
                torch.autograd.backward(ends, grads)
    if g_e is None:
        return out
    g_q = angle_grads(sims, q)
    if sp and q_in.grad is not None:  # None for an empty batch
        g_q[: sp.layers] += q_in.grad
    return v_in.grad, g_q


def _chunks(sims: list[units.UnitStep], start, grads, out, g_e, rows: int) -> None:
    """The chunks of a part, `rows` samples at a time, shared among the sims (`share_chunks`), from each
    wire's state (a tensor), or the halves' A and B (a pair: `UnitStep.forward_from`): with g_e None
    <Z_i> into out; else each chunk's forward again and its backward from g_e, the gradients of the
    product state's halves (`backward_product`), or of A and B (`backward_to`), into the pair grads."""
    halves = isinstance(start, tuple)
    count = len(start[0]) if halves else len(start)

    def run(sim: units.UnitStep, firsts: list[int]) -> None:
        for first in firsts:
            c = slice(first, first + rows)
            e = sim.forward_from(start[0][c], start[1][c]) if halves else sim.forward(start[c])
            if g_e is None:
                out[c] = e
            elif halves:
                sim.backward_to(g_e[c], start[0][c], start[1][c], grads[0][c], grads[1][c])
            else:
                grads[0][c], grads[1][c] = sim.backward_product(g_e[c])

    share_chunks(sims, count, rows, run)
