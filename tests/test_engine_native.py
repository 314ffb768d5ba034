"""The native engine against an independent dense simulation of `gates(config)`.

The reference below builds every gate's full 2**n x 2**n unitary from Pauli matrices with complex128
Kronecker products and multiplies them onto |0...0>; it shares no code with the engine.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import REPO

import qtl.quantum.engines.native as native
from qtl.quantum.circuit import CircuitConfig, Gate, gates
from qtl.quantum.engines import _halves, make_engine
from qtl.quantum.engines import _statevector as sv
from qtl.quantum.engines import _wide as wide
from qtl.quantum.engines._memory import clear_constant_tables
from qtl.quantum.engines.native import NativeEngine, SimulationTooLargeError
from qtl.quantum.noise import NoiseConfig

C128 = torch.complex128
I2 = torch.eye(2, dtype=C128)
X = torch.tensor([[0, 1], [1, 0]], dtype=C128)
Y = torch.tensor([[0, -1j], [1j, 0]], dtype=C128)
Z = torch.tensor([[1, 0], [0, -1]], dtype=C128)
P0, P1 = (I2 + Z) / 2, (I2 - Z) / 2
DTYPES = (torch.float32, torch.float64)
CONSTANTS = {"X": X, "Y": Y, "Z": Z, "H": (X + Z) / math.sqrt(2)}


def kron_all(factors: list[torch.Tensor]) -> torch.Tensor:
    out = torch.ones(1, 1, dtype=C128)
    for f in factors:
        out = torch.kron(out, f)
    return out


@functools.cache
def on_wire(u: str, wire: int, n: int) -> torch.Tensor:
    """Dense (2**n, 2**n) matrix of the named constant one-qubit matrix `u` on `wire`."""
    return kron_all([CONSTANTS[u] if w == wire else I2 for w in range(n)])


@functools.cache
def dense_cnot(control: int, target: int, n: int) -> torch.Tensor:
    """|0><0|_c (x) I + |1><1|_c (x) X_t as a dense matrix."""
    u = kron_all([P0 if w == control else I2 for w in range(n)])
    return u + kron_all([P1 if w == control else X if w == target else I2 for w in range(n)])


def apply_gate(state: torch.Tensor, gate: Gate, n: int, angles, weights) -> torch.Tensor:
    """(B, 2**n) states after one gate, each gate a dense 2**n x 2**n unitary."""
    if gate.name == "CNOT":
        return state @ dense_cnot(*gate.wires, n).T
    if gate.name == "Hadamard":
        return state @ on_wire("H", gate.wires[0], n).T
    source, where = gate.param
    theta = (angles[:, where] if source == "input" else weights[where].expand(state.shape[0])).to(C128)
    # exp(-i theta P / 2) = cos(theta/2) I - i sin(theta/2) P, with P the dense Pauli on the wire
    pauli = on_wire(gate.name[1], gate.wires[0], n)
    return torch.cos(theta / 2)[:, None] * state - 1j * torch.sin(theta / 2)[:, None] * (state @ pauli.T)


def dense_expvals(gate_list, n: int, angles: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, n) <Z_i> of a gate list, by dense matrices in complex128 (differentiable)."""
    state = torch.zeros(angles.shape[0], 2**n, dtype=C128)
    state[:, 0] = 1
    for gate in gate_list:
        state = apply_gate(state, gate, n, angles, weights)
    zdiag = torch.stack([torch.diagonal(on_wire("Z", i, n)).real for i in range(n)], dim=1)  # (2**n, n)
    return (state.abs() ** 2) @ zdiag


