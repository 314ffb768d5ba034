"""Quantum hardware: a trained circuit on IBM and Amazon Braket devices, with error mitigation.

    backends     IBM backends through Qiskit (`qtl[hardware]`): names, accounts, the Qiskit circuit
    ibm          `IBMDevice`: a run as one SamplerV2 job in a Batch (local testing mode on fake backends)
    braket       the circuit on Amazon Braket's simulators and devices (`qtl[braket]`): `BraketDevice`
    devices      `open_device(name)`: one interface over both (compile, one job, counts, retrieve)
    programs     what a device job holds: the `Compiled` circuit, `Program`s (samples, folds, calibration)
    mitigation   readout (mthree's M3) and zero-noise extrapolation (mitiq) on counts
    calibration  `noise_from_backend`: a NoiseConfig from a backend's T1/T2, gate and readout errors

Running a checkpoint on a device and scoring it: `qtl.analysis.hardware_runs`.
"""
