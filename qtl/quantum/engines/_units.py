"""Units: the layers of a real chain or ring circuit as one d x d matrix per wire group, CNOTs folded in.

A layer l of the dressed circuit is a CNOT run (even pairs E_l, then odd pairs O_l, then on a ring the
pair (n-1, 0)) and an RY on every wire, R_l. Its state is simulated for a chunk of S samples at once,
as one tensor in which the samples are one more axis among the wires' groups. A layer is a *pass* of
one matrix product per wire group (d = 2**size states), each over the whole chunk:

    pass "back"  (even layers): groups start at even wires, the leading group is contracted and moves
                 to the back:  out (M, d) = x'^T K^T  for x (d, M)
    pass "front" (odd layers):  groups start at odd wires (the first at wire 0), the trailing group is
                 contracted and moves to the front:  out (d, M) = K x^T  for x (M, d)

with M everything else, samples included. After a pass the groups are back in wire order and the
samples axis has moved across them: from the back to the front in a "back" pass, and back again in a
"front" pass, so every product is a single matrix product over the chunk. A "front" pass has a group
of 3 and one of 5 wires where the width is a multiple of 4 (their products run 2-4x slower per flop
than those of 4), so wider circuits take "back" passes only (`compile_units`'s back_only): the
samples then lead throughout, as the batch of every product (x (S, d, M) -> out (S, M, d)).

A pass applies O_l, R_l and the next layer's even pairs E_l+1 (the first layer's even pairs act on the
product state). Each unit's matrix is K = Q_after R Q_before, with R the RY of the group's wires and
the group's CNOTs folded in: Q_before, the odd pairs inside the group; Q_after, the next even pairs
inside it. A pair across two groups is folded into the product instead, as a permutation of M's halves
for the rows of odd index (the control is the group's last wire, the target leads M), which splits the
product in three (a "back" unit) or costs a copy of half the state (a "front" unit, exchanging the
halves after one product), and costs no pass of its own:

- "back" passes: groups start at even wires, so even pairs never cross; an odd pair crosses from the
  last wire of group j into group j+1, and acts on unit j's input, before either wire's RY;
- "front" passes: groups start at odd wires (the first at wire 0), so odd pairs never cross; an even
  pair crosses from group j into group j+1, and acts on unit j's output, after both wires' RY (the
  units run from the last group down, so group j+1 is done and leads M).

On a ring, the pair (n-1, 0) is applied before the pass by swapping two halves of the state (with an
odd number of wires, the odd pair (n-2, n-1) is moved past it: the swap is where wire n-2 xor wire
n-1 is 1). Backward, each unit's transpose is applied to the state and to its gradient in reverse
(the folds undone on the other side; three buffers: each product writes where the state it recovers
no longer needs to be), and the gradient of the unit's matrix comes from one d x d
cross matrix C = g^T psi taken on the side of the unit without a fold: since RY(q)' = J RY(q) / 2
with J = RY(pi), which commutes with the rotations, dL/dq_w = <Q C Q^T, J_w> / 2 there (Q = Q_after^T
on the output side, Q_before on the input side).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines._compiler import Plan
from qtl.quantum.engines._memory import constant_tables

#: Wires per group (see `groups`): 16 x 16 matrices, the size at which a unit's product costs about
#: one pass over the state; smaller groups make slow products when they move to the back.
GROUP_QUBITS = 4


Mats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a unit's matrix, its even rows, its odd rows


@dataclass(frozen=True)
class Unit:
    """One matrix product of a pass: the group's d = 2**size states, d x d matrix K."""

    layer: int
    start: int  # the group's first wire
    size: int  # its number of wires
    to_back: bool  # a "back" pass (the leading group moves to the back), else a "front" pass
    before: tuple[int, ...]  # Q_before as a gather index over the group's states: (Q s)[j] = s[before[j]]
    after: tuple[int, ...]  # Q_after, likewise
    fold: (
        bool  # a CNOT from the group's last wire into the next group: on the input ("back"), output ("front")
    )