def random_inputs(config: CircuitConfig, batch: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(batch, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * math.pi
    weights = torch.randn(config.weight_shape, generator=g, dtype=torch.float64) * 1.5
    return angles.to(dtype), weights.to(dtype)


def random_configs(count: int, seed: int = 2019) -> list[tuple[CircuitConfig, int]]:
    """Seeded configs over n 1..8, depth 0..6, batch 1..17 and every layer option, edges included."""
    rng = random.Random(seed)
    out = [(CircuitConfig(1, 0), 1), (CircuitConfig(1, 3, rotation="rot"), 5), (CircuitConfig(8, 6), 17)]
    for e in ("chain", "ring", "none"):
        for r in ("ry", "rot"):
            out.append((CircuitConfig(rng.randint(2, 8), rng.randint(0, 6), e, r, rng.random() < 0.8), 3))
    while len(out) < count:
        config = CircuitConfig(
            n_qubits=rng.randint(1, 8),
            depth=rng.randint(0, 6),
            entangler=rng.choice(["chain", "ring", "none"]),
            rotation=rng.choice(["ry", "rot"]),
            hadamard=rng.random() < 0.8,
        )
        out.append((config, rng.randint(1, 17)))
    return out


CONFIGS = random_configs(30)
REUPLOAD_CONFIGS = [
    (CircuitConfig(1, 2, reupload=True), 3),
    (CircuitConfig(3, 1, "ring", "rot", reupload=True), 4),
    (CircuitConfig(4, 3, reupload=True), 5),
    (CircuitConfig(5, 2, "none", hadamard=False, reupload=True), 2),
    (CircuitConfig(7, 4, "chain", "rot", reupload=True), 3),
]


def config_id(case) -> str:
    c, b = case
    ru = "-reupload" if c.reupload else ""
    return f"n{c.n_qubits}-d{c.depth}-{c.entangler}-{c.rotation}-{'H' if c.hadamard else 'noH'}{ru}-b{b}"


def grads(out: torch.Tensor, angles: torch.Tensor, weights: torch.Tensor, seed: int):
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad((out * cotangent.to(out)).sum(), (angles, weights), materialize_grads=True)


class TestAgainstDenseReference:
    @pytest.mark.parametrize("case", CONFIGS + REUPLOAD_CONFIGS, ids=config_id)
    def test_float64_outputs_and_gradients(self, case):
        """float64 outputs and input/weight gradients agree with the dense reference to 1e-10 (circuits
        that embed the inputs in every block too)."""
        config, batch = case
        angles, weights = random_inputs(config, batch, seed=batch)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        want = dense_expvals(gates(config), config.n_qubits, angles, weights)
        got = NativeEngine(config)(angles, weights)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
        for g, w in zip(grads(got, angles, weights, 1), grads(want, angles, weights, 1), strict=True):
            torch.testing.assert_close(g, w, atol=1e-10, rtol=0)

    @pytest.mark.parametrize("case", CONFIGS[::3], ids=config_id)
    def test_float32_outputs_and_gradients(self, case):
        """float32 outputs and gradients agree with the float64 dense reference to 1e-5."""
        config, batch = case
        angles, weights = random_inputs(config, batch, seed=batch + 1)
        a32 = angles.float().requires_grad_(True)
        w32 = weights.float().requires_grad_(True)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        want = dense_expvals(gates(config), config.n_qubits, angles, weights)
        got = NativeEngine(config)(a32, w32)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        for g, w in zip(grads(got, a32, w32, 2), grads(want, angles, weights, 2), strict=True):
            torch.testing.assert_close(g.double(), w, atol=1e-5, rtol=0)

    @pytest.mark.parametrize(
        "extra, message",
        [
            ([Gate("RY", (1,), ("input", 0))], "as many gates on every wire"),
            ([Gate("CNOT", (2, 0))], "single-qubit gates after the last CNOT run"),
            ([Gate("CNOT", (2, 0)), Gate("RY", (1,), ("weight", (0, 1, 1)))], "as many gates on every wire"),
            ([Gate("CNOT", (2, 0)), Gate("Hadamard", (0,))], "as many gates on every wire"),
        ],
    )
    def test_gate_lists_no_config_makes_are_refused_when_built(self, monkeypatch, extra, message):
        """The engine compiles only what `gates(config)` produces; anything else is a clear ValueError."""
        config = CircuitConfig(3, 2, "ring", "rot")
        monkeypatch.setattr(native, "gates", lambda c: gates(config) + extra)
        with pytest.raises(ValueError, match=message):
            NativeEngine(config)


class TestReuploading:
    def test_reuploading_changes_the_function_and_refuses_shared_matrices(self):
        """Re-uploading is a different circuit (other outputs), and no path may share one matrix across
        samples whose layers differ."""
        config = CircuitConfig(4, 3, reupload=True)
        angles, weights = random_inputs(config, 20, seed=5)  # batch 20 > 2**4: "auto" would pick matrix
        plain = NativeEngine(CircuitConfig(4, 3))(angles, weights)
        assert (NativeEngine(config)(angles, weights) - plain).abs().max() > 0.1
        assert NativeEngine(config).path_for(20) == "state"
        for path in ("matrix", "adjoint"):
            with pytest.raises(ValueError, match="re-uploading"):
                NativeEngine(config, path=path)


class TestExecutionPaths:
    @pytest.mark.parametrize("path", ["matrix", "adjoint"])
    @pytest.mark.parametrize("case", CONFIGS[::2], ids=config_id)
    def test_paths_agree_with_the_state_path(self, case, path):
        """The built matrix and the adjoint method give what autograd through the blocks gives."""
        config, batch = case
        angles, weights = random_inputs(config, batch, seed=7)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        by_state = NativeEngine(config, path="state")(angles, weights)
        by_other = NativeEngine(config, path=path)(angles, weights)
        torch.testing.assert_close(by_state, by_other, atol=1e-12, rtol=0)
        pairs = zip(grads(by_state, angles, weights, 5), grads(by_other, angles, weights, 5), strict=True)
        for a, b in pairs:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)

    def test_auto_picks_matrix_for_large_batches_and_adjoint_for_grouped_layers(self):
        """auto: matrix path when B > 2**n (small n); adjoint when layers are split; state otherwise."""
        small = NativeEngine(CircuitConfig(4, 6))
        assert small.path_for(16) == "state" and small.path_for(17) == "matrix"
        wide = NativeEngine(CircuitConfig(native.MATRIX_PATH_MAX_QUBITS + 1, 1))
        assert wide.path_for(10**6) == "adjoint"
        assert NativeEngine(CircuitConfig(8, 2)).path_for(8) == "adjoint"
        assert not NativeEngine(CircuitConfig(4, 0)).uses_matrix(64), "no trainable block, nothing to build"

    @pytest.mark.parametrize("n_qubits", [3, 5, 8])
    def test_grouped_layers_and_halving_reduction(self, monkeypatch, n_qubits):
        """Small wire groups, in-place and cyclic contractions (autograd and adjoint) and the table-free
        <Z> change neither outputs nor gradients."""
        config = CircuitConfig(n_qubits, 3, "ring", "rot")
        angles, weights = random_inputs(config, 4, seed=n_qubits)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        want = NativeEngine(config, path="state")(angles, weights)
        want_grads = grads(want, angles, weights, 6)
        monkeypatch.setattr(sv, "FULL_BLOCK_MAX_QUBITS", 1)
        monkeypatch.setattr(sv, "GROUP_MAX_QUBITS", 2)
        monkeypatch.setattr(sv, "SIGN_TABLE_MAX_QUBITS", 0)
        monkeypatch.setattr(sv, "ROTATE_MAX_QUBITS", 2)
        for path in ("state", "adjoint"):
            engine = NativeEngine(config, path=path)
            assert len(engine.layout.groups) > 1 and not engine.layout.sign_table
            got = engine(angles, weights)
            torch.testing.assert_close(got, want.detach(), atol=1e-12, rtol=0)
            for g, w in zip(grads(got, angles, weights, 6), want_grads, strict=True):
                torch.testing.assert_close(g, w, atol=1e-12, rtol=0)

    @pytest.mark.parametrize(
        "config",
        [
            CircuitConfig(1, 2, rotation="rot"),
            CircuitConfig(2, 2, "chain", "ry"),
            CircuitConfig(3, 1, "ring", "rot"),
            CircuitConfig(3, 2, "ring", "ry", hadamard=False),
        ],
        ids=lambda c: f"n{c.n_qubits}-d{c.depth}-{c.entangler}-{c.rotation}",
    )
    @pytest.mark.parametrize("path", ["state", "matrix", "adjoint"])
    def test_gradcheck(self, config, path):
        """torch.autograd.gradcheck in float64 w.r.t. angles and weights, on both paths."""
        angles, weights = random_inputs(config, 3, seed=11)
        engine = NativeEngine(config, path=path)
        assert torch.autograd.gradcheck(engine, (angles.requires_grad_(), weights.requires_grad_()))


class TestKernels:
    def test_kron_products_match_torch_kron(self):
        """kron_gather and kron_chain equal a chain of torch.kron, batched."""
        m = torch.randn(3, 5, 2, 2, dtype=torch.float64)
        want = torch.stack([kron_all([f.to(C128) for f in row]).real for row in m])
        torch.testing.assert_close(sv.kron_gather(m), want)
        torch.testing.assert_close(sv.kron_chain(m), want)

    def test_chain_product(self):
        """chain_product is the ordered matrix product."""
        m = torch.randn(7, 4, 4, dtype=torch.float64)
        want = m[0]
        for f in m[1:]:
            want = want @ f
        torch.testing.assert_close(sv.chain_product(m), want)

    def test_z_reductions_agree(self):
        """The sign-table matmul and the halving reduction give the same <Z_i>."""
        probs = torch.rand(5, 2**7, dtype=torch.float64)
        table = sv.sign_table(7)
        torch.testing.assert_close(sv.z_expvals_halving(probs, 7), sv.z_expvals_table(probs, table))

    @pytest.mark.parametrize("n", [1, 6, 7, 16, 24])
    def test_wire_groups_cover_all_wires_within_limits(self, n):
        """Groups sum to n, and only layers wider than FULL_BLOCK_MAX_QUBITS are split."""
        groups = sv.wire_groups(n)
        assert sum(groups) == n
        assert len(groups) == 1 if n <= sv.FULL_BLOCK_MAX_QUBITS else max(groups) <= sv.GROUP_MAX_QUBITS

    def test_cnot_permutation_is_the_cnot_matrix(self):
        """The permutation of a CNOT run equals the product of dense CNOT matrices."""
        n, pairs = 3, [(0, 1), (1, 2), (2, 0)]
        dense = torch.eye(2**n, dtype=C128)
        for c, t in pairs:
            dense = dense_cnot(c, t, n) @ dense
        psi = torch.randn(2, 2**n, dtype=torch.float64)
        want = (dense.real @ psi.T).T
        torch.testing.assert_close(psi[:, sv.cnot_permutation(n, pairs)], want)


class TestMemoryBudget:
    def test_refuses_a_batch_over_budget_naming_the_budget(self):
        """A forward whose estimate exceeds the budget raises SimulationTooLargeError before simulating."""
        config = CircuitConfig(10, 2)
        engine = NativeEngine(config, memory_budget=2**20)
        angles, weights = random_inputs(config, 1, seed=0, dtype=torch.float32)
        engine(angles, weights)
        assert engine.estimate_bytes(64) > engine.memory_budget
        with pytest.raises(SimulationTooLargeError, match=r"memory budget of 1\.0 MiB"):
            engine(angles.expand(64, -1), weights.requires_grad_())

    def test_estimate_grows_with_batch_and_precision_and_shrinks_without_grad(self):
        """The estimate scales with batch and dtype, and inference needs less than training."""
        engine = NativeEngine(CircuitConfig(12, 6, rotation="rot"))
        assert engine.estimate_bytes(2) > engine.estimate_bytes(1)
        assert engine.estimate_bytes(4, torch.float64) > engine.estimate_bytes(4, torch.float32)
        assert engine.estimate_bytes(4, training=False) < engine.estimate_bytes(4)

    def test_huge_circuits_are_refused_when_built(self):
        """A circuit whose single sample cannot fit the budget is refused by make_engine when building."""
        with pytest.raises(
            SimulationTooLargeError, match=r"batch 1 at 24 qubits, over its memory budget of 256\.0 MiB"
        ):
            make_engine(CircuitConfig(24, 100), "native", memory_budget=256 * 2**20)

    def test_adjoint_memory_does_not_grow_with_depth(self):
        """24 qubits, batch 8 needs about 4.3 GiB at any depth on the adjoint path (autograd: 13+ GiB)."""
        shallow, deep = (
            NativeEngine(CircuitConfig(24, 6), path="adjoint"),
            NativeEngine(CircuitConfig(24, 100), path="adjoint"),
        )
        assert shallow.path_for(8) == deep.path_for(8) == "adjoint"
        assert 4 * 2**30 < shallow.estimate_bytes(8) < 4.5 * 2**30
        assert deep.estimate_bytes(8) - shallow.estimate_bytes(8) < 2**20  # only the index tables grow
        assert NativeEngine(CircuitConfig(24, 6), path="state").estimate_bytes(8) > 13 * 2**30
        with pytest.raises(SimulationTooLargeError, match=r"about 4\.2 GiB for batch 8 at 24 qubits"):
            shallow(torch.zeros(8, 24), torch.zeros(6, 24, requires_grad=True))

    @pytest.mark.skipif(
        not os.access("/proc/self/clear_refs", os.W_OK), reason="peak memory from Linux's /proc, reset"
    )
    @pytest.mark.parametrize(
        ("n", "depth", "batch", "training", "most"),
        [(22, 6, 64, False, 2), (22, 6, 32, True, 2.25), (20, 9, 64, True, None)],
        ids=["halves-inference", "halves-training", "units-training"],
    )
    def test_the_estimate_bounds_the_measured_peak(self, n, depth, batch, training, most):
        """The peak resident memory of a forward (and backward) in a fresh process, over what it held
        before, is at most the estimate (`bench/memory_estimates.py`); on the halves path, whose copies
        were measured, the estimate is within 2x of it (2.25x training), not stale. The rows are the
        script's --quick. The larger of two processes' peaks: the 22-qubit training row's peak is 119-134
        MiB from one fresh process to the next (2026-12-07 and 08), so the estimate's 244 MiB lay at
        1.83-2.06x, and a bound of 2x failed now and then."""
        path = REPO / "bench" / "memory_estimates.py"
        spec = importlib.util.spec_from_file_location("memory_estimates", path)
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        m = max((bench.measure(n, depth, batch, training) for _ in range(2)), key=lambda r: r["peak"])
        assert m["path"] == ("units" if depth == 9 else "halves")
        assert m["peak"] <= m["estimate"]
        if most:
            assert m["estimate"] <= most * m["peak"]

    def test_environment_variable_sets_the_default_budget(self, monkeypatch):
        """QTL_NATIVE_MEMORY_BUDGET overrides the default; a bad value is a clear error."""
        monkeypatch.setenv(native.MEMORY_BUDGET_ENV, str(3 * 2**20))
        assert NativeEngine(CircuitConfig(4, 1)).memory_budget == 3 * 2**20
        monkeypatch.setenv(native.MEMORY_BUDGET_ENV, "lots")
        with pytest.raises(ValueError, match=native.MEMORY_BUDGET_ENV):
            NativeEngine(CircuitConfig(4, 1))

    def test_bad_budget_is_rejected(self):
        with pytest.raises(ValueError, match="memory_budget"):
            NativeEngine(CircuitConfig(4, 1), memory_budget=0)


class TestHalvesPath:
    """Wide chains with one trainable RY per wire: <Z> from the two halves' states (`_split`), a sum of
    products, never the 2**n state."""

    @pytest.mark.parametrize(
        ("n_qubits", "depth", "hadamard", "batch"),
        [
            (12, 4, True, 3),
            (13, 3, False, 5),  # 13, 17: unequal halves
            (16, 5, True, 4),
            (17, 2, True, 2),
            (20, 8, False, 2),  # 256 products, the 128 before the last crossing held (`SplitPlan.held`)
            (14, 6, True, 3),  # 14, 15: cut at wire 8, two past 2 (n // 4), where it takes fewer flops
            (15, 5, False, 2),
        ],
    )
    def test_outputs_and_gradients_equal_the_adjoint_paths(self, n_qubits, depth, hadamard, batch):
        config = CircuitConfig(n_qubits, depth, hadamard=hadamard)
        engine = NativeEngine(config)
        assert engine.path_for(batch) == "halves"
        self.assert_equals_the_adjoint_path(engine, config, batch, seed=n_qubits)

    @pytest.mark.parametrize(("n_qubits", "depth"), [(6, 2), (7, 3), (9, 4), (10, 5)])
    def test_halves_of_fewer_than_four_wires_are_not_taken(self, monkeypatch, n_qubits, depth):
        """With the widths lowered (as `bench/roofline.py --ranks` does), a cut leaving a half fewer than
        four wires is no split plan (`_halves` needs two per Kronecker factor); wider cuts run, and both
        give the adjoint path's outputs and gradients."""
        from qtl.quantum.engines import _split as split

        monkeypatch.setattr(native, "HALVES_MIN_QUBITS", 0)
        config = CircuitConfig(n_qubits, depth)
        engine = NativeEngine(config)
        assert (split.leading_plan(engine.plan, 128) is None) == (not split._cuts(n_qubits))
        self.assert_equals_the_adjoint_path(engine, config, 3, seed=n_qubits)

    @staticmethod
    def assert_equals_the_adjoint_path(engine: NativeEngine, config: CircuitConfig, batch: int, seed: int):
        """The engine's outputs and gradients in float64 are the adjoint path's, to 1e-12."""
        angles, weights = random_inputs(config, batch, seed=seed)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        want = NativeEngine(config, path="adjoint")(angles, weights)
        got = engine(angles, weights)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        for g, w in zip(grads(got, angles, weights, seed), grads(want, angles, weights, seed), strict=True):
            torch.testing.assert_close(g, w, atol=1e-12, rtol=0)

    def test_a_batch_in_parts_and_a_replaced_plan(self, monkeypatch):
        """A batch simulated in parts (`_split.part_size`: here 2, 2 and 1 samples) gives the adjoint
        path's outputs and gradients; a plan replaced after the engine was built is the one simulated;
        a 0-d input is the same clear error as on every path."""
        from qtl.quantum.engines import _split as split

        monkeypatch.setattr(split, "PART_SAMPLES", 2)
        built = []  # the halves' matrices: once a forward, not once a part (`_halves.shared_matrices`)
        matrices = _halves._matrices
        monkeypatch.setattr(_halves, "_matrices", lambda *a: built.append(1) or matrices(*a))
        config = CircuitConfig(14, 3)
        engine = NativeEngine(config)
        self.assert_equals_the_adjoint_path(engine, config, batch=5, seed=3)
        assert len(built) == 1  # three parts, one forward (its backward by autograd)
        angles, weights = random_inputs(config, 5, seed=3)
        kept = [g for g in gates(config) if g.wires != (5, 6)]  # no CNOT across the cut (wire 6)
        engine.plan = native.compile_plan(kept, 14, config.weight_shape)
        reference = NativeEngine(config, path="adjoint")
        reference.plan = engine.plan
        assert engine.halves.rank == 1
        torch.testing.assert_close(engine(angles, weights), reference(angles, weights), atol=1e-12, rtol=0)
        with pytest.raises(ValueError, match="angles must have shape"):
            engine(torch.tensor(0.0), weights)

    def test_24_qubits_agree_with_the_mps_engine_within_a_budget_the_state_exceeds(self):
        """At 24 qubits the exact MPS engine is the independent reference; 256 MiB is enough for the halves
        (a float64 state alone is 128 MiB per sample), in float64 and in float32."""
        config = CircuitConfig(24, 6, hadamard=False)
        engine = NativeEngine(config, memory_budget=256 * 2**20)
        angles, weights = random_inputs(config, 3, seed=24)
        want = make_engine(config, "mps")(angles, weights)
        assert want.abs().max() > 0.1
        torch.testing.assert_close(engine(angles, weights), want, atol=1e-12, rtol=0)
        got = engine(angles.float(), weights.float())
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        with pytest.raises(SimulationTooLargeError, match="batch 3 at 24 qubits"):
            engine.state(angles, weights)

    def test_auto_takes_it_only_where_it_can(self):
        """Chains of HALVES_MIN_QUBITS wires or more with one RY per wire, at most HALVES_MAX_RANK
        products, where the Gram matrices cost less than the state; asked for elsewhere, a clear error."""
        assert NativeEngine(CircuitConfig(native.HALVES_MIN_QUBITS, 4)).path_for(8) == "halves"
        assert NativeEngine(CircuitConfig(20, 7)).halves.rank == native.HALVES_MAX_RANK
        past = NativeEngine(CircuitConfig(20, 8)).halves  # the last crossing folded: 256 products, 128 held
        assert (past.rank, past.held) == (2 * native.HALVES_MAX_RANK, native.HALVES_MAX_RANK)
        assert NativeEngine(CircuitConfig(16, 4, reupload=True)).path_for(8) == "state"
        cannot = [
            CircuitConfig(native.HALVES_MIN_QUBITS - 1, 4),
            CircuitConfig(16, 4, "ring"),
            CircuitConfig(16, 4, rotation="rot"),
            CircuitConfig(20, 9),  # 512 products, 256 held
            CircuitConfig(18, 8),  # 256 products, 128 held, but the Gram matrices do not pay (`_gram_pays`)
            CircuitConfig(12, 6),  # 64 products of 64 states per half: the state costs less
        ]
        for config in cannot:
            assert NativeEngine(config).path_for(8) in ("adjoint", "units"), config
            with pytest.raises(ValueError, match="the 'halves' path takes chains of at least 12 qubits"):
                NativeEngine(config, path="halves")

    def test_state_is_still_the_state(self):
        """`state()` builds the 2**n state on a circuit whose forward takes the halves; <Z> on it is the
        forward's."""
        config = CircuitConfig(12, 4)
        engine = NativeEngine(config)
        angles, weights = random_inputs(config, 2, seed=1)
        state = engine.state(angles, weights)
        torch.testing.assert_close(state, NativeEngine(config, path="adjoint").state(angles, weights))
        expvals = sv.probabilities(state) @ sv.sign_table(12).to(state)
        torch.testing.assert_close(expvals, engine(angles, weights), atol=1e-12, rtol=0)

    def test_memory_estimate_is_the_halves(self):
        """24 qubits, batch 8: the halves' estimate is under 256 MiB, and a training forward runs within a
        budget the adjoint path's 4.2 GiB exceeds; `state()` is still checked against the state's."""
        engine = NativeEngine(CircuitConfig(24, 6), memory_budget=2**30)
        assert engine.estimate_bytes(8) < 2**28 < 2**32 < engine.estimate_bytes(8, state=True)
        assert engine.estimate_bytes(8, training=False) < engine.estimate_bytes(8)
        weights = torch.zeros(6, 24, requires_grad=True)
        engine(torch.zeros(8, 24), weights).sum().backward()
        assert weights.grad.shape == (6, 24)
        with pytest.raises(SimulationTooLargeError, match="batch 8 at 24 qubits"):
            engine.state(torch.zeros(8, 24), weights)


class TestUnitsPath:
    """Wide circuits the halves cannot take, on CPU from UNITS_MIN_QUBITS wires: a chunk of samples at a
    time through the closed-form step's units, a chain's leading layers on its halves (`_wide.expvals`);
    the backward runs each chunk's forward again, then the units' transposes in reverse."""

    @pytest.mark.parametrize(
        ("config", "path", "halves"),
        [
            (CircuitConfig(18, 3, "ring"), "auto", False),  # units only
            (CircuitConfig(16, 8), "units", True),  # 7 layers on the halves (128 products), then units
            (CircuitConfig(13, 2, "ring", hadamard=False), "units", False),  # odd width, alternating passes
            (CircuitConfig(14, 8), "units", True),  # 6 layers on halves of 8 and 6 wires, then units
        ],
    )
    def test_outputs_equal_the_adjoint_paths_in_chunks_parts_and_workers(
        self, monkeypatch, config, path, halves
    ):
        """Outputs and gradients in float64 to 1e-12, with the batch in chunks of 2 samples shared by two
        workers, and in parts of 3 samples on the halves."""
        from qtl.quantum.engines import _split as split

        monkeypatch.setattr(wide, "CHUNK_AMPLITUDES", 2 * 2**config.n_qubits)
        monkeypatch.setattr(split, "PART_SAMPLES", 3)
        workers = []  # per forward of the units: the workers its chunks were shared among
        share = wide.share_chunks
        monkeypatch.setattr(wide, "share_chunks", lambda *a: workers.append(len(a[0])) or share(*a))
        built = []  # the halves' matrices: once a forward and once a backward, not once a part
        matrices = _halves._matrices
        monkeypatch.setattr(_halves, "_matrices", lambda *a: built.append(1) or matrices(*a))
        engine = NativeEngine(config, path=path)
        assert engine.path_for(7, training=False) == "units"
        assert (wide.split_plan(engine.plan) is not None) == halves
        angles, weights = random_inputs(config, 7, seed=config.n_qubits)
        want = NativeEngine(config, path="adjoint")(angles, weights)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            with torch.inference_mode():
                got = engine(angles, weights)
        finally:
            torch.set_num_threads(threads)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        assert workers == ([2, 2, 2] if halves else [2])  # parts of 3, 3 and 1 samples on the halves
        assert engine.path_for(7) == "units"
        del workers[:]
        torch.set_num_threads(2)
        try:
            TestHalvesPath.assert_equals_the_adjoint_path(engine, config, batch=7, seed=1)
        finally:
            torch.set_num_threads(threads)
        assert workers == ([2, 2, 2] * 2 if halves else [2] * 2), "forward, then the backward's chunks"
        assert len(built) == (3 if halves else 0)  # the inference forward, then a forward and its backward

    def test_auto_takes_it_only_where_it_can(self):
        """On CPU, from UNITS_MIN_QUBITS wires, for circuits the units run (one RY per wire and layer, a
        chain or a ring) and the halves cannot; asked for elsewhere, a clear error; a plan they cannot run,
        replaced after the engine was built, builds the state."""
        n, batch = native.UNITS_MIN_QUBITS, native.UNITS_MIN_BATCH
        engine = NativeEngine(CircuitConfig(n, 4, "ring"))
        assert engine.path_for(1, training=False) == engine.path_for(1) == "units"
        assert engine.path_for(8, device=torch.device("cuda")) == "adjoint"
        narrower = NativeEngine(CircuitConfig(n - 2, 4, "ring"))  # from UNITS_MIN_BATCH samples
        assert narrower.path_for(batch - 1) == "adjoint" and narrower.path_for(batch) == "units"
        assert NativeEngine(CircuitConfig(n - 3, 4, "ring")).path_for(4 * batch) == "adjoint"
        assert NativeEngine(CircuitConfig(n, 6)).path_for(8, training=False) == "halves"  # first where it can
        chain = NativeEngine(CircuitConfig(20, 8), path="units").plan  # Gram route past the cap: not here
        tables = wide.units_tables(chain, torch.device("cpu"), torch.float32)
        assert tables.split[0].rank == wide.SPLIT_MAX_RANK
        for config in (CircuitConfig(n - 1, 4, "ring"), CircuitConfig(n, 4, reupload=True)):
            assert NativeEngine(config).path_for(8, training=False) in ("adjoint", "state"), config
        for config in (CircuitConfig(n, 4, rotation="rot"), CircuitConfig(n, 0)):
            assert NativeEngine(config).path_for(8, training=False) != "units", config
            with pytest.raises(ValueError, match="the 'units' path takes real circuits"):
                NativeEngine(config, path="units")
        config = CircuitConfig(n, 2, "ring")
        engine, reference = NativeEngine(config, path="units"), NativeEngine(config, path="adjoint")
        gates_ = [g if g.wires != (0, 1) else Gate("CNOT", (0, 2)) for g in gates(config)]  # not a ring
        engine.plan = reference.plan = native.compile_plan(gates_, n, config.weight_shape)
        assert engine.path_for(2, training=False) == "adjoint"
        angles, weights = random_inputs(config, 2, seed=2)
        torch.testing.assert_close(engine(angles, weights), reference(angles, weights), atol=1e-12, rtol=0)

    def test_memory_is_chunks_not_the_batchs_state(self):
        """20 qubits at depth 9 (no Gram route): an inference forward of 512 samples needs under 512 MiB
        where the state's takes gigabytes, so evaluation on CPU runs in batches of 512 (on another device,
        where the state is built, in fewer); an empty batch is empty on every path."""
        from qtl.data.feed import eval_batch_size
        from qtl.models.heads import DressedQuantumCircuit

        config = CircuitConfig(20, 9)
        engine = NativeEngine(config)
        assert engine.path_for(512, training=False) == "units"
        assert (
            engine.estimate_bytes(512, training=False)
            < 2**29
            < 2**32
            < engine.estimate_bytes(512, state=True)
        )
        head = DressedQuantumCircuit(4, 2, config)
        assert eval_batch_size(head) == 512
        assert eval_batch_size(head.to("meta")) < 512
        assert engine(torch.zeros(0, 20), torch.zeros(9, 20)).shape == (0, 20)
        for config, path in (
            (CircuitConfig(18, 2, "ring"), "auto"),
            (CircuitConfig(16, 2, "ring"), "auto"),
            (CircuitConfig(8, 3, "ring", "rot"), "auto"),
            (CircuitConfig(14, 8), "units"),  # the halves' layers, then units: its backward failed
        ):
            weights = torch.zeros(config.weight_shape, requires_grad=True)
            out = NativeEngine(config, path=path)(torch.zeros(0, config.n_qubits), weights)
            assert out.shape == (0, config.n_qubits)
            if out.requires_grad:  # the units path: a gradient of zeros
                out.sum().backward()
                assert torch.equal(weights.grad, torch.zeros_like(weights))


class TestContract:
    @pytest.mark.parametrize(
        ("config", "options"),
        [
            (CircuitConfig(4, 2), {}),  # one block
            (CircuitConfig(8, 3, "ring", "rot"), {}),  # wire groups, the adjoint path
            (CircuitConfig(16, 4), {}),  # the halves path
            (CircuitConfig(18, 2, "ring"), {}),  # the units path
            (CircuitConfig(3, 2), {"noise": NoiseConfig(depolarizing=0.01)}),  # density matrices
        ],
        ids=["block", "adjoint", "halves", "units", "density"],
    )
    def test_a_forward_in_inference_mode_leaves_the_engine_trainable(self, config, options):
        """The tables a forward builds and keeps are built outside `torch.inference_mode`, so the first
        forward may be a prediction under it and the next a training step (an inference tensor cannot be
        saved for backward)."""
        clear_constant_tables()
        engine = make_engine(config, "native", **options)
        angles, weights = random_inputs(config, 2, seed=1, dtype=torch.float32)
        with torch.inference_mode():
            want = engine(angles, weights)
        weights.requires_grad_(True)
        got = engine(angles, weights)
        got.sum().backward()
        torch.testing.assert_close(got.detach(), want)
        assert weights.grad is not None and weights.grad.abs().sum() > 0

    @pytest.mark.parametrize(
        ("config", "path"),
        [(CircuitConfig(8, 3, "ring", "rot"), "adjoint"), (CircuitConfig(13, 2, "ring"), "units")],
    )
    def test_a_gradient_of_the_angles_alone(self, config, path):
        """Weights that need no gradient (a frozen circuit) and angles that do: the state path's gradient."""
        angles, weights = random_inputs(config, 3, seed=4)
        angles.requires_grad_(True)
        seed = torch.randn(3, config.n_qubits, dtype=angles.dtype, generator=torch.Generator().manual_seed(4))
        got = torch.autograd.grad((NativeEngine(config, path=path)(angles, weights) * seed).sum(), angles)
        want = torch.autograd.grad((NativeEngine(config, path="state")(angles, weights) * seed).sum(), angles)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("rotation", ["ry", "rot"])
    def test_dtype_and_shape_preserved(self, dtype, rotation):
        """Outputs are (B, n) real tensors in the dtype of the angles, even with float32 weights."""
        config = CircuitConfig(3, 2, rotation=rotation)
        angles, weights = random_inputs(config, 5, seed=1, dtype=dtype)
        out = NativeEngine(config)(angles, weights.float())
        assert out.shape == (5, 3) and out.dtype == dtype and out.device == angles.device

    def test_real_arithmetic_exactly_when_the_circuit_is_real(self):
        """H/RY/CNOT circuits run in real arithmetic, circuits with RZ in complex arithmetic."""
        assert NativeEngine(CircuitConfig(3, 2, rotation="ry")).real
        assert not NativeEngine(CircuitConfig(3, 2, rotation="rot")).real

    def test_forward_writes_nothing_and_concurrent_threads_agree(self):
        """A forward leaves the engine as it was; threads sharing one engine get the serial results."""
        config = CircuitConfig(7, 2, "ring", "rot")
        engine = NativeEngine(config)
        before = dict(vars(engine))
        inputs = [random_inputs(config, b, seed=b, dtype=dt) for b in (1, 3, 200) for dt in DTYPES]
        serial = [engine(a, w) for a, w in inputs]
        with ThreadPoolExecutor(max_workers=6) as pool:
            parallel = list(pool.map(lambda aw: engine(*aw), inputs * 3))
        for got, want in zip(parallel, serial * 3, strict=True):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
        assert vars(engine).keys() == before.keys()
        assert all(vars(engine)[k] is v for k, v in before.items())

    def test_holds_no_parameters(self):
        assert list(NativeEngine(CircuitConfig(4, 2)).parameters()) == []

    @pytest.mark.parametrize(
        "angles, weights, message",
        [
            (torch.zeros(2, 3), torch.zeros(2, 4), "angles must have shape"),
            (torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4), "float32 or float64"),
            (torch.zeros(2, 4), torch.zeros(4, 2), "weights must have shape"),
        ],
    )
    def test_bad_inputs_are_clear_errors(self, angles, weights, message):
        with pytest.raises(ValueError, match=message):
            NativeEngine(CircuitConfig(4, 2))(angles, weights)

    def test_unsupported_gate_is_refused_when_built(self, monkeypatch):
        monkeypatch.setattr(native, "gates", lambda c: [Gate("Toffoli", (0, 1, 2))])
        with pytest.raises(ValueError, match="cannot simulate gate 'Toffoli'"):
            NativeEngine(CircuitConfig(3, 1))

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    @pytest.mark.parametrize("rotation", ["ry", "rot"])
    @pytest.mark.parametrize(
        "n_qubits, batch, entangler", [(4, 4, "ring"), (4, 64, "ring"), (9, 8, "ring"), (16, 8, "chain")]
    )
    def test_cuda_matches_cpu(self, rotation, n_qubits, batch, entangler):
        """On CUDA, outputs and gradients stay on the device and match the CPU engine (16 qubits: the
        halves path with "ry")."""
        config = CircuitConfig(n_qubits, 3, entangler, rotation)
        engine = NativeEngine(config)
        angles, weights = random_inputs(config, batch, seed=2)
        a_gpu = angles.cuda().requires_grad_(True)
        w_gpu = weights.cuda().requires_grad_(True)
        angles.requires_grad_(True)
        weights.requires_grad_(True)
        out = engine(a_gpu, w_gpu)
        assert out.device.type == "cuda"
        want = engine(angles, weights)
        torch.testing.assert_close(out.cpu(), want, atol=1e-10, rtol=0)
        for g, w in zip(grads(out, a_gpu, w_gpu, 3), grads(want, angles, weights, 3), strict=True):
            torch.testing.assert_close(g.cpu(), w, atol=1e-10, rtol=0)
