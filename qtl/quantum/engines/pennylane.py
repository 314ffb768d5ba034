"""The circuit as a PennyLane QNode (torch interface), on any installed PennyLane device.

The QNode is built by replaying `qtl.quantum.circuit.gates(config)`, so it is the same circuit the native
engine
simulates. Inputs are parameter-broadcast: a (B, n) batch goes into the QNode in one call. Devices that
simulate broadcast tapes natively (default.qubit) run the batch at once; for the others (lightning.*)
PennyLane splits it into B tapes and executes them as one batch. Gradient transforms (parameter-shift,
finite-diff) cannot differentiate broadcast inputs, so for them the batch is always split.

Every device / diff_method / shots combination is checked when the engine is built: the QNode's
execution configuration and device preprocessing are resolved on a dummy batch (nothing is simulated),
and a 2-wire, depth-1 version of the circuit runs forward and backward once (milliseconds). An
unsupported choice is a ValueError before training starts rather than a failure in the first step.
"""

from __future__ import annotations

import functools
import inspect
import threading
import warnings
from dataclasses import replace

import pennylane as qml
import torch
from torch import nn

from qtl.config import DIFF_METHODS
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines._compiler import check_inputs
from qtl.quantum.noise import Channel, NoiseConfig, noisy_ops
from qtl.utils.words import error_line

#: One loaded model serves every app session's thread (st.cache_resource), and some devices (lightning.*)
#: keep their state vector on the device object: PennyLane executions run one at a time.
_EXECUTION_LOCK = threading.Lock()

_OPS = {"Hadamard": qml.Hadamard, "RY": qml.RY, "RZ": qml.RZ, "CNOT": qml.CNOT}


def circuit_function(config: CircuitConfig, noise: NoiseConfig | None = None, probs: bool = False):
    """The quantum function of `config`: f(inputs (..., n), weights weight_shape) -> [<Z_0>, ..., <Z_n-1>],
    or with `probs` the probabilities of the 2**n outcomes (wire 0 the leading bit).

    Replays `gates(config)`, or `noisy_ops(config, noise)` with its channels when `noise` has any, and
    models readout error as a BitFlip on every wire before measurement (default.mixed's own readout_prob
    fails on expectation values in PennyLane 0.45). A leading batch dimension on `inputs` becomes
    PennyLane parameter broadcasting.
    """
    noise = noise or NoiseConfig()
    ops = noisy_ops(config, noise)
    n = config.n_qubits

    def circuit(inputs, weights):
        for g in ops:
            if isinstance(g, Channel):
                getattr(qml, g.name)(g.p, wires=g.wire)
            elif g.param is None:
                _OPS[g.name](wires=g.wires)
            elif g.param[0] == "input":
                _OPS[g.name](inputs[..., g.param[1]], wires=g.wires)
            else:
                _OPS[g.name](weights[g.param[1]], wires=g.wires)
        if noise.readout:
            for i in range(n):
                qml.BitFlip(noise.readout, wires=i)
        if probs:
            return qml.probs(wires=range(n))
        return [qml.expval(qml.Z(i)) for i in range(n)]

    return circuit


BROADCAST_GRADIENTS = ("backprop", "adjoint", "device")
"""Resolved diff methods that differentiate a broadcast tape with respect to its broadcast inputs.

Gradient transforms (parameter-shift, finite-diff) cannot, so their QNodes split the batch into one tape
per sample first (qml.transforms.broadcast_expand); the tapes still execute as one batch.
"""


def build_qnode(
    config: CircuitConfig,
    device,
    diff_method: str = "best",
    shots: int | None = None,
    noise: NoiseConfig | None = None,
    probs: bool = False,
) -> tuple[qml.QNode, str]:
    """The QNode of `config` on a created PennyLane `device`, torch interface, and its resolved diff method
    (measuring each <Z_i>, or with `probs` every outcome's probability: `circuit_function`).

    Resolves the execution config and the device preprocessing on a dummy batch (simulating nothing), so
    PennyLane's errors for impossible combinations are raised here.
    """
    qnode = qml.QNode(
        circuit_function(config, noise, probs),
        device,
        interface="torch",
        diff_method=diff_method,
        shots=shots,
    )
    x = torch.zeros(2, config.n_qubits, dtype=torch.float64)
    w = torch.zeros(config.weight_shape, dtype=torch.float64, requires_grad=True)
    method = qml.workflow.construct_execution_config(qnode)(x, w).gradient_method
    method = method if isinstance(method, str) else getattr(method, "__name__", str(method))
    if method not in BROADCAST_GRADIENTS:
        qnode = qml.transforms.broadcast_expand(qnode)
    qml.workflow.construct_batch(qnode, level="device")(x, w)
    return qnode, method


