"""One backbone per (name, weights) in the process: `qtl.models.backbones.shared_backbone`, used by every
head-only checkpoint `load_checkpoint` loads and by fit() for frozen variants; read-only under everything
the library does with a loaded model, and explanations isolated per call between threads."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_threads import concurrently

from qtl.analysis.explain import _layers, explain, explain_all
from qtl.analysis.inference import evaluate, predict
from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.models import backbones
from qtl.models.backbones import load_backbone, shared_backbone
from qtl.models.checkpoint import load_checkpoint, save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.training.fit import fit

CLASSES = ("cats", "dogs")


def config(variant: str, **kw) -> ModelConfig:
    return ModelConfig(variant, pretrained=False, class_names=CLASSES, circuit=CircuitConfig(3, 2), **kw)


@pytest.fixture(scope="module")
def heads(tmp_path_factory) -> list:
    """Three head-only checkpoints on random-init resnet18 (quantum, linear, dressed-classical), loaded."""
    tmp = tmp_path_factory.mktemp("shared")
    out = []
    for i, variant in enumerate(("quantum", "linear", "dressed-classical")):
        torch.manual_seed(i)
        mc = config(variant)
        out.append(load_checkpoint(save_checkpoint(tmp / f"{variant}.pt", build_model(mc), mc)))
    return out


def images(n: int) -> list[Image.Image]:
    g = np.random.default_rng(5)
    return [Image.fromarray(g.integers(0, 256, (80, 96, 3), dtype=np.uint8)) for _ in range(n)]


def snapshot(module: torch.nn.Module) -> dict:
    """Everything about a module that a user of it could change: its tensors (object, storage, values),
    modes, requires_grad flags and hooks."""
    tensors = module.state_dict(keep_vars=True)
    return {
        "tensors": {k: (id(v), v.data_ptr(), v.clone()) for k, v in tensors.items()},
        "training": [m.training for m in module.modules()],
        "grad": [p.requires_grad for p in module.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()),
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["training"] == after["training"] and before["grad"] == after["grad"]
    assert before["hooks"] == after["hooks"] == 0
    assert before["tensors"].keys() == after["tensors"].keys()
    for k, (obj, ptr, value) in before["tensors"].items():
        obj2, ptr2, value2 = after["tensors"][k]
        assert (obj, ptr) == (obj2, ptr2) and torch.equal(value, value2), k


class TestSharedBackbone:
    def test_one_object_per_name_and_weights_read_only(self):
        """Same (name, weights): the same module, eval mode, nothing requires grad; other weights: another."""
        model, features = shared_backbone("resnet18", False)
        again, _ = shared_backbone("resnet18", False)
        assert again is model and features == 512
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        other, _ = shared_backbone("resnet34", False)
        assert other is not model
        private, _ = load_backbone("resnet18", False)  # a private copy: same weights, its own tensors
        assert private is not model and private.conv1.weight.data_ptr() != model.conv1.weight.data_ptr()
        torch.testing.assert_close(private.conv1.weight, model.conv1.weight, rtol=0, atol=0)

    def test_concurrent_first_calls_build_once(self, monkeypatch):
        """8 threads asking at once for a backbone nobody built yet: one build, one object for all."""
        builds = []
        real = backbones.load_backbone

        def counting(*args, **kwargs):
            builds.append(threading.get_ident())
            return real(*args, **kwargs)

        monkeypatch.setattr(backbones, "load_backbone", counting)
        key = ("mobilenet_v3_large", backbones.weights_id("mobilenet_v3_large", False), "cpu")
        backbones._SHARED.pop(key, None)
        got = concurrently(lambda _: shared_backbone("mobilenet_v3_large", False)[0], 8)
        assert len(builds) == 1 and all(m is got[0] for m in got)

    def test_building_leaves_the_global_rng_alone(self):
        """A first call builds under its own RNG: the caller's seeded draws (a head's init) do not move."""
        key = ("resnet50", backbones.weights_id("resnet50", False), "cpu")
        backbones._SHARED.pop(key, None)
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        shared_backbone("resnet50", False)
        torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


class TestCheckpointsShareIt:
    def test_head_only_checkpoints_hold_one_copy(self, heads):
        """N loaded head-only checkpoints on one backbone run the one shared module, and predict as a
        privately built copy of the same model does."""
        shared, _ = shared_backbone("resnet18", False)
        assert all(h.model.backbone is shared for h in heads)
        picture = images(1)[0]
        for h in heads:
            private = build_model(h.model_config, backbone=load_backbone("resnet18", False))
            private.head.load_state_dict(h.model.head.state_dict())
            alone = predict(dataclasses.replace(h, model=private.eval()), picture)
            torch.testing.assert_close(predict(h, picture)[h.name].probs, alone[h.name].probs)

    def test_nothing_the_library_does_changes_it(self, heads, tmp_path):
        """predict, explain (both methods), evaluate with a feature-cache miss, train()/eval()/to() on a
        loaded model and fit() of a frozen variant on it: the shared module is exactly as it was."""
        from conftest import make_image_folder

        shared, _ = shared_backbone("resnet18", False)
        before = snapshot(shared)
        root = make_image_folder(tmp_path / "data")
        quantum = heads[0]
        predict(heads, images(2))
        explain_all({h.name: h for h in heads}, images(1)[0])
        explain(quantum, images(1)[0], method="saliency")
        evaluate(quantum, root, cache_dir=tmp_path / "cache")
        quantum.model.train()
        quantum.model.eval()
        quantum.model.to("cpu")
        tc = dataclasses.replace(recipe("linear"), epochs=1, augment=False, views=0)
        result = fit(config("linear"), tc, MachineConfig(data_dir=root, cache_dir=str(tmp_path / "cache")))
        assert result.model.backbone is shared
        assert_same(before, snapshot(shared))


class TestExplanationsPerCall:
    def test_concurrent_explains_each_get_their_own_heatmap(self, heads):
        """Threads explain different images on models sharing one backbone while others predict with it:
        every heatmap equals the serial one for its image, and no hook ever appears on the shared module
        (a watcher polls it throughout)."""
        shared, _ = shared_backbone("resnet18", False)
        pictures = images(4)
        named = {h.name: h for h in heads}
        serial = [explain_all(named, p) for p in pictures]
        _layers.clear()  # the feature map is looked for again, while the other threads run the backbone
        seen_hooks, done = [], threading.Event()

        def watch():
            while not done.is_set():
                seen_hooks.append(sum(len(m._forward_hooks) for m in shared.modules()))

        watcher = threading.Thread(target=watch)
        watcher.start()

        def work(i):
            if i >= len(pictures):  # the other threads: predictions through the same backbone
                return [predict(heads, pictures) and None for _ in range(3)]
            return [explain_all(named, pictures[i]) for _ in range(3)]

        try:
            results = concurrently(work, len(pictures) + 2)
        finally:
            done.set()
            watcher.join()
        assert not [r for r in results if isinstance(r, Exception)], results
        for i in range(len(pictures)):
            for got in results[i]:
                for name, ex in got.items():
                    assert ex.method == "grad-cam" and ex.target == serial[i][name].target
                    np.testing.assert_array_equal(ex.heatmap, serial[i][name].heatmap)
        first = heads[0].name
        assert len({serial[i][first].heatmap.tobytes() for i in range(len(pictures))}) == len(pictures)
        assert seen_hooks and max(seen_hooks) == 0

    def test_explain_all_equals_one_model_at_a_time(self, heads):
        """The shared forward pass of explain_all gives each model the map explain gives it alone."""
        picture = images(1)[0]
        for method in ("grad-cam", "saliency"):
            together = explain_all({h.name: h for h in heads}, picture, method=method)
            for h in heads:
                alone = explain(h, picture, method=method)
                assert together[h.name].method == method and together[h.name].target == alone.target
                np.testing.assert_allclose(together[h.name].heatmap, alone.heatmap, atol=1e-6)

    def test_an_explanation_answers_as_predict_does(self, heads):
        """The probabilities an explanation carries are predict's (the Classify page shows them instead of
        running the models twice), for both methods."""
        picture = images(1)[0]
        alone = predict({h.name: h for h in heads}, picture)
        for method in ("grad-cam", "saliency"):
            for name, ex in explain_all({h.name: h for h in heads}, picture, method=method).items():
                torch.testing.assert_close(ex.probs, alone[name].probs[0], rtol=0, atol=1e-6)
                assert ex.seconds > 0 and ex.shared_backbone
