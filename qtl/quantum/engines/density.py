"""The native engine's noisy path: a batched density-matrix simulation of `noisy_ops(config, noise)`.

Layout: a batch of n-qubit density matrices rho is a (B, 4**n) tensor, vectorised *interleaved*: wire w
contributes the digit 2*i_w + j_w of the entry rho[i, j], wire 0 most significant. There a one-qubit map
on wire w (a gate, U rho U^dagger, or a channel with Kraus operators K_k) is one 4x4 superoperator
S = sum_k K_k (x) conj(K_k) on digit w, and a CNOT is a permutation of the ket bits and the bra bits. So the
simulation is a 2n-qubit statevector simulation and reuses the native engine's kernels (`statevector`):

- compiled once into stages: a run of CNOTs (commuted past the channels of earlier CNOTs where they act
  on other wires) is one permutation; a run of one-qubit gates and channels is one local layer, one 4x4
  superoperator per wire, applied as Kronecker blocks over groups of wires (`statevector.apply_blocks`);
  the superoperators of all layers are built together, a few vectorised calls per forward;
- before the first CNOT the state is a product: each wire is a 4-vector, the state their Kronecker product;
- the probabilities are rho's diagonal; readout error mixes them per wire; <Z_i> is one matmul with a sign
  table. With shots, the counts of `shots` measurements are drawn from those probabilities (exactly
  multinomial, as a binary tree of binomials, from a seeded generator) and <Z_i> is their mean; the
  gradient is that of the exact expectation (a straight-through estimator), so training with shots works.

With H, RY and CNOT only, every superoperator (the channels' included) is real and the simulation runs in
the input's float dtype; otherwise in the matching complex dtype.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

from qtl.quantum.circuit import REAL_GATES, CircuitConfig, Gate
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines._compiler import angle_source, check_gates, forward_setup
from qtl.quantum.engines._memory import check_budget, resolve_memory_budget
from qtl.quantum.engines.native import DEFAULT_MEMORY_BUDGET, MEMORY_BUDGET_ENV, SimulationTooLargeError
from qtl.quantum.noise import NO_NOISY_REUPLOAD, Channel, NoiseConfig, noisy_ops

#: Local layers on at most this many wires are one 4**n x 4**n block (one matmul per layer).
FULL_BLOCK_MAX_WIRES = 2
#: Wider layers are split into groups of at most this many wires (16 x 16 blocks).
GROUP_MAX_WIRES = 2
#: States a training forward keeps besides one per group product: product state, probabilities, gradients.
_EXTRA_STATES = 4

_C = torch.complex128


def kraus(name: str, p: float) -> list[torch.Tensor]:
    """The (2, 2) complex128 Kraus operators of a PennyLane channel (see CHANNELS) of strength p."""
    eye = torch.eye(2, dtype=_C)
    if name == "DepolarizingChannel":
        x = torch.tensor([[0, 1], [1, 0]], dtype=_C)
        y = torch.tensor([[0, -1j], [1j, 0]], dtype=_C)
        z = torch.tensor([[1, 0], [0, -1]], dtype=_C)
        return [math.sqrt(1 - p) * eye] + [math.sqrt(p / 3) * m for m in (x, y, z)]
    if name == "AmplitudeDamping":
        return [
            torch.tensor([[1, 0], [0, math.sqrt(1 - p)]], dtype=_C),
            torch.tensor([[0, math.sqrt(p)], [0, 0]], dtype=_C),
        ]
    if name == "PhaseDamping":
        return [
            torch.tensor([[1, 0], [0, math.sqrt(1 - p)]], dtype=_C),
            torch.tensor([[0, 0], [0, math.sqrt(p)]], dtype=_C),
        ]
    raise ValueError(f"unknown channel {name!r}")


def superoperator(m: torch.Tensor) -> torch.Tensor:
    """(..., 2, 2) operators U -> (..., 4, 4) superoperators U (x) conj(U) of rho -> U rho U^dagger."""
    return sv.kron_pair(m, m.conj())


def channel_superoperator(name: str, p: float) -> torch.Tensor:
    """(4, 4) complex128 superoperator sum_k K_k (x) conj(K_k) of a channel."""
    return sum(superoperator(k) for k in kraus(name, p))


def schedule(ops: list[Gate | Channel], n_qubits: int) -> tuple[list[tuple[str, object]], list[list[list]]]:
    """Ops -> stages ("perm", CNOT pairs) / ("local", layer index) and the layers' per-wire op lists.

    A CNOT joins the previous CNOT run when the local layer after that run has nothing on its wires
    (they commute); otherwise it starts a new run.
    """
    stages: list[tuple[str, object]] = []
    layers: list[list[list]] = []
    for op in ops:
        if isinstance(op, Gate) and len(op.wires) == 2:
            last = stages[-1] if stages else None
            if last is not None and last[0] == "perm":
                stages[-1] = ("perm", last[1] + (op.wires,))
            elif (
                last is not None
                and len(stages) > 1
                and stages[-2][0] == "perm"
                and not any(layers[last[1]][w] for w in op.wires)
            ):
                stages[-2] = ("perm", stages[-2][1] + (op.wires,))
            else:
                stages.append(("perm", (op.wires,)))
            continue
        wire = op.wire if isinstance(op, Channel) else op.wires[0]
        if not stages or stages[-1][0] != "local":
            stages.append(("local", len(layers)))
            layers.append([[] for _ in range(n_qubits)])
        layers[stages[-1][1]][wire].append(op)
    return stages, layers


class Slots:
    """The superoperators of many slots (one wire of one local layer each), built together.

    Each slot's ops fold into C_R P_R ... C_1 P_1 C_0: constants C (parameter-free gates and channels,
    multiplied out once here) around the parametric gates P. Round r applies every slot's r-th C and P
    at once; P's of one kind and angle source are built with one vectorised call.
    """

    def __init__(self, slots: list[list], n_qubits: int, weight_shape: tuple[int, ...]) -> None:
        eye = torch.eye(4, dtype=_C)
        params: list[tuple[str, str, int]] = []  # (gate name, angle source, position)
        folded = []
        for ops in slots:
            consts, which = [eye], []
            for op in ops:
                if isinstance(op, Channel):
                    consts[-1] = channel_superoperator(op.name, op.p) @ consts[-1]
                    continue
                source, pos = angle_source(op, n_qubits, weight_shape)
                if source is None:
                    consts[-1] = superoperator(sv.constant_matrix(op.name).to(_C)) @ consts[-1]
                else:
                    which.append(len(params))
                    params.append((op.name, source, pos))
                    consts.append(eye)
            folded.append((consts, which))
        rounds = max((len(w) for _, w in folded), default=0)
        self.consts = [
            torch.stack([c[r] if r < len(c) else eye for c, _ in folded] or [eye])[: len(folded)]
            for r in range(rounds + 1)
        ]  # each (S, 4, 4)
        kinds: dict[tuple[str, str], list[int]] = {}
        for k, (name, source, _) in enumerate(params):
            kinds.setdefault((name, source), []).append(k)
        self.groups = [
            (name, source, torch.tensor([params[k][2] for k in ks])) for (name, source), ks in kinds.items()
        ]
        position = {k: i for i, k in enumerate(k for ks in kinds.values() for k in ks)}  # k -> row of cat
        self.order = [
            torch.tensor([position[w[r - 1]] if r - 1 < len(w) else len(params) for _, w in folded])
            for r in range(1, rounds + 1)
        ]  # each (S,): which built P (len(params): identity) each slot takes in round r

    def matrices(self, angles: torch.Tensor, wflat: torch.Tensor, dtype: torch.dtype, on) -> torch.Tensor:
        """(B?, S, 4, 4) superoperators; B only when some gate reads an input angle.

        on(key, make) returns a cached tensor on the right device.
        """
        cast = (lambda t: t.real.to(dtype)) if not dtype.is_complex else (lambda t: t.to(dtype))
        consts = [on((id(self), "const", r, dtype), lambda c=c: cast(c)) for r, c in enumerate(self.consts)]
        out = consts[0]
        if not self.order:
            return out
        built = []
        for i, (name, source, index) in enumerate(self.groups):
            theta = (angles if source == "input" else wflat).index_select(
                -1, on((id(self), "index", i), lambda x=index: x)
            )
            built.append(superoperator(sv.rotation_matrices(name, theta, dtype)))  # (B?, k, 4, 4)
        lead = torch.broadcast_shapes(*(b.shape[:-3] for b in built))
        eye = on(("eye4", dtype), lambda: torch.eye(4, dtype=dtype)[None])
        p = torch.cat([b.expand(*lead, *b.shape[-3:]) for b in built] + [eye.expand(*lead, 1, 4, 4)], dim=-3)
        for r, order in enumerate(self.order, start=1):
            out = consts[r] @ (p.index_select(-3, on((id(self), "order", r), lambda o=order: o)) @ out)
        return out


def diagonal_index(n_qubits: int) -> torch.Tensor:
    """(2**n,) positions of rho's diagonal rho[k, k] in the interleaved (4**n,) layout."""
    bits = (torch.arange(2**n_qubits)[:, None] >> torch.arange(n_qubits - 1, -1, -1)) & 1  # (2**n, n)
    return (3 * bits * 4 ** torch.arange(n_qubits - 1, -1, -1)).sum(-1)