@dataclass(frozen=True)
class Ring:
    """The ring's CNOT (n-1, 0), before a pass: wire 0 flips where wire n-1 (xor wire n-2) is 1."""

    layer: int
    parity: bool  # odd n: the control is wire n-2 xor wire n-1 (the odd pair (n-2, n-1) moved past it)


@dataclass(frozen=True)
class UnitPlan:
    """A circuit's layers as units, and its product state's two halves (wires [0, a) and [a, n))."""

    n_qubits: int
    steps: tuple[Unit | Ring, ...]  # in application order, layer by layer
    halves: tuple[int, int]  # wires per half; the first is even, so no even pair crosses
    embed: tuple[tuple[int, ...], tuple[int, ...]]  # the first layer's even pairs, per half (gather)
    back_only: bool = False  # every pass a "back" pass, the samples the products' batch (leading)

    @property
    def units(self) -> tuple[Unit, ...]:
        return tuple(s for s in self.steps if isinstance(s, Unit))

    def samples_first(self, n_layers: int) -> bool:
        """Whether the samples axis leads after `n_layers` passes (it starts last and each pass moves
        it; with `back_only` it always leads: the samples are the products' batch)."""
        return self.back_only or n_layers % 2 == 1


def _run(pairs: tuple[tuple[int, int], ...], n: int) -> tuple[set, set, bool] | None:
    """A CNOT run as (even pairs, odd pairs, ring), or None unless it is even pairs, then odd pairs,
    then at most (n-1, 0), each at most once."""
    evens: set = set()
    odds: set = set()
    ring, stage = False, 0
    for a, b in pairs:
        if (a, b) == (n - 1, 0) and n > 2 and not ring:
            ring, stage = True, 2
        elif b == a + 1 and a % 2 == 0 and stage == 0 and (a, b) not in evens:
            evens.add((a, b))
        elif b == a + 1 and a % 2 == 1 and stage <= 1 and (a, b) not in odds:
            odds.add((a, b))
            stage = 1
        else:
            return None
    return evens, odds, ring


