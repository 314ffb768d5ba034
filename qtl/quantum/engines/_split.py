"""A chain's first layers as its two halves' states, a sum of products, before the full state is built.

Before any CNOT crosses from wire cut - 1 to wire cut, a sample's state is a product a (x) b of its two
halves' states (wires [0, cut) and [cut, n)). The CNOT (cut - 1, cut) makes it a sum of two products,

    CNOT (a (x) b) = (P0 a) (x) b + (P1 a) (x) (X b)

(P0, P1: wire cut - 1 is |0>, |1>; X flips wire cut), and every other gate of a chain acts inside one
half. So after k layers the state is sum_j a_j (x) b_j over r <= 2**k branches, each half 2**(n/2)
states per branch where the full state has 2**n: at 20 qubits and r = 64, 2 x 64 x 1024 states per
sample in place of 2**20. `halves` runs the k layers, two matrix products per half and layer, and
their backward by hand. Then either `expectations` gives <Z> from the halves' Gram matrices, where they
take every layer and that costs fewer flops (`SplitPlan.gram`), and the state is never built
(`crossed_expectations` where the last layer crosses the cut: from its r / 2 products before that
CNOT, never doubled, in about half the flops, since the new branches P0 a_j and P1 a_j are
orthogonal); or the unit step (`_units.UnitStep.forward_from`) builds it with one product per sample,
psi = A^T B of inner dimension r, runs the remaining layers on it, and its gradient g there gives the
halves' (dA = B g^T, dB = A g).

`plan_split` picks k: the most leading layers (all of them, if they qualify) whose CNOT runs are chains
(a ring's pair (n - 1, 0) crosses the cut too) and whose branches stay within a rank; `leading_plan`
cuts where the units' product state is. Where the halves take every layer by the Gram route
(`whole_plan`), `expvals` gives <Z> from each wire's embedded state, by autograd: the native engine's
forward of such a circuit (`qtl.quantum.engines.native`), and the closed-form step's halves.
"""

from __future__ import annotations

import functools
import math
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


Gather = tuple[torch.Tensor, torch.Tensor]  # a permutation's gather index and its inverse's


@dataclass(frozen=True)
class _Step:
    """One matrix product of `halves` on a half's states, held x (K, M, X): K the states of the half's
    first Kronecker factor in stored order (`_stored`), X the second factor's, M the samples and branches.
    With `first`, y (K', M, X) = F x.view(K, M X), F (K', K); else y[c, .., s, :] = x[c, .., s, :] W[c, s]
    for W (C, S, X_in, X_out), c the stored leading bit (C = 2 where a CNOT straddles the factors) and s
    half a's packed branch bit (S = 2 where x holds one: `halves`)."""

    first: bool
    offset: int  # where its matrix starts in the flat tensor of every step's matrix (`_matrices`)
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, eq=False)
class HalvesRun:
    """`halves`' tables for one value of `crossed`: each half's products in order, how every product's
    matrix is built (entry e: base[base_index[e]] weights[weight_index[e]], `_matrices`), the gathers into
    and out of the stored order, and where each sample and branch sits in the stored M (`_leave`)."""

    steps: tuple[tuple[_Step, ...], tuple[_Step, ...]]
    bases: tuple[tuple[int, torch.Tensor], ...]  # per size: `units.kron_products` index of the base products
    base_index: torch.Tensor
    weight_index: torch.Tensor
    keep: torch.Tensor  # (k, n): 1, or 0 at the last layer's wires cut - 1 and cut (`crossed` False)
    enter: tuple[Gather, Gather]  # per half: natural states -> stored (K, X)
    middle: tuple[tuple[int | None, ...], tuple[int | None, ...]]  # per half, M's axes in order: None the
    # samples, d the branch bit of the d-th crossing
    split: tuple[str | None, str | None]  # per half, how the last gather splits X's rows: "lead" (A's wire
    # cut - 1 leads its result), "flip" (B's straddling CNOT after the last layer), None (not split)
    ms: tuple[tuple[int, int], tuple[int, int]]  # per half, its factors' wires
    n_qubits: int
    cut: int

    def flops(self, batch: int) -> int:
        """`halves`' flops on `batch` samples, forward and backward: a product of a K' x K matrix (or
        (C, S, X, X') matrices) 2 K' (2 X') flops per value of its input forward, twice that backward
        (the input's gradient and the matrix's)."""
        total = 0
        for steps, (m1, m2) in zip(self.steps, self.ms, strict=True):
            values = batch * 2 ** (m1 + m2)
            for step in steps:
                inner, outer = (step.shape[1], step.shape[0]) if step.first else step.shape[2:4]
                total += 2 * outer * values
                values = values // inner * outer
        return 3 * total