def readout_mix(probs: torch.Tensor, n_qubits: int, p: float) -> torch.Tensor:
    """(B, 2**n) probabilities -> the distribution after each measured bit flips with probability p."""
    b = probs.shape[0]
    for w in range(n_qubits):
        x = probs.reshape(b, 2**w, 2, -1)
        probs = ((1 - p) * x + p * x.flip(2)).reshape(b, -1)
    return probs


def sample_counts(probs: torch.Tensor, shots: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 2**n) probabilities -> (B, 2**n) float64 counts of `shots` samples per row (multinomial).

    Drawn wire by wire as a binary tree of binomials: how many shots of each prefix of outcomes have a
    1 on the next wire. Exactly the multinomial distribution, in n vectorised calls and O(B 2**n) work.
    """
    b = probs.shape[0]
    marginals = [probs.detach().to(torch.float64).clamp_min(0)]  # level k: (B, 2**k) prefix probabilities
    while marginals[-1].shape[1] > 1:
        marginals.append(marginals[-1].reshape(b, -1, 2).sum(-1))
    counts = torch.full((b, 1), float(shots), dtype=torch.float64, device=probs.device)
    for level in reversed(marginals[:-1]):
        pair = level.reshape(b, -1, 2)
        total = pair.sum(-1)
        p_one = torch.where(total > 0, pair[..., 1] / total.clamp_min(1e-300), 0.0).clamp(0, 1)
        ones = torch.binomial(counts, p_one, generator=generator)
        counts = torch.stack((counts - ones, ones), dim=-1).reshape(b, -1)
    return counts


SEED_RESOLUTION = 2**-10
"""The angle steps (radians) that seed an input's shots in eval mode (`input_counts`): far above the
last-bit differences a batch of another size leaves in its angles (about 1e-7), far below what moves <Z>."""


def input_counts(angles: torch.Tensor, probs: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """`sample_counts` of each row of `probs` from a generator seeded by `seed` and that row's `angles`
    (a BLAKE2b digest of them in SEED_RESOLUTION steps): the same input draws the same shots whatever the
    batch around it (an angle within 1e-7 of a step's edge aside), and different inputs draw apart."""
    generator = torch.Generator(device=probs.device)
    rows = torch.round(angles.detach().double() / SEED_RESOLUTION).to(torch.int64).cpu().contiguous().numpy()
    out = []
    for b, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=str(seed).encode()).digest()
        generator.manual_seed(int.from_bytes(digest, "little") >> 1)
        out.append(sample_counts(probs[b : b + 1], shots, generator))
    return torch.cat(out) if out else torch.zeros_like(probs, dtype=torch.float64)


