"""Variants: names, recipes, configs and the models build_model makes."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from qtl.config import FROZEN_VARIANTS, VARIANTS, MachineConfig, ModelConfig, TrainConfig, recipe
from qtl.models.checkpoint import backbone_fingerprint
from qtl.models.heads import DressedClassical, DressedQuantumCircuit, count_parameters
from qtl.models.variants import Classifier, build_model
from qtl.quantum.circuit import CircuitConfig
from qtl.training.fit import fit

CLASSES = ("ants", "bees")


@pytest.fixture(scope="module")
def models():
    """One random-init resnet18 model per variant."""
    torch.manual_seed(0)
    return {v: build_model(ModelConfig(v, pretrained=False, class_names=CLASSES)) for v in VARIANTS}


class TestNames:
    def test_the_five_variants(self):
        """The same five names everywhere, in the documented order."""
        assert VARIANTS == ("quantum", "finetuned", "linear", "hybrid", "dressed-classical")
        assert FROZEN_VARIANTS == {"quantum", "linear", "dressed-classical"}

    @pytest.mark.parametrize("make", [lambda: ModelConfig("qnn"), lambda: recipe("qnn")])
    def test_unknown_variant_lists_the_choices(self, make):
        """An unknown name is a ValueError naming every valid choice."""
        with pytest.raises(ValueError, match="qnn") as err:
            make()
        for v in VARIANTS:
            assert v in str(err.value)


class TestRecipes:
    def test_quantum_is_the_papers(self):
        """Adam 4e-4, StepLR(10, 0.1), batch 4, 30 epochs, no augmentation."""
        r = recipe("quantum")
        assert (r.optimizer, r.lr, r.step_size, r.gamma, r.batch_size, r.epochs) == (
            "adam",
            4e-4,
            10,
            0.1,
            4,
            30,
        )
        assert r.augment is False

    @pytest.mark.parametrize("variant", ["finetuned", "linear"])
    def test_finetuned_and_linear_are_the_tutorials(self, variant):
        """SGD 1e-3 momentum 0.9, StepLR(7, 0.1), 25 epochs, with augmentation."""
        r = recipe(variant)
        assert (r.optimizer, r.lr, r.momentum, r.step_size, r.gamma, r.epochs) == (
            "sgd",
            1e-3,
            0.9,
            7,
            0.1,
            25,
        )
        assert r.augment is True

    def test_linear_caches_augmented_views(self):
        """The frozen linear head augments through cached views, so its epochs skip the backbone."""
        assert recipe("linear").views > 0

    def test_hybrid_has_separate_learning_rates(self):
        """Backbone and head learn at different rates."""
        r = recipe("hybrid")
        assert r.backbone_lr is not None and r.backbone_lr != r.lr

    def test_dressed_classical_trains_like_quantum(self):
        """The control uses the quantum recipe, so only the middle layer differs."""
        assert recipe("dressed-classical") == recipe("quantum")

    def test_recipes_are_train_configs(self):
        """Every recipe is a TrainConfig that round-trips through a plain dict."""
        for v in VARIANTS:
            r = recipe(v)
            assert isinstance(r, TrainConfig)
            assert TrainConfig.from_dict(json.loads(json.dumps(r.to_dict()))) == r


class TestModelConfig:
    def test_round_trip_through_json(self):
        """to_dict is plain JSON and from_dict rebuilds an equal config."""
        c = ModelConfig(
            "hybrid",
            "resnet34",
            False,
            CLASSES,
            CircuitConfig(5, 3, "ring", "rot"),
            "default.qubit",
            "adjoint",
        )
        d = json.loads(json.dumps(c.to_dict()))
        assert ModelConfig.from_dict(d) == c

    def test_unknown_key(self):
        """A stray key is an error naming it."""
        with pytest.raises(ValueError, match="colour"):
            ModelConfig.from_dict({"variant": "quantum", "colour": "red"})

    def test_one_class_is_rejected(self):
        """A classifier needs two classes or more."""
        with pytest.raises(ValueError, match="at least 2"):
            ModelConfig(class_names=("ants",))

    def test_build_needs_class_names(self):
        """Without class names (left for fit to fill), build_model says what to do."""
        with pytest.raises(ValueError, match="class_names"):
            build_model(ModelConfig("linear", pretrained=False))


class TestBuildModel:
    @pytest.mark.parametrize("variant", VARIANTS)
    def test_frozen_flag_and_trainable_parameters(self, models, variant):
        """Frozen variants train only the head; trainable ones train the backbone too."""
        m = models[variant]
        assert isinstance(m, Classifier)
        assert m.frozen == (variant in FROZEN_VARIANTS)
        backbone_trains = any(p.requires_grad for p in m.backbone.parameters())
        assert backbone_trains == (variant not in FROZEN_VARIANTS)
        assert all(p.requires_grad for p in m.head.parameters())

    @pytest.mark.parametrize(
        "variant, head_type",
        [
            ("quantum", DressedQuantumCircuit),
            ("hybrid", DressedQuantumCircuit),
            ("dressed-classical", DressedClassical),
            ("linear", nn.Linear),
            ("finetuned", nn.Linear),
        ],
    )
    def test_head_types(self, models, variant, head_type):
        """Each variant gets its head, sized F=512 -> 2 classes."""
        m = models[variant]
        assert type(m.head) is head_type
        assert m.in_features == 512
        assert m.forward_features(torch.randn(3, 512)).shape == (3, 2)

    def test_images_and_features_paths_agree(self, models):
        """forward(images) equals the head applied to features(images)."""
        m = models["quantum"].eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(m(x), m.forward_features(m.features(x)))

    def test_frozen_backbone_stays_in_eval_mode(self, models):
        """train() on a frozen classifier leaves the backbone's batch-norm statistics alone."""
        m = models["linear"]
        m.train()
        assert m.head.training and not m.backbone.training
        before = m.backbone.bn1.running_mean.clone()
        m(torch.randn(2, 3, 64, 64))
        torch.testing.assert_close(m.backbone.bn1.running_mean, before)
        f = models["finetuned"].train()
        assert f.backbone.training

    def test_dressed_classical_is_width_matched(self):
        """The control's middle layer is as wide as the circuit: n_qubits in, n_qubits out."""
        c = ModelConfig(
            "dressed-classical", pretrained=False, class_names=CLASSES, circuit=CircuitConfig(6, 2)
        )
        head = build_model(c).head
        assert (head.hidden.in_features, head.hidden.out_features) == (6, 6)
        q = build_model(
            ModelConfig("quantum", pretrained=False, class_names=CLASSES, circuit=CircuitConfig(6, 2))
        )
        counts_q, counts_c = count_parameters(q.head), count_parameters(head)
        assert counts_q["quantum"] == 12 and counts_c["quantum"] == 0
        assert counts_c["classical"] - counts_q["classical"] == 6 * 6 + 6

    def test_random_init_backbone_is_reproducible(self):
        """Random init is one fixed draw, whatever the global RNG did before."""
        torch.manual_seed(1)
        a = build_model(ModelConfig("linear", pretrained=False, class_names=CLASSES))
        torch.manual_seed(2)
        b = build_model(ModelConfig("linear", pretrained=False, class_names=CLASSES))
        assert backbone_fingerprint(a.backbone) == backbone_fingerprint(b.backbone)
        assert not torch.equal(a.head.weight, b.head.weight)


