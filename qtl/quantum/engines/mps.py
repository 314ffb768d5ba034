"""The MPS engine: a batched matrix product state simulation of `gates(config)` in PyTorch, with autograd.

A statevector doubles with every qubit; a matrix product state (MPS) grows only with the entanglement
across each cut. The state is a list of site tensors, one per wire, each (B, Dl, 2, Dr): batch, left
bond, physical index, right bond. The circuit is read from the native engine's compiled plan of the
same gate list (`_compiler.compile_plan`: the product state before the first CNOT, then per block a CNOT
run and each wire's product of single-qubit gates, built with one call per round):

- single-qubit gates are fused per wire and multiplied into that wire's site tensor when a two-qubit
  gate (or the measurement) needs it;
- a CNOT is applied exactly as a bond-2 operator (|0><0| x I + |1><1| x X): the control site keeps the
  projected halves, the target site the flipped and unflipped copies, and every bond between them gains
  a factor 2. No decomposition is involved, so values and gradients are plain tensor contractions.
  A long-range CNOT (the `ring` entangler's CNOT(n-1, 0)) is the same operator carried through the
  wires between, equivalent to a swap network and cheaper.

Bond dimensions: the brick wall of `chain` doubles every bond once per block, so depth d needs bond
2**d whatever the width; `ring` crosses every cut twice per block (4**d). No bond ever needs more than
2**min(left wires, right wires). After each run of two-qubit gates a bond above that physical bound
is brought down to it exactly, without decomposition: the wires on its short side are contracted into
one matrix, which the next wire absorbs, and they become the computational basis (identity tensors).

Exact chains take a faster path (`_brickwall`) where its uniform bonds cost at most BRICKWALL_MAX_COST
times the capped ones (wide circuits): all even sites in one tensor, all odd ones in another, so a
block is about ten operations whatever the width, and a real circuit's observables are measured on the
two stacks in closed form (`_mps_strings`: two sweeps side by side in two threads, backward by hand,
buffers kept between steps). Complex circuits and `sites` take the stacks apart into the site list.

`bond_bound` is the largest bond the exact simulation needs. With `max_bond` below it, the engine
truncates: after each run of two-qubit gates that leaves a bond above `max_bond`, one sweep brings the
MPS into canonical form and a second cuts every bond to its `max_bond` largest singular values. Their
gradient uses a broadened SVD backward (`_SVD`), finite where singular values are degenerate or zero.
`last_discarded` then holds, per sample, the discarded weight of that forward: 1 - prod(kept
fraction of the squared singular values), 0 when exact.

<Z_i> for every wire comes from left and right environments (no canonical form needed), divided by
the norm <psi|psi> (1 when exact, slightly less after truncation). When exact, the circuit's last block
(its last CNOT run and the single-qubit gates after it) is not simulated but moved into the observables,
which halves every bond it would double: its gates on wire i turn Z_i into cX X_i + cY Y_i + cZ Z_i
(c from the gates' matrices, differentiable in their angles), and each CNOT maps a Pauli string to a
Pauli string (the stabilizer-tableau rule), so each <Z_i> is a sum of at most three expectations of
short Pauli strings on the state before that block (`peeled_strings`). `parity` measures the global
observable Z (x) Z (x) ... (x) Z on the whole final state instead, the cost whose gradients vanish
exponentially in the width (`qtl.analysis.plateau`).
"""

from __future__ import annotations

import torch
from torch import nn

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.engines import _brickwall as brickwall
from qtl.quantum.engines import _mps_strings as mps_strings
from qtl.quantum.engines._compiler import compile_plan, forward_setup, slot_matrices
from qtl.quantum.engines._memory import human_bytes, resolve_memory_budget
from qtl.quantum.engines._pauli import PauliString, bra, conjugate_by_cnots, pauli_matrix

