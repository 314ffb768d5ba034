"""The native engine: a batched statevector simulation of `gates(config)` in PyTorch, with autograd.

The gate list is compiled once (`compiler.compile_plan`) into two parts, each simulated the cheapest
way it allows:

1. product prefix: the single-qubit gates before the first CNOT, which include the input embedding.
   The state is a product there, so each wire is a batched 2-vector and the (B, 2**n) state is their
   Kronecker product, O(B 2**n).
2. trainable blocks: everything after, independent of the input. A run of CNOTs is one fixed
   permutation of basis states; a layer of single-qubit gates is one 2x2 matrix per wire, applied as
   Kronecker blocks over wire groups (`statevector.wire_groups`); up to FULL_BLOCK_MAX_QUBITS a layer
   is one block with the CNOT run before it folded in. When the batch is larger than 2**n (and
   n <= MATRIX_PATH_MAX_QUBITS), the blocks' 2**n x 2**n matrix is built once per forward (the
   product of its layer matrices, or the blocks applied to the identity) and applied with one matmul.

3. or, for a wide chain (from HALVES_MIN_QUBITS wires, one trainable RY per wire) whose every layer
   its two halves can take within HALVES_MAX_RANK products held, where that costs fewer flops than the
   state (`halves_plan`; not 12 qubits at depth 6, for one), the "halves" path: each half's
   states, a sum of products doubled by every CNOT across the cut, and <Z_i> from their Gram matrices
   (`qtl.quantum.engines._split`), by autograd: the 2**n state is never built (at 20 qubits, depth 6,
   2 x 64 x 1024 values per sample in place of 2**20).
4. or, for a wide circuit on CPU the halves cannot take and the units run (from UNITS_MIN_QUBITS
   wires, two fewer from UNITS_MIN_BATCH samples; one trainable RY per wire, chain or ring), the
   "units" path: the closed-form training step's
   forward, a chunk of samples at a time through 16 x 16 unit matrices, a chain's leading layers on its
   halves (`qtl.quantum.engines._wide`), never the batch's whole state; its backward runs each chunk's
   forward again, then the units' transposes in reverse (at 18 qubits, depth 8, a forward 4x faster
   than the adjoint path's, at 20 qubits, depth 9, a forward and backward 5.6x: docs/benchmarks.md).

A data re-uploading circuit (`CircuitConfig.reupload`) reads the inputs in every layer, so its layers
differ per sample: they take the "state" path, each wire's (B, 2, 2) matrices applied to the batch
(`_apply_layers_per_sample`), never a shared matrix.

`state(angles, weights)` is the (B, 2**n) statevector before measurement (the fidelity kernel of
`qtl.quantum.kernel` reads it; it never takes the halves or units path); `forward` measures <Z_i> on
it, on the halves, or chunk by chunk on the units path.

Constant index tensors are built once per (plan, layout, device, dtype) by `device_tables`, cached
(`_memory.constant_tables`); a forward writes nothing on the engine, so one engine serves many threads.

With H, RY and CNOT only every amplitude is real and the simulation runs in the input's float dtype;
otherwise in the matching complex dtype. <Z_i> comes from the probabilities, never from 2**n x 2**n
matrices. Before allocating, a forward estimates the bytes it needs and refuses with
`SimulationTooLargeError` above the memory budget.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.engines import _halves, adjoint
from qtl.quantum.engines import _split as split
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _units as units
from qtl.quantum.engines import _wide as wide
from qtl.quantum.engines._compiler import (
    WEIGHT_RY,
    Entangle,
    Plan,
    compile_plan,
    forward_setup,
    slot_matrices,
)
from qtl.quantum.engines._memory import check_budget, constant_tables, resolve_memory_budget

#: Default memory budget of one forward + backward, in bytes (4 GiB).
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Environment variable that overrides the default budget (an integer number of bytes).
MEMORY_BUDGET_ENV = "QTL_NATIVE_MEMORY_BUDGET"
#: The matrix path builds a 2**n x 2**n matrix: only up to this many qubits, and only when B > 2**n.
MATRIX_PATH_MAX_QUBITS = 10
#: States a training forward keeps besides one per group product: product state, probabilities,
#: gradient buffers.
_EXTRA_STATES = 4
#: The halves path ("auto" takes it where a plan qualifies): from this many wires, with at most this many
#: products in the halves' sum (each CNOT across the cut doubles them: 2**depth for a chain), or twice
#: as many where the last crossing folds into <Z> and that pays (`_split.whole_plan`).
HALVES_MIN_QUBITS, HALVES_MAX_RANK = 12, 128
#: The halves path's peak over its final states (`_split.SplitPlan.states` of every sample, or of one part
#: where no backward follows), besides the runtime's own bytes (`_wide.RUNTIME_BYTES`): every product's
#: input kept for the backward and the Gram products' (a training forward and backward), or those alone
#: (inference). The peak RSS measured at 16-24 qubits, depth 4-8, float32 and float64, less the
#: runtime's bytes, was at most 2.9 (training) and 2.1 (inference) times the final states'
#: (`bench/memory_estimates.py`; docs/benchmarks.md, "The memory estimates").
_HALVES_TRAINING_COPIES, _HALVES_INFERENCE_COPIES = 4.5, 3
#: "auto" takes the units path on CPU from UNITS_MIN_QUBITS wires, and from UNITS_MIN_BATCH samples a
#: batch at UNITS_MIN_QUBITS - 2 and - 1 (below, building the state is as fast or faster:
#: docs/benchmarks.md).
UNITS_MIN_QUBITS, UNITS_MIN_BATCH = 18, 32

EnginePath = Literal["auto", "state", "matrix", "adjoint", "halves", "units"]
PATHS = ("auto", "state", "matrix", "adjoint", "halves", "units")


class SimulationTooLargeError(ValueError):
    """A forward would need more memory than the engine's budget allows."""


