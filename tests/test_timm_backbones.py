"""timm backbones by name: the pretrained config drives the transform, F comes from the model, weights
come from a local file (written here) or timm's hub, offline is a one-line error; a CNN and a ViT train,
checkpoint and predict end to end."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image

from qtl.models.backbones import (
    WeightsUnavailableError,
    image_transform,
    load_backbone,
    transform_params,
    weights_id,
    weights_status,
)

CNN, VIT = "timm/convnext_atto", "timm/vit_tiny_patch16_224"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("QTL_OFFLINE", "1")  # never the network: weights come from files written here
    return tmp_path / "torch_home"


def write_weights(name: str, seed: int = 123) -> dict[str, torch.Tensor]:
    """Save a seeded random timm model (classifier included) where qtl looks for `name`'s weights."""
    torch.manual_seed(seed)
    model = timm.create_model(name.removeprefix("timm/"), pretrained=False)
    path = weights_status(name).path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        torch.save(model.state_dict(), path)
    return model.state_dict()


class TestTransform:
    @pytest.mark.parametrize("name", [CNN, VIT, "timm/mobilenetv3_small_100"])
    def test_equals_timms_create_transform(self, name):
        """Our eval transform gives the tensor timm's own create_transform(resolve_data_config(...)) gives."""
        model = timm.create_model(name.removeprefix("timm/"), pretrained=False, num_classes=0)
        reference = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        g = torch.Generator().manual_seed(0)
        image = Image.fromarray(torch.randint(0, 256, (170, 250, 3), generator=g, dtype=torch.uint8).numpy())
        for pretrained in (True, False):
            torch.testing.assert_close(image_transform(name, pretrained)(image), reference(image))

    def test_the_config_not_a_default(self):
        """ViT-tiny's config says mean = std = 0.5 and crop 0.9; convnext_atto's ImageNet stats, 0.875."""
        vit, cnn = transform_params(VIT, True), transform_params(CNN, True)
        assert vit["mean"] == (0.5, 0.5, 0.5) and vit["resize"] == 248
        assert cnn["mean"] == pytest.approx((0.485, 0.456, 0.406)) and cnn["resize"] == 256


class TestWeights:
    def test_local_file_is_loaded(self, torch_home):
        """A state dict written where qtl looks is what load_backbone(pretrained=True) returns; F is
        read from the model (320 for convnext_atto)."""
        state = write_weights(CNN)
        assert weights_status(CNN).cached
        model, features = load_backbone(CNN, pretrained=True, allow_download=False)
        assert features == 320
        loaded = model.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in loaded.items())
        with torch.no_grad():
            assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 320)
        assert weights_id(CNN, True) == "convnext_atto.d2_in1k" and weights_id(CNN, False) == "random"

    def test_offline_without_file_is_one_clear_line(self, torch_home, monkeypatch):
        monkeypatch.setattr(timm, "create_model", pytest.fail)  # nothing is built or fetched
        status = weights_status(VIT)
        with pytest.raises(WeightsUnavailableError) as info:
            load_backbone(VIT, pretrained=True)
        message = str(info.value)
        assert "\n" not in message and "QTL_OFFLINE" in message
        assert status.filename in message and str(status.path.parent) in message
        assert "--random-init" in message and "efficientnet_lite0" in message

    def test_wrong_file_is_one_clear_line(self, torch_home):
        path = weights_status(CNN).path
        path.parent.mkdir(parents=True)
        torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), path)
        with pytest.raises(WeightsUnavailableError, match=str(path)) as info:
            load_backbone(CNN, pretrained=True)
        assert "\n" not in str(info.value)

    def test_unknown_model(self):
        with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
            load_backbone("timm/no_such_net", pretrained=False)


@pytest.mark.parametrize(("name", "variant"), [(CNN, "quantum"), (VIT, "finetuned")])
def test_train_checkpoint_predict(torch_home, tiny_image_folder, tmp_path, capsys, name, variant):
    """CLI train on written weights, then predict: the checkpoint records the timm backbone, its weights
    and its transform; predict agrees with the library."""
    from qtl.analysis.inference import predict
    from qtl.cli import main
    from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info

    write_weights(name)
    out = tmp_path / "model.pt"
    args = ["-q", "train", variant, "--backbone", name, "--data", str(tiny_image_folder), "--epochs", "1"]
    assert main([*args, "--no-augment", "--batch-size", "6", "--out", str(out)]) == 0
    info = read_checkpoint_info(out)
    assert (info.backbone, info.weights) == (name, weights_id(name, True))
    payload = torch.load(out, weights_only=True)
    assert payload["backbone"]["transform"] == transform_params(name, True)
    loaded = load_checkpoint(out)
    image = tiny_image_folder / "val" / "cats" / "cats_0.png"
    capsys.readouterr()
    assert main(["predict", str(image), "-c", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)[0]["predictions"]
    probs = predict([loaded], [str(image)])[loaded.name].probs[0].tolist()
    assert list(next(iter(got.values()))["probs"].values()) == pytest.approx(probs, abs=1e-6)
