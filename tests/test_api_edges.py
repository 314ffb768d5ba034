"""Edges of the public inference, checkpoint and engine API: what a caller may hand it, and that it
answers one clear error (or the right result) instead of failing deep inside torch or PennyLane."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from qtl.config import ModelConfig
from qtl.models.backbones import load_backbone
from qtl.models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import make_engine
from qtl.quantum.engines.pennylane import PennyLaneEngine
from qtl.quantum.noise import NoiseConfig

CLASSES = ("cats", "dogs")
SMALL = CircuitConfig(2, 1)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> LoadedModel:
    """A quantum checkpoint (head only) loaded onto the process's shared resnet18."""
    mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=SMALL)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("edges") / "q.pt"
    return load_checkpoint(save_checkpoint(path, build_model(mc), mc))


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


class TestLoadDevice:
    """load_checkpoint resolves its device as the CLI and fit do: one line for one it cannot use."""

    @pytest.mark.parametrize(
        ("device", "match"),
        [("nonsense", "unknown device 'nonsense'"), ("cuda:99", "'cuda:99' is not here")],
    )
    def test_a_device_this_machine_has_not(self, frozen, device, match):
        with pytest.raises(ValueError, match=match):
            load_checkpoint(frozen.path, device=device)

    def test_cuda_without_cuda(self, frozen):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        with pytest.raises(ValueError, match="no CUDA device; give auto or cpu"):
            load_checkpoint(frozen.path, device="cuda")

    def test_auto(self, frozen):
        loaded = load_checkpoint(frozen.path, device="auto")
        want = "cuda" if torch.cuda.is_available() else "cpu"
        assert next(loaded.model.head.parameters()).device.type == want


class TestSaveWhatLoads:
    """save_checkpoint writes only what load_checkpoint reads back."""

    def test_numpy_and_tensor_metrics_become_numbers(self, frozen, tmp_path):
        metrics = {"val_acc": np.float64(0.9), "epoch": np.int64(2), "val_loss": torch.tensor(0.25)}
        history = [{"epoch": 1, "val_acc": np.float32(0.5)}, {"epoch": 2, "val_acc": np.float64(0.9)}]
        path = save_checkpoint(
            tmp_path / "n.pt", frozen.model, frozen.model_config, metrics=metrics, history=history
        )
        loaded = load_checkpoint(path)
        assert loaded.metrics == {"val_acc": 0.9, "epoch": 2, "val_loss": 0.25}
        assert [type(v) for v in loaded.metrics.values()] == [float, int, float]
        assert loaded.history == [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.9}]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"metrics": {"val_acc": "high"}}, "metric 'val_acc' is 'high', not a number"),
            ({"metrics": {"val_acc": 1.5}}, "not a fraction"),
            ({"history": [{"when": object()}]}, r"history\[0\]\['when'\] is a object"),
        ],
    )
    def test_what_loading_refuses_is_not_written(self, frozen, tmp_path, kwargs, match):
        path = tmp_path / "bad.pt"
        with pytest.raises(ValueError, match=match):
            save_checkpoint(path, frozen.model, frozen.model_config, **kwargs)
        assert not path.exists()

    @pytest.mark.parametrize(
        ("config", "match"),
        [
            (ModelConfig("linear", pretrained=False, class_names=CLASSES), "not the linear model"),
            (
                ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=CircuitConfig(3, 1)),
                r"weight q_params has shape \(1, 2\), the model expects \(1, 3\)",
            ),
            (
                ModelConfig("quantum", pretrained=False, class_names=("a", "b", "c"), circuit=SMALL),
                "post_net",
            ),
            (ModelConfig("hybrid", pretrained=False, class_names=CLASSES, circuit=SMALL), "is frozen"),
        ],
    )
    def test_a_model_its_config_does_not_describe(self, frozen, tmp_path, config, match):
        path = tmp_path / "wrong.pt"
        with pytest.raises(ValueError, match=match):
            save_checkpoint(path, frozen.model, config)
        assert not path.exists()


class TestDtype:
    """A model on the shared backbone keeps float32: converting its head alone would break its forward."""

    @pytest.mark.parametrize(
        "convert", [lambda m: m.double(), lambda m: m.half(), lambda m: m.to(torch.float64)]
    )
    def test_refused_and_the_model_still_runs(self, frozen, convert):
        x = torch.rand(1, 3, 64, 64)
        with torch.no_grad():
            before = frozen.model(x)
        with pytest.raises(ValueError, match="shared one, in torch.float32, which is never converted"):
            convert(frozen.model)
        assert {p.dtype for p in frozen.model.parameters()} == {torch.float32}
        with torch.no_grad():
            torch.testing.assert_close(frozen.model(x), before)

    def test_float_and_device_moves_are_fine(self, frozen):
        assert frozen.model.float() is frozen.model
        assert frozen.model.to("cpu", torch.float32) is frozen.model

    def test_a_private_backbone_converts_whole(self):
        mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=SMALL)
        model = build_model(mc, backbone=load_backbone("resnet18", False)).double()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64


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