@dataclass(frozen=True)
class Layout:
    """How an engine applies its layers, fixed when it is built from the module's constants."""

    groups: tuple[int, ...]  # wire-group sizes of a layer (`statevector.wire_groups`)
    sign_table: bool  # <Z_i> by a (2**n, n) sign table, else by halving


@dataclass(frozen=True, eq=False)
class Tables:
    """Constant tensors of one plan on one device in one dtype; built once, never written."""

    v0: torch.Tensor  # (n, 2) wire states after the leading parameter-free gates
    perms: dict[Entangle, tuple[torch.Tensor, torch.Tensor]]  # (perm, inverse) per CNOT run
    folded: torch.Tensor | None  # one-group layouts: gather index building every layer's K.T (see below)
    eye: torch.Tensor | None  # (d, d) identity, for the matrix path with several groups
    signs: torch.Tensor | None  # (2**n, n) sign table in the real dtype


@functools.lru_cache(maxsize=64)
def halves_plan(plan: Plan) -> split.SplitPlan | None:
    """The split plan the halves path runs `plan` by (`_split.whole_plan`), or None where it cannot: fewer
    than HALVES_MIN_QUBITS wires, a ring, a layer of other than one trainable RY per wire, more than
    HALVES_MAX_RANK products held, or where the state takes fewer flops than the Gram matrices."""
    if plan.n_qubits < HALVES_MIN_QUBITS or not plan.real or plan.reuploads or plan.rounds != WEIGHT_RY:
        return None
    return split.whole_plan(plan, HALVES_MAX_RANK)


@functools.lru_cache(maxsize=64)
def units_plan(plan: Plan) -> bool:
    """Whether the units path can run `plan` (`_wide.expvals`): real, one trainable RY per wire and
    layer and no re-uploading, at least one layer, a chain or a ring of CNOTs (`_units.compile_units`)."""
    if not plan.real or plan.reuploads or plan.rounds != WEIGHT_RY or not plan.n_layers:
        return False
    return units.compile_units(plan) is not None


@constant_tables(16)
def halves_tables(
    plan: Plan, sp: split.SplitPlan, device: torch.device, dtype: torch.dtype
) -> tuple[_halves.HalvesTables, units.UnitPlan, units.UnitTables, torch.Tensor]:
    """The constant tensors of the halves path (`halves_plan`) on one device in one dtype: the halves'
    and the product state's tables, and the wires' states before the embedding (none of 2**n entries)."""
    uplan = units.compile_units(plan, True, sp.layers, sp.cut)
    unit_tables = units.unit_tables(uplan, plan.n_layers, device, dtype)
    return _halves.halves_tables(sp, device, dtype), uplan, unit_tables, plan.v0_tensor(dtype).to(device)


