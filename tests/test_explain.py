"""qtl.analysis.explain: Grad-CAM and gradient saliency through the whole model, quantum circuit included,
and the
model-randomisation sanity check of Adebayo et al. (2018): re-initialising the head must change the map."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from qtl.analysis.explain import explain, feature_map_layer, overlay
from qtl.config import MachineConfig, ModelConfig, recipe
from qtl.models.checkpoint import LoadedModel, load_checkpoint
from qtl.models.variants import build_head, build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.training.fit import fit


@pytest.fixture(scope="module")
def quantum(tmp_path_factory) -> LoadedModel:
    """A trained quantum checkpoint (random-init resnet18, 4 qubits, depth 2) on a tiny 2-class set."""
    from conftest import make_image_folder

    tmp = tmp_path_factory.mktemp("explain")
    root = make_image_folder(tmp / "data")
    tc = dataclasses.replace(recipe("quantum"), epochs=3)
    mc = ModelConfig("quantum", pretrained=False, circuit=CircuitConfig(n_qubits=4, depth=2))
    fit(mc, tc, MachineConfig(data_dir=root), checkpoint_path=tmp / "q.pt")
    return load_checkpoint(tmp / "q.pt")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A structured input: a bright disc off-centre on a textured background."""
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    arr = 90 + 40 * np.sin(xx / 9.0)[..., None] + g.normal(0, 8, (256, 256, 3))
    arr[(yy - 90) ** 2 + (xx - 160) ** 2 < 40**2] = (230, 200, 40)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def with_head(loaded: LoadedModel, seed: int) -> LoadedModel:
    """A copy of `loaded` whose head is re-initialised from `seed`."""
    other = copy.deepcopy(loaded)
    torch.manual_seed(seed)
    other.model.head = build_head(loaded.model_config, loaded.model.in_features).eval()
    return other


def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


class TestMaps:
    @pytest.mark.parametrize("method", ["grad-cam", "saliency"])
    def test_shape_range_and_prediction(self, quantum, image, method):
        ex = explain(quantum, image, method=method)
        assert ex.method == method and ex.heatmap.shape == (224, 224) and ex.image.size == (224, 224)
        assert ex.heatmap.dtype == np.float32 and ex.heatmap.min() >= 0 and ex.heatmap.max() == 1
        assert ex.target == int(ex.probs.argmax()) and ex.class_name == quantum.class_names[ex.target]
        assert ex.probs.sum().item() == pytest.approx(1, abs=1e-5)
        again = explain(quantum, image, method=method)
        np.testing.assert_array_equal(again.heatmap, ex.heatmap)  # deterministic, no state left behind

    def test_auto_is_grad_cam_on_a_cnn_and_the_map_has_structure(self, quantum, image):
        ex = explain(quantum, image)
        assert ex.method == "grad-cam"
        assert feature_map_layer(quantum.model.backbone, torch.zeros(1, 3, 224, 224)) == "layer4"
        assert 0.02 < (ex.heatmap > 0.5).mean() < 0.9  # neither empty nor flat

    def test_other_target_gives_another_map(self, quantum, image):
        a, b = (explain(quantum, image, method="saliency", target=t).heatmap for t in (0, 1))
        assert rank_corr(a, b) < 0.99

    def test_a_target_the_model_has_not_is_one_line(self, quantum, image):
        """target=5 of a 2-class model: a ValueError naming its classes (an IndexError from the backward)."""
        with pytest.raises(ValueError, match=r"target class 5 is not one of .*: 0 to 1"):
            explain(quantum, image, target=5)

    def test_explaining_leaves_the_model_untouched(self, quantum, image):
        before = {k: v.clone() for k, v in quantum.model.state_dict().items()}
        explain(quantum, image)
        explain(quantum, image, method="saliency")
        assert all(p.grad is None for p in quantum.model.parameters())
        assert all(torch.equal(before[k], v) for k, v in quantum.model.state_dict().items())
        assert not quantum.model.backbone._forward_hooks and not quantum.model.backbone.layer4._forward_hooks

    def test_overlay(self, quantum, image):
        ex = explain(quantum, image)
        out = overlay(ex.image, ex.heatmap)
        assert out.size == (224, 224) and out.mode == "RGB"
        assert np.abs(np.asarray(out, float) - np.asarray(ex.image, float)).mean() > 10


class TestSanity:
    """Adebayo et al. (2018), model-parameter randomisation: a map that explains the model must change when
    the model's (head's) weights are re-initialised; an edge detector would not."""

    @pytest.mark.parametrize("method", ["grad-cam", "saliency"])
    def test_reinitialised_head_changes_the_map(self, quantum, image, method):
        ref = explain(quantum, image, method=method)
        for seed in (1, 2):
            other = explain(with_head(quantum, seed), image, method=method, target=ref.target)
            assert rank_corr(ref.heatmap, other.heatmap) < 0.6

    def test_the_gradient_runs_through_the_circuit(self, quantum, image):
        """Re-drawing only the circuit's angles changes the map: the circuit is part of the explanation."""
        ref = explain(quantum, image, method="saliency")
        other = copy.deepcopy(quantum)
        q = other.model.head.q_params
        q.data = torch.rand(q.shape, generator=torch.Generator().manual_seed(3)) * 2 * torch.pi
        assert (
            rank_corr(ref.heatmap, explain(other, image, method="saliency", target=ref.target).heatmap) < 0.6
        )


def test_a_transformer_gets_saliency(image):
    """vit_b_16 emits tokens, so it has no CNN feature map: auto falls back to saliency, grad-cam refuses."""
    mc = ModelConfig("linear", backbone="vit_b_16", pretrained=False, class_names=("a", "b", "c"))
    torch.manual_seed(0)
    loaded = LoadedModel(build_model(mc).eval(), mc, list(mc.class_names), [], {}, {})
    ex = explain(loaded, image)
    assert ex.method == "saliency" and ex.heatmap.shape == (224, 224) and ex.heatmap.max() == 1
    with pytest.raises(ValueError, match="no convolutional feature map"):
        explain(loaded, image, method="grad-cam")
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain(loaded, image, method="lime")


def test_a_blank_grad_cam_map_says_so(image):
    """A class every feature-map channel argues against (its head row all negative) has no positive
    Grad-CAM evidence: the map is all zeros, and the explanation and its figure say so instead of drawing
    a uniform tint as if it were a map. Saliency still finds a gradient; the other class's map is not
    blank."""
    from qtl.analysis.explain import explanation_figure

    mc = ModelConfig("linear", pretrained=False, class_names=("against", "for"))
    torch.manual_seed(0)
    loaded = LoadedModel(build_model(mc).eval(), mc, list(mc.class_names), [], {}, {})
    with torch.no_grad():
        loaded.model.head.weight.copy_(torch.tensor([-1.0, 1.0]).repeat_interleave(512).view(2, 512))
    blank, shown = (explain(loaded, image, method="grad-cam", target=t) for t in (0, 1))
    assert blank.blank and not blank.heatmap.any()
    assert blank.note == "no positive Grad-CAM evidence for against; try saliency"
    assert not shown.blank and shown.note is None and shown.heatmap.max() == 1
    saliency = explain(loaded, image, method="saliency", target=0)
    assert not saliency.blank and saliency.note is None
    fig = explanation_figure([("img.png", {"blank": blank, "shown": shown})])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1].replace("\n", " ").endswith(" no positive Grad-CAM evidence for against; try saliency")
    assert "evidence" not in titles[2]