@dataclass(frozen=True, eq=False)
class SplitTables:
    """A split plan's tables on one device: `halves`' without and with the last layer's crossing."""

    runs: tuple[HalvesRun, HalvesRun]  # runs[crossed]


@constant_tables(32)
def split_tables(sp: SplitPlan, device: torch.device, dtype: torch.dtype) -> SplitTables:
    return SplitTables(tuple(_RunBuilder(sp, crossed).run(device, dtype) for crossed in (False, True)))


def _separate(p: tuple[int, ...], m1: int, m2: int) -> tuple[list[int], list[int], bool]:
    """A CNOT run's gather over a half's states (i, t) (m1 + m2 wires) -> (p1, p2, straddle): the run is
    p1 (x) p2 and, with `straddle`, the CNOT from i's last wire to t's first (commuting with them)."""
    d1, d2 = 2**m1, 2**m2
    for straddle in (False, True):
        sep = [p[j ^ (d2 // 2 if straddle and j // d2 % 2 else 0)] for j in range(d1 * d2)]
        p1, p2 = [sep[i * d2] // d2 for i in range(d1)], [sep[t] % d2 for t in range(d2)]
        if all(sep[i * d2 + t] == p1[i] * d2 + p2[t] for i in range(d1) for t in range(d2)):
            return p1, p2, straddle
    raise ValueError("a CNOT run neither inside the factors nor one CNOT across their boundary")


def _inverse(p: list[int]) -> list[int]:
    out = [0] * len(p)
    for a, b in enumerate(p):
        out[b] = a
    return out


def _stored(k: int, m1: int) -> int:
    """A first factor's state in stored order k = (c, h) -> its natural index (h, c): its last wire, a
    straddling CNOT's control, leads the stored axis, so that each value's states are one half of it."""
    half = 2 ** (m1 - 1)
    return (k % half) << 1 | k // half


# `_matrices`' weights: 1, 0, the RY table's entries, then two products of wire cut - 1's RYs per layer
ONE, ZERO, RY = 0, 1, 2


class _RunBuilder:
    """Builds a `HalvesRun`: each product's matrix entries, in order, each a base Kronecker product's
    entry (a layer's RYs of some wires) times one weight (`_matrices`), and where the branches go."""

    def __init__(self, sp: SplitPlan, crossed: bool):
        n, k, f = sp.n_qubits, sp.layers, sp.factors
        self.n, self.k, self.cut, self.crossed = n, k, sp.cut, crossed
        self.factors = ((f[0], f[1]), (f[2], f[3]))
        self.ms = ((f[0][1], f[1][1]), (f[2][1], f[3][1]))
        if min(min(m) for m in self.ms) < 2:
            raise ValueError("the halves need at least 4 wires each")
        self.inside = [[_separate(sp.inside[i][h], *self.ms[h]) for h in (0, 1)] for i in range(k)]
        self.after = [[_separate(sp.after[i][h], *self.ms[h]) for h in (0, 1)] for i in range(k)]
        # per half, the straddling CNOT at the boundary before each layer (k: after the last), of the
        # even pairs (after the rotations) or of the odd (before them)
        self.evens = [(False, False)] + [tuple(a[2] for a in after) for after in self.after]
        self.odds = [tuple(i[2] for i in inside) for inside in self.inside] + [(False, False)]
        self.doubling = [sp.crossing[i] and (crossed or i < k - 1) for i in range(k)]
        self.base: list[tuple[int, int, int]] = []
        self.weight: list[int] = []
        self.bases: dict[int, list[tuple[int, int]]] = {}
        self.steps: tuple[list[_Step], list[_Step]] = ([], [])
        self.middle: tuple[list[int | None], list[int | None]] = ([None], [None])
        self.packed: int | None = None  # half a's branch bit held beside X (d: the d-th crossing's)
        # after the RY table, per layer l and of wire cut - 1's RYs (X^b flips a row where b = 1):
        # RY_l X^b RY_(l-1) [b, x, s'], then RY_l[x, s] RY_(l-1)[s ^ b, s'] [x, s, b, s']
        self.flipped, self.projected = RY + 4 * k * n, RY + 4 * k * n + 8 * k

    def ry(self, layer: int, row: int, col: int) -> int:
        """The weight of wire cut - 1's RY_layer[row, col]."""
        return RY + 4 * (layer * self.n + self.cut - 1) + 2 * row + col

    def step(self, first: bool, shape: tuple[int, ...], layer: int, wires: tuple[int, int], entries) -> _Step:
        """A product whose matrix (`shape`) holds `entries` (row, col, weight) in order: an entry of the
        base Kronecker product of `layer`'s RYs of `wires` (start, size), times a weight."""
        start, size = wires
        keys = self.bases.setdefault(size, [])
        if (layer, start) not in keys:
            keys.append((layer, start))
        base, offset = keys.index((layer, start)), len(self.weight)
        for row, col, weight in entries:
            self.base.append((size, base, row * 2**size + col))
            self.weight.append(weight)
        if len(self.weight) - offset != math.prod(shape):
            raise AssertionError("a product's entries do not fill its matrix")
        return _Step(first, offset, shape)

    def half_a(self, layer: int) -> None:
        """Wires [0, cut): the first factor's product, then the second's, on whose output the boundary's
        CNOT of the even pairs acts (after the rotations), and whose rows project wire cut - 1."""
        ((s1, m1), (s2, m2)), d1, d2 = self.factors[0], 2 ** self.ms[0][0], 2 ** self.ms[0][1]
        (o1, o2, _), (e1, e2, _) = self.inside[layer][0], self.after[layer][0]
        o1, o2, nat = _inverse(o1), _inverse(o2), [_stored(i, m1) for i in range(d1)]
        rows = ((e1[nat[i]], o1[nat[j]], ONE) for i in range(d1) for j in range(d1))
        first = self.step(True, (d1, d1), layer, (s1, m1), rows)
        out_c, in_c = self.evens[layer + 1][0], self.odds[layer][0]
        packed, last = self.packed is not None, layer == self.k - 1
        e2_in = _inverse(self.after[layer - 1][0][1]) if packed else list(range(d2))  # left by the last
        out = "pack" if self.doubling[layer] and not last else "full" if self.doubling[layer] else "plain"
        cs = (0, 1) if out_c or in_c else (0,)
        s_in, s_out = (0, 1)[: 1 + packed], (0, 1)[: 1 + (out != "plain")]
        x_in, y_out = d2 // (1 + packed), d2 // (1 + (out == "pack"))
        lead = last and not self.crossed  # A with wire cut - 1 leading: the rows (w, t')

        def entries():
            for c, s, x in ((c, s, x) for c in cs for s in s_in for x in range(x_in)):
                # input state x (its first state where packed: wire cut - 1 then holds u_s, which E2's
                # CNOT onto it flips where beta, the last bit of col, is 1)
                col = o2[e2_in[2 * x if packed else x] ^ (d2 // 2 if in_c and c else 0)]
                for s_new, y in ((s_new, y) for s_new in s_out for y in range(y_out)):
                    if out == "pack":  # rows c_s_new: the other wires' states
                        row, w = y ^ (d2 // 4 if out_c and c else 0), None
                    else:
                        t = (y % (d2 // 2)) << 1 | y // (d2 // 2) if lead else y
                        row, w = divmod(e2[t ^ (d2 // 2 if out_c and c else 0)], 2)
                    yield row, col >> 1, self.weight_a(layer, out, packed, s, s_new, col & 1, w)

        shape = (len(cs), len(s_in), x_in, len(s_out) * y_out)
        second = self.step(False, shape, layer, (s2, m2 - 1), entries())
        self.steps[0].extend([second, first] if in_c else [first, second])
        if packed:
            self.middle[0].append(self.packed)
        bit = sum(self.doubling[:layer])
        self.packed = bit if out == "pack" else None
        if out == "full":
            self.middle[0].append(bit)

    def weight_a(
        self, layer: int, out: str, packed: bool, s: int, s_new: int, beta: int, w: int | None
    ) -> int:
        """Wire cut - 1's factor of an entry of half a's second factor: its input u_s (`packed`: RY_(l-1)
        e_s, then X^beta) or the state beta; its output projected on u_s_new ("pack": e_s_new^T RY_l^T
        RY_l = e_s_new^T), on u_s_new u_s_new^T ("full") or not ("plain"), w its state there."""
        if packed:
            if out == "pack":
                return self.ry(layer - 1, s_new ^ beta, s)
            if out == "full":
                return self.projected + 16 * layer + 8 * w + 4 * s_new + 2 * beta + s
            return self.flipped + 8 * layer + 4 * beta + 2 * w + s
        if out == "plain":
            return self.ry(layer, w, beta)
        if s_new != beta:
            return ZERO
        return ONE if out == "pack" else self.ry(layer, w, s_new)

    def half_b(self, layer: int) -> None:
        """Wires [cut, n): the second factor's product, on whose input the boundary's CNOT acts (before
        the rotations), then the first's, whose rows (k, s) take R1 X^s: the branches double."""
        ((s1, m1), (s2, m2)), d1, d2 = self.factors[1], 2 ** self.ms[1][0], 2 ** self.ms[1][1]
        (o1, o2, _), (e1, e2, _) = self.inside[layer][1], self.after[layer][1]
        o1, o2, nat = _inverse(o1), _inverse(o2), [_stored(i, m1) for i in range(d1)]
        cs = (0, 1) if self.evens[layer][1] or self.odds[layer][1] else (0,)
        cols = ((e2[y], o2[x ^ (d2 // 2 if c else 0)], ONE) for c in cs for x in range(d2) for y in range(d2))
        self.steps[1].append(self.step(False, (len(cs), 1, d2, d2), layer, (s2, m2), cols))
        ss = (0, 1)[: 1 + self.doubling[layer]]
        rows = (
            (e1[nat[i]], o1[nat[j]] ^ (d1 // 2 if s else 0), ONE)
            for i in range(d1)
            for s in ss
            for j in range(d1)
        )
        self.steps[1].append(self.step(True, (d1 * len(ss), d1), layer, (s1, m1), rows))
        if self.doubling[layer]:
            self.middle[1].insert(0, sum(self.doubling[:layer]))

    def run(self, device: torch.device, dtype: torch.dtype) -> HalvesRun:
        for layer in range(self.k):
            self.half_a(layer)
            self.half_b(layer)
        starts, bases, total = {}, [], 0
        for size in sorted(self.bases):
            index = []
            for layer, start in self.bases[size]:
                starts[size, layer, start] = total
                total += 4**size
                plain = tuple(range(2**size))
                index.append(
                    units._kron_gather(units.Unit(layer, start, size, True, plain, plain, False), self.n)
                )
            bases.append((size, torch.stack(index).reshape(-1).to(device)))
        base_index = [starts[(size, *self.bases[size][base])] + at for size, base, at in self.base]
        keep = torch.ones(self.k, self.n, dtype=dtype)
        if not self.crossed:
            keep[-1, self.cut - 1 : self.cut + 1] = 0
        enter = []
        for m1, m2 in self.ms:
            index = torch.tensor([_stored(i, m1) * 2**m2 + t for i in range(2**m1) for t in range(2**m2)])
            enter.append((index.to(device), torch.argsort(index).to(device)))
        return HalvesRun(
            (tuple(self.steps[0]), tuple(self.steps[1])),
            tuple(bases),
            torch.tensor(base_index, device=device),
            torch.tensor(self.weight, device=device),
            keep.to(device),
            (enter[0], enter[1]),
            (tuple(self.middle[0]), tuple(self.middle[1])),
            (None if self.crossed else "lead", "flip" if self.evens[self.k][1] else None),
            self.ms,
            self.n,
            self.cut,
        )


@constant_tables(64)
def _leave(run: HalvesRun, batch: int) -> tuple[Gather, Gather]:
    """Per half, the gather of the stored states' rows (K, M, X) into the result (B, r, 2**m) (rows of X
    or of half of it, `HalvesRun.split`), samples first, branch j = sum_d s_d 2**d (new branches after
    the old), A with wire cut - 1 leading where `split` says so."""
    out = []
    for (m1, _), middle, split in zip(run.ms, run.middle, run.split, strict=True):
        bits = sum(axis is not None for axis in middle)
        r, d1 = 2**bits, 2**m1
        sizes = [batch if axis is None else 2 for axis in middle]
        j, b = torch.arange(r).view(1, r, 1, 1), torch.arange(batch).view(batch, 1, 1, 1)
        rows = torch.zeros(batch, r, 1, 1, dtype=torch.int64)
        for at, axis in enumerate(middle):
            rows = rows * sizes[at] + (b if axis is None else j >> axis & 1)
        stored = torch.tensor(_inverse([_stored(i, m1) for i in range(d1)]))  # natural i -> stored
        g = torch.arange(2)
        if split == "lead":  # result rows (b, w, j, i)
            index = (stored.view(1, 1, 1, d1) * math.prod(sizes) + rows) * 2 + g.view(1, 1, 2, 1)
            index = index.transpose(1, 2)
        elif split == "flip":  # result rows (b, j, i, t0): t0 flipped where i's last bit is 1
            i = torch.arange(d1).view(1, 1, d1, 1)
            index = (stored.view(1, 1, d1, 1) * math.prod(sizes) + rows) * 2 + (g.view(1, 1, 1, 2) ^ i & 1)
        else:
            index = stored.view(1, 1, d1, 1) * math.prod(sizes) + rows
        index = index.reshape(-1).to(run.base_index.device)
        out.append((index, torch.argsort(index)))
    return out[0], out[1]


def _matrices(run: HalvesRun, q: torch.Tensor) -> torch.Tensor:
    """Every product's matrix, flat (`_Step.offset`): base Kronecker products of the layers' RYs
    (`units.kron_products`), each entry times one weight: 1, 0, an entry of wire cut - 1's RY, or of a
    product of two layers' (`_RunBuilder`)."""
    table = units.ry_table(q[: run.keep.shape[0]] * run.keep)
    base = torch.cat([units.kron_products(table, index, size).view(-1) for size, index in run.bases])
    u = table.view(-1, run.n_qubits, 2, 2)[:, run.cut - 1]  # (k, 2, 2): wire cut - 1's RYs
    earlier = torch.cat((u[:1], u[:-1]))  # RY_(l-1) (layer 0: unused)
    flips = torch.stack((earlier, earlier.flip(-2)), 1)  # X^b RY_(l-1): (k, b, 2, 2)
    weights = (
        table.new_tensor([1.0, 0.0]),
        table,
        (u.unsqueeze(1) @ flips).reshape(-1),  # [l, b, x, s']
        (u[..., None, None] * flips.transpose(1, 2).unsqueeze(1)).reshape(-1),  # [l, x, s, b, s']
    )
    return base.index_select(0, run.base_index) * torch.cat(weights).index_select(0, run.weight_index)


def halves(
    sp: SplitPlan, t: SplitTables, a: torch.Tensor, b: torch.Tensor, q: torch.Tensor, crossed: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each half's product state (B, 2**cut) and (B, 2**(n - cut)), the first layer's even pairs applied,
    and the split layers' angles q (k, n) -> A (B, r, 2**cut), B (B, r, 2**(n - cut)): the state after
    the k layers (and the next layer's even pairs) is sum_j A[:, j] (x) B[:, j]. With `crossed` False,
    for `crossed_expectations`, the last layer leaves out its crossing CNOT (its branches not doubled:
    r / 2 products) and its rotations of wires cut - 1 and cut, and A comes by the value of wire cut - 1:
    (B, 2, r / 2, 2**cut / 2). Differentiable (`_Layers`, by hand).

    A layer on a half is E R O: its odd pairs O, its RYs R = R1 (x) R2 on the half's two Kronecker
    factors (`SplitPlan.factors`, wires [0, m1) and [m1, m)), the next layer's even pairs E, and at O's
    place the crossing CNOT: P_s (wire cut - 1 is s) on half a, X^s (flips wire cut) on half b for branch
    s. So every layer is two matrix products per half, one per factor (`_Step`), on its states held
    (K, M, X): the first factor's states K, then the samples and branches M, then the second factor's X.
    The CNOTs inside a factor permute its matrix's rows (E) and columns (O); the one pair across the
    factors' boundary (m1 - 1, m1), even or odd by m1's parity, flips X's leading wire where K's last is
    1: K holds its states with that wire leading (`_stored`), so that the second factor's product takes
    one matrix per half of K. Half a runs its first factor's product first (an even pair acts on the
    second's output, after the rotations; an odd pair, on its input), half b its second's (the pair acts
    on its input, before the rotations), so that each doubles its branches in its last product:

    - half a: R2's rows projected, P_s R2 = u_s u_s^T R2 (u_s = RY e_s on wire cut - 1) = u_s (x) c_s with
      c_s = (I (x) e_s^T) R2': X holds c_s, 2**m2 / 2 states beside the branch bit s ("packed"), so its
      branches double at no cost, and the next layer's second factor is a 2**m2 x 2**m2 / 2 product per s,
      u_s and the next even pairs (CNOT (cut - 2, cut - 1) among them) in its columns. Each of its
      entries is one of R2' (the other wires' RYs) times one of u_s's, or of RY_l X RY_(l-1) (`_matrices`);
    - half b: the first factor's rows (k, s) are those of R1 X^s: it doubles the branches after the
      second factor's product ran on the undoubled states.

    The products leave the branches in an order of their own; one gather of rows of X (`_leave`) puts A
    and B samples first and in the sum's order, new branches after the old: one copy each way. At 20
    qubits, depth 6, batch 32, float32, one thread, forward and backward took 1.5x less time than by
    autograd with a gather of the states per layer, the doubling as a product of inner dimension 2 and
    two copies into the samples-first result."""
    run = t.runs[crossed]
    return _Layers.apply(run, _leave(run, a.shape[0]), _matrices(run, q), a, b)


def _rows(x: torch.Tensor, cols: int) -> torch.Tensor:
    """A contiguous x as a matrix of `cols` columns (a view with -1 fails on an empty batch)."""
    return x.view(x.numel() // cols, cols)


def _lead(x: torch.Tensor, rows: int) -> torch.Tensor:
    """A contiguous x as a matrix of `rows` rows: a first factor's product's states (K, M X) (`_Step`)."""
    return x.view(rows, x.numel() // rows)


def _halves_rows(x: torch.Tensor, c: int, s: int, cols: int) -> torch.Tensor:
    """A second factor's product's states x (K, M, X) as (C, rows, S, cols): C halves of K (`_Step`)."""
    return x.view(c, x.numel() // (c * s * cols), s, cols)


class _Layers(torch.autograd.Function):
    """`halves`' products forward, and back each one's transpose and its matrix's gradient (x^T g or
    g x^T), into two buffers that take turns; autograd takes the matrices' gradients on to the angles."""

    @staticmethod
    def forward(ctx, run, leave, mats, a, b):
        outs, saved = [], []
        for steps, (m1, m2), (index, _), split, enter, middle, x in zip(
            run.steps, run.ms, leave, run.split, run.enter, run.middle, (a, b), strict=True
        ):
            batch, r = x.shape[0], 2 ** (len(middle) - 1)
            x = x.index_select(1, enter[0]).view(batch, 2**m1, 2**m2).transpose(0, 1).contiguous()
            for step in steps:
                saved.append(x)
                w = mats[step.offset : step.offset + step.size].view(step.shape)
                if step.first:
                    x = torch.mm(w, _lead(x, w.shape[1]))
                else:
                    rows = _halves_rows(x, w.shape[0], w.shape[1], w.shape[2])
                    y = x.new_empty(rows.shape[:-1] + w.shape[3:])
                    for s in range(w.shape[1]):
                        torch.bmm(rows[:, :, s], w[:, s], out=y[:, :, s])
                    x = y
            chunk = 2**m2 // (1 if split is None else 2)
            shape = (batch, 2, r, 2 ** (m1 + m2 - 1)) if split == "lead" else (batch, r, 2 ** (m1 + m2))
            outs.append(_rows(x, chunk).index_select(0, index).view(shape))
        ctx.run, ctx.leave = run, leave
        ctx.save_for_backward(mats, *saved)
        return tuple(outs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ga, gb):
        run = ctx.run
        mats, *saved = ctx.saved_tensors
        gmats = torch.empty_like(mats)
        most = max(max(x.numel() for x in saved), ga.numel(), gb.numel())
        buffers = (mats.new_empty(most), mats.new_empty(most))
        grads = []
        for steps, (m1, m2), (_, inverse), split, enter, g in zip(
            run.steps, run.ms, ctx.leave, run.split, run.enter, (ga, gb), strict=True
        ):
            batch, chunk = g.shape[0], 2**m2 // (1 if split is None else 2)
            out, turn = _rows(buffers[0][: g.numel()], chunk), 0
            g = torch.index_select(_rows(g.contiguous(), chunk), 0, inverse, out=out)
            xs, saved = saved[: len(steps)], saved[len(steps) :]
            for step, x in zip(reversed(steps), reversed(xs), strict=True):
                w = mats[step.offset : step.offset + step.size].view(step.shape)
                gw = gmats[step.offset : step.offset + step.size].view(step.shape)
                turn ^= 1
                gx = buffers[turn][: x.numel()]
                if step.first:
                    g = _lead(g, w.shape[0])
                    torch.mm(g, _lead(x, w.shape[1]).T, out=gw)
                    g = torch.mm(w.T, g, out=_lead(gx, w.shape[1]))
                else:
                    rows, gx = (_halves_rows(y, *w.shape[:3]) for y in (x, gx))
                    g = _halves_rows(g, w.shape[0], w.shape[1], w.shape[3])
                    for s in range(w.shape[1]):
                        torch.bmm(g[:, :, s], w[:, s].mT, out=gx[:, :, s])
                        torch.bmm(rows[:, :, s].mT, g[:, :, s], out=gw[:, s])
                    g = gx
            g = g.reshape(2**m1, batch, 2**m2).transpose(0, 1).reshape(batch, 2 ** (m1 + m2))
            grads.append(g.index_select(1, enter[1]))
        return None, None, gmats, grads[0], grads[1]


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
        r = gh.unsqueeze(1) @ c  # (B, 2, 2h, 2**m1 / 2): G c_s over H c_s
        q_same = torch.linalg.vecdot(c, r[:, :, :h], dim=2)  # (B, 2, 2**m1 / 2): c_s^T G c_s
        q_cross = torch.linalg.vecdot(c[:, 0], r[:, 1, h:], dim=1)  # c_0^T H c_1 (= c_1^T H c_0)
        pairs = c.view(2 * batch, h, half_a)
        d = (pairs @ pairs.mT).view(batch, 2 * h, h)  # D_0 over D_1
        m = (d @ b).view(batch, 2, h, b.shape[2])  # D_s b
        d0, d1 = _halves_of(torch.linalg.vecdot(b.unsqueeze(1), m, dim=2))  # (B, 2, 2**m2 / 2): b_t^T D_s b_t
        cross = sum(torch.linalg.vecdot(x, _halves_of(m[:, k])[1 - k], dim=1) for k, x in enumerate((b0, b1)))
        q_b = torch.stack((d0[:, 0] + d1[:, 1], d1[:, 0] + d0[:, 1], cross), 1)  # Q00, Q11, Q01
        p_a = _weighted(u_a, q_same, q_cross)  # (B, 2, 2**m1 / 2): [t, i]
        p_b = _weighted(u_b, q_b[:, :2], q_b[:, 2])  # (B, 2, 2**m2 / 2): [t, k]
        ctx.save_for_backward(c, b, u_a, u_b, signs_a, signs_b, r, q_same, q_cross, m, q_b)
        return torch.cat((p_a.view(batch, -1) @ _last_wire_first(signs_a), p_b.view(batch, -1) @ signs_b), 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        c, b, u_a, u_b, signs_a, signs_b, r, q_same, q_cross, m, q_b = ctx.saved_tensors
        batch, _, h, half_a = c.shape
        n_a = signs_a.shape[1]
        s_a = (grad[:, :n_a] @ _last_wire_first(signs_a).T).view(batch, 2, half_a)  # d loss / d p_a
        s_b = (grad[:, n_a:] @ signs_b.T).view(batch, 2, -1)
        alpha, beta, g_ua = _weighted_backward(u_a, s_a, q_same, q_cross)
        g_qb, g01, g_ub = _weighted_backward(u_b, s_b, q_b[:, :2], q_b[:, 2])
        b0, b1 = _halves_of(b)
        pairs = c.view(2 * batch, h, half_a)
        # c: through q_same, q_cross and D_s
        g_c = r[:, :, :h] * (2 * alpha).unsqueeze(2)  # (B, 2, h, 2**m1 / 2)
        g_c[:, 0].addcmul_(r[:, 1, h:], beta.unsqueeze(1))
        g_c[:, 1].addcmul_(r[:, 0, h:], beta.unsqueeze(1))
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
    if sp.folds:  # the last CNOT across the cut, and the rotations beside it, folded into <Z>
        c, b = halves(sp, t, product[1], product[3], q, crossed=False)
        u_a, u_b = sv.rotation_matrices("RY", q[-1, sp.cut - 1 : sp.cut + 1], q.dtype).unbind(0)
        return crossed_expectations(c, b, u_a, u_b, *ut.signs)
    return expectations(*halves(sp, t, product[1], product[3], q), *ut.signs)
