"""The MPS engine against the native statevector engine, its truncation, and its limits.

Exact agreement (values and gradients w.r.t. angles and weights, 1e-9 in float64) over every
entangler, rotation and Hadamard option with widths 1..14 and depths 0..8; truncation error that falls
as max_bond grows, with finite, finite-difference-checked gradients; and a 40-qubit circuit, beyond the
statevector engines, checked through its light cone against a 12-qubit statevector.
"""

from __future__ import annotations

import functools
import itertools
import random
import re

import pytest
import torch

from qtl.quantum.circuit import ENTANGLERS, ROTATIONS, STATEVECTOR_MAX_QUBITS, CircuitConfig
from qtl.quantum.engines import make_engine
from qtl.quantum.engines.mps import BondTooLargeError, MPSEngine, exact_bond


def _cases(seed: int = 13) -> list[tuple[CircuitConfig, int]]:
    """(config, batch): every option at a random width 1..14 and depth 0..8, plus the extremes."""
    rng = random.Random(seed)
    cases = [
        (CircuitConfig(n_qubits=13, depth=8), 2),
        (CircuitConfig(n_qubits=14, depth=3, entangler="ring", rotation="rot"), 2),
        (CircuitConfig(n_qubits=12, depth=8, entangler="ring"), 2),
        (CircuitConfig(n_qubits=1, depth=5, entangler="ring", rotation="rot"), 4),
        (CircuitConfig(n_qubits=2, depth=0), 5),
    ]
    for entangler, rotation, hadamard in itertools.product(ENTANGLERS, ROTATIONS, (True, False)):
        for _ in range(2):
            config = CircuitConfig(
                n_qubits=rng.randint(1, 11),
                depth=rng.randint(0, 8),
                entangler=entangler,
                rotation=rotation,
                hadamard=hadamard,
            )
            cases.append((config, rng.randint(1, 6)))
    return cases