#: Default memory budget of one forward + backward, in bytes (4 GiB).
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Environment variable that overrides the default budget (an integer number of bytes).
MEMORY_BUDGET_ENV = "QTL_MPS_MEMORY_BUDGET"
#: Tensors of the final state's size that a training forward + backward keeps alive (measured on
#: depth-6 chains simulated site by site: the last blocks' site tensors, the environments and their
#: gradients), and that a forward without gradients holds at once (the sites, their environments).
_STATE_COPIES, _INFERENCE_COPIES = 12, 4
#: The same for the stacked chain, counted from its buffers: the simulation's stacks before each
#: block's gates and after, each sweep's sites, kets, environments and rows, then the backward's.
_STACKED_STATE_COPIES, _STACKED_INFERENCE_COPIES = 20, 11
#: Chains take the stacked simulation (`_brickwall`) while its uniform bonds hold at most this many times
#: the amplitudes of the site-by-site one with every bond capped (depth 6: 2.6 at 14 qubits, where both
#: paths take the same time, 2.2 at 16, 1.2 at 64; docs/benchmarks.md).
BRICKWALL_MAX_COST = 2.5


class BondTooLargeError(ValueError):
    """The exact simulation needs more memory than the budget allows and no `max_bond` was given."""


def physical_caps(n_qubits: int) -> list[int]:
    """log2 of the largest useful bond of each of the n-1 cuts: min(wires left, wires right)."""
    return [min(i + 1, n_qubits - 1 - i) for i in range(n_qubits - 1)]


def bond_profile(config: CircuitConfig) -> list[int]:
    """log2 of each cut's bond at the end of the exact simulation (the largest it reaches after any run)."""
    return _profile([config.cnot_pairs()] * config.depth, config.n_qubits)


def _profile(layers: list, n: int) -> list[int]:
    """`bond_profile` of CNOT runs (lists of (control, target) pairs): log2 of each cut's largest bond."""
    caps = physical_caps(n)
    logs = [0] * (n - 1)
    peak = [0] * (n - 1)
    for pairs in layers:
        for pair in pairs:
            lo, hi = sorted(pair)
            for b in range(lo, hi):
                logs[b] += 1
        logs = [min(x, c) for x, c in zip(logs, caps, strict=True)]
        peak = [max(p, x) for p, x in zip(peak, logs, strict=True)]
    return peak


def exact_bond(config: CircuitConfig) -> int:
    """The largest bond dimension the exact MPS simulation of `config` reaches (1 for a product state)."""
    return 2 ** max(bond_profile(config), default=0)


class _SVD(torch.autograd.Function):
    """Batched thin SVD whose backward is finite at degenerate or zero singular values.

    The usual backward divides by s_j**2 - s_i**2 and by s_i; here both are broadened, 1/x ->
    x / (x**2 + eps), with eps far below any gap that matters in the working precision.
    """

    @staticmethod
    def forward(ctx, a):
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        ctx.save_for_backward(u, s, vh)
        return u, s, vh

    @staticmethod
    def backward(ctx, gu, gs, gvh):
        u, s, vh = ctx.saved_tensors
        m, n = u.shape[-2], vh.shape[-1]
        eps = torch.finfo(s.dtype).eps ** 2 * 16

        def inv(x):
            return x / (x * x + eps)

        uh, v = u.mH, vh.mH
        if gu is None:
            gu = torch.zeros_like(u)
        if gvh is None:
            gvh = torch.zeros_like(vh)
        gv = gvh.mH
        uhgu = uh @ gu
        uhgu = uhgu - uhgu.mH
        vhgv = vh @ gv
        vhgv = vhgv - vhgv.mH
        s2 = s * s
        e = s2.unsqueeze(-2) - s2.unsqueeze(-1)  # e[i, j] = s_j**2 - s_i**2
        core = (uhgu * s.unsqueeze(-2) + s.unsqueeze(-1) * vhgv) * inv(e)
        if gs is not None:
            core = core + torch.diag_embed(gs).to(core.dtype)
        if u.is_complex():
            core = core + torch.diag_embed(uhgu.diagonal(0, -2, -1) * inv(2 * s))
        if m > s.shape[-1]:  # tall: the part of gU outside U's span
            gus = gu * inv(s).unsqueeze(-2)
            core_full = u @ core + gus - u @ (uh @ gus)
            return core_full @ vh
        if n > s.shape[-1]:  # wide: the part of gV outside V's span
            sgvh = gvh * inv(s).unsqueeze(-1)
            return u @ (core @ vh + sgvh - (sgvh @ v) @ vh)
        return u @ core @ vh


