"""Noise: the density-matrix engine against PennyLane default.mixed, and shot sampling by statistics.

default.mixed runs the same `noisy_ops(config, noise)` list (channels inserted the same way, readout
as a BitFlip per wire) with backprop; values and gradients with respect to angles and weights must agree
to 1e-10 in float64 over seeded random configs and noise strengths.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import pytest
import torch
from scipy import stats

from qtl.quantum.circuit import ENTANGLERS, ROTATIONS, CircuitConfig, Gate
from qtl.quantum.engines import make_engine
from qtl.quantum.engines.density import DensityMatrixEngine, sample_counts
from qtl.quantum.engines.native import NativeEngine, SimulationTooLargeError
from qtl.quantum.noise import Channel, NoiseConfig, depolarizing, noisy_ops


@dataclass(frozen=True)
class Case:
    config: CircuitConfig
    noise: NoiseConfig
    batch: int
    seed: int

    def __str__(self) -> str:
        c = self.config
        return f"n{c.n_qubits}-d{c.depth}-{c.entangler}-{c.rotation}-h{int(c.hadamard)}-b{self.batch}"


def _cases(count: int = 10, seed: int = 11) -> list[Case]:
    """Seeded random circuits (1-6 qubits, depth 0-3, every option) and noise (some strengths zero)."""
    rng = random.Random(seed)

    def strength() -> float:
        return 0.0 if rng.random() < 0.3 else rng.uniform(0.0, 0.2)

    cases = [Case(CircuitConfig(n_qubits=4, depth=2), depolarizing(0.05, readout=0.02), 2, 0)]
    for i in range(count):
        config = CircuitConfig(
            n_qubits=rng.randint(1, 6),
            depth=rng.randint(0, 3),
            entangler=rng.choice(ENTANGLERS),
            rotation=rng.choice(ROTATIONS),
            hadamard=rng.random() < 0.7,
        )
        noise = NoiseConfig(*(strength() for _ in range(7)))
        cases.append(Case(config, noise, rng.randint(1, 5), i + 1))
    return cases


CASES = _cases()


def _run(engine, case: Case, dtype=torch.float64):
    """(<Z>, d/d angles, d/d weights) of a fixed weighted sum of the outputs."""
    gen = torch.Generator().manual_seed(case.seed)
    n = case.config.n_qubits
    x = (torch.rand(case.batch, n, generator=gen, dtype=torch.float64) * 3 - 1.5).to(dtype).requires_grad_()
    w = (torch.rand(case.config.weight_shape, generator=gen, dtype=torch.float64) * 6 - 3).to(dtype)
    w.requires_grad_()
    out = engine(x, w)
    (out * torch.linspace(-1, 2, n, dtype=dtype)).sum().backward()
    return out.detach(), x.grad, w.grad if w.grad is not None else torch.zeros_like(w)  # depth 0: no weights


@pytest.fixture
def float64_default():
    """PennyLane's RZ of a 0-dim torch angle promotes to torch's default complex dtype: make it complex128."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class TestAgainstDefaultMixed:
    @pytest.mark.parametrize("case", CASES, ids=str)
    def test_outputs_and_gradients(self, case, float64_default):
        """Values and both gradients equal default.mixed's to 1e-10 in float64."""
        ref = _run(make_engine(case.config, "default.mixed", diff_method="backprop", noise=case.noise), case)
        got = _run(DensityMatrixEngine(case.config, case.noise), case)
        for a, b in zip(ref, got, strict=True):
            assert b.dtype == torch.float64
            assert torch.allclose(a, b, atol=1e-10, rtol=0), (a - b).abs().max()

    def test_float32_close(self):
        """float32 runs in float32 and stays within 1e-5 of float64."""
        case = CASES[0]
        engine = DensityMatrixEngine(case.config, case.noise)
        single, double = _run(engine, case, torch.float32), _run(engine, case)
        assert single[0].dtype == torch.float32
        for a, b in zip(single, double, strict=True):
            assert torch.allclose(a.double(), b, atol=1e-5)


