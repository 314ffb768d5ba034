"""The native engine's compiler: `gates(config)` becomes a `Plan`, a small frozen (hashable) value.

A plan has two parts:

1. the product prefix: the single-qubit gates before the first CNOT (Hadamards, the input embedding,
   and every gate of a circuit without CNOTs). The state is a product there, one 2-vector per wire.
   Leading parameter-free gates are folded into `Plan.v0`; the others are rounds over the n wires.
2. blocks: a run of CNOTs, one `Entangle` (a permutation of basis states), then a layer of
   single-qubit gates (one 2x2 matrix per wire). The gates of all layers are arranged in rounds:
   slot l*n + w is wire w of layer l, and round r holds the r-th gate of every slot.

A `Round` is one gate kind on every slot, reading evenly spaced angles, so its matrices are built by
one vectorised call on a strided view of the angles. A round of the layers that reads inputs (a data
re-uploading circuit) reads them tiled once per layer: slot l*n + w reads column l*n + w of the
(B, n_layers * n) tiled inputs, i.e. input w. Only what `gates(config)` produces compiles: a gate list
that ends in CNOTs, mixes gate kinds within a round or leaves a wire of a layer without a gate is
refused with a ValueError naming the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from qtl.quantum.circuit import REAL_GATES, Gate
from qtl.quantum.engines import _statevector as sv


@dataclass(frozen=True)
class Round:
    """One rotation on every slot: slot s reads angle `start + s * step` of the input or the weights."""

    gate: Literal["RY", "RZ"]
    source: Literal["input", "weight"]
    start: int
    step: int

    def angles(self, values: torch.Tensor, n_slots: int) -> torch.Tensor:
        """(..., m) input angles or flat weights -> (..., n_slots) this round's angles, a strided view."""
        return values[..., self.start : self.start + self.step * (n_slots - 1) + 1 : self.step]


#: The rounds of the paper's circuit: the embedding, RY(x_i) on wire i, and a layer's trainable RY per
#: wire (the plans the closed-form step and the native engine's halves path take).
INPUT_RY = (Round("RY", "input", 0, 1),)
WEIGHT_RY = (Round("RY", "weight", 0, 1),)


@dataclass(frozen=True)
class Entangle:
    """A run of CNOTs on (control, target) pairs, applied as one permutation of basis states."""

    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Plan:
    """A compiled circuit; equal configs give equal plans, so per-device tables are cached per plan.

    After the product prefix come `n_layers` blocks: block l applies the CNOT run `entanglers[l]`, then
    layer l, whose rotations on wire w are the gates of slot l*n + w (`rounds`, in application order).
    """

    n_qubits: int
    real: bool  # H, RY and CNOT only: every amplitude stays real
    v0: tuple[tuple[complex, complex], ...]  # each wire's state after the leading parameter-free gates
    prefix: tuple[Round, ...]  # rounds over the n wires of the product prefix
    entanglers: tuple[Entangle, ...]  # one per layer
    rounds: tuple[Round, ...]  # rounds over the n_layers * n slots of the layers

    def v0_tensor(self, dtype: torch.dtype) -> torch.Tensor:
        """(n, 2) `v0` in `dtype`: real for a real plan, complex otherwise."""
        v0 = torch.tensor([[a.real, b.real] for a, b in self.v0], dtype=torch.float64)
        if not self.real:  # complex arithmetic only where the circuit needs it
            v0 = torch.complex(v0, torch.tensor([[a.imag, b.imag] for a, b in self.v0], dtype=torch.float64))
        return v0.to(dtype)

    @property
    def n_layers(self) -> int:
        return len(self.entanglers)

    @property
    def reuploads(self) -> bool:
        """Whether the layers read the inputs again (data re-uploading): their matrices differ per sample."""
        return any(r.source == "input" for r in self.rounds)

    @property
    def unique_entanglers(self) -> tuple[Entangle, ...]:
        """The distinct CNOT runs, in order of first use (each gets one permutation table)."""
        return tuple(dict.fromkeys(self.entanglers))


def angle_source(gate: Gate, n_qubits: int, weight_shape: tuple[int, ...]) -> tuple[str | None, int]:
    """(source, position) of a gate's angle: input column or flat weight index; (None, 0) without one."""
    if gate.param is None:
        if gate.name in sv.PARAMETRIC_GATES:
            raise ValueError(f"gate {gate} needs an angle")
        return None, 0
    source, where = gate.param
    if source == "input":
        if not 0 <= where < n_qubits:
            raise ValueError(f"gate {gate} reads input {where}, but there are {n_qubits} inputs")
        return source, int(where)
    if source == "weight":
        if len(where) != len(weight_shape) or not all(
            0 <= w < s for w, s in zip(where, weight_shape, strict=False)
        ):
            raise ValueError(f"gate {gate} reads weight {where}, outside weight_shape {weight_shape}")
        flat = 0
        for w, s in zip(where, weight_shape, strict=False):
            flat = flat * s + w
        return source, flat
    raise ValueError(f"gate {gate} has unknown angle source {source!r}; use 'input' or 'weight'")


