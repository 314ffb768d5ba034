"""The circuit on IBM backends through Qiskit: fake backends (calibrated noise, no account) or real devices.

Needs the optional extra `qtl[hardware]` (qiskit, qiskit-aer, qiskit-ibm-runtime); without it every entry
point raises `HardwareUnavailableError` with one line saying what to install. The circuit is built from
`gates(config)` with its angles as Qiskit parameters, transpiled once to the backend's coupling map and
basis gates, and all samples run as one Sampler job (one parameter set per sample):

    expvals = backend_expvals(config, angles, weights, "FakeManilaV2", shots=1024)   # (N, n) <Z_i>

A fake backend (`qiskit_ibm_runtime.fake_provider`, e.g. FakeManilaV2) runs locally on Aer with the noise
model of its calibration snapshot. A real device is the same call with a backend object from
`QiskitRuntimeService(...).backend(name)` (see the README; needs an IBM Quantum token).
"""

from __future__ import annotations

import numpy as np
import torch

from qtl.quantum.circuit import CircuitConfig, gates

# Qiskit (the `hardware` extra) is imported inside each function: this module imports without it.

HARDWARE_HINT = (
    "install the hardware extra: pip install 'qtl[hardware]' (qiskit, qiskit-aer, qiskit-ibm-runtime)"
)
DEFAULT_BACKEND = "FakeManilaV2"


class HardwareUnavailableError(ImportError):
    """The optional Qiskit packages are missing."""


def _fake_provider():
    try:
        import qiskit  # noqa: F401
        import qiskit_aer  # noqa: F401
        from qiskit_ibm_runtime import fake_provider
    except ImportError as exc:
        raise HardwareUnavailableError(
            f"IBM backends need Qiskit ({exc.name} is missing): {HARDWARE_HINT}"
        ) from None
    return fake_provider


def fake_backend_names() -> list[str]:
    """Class names of the fake IBM backends installed, e.g. ["FakeAlgiers", ..., "FakeManilaV2", ...]."""
    fp = _fake_provider()
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return sorted(
        name
        for name in dir(fp)
        if name.startswith("Fake")
        and isinstance(getattr(fp, name), type)
        and issubclass(getattr(fp, name), FakeBackendV2)
    )


def get_backend(backend):
    """A backend object: a fake backend by class name ("FakeManilaV2"), or any Qiskit backend as is."""
    if not isinstance(backend, str):
        return backend
    fp = _fake_provider()
    names = fake_backend_names()
    if backend not in names:
        raise ValueError(f"unknown fake IBM backend {backend!r}; choose one of: {', '.join(names)}")
    return getattr(fp, backend)()


def qiskit_circuit(config: CircuitConfig):
    """(QuantumCircuit, x, w): `gates(config)` with input angles x[i] and flat weights w[k] as parameters,
    every qubit measured (classical bit i = wire i)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    n = config.n_qubits
    x, w = ParameterVector("x", n), ParameterVector("w", config.n_weights)
    shape = config.weight_shape
    qc = QuantumCircuit(n)
    for g in gates(config):
        if g.param is None:
            angle = None
        elif g.param[0] == "input":
            angle = x[g.param[1]]
        else:
            angle = w[int(np.ravel_multi_index(g.param[1], shape))]
        if g.name == "Hadamard":
            qc.h(g.wires[0])
        elif g.name == "CNOT":
            qc.cx(*g.wires)
        elif g.name == "RY":
            qc.ry(angle, g.wires[0])
        elif g.name == "RZ":
            qc.rz(angle, g.wires[0])
        else:
            raise ValueError(f"no Qiskit gate for {g.name!r}")
    qc.measure_all()
    return qc, x, w


def backend_expvals(
    config: CircuitConfig,
    angles: torch.Tensor,
    weights: torch.Tensor,
    backend="FakeManilaV2",
    *,
    shots: int = 1024,
    seed: int = 0,
    optimization_level: int = 1,
) -> torch.Tensor:
    """(N, n) angles, weights of `config.weight_shape` -> (N, n) float64 <Z_i> measured on `backend`.

    backend: a fake backend's class name or a Qiskit backend object (a real device included). The
    circuit is transpiled once (seeded) and the N samples run as one Sampler job of `shots` shots each;
    on a fake backend the simulator is seeded too, so results repeat.
    """
    _fake_provider()
    from qiskit import transpile
    from qiskit_ibm_runtime import SamplerV2
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    device = get_backend(backend)
    n = config.n_qubits
    if n > device.num_qubits:
        raise ValueError(f"{device.name} has {device.num_qubits} qubits; the circuit needs {n}")
    qc, x, w = qiskit_circuit(config)
    isa = transpile(qc, backend=device, optimization_level=optimization_level, seed_transpiler=seed)
    a = angles.detach().cpu().double().numpy()  # (N, n)
    flat = weights.detach().cpu().double().reshape(-1).numpy()
    column = {p: a[:, i] for i, p in enumerate(x)} | {
        p: np.full(len(a), v) for p, v in zip(w, flat, strict=True)
    }
    values = np.stack([column[p] for p in isa.parameters], axis=-1)  # (N, P) in the circuit's order
    options = {"simulator": {"seed_simulator": seed}} if isinstance(device, FakeBackendV2) else {}
    result = SamplerV2(mode=device, options=options).run([(isa, values, shots)]).result()
    bits = np.unpackbits(result[0].data.meas.array, axis=-1, bitorder="big")[..., ::-1][..., :n]  # (N, S, n)
    return torch.from_numpy(1.0 - 2.0 * bits.mean(axis=1))
