"""The classifier as plain tensor operations: the trained circuit folded into constant matrices.

An exported model must run where neither qtl nor PennyLane is installed (onnxruntime, a TorchScript
interpreter), so its quantum layer cannot call a simulator. Once trained, everything after the input
embedding is a fixed linear map; `fold_circuit` computes it once, in complex128, by applying the
circuit's gate list (`noisy_ops(config, noise)`, the list every simulator replays) to every basis state.
`PortableCircuit` then evaluates

    angles x (B, n) -> per wire v_w = R(x_w) c_w              RY(x_w) on a constant vector (n, k)
                    -> s = v_0 (x) v_1 (x) ... (x) v_{n-1}    (B, D) product state, by broadcasting
    pure:   a = s @ T (complex: two real matmuls), p = a.re**2 + a.im**2, <Z> = p @ signs
    noisy:  <Z> = s @ M, rho's diagonal, readout error and the signs folded into M (D, n)

with D = 2**n (k = 2) for a pure state and D = 4**n (k = 4, the interleaved layout of
`engines.density`) with noise. Only Mul, Add, Sin, Cos, Tanh, MatMul, Reshape and Softmax remain:
ops every ONNX runtime and TorchScript interpreter runs, in real arithmetic.

What cannot be folded exactly is refused with `ExportRefused` and the reason: shot sampling (random
by design), MPS truncation (an approximation the dense graph would not reproduce), and folded maps
wider than MAX_DIMENSION (2**10 amplitudes, or 4**5 density-matrix entries).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from qtl.config import MPS
from qtl.quantum.circuit import CircuitConfig, Gate
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines._compiler import angle_source
from qtl.quantum.engines.density import (
    channel_superoperator,
    diagonal_index,
    readout_mix,
    superoperator,
)
from qtl.quantum.noise import Channel, NoiseConfig, noisy_ops

#: Largest folded dimension D: a (D, D) complex128 map is 16 MiB to build and D**2 floats in the file.
MAX_DIMENSION = 1024

_C = torch.complex128
_J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # RY(x) = cos(x/2) I + sin(x/2) J


class ExportRefused(ValueError):
    """A model cannot become a portable graph that reproduces qtl's probabilities; says why."""


def check_foldable(model_config) -> None:
    """ExportRefused unless the quantum head of `model_config` (a `ModelConfig`) folds exactly."""
    c = model_config
    noise = c.noise
    random = "which is random by design: an exported graph computes exact <Z> and would not reproduce qtl's"
    if noise.shots is not None:
        raise ExportRefused(
            f"the model samples <Z> from {noise.shots} shots (qtl train --shots), {random} probabilities; "
            "export it with exact <Z> from Python, export_model(load_checkpoint(path, "
            "noise=dataclasses.replace(noise, shots=None)), out) where noise is its model_config.noise, "
            "or train it without --shots"
        )
    if c.shots is not None:
        raise ExportRefused(
            f"the model's PennyLane device samples <Z> from {c.shots} shots, {random} probabilities; "
            "train it with shots=None in its ModelConfig to export it"
        )
    if c.engine == MPS and c.max_bond is not None:
        from qtl.quantum.engines.mps import exact_bond

        if c.max_bond < exact_bond(c.circuit):
            raise ExportRefused(
                f"the model's MPS engine truncates bonds to {c.max_bond} (exact needs "
                f"{exact_bond(c.circuit)}): the exported graph computes the exact circuit and would differ"
            )
    if c.circuit.reupload:
        raise ExportRefused(
            "the data re-uploading circuit reads inputs after an entangling gate in every block: its layers "
            "depend on the input and cannot fold into constant matrices"
        )
    k = 2 if noise.is_ideal else 4
    if k**c.circuit.n_qubits > MAX_DIMENSION:
        n, kind = c.circuit.n_qubits, "amplitudes" if k == 2 else "density-matrix entries"
        raise ExportRefused(
            f"{_article(n)} {n}-qubit circuit{'' if k == 2 else ' with noise'} folds into {k}**{n} {kind}, "
            f"over the {MAX_DIMENSION} an exported graph holds"
        )


def _article(n: int) -> str:
    """ "an" before a number said with a vowel sound (8, 11, 18, 80-89, 800-899, 11,000 ...), else "a"."""
    digits = str(n)
    return "an" if digits.startswith("8") or (len(digits) % 3 == 2 and digits[:2] in ("11", "18")) else "a"


def _apply_on_wire(rows: torch.Tensor, g: torch.Tensor, wire: int, n: int, k: int) -> torch.Tensor:
    """(R, k**n) states, each row acted on by the (k, k) matrix g on `wire` (wire 0 most significant)."""
    x = rows.reshape(rows.shape[0], k**wire, k, k ** (n - wire - 1))
    return torch.einsum("ij,rajb->raib", g, x).reshape(rows.shape)


