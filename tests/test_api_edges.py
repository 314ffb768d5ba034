"""Edges of the public inference, checkpoint and engine API: what a caller may hand it, and that it
answers one clear error (or the right result) instead of failing deep inside torch or PennyLane."""

from __future__ import annotations

import copy

import pytest
import torch

from qtl.config import ModelConfig
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import make_engine
from qtl.quantum.engines.pennylane import PennyLaneEngine
from qtl.quantum.noise import NoiseConfig

CLASSES = ("cats", "dogs")
SMALL = CircuitConfig(2, 1)


class TestPennyLaneShots:
    """A PennyLane engine with shots draws them from a generator seeded by its noise config's seed."""

    @staticmethod
    def _outputs(seed: int, device: str = "default.qubit") -> torch.Tensor:
        engine = PennyLaneEngine(SMALL, device, shots=64, noise=NoiseConfig(seed=seed))
        g = torch.Generator().manual_seed(0)
        x = torch.rand(3, SMALL.n_qubits, generator=g, dtype=torch.float64)
        w = torch.rand(SMALL.weight_shape, generator=g, dtype=torch.float64)
        return torch.cat([engine(x, w), engine(x, w)])  # the second call draws on

    @pytest.mark.parametrize("device", ["default.qubit", "default.mixed"])
    def test_the_same_seed_gives_the_same_shots(self, device):
        a, b, other = self._outputs(1, device), self._outputs(1, device), self._outputs(2, device)
        assert torch.equal(a, b)
        assert not torch.equal(a, other)

    def test_models_with_shots_repeat(self):
        """Two models built alike, with shots: the same outputs."""
        mc = ModelConfig(
            "quantum",
            pretrained=False,
            class_names=CLASSES,
            circuit=SMALL,
            engine="default.qubit",
            noise=NoiseConfig(shots=64, seed=5),
        )
        x = torch.randn(4, 512)
        outs = []
        for _ in range(2):
            torch.manual_seed(0)
            model = build_model(mc, backbone=(torch.nn.Identity(), 512))
            with torch.no_grad():
                outs.append(model.forward_features(x))
        assert torch.equal(*outs)

    def test_a_copy_starts_from_the_seed(self):
        x, w = torch.rand(2, 2, dtype=torch.float64), torch.rand(SMALL.weight_shape, dtype=torch.float64)
        first = PennyLaneEngine(SMALL, shots=64, noise=NoiseConfig(seed=3))(x, w)
        engine = copy.deepcopy(PennyLaneEngine(SMALL, shots=64, noise=NoiseConfig(seed=3)))
        assert torch.equal(engine(x, w), first)

    @pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
    def test_built_where_gradients_are_off(self, context):
        """Building checks a backward pass: it runs under the caller's no_grad or inference_mode too."""
        with context():
            engine = PennyLaneEngine(SMALL, shots=64)
        assert engine.diff_method == PennyLaneEngine(SMALL, shots=64).diff_method


class TestEnginesAgree:
    """Every engine answers an empty batch with (0, n) and refuses angles that are not float32/64."""

    ENGINES = [("native", {}), ("mps", {}), ("mps", {"max_bond": 2}), ("default.qubit", {})]

    @pytest.mark.parametrize(("name", "options"), ENGINES)
    @pytest.mark.parametrize(
        "config", [CircuitConfig(4, 3), CircuitConfig(3, 2, "ring", "rot"), CircuitConfig(3, 0)]
    )
    def test_empty_batch(self, name, options, config):
        engine = make_engine(config, name, **options)
        for dtype in (torch.float32, torch.float64):
            out = engine(torch.zeros(0, config.n_qubits, dtype=dtype), torch.rand(config.weight_shape))
            assert out.shape == (0, config.n_qubits) and out.dtype == dtype

    def test_mps_parity_and_sites_of_an_empty_batch(self):
        engine = make_engine(CircuitConfig(4, 2), "mps")
        a, w = torch.zeros(0, 4), torch.rand(CircuitConfig(4, 2).weight_shape)
        assert engine.parity(a, w).shape == (0,)
        z, parity = engine.expvals_and_parity(a, w)
        assert z.shape == (0, 4) and parity.shape == (0,)
        assert engine.last_discarded.shape == (0,)

    @pytest.mark.parametrize("name", ["native", "mps", "default.qubit"])
    @pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.bfloat16, torch.complex64])
    def test_angles_not_float32_or_64(self, name, dtype):
        config = CircuitConfig(3, 2)
        engine = make_engine(config, name)
        with pytest.raises(ValueError, match=f"angles must be float32 or float64, got {dtype}"):
            engine(torch.ones(2, 3).to(dtype), torch.rand(config.weight_shape))
