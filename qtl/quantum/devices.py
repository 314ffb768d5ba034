"""Quantum devices by name, one interface for IBM (Qiskit Runtime) and Amazon Braket.

    device = open_device("FakeManilaV2")          # IBM fake backend (local testing mode)
    device = open_device("ibm_brisbane")          # a real IBM device (needs an IBM Quantum account)
    device = open_device("braket_dm")             # Braket's local density-matrix simulator (noisy)
    device = open_device("rigetti/Ankaa-3")       # a real Braket device (needs AWS credentials)

Every device (`qtl.quantum.hardware.IBMDevice`, `qtl.quantum.braket.BraketDevice`) has:

    name, provider ("ibm" | "braket"), local (runs in this process), num_qubits
    compile(config, seed) -> Compiled             # the circuit once, parametrised, on the device's qubits
    submit(compiled, config, angles (N, n), weights, shots, *, scales, calibrate, seed) -> (job, programs)
                                                  # ONE job: N parameter sets + folds + calibration
    job_id(job) -> str; retrieve(job_id) -> job   # a real device's job found again after a restart
    counts(job, programs) -> [(count, 2**n) int64 per program]   # waits for the job
    seconds(compiled, programs, shots) -> float | None           # estimated device time
    noise(config) -> NoiseConfig | None           # what the noisy simulation of this device uses

A job runs `Program`s in order: "base" (the N samples), "fold" at each scale factor (N circuits each),
"cal" (readout calibration, prepared 0 then 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Program:
        return cls(**d)


def open_device(name: str, noise=None):
    """The device called `name`: Braket's (`braket_sv`, `braket_dm` with the NoiseConfig `noise`,
    "rigetti/...", "ionq/...", "iqm/...") or IBM's (fake backends by class name, real devices by name)."""
    from qtl.quantum import braket

    if braket.is_braket(name):
        return braket.BraketDevice(name, noise)
    from qtl.quantum.hardware import IBMDevice

    return IBMDevice(name)
