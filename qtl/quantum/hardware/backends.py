"""The circuit on IBM backends through Qiskit: fake backends (calibrated noise, no account) or real devices.

Needs the optional extra `qtl[hardware]` (qiskit, qiskit-aer, qiskit-ibm-runtime); without it every entry
point raises `HardwareUnavailableError` with one line saying what to install. The circuit is built from
`gates(config)` with its angles as Qiskit parameters, transpiled once to the backend's coupling map and
basis gates, and all samples run as one Sampler job (one parameter set per sample):

    expvals = backend_expvals(config, angles, weights, "FakeManilaV2", shots=1024)   # (N, n) <Z_i>

A fake backend (`qiskit_ibm_runtime.fake_provider`, e.g. FakeManilaV2) runs locally on Aer with the noise
model of its calibration snapshot: qiskit-ibm-runtime's local testing mode, the same V2 primitives and
`Batch` a real device gets. A real device is the same call by name ("ibm_brisbane") once an IBM Quantum
account is there: saved by `QiskitRuntimeService.save_account(...)` or given as `QISKIT_IBM_TOKEN`. qtl
never reads, passes or stores the token: `QiskitRuntimeService()` finds it itself.

`qtl.quantum.hardware.ibm.IBMDevice` builds on this module: a backend as `qtl.analysis.hardware_runs` uses it.
"""

from __future__ import annotations

import difflib
import functools
import os
import warnings

import numpy as np
import torch

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.hardware.programs import width_refusal
from qtl.utils.words import error_line

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


class AccountError(ValueError):
    """An IBM Quantum or AWS account is missing or cannot be used: the message says what to set up."""


def _fake_classes(fp) -> list[str]:
    """Class names of every fake IBM backend qiskit-ibm-runtime ships (usable or not)."""
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return sorted(
        name
        for name in dir(fp)
        if name.startswith("Fake")
        and isinstance(getattr(fp, name), type)
        and issubclass(getattr(fp, name), FakeBackendV2)
    )


def _make_fake(fp, name: str):
    """A fake backend by class name, without the warnings some snapshots print when made (FakeNighthawk:
    "not intended to represent typical ... error values")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(fp, name)()


def measures(backend) -> bool:
    """Can `backend` run a measured circuit? Nine old fake snapshots (FakeAlmadenV2, FakeBurlingtonV2,
    ...) have no `measure` instruction in their target, and Qiskit cannot transpile a measurement for them."""
    return "measure" in backend.target


def _measure_refusal(name: str) -> str:
    return (
        f"{name} cannot run the circuit: its calibration snapshot has no 'measure' instruction, so Qiskit "
        "cannot transpile a measured circuit for it; choose another fake backend ('qtl hardware backends' "
        "lists them)"
    )


@functools.cache
def _usable_fakes() -> tuple[tuple[str, int], ...]:
    """(class name, qubits) of every fake backend that can run the circuit, each made once per process."""
    fp = _fake_provider()
    made = ((name, _make_fake(fp, name)) for name in _fake_classes(fp))
    return tuple((name, backend.num_qubits) for name, backend in made if measures(backend))


def fake_backend_names() -> list[str]:
    """Class names of the fake IBM backends installed that can run the circuit, e.g. ["FakeAlgiers", ...,
    "FakeManilaV2", ...]; those without a measurement (`measures`) are left out. Makes each backend once
    per process (about 2 s)."""
    return [name for name, _ in _usable_fakes()]


def is_fake(name: str) -> bool:
    """Is `name` a fake backend's class name ("FakeManilaV2"), run locally rather than on a device?"""
    return name.startswith("Fake")


def _close_names(name: str) -> str:
    """ "; did you mean ...?" with the usable fake backends nearest `name` (difflib), then where to see
    them all: naming all sixty made a line no one reads."""
    names = fake_backend_names()
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.8)
    guess = f"; did you mean {' or '.join(by_lower[c] for c in close)}?" if close else ""
    return f"{guess} ('qtl hardware backends' lists them)"


def ibm_account() -> bool:
    """Is an IBM Quantum account there: `QISKIT_IBM_TOKEN` set, or one saved with `save_account`?
    Only presence is checked; the token itself is never read here."""
    if os.environ.get("QISKIT_IBM_TOKEN"):
        return True
    _fake_provider()
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        return bool(QiskitRuntimeService.saved_accounts())
    except Exception:  # an unreadable account file is no account
        return False


def _ibm_failures() -> tuple[type[BaseException], ...]:
    """What Qiskit Runtime raises when the account or IBM's service cannot be used: a rejected or unknown
    token, no connection (qiskit_ibm_runtime's IBMError, requests' RequestException)."""
    from qiskit_ibm_runtime.exceptions import IBMError
    from requests.exceptions import RequestException

    return (IBMError, RequestException)


def _ibm_reason(exc: BaseException) -> str:
    """One line: Qiskit Runtime's message, and whether IBM's service could be reached at all (a missing
    connection also reads "please check that you are using a valid API token")."""
    from requests.exceptions import ConnectionError as NoConnection

    text = error_line(exc).strip("'\"") or type(exc).__name__
    cause = exc
    while cause is not None:
        if isinstance(cause, NoConnection):
            return f"{text} (IBM Quantum could not be reached: no connection)"
        cause = cause.__cause__ or cause.__context__
    return text


def _account_name() -> str:
    return "QISKIT_IBM_TOKEN" if os.environ.get("QISKIT_IBM_TOKEN") else "the saved account"