def _rounds(slot_gates: list[list[Gate]], n_qubits: int, weight_shape) -> tuple[Round, ...]:
    """Per-slot gate lists (application order) -> one `Round` per gate position. Slot s reading input w
    reads column (s // n) * n + w of the inputs tiled once per layer (the prefix has one layer)."""
    depth = len(slot_gates[0]) if slot_gates else 0
    if any(len(seq) != depth for seq in slot_gates):
        raise ValueError(f"the native engine needs as many gates on every wire of a layer: {slot_gates}")
    out = []
    for r in range(depth):
        column = [seq[r] for seq in slot_gates]
        first = column[0]
        if first.param is None:
            raise ValueError(f"the native engine folds parameter-free gates only at the start: {first}")
        places = [angle_source(g, n_qubits, weight_shape) for g in column]
        places = [
            (src, pos + n_qubits * (s // n_qubits) if src == "input" else pos)
            for s, (src, pos) in enumerate(places)
        ]
        source = places[0][0]
        if any(g.name != first.name or p[0] != source for g, p in zip(column, places, strict=True)):
            raise ValueError(f"the native engine needs one gate kind per round, got {column}")
        start = places[0][1]
        step = places[1][1] - start if len(places) > 1 else 1
        if [p for _, p in places] != [start + s * step for s in range(len(places))] or step <= 0:
            raise ValueError(f"the native engine needs evenly spaced angles per round, got {column}")
        out.append(Round(first.name, source, start, step))
    return tuple(out)


def slot_matrices(rounds: tuple[Round, ...], n_slots: int, angles, wflat, dtype) -> torch.Tensor | None:
    """(B?, n_slots, 2, 2) product of each slot's gates (later gates on the left), None if no gates.

    `angles` are the (B, m) inputs the rounds read (tiled once per layer for the layers' rounds), `wflat`
    the flat weights; a round reading inputs gives per-sample matrices, one reading weights shared ones.
    """
    total = None
    for r in rounds:
        theta = r.angles(angles if r.source == "input" else wflat, n_slots)
        m = sv.rotation_matrices(r.gate, theta, dtype)
        total = m if total is None else m @ total
    return total


def compile_plan(gate_list: list[Gate], n_qubits: int, weight_shape: tuple[int, ...]) -> Plan:
    """A gate list (as `gates(config)` makes it) -> its `Plan`; ValueError for what it cannot run."""
    check_gates(gate_list, n_qubits)
    first_multi = next((i for i, g in enumerate(gate_list) if len(g.wires) > 1), len(gate_list))
    for g in gate_list:
        angle_source(g, n_qubits, weight_shape)  # ValueError for a missing or out-of-range angle

    # 1. product prefix: fold the leading parameter-free gates of each wire into v0
    per_wire = [[g for g in gate_list[:first_multi] if g.wires[0] == w] for w in range(n_qubits)]
    v0 = []
    for w, seq in enumerate(per_wire):
        v = torch.tensor([1.0, 0.0], dtype=torch.complex128)
        while seq and seq[0].param is None:
            v = sv.constant_matrix(seq.pop(0).name).to(v.dtype) @ v
        per_wire[w] = seq
        v0.append((complex(v[0]), complex(v[1])))
    prefix = _rounds(per_wire, n_qubits, weight_shape)

    # 2. blocks: a CNOT run, then one layer of single-qubit gates
    entanglers: list[Entangle] = []
    layers: list[list[list[Gate]]] = []
    for gate in gate_list[first_multi:]:
        if gate.name == "CNOT":
            if len(layers) < len(entanglers):  # the run goes on
                entanglers[-1] = Entangle(entanglers[-1].pairs + (gate.wires,))
            else:
                entanglers.append(Entangle((gate.wires,)))
        else:
            if len(layers) < len(entanglers):
                layers.append([[] for _ in range(n_qubits)])
            layers[-1][gate.wires[0]].append(gate)
    if len(layers) < len(entanglers):
        raise ValueError("the native engine needs single-qubit gates after the last CNOT run")
    slots = [seq for layer in layers for seq in layer]
    real = all(g.name in REAL_GATES for g in gate_list)
    return Plan(n_qubits, real, tuple(v0), prefix, tuple(entanglers), _rounds(slots, n_qubits, weight_shape))


def check_inputs(config, angles: torch.Tensor, weights: torch.Tensor) -> None:
    """The engine contract, checked once for every engine: angles (B, n_qubits), float32 or float64, and
    weights of `config.weight_shape`."""
    n = config.n_qubits
    if angles.dim() != 2 or angles.shape[1] != n:
        raise ValueError(f"angles must have shape (batch, {n}), got {tuple(angles.shape)}")
    if angles.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"angles must be float32 or float64, got {angles.dtype}")
    if tuple(weights.shape) != config.weight_shape:
        raise ValueError(f"weights must have shape {config.weight_shape}, got {tuple(weights.shape)}")


def forward_setup(
    engine, angles: torch.Tensor, weights: torch.Tensor, **memory
) -> tuple[int, torch.device, torch.dtype, torch.dtype]:
    """What an engine's forward starts with: the inputs checked, its memory budget checked for this batch
    (`engine._check_memory`, with `memory` passed on; training when either input needs a gradient) ->
    (batch, device, the real dtype of `angles`, the simulation's dtype: complex unless `engine.real`)."""
    check_inputs(engine.config, angles, weights)
    batch, device, real_dtype = angles.shape[0], angles.device, angles.dtype
    training = torch.is_grad_enabled() and (angles.requires_grad or weights.requires_grad)
    engine._check_memory(batch, real_dtype, training, **memory)
    return batch, device, real_dtype, real_dtype if engine.real else sv.complex_dtype(real_dtype)


def check_gates(gate_list: list[Gate], n_qubits: int) -> None:
    """ValueError for a gate the native engine cannot simulate, or with wires outside 0..n_qubits-1."""
    for gate in gate_list:
        if gate.name == "CNOT":
            ok = len(gate.wires) == 2 and gate.wires[0] != gate.wires[1]
        elif gate.name in sv.SINGLE_QUBIT_GATES:
            ok = len(gate.wires) == 1
        else:
            raise ValueError(
                f"the native engine cannot simulate gate {gate.name!r}; supported: H, RY, RZ, CNOT"
            )
        if not ok or not all(0 <= w < n_qubits for w in gate.wires):
            raise ValueError(f"gate {gate} has invalid wires for {n_qubits} qubits")