def _identity_site(left: int, right: int, batch: int, dtype, device) -> torch.Tensor:
    """(B, left, 2, right) site tensor of the computational basis: left*2 == right or left == 2*right."""
    eye = torch.eye(max(left, right), dtype=dtype, device=device).reshape(left, 2, right)
    return eye.expand(batch, left, 2, right)


class MPSEngine(nn.Module):
    """Batched MPS simulation of a config's circuit: (B, n) angles, weights -> (B, n) <Z_i>.

    Args:
        config: the circuit; its gate list `gates(config)` is read once here.
        max_bond: largest bond dimension kept. None (default): exact, with bond `bond_bound`; refused
            with `BondTooLargeError` when that does not fit the memory budget. Below `bond_bound`, the
            engine truncates by SVD and reports `last_discarded` per forward.
        memory_budget: most bytes one forward + backward may use; default 4 GiB, or the
            QTL_MPS_MEMORY_BUDGET environment variable.

    Call it as `engine(angles, weights)` with angles (B, n_qubits) float32/float64 on any device and
    weights of shape `config.weight_shape`; it returns (B, n_qubits) <Z_i> in the dtype and on the
    device of `angles`, differentiable with respect to both. It holds no parameters.
    """

    def __init__(
        self, config: CircuitConfig, max_bond: int | None = None, memory_budget: int | None = None
    ) -> None:
        super().__init__()
        if max_bond is not None and (
            isinstance(max_bond, bool) or not isinstance(max_bond, int) or max_bond < 1
        ):
            raise ValueError(f"max_bond must be a positive whole number or None, got {max_bond!r}")
        budget = resolve_memory_budget(memory_budget, MEMORY_BUDGET_ENV, DEFAULT_MEMORY_BUDGET)
        self.config, self.max_bond, self.memory_budget = config, max_bond, budget
        self.n_qubits = n = config.n_qubits
        self.plan = compile_plan(gates(config), n, config.weight_shape)  # checks the gates too
        self.real = self.plan.real
        self.bond_bound = exact_bond(config)
        self.exact = max_bond is None or max_bond >= self.bond_bound
        self._caps = [2**c for c in physical_caps(n)]
        self._targets = self._caps if self.exact else [min(c, max_bond) for c in self._caps]
        self._layers = [list(e.pairs) for e in self.plan.entanglers]  # each block's CNOT pairs
        # exact: the last block (a CNOT run, then rotations without inputs) goes into the observables
        peel = self.exact and bool(self._layers) and not self.plan.reuploads
        self._simulated = len(self._layers) - peel  # the blocks `forward` simulates
        self.peeled_strings: list[list[tuple[str, PauliString]]] = []  # per wire: (Pauli, string) terms
        if peel:
            paulis = "XZ" if self.real else "XYZ"  # real gates give Z_i no Y part
            self.peeled_strings = [
                [(p, conjugate_by_cnots(p, w, self._layers[-1], n)) for p in paulis] for w in range(n)
            ]
        # what forward measures: the peeled strings, or Z on every wire
        self._strings = [s for terms in self.peeled_strings for _, s in terms] or [
            (1, ((w, "Z"),)) for w in range(n)
        ]
        self._string_plan = mps_strings.plan_strings(self._strings, n)
        if self.real:
            mps_strings.check_real(self._strings)
        # log2 bonds, site by site, after the first `count` blocks (forward's, the whole circuit's)
        counts = {self._simulated, len(self._layers)}
        self._bonds = {count: [0, *_profile(self._layers[:count], n), 0] for count in counts}
        # exact chains: every even site in one tensor and every odd one in another (`_brickwall`), where
        # the uniform bonds cost at most BRICKWALL_MAX_COST times the capped ones
        chain = [brickwall.chain_layers(e.pairs, n) for e in self.plan.entanglers]
        self._chain = chain if self.exact and n > 1 and None not in chain else None
        self._stacked = {
            count: self._chain is not None
            and self._stacked_cost(count) <= BRICKWALL_MAX_COST * self._state_size(count)
            for count in self._bonds
        }
        self.last_discarded: torch.Tensor | None = None
        self._check_memory(1, torch.float32, training=True)

    # ---- sizes

    @property
    def bond(self) -> int:
        """The bond dimension this engine simulates with: `bond_bound` when exact, else `max_bond`."""
        return self.bond_bound if self.exact else self.max_bond

    def _stacked_cost(self, count: int) -> int:
        """Amplitudes per sample of the stacked simulation of the first `count` blocks of a chain."""
        even, odd = brickwall.stacked_log_bonds(self._chain[:count])
        return self.n_qubits * 2 * 2 ** (even + odd)

    def _state_size(self, count: int) -> int:
        """Amplitudes per sample of the site-by-site MPS after the first `count` blocks (capped bonds)."""
        bonds = [min(2**b, self.bond) for b in self._bonds[count]]
        return sum(2 * bonds[i] * bonds[i + 1] for i in range(self.n_qubits))

    def _check_memory(self, batch: int, dtype: torch.dtype, training: bool, whole: bool = False) -> None:
        size = torch.finfo(dtype).bits // 8 * (1 if self.real else 2)
        count = len(self._layers) if whole else self._simulated
        if self._stacked[count]:
            amplitudes = self._stacked_cost(count)
            copies = _STACKED_STATE_COPIES if training else _STACKED_INFERENCE_COPIES
        else:
            amplitudes = self._state_size(count)
            copies = _STATE_COPIES if training else _INFERENCE_COPIES
        need = copies * batch * size * amplitudes
        if need > self.memory_budget:
            advice = " (set max_bond to truncate)" if self.exact else ""
            raise BondTooLargeError(
                f"the MPS engine needs about {human_bytes(need)} for batch {batch} at {self.n_qubits} qubits "
                f"with bond {self.bond}{advice}; the budget is {human_bytes(self.memory_budget)} "
                f"({MEMORY_BUDGET_ENV})"
            )

    # ---- forward

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, `config.weight_shape` weights -> (B, n) <Z_i>, dtype and device of `angles`."""
        state, mats = self._simulate(angles, weights, self._simulated, stacked=self.real)
        if not len(angles):  # an empty batch (its inputs checked): no values, as every engine gives
            return angles.new_zeros((0, self.n_qubits))
        if isinstance(state, tuple):  # a real chain's stacked sites: the strings in closed form
            values = mps_strings.expectations(*state, self._string_plan)
        elif self.peeled_strings:
            values = _pauli_expvals(state, self._strings)
        else:
            return _z_expvals(state).to(angles.dtype)
        if self.peeled_strings:
            values = values * self._peeled_weights(mats[..., -1, :, :, :]).to(values.dtype)
            values = values.view(values.shape[0], self.n_qubits, -1).sum(2)
        return values.to(angles.dtype)

    def parity(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, weights -> (B,) <Z (x) Z (x) ... (x) Z>, the global parity, differentiable."""
        sites = self.sites(angles, weights)
        if not len(angles):  # an empty batch
            return angles.new_zeros(0)
        return _parity(sites).to(angles.dtype)

    def expvals_and_parity(
        self, angles: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n) <Z_i> and (B,) parity of one simulation of the whole circuit (both differentiable)."""
        sites = self.sites(angles, weights)
        if not len(angles):  # an empty batch
            return angles.new_zeros((0, self.n_qubits)), angles.new_zeros(0)
        return _z_expvals(sites).to(angles.dtype), _parity(sites).to(angles.dtype)

    def sites(self, angles: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """The final MPS of the whole circuit (the peeled block included): n site tensors (B, Dl, 2, Dr);
        sets `last_discarded`."""
        return self._simulate(angles, weights, len(self._layers), whole=True)[0]

    def _simulate(
        self, angles, weights, count: int, whole: bool = False, stacked: bool = False
    ) -> tuple[list[torch.Tensor] | tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """The MPS after the first `count` blocks and every block's single-qubit gates, (B?, L, n, 2, 2)
        (`_matrices`). The MPS is a list of site tensors, or with `stacked` and where the chain's
        stacked simulation runs with uniform bonds, the even and odd sites' stacks (`_brickwall.simulate`)."""
        n = self.n_qubits
        batch, device, real_dtype, dtype = forward_setup(self, angles, weights, whole=whole)
        if not batch:  # an empty batch: no samples' sites (every method answers with no values, as native)
            self.last_discarded = torch.zeros(0, dtype=real_dtype, device=device)
            return [torch.zeros((0, 1, 2, 1), dtype=dtype, device=device) for _ in range(n)], None
        v, mats = self._matrices(angles, weights.to(device=device, dtype=real_dtype).reshape(-1), dtype)
        if self._stacked[count]:  # exact: nothing discarded
            self.last_discarded = torch.zeros(batch, dtype=real_dtype, device=device)
            stacks = brickwall.simulate(v, mats, self._chain[:count])
            if stacked and brickwall.uniform(stacks):
                return stacks, mats
            sites = brickwall.sites(stacks, n)
            _collapse(sites, self._caps)
            return sites, mats
        kept = torch.ones(batch, dtype=real_dtype, device=device)
        sites = [v[:, w].reshape(batch, 1, 2, 1) for w in range(n)]
        pending: dict[int, torch.Tensor] = {}  # wire -> (2, 2) or (B, 2, 2) product of its waiting gates
        for index, pairs in enumerate(self._layers[:count]):
            for pair in pairs:
                for w in pair:
                    if w in pending:
                        sites[w] = _apply_local(sites[w], pending.pop(w))
                _cnot(sites, *pair)
            if self.exact:
                _collapse(sites, self._caps)
            elif max(a.shape[3] for a in sites) > self.max_bond:
                kept = kept * _truncate(sites, self._targets)
            for w, m in enumerate(mats[..., index, :, :, :].unbind(-3)):
                pending[w] = m if w not in pending else m @ pending[w]
        for w, m in pending.items():
            sites[w] = _apply_local(sites[w], m)
        self.last_discarded = (1 - kept).detach()
        return sites, mats

    def _peeled_weights(self, u: torch.Tensor) -> torch.Tensor:
        """The (n * terms,) weights of `_strings` whose sum per wire is <Z_i> after the peeled last block;
        u (n, 2, 2) is each wire's product of the block's gates."""
        heisenberg = u.mH @ pauli_matrix("Z", u) @ u  # U^H Z U, Hermitian
        paulis = torch.stack([pauli_matrix(p, u) for p, _ in self.peeled_strings[0]])  # every wire's terms
        return torch.einsum("tij,wji->wt", paulis, heisenberg).real.flatten() / 2  # tr(P M) / 2

    def _matrices(self, angles, wflat, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, n, 2) every wire's state before the first CNOT, and (B?, L, n, 2, 2) each block's
        single-qubit gates multiplied per wire (None without blocks): one call per round of the plan."""
        n, n_layers, plan = self.n_qubits, self.plan.n_layers, self.plan
        v0 = plan.v0_tensor(dtype).to(angles.device)  # (n, 2)
        m = slot_matrices(plan.prefix, n, angles, wflat, dtype)
        v = v0 if m is None else (m @ v0.unsqueeze(-1)).squeeze(-1)
        v = v.expand(angles.shape[0], n, 2)
        if not n_layers:
            return v, None
        tiled = angles.repeat(1, n_layers) if plan.reuploads else None  # slot l * n + w reads input w
        mats = slot_matrices(plan.rounds, n_layers * n, tiled, wflat, dtype)
        return v, mats.unflatten(-3, (n_layers, n))

    def extra_repr(self) -> str:
        mode = (
            f"exact, bond {self.bond_bound}"
            if self.exact
            else f"max_bond={self.max_bond} < exact {self.bond_bound}"
        )
        return f"n_qubits={self.n_qubits}, {mode}"


def _apply_local(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Site (B, Dl, 2, Dr) times a (2, 2) or (B, 2, 2) gate on its physical index, elementwise (a
    physical index 2 long is too short for a matrix product to pay)."""
    col0, col1 = m[..., :, 0], m[..., :, 1]  # (..., 2): the gate's columns
    shape = (-1, 1, 2, 1) if m.dim() == 3 else (1, 1, 2, 1)
    return torch.addcmul(col0.reshape(shape) * a[:, :, 0:1], col1.reshape(shape), a[:, :, 1:2])


