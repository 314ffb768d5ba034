"""Quantum devices by name, one interface for IBM (Qiskit Runtime) and Amazon Braket.

    device = open_device("FakeManilaV2")          # IBM fake backend (local testing mode)
    device = open_device("ibm_brisbane")          # a real IBM device (needs an IBM Quantum account)
    device = open_device("braket_dm")             # Braket's local density-matrix simulator (noisy)
    device = open_device("rigetti/Ankaa-3")       # a real Braket device (needs AWS credentials)

Every device (`qtl.quantum.hardware.ibm.IBMDevice`, `qtl.quantum.hardware.braket.BraketDevice`) has:

    name, provider ("ibm" | "braket"), local (runs in this process), num_qubits
    compile(config, seed) -> Compiled             # the circuit once, parametrised, on the device's qubits
    submit(compiled, config, angles (N, n), weights, shots, *, scales, calibrate, seed) -> (job, programs)
                                                  # ONE job: N parameter sets + folds + calibration
    job_id(job) -> str; retrieve(job_id) -> job   # a real device's job found again after a restart
    counts(job, programs) -> [(count, 2**n) int64 per program]   # waits for the job
    seconds(compiled, programs, shots) -> float | None           # estimated device time
    noise(config) -> NoiseConfig | None           # what the noisy simulation of this device uses

A job runs `Program`s (`qtl.quantum.hardware.programs`) in order: "base" (the N samples), "fold" at each scale
factor (N circuits each), "cal" (readout calibration, prepared 0 then 1).
"""

from __future__ import annotations


def open_device(name: str, noise=None):
    """The device called `name`: Braket's (`braket_sv`, `braket_dm` with the NoiseConfig `noise`,
    "rigetti/...", "ionq/...", "iqm/...") or IBM's (fake backends by class name, real devices by name)."""
    from qtl.quantum.hardware import braket

    if braket.is_braket(name):
        return braket.BraketDevice(name, noise)
    from qtl.quantum.hardware.ibm import IBMDevice

    return IBMDevice(name)