def groups(n: int, front: bool = False) -> list[tuple[int, int]]:
    """(start, size) of the wire groups of a pass: groups of GROUP_QUBITS wires starting at wire 0
    ("back" passes) or after a first group of 3 or 5 wires ("front" passes, whose groups start at odd
    wires); a remainder of one wire joins the last group, a larger one is a group of its own."""
    sizes = [] if not front else [5 if (n - 3) % GROUP_QUBITS == 2 else 3]
    rest = n - sum(sizes)
    sizes += [GROUP_QUBITS] * (rest // GROUP_QUBITS)
    if rest % GROUP_QUBITS == 1 and len(sizes) > (1 if front else 0):
        sizes[-1] += 1
    elif rest % GROUP_QUBITS:
        sizes.append(rest % GROUP_QUBITS)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return list(zip(starts, sizes, strict=True))


def _local(pairs, start: int, size: int) -> tuple[int, ...]:
    """Gather index over a group's 2**size states of the CNOTs among `pairs` inside the group."""
    end = start + size
    inside = sorted((a - start, b - start) for a, b in pairs if start <= a < end and start <= b < end)
    return tuple(sv.cnot_permutation(size, inside).tolist())


@functools.lru_cache(maxsize=64)
def compile_units(
    plan: Plan, back_only: bool = False, first_layer: int = 0, cut: int | None = None
) -> UnitPlan | None:
    """The plan's layers as units; None for a plan they cannot express (complex gates, a layer of other
    than one RY per wire, or CNOT runs other than chain and ring). With `first_layer`, the steps start at
    that layer's pass (the layers before it are simulated otherwise: `qtl.quantum.engines._split`). The
    product state's halves meet at wire `cut` (even; None: 2 (n // 4)), where the halves that simulate
    the first layers meet (`_split.SplitPlan.cut`).

    Passes alternate between "back" and "front" so that the samples axis, one more axis among the
    groups, ends each pass where the next one needs it; with `back_only` every pass is a "back" pass,
    whose groups start at even wires (all of 4 wires where n is a multiple of 4, where a "front" pass
    has a group of 3 and one of 5), and the samples lead throughout as the products' batch."""
    n, n_layers = plan.n_qubits, plan.n_layers
    if first_layer and not back_only:
        raise ValueError("the steps start after the first layer only in back passes (samples leading)")
    if not plan.real or len(plan.rounds) > 1 or (plan.rounds and plan.rounds[0].gate != "RY") or n < 4:
        return None
    runs = [_run(e.pairs, n) for e in plan.entanglers]
    if any(r is None for r in runs):
        return None
    steps: list[Unit | Ring] = []
    for layer, (_, odds, ring) in enumerate(runs):
        to_back = back_only or layer % 2 == 0
        evens_next = runs[layer + 1][0] if layer + 1 < n_layers else set()
        parts = groups(n, front=not to_back)
        crossing = odds if to_back else evens_next
        simulated = layer >= first_layer
        if ring and simulated:
            steps.append(Ring(layer, parity=n % 2 == 1))
        for start, size in (parts if to_back else parts[::-1]) if simulated else ():
            last = start + size - 1
            fold = (last, last + 1) in crossing
            units_after = _local(evens_next, start, size)
            steps.append(Unit(layer, start, size, to_back, _local(odds, start, size), units_after, fold))
        inside = [_local_pairs(p, parts) for p in (odds | evens_next)]
        folded = {(s + z - 1, s + z) for s, z in parts[:-1]} & crossing
        if not all(inside[i] or p in folded for i, p in enumerate(odds | evens_next)):
            return None
    first = runs[0][0] if runs else set()
    half = 2 * (n // 4) if cut is None else cut
    if half % 2 or not 0 < half < n:
        raise ValueError(f"the product state's halves meet at an even wire inside the circuit, not {half}")
    embed = (_local(first, 0, half), _local(first, half, n - half))
    return UnitPlan(n, tuple(steps), (half, n - half), embed, back_only)


def _local_pairs(pair: tuple[int, int], parts: list[tuple[int, int]]) -> bool:
    """Whether both wires of `pair` are in the same group."""
    return any(start <= min(pair) and max(pair) < start + size for start, size in parts)


@dataclass(frozen=True, eq=False)
class UnitTables:
    """Constant tensors of a unit plan on one device in one dtype (built once, never written)."""

    sizes: tuple[int, ...]  # the distinct unit sizes, in the order `matrices` builds them
    members: tuple[tuple[int, ...], ...]  # per size, the units (positions in `UnitPlan.units`) of that size
    kron: tuple[torch.Tensor, ...]  # per size, gather index (U * d * d * size,) into the flat RY table
    c_offsets: tuple[int, ...]  # per unit, where its d x d cross matrix C starts in one flat buffer
    c_total: int  # that buffer's length; one more slot, always 0, pads `grad_index`
    grad_index: torch.Tensor  # (n_layers * n, d_max): (Q C Q^T)[a, a ^ bit_w] in that buffer
    grad_signs: torch.Tensor  # (n_layers * n, d_max): J_w's entries, 0 in the padding
    embed: tuple[torch.Tensor, ...]  # per half, the first layer's even pairs (gather), and their inverse
    embed_inverse: tuple[torch.Tensor, ...]
    signs: tuple[torch.Tensor, ...]  # per half, (2**m, m) Z eigenvalues, and transposed
    signs_t: tuple[torch.Tensor, ...]
    flips: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per half, `flip_table(m)` on the device


def _kron_gather(unit: Unit, n: int) -> torch.Tensor:
    """(d, d, size) positions into the flat (n_layers * n) x 4 table of every RY(q) (row-major 2 x 2):
    K = Q_after R Q_before, K[a, b] = prod over the group's wires of RY_w[bit_w(after[a]),
    bit_w(before^-1[b])]."""
    size = unit.size
    shifts = size - 1 - torch.arange(size)
    row_bits = (torch.tensor(unit.after)[:, None] >> shifts) & 1  # (d, size)
    col_bits = (torch.argsort(torch.tensor(unit.before))[:, None] >> shifts) & 1
    matrix = unit.layer * n + unit.start + torch.arange(size)
    return 4 * matrix.view(1, 1, size) + 2 * row_bits[:, None, :] + col_bits[None, :, :]


@constant_tables(32)
def unit_tables(uplan: UnitPlan, n_layers: int, device: torch.device, dtype: torch.dtype) -> UnitTables:
    """The constant tensors `UnitStep` needs for `uplan` (of a plan with `n_layers` layers)."""
    n, all_units = uplan.n_qubits, uplan.units
    sizes = tuple(sorted({u.size for u in all_units}, reverse=True))
    members = tuple(tuple(i for i, u in enumerate(all_units) if u.size == s) for s in sizes)
    kron = tuple(
        torch.stack([_kron_gather(all_units[i], n) for i in group]).reshape(-1).to(device)
        for group in members
    )
    offsets, total = [], 0
    for u in all_units:
        offsets.append(total)
        total += 4**u.size
    d_max = max((2**u.size for u in all_units), default=1)
    grad_index = torch.full((n_layers * n, d_max), total, dtype=torch.int64)
    grad_signs = torch.zeros((n_layers * n, d_max), dtype=torch.float64)
    for u, offset in zip(all_units, offsets, strict=True):
        d, a = 2**u.size, torch.arange(2**u.size)
        # C is taken on the side without a fold: the output of a "back" unit (Q = Q_after^T,
        # (Q C Q^T)[a, b] = C[after^-1[a], after^-1[b]]), the input of a "front" one (Q = Q_before)
        q = torch.argsort(torch.tensor(u.after)) if u.to_back else torch.tensor(u.before)
        for w in range(u.start, u.start + u.size):
            bit = 1 << (u.size - 1 - (w - u.start))
            grad_index[u.layer * n + w, :d] = offset + q[a] * d + q[a ^ bit]
            grad_signs[u.layer * n + w, :d] = torch.where(a & bit > 0, 1.0, -1.0)
    embed = [torch.tensor(p) for p in uplan.embed]
    signs = [sv.sign_table(m) for m in uplan.halves]
    flips = [sv.flip_table(m) for m in uplan.halves]
    return UnitTables(
        sizes=sizes,
        members=members,
        kron=kron,
        c_offsets=tuple(offsets),
        c_total=total,
        grad_index=grad_index.to(device),
        grad_signs=grad_signs.to(device=device, dtype=dtype),
        embed=tuple(p.to(device) for p in embed),
        embed_inverse=tuple(torch.argsort(p).to(device) for p in embed),
        signs=tuple(s.to(device=device, dtype=dtype) for s in signs),
        signs_t=tuple(s.T.contiguous().to(device=device, dtype=dtype) for s in signs),
        flips=tuple((index.to(device), s.to(device=device, dtype=dtype)) for index, s in flips),
    )


def ry_table(q: torch.Tensor, phases: torch.Tensor | None = None) -> torch.Tensor:
    """(n_layers, n) RY angles -> the flat (n_layers * n * 4,) table of every RY(q), row-major 2 x 2,
    that `_kron_gather`'s positions point into. `phases`: `sv.ry_shifts` on q's device (given where a
    compiled step takes it as an input)."""
    phases = sv.ry_shifts(q.dtype, q.device) if phases is None else phases
    return torch.cos(torch.add(phases, q.reshape(-1, 1), alpha=0.5)).reshape(-1)


def kron_products(table: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """The Kronecker products of `size` wires' RYs whose `_kron_gather` positions `index` concatenates
    -> (count, d, d), from `ry_table`."""
    d = 2**size
    return table.index_select(0, index).view(-1, d, d, size).prod(-1)


def matrices(t: UnitTables, q: torch.Tensor, n_units: int) -> list[torch.Tensor]:
    """(n_layers, n) RY angles -> every unit's (d, d) matrix K, in unit order."""
    table = ry_table(q)
    out: list[torch.Tensor] = [table] * n_units
    for size, group, index in zip(t.sizes, t.members, t.kron, strict=True):
        for i, k in zip(group, kron_products(table, index, size).unbind(0), strict=True):
            out[i] = k
    return out


# ---- the kernels, on contiguous buffers holding a chunk's states (any layout of the group's axis).
# Each returns its operations with every view bound (`Op`s): a step runs the same operations on the same
# buffers for every chunk, so `UnitStep` builds them once per chunk size and a chunk costs one Python
# call per product or copy (fewer calls holding the GIL let worker threads share the cores).

Op = Callable[[], object]


def _bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, batch: int) -> Op:
    """out = a @ b batched over `batch`, a or b (d, d) shared by every batch entry."""
    a, b = (m.expand(batch, -1, -1) if m.dim() == 2 else m for m in (a, b))
    return functools.partial(torch.bmm, a, b, out=out)


def to_back(
    src: torch.Tensor, mats: Mats, dst: torch.Tensor, fold: bool, swap: torch.Tensor, batch: int = 1
) -> list[Op]:
    """Operations for dst (S, M, d) = x'^T mat with src viewed as x (S, d, M), S = `batch` (1: the
    samples are among M): the leading group is contracted and moves to the back. With `fold`, x' is x
    with M's halves exchanged in its rows of odd index (a CNOT whose control is the group's last wire
    and whose target leads M, applied first). `swap` is not used."""
    mat, even, odd = mats
    d = mat.shape[0]
    x, out = src.view(batch, d, -1), dst.view(batch, -1, d)
    if not fold:
        return [_bmm(x.mT, mat, out, batch)]
    ops = [_bmm(x.view(batch, d // 2, 2, -1)[:, :, 0].mT, even, out, batch)]  # even rows: M in order
    xv, ov = x.view(batch, d // 2, 2, 2, -1), out.view(batch, 2, -1, d)
    odd_b = odd.expand(batch, -1, -1)
    ops += [functools.partial(ov[:, h].baddbmm_, xv[:, :, 1, 1 - h].mT, odd_b) for h in (0, 1)]
    return ops


def to_front(
    src: torch.Tensor, mats: Mats, dst: torch.Tensor, fold: bool, swap: torch.Tensor, batch: int = 1
) -> list[Op]:
    """Operations for dst (S, d, M) = mat y^T with src viewed as y (S, M, d), S = `batch`: the trailing
    group is contracted and moves to the front. With `fold`, M's halves are then exchanged in the rows of odd
    index (the CNOT of `to_back`, applied last), so `to_front` with mat^T undoes `to_back` with mat, and
    vice versa. `swap`, of at least a quarter of the state's elements, holds one quarter meanwhile (one
    product and three copies of a quarter take less time than products of half the rows)."""
    d = mats[0].shape[0]
    out = dst.view(batch, d, -1)
    ops = [_bmm(mats[0], src.view(batch, -1, d).mT, out, batch)]
    if fold:
        odd = out.view(batch, d // 2, 2, 2, -1)[:, :, 1]  # the rows of odd index, by M's halves
        first, second = odd[:, :, 0], odd[:, :, 1]
        tmp = swap.view(-1)[: first.numel()].view(first.shape)
        ops += [functools.partial(tmp.copy_, first), functools.partial(first.copy_, second)]
        ops.append(functools.partial(second.copy_, tmp))
    return ops


def unit_mats(unit: Unit, k: torch.Tensor) -> Mats:
    """The matrix a unit's products use (K^T for a "back" unit, K for a "front" one), and its rows of
    even and of odd index, each contiguous: `apply` and `unapply` both take them."""
    mat = k.mT if unit.to_back else k
    return mat.contiguous(), mat[0::2].contiguous(), mat[1::2].contiguous()


def apply(
    unit: Unit, mats: Mats, src: torch.Tensor, dst: torch.Tensor, swap: torch.Tensor, batch: int
) -> list[Op]:
    """Operations for dst = the unit applied to src (`swap`, `batch`: see `to_front`)."""
    return (to_back if unit.to_back else to_front)(src, mats, dst, unit.fold, swap, batch)


def unapply(
    unit: Unit, mats: Mats, src: torch.Tensor, dst: torch.Tensor, swap: torch.Tensor, batch: int
) -> list[Op]:
    """Operations for dst = the unit's transpose applied to src: the inverse of `apply` (K is orthogonal)."""
    return (to_front if unit.to_back else to_back)(src, mats, dst, unit.fold, swap, batch)


#: Cross matrices of smaller groups are taken over this many states at once (see `cross`).
CROSS_WIDTH = 16


def cross(c: torch.Tensor, g: torch.Tensor, psi: torch.Tensor, d: int) -> Op:
    """The operation c (d, d) += g^T psi for g and psi viewed as (M, d). A product with d < CROSS_WIDTH
    runs slowly (a 4 x 4 one at a tenth of a 16 x 16's rate), so it is taken over (M d / 16, 16) rows, whose
    diagonal d x d blocks sum to the same matrix."""
    if d >= CROSS_WIDTH or g.numel() % CROSS_WIDTH:
        return functools.partial(c.addmm_, g.view(-1, d).mT, psi.view(-1, d))
    k = CROSS_WIDTH // d
    g_wide, psi_wide = g.view(-1, CROSS_WIDTH).mT, psi.view(-1, CROSS_WIDTH)

    def op() -> None:
        c.add_(torch.mm(g_wide, psi_wide).view(k, d, k, d).diagonal(0, 0, 2).sum(-1))

    return op


def ring(step: Ring, state: torch.Tensor, n: int, samples_first: bool) -> list[Op]:
    """Operations applying the ring's CNOT (n-1, 0) in place to a chunk's states (an involution), whose
    samples axis leads or comes last."""
    tail = 4 if step.parity else 2  # states of the control wires: n-1, or n-2 and n-1
    shape = (-1, 2, 2**n // (2 * tail), tail) if samples_first else (2, 2**n // (2 * tail), tail, -1)
    view = state.view(shape)
    wire0 = 1 if samples_first else 0
    parts = [view.select(3 if samples_first else 2, control) for control in ((1, 2) if step.parity else (1,))]
    return [functools.partial(_flip_in_place, part, wire0) for part in parts]


def _flip_in_place(part: torch.Tensor, dim: int) -> None:
    part.copy_(part.flip(dim))


def product_halves(uplan: UnitPlan, t: UnitTables, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(c, n, 2) each wire's state after the embedding -> each half's product state (c, 2**m), and the
    same after the first layer's even pairs: (a, a', b, b'). Differentiable: a Kronecker product a wire
    at a time, the first wire the leading bit (autograd's way back through one gather and product of
    every wire's factor, scatter-adding 2**m values per wire into two, took several times longer)."""
    rows, out, first = v.shape[0], [], 0
    for m, perm in zip(uplan.halves, t.embed, strict=True):
        state = v[:, first]
        for wire in range(first + 1, first + m):
            state = (state.unsqueeze(-1) * v[:, wire].unsqueeze(1)).view(rows, 2 ** (wire - first + 1))
        out += [state, state.index_select(1, perm)]
        first += m
    return tuple(out)


@dataclass(frozen=True)
class _Program:
    """A chunk size's operations: the forward's passes and the backward's, every view bound."""

    start: torch.Tensor  # the buffer the product state is written to
    forward: tuple[Op, ...]
    psi: torch.Tensor  # the state after the forward
    spare: torch.Tensor  # a buffer the forward's last pass did not write (for the probabilities)
    grad: torch.Tensor  # the buffer the backward's gradient starts in
    backward: tuple[Op, ...]
    grad_end: torch.Tensor  # the gradient of the product state after the backward


class UnitStep:
    """One training step's simulation of a unit plan, a chunk of samples at a time, without autograd.

    `forward(v)` builds each sample's product state (the first layer's even pairs applied), runs every
    pass and returns <Z_i>; `backward(g_e)` takes d loss / d <Z_i> for the same chunk, applies the
    units' transposes in reverse to the state and its gradient, adds every unit's cross matrix into
    `cross` and returns <g_0, J_w psi_0> for every wire (twice the gradient of the embedding angles).
    After the last chunk, `angle_grads()` gives the layers' gradients.

    buffers: three tensors of at least chunk * 2**n elements (the state, its gradient and the next
    product's output) and one of a quarter of that (for `to_front`), written by every call.
    """

    def __init__(
        self,
        uplan: UnitPlan,
        t: UnitTables,
        q: torch.Tensor,
        n_layers: int,
        buffers: tuple[torch.Tensor, ...],
    ) -> None:
        self.uplan, self.t, self.buffers = uplan, t, buffers
        self.units = uplan.units
        self.mats = [
            unit_mats(u, k) for u, k in zip(self.units, matrices(t, q, len(self.units)), strict=True)
        ]
        self.samples_first = uplan.samples_first(n_layers)
        self.cross = torch.zeros(t.c_total + 1, dtype=q.dtype, device=q.device)
        self._c = [
            self.cross[o : o + 4**u.size].view(2**u.size, 2**u.size)
            for u, o in zip(self.units, t.c_offsets, strict=True)
        ]
        self._halves: list[torch.Tensor] = []
        self._programs: dict[int, _Program] = {}  # chunk size -> its operations

    def _views(self, rows: int) -> tuple[torch.Tensor, ...]:
        size = rows * 2**self.uplan.n_qubits
        return tuple(b.view(-1)[:size] for b in self.buffers[:3])

    def _program(self, rows: int) -> _Program:
        """The operations of a chunk of `rows` samples (built on its first chunk)."""
        if rows in self._programs:
            return self._programs[rows]
        n, swap = self.uplan.n_qubits, self.buffers[3]
        batch = rows if self.uplan.back_only else 1
        src, dst, grad = self._views(rows)
        start, forward = src, []
        units = iter(zip(self.units, self.mats, strict=True))
        for step in self.uplan.steps:
            if isinstance(step, Ring):
                forward += ring(step, src, n, self.uplan.samples_first(step.layer))
                continue
            unit, mats = next(units)
            forward += apply(unit, mats, src, dst, swap, batch)
            src, dst = dst, src
        psi, free, grad_start, backward = src, dst, grad, []
        units = iter(zip(reversed(self.units), reversed(self.mats), reversed(self._c), strict=True))
        for step in reversed(self.uplan.steps):
            if isinstance(step, Ring):
                first = self.uplan.samples_first(step.layer)
                backward += ring(step, psi, n, first) + ring(step, grad, n, first)
                continue
            unit, mats, c = next(units)
            d = 2**unit.size
            if unit.to_back:  # C on the output side
                backward.append(cross(c, grad, psi, d))
            if not unit.to_back or unit is not self.units[0]:  # the first input is not needed again
                backward += unapply(unit, mats, psi, free, swap, batch)
            backward += unapply(unit, mats, grad, psi, swap, batch)  # the state's old buffer: three in all
            psi, grad, free = free, psi, grad
            if not unit.to_back:  # C on the input side
                backward.append(cross(c, grad, psi, d))
        program = _Program(start, tuple(forward), src, dst, grad_start, tuple(backward), grad)
        self._programs[rows] = program
        return program

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(c, n, 2) each wire's state after the embedding -> (c, n) <Z_i> of the circuit's output."""
        rows = v.shape[0]
        (d1, d2) = (2 ** self.uplan.halves[0], 2 ** self.uplan.halves[1])
        self._halves = list(product_halves(self.uplan, self.t, v))
        program = self._program(rows)
        a, b = self._halves[1], self._halves[3]  # (c, 2**m)
        if self.uplan.back_only:  # the samples lead
            torch.mul(a.unsqueeze(2), b.unsqueeze(1), out=program.start.view(rows, d1, d2))
        else:  # the samples come last
            torch.mul(a.T.unsqueeze(1), b.T.unsqueeze(0), out=program.start.view(d1, d2, rows))
        return self._run_forward(program, rows)

    def forward_from(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The state as a sum of products over the halves, A (c, r, 2**m1) and B (c, r, 2**m2) (its
        layers before the plan's first, `_halves.halves`) -> (c, n) <Z_i>. Back passes only."""
        rows = a.shape[0]
        program = self._program(rows)
        torch.bmm(a.mT, b, out=program.start.view(rows, a.shape[2], b.shape[2]))
        return self._run_forward(program, rows)

    def _run_forward(self, program: _Program, rows: int) -> torch.Tensor:
        for op in program.forward:
            op()
        square = torch.mul(program.psi, program.psi, out=program.spare)
        p1, p2 = self._marginals(square, rows)
        return torch.cat((p1 @ self.t.signs[0], p2 @ self.t.signs[1]), 1)

    def _marginals(self, state: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A chunk's (c, 2**n) values in the final layout -> their sums over each half's complement."""
        (d1, d2) = (2 ** self.uplan.halves[0], 2 ** self.uplan.halves[1])
        if self.samples_first:
            s = state.view(rows, d1, d2)
            return s.sum(2), s.sum(1)
        s = state.view(d1, d2, rows)
        return s.sum(1).T, s.sum(0).T

    def backward(self, g_e: torch.Tensor) -> torch.Tensor:
        """(c, n) d loss / d <Z_i> for the chunk of the last `forward` -> (c, n) <g_0, J_w psi_0>."""
        t = self.t
        # the product state psi_a (x) psi_b: <g, J_w psi> = <J_w psi_a, g psi_b> for a wire of the
        # first half, likewise for the second
        g_a, g_b = self.backward_product(g_e)
        contracted = (g_a.index_select(1, t.embed_inverse[0]), g_b.index_select(1, t.embed_inverse[1]))
        a, _, b, _ = self._halves
        return torch.cat(
            [sv.flip_dot(h, c, f) for h, c, f in zip((a, b), contracted, t.flips, strict=True)], 1
        )

    def backward_product(self, g_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`backward`'s first part: d loss / d a' and d loss / d b' (c, 2**m each) of the product state's
        halves after the first layer's even pairs (`product_halves`' second and fourth)."""
        rows = g_e.shape[0]
        (d1, d2) = (2 ** self.uplan.halves[0], 2 ** self.uplan.halves[1])
        grad = self._run_backward(g_e)
        _, a_perm, _, b_perm = self._halves
        if self.uplan.back_only:  # the samples lead
            g0, first, second = grad.view(rows, d1, d2), "sab,sb->sa", "sab,sa->sb"
        else:
            g0, first, second = grad.view(d1, d2, rows), "abs,sb->sa", "abs,sa->sb"
        return torch.einsum(first, g0, b_perm), torch.einsum(second, g0, a_perm)

    def backward_to(
        self, g_e: torch.Tensor, a: torch.Tensor, b: torch.Tensor, g_a: torch.Tensor, g_b: torch.Tensor
    ) -> None:
        """`backward` after `forward_from(a, b)`: writes the gradients of A and B into g_a and g_b
        (dA = B g^T, dB = A g)."""
        g0 = self._run_backward(g_e).view(a.shape[0], a.shape[2], b.shape[2])
        torch.bmm(b, g0.mT, out=g_a)
        torch.bmm(a, g0, out=g_b)

    def _run_backward(self, g_e: torch.Tensor) -> torch.Tensor:
        """The units' transposes in reverse from d loss / d <Z_i> (c, n), the cross matrices added:
        returns the gradient of the first pass's input (a view of a buffer)."""
        t, rows, n1 = self.t, g_e.shape[0], self.uplan.halves[0]
        (d1, d2) = (2 ** self.uplan.halves[0], 2 ** self.uplan.halves[1])
        program = self._program(rows)
        psi, grad = program.psi, program.grad
        s1, s2 = 2 * g_e[:, :n1] @ t.signs_t[0], 2 * g_e[:, n1:] @ t.signs_t[1]  # d e / d p, per half
        if self.samples_first:
            p, g, s1, s2 = psi.view(rows, d1, d2), grad.view(rows, d1, d2), s1.unsqueeze(2), s2.unsqueeze(1)
        else:
            p, g, s1, s2 = (
                psi.view(d1, d2, rows),
                grad.view(d1, d2, rows),
                s1.T.unsqueeze(1),
                s2.T.unsqueeze(0),
            )
        torch.mul(p, s1, out=g).addcmul_(p, s2)  # 2 psi (s1 + s2)
        for op in program.backward:
            op()
        return program.grad_end

    def angle_grads(self) -> torch.Tensor:
        """(n_layers * n,) the gradients of the layers' RY angles, summed over every chunk so far."""
        t = self.t
        gathered = self.cross.index_select(0, t.grad_index.reshape(-1)).view(t.grad_index.shape)
        return 0.5 * (gathered * t.grad_signs).sum(1)
