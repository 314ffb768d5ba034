"""A `NoiseConfig` from an IBM backend's calibration, so a model can be trained for one device.

The circuit is transpiled to the backend once (as a run would be), and the calibration of the qubits and
couplings it uses is averaged (`calibration`). The mapping onto qtl's per-gate channels
(`noise_from_backend`, documented in docs/hardware.md):

    k1 = physical one-qubit pulses per logical one-qubit gate (H, RY, RZ): every one-qubit gate the
         backend reports a duration or error for (sx, x; u2, u3; rx), not the virtual ones (rz, u1)
    k2 = physical two-qubit gates (cx, ecr, cz, ...; routing SWAPs included) per logical CNOT
    T1, T2 = 1 / mean(1 / T) over the used qubits (T2 capped at 2 T1)
    t = k1 * mean pulse duration after a one-qubit gate, k2 * mean two-qubit gate duration after a CNOT
    amplitude damping gamma = 1 - exp(-t / T1)
    phase damping gamma     = 1 - exp(-2 t / T2 + t / T1)   (with amplitude damping, coherences decay
                                                            as exp(-t / T2))
    r1 = 1 - (1 - mean pulse error)^k1,  r2 = 1 - (1 - mean two-qubit gate error)^k2     (reported
                                                            errors are average gate infidelities)
    depolarizing p (one-qubit): the p at which DepolarizingChannel(p) then the two dampings, one wire,
        has average gate infidelity r1
    depolarizing p (two-qubit): the p at which that channel on each of the CNOT's two wires has
        two-qubit average gate infidelity r2
    readout = mean reported measurement error of the measured qubits (P(0|1) and P(1|0) averaged)

Both p are found by root finding on `qiskit.quantum_info.average_gate_fidelity` of the Kraus maps of
PennyLane's own channels, the ones the density-matrix engine applies; where decoherence alone exceeds
the reported error, p is 0. What the mapping leaves out: idle qubits' decoherence, crosstalk, coherent
over-rotations, correlated two-qubit errors and the asymmetry of readout errors.
"""

from __future__ import annotations

import math

import numpy as np

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.noise import NoiseConfig


def _is_pulse(props) -> bool:
    """A one-qubit gate that takes time or errs on the device (rz, u1 are virtual: frame changes)."""
    return props is not None and bool(props.duration or props.error)


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else 0.0


def calibration(config: CircuitConfig, backend, *, seed: int = 0) -> dict:
    """The calibration numbers the mapping uses, averaged over what the transpiled circuit touches:
    k1, k2, T1, T2 (s), pulse and two-qubit error and duration (s), readout error, qubits, pairs."""
    from qiskit import transpile

    from qtl.quantum.hardware.backends import get_backend, qiskit_circuit
    from qtl.quantum.hardware.programs import NOT_GATES, width_refusal

    name = backend if isinstance(backend, str) else backend.name
    if isinstance(backend, str):
        from qtl.quantum.hardware.braket import is_braket

        if is_braket(backend):  # get_backend would call it "no fake backend" and ask for an IBM account
            raise ValueError(
                f"{backend} is an Amazon Braket device and carries no calibration qtl can take noise "
                "from: name a fake IBM backend (FakeManilaV2; 'qtl hardware backends' lists them)"
            )
    backend = get_backend(backend)
    if refusal := width_refusal(name, backend.num_qubits, config.n_qubits):
        raise ValueError(refusal)
    qc, _, _ = qiskit_circuit(config)
    isa = transpile(qc, backend=backend, optimization_level=1, seed_transpiler=seed)
    target = backend.target
    pulses, pairs = [], []
    for inst in isa.data:
        name, qubits = inst.operation.name, tuple(isa.find_bit(q).index for q in inst.qubits)
        if name in NOT_GATES:
            continue
        if len(qubits) == 1 and _is_pulse(target[name].get(qubits)):
            pulses.append((name, qubits))
        elif len(qubits) == 2:
            pairs.append((name, qubits))
    measured = [int(q) for q in isa.layout.final_index_layout()[: config.n_qubits]]
    used = sorted({q for _, qs in pulses + pairs for q in qs} | set(measured))
    logical = gates(config)
    n1 = sum(len(g.wires) == 1 for g in logical)
    n2 = len(logical) - n1
    props = [target[name][qs] for name, qs in pulses]
    props2 = [target[name][qs] for name, qs in pairs]
    t1 = 1.0 / _mean([1.0 / target.qubit_properties[q].t1 for q in used])
    t2 = min(1.0 / _mean([1.0 / target.qubit_properties[q].t2 for q in used]), 2 * t1)
    return {
        "backend": backend.name,
        "qubits": measured,
        "pairs": sorted({qs for _, qs in pairs}),
        "k1": len(pulses) / n1 if n1 else 0.0,
        "k2": len(pairs) / n2 if n2 else 0.0,
        "t1": t1,
        "t2": t2,
        "pulse_error": _mean(p.error for p in props),
        "pulse_duration": _mean(p.duration for p in props),
        "two_qubit_error": _mean(p.error for p in props2),
        "two_qubit_duration": _mean(p.duration for p in props2),
        "readout": _mean(target["measure"][(q,)].error for q in measured),
    }


