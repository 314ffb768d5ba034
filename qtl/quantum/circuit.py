"""The variational circuit, described once.

`CircuitConfig` is the single source of truth for the quantum layer. `gates(config)` expands it into
an ordered list of `Gate`s; the native engine compiles that list, the PennyLane engine replays it
into a QNode, the drawer draws that QNode, and the parameter counts come from `weight_shape`.
No other hand-written copy of the circuit exists.

The default is the circuit of Mari et al. (2019)::

    H on every wire
    RY(x_i) on wire i                                  # angle embedding, x = tanh(.) * pi/2
    repeat `depth` times:
        CNOT(0,1), CNOT(2,3), ...                      # even pairs
        CNOT(1,2), CNOT(3,4), ...                      # odd pairs
        RY(theta[k, i]) on wire i                      # trainable
    measure <Z_i> on every wire

With `reupload=True` every block embeds the inputs again after its CNOTs (RY(x_i) on wire i, before the
trainable rotation): the data re-uploading circuit (Perez-Salinas et al. 2020), whose <Z> are
trigonometric polynomials of degree depth + 1 in each input instead of degree 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

MAX_QUBITS = 128
#: Statevector engines (native, PennyLane devices) hold 2**n amplitudes per sample: 24 qubits is
#: 256 MiB per complex64 sample, so they stop there. The MPS engine ("mps") runs up to MAX_QUBITS.
STATEVECTOR_MAX_QUBITS = 24
MAX_DEPTH = 100

ENTANGLERS = ("chain", "ring", "none")
"""chain: CNOTs on even then odd neighbour pairs (the paper). ring: chain plus CNOT(n-1, 0) (n > 2).
none: no CNOTs."""

ROTATIONS = ("ry", "rot")
"""ry: one trainable RY per wire (the paper). rot: general rotation RZ(phi) RY(theta) RZ(omega), as
qml.Rot."""

#: Trainable angles per wire per block, for each rotation layer.
ANGLES_PER_ROTATION = {"ry": 1, "rot": 3}


@dataclass(frozen=True)
class CircuitConfig:
    """Describes the variational circuit of a dressed quantum layer."""

    n_qubits: int = 4  # width of the layer: one embedded angle in and one <Z> out per wire
    depth: int = 6  # number of trainable [entangler, rotation] blocks; 0 gives embedding + measurement only
    entangler: Literal["chain", "ring", "none"] = "chain"  # how each block entangles neighbouring wires
    rotation: Literal["ry", "rot"] = "ry"  # trainable layer; "ry" keeps every amplitude real
    hadamard: bool = True  # start each wire in |+>, as the paper does, so RY(x) embeds without bias
    reupload: bool = False  # embed the inputs again in every block (data re-uploading), not only once

    def __post_init__(self) -> None:
        if isinstance(self.n_qubits, bool) or not isinstance(self.n_qubits, int):
            raise TypeError(f"n_qubits must be an int, got {self.n_qubits!r}")
        if not 1 <= self.n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits must be between 1 and {MAX_QUBITS}, got {self.n_qubits}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int):
            raise TypeError(f"depth must be an int, got {self.depth!r}")
        if not 0 <= self.depth <= MAX_DEPTH:
            raise ValueError(f"depth must be between 0 and {MAX_DEPTH}, got {self.depth}")
        if self.entangler not in ENTANGLERS:
            raise ValueError(f"entangler must be one of {ENTANGLERS}, got {self.entangler!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        for flag in ("reupload", "hadamard"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be true or false, got {getattr(self, flag)!r}")

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the trainable angles: (depth, n_qubits) for "ry", (depth, n_qubits, 3) for "rot"."""
        k = ANGLES_PER_ROTATION[self.rotation]
        return (self.depth, self.n_qubits) if k == 1 else (self.depth, self.n_qubits, k)

    @property
    def n_weights(self) -> int:
        """Number of trainable circuit parameters."""
        return self.depth * self.n_qubits * ANGLES_PER_ROTATION[self.rotation]

    @property
    def is_real(self) -> bool:
        """True when every amplitude stays real (H, RY and CNOT only), so real arithmetic is exact."""
        return all(g.name in REAL_GATES for g in gates(self))

    def cnot_pairs(self) -> list[tuple[int, int]]:
        """The (control, target) pairs of one entangling block, in application order."""
        n = self.n_qubits
        if self.entangler == "none" or n < 2:
            return []
        pairs = [(i, i + 1) for i in range(0, n - 1, 2)] + [(i, i + 1) for i in range(1, n - 1, 2)]
        if self.entangler == "ring" and n > 2:
            pairs.append((n - 1, 0))
        return pairs

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CircuitConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown circuit config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class Gate:
    """One gate of the circuit.

    name: a PennyLane operation name ("Hadamard", "RY", "RZ", "CNOT").
    wires: the wires it acts on, (control, target) for CNOT.
    param: where its angle comes from: None, ("input", i) for the i-th embedded angle, or
        ("weight", index) with `index` a tuple into the weights tensor of shape `weight_shape`.
    """

    name: str
    wires: tuple[int, ...]
    param: tuple | None = None


REAL_GATES = frozenset({"Hadamard", "RY", "CNOT"})


def gates(config: CircuitConfig) -> list[Gate]:
    """Expand a config into the ordered gate list of its circuit (measurement excluded: <Z> on every wire)."""
    n = config.n_qubits
    out: list[Gate] = []
    if config.hadamard:
        out += [Gate("Hadamard", (i,)) for i in range(n)]
    out += [Gate("RY", (i,), ("input", i)) for i in range(n)]
    for k in range(config.depth):
        out += [Gate("CNOT", pair) for pair in config.cnot_pairs()]
        if config.reupload:
            out += [Gate("RY", (i,), ("input", i)) for i in range(n)]
        for i in range(n):
            if config.rotation == "ry":
                out.append(Gate("RY", (i,), ("weight", (k, i))))
            else:  # qml.Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)
                out += [
                    Gate("RZ", (i,), ("weight", (k, i, 0))),
                    Gate("RY", (i,), ("weight", (k, i, 1))),
                    Gate("RZ", (i,), ("weight", (k, i, 2))),
                ]
    return out


def circuit_summary(config: CircuitConfig) -> dict:
    """Counts for display: gates by name, trainable weights, and the depth of the gate list.

    Returns {"n_qubits", "n_weights", "n_gates", "gate_counts": {name: count}, "circuit_depth"}, where
    circuit_depth is the number of layers when every gate starts as soon as its wires are free
    (measurement excluded).
    """
    ops = gates(config)
    counts: dict[str, int] = {}
    free_at = [0] * config.n_qubits  # first layer at which each wire is free
    for g in ops:
        counts[g.name] = counts.get(g.name, 0) + 1
        layer = max(free_at[w] for w in g.wires)
        for w in g.wires:
            free_at[w] = layer + 1
    return {
        "n_qubits": config.n_qubits,
        "n_weights": config.n_weights,
        "n_gates": len(ops),
        "gate_counts": counts,
        "circuit_depth": max(free_at),
    }
