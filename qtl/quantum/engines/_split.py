"""A chain's first layers as its two halves' states, a sum of products, before the full state is built.

Before any CNOT crosses from wire cut - 1 to wire cut, a sample's state is a product a (x) b of its two
halves' states (wires [0, cut) and [cut, n)). The CNOT (cut - 1, cut) makes it a sum of two products,

    CNOT (a (x) b) = (P0 a) (x) b + (P1 a) (x) (X b)

(P0, P1: wire cut - 1 is |0>, |1>; X flips wire cut), and every other gate of a chain acts inside one
half. So after k layers the state is sum_j a_j (x) b_j over r <= 2**k branches, each half 2**(n/2)
states per branch where the full state has 2**n: at 20 qubits and r = 64, 2 x 64 x 1024 states per
sample in place of 2**20. `_halves.halves` runs the k layers, two matrix products per half and layer, and
their backward by hand. Then either `expectations` gives <Z> from the halves' Gram matrices, where they
take every layer and that costs fewer flops (`SplitPlan.gram`), and the state is never built
(`crossed_expectations` where the last layer crosses the cut: from its r / 2 products before that
CNOT, never doubled, in about half the flops, since the new branches P0 a_j and P1 a_j are
orthogonal); or the unit step (`_units.UnitStep.forward_from`) builds it with one product per sample,
psi = A^T B of inner dimension r, runs the remaining layers on it, and its gradient g there gives the
halves' (dA = B g^T, dB = A g).

`plan_split` picks k: the most leading layers (all of them, if they qualify) whose CNOT runs are chains
(a ring's pair (n - 1, 0) crosses the cut too) and whose branches stay within a rank, cut at 2 (n // 4)
or two wires past it, whichever takes more layers or, where the units follow (`leading_plan`), whose
halves take fewer flops, and where the halves take every layer by the Gram route (`whole_plan`), whose
halves and Gram matrices do, each half's two Kronecker factors (`SplitPlan.factors`) split where its
products take the fewest flops (`_factored`). There `expvals` gives <Z> from each wire's embedded
state, by autograd: the native engine's forward of such a circuit (`qtl.quantum.engines.native`), and
the closed-form step's halves.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from qtl.quantum.engines import _halves
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _units as units
from qtl.quantum.engines._compiler import Plan

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
    firsts: tuple[int, int] | None = None  # per half, its first Kronecker factor's wires (None: m // 2)

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
        2**m2) (`expectations`), or where it `folds` r**2 (11 2**m1 / 4 + 4 2**m2)
        (`crossed_expectations`)."""
        r, da, db = self.rank, 2**self.cut, 2 ** (self.n_qubits - self.cut)
        return r * r * (11 * da / 4 + 4 * db) if self.folds else 8 * r * r * (da + db)

    @property
    def gram(self) -> bool:
        """Whether <Z> from the halves' Gram matrices (`gram_flops`) takes fewer flops than building the
        state (6 r 2**n per sample, forward and backward)."""
        return self.gram_flops < 6 * self.rank * 2**self.n_qubits

    @property
    def widths(self) -> tuple[int, int]:
        """The halves' wires."""
        return self.cut, self.n_qubits - self.cut

    @property
    def factors(self) -> tuple[tuple[int, int], ...]:
        """(first wire, wires) of the four Kronecker factors of a layer's rotations: two per half, split
        at `firsts` (`_factored` picks them), else in the middle."""
        firsts = self.firsts or tuple(m // 2 for m in self.widths)
        out = []
        for start, m, first in zip((0, self.cut), self.widths, firsts, strict=True):
            out += [(start, first), (start + first, m - first)]
        return tuple(out)

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
    if min(cut, n - cut) < 4:  # `_halves` takes two wires at least per Kronecker factor
        return None
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


def leading_plan(plan: Plan, max_rank: int, cut: int | None = None) -> SplitPlan | None:
    """The leading layers of `plan` its halves take, cut at `cut`, at most `max_rank` products and no more
    than the smaller half's states; None where the units cannot run the plan, or no layer qualifies.
    With `cut` None, of the cuts `_cuts` offers, the one that takes the most layers, and of those the
    one whose halves take the fewest flops (`_halves.flops_per_sample`: the units after them and
    building the state from their products cost the same at either cut)."""
    if max_rank < 1 or units.compile_units(plan, True) is None:
        return None
    n = plan.n_qubits
    if cut is None:
        plans = (leading_plan(plan, max_rank, c) for c in _cuts(n))
        return min((sp for sp in plans if sp is not None), key=_leading_cost, default=None)
    return plan_split(plan, cut, min(max_rank, 2 ** min(cut, n - cut)))


@functools.lru_cache(maxsize=256)
def _factored(sp: SplitPlan, crossed: bool) -> SplitPlan:
    """A whole plan (`whole_plan`) with each half's two Kronecker factors split where the halves'
    products take the fewest flops (`_halves.flops_per_sample`, with the last crossing or without): in
    the middle, or a wire either side of it, each factor at least two wires; of equal counts, the first
    in the order middle, a wire less, a wire more (the two either side often tie, and the mirrored
    split, the larger factor first, took 2-27% longer: docs/benchmarks.md). The products are
    not alike (half b's first factor doubles the branches, half a's second holds a packed branch bit:
    `_halves.halves`), so the middle is not always the cheapest: at depth 6, 22 qubits take 5 + 7 wires
    on half a (the halves' products 5.0 GFLOP a step of 32, as at 7 + 5, against 5.8 at 6 + 6), and
    the step took 0.85-0.91 of the time (docs/benchmarks.md). Where units follow the halves
    (`leading_plan`), they keep the middle: the halves are a small share of the step there, and 15 and
    16 qubits at depth 9, with 27% and 17% fewer flops on the halves, took no less time."""
    choices = [[f for f in (m // 2, m // 2 - 1, m // 2 + 1) if 2 <= f <= m - 2] for m in sp.widths]
    plans = [dataclasses.replace(sp, firsts=(fa, fb)) for fa in choices[0] for fb in choices[1]]
    return min(plans, key=lambda p: _halves.flops_per_sample(p, crossed))  # the middle first: on a tie


def _leading_cost(sp: SplitPlan) -> tuple[int, int]:
    """`leading_plan`'s order of its cuts: the most layers first, then the halves' fewest flops."""
    return -sp.layers, _halves.flops_per_sample(sp, True)


def _cuts(n: int) -> tuple[int, ...]:
    """The cuts the halves may take: 2 (n // 4) and two wires past it, each leaving a half at least four
    wires (`_halves` takes two per Kronecker factor)."""
    return tuple(c for c in (2 * (n // 4), 2 * (n // 4) + 2) if min(c, n - c) >= 4)


def whole_plan(plan: Plan, max_rank: int) -> SplitPlan | None:
    """`leading_plan` where it takes every layer and <Z> comes from the Gram matrices (`SplitPlan.gram`):
    the plans `expvals` runs whole; else None. Where the last crossing folds into <Z>, the halves hold
    only the products before it (`SplitPlan.held`), so the plan may reach 2 max_rank products: where
    its Gram matrices take under half the flops of the way that stops at max_rank (`_gram_pays`). Of
    the cuts `_cuts` offers, the one whose halves and Gram matrices take the fewest flops
    (`whole_flops`): where the halves differ in width, the wider one's products cost more on half b (its
    branches double in its first factor's product) than on half a (18 qubits: 1.03 GFLOP a step of
    batch 32 cut at 10, against 1.69 at 8)."""
    plans = [_whole_at(plan, max_rank, cut) for cut in _cuts(plan.n_qubits)]
    return min((sp for sp in plans if sp is not None), key=whole_flops, default=None)


def _whole_at(plan: Plan, max_rank: int, cut: int) -> SplitPlan | None:
    """`whole_plan` cut at `cut`."""
    sp = leading_plan(plan, max_rank, cut)
    if sp is not None and sp.layers == plan.n_layers and sp.gram:
        return _factored(sp, not sp.folds)
    folded = leading_plan(plan, 2 * max_rank, cut)
    if folded is None or folded.layers < plan.n_layers or not (folded.folds and folded.gram):
        return None
    return _factored(folded, False) if folded.held <= max_rank and _gram_pays(folded, sp, plan) else None


def whole_flops(sp: SplitPlan) -> float:
    """Flops per sample of a plan `expvals` runs whole: its halves' products (`_halves.flops_per_sample`)
    and the Gram matrices (`SplitPlan.gram_flops`), forward and backward."""
    return _halves.flops_per_sample(sp, not sp.folds) + sp.gram_flops


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
    c: torch.Tensor,
    b: torch.Tensor,
    u_a: torch.Tensor,
    u_b: torch.Tensor,
    signs_a: torch.Tensor,
    signs_b: torch.Tensor,
) -> torch.Tensor:
    """`expectations` of the state after a last layer whose CNOT (cut - 1, cut) crosses the cut, from the
    h products before that CNOT, never doubled, and before the layer's rotations of the two wires beside
    the cut: u_a, RY on wire cut - 1 (a's last), and u_b, RY on wire cut (b's first), 2 x 2. c (B, 2, h,
    2**m1 / 2): a's products by the value s of wire cut - 1 (c[:, s] = c_s); b (B, h, 2**m2).
    `signs_*` (2**m, m): each half's Z eigenvalues, as `expectations` takes them. Differentiable in c,
    b, u_a and u_b (`_CrossedExpectations`)."""
    return _CrossedExpectations.apply(c, b, u_a, u_b, signs_a, signs_b)


class _CrossedExpectations(torch.autograd.Function):
    """The state is sum_(s, j) (c_sj (x) u_a e_s) (x) u_b X^s b_j (X flips wire cut): the CNOT keeps a
    product's branch where wire cut - 1 is s, c_sj, and flips b_j where it is 1, so the products never
    double, and the two rotations act on <Z> alone, as 2 x 2 weights. With G = b b^T and H = b (X b)^T
    = S + S^T (S = b_0 b_1^T, b's halves by wire cut, which X swaps), half a's probability of state
    (t, i) is sum_(s, s') u_a[t, s] u_a[t, s'] c_s^T K_ss' c_s' at i (K = G where s = s', else H). With
    D_s = c_s c_s^T, half b's of (t, k) is sum_(t1, t2) u_b[t, t1] u_b[t, t2] Q_t1t2 at k, where Q_t1t2 =
    b_t1^T D_0 b_t2 + b_(1 - t1)^T D_1 b_(1 - t2) comes from M = [D_0; D_1] b, one product. Per sample,
    with h = r / 2: 6 h**2 2**m1 + 7 h**2 2**m2 flops forward ([G; H] c, D and M) and 5 h**2 2**m1 + 9 h**2
    2**m2 backward: r**2 (11 2**m1 / 4 + 4 2**m2) in all (`SplitPlan.gram_flops`)."""

    @staticmethod
    def forward(ctx, c, b, u_a, u_b, signs_a, signs_b):
        batch, _, h, half_a = c.shape
        b0, b1 = _halves_of(b)
        s = b0 @ b1.mT
        gh = torch.cat((b @ b.mT, s + s.mT), 1)  # (B, 2h, h): G over H
        kc = gh.unsqueeze(1) @ c  # (B, 2, 2h, 2**m1 / 2): G c_s over H c_s
        q_same = torch.linalg.vecdot(c, kc[:, :, :h], dim=2)  # (B, 2, 2**m1 / 2): c_s^T G c_s
        q_cross = torch.linalg.vecdot(c[:, 0], kc[:, 1, h:], dim=1)  # c_0^T H c_1 (= c_1^T H c_0)
        pairs = c.view(2 * batch, h, half_a)
        d = (pairs @ pairs.mT).view(batch, 2 * h, h)  # D_0 over D_1
        m = (d @ b).view(batch, 2, h, b.shape[2])  # D_s b
        on_0, on_1 = _halves_of(torch.linalg.vecdot(b.unsqueeze(1), m, dim=2))  # b_t^T D_s b_t, t = 0, 1
        cross = sum(torch.linalg.vecdot(x, _halves_of(m[:, k])[1 - k], dim=1) for k, x in enumerate((b0, b1)))
        q_b = torch.stack((on_0[:, 0] + on_1[:, 1], on_1[:, 0] + on_0[:, 1], cross), 1)  # Q00, Q11, Q01
        p_a = _weighted(u_a, q_same, q_cross)  # (B, 2, 2**m1 / 2): [t, i]
        p_b = _weighted(u_b, q_b[:, :2], q_b[:, 2])  # (B, 2, 2**m2 / 2): [t, k]
        ctx.save_for_backward(c, b, u_a, u_b, signs_a, signs_b, kc, q_same, q_cross, m, q_b)
        return torch.cat((p_a.view(batch, -1) @ _last_wire_first(signs_a), p_b.view(batch, -1) @ signs_b), 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        c, b, u_a, u_b, signs_a, signs_b, kc, q_same, q_cross, m, q_b = ctx.saved_tensors
        batch, _, h, half_a = c.shape
        n_a = signs_a.shape[1]
        s_a = (grad[:, :n_a] @ _last_wire_first(signs_a).T).view(batch, 2, half_a)  # d loss / d p_a
        s_b = (grad[:, n_a:] @ signs_b.T).view(batch, 2, -1)
        alpha, beta, g_ua = _weighted_backward(u_a, s_a, q_same, q_cross)
        g_qb, g01, g_ub = _weighted_backward(u_b, s_b, q_b[:, :2], q_b[:, 2])
        b0, b1 = _halves_of(b)
        pairs = c.view(2 * batch, h, half_a)
        # c: through q_same, q_cross and D_s
        g_c = kc[:, :, :h] * (2 * alpha).unsqueeze(2)  # (B, 2, h, 2**m1 / 2)
        g_c[:, 0].addcmul_(kc[:, 1, h:], beta.unsqueeze(1))
        g_c[:, 1].addcmul_(kc[:, 0, h:], beta.unsqueeze(1))
        g00, g11 = g_qb.unbind(1)  # d loss / d Q00, Q11: the weights of b_t^T D_s b_t, per s along t
        w = torch.stack((torch.cat((g00, g11), -1), torch.cat((g11, g00), -1)), 1).unsqueeze(
            2
        )  # (B, 2, 1, 2**m2)
        cross = (b0 * g01.unsqueeze(1)) @ b1.mT  # the Q01 terms of d loss / d D_s, both s
        g_d = ((b.unsqueeze(1) * w).view(batch, 2 * h, -1) @ b.mT).view(batch, 2, h, h)
        g_d += ((cross + cross.mT) / 2).unsqueeze(1)
        g_c.view(2 * batch, h, half_a).baddbmm_(g_d.view(2 * batch, h, h), pairs, alpha=2)
        # b: through G, H and Q
        g_g = ((c * alpha.unsqueeze(2)).view(2 * batch, h, half_a) @ pairs.mT).view(batch, 2, h, h).sum(1)
        g_h = (c[:, 0] * beta.unsqueeze(1)) @ c[:, 1].mT
        g_s = g_h + g_h.mT
        g_b = torch.mul(m[:, 0], 2 * w[:, 0]).addcmul_(m[:, 1], 2 * w[:, 1]).baddbmm_(g_g, b, alpha=2)
        g_b0, g_b1 = _halves_of(g_b)  # and of X b, whose halves are b's swapped
        m_sum, h_b = _halves_of(m[:, 0] + m[:, 1]), _halves_of(g_s @ b)
        g_b0.addcmul_(g01.unsqueeze(1), m_sum[1]).add_(h_b[1])
        g_b1.addcmul_(g01.unsqueeze(1), m_sum[0]).add_(h_b[0])
        return g_c, g_b, g_ua, g_ub, None, None


def _halves_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x's last axis, a half's states, split by its leading wire: two views."""
    return x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]


def _weighted(u: torch.Tensor, same: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """p[t] = sum_s u[t, s]**2 same[s] + 2 u[t, 0] u[t, 1] cross: the probabilities of a wire rotated by u
    (2 x 2) from the forms of its two values (same (B, 2, k)) and between them (cross (B, k))."""
    return u.square() @ same + (2 * u[:, 0] * u[:, 1]).unsqueeze(-1) * cross.unsqueeze(1)


def _weighted_backward(u, grad, same, cross):
    """`_weighted`'s gradients from grad (B, 2, k) = d loss / d p: of same, of cross and of u."""
    g_same = u.square().T @ grad
    g_cross = (2 * u[:, 0] * u[:, 1]) @ grad
    g_u = 2 * u * torch.einsum("btk,bsk->ts", grad, same)
    g_u += 2 * torch.einsum("btk,bk->t", grad, cross).unsqueeze(-1) * u.flip(-1)
    return g_same, g_cross, g_u


def _last_wire_first(signs: torch.Tensor) -> torch.Tensor:
    """A half's Z eigenvalues (2**m, m) with its states in the order (t, i), t its last wire."""
    return signs.view(-1, 2, signs.shape[1]).transpose(0, 1).reshape(signs.shape)


def expvals(
    sp: SplitPlan,
    t: _halves.HalvesTables,
    uplan: units.UnitPlan,
    ut: units.UnitTables,
    v: torch.Tensor,
    q: torch.Tensor,
    mats: torch.Tensor | None = None,
) -> torch.Tensor:
    """<Z_w> (B, n) of a plan the halves take whole (`whole_plan`), from each wire's state after the
    embedding v (B, n, 2) and the layers' RY angles q (k, n); `uplan` and `ut` are the plan's units from
    `sp.layers` on and their tables (`_units.compile_units(plan, True, sp.layers, sp.cut)`: no unit, only the
    product state's halves and signs). Differentiable in v and q (and `mats`, where given: the halves'
    matrices, `matrices(sp, t, q)`, built once for every part of a batch); no 2**n state is built."""
    product = units.product_halves(uplan, ut, v)
    if sp.folds:  # the last CNOT across the cut, and the rotations beside it, folded into <Z>
        c, b = _halves.halves(sp, t, product[1], product[3], q, crossed=False, mats=mats)
        u_a, u_b = sv.rotation_matrices("RY", q[-1, sp.cut - 1 : sp.cut + 1], q.dtype).unbind(0)
        return crossed_expectations(c, b, u_a, u_b, *ut.signs)
    return expectations(*_halves.halves(sp, t, product[1], product[3], q, mats=mats), *ut.signs)


def matrices(sp: SplitPlan, t: _halves.HalvesTables, q: torch.Tensor) -> torch.Tensor:
    """The halves' matrices `expvals` takes for the plan `sp` (`_halves.matrices`: without the last
    crossing where it `folds`), from the layers' angles q (k, n); differentiable in q."""
    return _halves.matrices(t, q, crossed=not sp.folds)