def _dampings(t: float, t1: float, t2: float) -> tuple[float, float]:
    """(amplitude damping gamma, phase damping gamma) of an idle time t on a qubit with T1, T2."""
    amplitude = 1.0 - math.exp(-t / t1)
    phase = max(0.0, 1.0 - math.exp(-2.0 * t / t2 + t / t1))
    return amplitude, phase


def _channel(p: float, amplitude: float, phase: float):
    """The one-wire channel qtl applies after a gate: depolarizing, amplitude then phase damping."""
    import pennylane as qml
    from qiskit.quantum_info import Kraus

    out = Kraus(qml.DepolarizingChannel.compute_kraus_matrices(p))
    out = out.compose(Kraus(qml.AmplitudeDamping.compute_kraus_matrices(amplitude)))
    return out.compose(Kraus(qml.PhaseDamping.compute_kraus_matrices(phase)))


def _depolarizing(infidelity: float, amplitude: float, phase: float, wires: int) -> float:
    """The depolarizing p at which `_channel` on each of `wires` wires has this average infidelity."""
    from qiskit.quantum_info import average_gate_fidelity
    from scipy.optimize import brentq

    def excess(p: float) -> float:
        one = _channel(p, amplitude, phase)
        channel = one if wires == 1 else one.tensor(one)
        return 1.0 - average_gate_fidelity(channel) - infidelity

    if excess(0.0) >= 0:
        return 0.0
    if excess(1.0) <= 0:
        return 1.0
    return float(brentq(excess, 0.0, 1.0, xtol=1e-10))


def noise_from_backend(config: CircuitConfig, backend, *, seed: int = 0) -> NoiseConfig:
    """The NoiseConfig of `backend`'s calibration for the circuit of `config` (the module's mapping);
    exact <Z> (shots None): shots are a property of a run, not of the device."""
    c = calibration(config, backend, seed=seed)
    r1 = 1.0 - (1.0 - c["pulse_error"]) ** c["k1"]
    r2 = 1.0 - (1.0 - c["two_qubit_error"]) ** c["k2"]
    amp1, phase1 = _dampings(c["k1"] * c["pulse_duration"], c["t1"], c["t2"])
    amp2, phase2 = _dampings(c["k2"] * c["two_qubit_duration"], c["t1"], c["t2"])
    rounded = lambda x: float(f"{x:.4g}")  # noqa: E731
    return NoiseConfig(
        depolarizing=rounded(_depolarizing(r1, amp1, phase1, 1)),
        amplitude_damping=rounded(amp1),
        phase_damping=rounded(phase1),
        depolarizing_2q=rounded(_depolarizing(r2, amp2, phase2, 2) if c["k2"] else 0.0),
        amplitude_damping_2q=rounded(amp2),
        phase_damping_2q=rounded(phase2),
        readout=rounded(c["readout"]),
    )
