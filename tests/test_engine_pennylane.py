"""PennyLaneEngine: construction-time validation, broadcasting, gradients across devices, shots."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pennylane as qml
import pytest
import torch

from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.engines import make_engine
from qtl.quantum.engines.pennylane import PennyLaneEngine

SMALL = CircuitConfig(n_qubits=3, depth=2, entangler="ring", rotation="rot")
PAPER = CircuitConfig()


def _inputs(config: CircuitConfig, batch: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * 3.0
    w = torch.rand(config.weight_shape, generator=g, dtype=torch.float64) * 6.0
    return x.to(dtype), w.to(dtype)


def _value_and_grads(engine, x, w):
    """Forward (B, n) and the gradients of a wire-weighted sum with respect to angles and weights."""
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    out = engine(x, w)
    (out * torch.arange(1, out.shape[1] + 1, dtype=out.dtype)).sum().backward()
    return out.detach(), x.grad, w.grad


class TestValidation:
    """Unsupported choices raise ValueError when the engine is built."""

    def test_unknown_device(self):
        """An unknown device name is a ValueError that lists the registered devices."""
        with pytest.raises(ValueError, match="no.such.device.*registered devices.*default.qubit"):
            make_engine(SMALL, "no.such.device")

    def test_lightning_gpu(self):
        """lightning.gpu: a ValueError where its plugin is absent, default.qubit's values where present."""
        if "lightning.gpu" not in qml.plugin_devices:
            with pytest.raises(ValueError, match="lightning.gpu"):
                make_engine(SMALL, "lightning.gpu", diff_method="adjoint")
            return
        if not torch.cuda.is_available():
            pytest.skip("lightning.gpu is installed but there is no CUDA device")
        x, w = _inputs(SMALL, 3)
        gpu = make_engine(SMALL, "lightning.gpu", diff_method="adjoint")
        torch.testing.assert_close(gpu(x, w), make_engine(SMALL, "default.qubit")(x, w), atol=1e-6, rtol=0)

    @pytest.mark.parametrize("device", [None, "", 3])
    def test_bad_device_argument(self, device):
        """A device that is not a non-empty name is a ValueError."""
        with pytest.raises(ValueError, match="device"):
            PennyLaneEngine(SMALL, device=device)

    @pytest.mark.parametrize("diff_method", ["spsa", "Backprop", "hadamard", None])
    def test_unknown_diff_method(self, diff_method):
        """Only the five documented diff methods are accepted."""
        with pytest.raises(ValueError, match="diff_method must be one of"):
            make_engine(SMALL, "default.qubit", diff_method=diff_method)

    @pytest.mark.parametrize("shots", [0, -5, 1.5, True, "100"])
    def test_bad_shots(self, shots):
        """shots is None or a positive int."""
        with pytest.raises(ValueError, match="shots"):
            make_engine(SMALL, "default.qubit", diff_method="parameter-shift", shots=shots)

    @pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
    @pytest.mark.parametrize("diff_method", ["adjoint", "backprop"])
    def test_exact_methods_with_shots(self, device, diff_method):
        """adjoint and backprop need exact simulation, so shots are refused."""
        with pytest.raises(ValueError, match="shots=None"):
            make_engine(SMALL, device, diff_method=diff_method, shots=100)

    @pytest.mark.parametrize(
        "device,diff_method", [("default.mixed", "adjoint"), ("lightning.qubit", "backprop")]
    )
    def test_device_cannot_differentiate(self, device, diff_method):
        """A method the device lacks is a ValueError naming device and method, not a PennyLane error."""
        with pytest.raises(ValueError, match=f"{device}.*{diff_method}"):
            make_engine(SMALL, device, diff_method=diff_method)

    def test_device_that_fails_only_at_execution(self):
        """A device that accepts the circuit but cannot execute it fails at construction too."""
        with pytest.raises(ValueError, match="default.gaussian"):
            make_engine(SMALL, "default.gaussian")

    @pytest.mark.parametrize(
        "device,diff_method,shots,resolved",
        [
            ("default.qubit", "best", None, "backprop"),
            ("default.qubit", "best", 100, "param_shift"),
            ("lightning.qubit", "best", None, "adjoint"),
            ("lightning.qubit", "finite-diff", None, "finite_diff"),
        ],
    )
    def test_resolved_method(self, device, diff_method, shots, resolved):
        """The engine reports the method PennyLane resolved."""
        assert make_engine(SMALL, device, diff_method=diff_method, shots=shots).diff_method == resolved

    def test_bad_shapes_at_call(self):
        """Angles of the wrong width or weights of the wrong shape are ValueErrors."""
        engine = make_engine(SMALL, "default.qubit")
        x, w = _inputs(SMALL, 2)
        with pytest.raises(ValueError, match="angles"):
            engine(x[:, :2], w)
        with pytest.raises(ValueError, match="angles"):
            engine(x[0], w)
        with pytest.raises(ValueError, match="weights"):
            engine(x, w[:1])


