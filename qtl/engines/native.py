"""The native engine: a batched statevector simulation of `gates(config)` in PyTorch, with autograd.

The gate list is compiled once into three parts, each simulated the cheapest way it allows:

1. product prefix: the single-qubit gates before the first CNOT, which include the input embedding.
   The state is a product there, so each wire is a batched 2-vector and the (B, 2**n) state is their
   Kronecker product, O(B 2**n).
2. input-dependent block (empty for every built-in config): later gates up to the last one that reads
   an input angle, applied per sample.
3. trainable block: everything after, independent of the input. It is a list of stages: a run of CNOTs
   is one fixed permutation of basis states (index tensors computed once per device); a run of
   single-qubit gates is one 2x2 matrix per wire, applied as Kronecker blocks over wire groups
   (`statevector.wire_groups`); up to FULL_BLOCK_MAX_QUBITS a layer is one block with the CNOT run
   before it folded in. When the batch is larger than 2**n (and n <= MATRIX_PATH_MAX_QUBITS), the
   block's 2**n x 2**n matrix is built once per forward (the product of its layer matrices, or the
   stages applied to the identity) and applied with one matmul.

With H, RY and CNOT only every amplitude is real and the simulation runs in the input's float dtype;
otherwise in the matching complex dtype. <Z_i> comes from the probabilities, never from 2**n x 2**n
matrices. Before allocating, a forward estimates the bytes it needs and refuses with
`SimulationTooLarge` above the memory budget.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

from qtl.circuit import REAL_GATES, CircuitConfig, gates
from qtl.engines import statevector as sv
from qtl.engines.compiler import Block, Rounds, check_gates, compile_block, compile_rounds

#: Default memory budget of one forward + backward, in bytes (4 GiB).
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Environment variable that overrides the default budget (an integer number of bytes).
MEMORY_BUDGET_ENV = "QTL_NATIVE_MEMORY_BUDGET"
#: The matrix path builds a 2**n x 2**n matrix: only up to this many qubits, and only when B > 2**n.
MATRIX_PATH_MAX_QUBITS = 10
#: States a training forward keeps besides one per group product: product state, probabilities,
#: gradient buffers.
_EXTRA_STATES = 4

Path = Literal["auto", "state", "matrix"]


class SimulationTooLarge(ValueError):
    """A forward would need more memory than the engine's budget allows."""