def _local_matrix(op: Gate | Channel, weights: torch.Tensor, config: CircuitConfig, k: int) -> torch.Tensor:
    """The (k, k) complex128 matrix of a one-wire gate (k = 2) or its superoperator / a channel's (k = 4)."""
    if isinstance(op, Channel):
        return channel_superoperator(op.name, op.p)
    source, position = angle_source(op, config.n_qubits, config.weight_shape)
    if source is None:
        u = sv.constant_matrix(op.name).to(_C)
    else:
        u = sv.rotation_matrices(op.name, weights.reshape(-1)[position], _C)
    return u if k == 2 else superoperator(u)


def _embedding(ops: list, config: CircuitConfig, k: int) -> tuple[torch.Tensor, list]:
    """Split the ops at the input embedding: per wire the constant vector c_w the embedding RY(x_w) acts
    on, (n, k) complex128, and the ops after it (the wires' remaining one-wire ops first)."""
    n = config.n_qubits
    reads = [i for i, op in enumerate(ops) if isinstance(op, Gate) and op.param and op.param[0] == "input"]
    cut = reads[-1] + 1 if reads else 0
    before = [[] for _ in range(n)]
    after = [[] for _ in range(n)]
    embedded = [False] * n
    for op in ops[:cut]:
        wire = op.wire if isinstance(op, Channel) else op.wires[0]
        if isinstance(op, Gate) and len(op.wires) != 1:
            raise ExportRefused(
                f"the circuit reads inputs after an entangling gate ({op}): it cannot be folded"
            )
        if isinstance(op, Gate) and op.param and op.param[0] == "input":
            if op.name != "RY" or op.param[1] != wire or embedded[wire]:
                raise ExportRefused(f"only one RY(x_w) embedding per wire folds, got {op}")
            embedded[wire] = True
        elif embedded[wire]:
            after[wire].append(op)
        elif isinstance(op, Gate) and op.param is not None:
            raise ExportRefused(f"only parameter-free gates and channels may precede the embedding, got {op}")
        else:
            before[wire].append(op)
    if not all(embedded):
        raise ExportRefused("every wire needs its RY(x_w) embedding for the circuit to fold")
    vectors = []
    for wire_ops in before:
        v = torch.zeros(k, dtype=_C)
        v[0] = 1  # |0>, or |0><0| in the interleaved layout
        for op in wire_ops:
            v = _local_matrix(op, torch.zeros(0), config, k) @ v
        vectors.append(v)
    return torch.stack(vectors), [op for ops_w in after for op in ops_w] + ops[cut:]


