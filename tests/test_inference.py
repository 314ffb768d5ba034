"""Inference: predict over several loaded variants, quantum traces and evaluation."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from qtl.analysis.inference import evaluate, predict, quantum_trace
from qtl.config import DataRegime, MachineConfig, ModelConfig, recipe
from qtl.data.images import ImageLoadError
from qtl.models.backbones import image_transform
from qtl.models.checkpoint import load_checkpoint, save_checkpoint
from qtl.models.variants import build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines import make_engine
from qtl.training.fit import fit

CLASSES = ("cats", "dogs")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("inference"), per_split=(4, 3))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Untrained checkpoints of four variants, loaded back: {variant: LoadedModel}."""
    out = tmp_path_factory.mktemp("ckpt")
    models = {}
    for i, variant in enumerate(("quantum", "linear", "dressed-classical", "finetuned")):
        mc = ModelConfig(variant, pretrained=False, class_names=CLASSES, circuit=CircuitConfig(3, 2))
        torch.manual_seed(i)
        models[variant] = load_checkpoint(save_checkpoint(out / f"{variant}.pt", build_model(mc), mc))
    return models


def val_images(folder):
    return sorted((folder / "val").rglob("*.png"))


def reference_probs(lm, images):
    """Softmax of the model's own full forward pass on the same preprocessing."""
    transform = image_transform(lm.model_config.backbone, lm.model_config.pretrained)
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        return torch.softmax(lm.model(x), 1)


class TestPredict:
    def test_matches_each_models_own_forward(self, loaded, folder):
        """Probabilities of every variant equal a plain forward pass of that model."""
        images = val_images(folder)[:3]
        preds = predict(list(loaded.values()), images)
        assert list(preds) == ["quantum", "linear", "dressed-classical", "finetuned"]
        for name, p in preds.items():
            assert p.probs.shape == (3, 2) and p.latency_s > 0
            torch.testing.assert_close(p.probs, reference_probs(loaded[name], images), atol=1e-5, rtol=0)
            torch.testing.assert_close(p.probs.sum(1), torch.ones(3))
            assert p.predicted == [CLASSES[i] for i in p.probs.argmax(1)]

    def test_a_wide_head_runs_in_batches_its_engine_holds(self, folder, tmp_path, monkeypatch):
        """Many images through a head whose engine's budget holds fewer at once (a 14-qubit ring, its
        budget what 4 samples need): predict runs the head in batches (`eval_batch_size`) and gives each
        image what a forward of it alone gives."""
        from qtl.quantum.engines.native import MEMORY_BUDGET_ENV, NativeEngine

        circuit = CircuitConfig(14, 2, "ring")
        monkeypatch.setenv(MEMORY_BUDGET_ENV, str(NativeEngine(circuit).estimate_bytes(4, training=False)))
        mc = ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=circuit)
        torch.manual_seed(0)
        lm = load_checkpoint(save_checkpoint(tmp_path / "wide.pt", build_model(mc), mc))
        images = sorted(folder.rglob("*.png"))
        assert len(images) > 4
        probs = predict(lm, images)[lm.name].probs
        alone = torch.cat([predict(lm, [image])[lm.name].probs for image in images[:3]])
        torch.testing.assert_close(probs[:3], alone, atol=1e-6, rtol=0)

    def test_frozen_models_share_one_backbone_pass(self, loaded, folder):
        """Three frozen variants load onto one backbone object and run it once; finetuned runs its own."""
        frozen = {id(loaded[v].model.backbone) for v in ("quantum", "linear", "dressed-classical")}
        assert len(frozen) == 1 and id(loaded["finetuned"].model.backbone) not in frozen
        calls = {"quantum": 0, "finetuned": 0}
        hooks = []
        for name in calls:

            def count(*_, name=name):
                calls[name] += 1

            hooks.append(loaded[name].model.backbone.register_forward_hook(count))
        try:
            preds = predict(loaded, val_images(folder))
        finally:
            for h in hooks:
                h.remove()
        assert calls == {"quantum": 1, "finetuned": 1}
        assert preds["linear"].shared_backbone and not preds["finetuned"].shared_backbone

    def test_accepts_paths_pil_and_bytes(self, loaded, folder):
        """A path, an RGBA PIL image and raw bytes of one picture give the same probabilities."""
        path = val_images(folder)[0]
        rgba = Image.open(path).convert("RGBA")
        buf = io.BytesIO()
        Image.open(path).save(buf, format="PNG")
        preds = predict(loaded["quantum"], [path, rgba, buf.getvalue()])
        probs = preds["quantum"].probs
        torch.testing.assert_close(probs[1], probs[0])
        torch.testing.assert_close(probs[2], probs[0])
        one = predict({"q": loaded["quantum"]}, path)
        assert one["q"].probs.shape == (1, 2)

    def test_bad_image_is_named(self, loaded, tmp_path):
        """An undecodable file raises ImageLoadError naming it."""
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"not an image")
        with pytest.raises(ImageLoadError, match="broken.jpg"):
            predict(loaded["linear"], [bad])

    def test_nothing_to_do(self, loaded, folder):
        with pytest.raises(ValueError, match="no models"):
            predict([], val_images(folder))
        with pytest.raises(ValueError, match="no images"):
            predict(loaded["linear"], [])


