"""A chain's first layers on its two halves (`qtl.quantum.engines._split`), as matrix products by hand.

`halves` runs a `_split.SplitPlan`'s k layers on each half's states, a sum of r products after them
(here m1 and m2 are the wires of a half's two Kronecker factors, not the halves' own, as in `_split`):
two matrix products per half and layer, one per Kronecker factor of its rotations, the CNOTs and the
doubling of the branches at each crossing folded into their matrices (`HalvesTables`, built once per
plan and device), and their backward written out (`_Layers`). `HalvesRun.flops` counts their flops.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from qtl.quantum.engines import _units as units
from qtl.quantum.engines._memory import constant_tables

if TYPE_CHECKING:
    from qtl.quantum.engines._split import SplitPlan

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

    @property
    def lengths(self) -> tuple[int, int]:
        """Per half, the length of the rows of X `_leave` gathers: X's, or half of it where `split`."""
        pairs = zip(self.ms, self.split, strict=True)
        return tuple(2**m2 // (1 if split is None else 2) for (_, m2), split in pairs)

    def flops(self, batch: int) -> int:
        """`halves`' flops on `batch` samples, forward and backward (`_flops`)."""
        return _flops(self.steps, self.ms, batch)


def _flops(steps: tuple[tuple[_Step, ...], ...], ms: tuple[tuple[int, int], ...], batch: int) -> int:
    """The flops of each half's products on `batch` samples, forward and backward: a product of a K' x K
    matrix (or (C, S, X, X') matrices) 2 K' (2 X') flops per value of its input forward, twice that
    backward (the input's gradient and the matrix's)."""
    total = 0
    for half, (m1, m2) in zip(steps, ms, strict=True):
        values = batch * 2 ** (m1 + m2)
        for step in half:
            inner, outer = (step.shape[1], step.shape[0]) if step.first else step.shape[2:4]
            total += 2 * outer * values
            values = values // inner * outer
    return 3 * total


@functools.lru_cache(maxsize=256)
def flops_per_sample(sp: SplitPlan, crossed: bool) -> int:
    """`HalvesRun.flops` of one sample, from the products' shapes alone (no entry of their matrices)."""
    builder = _RunBuilder(sp, crossed, shapes_only=True)
    builder.layers()
    return _flops(builder.steps, builder.ms, 1)


@dataclass(frozen=True, eq=False)
class HalvesTables:
    """A split plan's tables on one device: `halves`' without and with the last layer's crossing."""

    runs: tuple[HalvesRun, HalvesRun]  # runs[crossed]


@constant_tables(32)
def halves_tables(sp: SplitPlan, device: torch.device, dtype: torch.dtype) -> HalvesTables:
    return HalvesTables(tuple(_RunBuilder(sp, crossed).run(device, dtype) for crossed in (False, True)))


@functools.lru_cache(maxsize=1024)
def _separate(p: tuple[int, ...], m1: int, m2: int) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """A CNOT run's gather over a half's states (i, t) (m1 + m2 wires) -> (p1, p2, straddle): the run is
    p1 (x) p2 and, with `straddle`, the CNOT from i's last wire to t's first (commuting with them)."""
    d1, d2 = 2**m1, 2**m2
    for straddle in (False, True):
        sep = [p[j ^ (d2 // 2 if straddle and j // d2 % 2 else 0)] for j in range(d1 * d2)]
        p1, p2 = [sep[i * d2] // d2 for i in range(d1)], [sep[t] % d2 for t in range(d2)]
        if all(sep[i * d2 + t] == p1[i] * d2 + p2[t] for i in range(d1) for t in range(d2)):
            return tuple(p1), tuple(p2), straddle
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

    def __init__(self, sp: SplitPlan, crossed: bool, shapes_only: bool = False):
        n, k, f = sp.n_qubits, sp.layers, sp.factors
        self.n, self.k, self.cut, self.crossed, self.shapes_only = n, k, sp.cut, crossed, shapes_only
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
        base Kronecker product of `layer`'s RYs of `wires` (start, size), times a weight (not read with
        `shapes_only`: `flops_per_sample`)."""
        if self.shapes_only:
            return _Step(first, 0, shape)
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

    def first_factor(self, half: int, layer: int, doubles: bool) -> _Step:
        """A half's first factor's product, in stored order: its matrix's rows permuted by the next even
        pairs, its columns by the odd pairs; with `doubles` (half b), rows (k, s) of R1 X^s, X flipping
        the factor's first wire (wire cut): the branches double."""
        (start, m1), d1 = self.factors[half][0], 2 ** self.ms[half][0]
        o1, e1 = _inverse(self.inside[layer][half][0]), self.after[layer][half][0]
        nat, ss = [_stored(i, m1) for i in range(d1)], (0, 1)[: 1 + doubles]
        rows = (
            (e1[nat[i]], o1[nat[j]] ^ (d1 // 2 if s else 0), ONE)
            for i in range(d1)
            for s in ss
            for j in range(d1)
        )
        return self.step(True, (d1 * len(ss), d1), layer, (start, m1), rows)

    def half_a(self, layer: int) -> None:
        """Wires [0, cut): the first factor's product, then the second's, on whose output the boundary's
        CNOT of the even pairs acts (after the rotations), and whose rows project wire cut - 1."""
        (s2, m2), d2 = self.factors[0][1], 2 ** self.ms[0][1]
        o2, e2 = _inverse(self.inside[layer][0][1]), self.after[layer][0][1]
        first = self.first_factor(0, layer, False)
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
        (s2, m2), d2 = self.factors[1][1], 2 ** self.ms[1][1]
        o2, e2 = _inverse(self.inside[layer][1][1]), self.after[layer][1][1]
        cs = (0, 1) if self.evens[layer][1] or self.odds[layer][1] else (0,)
        cols = ((e2[y], o2[x ^ (d2 // 2 if c else 0)], ONE) for c in cs for x in range(d2) for y in range(d2))
        self.steps[1].append(self.step(False, (len(cs), 1, d2, d2), layer, (s2, m2), cols))
        self.steps[1].append(self.first_factor(1, layer, self.doubling[layer]))
        if self.doubling[layer]:
            self.middle[1].insert(0, sum(self.doubling[:layer]))

    def layers(self) -> None:
        """Each half's products, layer by layer."""
        for layer in range(self.k):
            self.half_a(layer)
            self.half_b(layer)

    def run(self, device: torch.device, dtype: torch.dtype) -> HalvesRun:
        self.layers()
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


@constant_tables(16)
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


def matrices(t: HalvesTables, q: torch.Tensor, crossed: bool = True) -> torch.Tensor:
    """Every product's matrix of `halves` (with `crossed`, flat) from the split layers' angles q (k, n):
    differentiable in q. Built once, they serve every part of a batch (`halves`' `mats`,
    `shared_matrices`)."""
    return _matrices(t.runs[crossed], q)


@contextlib.contextmanager
def shared_matrices(build: Callable[[], torch.Tensor], backward: bool) -> Iterator[torch.Tensor]:
    """The halves' matrices from `build()` (`matrices`), once for every part of a batch whose backward
    runs part by part: yields them as a leaf that adds up each part's gradient and, with `backward`,
    runs their own backward to the angles once, at the end. Built for each part, the step took
    1.06-1.08x as long at 22 and 24 qubits, batch 32, in two parts (docs/benchmarks.md)."""
    with torch.set_grad_enabled(backward):
        built = build()
    mats = built.detach().requires_grad_(backward)
    yield mats
    if backward and mats.grad is not None:  # None where no part ran (an empty batch)
        with torch.enable_grad():
            torch.autograd.backward(built, mats.grad)


def halves(
    sp: SplitPlan,
    t: HalvesTables,
    a: torch.Tensor,
    b: torch.Tensor,
    q: torch.Tensor,
    crossed: bool = True,
    mats: torch.Tensor | None = None,
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
    one matrix per half of K. Half a runs its first factor's product first where that pair is even (it
    acts on the second's output, after the rotations) and last where it is odd (on the second's input),
    half b its second factor's first (the pair acts on its input, before the rotations); each doubles
    its branches in its second factor's product (half a) or its last (half b):

    - half a: R2's rows projected, R2 P_s = u_s u_s^T R2 (u_s = RY e_s on wire cut - 1) = u_s (x) c_s with
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
    two copies into the samples-first result.

    `mats`, where given, are the products' matrices (`matrices(t, q, crossed)`), built once for every
    part of a batch; q is then not read."""
    run = t.runs[crossed]
    mats = _matrices(run, q) if mats is None else mats
    return _Layers.apply(run, _leave(run, a.shape[0]), mats, a, b, torch.is_grad_enabled())


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
    def forward(ctx, run, leave, mats, a, b, saves):
        outs, saved = [], []  # each product's input, where a backward may follow (`saves`)
        for steps, (m1, m2), (index, _), split, length, enter, middle, x in zip(
            run.steps, run.ms, leave, run.split, run.lengths, run.enter, run.middle, (a, b), strict=True
        ):
            batch, r = x.shape[0], 2 ** (len(middle) - 1)
            x = x.index_select(1, enter[0]).view(batch, 2**m1, 2**m2).transpose(0, 1).contiguous()
            for step in steps:
                saved += [x] if saves else []
                w = mats[step.offset : step.offset + step.size].view(step.shape)
                if step.first:
                    x = torch.mm(w, _lead(x, w.shape[1]))
                else:
                    rows = _halves_rows(x, w.shape[0], w.shape[1], w.shape[2])
                    y = x.new_empty(rows.shape[:-1] + w.shape[3:])
                    for s in range(w.shape[1]):
                        torch.bmm(rows[:, :, s], w[:, s], out=y[:, :, s])
                    x = y
            shape = (batch, 2, r, 2 ** (m1 + m2 - 1)) if split == "lead" else (batch, r, 2 ** (m1 + m2))
            outs.append(_rows(x, length).index_select(0, index).view(shape))
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
        for steps, (m1, m2), (_, inverse), length, enter, g in zip(
            run.steps, run.ms, ctx.leave, run.lengths, run.enter, (ga, gb), strict=True
        ):
            batch = g.shape[0]
            out, turn = _rows(buffers[0][: g.numel()], length), 0
            g = torch.index_select(_rows(g.contiguous(), length), 0, inverse, out=out)
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
        return None, None, gmats, grads[0], grads[1], None