def fold_circuit(
    config: CircuitConfig, weights: torch.Tensor, noise: NoiseConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The circuit with trained `weights` (config.weight_shape) as constants, in complex128:

    c: (n, k) the vector each wire's embedding RY(x_w) acts on;
    T: (D, D) with the pure state's amplitudes = s @ T (k = 2), or, with noise (k = 4), (D, n) with
       <Z> = s @ T, where s (B, D) is the product of the embedded wire vectors.
    """
    noise = noise or NoiseConfig()
    n, k = config.n_qubits, 2 if noise.is_ideal else 4
    weights = weights.detach().to("cpu", torch.float64)
    c, rest = _embedding(noisy_ops(config, noise), config, k)
    rows = torch.eye(k**n, dtype=_C)  # row r: basis state r, carried through every op
    pending: dict[int, torch.Tensor] = {}  # per wire, the product of its one-wire ops not yet applied

    def flush(wires) -> None:
        nonlocal rows
        for w in wires:
            if w in pending:
                rows = _apply_on_wire(rows, pending.pop(w), w, n, k)

    for op in rest:
        if isinstance(op, Gate) and len(op.wires) == 2:  # one-wire ops elsewhere commute with it
            flush(op.wires)
            pairs = [op.wires] if k == 2 else [(2 * op.wires[0] + s, 2 * op.wires[1] + s) for s in (0, 1)]
            rows = rows[:, sv.cnot_permutation(n * (k // 2), pairs)]
        else:
            wire = op.wire if isinstance(op, Channel) else op.wires[0]
            g = _local_matrix(op, weights, config, k)
            pending[wire] = g @ pending[wire] if wire in pending else g
    flush(range(n))
    if k == 2:
        return c, rows
    probs = rows[:, diagonal_index(n)]  # (D, 2**n): each basis entry's contribution to rho's diagonal
    if noise.readout:
        probs = readout_mix(probs, n, noise.readout)
    return c, probs @ sv.sign_table(n).to(_C)


def _real(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.is_complex():
        if t.imag.abs().max() > 1e-12:
            raise ExportRefused(
                f"the folded circuit's {what} is complex: it cannot be folded in real arithmetic"
            )
        t = t.real
    return t


class PortableCircuit(nn.Module):
    """A trained circuit as constants: (B, n) embedding angles -> (B, n) <Z_i>, plain real ops only.

    Equal to the engines' <Z> (native statevector or density matrix) for the same config, weights and
    noise, up to float rounding.
    """

    def __init__(self, config: CircuitConfig, weights: torch.Tensor, noise: NoiseConfig | None = None):
        super().__init__()
        noise = noise or NoiseConfig()
        self.n_qubits = config.n_qubits
        self.density = not noise.is_ideal
        c, t = fold_circuit(config, weights, noise)
        c = _real(c, "embedding")
        if self.density:  # RY(x) (x) RY(x) = c^2 I(x)I + cs (I(x)J + J(x)I) + s^2 J(x)J
            eye = torch.eye(2, dtype=torch.float64)
            basis = [
                sv.kron_pair(eye, eye),
                sv.kron_pair(eye, _J) + sv.kron_pair(_J, eye),
                sv.kron_pair(_J, _J),
            ]
            # s is real (a real symmetric rho) and <Z> = s @ T is real, so s @ T = s @ T.real exactly
            self.register_buffer("measure", t.real.float().contiguous())
        else:  # RY(x) = c I + s J
            basis = [torch.eye(2, dtype=torch.float64), _J]
            self.register_buffer("amp_real", t.real.float().contiguous())
            imag = t.imag if t.is_complex() and t.imag.abs().max() > 0 else None
            self.register_buffer("amp_imag", imag.float().contiguous() if imag is not None else None)
            self.register_buffer("signs", sv.sign_table(self.n_qubits).float())
        # (n, m, k): monomial m of (cos, sin) of x_w / 2 -> its part of wire w's embedded vector
        self.register_buffer("embed", torch.stack([c @ b.T for b in basis], dim=1).float())

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        """(B, n) embedding angles -> (B, n) <Z_i>."""
        half = angles * 0.5
        cos, sin = torch.cos(half), torch.sin(half)
        if self.density:
            monomials = torch.stack((cos * cos, cos * sin, sin * sin), dim=-1)  # (B, n, 3)
        else:
            monomials = torch.stack((cos, sin), dim=-1)  # (B, n, 2)
        v = (monomials.unsqueeze(-1) * self.embed).sum(-2)  # (B, n, k)
        state = v[:, 0]
        for w in range(1, self.n_qubits):  # Kronecker product, wire 0 most significant: (B, D)
            state = (state.unsqueeze(-1) * v[:, w].unsqueeze(-2)).flatten(1)
        if self.density:
            return state @ self.measure
        real = state @ self.amp_real
        probs = real * real
        if self.amp_imag is not None:
            imag = state @ self.amp_imag
            probs = probs + imag * imag
        return probs @ self.signs


class PortableDressedCircuit(nn.Module):
    """A `DressedQuantumCircuit` with its circuit folded: (B, F) features -> (B, C) logits."""

    def __init__(self, head, noise: NoiseConfig | None = None) -> None:
        super().__init__()
        self.pre_net, self.post_net = head.pre_net, head.post_net
        self.circuit = PortableCircuit(head.config, head.q_params, noise)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) features -> (B, C) logits."""
        angles = torch.tanh(self.pre_net(features)) * (math.pi / 2)
        return self.post_net(self.circuit(angles))


def _portable_head(head, noise: NoiseConfig):
    """A quantum head with its circuit folded; one behind a PCA projection (`Projected`, a reduced feature
    width) keeps the projection, which is plain matmuls already."""
    from qtl.models.heads import Projected

    if not isinstance(head, Projected):
        return PortableDressedCircuit(head, noise)
    folded = Projected(head.mean.numel(), head.components.shape[0], PortableDressedCircuit(head.inner, noise))
    folded.set_projection(head.mean, head.components)
    return folded


class PortableClassifier(nn.Module):
    """A loaded classifier as one graph of plain ops: (B, 3, H, W) normalised images -> (B, C)
    class probabilities (softmax included)."""

    def __init__(self, loaded) -> None:
        super().__init__()
        c = loaded.model_config
        head = loaded.model.head
        if c.is_quantum:
            check_foldable(c)
            head = _portable_head(head, c.noise)
        from qtl.models.backbones import is_shared

        backbone = loaded.model.backbone
        # tracing may hook the modules it runs: a shared backbone is never hooked, so trace a copy
        self.backbone = copy.deepcopy(backbone) if is_shared(backbone) else backbone
        self.head = head
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C) class probabilities."""
        return torch.softmax(self.head(self.backbone(images)), dim=1)
