"""The native engine's compiler: a gate list becomes blocks of stages the simulator applies in bulk.

After the product-state prefix, a circuit is a list of stages: a run of CNOTs is one permutation of
basis states, and a run of single-qubit gates is one local layer (one 2x2 matrix per wire). The gates of
all local layers are arranged in rounds (round r holds the r-th gate on every slot) of same-kind groups,
so their matrices are built with one vectorised call per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from qtl.circuit import Gate
from qtl.engines import statevector as sv


@dataclass
class Group:
    """Gates of one kind, one per slot, in one round: name, slots (k,), and where their angles come from."""

    name: str
    slots: torch.Tensor
    source: str | None  # "input", "weight" or None (parameter-free)
    index: torch.Tensor  # (k,) angle columns or flat weight positions
    span: tuple[int, int] | None = None  # (start, stop) when index is a contiguous range: a slice suffices

    def __post_init__(self) -> None:
        idx = self.index.tolist()
        if idx and idx == list(range(idx[0], idx[0] + len(idx))):
            self.span = (idx[0], idx[0] + len(idx))


@dataclass
class Rounds:
    """Single-qubit gates on `n_slots` slots as rounds: round r holds the r-th gate of every slot."""

    n_slots: int
    rounds: list[tuple[list[Group], torch.Tensor | None]] = field(default_factory=list)
    # each round: its groups and, unless one group covers every slot in order, the (n_slots,) order
    # that picks each slot's matrix from cat(group matrices..., identity)


@dataclass
class Block:
    """Stages after the product prefix: ("perm", key) or ("local", layer). Layer l uses slots l*n..l*n+n-1."""

    stages: list[tuple[str, object]]
    rounds: Rounds
    n_layers: int


def angle_source(gate: Gate, n_qubits: int, weight_shape: tuple[int, ...]) -> tuple[str | None, int]:
    """(source, position) of a gate's angle: input column or flat weight index."""
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


def compile_rounds(slot_gates: list[list[Gate]], n_qubits: int, weight_shape) -> Rounds:
    """Per-slot gate lists (application order) -> rounds of same-kind groups."""
    out = Rounds(len(slot_gates))
    depth = max((len(g) for g in slot_gates), default=0)
    for r in range(depth):
        kinds: dict[tuple[str, str | None], list[tuple[int, int]]] = {}
        for slot, seq in enumerate(slot_gates):
            if r < len(seq):
                source, pos = angle_source(seq[r], n_qubits, weight_shape)
                kinds.setdefault((seq[r].name, source), []).append((slot, pos))
        groups = [
            Group(name, torch.tensor([s for s, _ in items]), source, torch.tensor([p for _, p in items]))
            for (name, source), items in kinds.items()
        ]
        order = None
        if len(groups) > 1 or groups[0].slots.tolist() != list(range(out.n_slots)):
            order = torch.full((out.n_slots,), sum(len(g.slots) for g in groups))  # identity by default
            offset = 0
            for g in groups:
                order[g.slots] = torch.arange(offset, offset + len(g.slots))
                offset += len(g.slots)
        out.rounds.append((groups, order))
    return out


def compile_block(block: list[Gate], n_qubits: int, weight_shape) -> Block:
    """Gates -> stages: runs of CNOTs become one permutation, runs of one-qubit gates one local layer."""
    stages: list[tuple[str, object]] = []
    layers: list[list[list[Gate]]] = []
    for gate in block:
        if gate.name == "CNOT":
            if stages and stages[-1][0] == "perm":
                stages[-1] = ("perm", stages[-1][1] + (gate.wires,))
            else:
                stages.append(("perm", (gate.wires,)))
        else:
            if not stages or stages[-1][0] != "local":
                stages.append(("local", len(layers)))
                layers.append([[] for _ in range(n_qubits)])
            layers[-1][gate.wires[0]].append(gate)
    slots = [seq for layer in layers for seq in layer]
    return Block(stages, compile_rounds(slots, n_qubits, weight_shape), len(layers))


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