class DensityMatrixEngine(nn.Module):
    """Batched density-matrix simulation of a config's circuit under `noise`: (B, n) angles -> (B, n) <Z_i>.

    Args:
        config: the circuit; `noisy_ops(config, noise)` is compiled once here.
        noise: channels, readout error and shots (`qtl.quantum.noise.NoiseConfig`); default: ideal.
        memory_budget: most bytes one forward + backward may use (as `NativeEngine`; default 4 GiB or
            QTL_NATIVE_MEMORY_BUDGET). Larger simulations raise `SimulationTooLargeError`.

    `engine(angles, weights)`: angles (B, n_qubits) float32/float64 on any device, weights of shape
    `config.weight_shape` -> (B, n_qubits) <Z_i> in the dtype and on the device of `angles`,
    differentiable with respect to both. With shots, in training mode every call draws new shots from
    the engine's generator (`reseed()` restarts it from `noise.seed`); in eval mode each sample's shots
    are drawn from a generator seeded by `noise.seed` and that sample's angles in steps of 2^-10 rad
    (`input_counts`), so an input scores the same on every call and in any batch (whose rounding moves
    its angles by about 1e-7), as a served or evaluated model should.
    """

    def __init__(
        self, config: CircuitConfig, noise: NoiseConfig | None = None, memory_budget: int | None = None
    ) -> None:
        super().__init__()
        if config.reupload:  # its blocks would differ per sample; they are shared by the batch here
            raise ValueError(NO_NOISY_REUPLOAD)
        budget = resolve_memory_budget(memory_budget, MEMORY_BUDGET_ENV, DEFAULT_MEMORY_BUDGET)
        self.config, self.noise, self.memory_budget = config, noise or NoiseConfig(), budget
        n = self.n_qubits = config.n_qubits
        ops = noisy_ops(config, self.noise)
        gate_list = [op for op in ops if isinstance(op, Gate)]
        check_gates(gate_list, n)
        self.real = all(g.name in REAL_GATES for g in gate_list)
        stages, layers = schedule(ops, n)
        # layer 0 acts on a product state when it comes first: its own slots (per sample: the embedding)
        prefix = bool(stages) and stages[0][0] == "local"
        self._prefix = Slots(layers[0], n, config.weight_shape) if prefix else None
        self._stages = [(k, w - 1 if k == "local" and prefix else w) for k, w in stages[prefix:]]
        self._n_layers = len(layers) - prefix
        self._slots = Slots([slot for layer in layers[prefix:] for slot in layer], n, config.weight_shape)
        if n <= FULL_BLOCK_MAX_WIRES:
            self._groups = [n]
        else:
            count = -(-n // GROUP_MAX_WIRES)
            size, extra = divmod(n, count)
            self._groups = [size + 1] * extra + [size] * (count - extra)
        self._cache: dict[tuple, torch.Tensor] = {}
        self._fits: set[tuple] = set()
        self._generators: dict[torch.device, torch.Generator] = {}
        self._seed = self.noise.seed
        self._check_memory(1, torch.float32, training=True)

    def _on(self, key: tuple, device: torch.device, make) -> torch.Tensor:
        full = (*key, device)
        if full not in self._cache:
            with torch.inference_mode(False):  # kept: later forwards may need gradients (`constant_tables`)
                self._cache[full] = make().to(device)
        return self._cache[full]

    # ---- memory

    def estimate_bytes(
        self, batch: int, dtype: torch.dtype = torch.float32, training: bool = True, device=None
    ) -> int:
        """Bytes a forward (+ backward when `training`) of `batch` samples needs, index tensors included,
        on any `device` (the native engine's `estimate_bytes` takes it: its path may depend on it)."""
        dim = 4**self.n_qubits
        item = dtype.itemsize * (1 if self.real else 2)
        local = sum(1 for kind, _ in self._stages if kind == "local")
        states = batch * (len(self._groups) * local + _EXTRA_STATES) if training else 3 * batch
        n_perms = sum(1 for kind, _ in self._stages if kind == "perm")
        return item * dim * states + 2 * 8 * dim * n_perms

    def _check_memory(self, batch: int, dtype: torch.dtype, training: bool) -> None:
        key = (batch, dtype, training, self.memory_budget)
        if key in self._fits:
            return
        check_budget(
            self.estimate_bytes(batch, dtype, training),
            self.memory_budget,
            "density-matrix",
            f"batch {batch} at {self.n_qubits} qubits",
            "use fewer qubits or samples",
            MEMORY_BUDGET_ENV,
            SimulationTooLargeError,
        )
        self._fits.add(key)

    # ---- shots

    def reseed(self, seed: int | None = None) -> None:
        """Restart the shot sampler from `seed` (default: noise.seed), so the next draws repeat."""
        self._generators.clear()
        self._seed = self.noise.seed if seed is None else seed

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    # ---- forward

    def _perm(self, pairs: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The CNOTs' permutation of the (4**n,) layout: ket bit 2w and bra bit 2w + 1 of each pair."""
        doubled = [(2 * c + s, 2 * t + s) for c, t in pairs for s in (0, 1)]
        perm = self._on(("perm", pairs), device, lambda: sv.cnot_permutation(2 * self.n_qubits, doubled))
        return perm, self._on(("inverse", pairs), device, lambda: torch.argsort(perm.cpu()))

    def probabilities(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, weights -> (B, 2**n) measurement probabilities, readout error included."""
        n = self.n_qubits
        batch, device, real_dtype, dtype = forward_setup(self, angles, weights)
        wflat = weights.to(device=device, dtype=real_dtype).reshape(-1)

        def on(key, make):
            return self._on(key, device, make)

        # product prefix: per-wire 4-vectors, the prefix's superoperators applied to |0><0| (first columns)
        if self._prefix is None:
            v = on(("e0", dtype), lambda: torch.eye(4, dtype=dtype)[0].expand(n, 4))
        else:
            v = self._prefix.matrices(angles, wflat, dtype, on)[..., 0]  # (B?, n, 4)
        state = sv.kron_chain(v[..., None])[..., 0].expand(batch, 4**n)  # (B, 4**n)

        # the stages; each group's blocks for every layer at once, (B?, L, 4**g, 4**g)
        layers, start = [], 0
        if self._n_layers:
            mats = self._slots.matrices(angles, wflat, dtype, on).unflatten(-3, (self._n_layers, n))
            groups = []
            for size in self._groups:
                groups.append(sv.kron_chain(mats[..., start : start + size, :, :]).unbind(-3))
                start += size
            layers = list(zip(*groups, strict=True))  # unbind, not indexing: one backward per group
        for kind, what in self._stages:
            if kind == "perm":
                state = sv.permute(state, *self._perm(what, device))
            else:
                state = sv.apply_blocks(state, list(layers[what]))

        probs = state.index_select(-1, on(("diag",), lambda: diagonal_index(n)))
        probs = probs.real if probs.is_complex() else probs
        if self.noise.readout:
            probs = readout_mix(probs, n, self.noise.readout)
        return probs

    def forward(self, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(B, n) angles, `config.weight_shape` weights -> (B, n) <Z_i>, dtype and device of `angles`."""
        probs = self.probabilities(angles, weights)
        n = self.n_qubits
        if n <= sv.SIGN_TABLE_MAX_QUBITS:
            table = self._on(("signs", probs.dtype), probs.device, lambda: sv.sign_table(n).to(probs.dtype))
            exact = sv.z_expvals_table(probs, table)
        else:
            exact = sv.z_expvals_halving(probs, n)
        shots = self.noise.shots
        if shots is None:
            return exact
        with torch.no_grad():
            if self.training:
                counts = sample_counts(probs, shots, self._generator(probs.device))
            else:
                counts = input_counts(angles, probs, shots, self._seed)
            estimate = sv.z_expvals_halving(counts / shots, n).to(exact.dtype)
        return exact + (estimate - exact).detach()

    def extra_repr(self) -> str:
        kind = "real" if self.real else "complex"
        return f"n_qubits={self.n_qubits}, {kind}, noise={self.noise.label()!r}, groups={self._groups}"