class TestQNode:
    """The public QNode replays gates(config)."""

    @pytest.mark.parametrize("config", [SMALL, PAPER, CircuitConfig(n_qubits=1, depth=0)], ids=str)
    def test_tape_is_the_gate_list(self, config):
        """The QNode's operations are gates(config) in order, with the right parameters; it measures <Z_i>."""
        engine = make_engine(config, "default.qubit")
        x, w = _inputs(config, 1)
        tape = qml.workflow.construct_tape(engine.qnode)(x[0], w)
        expected = gates(config)
        assert [(op.name, tuple(op.wires)) for op in tape.operations] == [(g.name, g.wires) for g in expected]
        for op, g in zip(tape.operations, expected, strict=True):
            if g.param is not None:
                source = x[0] if g.param[0] == "input" else w
                assert float(op.data[0]) == float(source[g.param[1]])
        assert [str(m) for m in tape.measurements] == [f"expval(Z({i}))" for i in range(config.n_qubits)]

    @pytest.mark.parametrize(
        "device,diff_method", [("default.qubit", "best"), ("lightning.qubit", "adjoint")]
    )
    def test_copy_and_pickle(self, device, diff_method):
        """deepcopy and pickle rebuild a working engine with its own QNode and the same results."""
        engine = make_engine(SMALL, device, diff_method=diff_method)
        x, w = _inputs(SMALL, 2)
        for clone in (copy.deepcopy(engine), pickle.loads(pickle.dumps(engine))):
            assert clone.qnode is not engine.qnode and clone.diff_method == engine.diff_method
            torch.testing.assert_close(clone(x, w), engine(x, w), atol=1e-12, rtol=0)

    def test_single_sample(self):
        """qnode(inputs (n,), weights) returns n scalar <Z_i>."""
        engine = make_engine(SMALL, "default.qubit")
        x, w = _inputs(SMALL, 1)
        out = engine.qnode(x[0], w)
        assert len(out) == SMALL.n_qubits and all(o.shape == () for o in out)


class TestBroadcasting:
    """A broadcast batch gives the per-sample results."""

    @pytest.mark.parametrize(
        "device,diff_method", [("default.qubit", "backprop"), ("lightning.qubit", "adjoint")]
    )
    @pytest.mark.parametrize("batch", [1, 2, 7])
    def test_batch_equals_loop(self, device, diff_method, batch):
        """engine(x) row b equals the QNode on sample b alone."""
        engine = make_engine(SMALL, device, diff_method=diff_method)
        x, w = _inputs(SMALL, batch, seed=batch)
        out = engine(x, w)
        assert out.shape == (batch, SMALL.n_qubits)
        looped = torch.stack([torch.stack(list(engine.qnode(x[b], w))) for b in range(batch)])
        torch.testing.assert_close(out, looped.to(out.dtype), atol=1e-12, rtol=0)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    def test_dtype_preserved(self, dtype):
        """Outputs and gradients come back in the angles' dtype."""
        engine = make_engine(SMALL, "default.qubit")
        x, w = _inputs(SMALL, 3, dtype=dtype)
        out, gx, gw = _value_and_grads(engine, x, w)
        assert out.dtype == gx.dtype == gw.dtype == dtype

    def test_values_are_expectations(self):
        """Depth 0 without entanglement: <Z_i> = cos(pi/2 + x_i) = -sin(x_i) after H and RY(x_i)."""
        config = CircuitConfig(n_qubits=4, depth=0)
        x, w = _inputs(config, 5)
        torch.testing.assert_close(
            make_engine(config, "default.qubit")(x, w), -torch.sin(x), atol=1e-12, rtol=0
        )


class TestGradientsAcrossDevices:
    """Every device / method gives default.qubit backprop's values and gradients."""

    @pytest.mark.parametrize(
        "device,diff_method,tol",
        [
            ("lightning.qubit", "adjoint", 1e-6),
            ("lightning.qubit", "parameter-shift", 1e-6),
            ("default.qubit", "adjoint", 1e-10),
            ("default.qubit", "parameter-shift", 1e-10),
            ("default.qubit", "finite-diff", 1e-5),
        ],
    )
    @pytest.mark.parametrize("config", [SMALL, PAPER, CircuitConfig(n_qubits=1, depth=2)], ids=str)
    def test_matches_backprop(self, config, device, diff_method, tol):
        """Values and gradients (angles and weights) agree with default.qubit backprop."""
        x, w = _inputs(config, 3, seed=config.n_qubits)
        reference = _value_and_grads(make_engine(config, "default.qubit", diff_method="backprop"), x, w)
        result = _value_and_grads(make_engine(config, device, diff_method=diff_method), x, w)
        for got, want in zip(result, reference, strict=True):
            torch.testing.assert_close(got, want, atol=tol, rtol=0)