class TestEngine:
    @pytest.mark.parametrize("case", CASES[:6], ids=str)
    def test_ideal_equals_statevector(self, case):
        """Without noise, the density-matrix path gives the statevector engine's values and gradients."""
        ideal = replace(case, noise=NoiseConfig())
        pure, mixed = _run(NativeEngine(case.config), ideal), _run(DensityMatrixEngine(case.config), ideal)
        for a, b in zip(pure, mixed, strict=True):
            assert torch.allclose(a, b, atol=1e-12)

    def test_make_engine_picks_density_for_noise(self):
        config = CircuitConfig(n_qubits=2, depth=1)
        assert isinstance(make_engine(config, noise=depolarizing(0.01)), DensityMatrixEngine)
        assert isinstance(make_engine(config, noise=NoiseConfig()), NativeEngine)

    def test_depolarizing_shrinks_expectations(self):
        """Full depolarizing noise leaves the maximally mixed state: every <Z_i> is 0."""
        config = CircuitConfig(n_qubits=3, depth=2)
        x, w = torch.rand(2, 3, dtype=torch.float64), torch.rand(config.weight_shape, dtype=torch.float64)
        out = DensityMatrixEngine(config, depolarizing(0.75))(x, w)
        assert torch.allclose(out, torch.zeros_like(out), atol=1e-12)

    def test_memory_budget_refuses(self):
        config = CircuitConfig(n_qubits=8, depth=2)
        with pytest.raises(SimulationTooLargeError, match="density-matrix engine needs about"):
            DensityMatrixEngine(config, depolarizing(0.01), memory_budget=2**20)


class TestNoiseConfig:
    def test_insertion_rule(self):
        """Channels follow each gate: one-qubit strengths after H/RY, two-qubit ones on each CNOT wire."""
        ops = noisy_ops(
            CircuitConfig(n_qubits=2, depth=1), NoiseConfig(depolarizing=0.1, phase_damping_2q=0.2)
        )
        assert ops == [
            Gate("Hadamard", (0,)),
            Channel("DepolarizingChannel", 0, 0.1),
            Gate("Hadamard", (1,)),
            Channel("DepolarizingChannel", 1, 0.1),
            Gate("RY", (0,), ("input", 0)),
            Channel("DepolarizingChannel", 0, 0.1),
            Gate("RY", (1,), ("input", 1)),
            Channel("DepolarizingChannel", 1, 0.1),
            Gate("CNOT", (0, 1)),
            Channel("PhaseDamping", 0, 0.2),
            Channel("PhaseDamping", 1, 0.2),
            Gate("RY", (0,), ("weight", (0, 0))),
            Channel("DepolarizingChannel", 0, 0.1),
            Gate("RY", (1,), ("weight", (0, 1))),
            Channel("DepolarizingChannel", 1, 0.1),
        ]

    def test_round_trip_and_validation(self):
        noise = NoiseConfig(depolarizing=0.01, readout=0.02, shots=100, seed=3)
        assert NoiseConfig.from_dict(noise.to_dict()) == noise
        assert NoiseConfig.from_dict(None).is_ideal
        assert noise.label() == "dep 0.01/0, readout 0.02, 100 shots"
        with pytest.raises(ValueError, match="probability"):
            NoiseConfig(depolarizing=1.5)
        with pytest.raises(ValueError, match="shots"):
            NoiseConfig(shots=0)
        with pytest.raises(ValueError, match="unknown noise"):
            NoiseConfig.from_dict({"depolarising": 0.1})


def _exact_and_probs(config, noise, x, w):
    engine = DensityMatrixEngine(config, replace(noise, shots=None))
    return engine(x, w), engine.probabilities(x, w)


