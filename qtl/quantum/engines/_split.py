"""A chain's first layers as its two halves' states, a sum of products, before the full state is built.

Before any CNOT crosses from wire cut - 1 to wire cut, a sample's state is a product a (x) b of its two
halves' states (wires [0, cut) and [cut, n)). The CNOT (cut - 1, cut) makes it a sum of two products,

    CNOT (a (x) b) = (P0 a) (x) b + (P1 a) (x) (X b)

(P0, P1: wire cut - 1 is |0>, |1>; X flips wire cut), and every other gate of a chain acts inside one
half. So after k layers the state is sum_j a_j (x) b_j over r <= 2**k branches, each half 2**(n/2)
states per branch where the full state has 2**n: at 20 qubits and r = 64, 2 x 64 x 1024 states per
sample in place of 2**20. Autograd takes the k layers (`halves`), whose operations are small. Then
either `expectations` gives <Z> from the halves' Gram matrices, where they take every layer and that
costs fewer flops (`SplitPlan.gram`), and the state is never built (`crossed_expectations` where the
last layer crosses the cut: from its r / 2 products before that CNOT, never doubled, in about half the
flops, since the new branches P0 a_j and P1 a_j are orthogonal); or the unit step
(`_units.UnitStep.forward_from`) builds it with one product per sample, psi = A^T B of inner dimension
r, runs the remaining layers on it, and its gradient g there gives the halves' (dA = B g^T, dB = A g).

`plan_split` picks k: the most leading layers (all of them, if they qualify) whose CNOT runs are chains
(a ring's pair (n - 1, 0) crosses the cut too) and whose branches stay within a rank; `leading_plan`
cuts where the units' product state is. Where the halves take every layer by the Gram route
(`whole_plan`), `expvals` gives <Z> from each wire's embedded state, by autograd: the native engine's
forward of such a circuit (`qtl.quantum.engines.native`), and the closed-form step's halves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _units as units
from qtl.quantum.engines._compiler import Plan
from qtl.quantum.engines._memory import constant_tables

#: The halves are simulated a part of the batch at a time (`part_size`), so that memory stays flat in
#: the batch: parts of equal size, each at most PART_SAMPLES samples whose final states (A and B
#: together) take at most PART_BYTES. At 22 and 24 qubits, batch 32, two parts of 16 ran 1.1-1.6x
#: faster than one of 32 (docs/benchmarks.md).
PART_SAMPLES, PART_BYTES = 64, 32 * 2**20


@dataclass(frozen=True)
class SplitPlan:
    """The leading `layers` layers of a chain as two halves, wires [0, cut) and [cut, n)."""

    n_qubits: int
    cut: int
    crossing: tuple[bool, ...]  # per layer, whether its odd pairs hold (cut - 1, cut)
    inside: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per layer and half: its odd pairs (gather)
    after: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per layer and half: the next even pairs

    @property
    def layers(self) -> int:
        return len(self.crossing)

    @property
    def states(self) -> int:
        """Values of a sample's final states, A and B together: r (2**m1 + 2**m2), at most (twice what
        they hold where the last crossing folds: `held`; `part_size` was measured by this count)."""
        return self.rank * (2**self.cut + 2 ** (self.n_qubits - self.cut))

    @property
    def held(self) -> int:
        """Products A and B hold: `rank`, or half of it where <Z> comes from the products before the last
        crossing (`folds` and `gram`: `crossed_expectations`)."""
        return self.rank // 2 if self.folds and self.gram else self.rank

    @property
    def folds(self) -> bool:
        """Whether <Z> from the halves comes from the products before the last layer's CNOT across the cut
        (`crossed_expectations`): the last layer crosses, and no gather follows it."""
        return self.crossing[-1] and all(p == tuple(range(len(p))) for p in self.after[-1])

    @property
    def gram_flops(self) -> float:
        """Flops per sample of <Z> from the halves' Gram matrices, forward and backward: 8 r**2 (2**m1 +
        2**m2) (`expectations`), or where it `folds` r**2 (11 2**m1 / 4 + 9 2**m2 / 2)
        (`crossed_expectations`)."""
        r, da, db = self.rank, 2**self.cut, 2 ** (self.n_qubits - self.cut)
        return r * r * (11 * da / 4 + 9 * db / 2) if self.folds else 8 * r * r * (da + db)

    @property
    def gram(self) -> bool:
        """Whether <Z> from the halves' Gram matrices (`gram_flops`) takes fewer flops than building the
        state (6 r 2**n per sample, forward and backward)."""
        return self.gram_flops < 6 * self.rank * 2**self.n_qubits

    @property
    def factors(self) -> tuple[tuple[int, int], ...]:
        """(first wire, wires) of the four Kronecker factors of a layer's rotations: two per half."""
        out = []
        for start, m in ((0, self.cut), (self.cut, self.n_qubits - self.cut)):
            out += [(start, m // 2), (start + m // 2, m - m // 2)]
        return tuple(out)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({size for _, size in self.factors}))

    @property
    def rank(self) -> int:
        """Products in the sum after the last layer."""
        return 2 ** sum(self.crossing)


@functools.lru_cache(maxsize=64)
def plan_split(plan: Plan, cut: int, max_rank: int) -> SplitPlan | None:
    """The leading layers of `plan` the halves at `cut` (even, so no even pair crosses it) take: as many
    as keep at most `max_rank` products and are chains (every layer, where they all do); None for none."""
    n, n_layers = plan.n_qubits, plan.n_layers
    if cut % 2 or not 0 < cut < n:
        raise ValueError(f"the cut must be an even wire inside the circuit, not {cut}")
    runs = [units._run(e.pairs, n) for e in plan.entanglers]
    crossing: list[bool] = []
    while len(crossing) < n_layers:
        run = runs[len(crossing)]
        if run is None or run[2]:  # not a CNOT run of the units, or a ring
            break
        crosses = (cut - 1, cut) in run[1]
        if 2 ** (sum(crossing) + crosses) > max_rank:
            break
        crossing.append(crosses)
    if not crossing:
        return None
    inside, after = [], []
    for layer in range(len(crossing)):
        odds = runs[layer][1] - {(cut - 1, cut)}
        evens = runs[layer + 1][0] if layer + 1 < n_layers else set()
        inside.append((units._local(odds, 0, cut), units._local(odds, cut, n - cut)))
        after.append((units._local(evens, 0, cut), units._local(evens, cut, n - cut)))
    return SplitPlan(n, cut, tuple(crossing), tuple(inside), tuple(after))


def leading_plan(plan: Plan, max_rank: int) -> SplitPlan | None:
    """The leading layers of `plan` its halves take, cut where the units' product state is
    (`_units.compile_units`' halves), at most `max_rank` products and no more than the smaller half's
    states; None where the units cannot run the plan, or no layer qualifies."""
    if max_rank < 1 or units.compile_units(plan, True) is None:
        return None
    cut = 2 * (plan.n_qubits // 4)  # no more products than a half has states
    return plan_split(plan, cut, min(max_rank, 2**cut))


def whole_plan(plan: Plan, max_rank: int) -> SplitPlan | None:
    """`leading_plan` where it takes every layer and <Z> comes from the Gram matrices (`SplitPlan.gram`):
    the plans `expvals` runs whole; else None. Where the last crossing folds into <Z>, the halves hold
    only the products before it (`SplitPlan.held`), so the plan may reach 2 max_rank products: where
    its Gram matrices take under half the flops of the way that stops at max_rank (`_gram_pays`)."""
    sp = leading_plan(plan, max_rank)
    if sp is not None and sp.layers == plan.n_layers and sp.gram:
        return sp
    folded = leading_plan(plan, 2 * max_rank)
    if folded is None or folded.layers < plan.n_layers or not (folded.folds and folded.gram):
        return None
    return folded if folded.held <= max_rank and _gram_pays(folded, sp, plan) else None


#: The Gram route past max_rank must take under this share of the other way's flops: its products ran
#: at about half the units' rate (at depth 8, 20 qubits gained 1.6x with 0.33 of the flops, 19 lost
#: with 0.92: docs/benchmarks.md).
GRAM_SHARE = 0.5


def _gram_pays(folded: SplitPlan, capped: SplitPlan | None, plan: Plan) -> bool:
    """Whether <Z> from `folded`'s Gram matrices (`SplitPlan.gram_flops`, the last crossing folded) takes
    under GRAM_SHARE of the flops of the layers `capped` leaves: psi = A^T B and its gradients
    (6 r 2**n per sample) and the units after it (8 d per amplitude each, `_units`)."""
    uplan = units.compile_units(plan, True, capped.layers if capped else 0)
    rank = capped.rank if capped else 0
    other = (6 * rank + 8 * sum(2**u.size for u in uplan.units)) * 2**plan.n_qubits
    return folded.gram_flops < GRAM_SHARE * other


def part_size(sp: SplitPlan, itemsize: int, batch: int) -> int:
    """Samples per part of the halves' simulation of a batch: as few parts as PART_SAMPLES and
    PART_BYTES allow, of equal size (the last one shorter by less than a part's count)."""
    most = max(1, min(PART_SAMPLES, PART_BYTES // (sp.states * itemsize)))
    return -(-batch // -(-batch // most)) if batch else 1


@dataclass(frozen=True, eq=False)
class SplitTables:
    """A split plan's gathers on one device: per layer and half, the CNOTs before its rotations (the last
    layer's next even pairs, then its odd pairs) and after the last rotations; Pauli X; and the
    gathers that build every Kronecker factor of the rotations (`factors`)."""

    before: tuple[tuple[Gather | None, Gather | None], ...]  # None: no CNOT
    last: tuple[Gather | None, Gather | None]
    x: torch.Tensor  # Pauli X
    factor_index: tuple[torch.Tensor, ...]  # per factor size: gather building every such factor (`factors`)


@constant_tables(32)
def split_tables(sp: SplitPlan, device: torch.device, dtype: torch.dtype) -> SplitTables:
    def gather(index: torch.Tensor) -> Gather | None:
        if torch.equal(index, torch.arange(len(index))):
            return None
        return index.to(device), torch.argsort(index).to(device)

    before, previous = [], (None, None)
    for inside, after in zip(sp.inside, sp.after, strict=True):
        # gathers compose: x[p][q] = x[p[q]]
        pairs = zip(previous, inside, strict=True)
        before.append(tuple(gather(torch.tensor(q if p is None else [p[i] for i in q])) for p, q in pairs))
        previous = after
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dtype, device=device)
    index = []
    for size in sp.factor_sizes:
        plain = tuple(range(2**size))  # a factor is a unit's matrix with no CNOT folded in
        per_factor = [
            units._kron_gather(units.Unit(layer, start, size, True, plain, plain, False), sp.n_qubits)
            for layer in range(sp.layers)
            for start, z in sp.factors
            if z == size
        ]
        index.append(torch.stack(per_factor).reshape(-1).to(device))
    last = tuple(gather(torch.tensor(p)) for p in previous)
    return SplitTables(tuple(before), last, x, tuple(index))


def factors(sp: SplitPlan, t: SplitTables, q: torch.Tensor) -> list[list[torch.Tensor]]:
    """The split layers' angles q (k, n) -> per layer, `sp.factors`' matrices: each the Kronecker product
    RY(q_w) (x) RY(q_w+1) (x) ... of its wires (the first the leading bit), all built at once."""
    table = units.ry_table(q)
    built = {
        size: iter(units.kron_products(table, index, size).unbind(0))
        for size, index in zip(sp.factor_sizes, t.factor_index, strict=True)
    }
    return [[next(built[size]) for _, size in sp.factors] for _ in range(sp.layers)]


Gather = tuple[torch.Tensor, torch.Tensor]  # a permutation's gather index and its inverse's


def _permute(x: torch.Tensor, gather: Gather | None) -> torch.Tensor:
    """x gathered along its first axis (the states), None: x itself."""
    return x if gather is None else sv.permute(x, *gather, dim=0)


def _rotate(state: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(2**m, r, B) states -> first (x) second applied to their m wires: one factor per axis."""
    d1, d2 = first.shape[0], second.shape[0]
    x = (first @ state.reshape(d1, -1)).view(d1, d2, -1)
    # bmm, not matmul: matmul would fold x's batch into a transposed copy
    return torch.bmm(second.expand(d1, d2, d2), x).view(state.shape)


def halves(
    sp: SplitPlan, t: SplitTables, a: torch.Tensor, b: torch.Tensor, q: torch.Tensor, crossed: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each half's product state (B, 2**cut) and (B, 2**(n - cut)), the first layer's even pairs applied,
    and the split layers' angles q (k, n) -> A (B, r, 2**cut), B (B, r, 2**(n - cut)): the state after
    the k layers (and the next layer's even pairs) is sum_j A[:, j] (x) B[:, j]. Differentiable; the
    states lead while they are simulated, so that a gather moves whole rows, and A and B come out
    contiguous, samples first (`_SamplesFirst`). With `crossed` False the last layer's crossing CNOT is
    left out (its branches not doubled: r / 2 products), for `crossed_expectations`."""
    a, b = a.T.unsqueeze(1), b.T.unsqueeze(1)  # (2**m, r, B)
    for layer, (a1, a2, b1, b2) in enumerate(factors(sp, t, q)):
        a, b = (_permute(s, gather) for s, gather in zip((a, b), t.before[layer], strict=True))
        a, b = _rotate(a, a1, a2), _rotate(b, b1, b2)
        if sp.crossing[layer] and (crossed or layer < sp.layers - 1):
            # (P0 a) (x) b + (P1 a) (x) (X b), rotated: R P_s = (R P_s R^T) R and R X = (R X R^T) R, where
            # R P_s R^T = u_s u_s^T (u_s = RY e_s) and R X R^T act on wires cut - 1 and cut alone; so the
            # branches double after the rotations, which run on half as many. New branches after the old.
            u = sv.rotation_matrices("RY", q[layer, sp.cut - 1], q.dtype)
            projected = torch.einsum("ks,ls->ksl", u, u).reshape(4, 2)  # u_s u_s^T, rows (k, s)
            h = a.shape[0] // 2  # wire cut - 1 is a's last bit
            a = torch.bmm(projected.expand(h, 4, 2), a.view(h, 2, -1)).view(2 * h, 2 * a.shape[1], -1)
            u = sv.rotation_matrices("RY", q[layer, sp.cut], q.dtype)
            flipped = torch.tensordot(u @ t.x @ u.T, b.view(2, -1, *b.shape[1:]), 1).view(b.shape)
            b = torch.cat((b, flipped), 1)
    a, b = (_permute(s, gather) for s, gather in zip((a, b), t.last, strict=True))
    return _SamplesFirst.apply(a), _SamplesFirst.apply(b)


class _SamplesFirst(torch.autograd.Function):
    """States (2**m, r, B) -> (B, r, 2**m), contiguous, and the gradient back: each way one transpose of
    the (2**m, r B) matrix, which torch copies in cache-sized blocks, and one swap of whole rows. The one
    copy of the 3-axis permutation (autograd's way back) moves the same bytes several times slower."""

    @staticmethod
    def forward(ctx, x):
        s, r, b = x.shape
        return x.reshape(s, r * b).T.contiguous().view(r, b, s).transpose(0, 1).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        b, r, s = g.shape
        return g.transpose(0, 1).contiguous().view(r * b, s).T.contiguous().view(s, r, b)


def expectations(
    a: torch.Tensor, b: torch.Tensor, signs_a: torch.Tensor, signs_b: torch.Tensor
) -> torch.Tensor:
    """<Z_w> of every wire of the state sum_j A_j (x) B_j (A (B, r, 2**m1), B (B, r, 2**m2)) without
    building it, from the halves' Gram matrices; `signs_*` (2**m, m) are each half's Z eigenvalues.
    Differentiable (`_Expectations`)."""
    return _Expectations.apply(a, b, signs_a, signs_b)


class _Expectations(torch.autograd.Function):
    """The probability of a state i of half a is p_a[i] = sum_j,j' A[j, i] A[j', i] (B B^T)[j, j'], a
    quadratic form: so with s_a = d loss / d p_a, d loss / d A = 2 ((B B^T) A S_a + (B S_b B^T) A)
    (S = diag(s)), and likewise for B. Four products of r**2 2**m flops forward (the Gram matrices and
    M_a = (B B^T) A, M_b = (A A^T) B, kept) and four backward, about 8 r**2 (2**m1 + 2**m2) flops per
    sample where the state takes 2**(m1 + m2) amplitudes."""

    @staticmethod
    def forward(ctx, a, b, signs_a, signs_b):
        m_a, m_b = b @ b.mT @ a, a @ a.mT @ b
        ctx.save_for_backward(a, b, m_a, m_b, signs_a, signs_b)
        p_a, p_b = (a * m_a).sum(1), (b * m_b).sum(1)  # (B, 2**m) each
        return torch.cat((p_a @ signs_a, p_b @ signs_b), 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, b, m_a, m_b, signs_a, signs_b = ctx.saved_tensors
        n_a = signs_a.shape[1]
        s_a = (grad[:, :n_a] @ signs_a.T).unsqueeze(1)  # d loss / d p_a, (B, 1, 2**m1)
        s_b = (grad[:, n_a:] @ signs_b.T).unsqueeze(1)
        g_a = torch.baddbmm(m_a * (2 * s_a), (b * s_b) @ b.mT, a, alpha=2)
        g_b = torch.baddbmm(m_b * (2 * s_b), (a * s_a) @ a.mT, b, alpha=2)
        return g_a, g_b, None, None


def crossed_expectations(
    a: torch.Tensor,
    b: torch.Tensor,
    u_a: torch.Tensor,
    x_b: torch.Tensor,
    signs_a: torch.Tensor,
    signs_b: torch.Tensor,
) -> torch.Tensor:
    """`expectations` of the state after one more CNOT across the cut, sum_(s, j) (P_s a_j) (x) (X^s b_j),
    from the h products before it (a (B, h, 2**m1), b (B, h, 2**m2)) without doubling them: P_s = u_s u_s^T
    on a's last wire (u_s the columns of u_a), X = x_b on b's first wire (symmetric and orthogonal).
    Differentiable in a, b, u_a and x_b (`_CrossedExpectations`); the gradient takes x_b symmetric, as
    every x_b = u X u^T is."""
    return _CrossedExpectations.apply(a, b, u_a, x_b, signs_a, signs_b)


class _CrossedExpectations(torch.autograd.Function):
    """With c_s = u_s^T a (a's last wire contracted), G = b b^T and H = b (X b)^T (symmetric, as X is):
    half a's probability of state (i, t) is sum_(s, s') u_s[t] u_s'[t] c_s^T K_ss' c_s' at i, K_ss' = G
    where s = s' and H where not; half b's, b^T D_0 b + (X b)^T D_1 (X b), D_s = c_s c_s^T, since the
    P_s a_j of different s are orthogonal. With r = 2 h products, about r**2 (3 2**m1 / 2 + 2 2**m2) flops
    per sample forward and r**2 (5 2**m1 / 4 + 5 2**m2 / 2) backward, where the doubled products' Gram
    matrices (`expectations`) take 4 r**2 (2**m1 + 2**m2) each way."""

    @staticmethod
    def forward(ctx, a, b, u_a, x_b, signs_a, signs_b):
        batch, h, da = a.shape
        db = b.shape[2]
        c = _on_wire(a.view(batch, h, da // 2, 2).unbind(-1), u_a.T, 2)  # (B, h, 2, da / 2): c_s
        xb = _on_wire(b.view(batch, h, 2, db // 2).unbind(2), x_b, 2).view(batch, h, db)
        gh = torch.cat((b @ b.mT, b @ xb.mT), 1)  # (B, 2h, h): G over H
        r = (gh @ c.view(batch, h, da)).view(batch, 2, h, 2, da // 2)  # K c_s for K = G, H
        q_same = (c * r[:, 0]).sum(1)  # (B, 2, da / 2): c_s^T G c_s
        q_cross = (c[:, :, 0] * r[:, 1, :, 1]).sum(1)  # c_0^T H c_1 (= c_1^T H c_0)
        coeff = 2 * u_a[:, 0] * u_a[:, 1]  # [t]: u_0[t] u_1[t], twice
        p_a = q_same.mT @ u_a.square().T + coeff * q_cross.unsqueeze(-1)  # (B, da / 2, 2)
        m0 = c[:, :, 0] @ c[:, :, 0].mT @ b  # D_0 b
        m1 = c[:, :, 1] @ c[:, :, 1].mT @ xb  # D_1 X b
        p_b = (b * m0).sum(1) + (xb * m1).sum(1)  # (B, db)
        ctx.save_for_backward(a, b, u_a, x_b, signs_a, signs_b, c, xb, r, q_same, q_cross, m0, m1)
        return torch.cat((p_a.reshape(batch, da) @ signs_a, p_b @ signs_b), 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        a, b, u_a, x_b, signs_a, signs_b, c, xb, r, q_same, q_cross, m0, m1 = ctx.saved_tensors
        batch, h, da = a.shape
        db = b.shape[2]
        s_a = (grad[:, : signs_a.shape[1]] @ signs_a.T).view(batch, da // 2, 2)  # d loss / d p_a, [i, t]
        s_b = (grad[:, signs_a.shape[1] :] @ signs_b.T).unsqueeze(1)  # (B, 1, db)
        coeff = 2 * u_a[:, 0] * u_a[:, 1]
        alpha = (s_a @ u_a.square()).mT  # (B, 2, da / 2): d loss / d q_same
        beta = s_a @ coeff  # (B, da / 2): d loss / d q_cross
        g_w = torch.einsum("bit,bsi->ts", s_a, q_same)  # d loss / d u_s[t]**2
        g_coeff = torch.einsum("bit,bi->t", s_a, q_cross)
        g_u = 2 * u_a * g_w + 2 * g_coeff.unsqueeze(-1) * u_a.flip(-1)
        # c: through q_same, q_cross and D_s
        g_c = 2 * r[:, 0] * alpha.unsqueeze(1)  # (B, h, 2, da / 2)
        g_c[:, :, 0] += r[:, 1, :, 1] * beta.unsqueeze(1)
        g_c[:, :, 1] += r[:, 1, :, 0] * beta.unsqueeze(1)
        for s, side in enumerate((b, xb)):
            g_d = (side * s_b) @ side.mT  # d loss / d D_s
            g_c[:, :, s] += 2 * g_d @ c[:, :, s]
        # b and X b: through D_s, G and H
        g_g = (c * alpha.unsqueeze(1)).view(batch, h, da) @ c.view(batch, h, da).mT
        g_h = (c[:, :, 0] * beta.unsqueeze(1)) @ c[:, :, 1].mT
        g_b = torch.baddbmm(2 * m0 * s_b, g_g, b, alpha=2).baddbmm_(g_h, xb)
        g_xb = torch.baddbmm(2 * m1 * s_b, g_h.mT, b)
        g_xb, b_halves = g_xb.view(batch, h, 2, db // 2).unbind(2), b.view(batch, h, 2, db // 2).unbind(2)
        g_b += _on_wire(g_xb, x_b.T, 2).view(batch, h, db)
        g_x = _outer_sums(g_xb, b_halves)
        # a and u_a: through c
        g_c, a_halves = g_c.unbind(2), a.view(batch, h, da // 2, 2).unbind(-1)
        g_a = _on_wire(g_c, u_a, 3).view(batch, h, da)
        g_u += _outer_sums(a_halves, g_c)
        return g_a, g_b, g_u, g_x, None, None


def _on_wire(x: tuple[torch.Tensor, torch.Tensor], m: torch.Tensor, dim: int) -> torch.Tensor:
    """A 2 x 2 matrix m on one wire whose two halves are x (x_0, x_1): (m_k0 x_0 + m_k1 x_1 for k = 0, 1)
    stacked at `dim`, as element-wise products (a product of inner dimension 2 is slower)."""
    return torch.stack([torch.addcmul(x[0] * m[k, 0], x[1], m[k, 1]) for k in (0, 1)], dim)


def _outer_sums(x: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(2, 2) sums (x_k y_l).sum() over every element, for two pairs of tensors."""
    return torch.stack([torch.stack([(xk * yl).sum() for yl in y]) for xk in x])


def expvals(
    sp: SplitPlan,
    t: SplitTables,
    uplan: units.UnitPlan,
    ut: units.UnitTables,
    v: torch.Tensor,
    q: torch.Tensor,
) -> torch.Tensor:
    """<Z_w> (B, n) of a plan the halves take whole (`whole_plan`), from each wire's state after the
    embedding v (B, n, 2) and the layers' RY angles q (k, n); `uplan` and `ut` are the plan's units from
    `sp.layers` on and their tables (`_units.compile_units(plan, True, sp.layers)`: no unit, only the
    product state's halves and signs). Differentiable in v and q; no 2**n state is built."""
    product = units.product_halves(uplan, ut, v)
    if sp.folds:  # the last CNOT across the cut folded into <Z>
        a, b = halves(sp, t, product[1], product[3], q, crossed=False)
        u_a = sv.rotation_matrices("RY", q[-1, sp.cut - 1], q.dtype)
        u_b = sv.rotation_matrices("RY", q[-1, sp.cut], q.dtype)
        return crossed_expectations(a, b, u_a, u_b @ t.x @ u_b.T, *ut.signs)
    return expectations(*halves(sp, t, product[1], product[3], q), *ut.signs)
