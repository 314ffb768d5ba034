"""Quantum simulation: the circuit, its noise, its drawing, and the engines that run it.

    circuit     `CircuitConfig` and `gates(config)`: the one description of the circuit (torch-free)
    noise       `NoiseConfig` and `noisy_ops`: channels after gates, readout error, shots (torch-free)
    engines/    `make_engine(config, name)`: native statevector, density matrix, MPS, PennyLane devices
    draw        text and figure drawings of the circuit
    kernel      the fidelity kernel |<psi(x)|psi(x')>|^2 from the native engine's statevectors
    hardware/   the circuit on IBM and Braket devices, error mitigation, noise from calibration

Pure simulation: nothing here trains or holds an optimizer (that is `qtl.training`).
"""
