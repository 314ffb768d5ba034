"""The circuit on Amazon Braket: its local simulators (pure and noisy) and Rigetti, IonQ and IQM devices.

Needs the optional extra `qtl[braket]` (amazon-braket-sdk; its PennyLane plugin also makes
`braket.local.qubit` an engine: `qtl evaluate CKPT --engine braket.local.qubit`). A run is ONE quantum
task: a Braket `ProgramSet` holding the circuit with every sample as a parameter set
(`CircuitBinding`), each sample's folds and the readout calibration circuits.

    braket_sv          local state-vector simulator (ideal)
    braket_dm          local density-matrix simulator with a NoiseConfig: qtl's channels after every
                       gate and readout bit flips, exactly as the native density-matrix engine has them
    rigetti/Ankaa-3, ionq/Forte-1, iqm/Garnet, or any device ARN: real devices (a region and AWS
                       credentials from boto3's usual chain: environment, ~/.aws, a role; without them
                       one line says what to set up); untested here. The estimate's list price (PRICES)
                       is known for the three named devices only

Braket compiles circuits for its devices, which would cancel ZNE's folds, so a real device runs without
ZNE (see docs/hardware.md); the local simulators run every mitigation.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.hardware.programs import Compiled, Program, by_program, width_refusal
from qtl.quantum.noise import NoiseConfig
from qtl.utils.words import error_line

BRAKET_HINT = "install the Braket extra: pip install 'qtl[braket]' (amazon-braket-sdk)"
LOCAL = {"braket_sv": "local state-vector simulator (ideal)", "braket_dm": "local density-matrix simulator"}
DEVICES = {
    "rigetti/Ankaa-3": "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3",
    "ionq/Forte-1": "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1",
    "iqm/Garnet": "arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet",
}
#: Braket's list prices in USD when this was written (per task, and per shot on each device of DEVICES);
#: check https://aws.amazon.com/braket/pricing/ before spending. Any other ARN (another device, or an
#: on-demand simulator such as SV1, billed per minute) has no price here.
PRICES = {"task": 0.30, "rigetti/Ankaa-3": 0.0009, "ionq/Forte-1": 0.08, "iqm/Garnet": 0.00145}
AWS_REGION_HINT = "a region (AWS_REGION or AWS_DEFAULT_REGION, e.g. us-east-1, or one in ~/.aws/config)"
AWS_CREDENTIALS_HINT = (
    "credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or a role)"
)
GATES = {"Hadamard": "h", "CNOT": "cnot", "RY": "ry", "RZ": "rz"}
CHANNELS = {"DepolarizingChannel": "depolarizing", "AmplitudeDamping": "amplitude_damping"}
CHANNELS["PhaseDamping"] = "phase_damping"


def is_braket(name: str) -> bool:
    """Is `name` a Braket device: a local simulator, a known device or a device ARN?"""
    return name in LOCAL or name in DEVICES or name.startswith("arn:aws:braket")


def _sdk():
    try:
        import braket.circuits  # noqa: F401
        import braket.devices  # noqa: F401
    except ImportError as exc:
        from qtl.quantum.hardware.backends import HardwareUnavailableError

        raise HardwareUnavailableError(f"Braket devices need {exc.name}: {BRAKET_HINT}") from None


@contextmanager
def aws_errors(what: str):
    """botocore's errors that mean the AWS setup is missing or refused (no region, no credentials, a
    rejected request, no connection) as one AccountError line about `what`; any other error as it is."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    from qtl.quantum.hardware.backends import AccountError

    try:
        yield
    except NoRegionError:
        raise AccountError(
            f"{what} needs an AWS account, and no AWS region is set: set {AWS_REGION_HINT} and "
            f"{AWS_CREDENTIALS_HINT}"
        ) from None
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
        raise AccountError(f"{what} needs AWS credentials ({exc}): set {AWS_CREDENTIALS_HINT}") from None
    except EndpointConnectionError as exc:
        raise AccountError(f"{what}: Amazon Braket could not be reached ({exc})") from None
    except ClientError as exc:  # credentials refused, no access, an unknown device or task
        reason = error_line(exc)
        raise AccountError(f"{what}: Amazon Braket refused the request: {reason}") from None