def _inputs(config: CircuitConfig, batch: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    angles = ((torch.rand(batch, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * torch.pi).to(
        dtype
    )
    weights = (torch.randn(config.weight_shape, generator=g, dtype=torch.float64) * 2).to(dtype)
    cotangent = (torch.rand(batch, config.n_qubits, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    return angles, weights, cotangent


def _run(engine, angles, weights, cotangent):
    """Outputs and the gradients w.r.t. angles and weights of <cotangent, outputs>."""
    angles, weights = angles.clone().requires_grad_(True), weights.clone().requires_grad_(True)
    out = engine(angles, weights)
    ga, gw = torch.autograd.grad((out * cotangent).sum(), (angles, weights), allow_unused=True)
    return out.detach(), ga, torch.zeros_like(weights) if gw is None else gw


@functools.cache
def _native(config: CircuitConfig, batch: int, seed: int):
    return _run(make_engine(config, "native"), *_inputs(config, batch, seed))


class TestExact:
    @pytest.mark.parametrize(
        ("config", "batch"), _cases(), ids=lambda v: str(v) if isinstance(v, int) else None
    )
    def test_agrees_with_native_float64(self, config, batch):
        """Values and both gradients agree with the statevector to 1e-9 when no bond is cut."""
        engine = make_engine(config, "mps")
        assert engine.exact and engine.max_bond is None
        got = _run(engine, *_inputs(config, batch, 7))
        for g, w in zip(got, _native(config, batch, 7), strict=True):
            assert g.dtype == torch.float64
            torch.testing.assert_close(g, w, atol=1e-9, rtol=0)
        assert float(engine.last_discarded.max()) == 0.0

    @pytest.mark.parametrize("rotation", ROTATIONS)
    def test_float32(self, rotation):
        """float32 in, float32 out, within 1e-5 of the float64 statevector."""
        config = CircuitConfig(n_qubits=9, depth=5, rotation=rotation)
        angles, weights, cot = _inputs(config, 4, 3)
        got = _run(make_engine(config, "mps"), angles.float(), weights.float(), cot.float())
        for g, w in zip(got, _native(config, 4, 3), strict=True):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g.double(), w, atol=1e-5, rtol=0)

    def test_wide_circuit_matches_its_light_cone(self):
        """40 qubits, depth 2: <Z_j> and its gradients far from the edges depend only on wires j-4..j+4,
        so a 12-qubit statevector of wires 14..25 (same CNOT parity) gives the same numbers."""
        wide, narrow = CircuitConfig(n_qubits=40, depth=2), CircuitConfig(n_qubits=12, depth=2)
        angles, weights, _ = _inputs(wide, 3, 11)
        cot = torch.zeros(3, 40, dtype=torch.float64)
        cot[:, 18:22] = torch.rand(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        got = _run(make_engine(wide, "mps"), angles, weights, cot)
        want = _run(make_engine(narrow, "native"), angles[:, 14:26], weights[:, 14:26], cot[:, 14:26])
        torch.testing.assert_close(got[0][:, 18:22], want[0][:, 4:8], atol=1e-9, rtol=0)
        torch.testing.assert_close(got[1][:, 14:26], want[1], atol=1e-9, rtol=0)
        torch.testing.assert_close(got[2][:, 14:26], want[2], atol=1e-9, rtol=0)
        assert got[1][:, :10].abs().max() < 1e-15  # outside the light cone: no gradient

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    @pytest.mark.parametrize(
        "config",
        [
            CircuitConfig(n_qubits=10, depth=4, rotation="rot"),  # site by site
            CircuitConfig(n_qubits=24, depth=5),  # the stacked chain, its strings in closed form
        ],
        ids=str,
    )
    def test_cuda_matches_cpu(self, config):
        cpu = _run(make_engine(config, "mps"), *_inputs(config, 3, 5))
        gpu = _run(make_engine(config, "mps"), *(t.cuda() for t in _inputs(config, 3, 5)))
        for g, w in zip(gpu, cpu, strict=True):
            assert g.is_cuda
            torch.testing.assert_close(g.cpu(), w, atol=1e-9, rtol=0)


class TestBonds:
    @pytest.mark.parametrize(
        ("config", "bond"),
        [
            (CircuitConfig(n_qubits=64, depth=6), 64),  # the brick wall: 2**depth at any width
            (CircuitConfig(n_qubits=64, depth=3, entangler="ring"), 64),  # ring crosses each cut twice
            (CircuitConfig(n_qubits=64, depth=6, entangler="none"), 1),  # a product state
            (CircuitConfig(n_qubits=6, depth=8), 8),  # never more than 2**(n // 2)
        ],
    )
    def test_exact_bond(self, config, bond):
        assert exact_bond(config) == bond == MPSEngine(config).bond

    def test_too_large_exact_is_refused_with_advice(self):
        config = CircuitConfig(n_qubits=64, depth=6, entangler="ring")
        with pytest.raises(BondTooLargeError, match="bond 4096.*set max_bond"):
            make_engine(config, "mps")
        engine = make_engine(config, "mps", max_bond=8)
        assert not engine.exact and engine.bond == 8

    @pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
    def test_bad_max_bond(self, bad):
        with pytest.raises(ValueError, match="max_bond"):
            MPSEngine(CircuitConfig(), max_bond=bad)

    def test_statevector_engines_refuse_wide_circuits(self):
        config = CircuitConfig(n_qubits=STATEVECTOR_MAX_QUBITS + 1, depth=1)
        for name in ("native", "default.qubit"):
            with pytest.raises(ValueError, match="2\\*\\*n amplitudes.*use engine 'mps'"):
                make_engine(config, name)
        assert make_engine(config, "mps").bond == 2

    def test_default_tensor_is_no_statevector_and_agrees_past_the_wall(self):
        """PennyLane's default.tensor (quimb's MPS) is not held to the statevector limit, and past it
        agrees with the MPS engine."""
        config = CircuitConfig(n_qubits=STATEVECTOR_MAX_QUBITS + 2, depth=2)
        angles, weights, _ = _inputs(config, 1, 3)
        want = make_engine(config, "mps")(angles, weights)
        got = make_engine(config, "default.tensor", diff_method="best")(angles, weights)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # quimb's SVD cutoff: ~2e-8 measured


class TestEmptyBatch:
    """A batch of no samples, at every entry point and on every path: the method's answer with no rows (in
    the dtype of the angles), `last_discarded` of no samples; its inputs are still checked. The simulation
    answers no sites, which no measurement can read: each entry point answers before measuring."""

    CASES = [
        (CircuitConfig(n_qubits=24, depth=4), None),  # a real chain: the stacked path, the last block peeled
        (CircuitConfig(n_qubits=6, depth=3), None),  # a real chain, site by site, peeled
        (CircuitConfig(n_qubits=5, depth=3, entangler="ring", rotation="rot"), None),  # complex, peeled
        (CircuitConfig(n_qubits=4, depth=2, reupload=True), None),  # no block peeled: Z on every wire
        (CircuitConfig(n_qubits=8, depth=4, rotation="rot"), 2),  # truncated
        (CircuitConfig(n_qubits=3, depth=0), None),  # a product state
        (CircuitConfig(n_qubits=1, depth=2), None),
    ]

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize(("config", "max_bond"), CASES, ids=lambda v: str(v) if v else None)
    def test_every_entry_point_answers_no_rows(self, config, max_bond, dtype):
        n, empty = config.n_qubits, torch.zeros(0, config.n_qubits, dtype=dtype)
        engine = MPSEngine(config, max_bond=max_bond)
        angles, weights, _ = _inputs(config, 3, 5, dtype)
        entries = {
            "forward": (engine, [(0, n)]),
            "parity": (engine.parity, [(0,)]),
            "expvals_and_parity": (engine.expvals_and_parity, [(0, n), (0,)]),
            "sites": (engine.sites, [(0, 1, 2, 1)] * n),  # the product state of no samples
        }
        for name, (call, shapes) in entries.items():
            engine(angles, weights)
            assert engine.last_discarded.shape == (3,)
            got = call(empty, weights)
            got = got if isinstance(got, (tuple, list)) else [got]
            assert [tuple(t.shape) for t in got] == shapes, name
            assert all(t.real.dtype == dtype for t in got), name  # sites: complex for complex circuits
            assert engine.last_discarded.shape == (0,), name

    @pytest.mark.parametrize("entry", ["forward", "parity", "expvals_and_parity", "sites"])
    def test_an_empty_batch_is_checked_as_any_other(self, entry):
        engine = MPSEngine(CircuitConfig(n_qubits=5, depth=3, entangler="ring", rotation="rot"))
        weights = _inputs(engine.config, 1, 5)[1]
        call = engine if entry == "forward" else getattr(engine, entry)
        for batch in (2, 0):
            wrong = re.escape(f"angles must have shape (batch, 5), got ({batch}, 4)")
            with pytest.raises(ValueError, match=wrong):
                call(torch.zeros(batch, 4, dtype=torch.float64), weights)
            with pytest.raises(ValueError, match="angles must be float32 or float64, got torch.float16"):
                call(torch.zeros(batch, 5, dtype=torch.float16), weights)
            with pytest.raises(ValueError, match="weights must have shape"):
                call(torch.zeros(batch, 5, dtype=torch.float64), weights[:1])


class TestTruncation:
    def test_error_falls_as_max_bond_grows(self):
        """Cutting bonds loses weight; the error and the discarded weight shrink to 0 as max_bond grows."""
        config = CircuitConfig(n_qubits=10, depth=6, rotation="rot")
        angles, weights, _ = _inputs(config, 4, 2)
        want = make_engine(config, "native")(angles, weights)
        errors, discarded = [], []
        for max_bond in (2, 4, 8, 16, 32):
            engine = make_engine(config, "mps", max_bond=max_bond)
            errors.append(float((engine(angles, weights) - want).abs().max()))
            discarded.append(float(engine.last_discarded.max()))
        assert errors == sorted(errors, reverse=True) and discarded == sorted(discarded, reverse=True)
        assert errors[0] > 0.1 and discarded[0] > 0.1
        assert errors[-1] < 1e-12 and discarded[-1] == 0  # 32 = 2**(10 // 2): exact

    def test_gradients_match_finite_differences(self):
        engine = make_engine(CircuitConfig(n_qubits=5, depth=3, rotation="rot"), "mps", max_bond=2)
        angles, weights, _ = _inputs(engine.config, 2, 4)
        assert not engine.exact
        assert torch.autograd.gradcheck(
            engine, (angles.requires_grad_(True), weights.requires_grad_(True)), eps=1e-6, atol=1e-6
        )

    def test_degenerate_singular_values_give_finite_gradients(self):
        """All-zero angles make many singular values equal (and zero): the gradient stays finite."""
        config = CircuitConfig(n_qubits=8, depth=4)
        engine = make_engine(config, "mps", max_bond=2)
        angles = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
        weights = torch.zeros(config.weight_shape, dtype=torch.float64, requires_grad=True)
        ga, gw = torch.autograd.grad(engine(angles, weights).sum(), (angles, weights))
        assert torch.isfinite(ga).all() and torch.isfinite(gw).all()


class TestInTheProduct:
    def test_wide_quantum_variant_trains_and_reloads(self, tmp_path):
        """fit() trains a 40-qubit dressed circuit on separable features; the checkpoint keeps engine and
        max_bond and reloads to the same predictions."""
        from qtl.config import ModelConfig, TrainConfig
        from qtl.data.features import FeatureSet
        from qtl.models.checkpoint import load_checkpoint
        from qtl.training.fit import fit

        g = torch.Generator().manual_seed(0)
        labels = torch.arange(48) % 2
        x = torch.randn(48, 512, generator=g) + 1.5 * labels[:, None].float()
        train = FeatureSet(x[:32], labels[:32], ["t"] * 32, ["a", "b"])
        val = FeatureSet(x[32:], labels[32:], ["v"] * 16, ["a", "b"])
        circuit = CircuitConfig(n_qubits=40, depth=2)
        mc = ModelConfig("quantum", pretrained=False, circuit=circuit, engine="mps", max_bond=2)
        path = tmp_path / "wide.pt"
        result = fit(
            mc, TrainConfig(epochs=3, batch_size=8, lr=0.05), features=(train, val), checkpoint_path=path
        )
        assert result.best["val_acc"] >= 0.8  # 16 validation samples, chance is 0.5
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
        loaded = load_checkpoint(path)
        assert loaded.model_config.engine == "mps" and loaded.model_config.max_bond == 2
        assert loaded.model.head.engine.bond == 2 and not loaded.model.head.engine.exact
        with torch.no_grad():
            torch.testing.assert_close(
                loaded.model.forward_features(val.features), result.model.forward_features(val.features)
            )


def _with_path(engine: MPSEngine, stacked: bool) -> MPSEngine:
    """The engine forced onto the stacked brick-wall simulation or the site-by-site one."""
    engine._stacked = dict.fromkeys(engine._stacked, stacked)
    return engine


class TestBrickwall:
    """Chains simulated as two stacks of sites (`_brickwall`) and, for real circuits, measured in closed
    form (`_mps_strings`): the same values and gradients as the statevector engine."""

    @pytest.mark.parametrize(
        "config",
        [
            CircuitConfig(n_qubits=9, depth=4),  # odd width: the last site is an unpaired control
            CircuitConfig(n_qubits=10, depth=5, hadamard=False),
            CircuitConfig(n_qubits=7, depth=3, reupload=True),  # no peeled block: <Z_i> measured directly
            CircuitConfig(n_qubits=8, depth=3, rotation="rot"),  # complex: stacks, then the site list
            CircuitConfig(n_qubits=3, depth=6),
            CircuitConfig(n_qubits=2, depth=3),  # no odd layer: the stacks are not square
        ],
        ids=str,
    )
    @pytest.mark.parametrize("stacked", [True, False])
    def test_both_paths_agree_with_native(self, config, stacked):
        engine = _with_path(MPSEngine(config), stacked)
        got = _run(engine, *_inputs(config, 3, 5))
        for g, w in zip(got, _native(config, 3, 5), strict=True):
            torch.testing.assert_close(g, w, atol=1e-10, rtol=0)

    def test_wide_chains_take_the_stacked_path(self):
        assert MPSEngine(CircuitConfig(64, 6))._stacked == {5: True, 6: True}
        assert not any(MPSEngine(CircuitConfig(6, 12))._stacked.values())  # bonds far past the caps
        assert not any(MPSEngine(CircuitConfig(20, 4, entangler="ring"))._stacked.values())

    def test_float32_step_matches_float64(self):
        config = CircuitConfig(n_qubits=24, depth=6)
        angles, weights, cot = _inputs(config, 4, 9)
        engine = MPSEngine(config)
        want = _run(engine, angles, weights, cot)
        got = _run(engine, angles.float(), weights.float(), cot.float())
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=0)


class TestClosedFormStrings:
    """`_mps_strings.expectations` against autograd through the site-by-site contraction (`_pauli_expvals`)
    on random chains, for strings of one to five sites with identities and both Paulis inside."""

    STRINGS = [
        (1, ((0, "Z"),)),
        (1, ((6, "X"),)),  # the last site
        (-1, ((2, "X"), (3, "Z"))),
        (1, ((1, "Z"), (2, "X"), (3, "X"))),
        (1, ((1, "Z"), (2, "X"), (3, "Z"))),  # shares its start and first carry with the one above
        (-1, ((0, "X"), (4, "Z"))),  # three identities carried through
        (1, ((2, "Z"), (3, "Z"), (4, "X"), (5, "Z"), (6, "X"))),
    ]

    def _chain(self, n: int, batch: int):
        from qtl.quantum.engines import _brickwall as brickwall

        engine = MPSEngine(CircuitConfig(n, 4))
        angles, weights, _ = _inputs(engine.config, batch, 3)
        v, mats = engine._matrices(angles, weights.reshape(-1), torch.float64)
        return brickwall.simulate(v, mats, engine._chain[:3])

    def test_values_and_gradients_match_autograd(self):
        from qtl.quantum.engines import _brickwall as brickwall
        from qtl.quantum.engines import _mps_strings as mps_strings
        from qtl.quantum.engines.mps import _pauli_expvals

        even, odd = (s.detach().requires_grad_(True) for s in self._chain(7, 3))
        plan = mps_strings.plan_strings(self.STRINGS, 7)
        left, right = len(plan.left.carries), len(plan.right.carries)
        assert left + right <= 8 and abs(left - right) <= 1  # the middle sites split between the sweeps
        cotangent = torch.randn(
            3, len(self.STRINGS), generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        got = mps_strings.expectations(even, odd, plan)
        got_grads = torch.autograd.grad((got * cotangent).sum(), (even, odd))
        want = _pauli_expvals(brickwall.sites((even, odd), 7), self.STRINGS)
        want_grads = torch.autograd.grad((want * cotangent).sum(), (even, odd))
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        for g, w in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(g, w, atol=1e-12, rtol=0)
        assert got.abs().max() > 0.05  # not a trivial state

    def test_buffers_are_kept_between_steps_and_come_back_without_a_backward(self):
        from qtl.quantum.engines import _mps_strings as mps_strings
        from qtl.quantum.engines._memory import BufferPool

        pool, mps_strings.POOL = mps_strings.POOL, BufferPool()
        try:
            even, odd = (s.detach().requires_grad_(True) for s in self._chain(7, 2))
            plan = mps_strings.plan_strings(self.STRINGS, 7)
            mps_strings.expectations(even, odd, plan).sum().backward()
            kept = mps_strings.POOL._bytes
            assert kept > 0  # every buffer of the forward and backward is back
            mps_strings.expectations(even, odd, plan).sum().backward()
            assert mps_strings.POOL._bytes == kept  # the second step took the same buffers, no new ones
            with torch.no_grad():
                mps_strings.expectations(even, odd, plan)
            assert mps_strings.POOL._bytes == kept  # a forward without backward gives them back at once
        finally:
            mps_strings.POOL = pool

    def test_complex_sites_are_refused(self):
        from qtl.quantum.engines import _mps_strings as mps_strings

        even, odd = self._chain(5, 1)
        plan = mps_strings.plan_strings([(1, ((0, "Z"),))], 5)
        with pytest.raises(ValueError, match="real"):
            mps_strings.expectations(even.to(torch.complex128), odd.to(torch.complex128), plan)


def test_buffer_pool_keeps_at_most_its_budget_giving_up_the_shapes_used_longest_ago():
    from qtl.quantum.engines._memory import BufferPool

    pool = BufferPool(max_bytes=3 * 4096 * 4)
    first = pool.lease()
    a, b = first.take((4096,), torch.float32, "cpu"), first.take((4096,), torch.float32, "cpu")
    first.release()
    second = pool.lease()
    assert {second.take((4096,), torch.float32, "cpu").data_ptr() for _ in range(2)} == {
        a.data_ptr(),
        b.data_ptr(),
    }
    second.take((2, 4096), torch.float64, "cpu")  # 64 KiB: past the budget once given back
    second.release()
    assert pool._bytes <= pool.max_bytes
    third = pool.lease()
    assert third.take((2, 4096), torch.float64, "cpu").shape == (2, 4096)
    assert pool._bytes == 0  # the float32 buffers went first, then the float64 one past the budget alone


class TestClosedFormInUse:
    """The stacked chain's hand-written backwards in the states a caller reaches."""

    CONFIG = CircuitConfig(n_qubits=24, depth=4)

    def test_a_second_backward_of_a_kept_graph_gives_the_same_gradients(self):
        angles, weights, cot = _inputs(self.CONFIG, 3, 2)
        weights.requires_grad_(True)
        out = (MPSEngine(self.CONFIG)(angles, weights) * cot).sum()
        first = torch.autograd.grad(out, weights, retain_graph=True)[0]
        second = torch.autograd.grad(out, weights)[0]  # the backward's buffers were reused meanwhile
        torch.testing.assert_close(first, second, atol=0, rtol=0)

    def test_second_derivatives_are_refused_not_wrong(self):
        angles, weights, cot = _inputs(self.CONFIG, 2, 4)
        weights.requires_grad_(True)
        out = (MPSEngine(self.CONFIG)(angles, weights) * cot).sum()
        with pytest.raises(RuntimeError, match="second derivatives"):
            torch.autograd.grad(out, weights, create_graph=True)

    def test_training_after_an_inference_mode_forward(self):
        from qtl.quantum.engines import _mps_strings as mps_strings
        from qtl.quantum.engines._memory import BufferPool

        engine = MPSEngine(self.CONFIG)
        angles, weights, cot = _inputs(self.CONFIG, 2, 6)
        pool, mps_strings.POOL = mps_strings.POOL, BufferPool()
        try:
            with torch.inference_mode():
                engine(angles, weights)  # every buffer is made here, then goes back to the pool
            got = _run(engine, angles, weights, cot)
        finally:
            mps_strings.POOL = pool
        want = _run(_with_path(MPSEngine(self.CONFIG), False), angles, weights, cot)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-10, rtol=0)