@constant_tables(64)
def device_tables(plan: Plan, layout: Layout, device: torch.device, dtype: torch.dtype) -> Tables:
    """The constant tensors a forward of `plan` needs, in `dtype` (real or complex) on `device`.

    `folded` indexes the flattened (L, n, 2, 2) per-wire matrices so that their product over wires is
    the stacked (L, d, d) K.T[inverse(p)] of every layer with the CNOT run before it folded in
    (state[:, p] @ K.T == state @ K.T[inverse(p)]).
    """
    n, d = plan.n_qubits, 2**plan.n_qubits
    v0 = plan.v0_tensor(dtype)
    perms = {}
    for e in plan.unique_entanglers:
        perm = sv.cnot_permutation(n, list(e.pairs))
        perms[e] = (perm.to(device), torch.argsort(perm).to(device))
    folded = None
    if len(layout.groups) == 1 and plan.n_layers:
        base = sv.kron_index(n, 2, 2).transpose(-1, -2)  # [w, i, j] -> (w, bit_w(j), bit_w(i)): K.T
        rows = [
            layer * 4 * n + base[:, torch.argsort(sv.cnot_permutation(n, list(e.pairs))), :]
            for layer, e in enumerate(plan.entanglers)
        ]
        folded = torch.stack(rows).reshape(-1).to(device)
    eye = torch.eye(d, dtype=dtype, device=device) if n <= MATRIX_PATH_MAX_QUBITS else None
    real = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)
    signs = sv.sign_table(n).to(device=device, dtype=real) if layout.sign_table else None
    return Tables(v0.to(device), perms, folded, eye, signs)


