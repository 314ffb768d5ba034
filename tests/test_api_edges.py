"""Edges of the public inference, checkpoint and engine API: what a caller may hand it, and that it
answers one clear error (or the right result) instead of failing deep inside torch or PennyLane."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from qtl.analysis.explain import explain
from qtl.analysis.inference import evaluate, predict, quantum_trace
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


def _image(seed: int = 0, size=(48, 40)) -> Image.Image:
    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def hybrid() -> LoadedModel:
    """A hybrid model (trainable resnet18 with batch norm, a 2-qubit circuit), as a LoadedModel."""
    mc = ModelConfig("hybrid", pretrained=False, class_names=CLASSES, circuit=SMALL)
    torch.manual_seed(0)
    model = build_model(mc).eval()
    return LoadedModel(model, mc, list(CLASSES), [], {}, {})


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> LoadedModel:
    """A quantum checkpoint (head only) loaded onto the process's shared resnet18."""
    mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=SMALL)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("edges") / "q.pt"
    return load_checkpoint(save_checkpoint(path, build_model(mc), mc))


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class TestEvalMode:
    """Inference runs in eval mode whatever mode the caller left the model in, and gives that mode back."""

    @pytest.fixture
    def in_train_mode(self, hybrid):
        """The hybrid model in train mode, but for one batch-norm layer left in eval mode: a mix."""
        model = hybrid.model
        model.train()
        model.backbone.bn1.eval()
        yield hybrid
        model.eval()

    def _check_untouched(self, model, modes, state):
        assert _modes(model) == modes
        after = model.state_dict()
        assert all(torch.equal(after[k], v) for k, v in state.items())  # running statistics included

    def test_predict(self, hybrid, in_train_mode):
        images = [_image(0), _image(1)]
        model = hybrid.model
        modes, state = _modes(model), _state(model)
        got = predict(hybrid, images)[hybrid.name].probs
        self._check_untouched(model, modes, state)
        model.eval()
        want = predict(hybrid, images)[hybrid.name].probs
        torch.testing.assert_close(got, want)

    @pytest.mark.parametrize("call", [quantum_trace, explain], ids=["quantum_trace", "explain"])
    def test_one_image_calls(self, hybrid, in_train_mode, call):
        model = hybrid.model
        modes, state = _modes(model), _state(model)
        got = call(hybrid, _image(2))
        self._check_untouched(model, modes, state)
        model.eval()
        torch.testing.assert_close(got.probs, call(hybrid, _image(2)).probs)

    def test_evaluate(self, hybrid, in_train_mode, tmp_path):
        root = make_image_folder(tmp_path / "data", classes=CLASSES, per_split=(1, 2))
        model = hybrid.model
        modes, state = _modes(model), _state(model)
        got = evaluate(hybrid, root).samples
        self._check_untouched(model, modes, state)
        model.eval()
        want = evaluate(hybrid, root).samples
        np.testing.assert_allclose([s.probs for s in got], [s.probs for s in want], atol=1e-6)

    def test_a_model_in_eval_mode_is_not_written(self, frozen, monkeypatch):
        """The common case, a loaded model in eval mode: no module's mode is set (the shared backbone,
        which other threads run, never is)."""
        calls = []
        monkeypatch.setattr(torch.nn.Module, "train", lambda self, mode=True: calls.append(self))
        predict(frozen, _image(0))
        assert calls == []


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

    def test_a_models_pennylane_shots_take_its_noise_seed(self):
        """ModelConfig.shots on a PennyLane engine with a noise config that only sets the seed: the model's
        engine draws from that seed (engine_options dropped an ideal noise config, and with it the seed)."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(3, SMALL.n_qubits, generator=g, dtype=torch.float64)
        w = torch.rand(SMALL.weight_shape, generator=g, dtype=torch.float64)

        def outputs(seed: int) -> torch.Tensor:
            mc = ModelConfig(
                "quantum", circuit=SMALL, engine="default.qubit", shots=64, noise=NoiseConfig(seed=seed)
            )
            return make_engine(mc.circuit, mc.engine, **mc.engine_options())(x, w)

        assert torch.equal(outputs(7), self._outputs(7)[:3])
        assert not torch.equal(outputs(7), outputs(0))

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

    def test_cuda_without_cuda(self, frozen, monkeypatch):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # a machine without CUDA, on any machine
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


class TestPredictInputs:
    def test_pixel_arrays_are_refused_saying_what_is_taken(self, frozen):
        for pixels in (
            torch.rand(3, 32, 32),
            np.zeros((32, 32, 3), np.uint8),
            [_image(), torch.rand(3, 8, 8)],
        ):
            with pytest.raises(TypeError, match="paths, bytes, binary files or PIL images.*fromarray"):
                predict(frozen, pixels)

    def test_files_bytes_and_bytearrays(self, frozen):
        buf = io.BytesIO()
        _image().save(buf, "PNG")
        data = buf.getvalue()
        want = predict(frozen, _image())[frozen.name].probs
        for source in (data, bytearray(data), io.BytesIO(data), [io.BytesIO(data)]):
            torch.testing.assert_close(predict(frozen, source)[frozen.name].probs, want)

    @pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
    def test_batch_size(self, frozen, batch_size):
        with pytest.raises(ValueError, match="batch_size must be a positive whole number"):
            predict(frozen, _image(), batch_size=batch_size)

    @pytest.mark.parametrize("batch_size", [0, -1])
    def test_evaluate_batch_size(self, frozen, batch_size, tmp_path):
        root = make_image_folder(tmp_path / "data", classes=CLASSES, per_split=(1, 1))
        with pytest.raises(ValueError, match="batch_size must be a positive whole number"):
            evaluate(frozen, root, batch_size=batch_size)

    def test_models_that_are_not_loaded_checkpoints(self, frozen):
        with pytest.raises(TypeError, match="load 'q.pt' with load_checkpoint first"):
            predict("q.pt", _image())
        for models in (frozen.model, [frozen.model], {"q": frozen.model}):
            with pytest.raises(TypeError, match="models must be loaded checkpoints.*got a Classifier"):
                predict(models, _image())

    @pytest.mark.parametrize("models", [[], {}, ()])
    def test_no_models(self, models):
        with pytest.raises(ValueError, match="no models given"):
            predict(models, _image())


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


class TestOneImage:
    """explain and quantum_trace take one image; explain's target is a class index."""

    def test_several_images_are_refused(self, frozen):
        for call in (explain, quantum_trace):
            with pytest.raises(ValueError, match="one image at a time, got 2"):
                call(frozen, [_image(0), _image(1)])
            call(frozen, [_image(0)])  # a sequence of one is that image

    def test_explain_under_inference_mode_and_no_grad(self, frozen):
        want = explain(frozen, _image()).heatmap
        for context in (torch.inference_mode, torch.no_grad):
            for method in ("grad-cam", "saliency"):
                with context():
                    got = explain(frozen, _image(), method=method).heatmap
                if method == "grad-cam":
                    np.testing.assert_allclose(got, want, atol=1e-6)

    @pytest.mark.parametrize("target", [1.7, 1.0, "1", True])
    def test_a_target_that_is_not_an_int(self, frozen, target):
        with pytest.raises(TypeError, match="target must be a class index"):
            explain(frozen, _image(), target=target)

    def test_numpy_int_target(self, frozen):
        assert explain(frozen, _image(), target=np.int64(1)).target == 1


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


def test_circuit_and_noise_configs_refuse_what_they_cannot_mean():
    """hadamard = "no" was taken as true by CircuitConfig itself (ModelConfig refused it); a negative noise
    seed reached PennyLane's generator, which refused it deep in a build."""
    with pytest.raises(TypeError, match="hadamard must be true or false, got 'no'"):
        CircuitConfig(2, 1, hadamard="no")
    with pytest.raises(ValueError, match="seed must be from 0 to 4294967295 for PennyLane's default.qubit"):
        PennyLaneEngine(SMALL, shots=8, noise=NoiseConfig(seed=-1))
    assert NoiseConfig(seed=-1).seed == -1  # a stored config reads; the native engine's torch takes it
    assert CircuitConfig(2, 1, hadamard=False).hadamard is False