def _cnot(sites: list[torch.Tensor], control: int, target: int) -> None:
    """Apply CNOT(control, target) in place as a bond-2 operator: every bond between them doubles."""
    lo, hi = sorted((control, target))

    def split(a: torch.Tensor, dim: int, is_control: bool) -> torch.Tensor:
        if not is_control:
            return torch.cat((a, a.flip(2)), dim=dim)  # k = 1 flips the target
        shape = list(a.shape)
        shape[dim] *= 2
        out = a.new_zeros(shape)  # k = 0 keeps |0>, k = 1 keeps |1>
        out.narrow(dim, 0, a.shape[dim])[:, :, 0] = a[:, :, 0]
        out.narrow(dim, a.shape[dim], a.shape[dim])[:, :, 1] = a[:, :, 1]
        return out

    sites[lo] = split(sites[lo], 3, lo == control)
    sites[hi] = split(sites[hi], 1, hi == control)
    for j in range(lo + 1, hi):  # the operator's bond passes through: block diagonal over k
        a = sites[j]
        zero = torch.zeros_like(a)
        sites[j] = torch.cat((torch.cat((a, zero), 3), torch.cat((zero, a), 3)), 1)


def _collapse(sites: list[torch.Tensor], caps: list[int]) -> None:
    """Bring every bond above its physical bound down to it exactly, in place (no decomposition).

    The wires on the short side of the outermost such cut are contracted into one matrix
    (B, 2**k, D), which the next wire absorbs; they become identity tensors of the computational basis.
    """
    n = len(sites)
    batch, dtype, device = sites[0].shape[0], sites[0].dtype, sites[0].device
    over = [b for b in range(n - 1) if sites[b].shape[3] > caps[b]]
    left = [b for b in over if b < n // 2]
    right = [b for b in over if b >= n // 2]
    if left:
        cut = max(left)
        m = sites[0].reshape(batch, 2, -1)
        for j in range(1, cut + 1):
            m = (m @ sites[j].reshape(batch, sites[j].shape[1], -1)).reshape(batch, 2 ** (j + 1), -1)
        nxt = sites[cut + 1]
        sites[cut + 1] = (m @ nxt.reshape(batch, nxt.shape[1], -1)).reshape(batch, m.shape[1], 2, -1)
        for j in range(cut + 1):
            sites[j] = _identity_site(2**j, 2 ** (j + 1), batch, dtype, device)
    if right:
        cut = min(right)  # bond between sites cut and cut+1; wires cut+1..n-1 collapse
        m = sites[n - 1].reshape(batch, -1, 2)
        for j in range(n - 2, cut, -1):
            a = sites[j]
            m = (a.reshape(batch, -1, a.shape[3]) @ m).reshape(batch, a.shape[1], -1)
        prev = sites[cut]
        sites[cut] = (prev.reshape(batch, -1, prev.shape[3]) @ m).reshape(batch, prev.shape[1], 2, -1)
        for j in range(cut + 1, n):
            sites[j] = _identity_site(2 ** (n - j), 2 ** (n - 1 - j), batch, dtype, device)


def _truncate(sites: list[torch.Tensor], targets: list[int]) -> torch.Tensor:
    """Canonicalise right to left, then cut each bond to `targets[b]` singular values, left to right.

    Returns (B,) the kept fraction of the squared norm (product over cuts). In place.
    """
    n = len(sites)
    batch = sites[0].shape[0]
    for j in range(n - 1, 0, -1):  # right-canonical: site j becomes the rows of Vh
        a = sites[j]
        u, s, vh = _SVD.apply(a.reshape(batch, a.shape[1], -1))
        sites[j] = vh.reshape(batch, -1, 2, a.shape[3])
        prev = sites[j - 1]
        us = u * s.unsqueeze(-2).to(u.dtype)
        sites[j - 1] = (prev.reshape(batch, -1, prev.shape[3]) @ us).reshape(batch, prev.shape[1], 2, -1)
    kept = torch.ones(batch, dtype=sites[0].real.dtype, device=sites[0].device)
    for j in range(n - 1):  # the orthogonality centre moves right, cutting each bond
        a = sites[j]
        u, s, vh = _SVD.apply(a.reshape(batch, -1, a.shape[3]))
        chi = min(s.shape[-1], targets[j])
        s2 = s * s
        kept = kept * (s2[:, :chi].sum(-1) / s2.sum(-1)).detach()
        u, s, vh = u[..., :chi], s[..., :chi], vh[..., :chi, :]
        sites[j] = u.reshape(batch, a.shape[1], 2, chi)
        nxt = sites[j + 1]
        svh = s.unsqueeze(-1).to(vh.dtype) * vh
        sites[j + 1] = (svh @ nxt.reshape(batch, nxt.shape[1], -1)).reshape(batch, chi, 2, -1)
    return kept


def _left(env: torch.Tensor, a: torch.Tensor, paulis: list) -> list[torch.Tensor]:
    """Left environment (B, Dl, Dl) (ket x bra) -> the ones after site a (B, Dl, 2, Dr), (B, Dr, Dr) each,
    one per entry of `paulis` (None: the identity) acting on the site: one product for the ket, one
    (as wide as `paulis`) for the bras."""
    batch, dl, _, dr = a.shape
    ket = env.mT @ a.reshape(batch, dl, 2 * dr)  # (B, Dl, 2 Dr): the ket contracted
    bras = torch.cat([bra(a, p).reshape(batch, 2 * dl, dr) for p in paulis], 2)
    return list((ket.reshape(batch, 2 * dl, dr).mT @ bras).split(dr, 2))


def _right(env: torch.Tensor, a: torch.Tensor, paulis: list) -> list[torch.Tensor]:
    """Right environment (B, Dr, Dr) -> the ones before site a, (B, Dl, Dl) each, per entry of `paulis`."""
    batch, dl, _, dr = a.shape
    ket = (a.reshape(batch, 2 * dl, dr) @ env).reshape(batch, dl, 2 * dr)
    bras = torch.cat([bra(a, p).reshape(batch, dl, 2 * dr) for p in paulis], 1)
    return list((ket @ bras.mT).split(dl, 2))


def _pauli_expvals(sites: list[torch.Tensor], strings: list[PauliString]) -> torch.Tensor:
    """(B, len(strings)) <psi|S|psi> / <psi|psi> for Pauli strings S on an MPS (any gauge).

    One sweep from each side keeps, at every site, the environments with each string's first (last)
    Pauli on that site; a string is then its first environment carried through its middle sites and
    met with its last one.
    """
    n = len(sites)
    batch, dtype, device = sites[0].shape[0], sites[0].dtype, sites[0].device
    firsts: list[set] = [set() for _ in range(n)]
    lasts: list[set] = [set() for _ in range(n)]
    for _, ops in strings:
        firsts[ops[0][0]].add(ops[0][1])
        lasts[ops[-1][0]].add(ops[-1][1])
    one = torch.ones(batch, 1, 1, dtype=dtype, device=device)
    left, starts = [one], {}  # left[j]: sites ..j-1; starts[j, P]: sites ..j with P on site j
    for j, a in enumerate(sites):
        paulis = [None, *sorted(firsts[j])]
        envs = dict(zip(paulis, _left(left[-1], a, paulis), strict=True))
        left.append(envs.pop(None))
        starts.update({(j, p): e for p, e in envs.items()})
    right, ends = [one] * (n + 1), {}  # right[j]: sites j..; ends[j, P]: sites j.. with P on site j
    for j in range(n - 1, -1, -1):
        paulis = ([None] if j else []) + sorted(lasts[j])  # (right[0] is never needed)
        if paulis:
            envs = dict(zip(paulis, _right(right[j + 1], sites[j], paulis), strict=True))
            right[j] = envs.pop(None, right[j])
            ends.update({(j, p): e for p, e in envs.items()})
    norm = left[n].reshape(batch).real
    out = []
    for sign, ops in strings:
        (first, p_first), (last, p_last) = ops[0], ops[-1]
        if first == last:
            value = (left[first] * ends[last, p_last]).sum((1, 2))
        else:
            env, on = starts[first, p_first], dict(ops)
            for j in range(first + 1, last):
                env = _left(env, sites[j], [on.get(j)])[0]
            value = (env * ends[last, p_last]).sum((1, 2))
        out.append(sign * value.real)
    return torch.stack(out, 1) / norm.unsqueeze(1)


def _z_expvals(sites: list[torch.Tensor]) -> torch.Tensor:
    """(B, n) <Z_i> / <psi|psi> from left and right environments of the MPS (any gauge).

    With L_j (B, Dl, Dl) the left environment (ket x bra) and R_j+1 (B, Dr, Dr) the right one,
    t_L = L_j^T A_j and t_R = A_j R_j+1 are both (B, Dl, 2, Dr), and since R is Hermitian,
    <psi| P_s |psi> = sum over the bonds of t_L[:, :, s] * conj(t_R[:, :, s]): four batched matrix
    products per site in all, and each wire's Z and norm come from the same two tensors.
    """
    n = len(sites)
    batch, dtype, device = sites[0].shape[0], sites[0].dtype, sites[0].device
    right = torch.ones(batch, 1, 1, dtype=dtype, device=device)  # (B, Dr, Dr): sites j+1.. with conjugates
    t_right = [None] * n
    for j in range(n - 1, -1, -1):
        a = sites[j]
        t = a.reshape(batch, -1, a.shape[3]) @ right  # (B, Dl*2, Dr)
        t_right[j] = t.reshape(a.shape)
        if j:
            right = t.reshape(batch, a.shape[1], -1) @ a.reshape(batch, a.shape[1], -1).conj().mT
    env = torch.ones(batch, 1, 1, dtype=dtype, device=device)  # (B, Dl, Dl): sites ..j-1, ket x bra
    out = []
    for j in range(n):
        a = sites[j]
        t = (env.mT @ a.reshape(batch, a.shape[1], -1)).reshape(a.shape)  # (B, Dl, 2, Dr)
        p = (t * t_right[j].conj()).sum((1, 3)).real  # (B, 2): <P_0>, <P_1> times the norm
        out.append((p[:, 0] - p[:, 1]) / (p[:, 0] + p[:, 1]))
        if j < n - 1:
            env = t.reshape(batch, -1, a.shape[3]).mT @ a.conj().reshape(batch, -1, a.shape[3])
    return torch.stack(out, dim=1)


def _parity(sites: list[torch.Tensor]) -> torch.Tensor:
    """(B,) <psi| Z (x) ... (x) Z |psi> / <psi|psi>: one sweep of transfer matrices with and without Z
    (environments ket x bra, as in `_z_expvals`)."""
    batch, dtype, device = sites[0].shape[0], sites[0].dtype, sites[0].device
    z = torch.tensor([1.0, -1.0], dtype=dtype, device=device).view(1, 1, 2, 1)
    env = norm = torch.ones(batch, 1, 1, dtype=dtype, device=device)  # (B, D, D)
    for a in sites:
        bra = a.conj().reshape(batch, -1, a.shape[3])  # (B, Dl * 2, Dr)
        env = (env.mT @ (a * z).reshape(batch, a.shape[1], -1)).reshape(bra.shape).mT @ bra
        norm = (norm.mT @ a.reshape(batch, a.shape[1], -1)).reshape(bra.shape).mT @ bra
    return env.reshape(batch).real / norm.reshape(batch).real