class TestShots:
    """Finite shots estimate the exact values."""

    def test_forward_estimates(self):
        """20000 shots: every <Z_i> within 0.05 (7 standard deviations) of exact, and not exactly equal."""
        x, w = _inputs(PAPER, 3)
        exact = make_engine(PAPER, "default.qubit")(x, w)
        sampled = make_engine(PAPER, "default.qubit", diff_method="parameter-shift", shots=20000)(x, w)
        assert (sampled - exact).abs().max() < 0.05
        assert (sampled - exact).abs().max() > 0

    def test_gradient_estimates(self):
        """Parameter-shift gradients from 20000 shots are close to the exact ones."""
        config = CircuitConfig(n_qubits=2, depth=1)
        x, w = _inputs(config, 2)
        exact = _value_and_grads(make_engine(config, "default.qubit"), x, w)
        sampled = _value_and_grads(make_engine(config, "lightning.qubit", shots=20000), x, w)
        for got, want in zip(sampled, exact, strict=True):
            torch.testing.assert_close(got, want, atol=0.1, rtol=0)


class TestShotsInEvalMode:
    """In eval mode (evaluated, predicting, served) a PennyLane model with shots scores an input as the
    density engine does: its shots drawn from noise.seed and its angles, whatever the batch."""

    CONFIG = CircuitConfig(n_qubits=3, depth=2)

    @pytest.mark.parametrize("device", ["default.qubit", "lightning.qubit"])
    def test_an_input_scores_the_same_in_any_batch(self, device):
        from qtl.quantum.noise import NoiseConfig

        x, w = _inputs(self.CONFIG, 6, seed=3, dtype=torch.float32)
        engine = make_engine(self.CONFIG, device, shots=40, noise=NoiseConfig(seed=5)).eval()
        first = engine(x, w)
        assert torch.equal(engine(x, w), first)
        order = torch.tensor([4, 1, 5])
        assert torch.equal(engine(x[order], w), first[order])
        assert torch.equal(engine(x[2:3], w), first[2:3])
        exact = make_engine(self.CONFIG, "default.qubit")(x, w)
        assert 1e-3 < (first - exact).abs().max() < 6 / 40**0.5  # shot noise, within 6 standard errors
        other = make_engine(self.CONFIG, device, shots=40, noise=NoiseConfig(seed=6)).eval()
        assert not torch.equal(other(x, w), first)
        engine.train()  # training draws the device's own shots, new on every call
        assert not torch.equal(engine(x, w), engine(x, w))

    def test_equals_the_density_engine_in_eval_mode(self):
        """The same noise (channels, readout, shots, seed) on default.mixed and on the native density
        engine: equal estimates in eval mode (the same exact probabilities to 1e-12, the same draws), and
        the gradient is the exact values' (straight-through), as the density engine's."""
        from qtl.quantum.engines.density import DensityMatrixEngine
        from qtl.quantum.noise import NoiseConfig

        noise = NoiseConfig(depolarizing=0.02, amplitude_damping=0.03, readout=0.04, shots=30, seed=9)
        x, w = _inputs(self.CONFIG, 5, seed=4)
        ours = _value_and_grads(make_engine(self.CONFIG, "default.mixed", noise=noise).eval(), x, w)
        native = _value_and_grads(DensityMatrixEngine(self.CONFIG, noise).eval(), x, w)
        exact = _value_and_grads(DensityMatrixEngine(self.CONFIG, replace(noise, shots=None)), x, w)
        torch.testing.assert_close(ours[0], native[0], atol=1e-12, rtol=0)
        assert (ours[0] - exact[0]).abs().max() > 1e-3
        for got, want in zip(ours[1:], exact[1:], strict=True):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=0)

    def test_draws_are_binomial_across_inputs(self):
        """1000 different inputs in eval mode: errors over the exact <Z> in standard errors have mean 0 and
        variance 1 per qubit (within 4 and about 5 standard errors)."""
        reps, shots = 1000, 25
        x, w = _inputs(self.CONFIG, reps, seed=8)
        draws = make_engine(self.CONFIG, "default.qubit", shots=shots).eval()(x, w)
        exact = make_engine(self.CONFIG, "default.qubit")(x, w)
        z = (draws - exact) / ((1 - exact**2) / shots).sqrt()
        assert (z.mean(0).abs() < 4 / reps**0.5).all() and ((z.var(0) - 1).abs() < 0.25).all()
