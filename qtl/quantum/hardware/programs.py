"""What a device job holds: the circuit compiled once (`Compiled`; `width_refusal` where a device is too
narrow for it) and the kinds of circuits it runs (`Program`: the samples, each sample's folds, the readout
calibration). Plain data, shared by the IBM and Braket devices (`qtl.quantum.hardware.devices`) and the
runs that score their jobs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from qtl.utils.words import count

NOT_GATES = ("measure", "barrier", "delay", "reset")
"""Instructions of a compiled circuit that are no gate: not folded for ZNE, not timed as pulses."""


@dataclass
class Compiled:
    """A circuit compiled once for a device."""

    circuit: object  # the provider's parametrised circuit (Qiskit: (isa, x, w); Braket: Circuit)
    physical: list[int]  # device qubit measured for wire i
    depth: int  # of the compiled circuit
    two_qubit_gates: int
    duration: float | None = None  # seconds per shot, where the device reports gate durations


@dataclass
class Program:
    """One kind of circuit in a job: its kind, scale factor (folds) or prepared bit (calibration), how
    many circuits or parameter sets it holds, and the device qubits each one measured wire i on."""

    kind: str  # "base", "fold" or "cal"
    value: int  # scale factor of a fold, prepared bit of a calibration, 1 for base
    count: int
    physical: list[list[int]] = field(default_factory=list)
    parametrised: bool = False  # its `count` parameter sets run as one circuit, as the base's always do

    @property
    def circuits(self) -> int:
        """How many circuits (and count arrays in the job's result) it takes: one for the base and a
        parametrised program, else one per sample."""
        return 1 if self.kind == "base" or self.parametrised else self.count

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Program:
        return cls(**d)


def by_program(per_circuit: list[np.ndarray], programs: list[Program]) -> list[np.ndarray]:
    """Counts as a job returns them (one (N, 2**n) array per parametrised circuit: the base's, an IBM
    job's folds; one (1, 2**n) array per other circuit) -> one (count, 2**n) array per program, in the
    order of `programs`."""
    out, i = [], 0
    for p in programs:
        out.append(np.concatenate(per_circuit[i : i + p.circuits]))
        i += p.circuits
    return out


def width_refusal(name: str, available: int, needed: int) -> str | None:
    """Why a device of `available` qubits cannot run a circuit of `needed`, in one line, or None."""
    if needed <= available:
        return None
    return f"{name} has {count(available, 'qubit')}; the circuit needs {needed}"
