"""Expectations of Pauli strings on a real matrix product state of uniform bond, forward and backward by
hand (`expectations`), for the stacked brick-wall MPS (`_brickwall`).

The sites come as the brick wall's two stacks (k, B, 2, D, D), the chain's ends padded and read at
index 0 (the boundary e_0 e_0^T). Each sweep copies them site by site into (n, B, D, 2, D) (left bond,
physical index, right bond). With L_j (B, D, D) the left environment of the first j sites (ket x bra),
one step of the left sweep is two batched products on views of the site:

    T_j = L_j^T A_j             (D x 2D: A_j as D x 2D)
    L_j+1 = T_j^T A_j           (T_j and A_j as 2D x D)

and the right sweep is the same recurrence over the transposed sites (right bond first) from the end.
A string from site f to site l meets its left part, the left environment through f with P_f on the
bra of f (T_f^T (P A_f)) carried through the middle sites up to a cut, with its right part, the same
from l down to the cut (a string on one site meets the plain right environment from f + 1 on); the cut
splits the middle sites evenly between the sweeps (`plan_strings`). Every piece is computed in its
sweep at its step, while the site is in cache. Values are divided by the norm <psi|psi>.

The backward runs the same recurrences in reverse, per step: dT_j = A_j dL_j+1^T (plus what the
strings read from T_j), dL_j = A_j dT_j^T, dA_j = T_j dL_j+1 + L_j dT_j (plus the strings' share).
The two sweeps, forward and backward, run side by side in two threads (`qtl.utils.threads`), each on
one torch thread. Nothing goes through autograd, and every large buffer is leased from a pool kept
between steps (`_memory.BufferPool`): a fresh allocation of that size page-faults in again each step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from qtl.quantum.engines._brickwall import no_second_derivatives
from qtl.quantum.engines._memory import BufferPool, Lease
from qtl.quantum.engines._pauli import PauliString
from qtl.utils.threads import side_by_side


@dataclass(frozen=True)
class Side:
    """What one sweep computes for the strings, in its own steps (the right sweep's step k is site
    n - 1 - k): groups (Pauli or None, steps), one row per step each, the environment through that step
    with the Pauli on its site (None: the plain environment before the step); carries (step, Pauli or
    None, source row, new row) in step order, a row carried through a string's middle site (rows after
    the groups'); index: per string, the row its part ends in."""

    groups: tuple[tuple[str | None, tuple[int, ...]], ...]
    carries: tuple[tuple[int, str | None, int, int], ...]
    index: tuple[int, ...]


@dataclass(frozen=True)
class StringPlan:
    """Where each string's pieces come from, fixed once per engine (n sites, m strings): a string from
    site f to site l is its left part (f and the middle sites up to a cut) met with its right part (l
    and the middle sites down to the cut); the cut balances the two sweeps' carries."""

    n: int
    signs: tuple[float, ...]
    left: Side
    right: Side


def _side(starts: list[tuple[str | None, int]], carries: list[list[tuple[int, str | None]]]) -> Side:
    """A `Side` from each string's first (Pauli, step) and its (step, Pauli) carries in order."""
    grouped: dict = {}
    for p, k in starts:
        grouped.setdefault(p, set()).add(k)
    groups = tuple((p, tuple(sorted(grouped[p]))) for p in sorted(grouped, key=str))
    rows, count = {}, 0
    for p, steps in groups:
        for k in steps:
            rows[p, k] = count
            count += 1
    made: dict = {}  # (step, Pauli, source row) -> row: a carry two strings share is made once
    index = []
    for start, path in zip(starts, carries, strict=True):
        row = rows[start]
        for step, p in path:
            row = made.setdefault((step, p, row), count + len(made))
        index.append(row)
    ordered = sorted(((step, p, source, row) for (step, p, source), row in made.items()), key=lambda c: c[0])
    return Side(groups, tuple(ordered), tuple(index))