def ibm_service():
    """`QiskitRuntimeService()`: it reads the saved account or QISKIT_IBM_TOKEN itself. AccountError when
    there is no account, or when the service refuses it or cannot be reached (one line: why)."""
    _fake_provider()
    if not ibm_account():
        raise AccountError(
            "real IBM devices need an IBM Quantum account: save one with "
            "QiskitRuntimeService.save_account(token=..., channel='ibm_quantum_platform') "
            "or set QISKIT_IBM_TOKEN"
        )
    from qiskit_ibm_runtime import QiskitRuntimeService

    try:
        return QiskitRuntimeService()
    except _ibm_failures() as exc:
        raise AccountError(
            f"the IBM Quantum account ({_account_name()}) could not be used: {_ibm_reason(exc)}"
        ) from None


def get_backend(backend):
    """A backend object: a fake backend by class name ("FakeManilaV2"), a real device by name with an
    account ("ibm_brisbane"), or any Qiskit backend as is. ValueError (one line) for a fake backend that
    cannot run the circuit (`measures`), an unknown name, or an account that cannot be used."""
    if not isinstance(backend, str):
        return backend
    fp = _fake_provider()
    if backend in _fake_classes(fp):
        made = _make_fake(fp, backend)
        if not measures(made):
            raise ValueError(_measure_refusal(backend))
        return made
    if is_fake(backend):
        raise ValueError(f"unknown fake IBM backend {backend!r}{_close_names(backend)}")
    if not ibm_account():
        raise AccountError(
            f"{backend!r} is no fake backend ({', '.join(fake_backend_names()[:3])}, ...; 'qtl hardware "
            "backends' lists them), and a real IBM device needs an account: save one with "
            "QiskitRuntimeService.save_account or set QISKIT_IBM_TOKEN"
        )
    from qiskit.providers.exceptions import QiskitBackendNotFoundError

    service = ibm_service()
    try:
        return service.backend(backend)
    except QiskitBackendNotFoundError:
        raise ValueError(
            f"{backend!r} is no fake backend and no device of this IBM Quantum account "
            "('qtl hardware backends' lists both)"
        ) from None
    except _ibm_failures() as exc:
        raise AccountError(f"IBM Quantum could not open {backend!r}: {_ibm_reason(exc)}") from None


def list_backends(real: bool = True, notes: list[str] | None = None) -> list[dict]:
    """The fake backends that can run the circuit (name, qubits) and, with an account and `real`, the
    account's devices (name, qubits, status, pending jobs): one dict per backend.

    An account that cannot be used (a rejected token, no connection) raises AccountError, or, given a
    `notes` list, adds one line saying so to it and lists the fake backends alone."""
    rows = [{"name": name, "kind": "fake", "qubits": n, "status": "local"} for name, n in _usable_fakes()]
    if real and ibm_account():
        try:
            rows += _ibm_rows()
        except AccountError as exc:
            if notes is None:
                raise
            notes.append(f"real IBM devices are not listed: {exc}")
    return rows


def _ibm_rows() -> list[dict]:
    rows = []
    try:
        for backend in ibm_service().backends(simulator=False):
            status = backend.status()
            state = "online" if status.operational else "offline"
            rows.append(
                {
                    "name": backend.name,
                    "kind": "ibm",
                    "qubits": backend.num_qubits,
                    "status": f"{state}, {status.status_msg}",
                    "pending_jobs": status.pending_jobs,
                }
            )
    except _ibm_failures() as exc:
        raise AccountError(f"IBM Quantum could not list the devices: {_ibm_reason(exc)}") from None
    return rows


def qiskit_circuit(config: CircuitConfig, measure: bool = True):
    """(QuantumCircuit, x, w): `gates(config)` with input angles x[i] and flat weights w[k] as parameters,
    every qubit measured (classical bit i = wire i) unless `measure` is False."""
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
    if measure:
        qc.measure_all()
    return qc, x, w


def parameter_values(circuit, x, w, angles: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """(N, n) angles and the weights -> (N, P) float64 values of `circuit.parameters`, in its order."""
    a = angles.detach().cpu().double().numpy()  # (N, n)
    flat = weights.detach().cpu().double().reshape(-1).numpy()
    column = {p: a[:, i] for i, p in enumerate(x)} | {
        p: np.full(len(a), v) for p, v in zip(w, flat, strict=True)
    }
    return np.stack([column[p] for p in circuit.parameters], axis=-1).reshape(len(a), -1)


def simulator_options(seed: int) -> dict:
    """SamplerV2 options that seed a fake backend's simulator. Local testing mode drops a falsy seed
    (`if seed := ...`), so the simulator gets seed + 1."""
    return {"simulator": {"seed_simulator": seed + 1}}


def measured_bits(bit_array, n: int) -> np.ndarray:
    """A SamplerV2 BitArray of shape (N,) -> (N, S, n) uint8 bits, wire order (classical bit i = wire i)."""
    packed = bit_array.array.reshape(-1, bit_array.num_shots, bit_array.array.shape[-1])
    return np.unpackbits(packed, axis=-1, bitorder="big")[..., ::-1][..., :n]


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

    device, n = get_backend(backend), config.n_qubits
    if refusal := width_refusal(device.name, device.num_qubits, n):
        raise ValueError(refusal)
    qc, x, w = qiskit_circuit(config)
    isa = transpile(qc, backend=device, optimization_level=optimization_level, seed_transpiler=seed)
    values = parameter_values(isa, x, w, angles, weights)  # (N, P)
    options = simulator_options(seed) if isinstance(device, FakeBackendV2) else {}
    result = SamplerV2(mode=device, options=options).run([(isa, values, shots)]).result()
    bits = measured_bits(result[0].data.meas, n)  # (N, S, n)
    return torch.from_numpy(1.0 - 2.0 * bits.mean(axis=1))