def make_device(name: str, wires: int, seed: int | None = None):
    """`qml.device(name, wires=wires)`, its shot sampler seeded by `seed` where the device takes one
    (default.qubit, default.mixed, lightning.qubit, ...: then a fresh device draws the same shots for the
    same executions; PennyLane's default seeds each device from NumPy's global generator)."""
    if seed is not None and _takes_seed(name):
        if not 0 <= seed < 2**32:  # NumPy's generators, which PennyLane's devices use, take no other
            raise ValueError(f"noise seed must be from 0 to {2**32 - 1} for PennyLane's {name}, got {seed}")
        return qml.device(name, wires=wires, seed=seed)
    return qml.device(name, wires=wires)


@functools.cache
def _takes_seed(name: str) -> bool:
    """Whether the installed PennyLane device `name` takes a `seed` argument."""
    try:
        return "seed" in inspect.signature(qml.plugin_devices[name].load()).parameters
    except Exception:  # not installed, or a plugin that fails to load: qml.device says why
        return False


def _smoke_test(
    config: CircuitConfig, device: str, diff_method: str, shots: int | None, noise: NoiseConfig | None
) -> None:
    """Run forward + backward of a 2-wire, depth-1 version of `config` on a fresh `device`.

    Catches what only shows at execution (a device without these gates or measurements, a gradient that
    cannot handle the batch) in milliseconds, whatever the size of the real circuit.
    """
    small = replace(config, n_qubits=min(config.n_qubits, 2), depth=min(config.depth, 1))
    seed = noise.seed if noise is not None else None
    qnode, _ = build_qnode(small, make_device(device, small.n_qubits, seed), diff_method, shots, noise)
    with torch.inference_mode(False), torch.enable_grad():  # also where the caller builds under no_grad
        x = torch.zeros(2, small.n_qubits, dtype=torch.float64, requires_grad=True)
        w = torch.zeros(small.weight_shape, dtype=torch.float64, requires_grad=True)
        torch.stack(list(qnode(x, w)), dim=-1).sum().backward()


def _one_line(exc: Exception) -> str:
    hint = ""
    if isinstance(exc, qml.exceptions.DeviceError) and "does not exist" in str(exc):
        hint = f" (registered devices: {', '.join(sorted(qml.plugin_devices))})"
    return error_line(exc) + hint


def _check_options(device: str, diff_method: str, shots) -> None:
    if not isinstance(device, str) or not device:
        raise ValueError(f"device must be a PennyLane device name such as 'default.qubit', got {device!r}")
    if diff_method not in DIFF_METHODS:
        raise ValueError(f"diff_method must be one of {DIFF_METHODS}, got {diff_method!r}")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(f"shots must be None (exact expectation values) or a positive int, got {shots!r}")
    if shots is not None and diff_method in ("backprop", "adjoint"):
        raise ValueError(
            f"diff_method={diff_method!r} needs exact simulation: use shots=None, or "
            "diff_method='parameter-shift' / 'finite-diff' / 'best' with shots"
        )