def _human(n_bytes: int) -> str:
    """Bytes as "12.3 MiB" / "4.0 GiB"."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} B"


def _default_budget() -> int:
    raw = os.environ.get(MEMORY_BUDGET_ENV)
    if raw is None:
        return DEFAULT_MEMORY_BUDGET
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{MEMORY_BUDGET_ENV} must be a whole number of bytes, got {raw!r}") from None


class NativeEngine(nn.Module):
    """Batched statevector simulation of a config's circuit: (B, n) angles, weights -> (B, n) <Z_i>.

    Args:
        config: the circuit; its gate list `gates(config)` is compiled once here.
        memory_budget: most bytes one forward + backward may use; default 4 GiB, or the
            QTL_NATIVE_MEMORY_BUDGET environment variable. Larger simulations raise `SimulationTooLarge`.
        path: "auto" (default) picks per batch; "state" always applies the stages to the batch;
            "matrix" always builds the trainable block's 2**n x 2**n matrix first.

    Call it as `engine(angles, weights)` with angles (B, n_qubits) float32/float64 on any device and
    weights of shape `config.weight_shape`; it returns (B, n_qubits) <Z_i> in the dtype and on the
    device of `angles`, differentiable with respect to both. It holds no parameters.
    """

    def __init__(self, config: CircuitConfig, memory_budget: int | None = None, path: Path = "auto") -> None:
        super().__init__()
        if path not in ("auto", "state", "matrix"):
            raise ValueError(f"path must be 'auto', 'state' or 'matrix', got {path!r}")
        budget = _default_budget() if memory_budget is None else memory_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"memory_budget must be a positive number of bytes, got {budget!r}")
        self.config, self.memory_budget, self.path = config, budget, path
        n, shape = config.n_qubits, config.weight_shape
        self.n_qubits = n
        self._cache: dict[tuple, torch.Tensor] = {}  # (what, ..., device) -> tensor
        self._fits: set[tuple] = set()  # (batch, dtype, training, budget) already checked
        gate_list = gates(config)
        check_gates(gate_list, n)
        self.real = all(g.name in REAL_GATES for g in gate_list)

        first_multi = next((i for i, g in enumerate(gate_list) if len(g.wires) > 1), len(gate_list))
        inputs = [i for i, g in enumerate(gate_list) if g.param is not None and g.param[0] == "input"]
        split = max([first_multi] + [i + 1 for i in inputs])
        prefix = gate_list[:first_multi]
        self._prefix = compile_rounds([[g for g in prefix if g.wires[0] == w] for w in range(n)], n, shape)
        self._v0 = self._fold_constant_rounds()  # (n, 2) complex128 wire states after parameter-free gates
        self._dependent = compile_block(gate_list[first_multi:split], n, shape)
        self._fixed = compile_block(gate_list[split:], n, shape)
        self._groups = sv.wire_groups(n)
        self._check_memory(1, torch.float32, training=True)

    # ---- compile-time helpers

    def _fold_constant_rounds(self) -> torch.Tensor:
        v = torch.zeros(self.n_qubits, 2, dtype=torch.complex128)
        v[:, 0] = 1
        while self._prefix.rounds and all(g.source is None for g in self._prefix.rounds[0][0]):
            first = Rounds(self._prefix.n_slots, [self._prefix.rounds.pop(0)])
            m = self._slot_matrices(first, None, None, torch.complex128, torch.device("cpu"))
            v = (m @ v[..., None])[..., 0]
        return v

    def _on(self, key: tuple, device: torch.device, make) -> torch.Tensor:
        """Cached tensor per (key, device); `make()` builds it on the CPU."""
        full = (*key, device)
        if full not in self._cache:
            self._cache[full] = make().to(device)
        return self._cache[full]

    def _perm(self, pairs: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        perm = self._on(("perm", pairs), device, lambda: sv.cnot_permutation(self.n_qubits, list(pairs)))
        inverse = self._on(("inverse", pairs), device, lambda: torch.argsort(perm.cpu()))
        return perm, inverse

    # ---- memory

    def _applications(self, block: Block) -> int:
        """States a block keeps for the backward pass: one per group product; permutations keep none."""
        return len(self._groups) * block.n_layers

    def uses_matrix(self, batch: int) -> bool:
        """Whether a forward of this batch size builds the trainable block's matrix (the matrix path)."""
        if not self._fixed.stages or self.path == "state":
            return False
        if self.path == "matrix":
            return True
        return self.n_qubits <= MATRIX_PATH_MAX_QUBITS and batch > 2**self.n_qubits

    def estimate_bytes(self, batch: int, dtype: torch.dtype = torch.float32, training: bool = True) -> int:
        """Bytes a forward (+ backward when `training`) of `batch` samples needs, index tensors included."""
        dim = 2**self.n_qubits
        item = dtype.itemsize * (1 if self.real else 2)
        rows = dim if self.uses_matrix(batch) else batch
        if training:
            states = batch * (self._applications(self._dependent) + _EXTRA_STATES)
            states += rows * self._applications(self._fixed) + (rows if rows != batch else 0)
        else:
            states = 3 * batch + (3 * rows if rows != batch else 0)
        n_perms = len({p for b in (self._dependent, self._fixed) for kind, p in b.stages if kind == "perm"})
        return item * dim * states + 2 * 8 * dim * n_perms

    def _check_memory(self, batch: int, dtype: torch.dtype, training: bool) -> None:
        key = (batch, dtype, training, self.memory_budget)
        if key in self._fits:
            return
        need = self.estimate_bytes(batch, dtype, training)
        if need > self.memory_budget:
            raise SimulationTooLarge(
                f"the native engine needs about {_human(need)} for batch {batch} at {self.n_qubits} "
                f"qubits, over its memory budget of {_human(self.memory_budget)}; "
                f"use fewer qubits, depth or samples, or raise memory_budget / {MEMORY_BUDGET_ENV}"
            )
        self._fits.add(key)

    # ---- forward

    def _slot_matrices(self, rounds: Rounds, angles, wflat, dtype, device) -> torch.Tensor | None:
        """(B?, n_slots, 2, 2) product of each slot's gates (later gates on the left), None if no gates."""
        total = None
        for groups, order in rounds.rounds:
            mats = []
            for g in groups:
                if g.source is None:
                    m = self._on(
                        ("const", g.name, dtype), device, lambda g=g: sv.constant_matrix(g.name).to(dtype)
                    )
                    m = m.expand(len(g.slots), 2, 2)
                else:
                    src = angles if g.source == "input" else wflat
                    if g.span == (0, src.shape[-1]):
                        theta = src
                    elif g.span is not None:
                        theta = src[..., g.span[0] : g.span[1]]
                    else:
                        theta = src.index_select(-1, self._on(("index", id(g)), device, lambda g=g: g.index))
                    m = sv.rotation_matrices(g.name, theta, dtype)
                mats.append(m)
            if order is None:
                r = mats[0]
            else:
                eye = self._on(("eye2", dtype), device, lambda: torch.eye(2, dtype=dtype)[None])
                lead = torch.broadcast_shapes(*(m.shape[:-3] for m in mats))
                parts = [x.expand(*lead, *x.shape[-3:]) for x in (*mats, eye)]
                r = torch.cat(parts, dim=-3).index_select(
                    -3, self._on(("order", id(order)), device, lambda o=order: o)
                )
            total = r if total is None else r @ total
        return total

    def _fused_index(self, block: Block, device: torch.device) -> tuple[torch.Tensor, tuple | None]:
        """One-block layers: gather positions that build every layer's K.T with its CNOT run folded in.

        Returns a (L*n*d*d,) index into the flattened (L, n, 2, 2) per-wire matrices, whose product over
        wires is the stacked (L, d, d) K.T[inverse(p)] (state[:, p] @ K.T == state @ K.T[inverse(p)]),
        and the pairs of a trailing CNOT run that no layer follows (None if there is none).
        """

        def make() -> torch.Tensor:
            n, d = self.n_qubits, 2**self.n_qubits
            base = sv.kron_index(n, 2, 2).transpose(-1, -2)  # [w, i, j] -> (w, bit_w(j), bit_w(i)): K.T
            rows, pending = [], None
            for kind, what in block.stages:
                if kind == "perm":
                    pending = what
                    continue
                inv = (
                    torch.arange(d)
                    if pending is None
                    else torch.argsort(self._perm(pending, device)[0].cpu())
                )
                rows.append(what * 4 * n + base[:, inv, :])
                pending = None
            return torch.stack(rows).reshape(-1)

        last = block.stages[-1]
        return self._on(("fused", id(block)), device, make), (last[1] if last[0] == "perm" else None)

    def _block_factors(self, block: Block, angles, wflat, dtype, device):
        """What to apply, in order: ("perm", pairs), ("blocks", per-group (B?, d, d)) or ("fused", kt).

        With one wire group, each CNOT run is folded into the layer after it and all layers come as one
        ("fused", (B?, L, d, d)) of transposed matrices, applied as rows @ kt[l]; otherwise a layer is
        ("blocks", [...]) for `statevector.apply_blocks`.
        """
        mats = self._slot_matrices(block.rounds, angles, wflat, dtype, device)
        if mats is None:
            return [("perm", what) for _, what in block.stages]
        n, n_layers = self.n_qubits, block.n_layers
        if len(self._groups) == 1:
            index, trailing = self._fused_index(block, device)
            kt = mats.flatten(-3).index_select(-1, index).unflatten(-1, (n_layers, n, 2**n, 2**n))
            kt = sv.product(kt, dim=-3)
            return [("fused", kt)] + ([("perm", trailing)] if trailing else [])  # kt: (B?, L, d, d)
        blocks = sv.group_blocks(mats.unflatten(-3, (n_layers, n)), self._groups)  # per group (B?, L, d, d)
        per_layer = list(zip(*(b.unbind(-3) for b in blocks), strict=True))
        return [("perm", w) if k == "perm" else ("blocks", list(per_layer[w])) for k, w in block.stages]

    def _apply_block(self, block: Block, state, angles, wflat, dtype) -> torch.Tensor:
        """Apply a compiled block's stages to (B, 2**n) rows, one stage after another."""
        if not block.stages:
            return state
        for kind, what in self._block_factors(block, angles, wflat, dtype, state.device):
            if kind == "perm":
                state = sv.permute(state, *self._perm(what, state.device))
            elif kind == "blocks":
                state = sv.apply_blocks(state, what)
            elif what.dim() == 3:  # (L, d, d) shared by the batch
                for factor in what.unbind(0):
                    state = state @ factor
            else:  # (B, L, d, d), one per sample
                for factor in what.unbind(1):
                    state = torch.bmm(state.unsqueeze(1), factor).squeeze(1)
        return state

    def _block_matrix(self, block: Block, angles, wflat, dtype, device) -> torch.Tensor:
        """(2**n, 2**n) transposed unitary U.T of an input-independent block: rows @ U.T applies it."""
        eye = self._on(("eye", dtype), device, lambda: torch.eye(2**self.n_qubits, dtype=dtype))
        factors = self._block_factors(block, angles, wflat, dtype, device)
        if factors[0][0] != "fused":
            return self._apply_block(block, eye, angles, wflat, dtype)
        ut = sv.chain_product(factors[0][1])
        if len(factors) > 1:
            ut = sv.permute(ut, *self._perm(factors[1][1], device))
        return ut

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, `config.weight_shape` weights -> (B, n) <Z_i>, dtype and device of `angles`."""
        n = self.n_qubits
        if angles.dim() != 2 or angles.shape[1] != n:
            raise ValueError(f"angles must have shape (batch, {n}), got {tuple(angles.shape)}")
        if angles.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"angles must be float32 or float64, got {angles.dtype}")
        if tuple(weights.shape) != self.config.weight_shape:
            raise ValueError(
                f"weights must have shape {self.config.weight_shape}, got {tuple(weights.shape)}"
            )
        batch, device, real_dtype = angles.shape[0], angles.device, angles.dtype
        training = torch.is_grad_enabled() and (angles.requires_grad or weights.requires_grad)
        self._check_memory(batch, real_dtype, training)
        dtype = real_dtype if self.real else sv.complex_dtype(real_dtype)
        wflat = weights.to(device=device, dtype=real_dtype).reshape(-1)

        # 1. product prefix: per-wire 2-vectors, then their Kronecker product
        v = self._on(("v0", dtype), device, lambda: (self._v0.real if self.real else self._v0).to(dtype))
        m = self._slot_matrices(self._prefix, angles, wflat, dtype, device)
        v = v[..., None] if m is None else m @ v[..., None]  # (B?, n, 2, 1)
        kron = sv.kron_gather if n <= sv.GATHER_KRON_MAX_QUBITS else sv.kron_chain
        state = kron(v).flatten(-2).expand(batch, 2**n)  # (B, 2**n)

        # 2. input-dependent block, 3. trainable block
        state = self._apply_block(self._dependent, state, angles, wflat, dtype)
        if self.uses_matrix(batch):
            state = state @ self._block_matrix(self._fixed, angles, wflat, dtype, device)
        else:
            state = self._apply_block(self._fixed, state, angles, wflat, dtype)

        probs = sv.probabilities(state)
        if n <= sv.SIGN_TABLE_MAX_QUBITS:
            table = self._on(("signs", real_dtype), device, lambda: sv.sign_table(n).to(real_dtype))
            return sv.z_expvals_table(probs, table)
        return sv.z_expvals_halving(probs, n)

    def extra_repr(self) -> str:
        kind = "real" if self.real else "complex"
        return f"n_qubits={self.n_qubits}, {kind}, groups={self._groups}, path={self.path!r}"