class TestQuantumTrace:
    def test_angles_and_expvals(self, loaded, folder):
        """Angles lie in (-pi/2, pi/2); <Z> agrees with PennyLane and explains the probabilities."""
        lm = loaded["quantum"]
        image = val_images(folder)[0]
        trace = quantum_trace(lm, image)
        assert trace.angles.shape == trace.expvals.shape == (3,)
        assert trace.angles.abs().max() < math.pi / 2
        pennylane = make_engine(lm.model_config.circuit, "default.qubit")
        with torch.no_grad():
            expected = pennylane(trace.angles[None].double(), lm.model.head.q_params.double())[0]
        torch.testing.assert_close(trace.expvals.double(), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(trace.probs, predict(lm, image)[lm.name].probs[0], atol=1e-6, rtol=0)

    def test_classical_variant_has_no_trace(self, loaded, folder):
        with pytest.raises(ValueError, match="only quantum variants"):
            quantum_trace(loaded["linear"], val_images(folder)[0])


class TestEvaluate:
    def test_reproduces_the_best_val_accuracy(self, folder, tmp_path):
        """Evaluating the saved best epoch gives the val accuracy fit() recorded for it."""
        tc = dataclasses.replace(recipe("quantum"), epochs=3, lr=0.01)
        machine = MachineConfig(data_dir=folder)
        result = fit(ModelConfig("quantum", pretrained=False), tc, machine, checkpoint_path=tmp_path / "q.pt")
        ev = evaluate(load_checkpoint(tmp_path / "q.pt"), folder)
        assert ev.metrics["accuracy"] == pytest.approx(result.best["val_acc"])
        assert ev.metrics["loss"] == pytest.approx(result.best["val_loss"], abs=1e-5)
        assert len(ev.samples) == 6 and ev.metrics["n"] == 6
        assert len(ev.misclassified) == round(6 * (1 - ev.metrics["accuracy"]))
        assert sum(map(sum, ev.metrics["confusion_matrix"])) == 6

    @pytest.mark.parametrize("variant", ["quantum", "finetuned"])
    def test_a_run_in_folds_is_scored_on_its_own_folds(self, tmp_path, variant):
        """A model trained on k folds of 3 classes' first 2 is scored on its own run's val and test folds
        (what fit() recorded), never on the dataset's val/, which its training folds hold."""
        folder = make_image_folder(tmp_path / "abc", classes=("a", "b", "c"), per_split=(5, 4))
        regime = DataRegime(split="kfold", classes=2)
        tc = dataclasses.replace(recipe(variant), epochs=2, lr=0.01, seed=1, regime=regime)
        mc = ModelConfig(variant, pretrained=False, circuit=CircuitConfig(2, 1))
        result = fit(mc, tc, MachineConfig(data_dir=folder), checkpoint_path=tmp_path / "m.pt")
        lm = load_checkpoint(tmp_path / "m.pt")
        val, test = (evaluate(lm, folder, split) for split in ("val", "test"))
        assert val.metrics["accuracy"] == pytest.approx(result.best["val_acc"])
        assert test.metrics["accuracy"] == pytest.approx(result.test["test_acc"])
        assert (val.metrics["n"], test.metrics["n"]) == (result.sizes["n_val"], result.test["n_test"])
        seen = [{s.path for s in ev.samples} for ev in (val, test, evaluate(lm, folder, "train"))]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
        assert not any("/c/" in path for path in set.union(*seen))  # the first 2 classes only
        assert seen[0] != {str(p) for p in (folder / "val").rglob("*.png") if "/c/" not in str(p)}

    def test_a_split_the_dataset_lacks_is_refused_in_one_line(self, loaded, folder):
        with pytest.raises(ValueError, match=f"{folder.name} has no test split"):
            evaluate(loaded["linear"], folder, "test")

    def test_trainable_backbone_runs_on_images(self, loaded, folder):
        """finetuned is evaluated through its own backbone; per-sample rows match predict()."""
        ev = evaluate(loaded["finetuned"], folder)
        paths = [s.path for s in ev.samples]
        assert paths == [str(p) for p in val_images(folder)]
        probs = predict(loaded["finetuned"], paths)["finetuned"].probs
        torch.testing.assert_close(torch.tensor([s.probs for s in ev.samples]), probs, atol=1e-5, rtol=0)
        assert ev.metrics["accuracy"] == pytest.approx(sum(s.correct for s in ev.samples) / 6)

    def test_class_mismatch(self, folder, tmp_path):
        """A model for other classes is refused with both lists in the message."""
        mc = ModelConfig("linear", pretrained=False, class_names=("ants", "bees"))
        lm = load_checkpoint(save_checkpoint(tmp_path / "l.pt", build_model(mc), mc))
        with pytest.raises(ValueError, match="ants.*cats"):
            evaluate(lm, folder)