class PennyLaneEngine(nn.Module):
    """The variational circuit on a PennyLane device, as a parameter-free torch module.

    Args:
        config: the circuit.
        device: an installed PennyLane device name: "default.qubit", "lightning.qubit", "lightning.gpu", ...
        diff_method: one of DIFF_METHODS.
        shots: None for exact expectation values, or the number of samples per expectation value
            (default: noise.shots).
        noise: channels after every gate and readout error (`qtl.quantum.noise.NoiseConfig`), as the native
            density-matrix engine applies them; they need a mixed-state device such as "default.mixed".
            Its seed seeds the device's shot sampler (`make_device`): in training mode two engines built
            alike draw the same shots for the same sequence of calls. In eval mode (evaluated, predicting,
            served) the shots are qtl's, as the density engine draws them: each input's from a generator
            seeded by `noise.seed` and its angles (`qtl.quantum.engines.density.input_counts`), sampled
            from the exact probabilities the same device computes without shots, so an input scores the
            same on every call and in any batch; the gradient is then the exact one's.

    Attributes:
        qnode: the QNode (torch interface), qnode(inputs (n,) or (B, n), weights weight_shape) -> a
            sequence of n tensors <Z_i>, each () or (B,); `torch.stack(qnode(x, w), -1)` gives (B, n).
        diff_method: the method PennyLane resolved for this device ("backprop", "adjoint", a gradient
            transform name such as "param_shift", ...).

    Raises:
        ValueError: unknown or unavailable device, unknown diff_method, bad shots, or a combination the
            device cannot run (adjoint or backprop with shots, adjoint on default.mixed, ...).
    """

    def __init__(
        self,
        config: CircuitConfig,
        device: str = "default.qubit",
        diff_method: str = "best",
        shots: int | None = None,
        noise: NoiseConfig | None = None,
    ) -> None:
        super().__init__()
        self.noise = noise or NoiseConfig()
        shots = self.noise.shots if shots is None else shots
        _check_options(device, diff_method, shots)
        self.config = config
        self.device_name = device
        self.shots = shots
        self.requested_diff_method = diff_method
        # eval mode with shots: the exact probabilities' QNode, built when first used (False: none here)
        self._exact = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _smoke_test(config, device, diff_method, shots, self.noise)
                self.device = make_device(device, config.n_qubits, self.noise.seed)
                self.qnode, self.diff_method = build_qnode(
                    config, self.device, diff_method, shots, self.noise
                )
        except Exception as exc:  # QuantumFunctionError, DeviceError, ImportError from plugins, ...
            raise ValueError(
                f"PennyLane device {device!r} cannot run this circuit with diff_method={diff_method!r}, "
                f"shots={shots}: {_one_line(exc)}"
            ) from exc

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, weights of config.weight_shape -> (B, n) <Z_i>, in angles' dtype and device.

        Angles are float32 or float64, as every engine takes them (ValueError otherwise); an empty batch
        gives (0, n). Runs in float64 on the CPU (what PennyLane's simulators use) and casts back;
        autograd flows through the casts to both arguments. Lightning devices hand PennyLane's torch
        interface Python floats, which it turns into float32 tensors, so their forward values carry
        float32 rounding (about 1e-8); their gradients are float64.
        """
        check_inputs(self.config, angles, weights)
        if not len(angles):  # PennyLane cannot broadcast over no samples
            return angles.new_zeros(angles.shape)
        x = angles.to(device="cpu", dtype=torch.float64)
        w = weights.to(device="cpu", dtype=torch.float64)
        if self.shots is not None and not self.training and (out := self._per_input(x, w)) is not None:
            return out.reshape(angles.shape).to(device=angles.device, dtype=angles.dtype)
        with _EXECUTION_LOCK:  # lightning's QNode keeps one state vector: threads would overwrite it
            out = torch.stack(list(self.qnode(x, w)), dim=-1)  # (B, n), or (n,) when PennyLane drops B == 1
        return out.reshape(angles.shape).to(device=angles.device, dtype=angles.dtype)

    def _per_input(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
        """Eval mode with shots: (B, n) float64 angles -> (B, n) <Z_i> estimated from `self.shots` shots per
        input drawn by `input_counts` from the exact probabilities, carrying the exact values' gradient (a
        straight-through estimator, as `DensityMatrixEngine.forward`). None where the device computes no
        exact probabilities (a device that only samples): it then draws its own shots, as in training."""
        from qtl.quantum.engines._statevector import z_expvals_halving
        from qtl.quantum.engines.density import input_counts

        n = self.config.n_qubits
        with _EXECUTION_LOCK:
            if self._exact is None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        device = make_device(self.device_name, n)
                        self._exact, _ = build_qnode(self.config, device, "best", None, self.noise, True)
                except Exception:  # DeviceError, QuantumFunctionError ...: this device only samples
                    self._exact = False
            if self._exact is False:
                return None
            probs = self._exact(x, w).reshape(len(x), 2**n)
        exact = z_expvals_halving(probs, n)
        with torch.no_grad():
            counts = input_counts(x, probs, self.shots, self.noise.seed)
            estimate = z_expvals_halving(counts / self.shots, n)
        return exact + (estimate - exact).detach()

    def __getstate__(self) -> dict:
        """Pickle / deepcopy without the devices and QNodes (lightning's state vector cannot be pickled)."""
        state = self.__dict__.copy()
        del state["device"], state["qnode"]
        state["_exact"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.device = make_device(self.device_name, self.config.n_qubits, self.noise.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.qnode, _ = build_qnode(
                self.config, self.device, self.requested_diff_method, self.shots, self.noise
            )

    def extra_repr(self) -> str:
        noise = "" if self.noise.is_ideal else f", noise={self.noise.label()!r}"
        return f"device={self.device_name!r}, diff_method={self.diff_method!r}, shots={self.shots}{noise}"