def plan_strings(strings: list[PauliString], n: int) -> StringPlan:
    """The `StringPlan` of Pauli strings (sign, ((wire, Pauli), ...)) on n sites."""
    starts, ends, left_carries, right_carries = [], [], [], []
    load = [0, 0]  # carries each sweep holds so far
    for _, ops in strings:
        (f, first), (last, p_last), on = ops[0], ops[-1], dict(ops)
        middle = list(range(f + 1, last))
        cut = f + len(middle) // 2 + (len(middle) % 2 if load[0] <= load[1] else 0)  # sites f..cut go left
        starts.append((first, f))
        left_carries.append([(site, on.get(site)) for site in range(f + 1, cut + 1)])
        if last == f:
            ends.append((None, n - 1 - f))  # the plain right environment from f + 1 on
            right_carries.append([])
        else:
            ends.append((p_last, n - 1 - last))
            right_carries.append([(n - 1 - site, on.get(site)) for site in range(last - 1, cut, -1)])
        load[0] += len(left_carries[-1])
        load[1] += len(right_carries[-1])
    signs = tuple(float(sign) for sign, _ in strings)
    return StringPlan(n, signs, _side(starts, left_carries), _side(ends, right_carries))


#: Large buffers of the forward and backward, kept between steps (`_memory.BufferPool`).
POOL = BufferPool()