class NativeEngine(nn.Module):
    """Batched statevector simulation of a config's circuit: (B, n) angles, weights -> (B, n) <Z_i>.

    Args:
        config: the circuit; its gate list `gates(config)` is compiled once here.
        memory_budget: most bytes one forward + backward may use; default 4 GiB, or the
            QTL_NATIVE_MEMORY_BUDGET environment variable. Larger simulations raise `SimulationTooLargeError`.
        path: "auto" (default) picks per batch; "state" applies the blocks to the batch under
            autograd; "matrix" builds the blocks' 2**n x 2**n matrix first; "adjoint" applies them in
            two reused buffers and differentiates by the adjoint method (`qtl.quantum.engines.adjoint`).
            "halves" simulates the two halves' states and measures <Z_i> from them, never the 2**n
            state (`halves_plan` says which circuits it takes). "units" simulates a chunk of samples at
            a time as the closed-form training step does, a chain's leading layers on its halves
            (`qtl.quantum.engines._wide`; `units_plan` says which circuits it takes). "auto" takes
            "halves" where it can, "units" on CPU from UNITS_MIN_QUBITS wires (two fewer from
            UNITS_MIN_BATCH samples), "matrix" when the batch outnumbers the amplitudes (up to
            MATRIX_PATH_MAX_QUBITS), "adjoint" when layers are split into wire groups, else "state".
            A re-uploading circuit always takes "state" (its layers differ per sample).

    Call it as `engine(angles, weights)` with angles (B, n_qubits) float32/float64 on any device and
    weights of shape `config.weight_shape`; it returns (B, n_qubits) <Z_i> in the dtype and on the
    device of `angles`, differentiable with respect to both. It holds no parameters and no mutable
    state, so concurrent forwards (threads sharing a cached model) are safe.
    """

    def __init__(
        self, config: CircuitConfig, memory_budget: int | None = None, path: EnginePath = "auto"
    ) -> None:
        super().__init__()
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        budget = resolve_memory_budget(memory_budget, MEMORY_BUDGET_ENV, DEFAULT_MEMORY_BUDGET)
        self.config, self.memory_budget, self.path = config, budget, path
        self.n_qubits = config.n_qubits
        self.plan = compile_plan(gates(config), config.n_qubits, config.weight_shape)
        self.real = self.plan.real
        self.layout = Layout(tuple(sv.wire_groups(self.n_qubits)), self.n_qubits <= sv.SIGN_TABLE_MAX_QUBITS)
        if self.plan.reuploads and path not in ("auto", "state"):
            raise ValueError(f"a re-uploading circuit takes the 'state' path only, not {path!r}")
        if path == "halves" and self.halves is None:
            raise ValueError(
                "the 'halves' path takes chains of at least "
                f"{HALVES_MIN_QUBITS} qubits with one RY per wire and layer, at most {HALVES_MAX_RANK} "
                "products (2**depth; twice that where it pays), where measuring the halves costs less "
                "than building the state"
            )
        if path == "units" and not units_plan(self.plan):
            raise ValueError(
                "the 'units' path takes real circuits with one RY per wire and layer, at least one "
                "layer, and a chain or a ring of CNOTs"
            )
        self._check_memory(1, torch.float32, training=True)

    # ---- memory

    def uses_matrix(self, batch: int) -> bool:
        """Whether a forward of this batch size builds the blocks' matrix (the matrix path)."""
        return self.path_for(batch) == "matrix"

    def path_for(self, batch: int, training: bool = True, device: torch.device | None = None) -> EnginePath:
        """The path a forward of `batch` samples takes, with a gradient (`training`) or not, on `device`
        (None: CPU): "state", "matrix", "adjoint", "halves" or "units"."""
        if self._takes_halves():
            return "halves"
        if self._takes_units(torch.device("cpu") if device is None else device, batch):
            return "units"
        return self._state_path(batch)

    @property
    def halves(self) -> split.SplitPlan | None:
        """The split plan the halves path runs this engine's plan by, None where it cannot (`halves_plan`;
        from the plan at call time, which a caller may have replaced)."""
        return halves_plan(self.plan)

    def _takes_halves(self) -> bool:
        return self.path == "halves" or (self.path == "auto" and self.halves is not None)

    def _takes_units(self, device: torch.device, batch: int) -> bool:
        """Whether a forward of `batch` samples takes the units path (never where the plan, which a caller
        may have replaced, is not one the units run: there the state is built, as "auto" would)."""
        n = self.n_qubits
        wide_enough = n >= UNITS_MIN_QUBITS or (n >= UNITS_MIN_QUBITS - 2 and batch >= UNITS_MIN_BATCH)
        auto = self.path == "auto" and device.type == "cpu" and wide_enough
        return (self.path == "units" or auto) and units_plan(self.plan)

    def _state_path(self, batch: int) -> EnginePath:
        """The path that builds the state (`state`): "state", "matrix" or "adjoint"."""
        if not self.plan.n_layers or self.plan.reuploads:
            return "state"
        if self.path not in ("auto", "halves", "units"):
            return self.path
        if self.n_qubits <= MATRIX_PATH_MAX_QUBITS and batch > 2**self.n_qubits:
            return "matrix"
        return "adjoint" if len(self.layout.groups) > 1 else "state"

    def estimate_bytes(
        self,
        batch: int,
        dtype: torch.dtype = torch.float32,
        training: bool = True,
        state: bool = False,
        device: torch.device | None = None,
    ) -> int:
        """Bytes a forward (+ backward when `training`) of `batch` samples on `device` (None: CPU) needs,
        index tensors included; with `state`, a forward that builds the state (`state()`, never the
        halves or units path)."""
        dim = 2**self.n_qubits
        item = dtype.itemsize * (1 if self.real else 2)
        path = self._state_path(batch) if state else self.path_for(batch, training, device)
        if path == "units":
            return wide.forward_bytes(self.plan, batch, item, training)
        if path == "halves":
            sp = self.halves
            per_sample = sp.states * item
            if training:  # the backward needs every part's
                return int(per_sample * _HALVES_TRAINING_COPIES * batch) + wide.TRAINING_RUNTIME_BYTES
            part = split.part_size(sp, dtype.itemsize, batch)
            return int(per_sample * _HALVES_INFERENCE_COPIES * part) + wide.RUNTIME_BYTES
        rows = dim if path == "matrix" else batch
        if self.plan.reuploads:  # per sample: every layer's (d, d) factors, or one state per wire and layer
            per_layer = self.n_qubits * (dim if len(self.layout.groups) == 1 else 1)
            states = batch * (_EXTRA_STATES + per_layer * self.plan.n_layers)
        elif path == "adjoint":
            states = batch * (adjoint.TRAINING_STATES if training else adjoint.INFERENCE_STATES)
        elif training:  # one state per group product, for the backward pass
            states = batch * _EXTRA_STATES + rows * len(self.layout.groups) * self.plan.n_layers
            states += rows if rows != batch else 0
        else:
            states = 3 * batch + (3 * rows if rows != batch else 0)
        return item * dim * states + 2 * 8 * dim * len(self.plan.unique_entanglers)

    def _check_memory(
        self, batch: int, dtype: torch.dtype, training: bool, state: bool = False, device=None
    ) -> None:
        check_budget(
            self.estimate_bytes(batch, dtype, training, state, device),
            self.memory_budget,
            "native",
            f"batch {batch} at {self.n_qubits} qubits",
            "use fewer qubits, depth or samples",
            MEMORY_BUDGET_ENV,
            SimulationTooLargeError,
        )

    # ---- forward

    def _layer_factors(
        self, wflat, dtype, t: Tables, fold_cnots: bool = True
    ) -> tuple[torch.Tensor | None, list[list[torch.Tensor]] | None]:
        """The layers as (L, d, d) K.T with the CNOT runs folded in (one group, when `fold_cnots`), or per
        layer its (d, d) group blocks K."""
        n, n_layers = self.n_qubits, self.plan.n_layers
        mats = slot_matrices(self.plan.rounds, n_layers * n, None, wflat, dtype)  # (L*n, 2, 2)
        if fold_cnots and t.folded is not None:
            kt = mats.flatten().index_select(0, t.folded).unflatten(0, (n_layers, n, 2**n, 2**n))
            return sv.product(kt, dim=1), None  # (L, d, d)
        blocks = sv.group_blocks(mats.unflatten(0, (n_layers, n)), list(self.layout.groups))
        return None, list(zip(*(b.unbind(0) for b in blocks), strict=True))  # per layer, per group (d, d)

    def _apply_layers(self, state: torch.Tensor, wflat, dtype, t: Tables) -> torch.Tensor:
        """Apply every block (CNOT run, then layer) to (rows, 2**n) states."""
        kt, blocks = self._layer_factors(wflat, dtype, t)
        if kt is not None:
            for factor in kt.unbind(0):
                state = state @ factor
            return state
        for e, layer in zip(self.plan.entanglers, blocks, strict=True):
            state = sv.apply_blocks(sv.permute(state, *t.perms[e]), layer)
        return state

    def _apply_layers_per_sample(self, state: torch.Tensor, angles, wflat, dtype, t: Tables) -> torch.Tensor:
        """Apply every block to (B, 2**n) states whose layers read the inputs: per layer the CNOT run,
        then each wire's (B, 2, 2) product of its gates."""
        n, n_layers = self.n_qubits, self.plan.n_layers
        tiled = angles.repeat(1, n_layers)  # (B, L * n): slot l * n + w reads input w
        mats = slot_matrices(self.plan.rounds, n_layers * n, tiled, wflat, dtype)  # (B, L*n, 2, 2)
        if t.folded is not None:  # one wire group: per layer one (B, d, d) K.T, its CNOTs folded in
            kt = mats.flatten(1).index_select(1, t.folded).unflatten(1, (n_layers, n, 2**n, 2**n))
            for factor in sv.product(kt, dim=2).unbind(1):
                state = torch.bmm(state.unsqueeze(1), factor).squeeze(1)
            return state
        for e, layer in zip(self.plan.entanglers, mats.unflatten(1, (n_layers, n)).unbind(1), strict=True):
            state = sv.apply_wires(sv.permute(state, *t.perms[e]), layer)
        return state

    def _blocks_matrix(self, wflat, dtype, t: Tables) -> torch.Tensor:
        """(2**n, 2**n) transposed unitary U.T of all blocks: rows @ U.T applies them."""
        kt, _ = self._layer_factors(wflat, dtype, t)
        if kt is not None:
            return sv.chain_product(kt)
        return self._apply_layers(t.eye, wflat, dtype, t)

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, `config.weight_shape` weights -> (B, n) <Z_i>, dtype and device of `angles`."""
        if self._takes_halves():  # whatever the batch (and before the inputs' checks)
            return self._halves_forward(angles, weights)
        if self._takes_units(angles.device, len(angles) if angles.dim() else 0):
            return self._units_forward(angles, weights)
        state = self.state(angles, weights)
        t = device_tables(self.plan, self.layout, angles.device, state.dtype)
        probs = sv.probabilities(state)
        if t.signs is not None:
            return sv.z_expvals_table(probs, t.signs)
        return sv.z_expvals_halving(probs, self.n_qubits)

    def _halves_forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """<Z_i> by the halves path: each wire's state after the embedding, then `_split.expvals`, a part
        of the batch at a time (`_split.part_size`)."""
        n, sp = self.n_qubits, self.halves
        batch, device, real_dtype, dtype = forward_setup(self, angles, weights)
        st, uplan, ut, v0 = halves_tables(self.plan, sp, device, dtype)
        wflat = weights.to(device=device, dtype=real_dtype).reshape(-1)
        v = self._wire_states(angles, wflat, dtype, v0).squeeze(-1).expand(batch, n, 2)
        q = wflat.view(self.plan.n_layers, n)
        size = split.part_size(sp, dtype.itemsize, batch)
        mats = split.matrices(sp, st, q)  # once for every part
        parts = [split.expvals(sp, st, uplan, ut, v[i : i + size], q, mats) for i in range(0, batch, size)]
        if not parts:  # an empty batch
            return torch.zeros((0, n), dtype=real_dtype, device=device)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _units_forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """<Z_i> by the units path: each wire's state after the embedding, then `_wide.expvals`, a chunk
        of samples at a time (differentiable)."""
        n = self.n_qubits
        batch, device, real_dtype, dtype = forward_setup(self, angles, weights, device=angles.device)
        wflat = weights.to(device=device, dtype=real_dtype).reshape(-1)
        v0 = self.plan.v0_tensor(dtype).to(device)
        v = self._wire_states(angles, wflat, dtype, v0).squeeze(-1).expand(batch, n, 2)
        return wide.expvals(self.plan, v, wflat.view(self.plan.n_layers, n))

    def _wire_states(self, angles, wflat, dtype, v0: torch.Tensor) -> torch.Tensor:
        """(B?, n, 2, 1) each wire's state after the product prefix (the embedding), from v0 (n, 2)."""
        m = slot_matrices(self.plan.prefix, self.n_qubits, angles, wflat, dtype)
        return v0[..., None] if m is None else m @ v0[..., None]

    def state(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, `config.weight_shape` weights -> (B, 2**n) final statevectors, real (float) for
        a real circuit, else complex; differentiable with respect to both."""
        n = self.n_qubits
        batch, device, real_dtype, dtype = forward_setup(self, angles, weights, state=True)
        if not batch:  # an empty batch, on every path
            return torch.zeros((0, 2**n), dtype=dtype, device=device)
        t = device_tables(self.plan, self.layout, device, dtype)
        wflat = weights.to(device=device, dtype=real_dtype).reshape(-1)

        # 1. product prefix: per-wire 2-vectors, then their Kronecker product
        v = self._wire_states(angles, wflat, dtype, t.v0)  # (B?, n, 2, 1)
        kron = sv.kron_gather if n <= sv.GATHER_KRON_MAX_QUBITS else sv.kron_chain
        state = kron(v).flatten(-2).expand(batch, 2**n)  # (B, 2**n)

        # 2. trainable blocks
        path = self._state_path(batch)
        if self.plan.reuploads:
            state = self._apply_layers_per_sample(state, angles, wflat, dtype, t)
        elif path == "matrix":
            state = state @ self._blocks_matrix(wflat, dtype, t)
        elif path == "adjoint":
            _, layers = self._layer_factors(wflat, dtype, t, fold_cnots=False)
            perms = [t.perms[e] for e in self.plan.entanglers]
            spans = adjoint.spans(self.layout.groups)
            blocks = [k for layer in layers for k in layer]
            forward, inverse = [p for p, _ in perms], [q for _, q in perms]
            state = adjoint.AdjointBlocks.apply(state, forward, inverse, spans, *blocks)
        elif self.plan.n_layers:
            state = self._apply_layers(state, wflat, dtype, t)
        return state

    def extra_repr(self) -> str:
        kind = "real" if self.real else "complex"
        return f"n_qubits={self.n_qubits}, {kind}, groups={list(self.layout.groups)}, path={self.path!r}"