def braket_circuit(config: CircuitConfig):
    """A Braket Circuit of `gates(config)` with FreeParameters x0.. (angles) and w0.. (flat weights)."""
    from braket.circuits import Circuit, FreeParameter

    circuit = Circuit()
    for g in gates(config):
        args = list(g.wires)
        if g.param is not None:
            kind, index = g.param
            flat = index if kind == "input" else int(np.ravel_multi_index(index, config.weight_shape))
            args.append(FreeParameter(f"{'x' if kind == 'input' else 'w'}{flat}"))
        getattr(circuit, GATES[g.name])(*args)
    return circuit


def with_noise(circuit, noise: NoiseConfig | None):
    """`circuit` with `noise`'s channels after every gate (where `qtl.quantum.noise.noisy_ops` puts them)
    and a readout bit flip on every qubit at the end; the circuit itself when there is no noise."""
    from braket.circuits import Circuit

    if noise is None or (not noise.has_channels and not noise.readout):
        return circuit
    one, two = noise.one_qubit(), noise.two_qubit()
    out = Circuit()
    for instruction in circuit.instructions:
        out.add_instruction(instruction)
        strengths = one if len(instruction.target) == 1 else two
        for wire in instruction.target:
            for name, p in zip(CHANNELS.values(), strengths, strict=True):
                if p > 0:
                    getattr(out, name)(int(wire), p)
    if noise.readout:
        for wire in circuit.qubits:
            out.bit_flip(int(wire), noise.readout)
    return out


def check_aws(what: str) -> None:
    """AccountError (one line: what to set) unless boto3's usual chain finds a region and credentials,
    asked without a request to AWS; `aws_errors` still turns what AWS then refuses into one line."""
    import boto3

    from qtl.quantum.hardware.backends import AccountError

    with aws_errors(what):
        session = boto3.Session(region_name=os.environ.get("AWS_REGION"))  # as Braket's AwsSession
        if session.region_name is None:
            from botocore.exceptions import NoRegionError

            raise NoRegionError()
        if session.get_credentials() is None:
            raise AccountError(
                f"{what} needs AWS credentials, and boto3 found none: set {AWS_CREDENTIALS_HINT}"
            )


class LocalTask:
    """A task for a local simulator, recorded before it runs: `LocalSimulator.run` would simulate the
    whole ProgramSet before returning, so a job killed meanwhile left no row (docs promise the row before
    the wait). Its id is made here; `result()` runs it (once) in this process."""

    def __init__(self, device, program_set) -> None:
        import uuid

        self.id, self._device, self._program_set, self._result = str(uuid.uuid4()), device, program_set, None

    def result(self):
        if self._result is None:
            shots = self._program_set.total_shots
            self._result = self._device.run(self._program_set, shots=shots).result()
        return self._result


