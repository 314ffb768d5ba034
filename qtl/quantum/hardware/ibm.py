"""An IBM backend as a `qtl.quantum.hardware.devices` device: compile the circuit once, submit every
sample, each sample's ZNE folds and the readout calibration circuits as ONE SamplerV2 job in a `Batch` (Qiskit
Runtime's V2 primitives; a fake backend runs them in local testing mode), read the counts back, and find
a real device's job again by id after a restart."""

from __future__ import annotations

import numpy as np

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.hardware.backends import (
    get_backend,
    ibm_service,
    is_fake,
    measured_bits,
    parameter_values,
    qiskit_circuit,
    simulator_options,
)
from qtl.quantum.hardware.programs import NOT_GATES, Compiled, Program, by_program, width_refusal


class IBMDevice:
    """An IBM backend as a `qtl.quantum.hardware.devices` device: a fake one in local testing mode, or a
    real one through the account's `QiskitRuntimeService`; jobs are SamplerV2 jobs in a `Batch`."""

    provider = "ibm"
    parametrised_folds = True  # each fold is one circuit with every sample's parameters (`fold_compiled`)

    def __init__(self, backend) -> None:
        self.backend = get_backend(backend)  # HardwareUnavailableError without the extra
        from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

        self.name = backend if isinstance(backend, str) else self.backend.name
        self.local = is_fake(backend) if isinstance(backend, str) else isinstance(self.backend, FakeBackendV2)
        self.num_qubits = self.backend.num_qubits

    def compile(self, config: CircuitConfig, seed: int = 0, optimization_level: int = 1):
        """Transpile `gates(config)` once (seeded) to the backend's coupling map and basis gates."""
        from qiskit import transpile

        n = config.n_qubits
        if refusal := width_refusal(self.name, self.num_qubits, n):
            raise ValueError(refusal)
        qc, x, w = qiskit_circuit(config)
        isa = transpile(qc, backend=self.backend, optimization_level=optimization_level, seed_transpiler=seed)
        try:
            duration = float(isa.estimate_duration(self.backend.target, unit="s"))
        except Exception:  # a backend that reports no gate durations
            duration = None
        return Compiled(
            circuit=(isa, x, w),
            physical=_measured_qubits(isa, n),
            depth=isa.depth(lambda inst: inst.operation.name != "barrier"),
            two_qubit_gates=sum(inst.operation.num_qubits == 2 for inst in isa.data),
            duration=duration,
        )

    def submit(self, compiled, config, angles, weights, shots, *, scales=(), calibrate=False, seed=0):
        """Every sample as a parameter set of the compiled circuit, then of its folds at `scales`
        (`fold_compiled`), and the two readout calibration circuits: one SamplerV2 job in a Batch ->
        (job, programs)."""
        from qiskit import QuantumCircuit, transpile
        from qiskit_ibm_runtime import Batch, SamplerV2

        isa, x, w = compiled.circuit
        n, count = config.n_qubits, len(angles)
        pubs = [(isa, parameter_values(isa, x, w, angles, weights), shots)]
        programs = [Program("base", 1, count, [compiled.physical] * count)]
        for scale in scales:  # the compiled circuit folded, routing included, on its own qubits
            folded = fold_compiled(isa, scale, self.backend)
            pubs.append((folded, parameter_values(folded, x, w, angles, weights), shots))
            programs.append(Program("fold", scale, count, [compiled.physical] * count, parametrised=True))
        if calibrate:
            for bit in (0, 1):
                cal = QuantumCircuit(n)
                if bit:
                    cal.x(range(n))
                cal.measure_all()
                cal = transpile(
                    cal, backend=self.backend, optimization_level=0, initial_layout=compiled.physical
                )
                pubs.append((cal, None, shots))
                programs.append(Program("cal", bit, 1, [_measured_qubits(cal, n)]))
        options = simulator_options(seed) if self.local else {}
        with Batch(backend=self.backend) as batch:
            job = SamplerV2(mode=batch, options=options).run(pubs)
        return job, programs

    def job_id(self, job) -> str:
        return job.job_id()

    def retrieve(self, job_id: str):
        """A real device's job by id, from the account's service."""
        return ibm_service().job(job_id)

    def counts(self, job, programs) -> list[np.ndarray]:
        """Wait for the job -> per program (count, 2**n) counts, in the order of `programs`."""
        from qtl.quantum.hardware.mitigation import counts_from_bits

        result = job.result()
        n = len(programs[0].physical[0])
        per_pub = [counts_from_bits(measured_bits(pub.data.meas, n)) for pub in result]
        return by_program(per_pub, programs)

    def seconds(self, compiled, programs, shots: int) -> float | None:
        """Estimated device time: every execution's shots x (circuit duration + repetition delay); a fold
        at scale s runs s times the circuit's gates and one measurement, a calibration one measurement."""
        if compiled.duration is None:
            return None
        rep_delay = float(getattr(self.backend, "default_rep_delay", None) or 250e-6)
        measure = compiled.duration
        props = (
            self.backend.target["measure"].get((compiled.physical[0],))
            if "measure" in self.backend.target
            else None
        )
        if props is not None and props.duration:
            measure = props.duration
        gates = max(compiled.duration - measure, 0.0) if measure != compiled.duration else compiled.duration
        per = {"base": compiled.duration, "cal": measure}
        return sum(  # a fold at scale s: s times the gates, one measurement
            p.count * shots * (per.get(p.kind, compiled.duration + (p.value - 1) * gates) + rep_delay)
            for p in programs
        )

    def noise(self, config: CircuitConfig):
        """The NoiseConfig of this backend's calibration for `config` (`qtl.quantum.hardware.calibration`)."""
        from qtl.quantum.hardware.calibration import noise_from_backend

        return noise_from_backend(config, self.backend)


def fold_compiled(isa, scale: int, backend):
    """The compiled circuit `isa` at an odd noise scale factor: every gate G, routing SWAPs' gates
    included, becomes G (G^dag G)^((scale - 1) / 2) (unitary folding, as mitiq's `fold_gates_at_random`
    does at odd scales) on the same device qubits, measured on the same ones; the inverses translated to
    the basis gates at optimization level 0 (so no fold is cancelled). So the device runs exactly
    `scale` times the base circuit's two-qubit gates and one-qubit pulses (sx^dag is rz sx rz, rz
    virtual). Folding the logical circuit instead, and compiling each fold, did not: its routing SWAPs
    were never folded and its one-qubit gates were not merged (27/51/75 two-qubit gates for scales
    1/3/5 of a ring circuit on FakeManilaV2), and mitiq, folding through Cirq, decomposes ECR gates
    (5x and 9x on ECR devices)."""
    from qiskit import transpile

    if scale < 1 or scale % 2 == 0:
        raise ValueError(f"a noise scale factor is an odd whole number, got {scale}")
    folded = isa.copy_empty_like()
    for inst in isa.data:
        folded.append(inst)
        if inst.operation.name not in NOT_GATES:
            inverse = inst.replace(operation=inst.operation.inverse())
            for _ in range((scale - 1) // 2):
                folded.append(inverse)
                folded.append(inst)
    trivial = list(range(isa.num_qubits))  # already on device qubits: no layout, no routing
    return transpile(folded, backend=backend, optimization_level=0, initial_layout=trivial)


def _measured_qubits(circuit, n: int) -> list[int]:
    """The device qubit that wire i ends on (and is measured on), for a transpiled circuit."""
    return [int(q) for q in circuit.layout.final_index_layout()[:n]]