def _index(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


class _Constants(dict):
    """(device, dtype) -> (the swap index [1, 0], the Z signs [1, -1] as (2, 1))."""

    def __missing__(self, key):
        device, dtype = key
        self[key] = value = (
            torch.tensor([1, 0], device=device),
            torch.tensor([1.0, -1.0], dtype=dtype, device=device).view(2, 1),
        )
        return value


_CONSTANTS = _Constants()


def _bra(a: torch.Tensor, pauli: str | None, out: torch.Tensor) -> torch.Tensor:
    """out = P a for sites a (..., D, 2, D) and a real Pauli (X or Z) on the physical index; a itself
    for None (the identity)."""
    swap, signs = _CONSTANTS[a.device, a.dtype]
    if pauli is None:
        return a
    if pauli == "Z":
        return torch.mul(a, signs, out=out)
    return torch.index_select(a, -2, swap, out=out)


def _with_pauli(
    t: torch.Tensor, a: torch.Tensor, pauli: str, out: torch.Tensor, scratch: torch.Tensor
) -> None:
    """out = T^T (P a) for kets t (m, D, 2D) and sites a (m, D, 2, D) (T and P a as 2D x D); scratch is
    a buffer like a."""
    m, d = a.shape[0], a.shape[1]
    bra = _bra(a, pauli, scratch)
    torch.bmm(t.view(m, 2 * d, -1).mT, bra.view(m, 2 * d, -1), out=out)


def _with_pauli_backward(t, a, pauli: str | None, g, d_t, d_a, scratch) -> None:
    """Adds the gradients of `_with_pauli` (g of out) to d_t (m, D, 2D) and d_a (m, D, 2, D)."""
    m, d = a.shape[0], a.shape[1]
    bra = _bra(a, pauli, scratch)
    d_t.view(m, 2 * d, -1).baddbmm_(bra.view(m, 2 * d, -1), g.mT)
    d_bra = torch.bmm(t.view(m, 2 * d, -1), g, out=scratch.view(m, 2 * d, -1)).view(a.shape)  # after bra
    if pauli is None:
        d_a += d_bra
    elif pauli == "Z":
        d_a[..., 0, :] += d_bra[..., 0, :]
        d_a[..., 1, :] -= d_bra[..., 1, :]
    else:
        d_a[..., 0, :] += d_bra[..., 1, :]
        d_a[..., 1, :] += d_bra[..., 0, :]


def _events(groups, carries, n: int) -> list[list[tuple]]:
    """Per step: ("row", Pauli, row) for each group row taken there, ("carry", Pauli, source, row) for
    each carry through that site."""
    at: list[list] = [[] for _ in range(n)]
    row = 0
    for p, steps in groups:
        for k in steps:
            at[k].append(("row", p, row))
            row += 1
    for site, p, source, row in carries:
        at[site].append(("carry", p, source, row))
    return at


def _rows(groups, carries) -> int:
    return sum(len(steps) for _, steps in groups) + len(carries)


def _sweep(x: torch.Tensor, groups, carries, lease: Lease) -> tuple[torch.Tensor, ...]:
    """A sweep over sites x (n, B, D, 2, D) in order (the left one, or the right one over transposed
    sites), with the environments the strings read: for each
    (Pauli, steps) group of `groups` T_k^T (P x_k) at those steps, for (None, steps) the plain envs[k],
    and each carry (`StringPlan.carries`) of a row through its site.
    Returns (T (n, B, D, 2D), environments (n + 1, B, D, D), the rows (rows, B, D, D))."""
    n, batch, d, _, r = x.shape
    kets = lease.take((n, batch, d, 2 * r), x.dtype, x.device)
    envs = lease.zeros((n + 1, batch, r, r), x.dtype, x.device)
    envs[0][:, 0, 0] = 1
    rows = lease.take((_rows(groups, carries), batch, r, r), x.dtype, x.device)
    scratch = lease.take(x.shape[1:], x.dtype, x.device)
    ket = lease.take((batch, d, 2 * r), x.dtype, x.device)
    for k, events in enumerate(_events(groups, carries, n)):
        for kind, p, *where in events:
            if kind == "row" and p is None:
                rows[where[0]].copy_(envs[k])
        torch.bmm(envs[k].mT, x[k].view(batch, d, 2 * r), out=kets[k])
        torch.bmm(kets[k].view(batch, 2 * d, r).mT, x[k].view(batch, 2 * d, r), out=envs[k + 1])
        for kind, p, *where in events:
            if kind == "row" and p is not None:
                _with_pauli(kets[k], x[k], p, rows[where[0]], scratch)
            elif kind == "carry":
                source, row = where
                torch.bmm(rows[source].mT, x[k].view(batch, d, 2 * r), out=ket)
                _with_pauli(ket, x[k], p, rows[row], scratch)
    return kets, envs, rows


def _sweep_backward(x, kets, envs, rows, groups, carries, d_rows, d_norm, dx, lease: Lease) -> None:
    """Adds to dx (n, B, D, 2, D) the gradient with respect to the sites x of a `_sweep`, given those of
    its rows (rows, B, D, D; the carries' sources' are added in place) and of the last environment's
    entry [0, 0] (d_norm, or None)."""
    n, batch, d, _, r = x.shape
    d_env = lease.zeros((batch, r, r), x.dtype, x.device)  # dL_k+1, from the last step down
    if d_norm is not None:
        d_env[:, 0, 0] = d_norm
    d_ket = lease.take((batch, d, 2 * r), x.dtype, x.device)
    d_prev = lease.take((batch, r, r), x.dtype, x.device)
    scratch = lease.take(x.shape[1:], x.dtype, x.device)
    ket = lease.take((batch, d, 2 * r), x.dtype, x.device)
    for k, events in reversed(list(enumerate(_events(groups, carries, n)))):
        for kind, p, *where in events:  # a carry: ket = row^T A_k, new = ket^T (P A_k)
            if kind == "carry":
                source, row = where
                torch.bmm(rows[source].mT, x[k].view(batch, d, 2 * r), out=ket)
                d_ket.zero_()
                _with_pauli_backward(ket, x[k], p, d_rows[row], d_ket, dx[k], scratch)
                d_rows[source].baddbmm_(x[k].view(batch, d, 2 * r), d_ket.mT)
                dx[k].view(batch, d, 2 * r).baddbmm_(rows[source], d_ket)
        # T_k = L_k^T A_k, L_k+1 = T_k^T A_k (2D x D views): dT_k = A_k dL_k+1^T (+ the rows' share),
        # dL_k = A_k dT_k^T, dA_k = T_k dL_k+1 (2D x D) + L_k dT_k (D x 2D) (+ the rows' share)
        torch.bmm(x[k].view(batch, 2 * d, r), d_env.mT, out=d_ket.view(batch, 2 * d, r))
        for kind, p, *where in events:
            if kind == "row" and p is not None:
                _with_pauli_backward(kets[k], x[k], p, d_rows[where[0]], d_ket, dx[k], scratch)
        dx[k].view(batch, 2 * d, r).baddbmm_(kets[k].view(batch, 2 * d, r), d_env)
        dx[k].view(batch, d, 2 * r).baddbmm_(envs[k], d_ket)
        torch.bmm(x[k].view(batch, d, 2 * r), d_ket.mT, out=d_prev)
        for kind, p, *where in events:
            if kind == "row" and p is None:
                d_prev += d_rows[where[0]]
        d_env, d_prev = d_prev, d_env


class _Expectations(torch.autograd.Function):
    @staticmethod
    def forward(ctx, even: torch.Tensor, odd: torch.Tensor, plan: StringPlan) -> torch.Tensor:
        n = plan.n
        _, batch, _, d, _ = even.shape
        device, dtype = even.device, even.dtype
        lease = POOL.lease()
        shape = (n, batch, d, 2, d)

        def side(part: Side, ordered: bool):  # one sweep with the rows the strings read
            x = lease.take(shape, dtype, device)
            for k in range(n):  # (B, 2, Dl, Dr) -> left bond, physical, right bond; or for the right
                j = k if ordered else n - 1 - k  # sweep, transposed sites from the end
                site = (odd if j % 2 else even)[j // 2]
                x[k].copy_(site.permute(0, 2, 1, 3) if ordered else site.permute(0, 3, 1, 2))
            kets, envs, rows = _sweep(x, part.groups, part.carries, lease)
            out = lease.take((len(part.index), batch, d, d), dtype, device)
            torch.index_select(rows, 0, _index(part.index, device), out=out)
            return x, kets, envs, rows, out

        left, right = _both(
            [
                functools.partial(side, plan.left, True),
                functools.partial(side, plan.right, False),
            ],
            device,
        )
        starts, ends = left[-1], right[-1]
        norm = left[2][n][:, 0, 0].clone()
        values = (starts * ends).sum((-1, -2)).mT * starts.new_tensor(plan.signs) / norm.unsqueeze(1)
        ctx.plan, ctx.lease = plan, lease
        # no tensor autograd tracks on ctx (the output would make a cycle, freed late with its buffers)
        ctx.tensors = (left[:4], right[:4], starts, ends, values.detach(), norm)
        return values

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        no_second_derivatives()
        plan, n = ctx.plan, ctx.plan.n
        lease = POOL.lease()  # the backward's own buffers, given back once the gradients are built
        left, right, starts, ends, values, norm = ctx.tensors
        _, batch, d, _, _ = left[0].shape
        device, dtype = grad.device, starts.dtype
        weight = (grad * starts.new_tensor(plan.signs) / norm.unsqueeze(1)).mT  # (m, B): d value / d <st, en>
        d_norm = -(grad * values).sum(1) / norm

        def back(side, part: Side, other, d_norm):
            x, kets, envs, rows = side
            d_rows = lease.zeros(rows.shape, dtype, device)
            from_strings = torch.mul(
                weight[..., None, None], other, out=lease.take(other.shape, dtype, device)
            )
            d_rows.index_add_(0, _index(part.index, device), from_strings)
            dx = lease.zeros(x.shape, dtype, device)
            _sweep_backward(x, kets, envs, rows, part.groups, part.carries, d_rows, d_norm, dx, lease)
            return dx

        d_left, d_right = _both(
            [
                functools.partial(back, left, plan.left, ends, d_norm),
                functools.partial(back, right, plan.right, starts, None),
            ],
            device,
        )
        # handed to autograd, so not leased buffers; each site's (B, 2, Dl, Dr) from both sweeps
        d_stacks = tuple(
            torch.empty((n + 1 - p) // 2, batch, 2, d, d, dtype=dtype, device=device) for p in (0, 1)
        )
        for j in range(n):
            out = d_stacks[j % 2][j // 2]
            torch.add(d_left[j].permute(0, 2, 1, 3), d_right[n - 1 - j].permute(0, 2, 3, 1), out=out)
        lease.release()
        return *d_stacks, None


def expectations(even: torch.Tensor, odd: torch.Tensor, plan: StringPlan) -> torch.Tensor:
    """(B, m) <psi|S_i|psi> / <psi|psi> of the plan's Pauli strings on a real MPS whose even and odd
    sites are stacked as (k, B, 2, D, D) (`_brickwall.simulate`; ends padded, read at index 0),
    differentiable with respect to both stacks."""
    if even.is_complex():
        raise ValueError("the closed-form string expectations are for real states")
    return _Expectations.apply(even, odd, plan)


def check_real(strings: list[PauliString]) -> None:
    """ValueError unless every Pauli of the strings is X or Z (a real state's real observables)."""
    odd = sorted({p for _, ops in strings for _, p in ops} - {"X", "Z"})
    if odd:
        raise ValueError(f"the closed-form string expectations take X and Z only, got {odd}")


def _both(tasks: list, device: torch.device) -> list:
    """The two sweeps side by side on CPU (each on one torch thread); one after the other on a GPU,
    whose kernels a second host thread would only queue on another stream."""
    return side_by_side(tasks) if device.type == "cpu" else [task() for task in tasks]
