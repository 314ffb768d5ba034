"""Quantum simulation: the circuit, its noise, its drawing, and the engines that run it.

    circuit     `CircuitConfig` and `gates(config)`: the one description of the circuit (torch-free)
    noise       `NoiseConfig` and `noisy_ops`: channels after gates, readout error, shots (torch-free)
    engines/    `make_engine(config, name)`: native statevector, density matrix, MPS, PennyLane devices
    draw        text and figure drawings of the circuit
    hardware    IBM backends through Qiskit (`qtl[hardware]`): names, accounts, the Qiskit circuit
    ibm         `IBMDevice`: a run as one SamplerV2 job in a Batch (local testing mode on fake backends)
    braket      the circuit on Amazon Braket's simulators and devices (`qtl[braket]`): `BraketDevice`
    devices     `open_device(name)`: one interface over both (compile, one job, counts, retrieve)
    programs    what a device job holds: `Compiled` circuit, `Program`s (samples, folds, calibration)
    mitigation  readout (mthree's M3) and zero-noise extrapolation (mitiq) on counts
    calibration `noise_from_backend`: a NoiseConfig from a backend's T1/T2, gate and readout errors

Pure simulation: nothing here trains or holds an optimizer (that is `qtl.training`).
"""