class BraketDevice:
    """A Braket device as a `qtl.quantum.hardware.devices` device; a run is one ProgramSet task."""

    provider = "braket"

    def __init__(self, name: str, noise: NoiseConfig | None = None) -> None:
        _sdk()
        self.name = name
        self.local = name in LOCAL
        if name == "braket_sv" and noise is not None and not noise.is_ideal:
            raise ValueError("braket_sv is the ideal simulator; noise needs braket_dm")
        self.noise_config = noise if name == "braket_dm" else None
        if name == "braket_dm" and noise is None:
            raise ValueError("braket_dm needs a NoiseConfig (the CLI's --noise-from BACKEND gives one)")
        # a local simulator's own limit (braket_sv 26, braket_dm 13); a real device's when it is opened
        self.num_qubits = self._device().properties.paradigm.qubitCount if self.local else None

    def _device(self):
        if self.local:
            from braket.devices import LocalSimulator

            return LocalSimulator(self.name)
        from braket.aws import AwsDevice

        with aws_errors(self.name):
            device = AwsDevice(DEVICES.get(self.name, self.name))
            self.num_qubits = device.properties.paradigm.qubitCount
        return device

    def check_account(self) -> None:
        """AccountError (one line: what to set) where this is a real device and boto3's chain finds no
        region or credentials: `submit` asks, and `qtl hardware run` before any work and any file. An
        estimate needs none: it prices the run from PRICES and asks nothing of AWS."""
        if not self.local:
            check_aws(self.name)

    def check_zne(self, zne: bool) -> None:
        """ValueError when the run would hold ZNE's folds and this is a real device: Braket compiles
        circuits for it, which would cancel the folds. `submit`, `cost` (the estimate) and
        `qtl hardware` before any work all ask here."""
        if zne and not self.local:
            raise ValueError(
                f"{self.name}: Braket compiles circuits and would cancel ZNE's folds; use readout"
            )

    def compile(self, config: CircuitConfig, seed: int = 0):
        """The parametrised circuit (Braket compiles it for a real device when the task runs)."""
        if self.num_qubits and (refusal := width_refusal(self.name, self.num_qubits, config.n_qubits)):
            raise ValueError(refusal)
        circuit = braket_circuit(config)
        cnots = sum(len(g.wires) == 2 for g in gates(config))
        return Compiled(circuit, list(range(config.n_qubits)), circuit.depth, cnots)

    def submit(self, compiled, config, angles, weights, shots, *, scales=(), calibrate=False, seed=0):
        """Every sample as a parameter set, the folds and the calibration: one ProgramSet task."""
        from braket.circuits import Circuit
        from braket.program_sets import CircuitBinding, ProgramSet
        from braket.program_sets.parameter_sets import ParameterSets

        from qtl.quantum.hardware.mitigation import fold

        self.check_account()
        self.check_zne(bool(scales))
        n, count = config.n_qubits, len(angles)
        a = angles.detach().cpu().double().numpy()
        flat = weights.detach().cpu().double().reshape(-1).numpy()
        inputs = {f"x{i}": a[:, i].tolist() for i in range(n)} | {
            f"w{k}": [float(v)] * count for k, v in enumerate(flat)
        }
        qubits = [list(range(n))]
        entries = [
            CircuitBinding(with_noise(compiled.circuit, self.noise_config), input_sets=ParameterSets(inputs))
        ]
        programs = [Program("base", 1, count, qubits * count)]
        if scales:
            bound = [
                compiled.circuit.make_bound_circuit({k: v[s] for k, v in inputs.items()})
                for s in range(count)
            ]
            for scale, circuits in fold(bound, scales, seed).items():
                entries += [with_noise(c, self.noise_config) for c in circuits]
                programs.append(Program("fold", scale, count, qubits * count))
        if calibrate:
            for bit in (0, 1):
                cal = Circuit().x(range(n)) if bit else Circuit().i(range(n))
                entries.append(with_noise(cal, self.noise_config))
                programs.append(Program("cal", bit, 1, qubits))
        program_set = ProgramSet(entries, shots_per_executable=shots)
        device = self._device()
        if self.local:  # LocalSimulator.run runs the task before it returns: that is the wait, in `counts`
            return LocalTask(device, program_set), programs
        with aws_errors(self.name):
            task = device.run(program_set, shots=program_set.total_shots)
        return task, programs

    def job_id(self, job) -> str:
        return job.id

    def retrieve(self, job_id: str):
        from braket.aws import AwsQuantumTask

        with aws_errors(f"Braket task {job_id}"):
            return AwsQuantumTask(job_id)

    def counts(self, job, programs) -> list[np.ndarray]:
        """Wait for the task -> per program (count, 2**n) counts, in the order of `programs`."""
        from qtl.quantum.hardware.mitigation import counts_from_bits

        with aws_errors(f"{self.name} task {self.job_id(job)}"):
            result = job.result()
        per_entry = [
            np.concatenate([counts_from_bits(np.asarray(e.measurements)[None]) for e in entry])
            for entry in result.entries
        ]
        return by_program(per_entry, programs)

    def seconds(self, compiled, programs, shots: int) -> float | None:
        return None  # Braket reports no gate durations here; it charges per task and shot (`cost`)

    def cost(self, programs, shots: int) -> float | None:
        """List price in USD of the task: a task fee plus every executable's shots; None where PRICES
        has no price for this device (an ARN of another device or of an on-demand simulator).
        ValueError for folds on a real device (`check_zne`), which no task can run."""
        if self.local:
            return 0.0
        self.check_zne(any(p.kind == "fold" for p in programs))
        known = {arn: name for name, arn in DEVICES.items()}.get(self.name, self.name)
        if known not in DEVICES:
            return None
        executions = sum(p.count for p in programs)
        return PRICES["task"] + executions * shots * PRICES[known]

    def noise(self, config: CircuitConfig) -> NoiseConfig | None:
        return self.noise_config