def test_a_feature_dim_wider_than_the_features_is_refused():
    """resnet18 has 512 features: feature_dim 100000 was accepted and padded with zero components."""
    mc = ModelConfig("linear", pretrained=False, class_names=CLASSES, feature_dim=100_000)
    with pytest.raises(ValueError, match="feature_dim 100000 is wider than the 512 features of resnet18"):
        build_model(mc)
    assert build_model(ModelConfig("linear", pretrained=False, class_names=CLASSES, feature_dim=512))


@pytest.mark.parametrize(("backbone", "width"), [("resnet18", 512), ("efficientnet_lite0", 1280)])
def test_fit_refuses_a_too_wide_feature_dim_before_the_dataset_and_the_backbone(monkeypatch, backbone, width):
    """fit() opened the dataset (maybe downloading it) and loaded the backbone before build_model refused
    the width: offline, resnet18's refusal read as its missing ImageNet weights."""
    import qtl.training.fit as fit_module

    def never(*args, **kwargs):
        raise AssertionError("the dataset or the backbone was opened")

    monkeypatch.setattr(fit_module, "open_dataset", never)
    monkeypatch.setattr(fit_module, "shared_backbone", never)
    mc = ModelConfig("quantum", backbone=backbone, feature_dim=2000)
    refusal = f"feature_dim 2000 is wider than the {width} features of {backbone}"
    with pytest.raises(ValueError, match=refusal):
        fit(mc, TrainConfig(epochs=1), MachineConfig(data_dir="no-such-dataset"))


def test_qtl_train_refuses_a_too_wide_feature_dim_before_the_dataset(capsys, tmp_path, monkeypatch):
    """`qtl train` opened the dataset (offline, a missing one said it could not be downloaded) before
    fit() could refuse the width."""
    from conftest import run_cli

    monkeypatch.setenv("QTL_OFFLINE", "1")
    args = ("train", "quantum", "--backbone", "resnet18", "--feature-dim", 2000, "--data", tmp_path / "none")
    code, _, err = run_cli(capsys, *args)
    assert code != 0
    assert "feature_dim 2000 is wider than the 512 features of resnet18" in err and "download" not in err