class TestShots:
    """Shot estimates by statistics, with a fixed seed; tolerances are stated in standard errors."""

    CONFIG = CircuitConfig(n_qubits=3, depth=2)
    NOISE = NoiseConfig(depolarizing=0.02, amplitude_damping_2q=0.05, readout=0.03, shots=50, seed=7)

    def _draws(self, reps: int):
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(4, 3, generator=gen, dtype=torch.float64) * 3 - 1.5
        w = torch.rand(self.CONFIG.weight_shape, generator=gen, dtype=torch.float64) * 6 - 3
        exact, probs = _exact_and_probs(self.CONFIG, self.NOISE, x, w)
        shots = DensityMatrixEngine(self.CONFIG, self.NOISE)(x.repeat(reps, 1), w).reshape(reps, 4, 3)
        return exact, probs, shots

    def test_unbiased_with_binomial_variance(self):
        """Mean of 2000 estimates within 4 standard errors of the exact <Z> (12 entries: a false alarm
        has probability < 1e-3); their variance within 20% of (1 - <Z>^2) / shots (about 6 standard errors
        of a variance estimated from 2000 draws)."""
        reps, n_shots = 2000, self.NOISE.shots
        exact, _, shots = self._draws(reps)
        var = (1 - exact**2) / n_shots
        assert ((shots.mean(0) - exact).abs() <= 4 * (var / reps).sqrt()).all()
        assert torch.allclose(shots.var(0), var, rtol=0.2)
        assert (shots * n_shots).sub((shots * n_shots).round()).abs().max() < 1e-9  # whole counts

    def test_joint_covariance_as_shots(self):
        """Estimates of different qubits are correlated as in real shots: Cov = (<Z_i Z_j> - <Z_i><Z_j>) / N
        (within 5 / sqrt(reps) in correlation)."""
        reps, n_shots = 2000, self.NOISE.shots
        exact, probs, shots = self._draws(reps)
        j = torch.arange(8)[:, None]
        signs = (1 - 2 * ((j >> torch.tensor([2, 1, 0])) & 1)).double()  # (8, 3)
        zz = torch.einsum("bk,ki,kj->bij", probs, signs, signs)  # (4, 3, 3) <Z_i Z_j>
        cov = (zz - exact[:, :, None] * exact[:, None, :]) / n_shots
        sd = cov.diagonal(dim1=1, dim2=2).sqrt()
        centred = shots - shots.mean(0)
        sample = torch.einsum("rbi,rbj->bij", centred, centred) / (reps - 1)
        corr = lambda c: c / (sd[:, :, None] * sd[:, None, :])  # noqa: E731
        assert (corr(sample) - corr(cov)).abs().max() < 5 / math.sqrt(reps)

    def test_eval_mode_draws_each_inputs_shots_from_the_input(self):
        """A model in eval mode (evaluated, served) scores an input the same on every call and in any batch
        or order, its shots seeded by noise.seed and the input; different inputs and seeds draw apart, and
        training mode draws new shots every call."""
        gen = torch.Generator().manual_seed(2)
        x = torch.rand(6, 3, generator=gen) * 3 - 1.5
        w = torch.rand(self.CONFIG.weight_shape, generator=gen) * 6 - 3
        engine = DensityMatrixEngine(self.CONFIG, self.NOISE).eval()
        first = engine(x, w)
        assert torch.equal(engine(x, w), first)
        order = torch.tensor([4, 1, 5])
        assert torch.equal(engine(x[order], w), first[order])
        assert torch.equal(engine(x[2:3], w), first[2:3])
        exact = _exact_and_probs(self.CONFIG, self.NOISE, x, w)[0]
        assert (first - exact).abs().max() > 1e-3  # shot noise is there
        assert (first - exact).abs().max() < 6 / math.sqrt(self.NOISE.shots)
        other = DensityMatrixEngine(self.CONFIG, replace(self.NOISE, seed=8)).eval()
        assert not torch.equal(other(x, w), first)
        twins = engine(x[:1].repeat(2, 1), w)
        assert torch.equal(twins[0], twins[1]) and torch.equal(twins[:1], first[:1])
        nudged = x + 1e-6 * torch.randn(x.shape, generator=gen)  # another batch's rounding: the same draw
        assert (engine(nudged, w) - first).abs().max() < 1e-9
        moved = x + 0.01  # another input: another draw
        exact_moved = _exact_and_probs(self.CONFIG, self.NOISE, moved, w)[0]
        assert not torch.allclose(engine(moved, w) - exact_moved, first - exact, atol=1e-3)
        engine.train()
        assert not torch.equal(engine(x, w), engine(x, w))

    def test_eval_mode_draws_are_binomial_across_inputs(self):
        """2000 different inputs draw independent shots in eval mode: their errors over the exact <Z>,
        in standard errors sqrt((1 - <Z>^2) / shots), have mean 0 and variance 1 per qubit (within 4 and
        about 5 standard errors) and no correlation between inputs (the shots of a seed shared by all
        would be)."""
        reps, n_shots = 2000, self.NOISE.shots
        x = torch.rand(reps, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3 - 1.5
        w = torch.linspace(-2, 2, math.prod(self.CONFIG.weight_shape), dtype=torch.float64)
        w = w.reshape(self.CONFIG.weight_shape)
        draws = DensityMatrixEngine(self.CONFIG, self.NOISE).eval()(x, w)
        exact = _exact_and_probs(self.CONFIG, self.NOISE, x, w)[0]
        z = (draws - exact) / ((1 - exact**2) / n_shots).sqrt()  # (2000, 3)
        assert (z.mean(0).abs() < 4 / math.sqrt(reps)).all() and ((z.var(0) - 1).abs() < 0.15).all()
        pairs = torch.corrcoef(torch.stack([z[: reps // 2].flatten(), z[reps // 2 :].flatten()]))[0, 1]
        assert pairs.abs() < 4 / math.sqrt(z.numel() / 2)  # two inputs' draws are independent

    def test_counts_are_multinomial(self):
        """Counts of 4 shots over 4 outcomes: a chi-square test against the multinomial pmf (p > 0.001)."""
        probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64).expand(20000, 4)
        counts = sample_counts(probs, 4, torch.Generator().manual_seed(1)).long()
        observed: dict[tuple, int] = {}
        for row in counts.tolist():
            observed[tuple(row)] = observed.get(tuple(row), 0) + 1
        support = [(a, b, c, 4 - a - b - c) for a in range(5) for b in range(5 - a) for c in range(5 - a - b)]
        pmf = stats.multinomial(4, [0.1, 0.2, 0.3, 0.4])
        expected = [20000 * pmf.pmf(k) for k in support]
        assert sum(observed.values()) == 20000 and set(observed) <= set(support)
        assert stats.chisquare([observed.get(k, 0) for k in support], expected).pvalue > 1e-3

    def test_seeded_and_straight_through_gradient(self):
        """The same seed repeats the draws; the gradient is the exact expectation's."""
        x = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
        w = torch.rand(self.CONFIG.weight_shape, dtype=torch.float64, requires_grad=True)
        engine = DensityMatrixEngine(self.CONFIG, self.NOISE)
        first = engine(x, w)
        engine.reseed()
        assert torch.equal(first, engine(x, w))
        assert not torch.equal(first, engine(x, w))  # the generator moved on
        exact = DensityMatrixEngine(self.CONFIG, replace(self.NOISE, shots=None))
        g_shots = torch.autograd.grad(first.sum(), (x, w))
        g_exact = torch.autograd.grad(exact(x, w).sum(), (x, w))
        for a, b in zip(g_shots, g_exact, strict=True):
            assert torch.allclose(a, b, atol=1e-12)


def test_noise_with_data_reuploading_is_refused_in_one_line(tmp_path, capsys):
    """The density-matrix engine shares its blocks across the batch; re-uploading gives each sample its
    own: it returned (B, B, n) values, wrong past the first sample at 2 qubits, and its backward raised
    at 3 and more. Refused where the engine is made, and by `qtl train` in one line."""
    from conftest import make_image_folder, run_cli

    from qtl.config import ModelConfig

    with pytest.raises(ValueError, match="does not take data re-uploading"):
        make_engine(CircuitConfig(2, 1, reupload=True), "native", noise=NoiseConfig(depolarizing=0.01))
    with pytest.raises(ValueError, match="does not take data re-uploading"):  # the app's form, a spec
        ModelConfig(circuit=CircuitConfig(2, 1, reupload=True), noise=NoiseConfig(depolarizing=0.01))
    argv = ["train", "quantum", "--random-init", "--data", make_image_folder(tmp_path / "d"), "--epochs", 1]
    code, _, err = run_cli(capsys, *argv, "--qubits", 2, "--reupload", "--depolarizing", 0.01, "-q")
    assert code == 1 and err.count("\n") == 1 and "does not take data re-uploading" in err
