"""Backbones: random-init builds, the weights file path, offline errors and the image transforms."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from qtl.config import BACKBONE_NAMES
from qtl.models import weights as qtl_weights
from qtl.models.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    WeightsUnavailableError,
    image_transform,
    load_backbone,
    torchvision_models,
    transform_key,
    weights_id,
    weights_status,
)
from qtl.utils.download import OFFLINE_ENV

TORCHVISION_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty TORCH_HOME for one test."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return home


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


class TestBuild:
    @pytest.mark.parametrize("name", list(BACKBONES))
    def test_random_init_drops_exactly_the_classification_layer(self, name):
        """(1, 3, 224, 224) -> (1, F); the reference's last Linear on those features gives its logits."""
        torch.manual_seed(0)
        reference = torchvision.models.get_model(name, weights=None).eval()
        torch.manual_seed(0)
        model, features = load_backbone(name, pretrained=False)
        head = last_linear(reference)
        assert features == head.in_features
        assert not model.training
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            out = model(x)
            assert out.shape == (1, features)
            torch.testing.assert_close(head(out), reference(x), rtol=1e-4, atol=1e-4)

    def test_default_is_resnet18(self):
        """The paper's backbone is the default; the torch-free names the CLI offers are BACKBONES' keys,
        then the bundled efficientnet_lite0."""
        assert DEFAULT_BACKBONE == "resnet18"
        assert BACKBONE_NAMES == (*BACKBONES, "efficientnet_lite0")
        assert set(BACKBONES) == {
            "resnet18",
            "resnet34",
            "resnet50",
            "mobilenet_v3_large",
            "efficientnet_b0",
            "vit_b_16",
        }

    def test_unknown_name_lists_choices(self):
        """A typo gets a ValueError naming every valid backbone."""
        with pytest.raises(ValueError, match="resnet18.*vit_b_16"):
            load_backbone("resnet19", pretrained=False)
        with pytest.raises(ValueError, match="unknown backbone"):
            weights_status("alexnet")

    def test_weights_id(self):
        """The enum member name when pretrained, 'random' otherwise."""
        assert weights_id("resnet18", True) == "IMAGENET1K_V1"
        assert weights_id("resnet18", False) == "random"


class TestWeightsWithoutTorch:
    """qtl.models.weights finds torchvision's and the bundled weights without importing torch, so the
    app's first page never waits for it."""

    def test_the_written_out_weights_are_torchvisions(self):
        assert set(qtl_weights.TORCHVISION_WEIGHTS) == set(BACKBONES)
        for name, spec in BACKBONES.items():
            assert qtl_weights.TORCHVISION_WEIGHTS[name] == (spec.weights.name, spec.weights.url)

    @pytest.mark.parametrize("torch_home_set", [True, False])
    def test_hub_dir_is_torchs(self, tmp_path, monkeypatch, torch_home_set):
        """The same folder as torch.hub.get_dir(), computed without torch, from TORCH_HOME or the cache."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        if torch_home_set:
            monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
        else:
            monkeypatch.delenv("TORCH_HOME", raising=False)
        with monkeypatch.context() as before_torch:
            before_torch.delitem(sys.modules, "torch")
            without = qtl_weights.torch_hub_dir()
        assert without == Path(torch.hub.get_dir())

    def test_status_checks_import_no_torch(self, tmp_path):
        """resolve_backbone for resnet18 (offline: the bundled fallback) and the bundled status, in a
        fresh interpreter: torch, torchvision and timm stay unloaded."""
        code = (
            "import sys; from qtl.models.weights import resolve_backbone, weights_availability;"
            "c = resolve_backbone('resnet18', True); w = weights_availability('efficientnet_lite0');"
            "print(c.backbone, w.state, [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules])"
        )
        env = {**os.environ, "QTL_OFFLINE": "1", "TORCH_HOME": str(tmp_path)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["efficientnet_lite0", "cached", "[]"], out.stderr


class TestWeightsFile:
    def test_status_points_into_torch_home(self, torch_home):
        """The expected file is $TORCH_HOME/hub/checkpoints/<basename of the torchvision URL>."""
        status = weights_status("resnet18")
        url = TORCHVISION_WEIGHTS["resnet18"].url
        assert status.url == url
        assert status.path == torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
        assert status.filename == status.path.name
        assert not status.cached

    @pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large"])
    def test_pretrained_loads_the_cached_file(self, torch_home, name):
        """A state dict written under the expected name is what load_backbone(pretrained=True) returns."""
        torch.manual_seed(123)
        source = torchvision.models.get_model(name, weights=None)
        path = weights_status(name).path
        path.parent.mkdir(parents=True)
        torch.save(source.state_dict(), path)
        assert weights_status(name).cached

        torch.manual_seed(0)  # a different random init, to be overwritten by the file
        model, features = load_backbone(name, pretrained=True, allow_download=False)
        loaded = model.state_dict()
        expected = source.state_dict()
        head = [k for k in expected if k not in loaded]
        assert head and all(k.endswith(("weight", "bias")) for k in head)
        assert last_linear(source).in_features == features
        for key, value in loaded.items():
            assert torch.equal(value, expected[key]), key

    def test_corrupt_cached_file_names_it(self, torch_home):
        """A broken weights file gives WeightsUnavailableError naming the file, not a pickle traceback."""
        path = weights_status("resnet18").path
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a checkpoint")
        with pytest.raises(WeightsUnavailableError, match=str(path)):
            load_backbone("resnet18", pretrained=True, allow_download=False)

    def test_wrong_architecture_file_is_a_one_line_error(self, torch_home):
        """A file holding another model's weights fails clearly instead of a long key-mismatch dump."""
        path = weights_status("resnet18").path
        path.parent.mkdir(parents=True)
        torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
        with pytest.raises(WeightsUnavailableError) as info:
            load_backbone("resnet18", pretrained=True, allow_download=False)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


class TestOffline:
    def assert_helpful(self, exc: WeightsUnavailableError, status) -> None:
        message = str(exc)
        assert "\n" not in message
        assert status.filename in message and str(status.path.parent) in message
        assert "--random-init" in message and "pretrained=False" in message

    def test_downloads_disabled(self, torch_home):
        """allow_download=False fails at once with the exact file and folder."""
        status = weights_status("resnet18")
        with pytest.raises(WeightsUnavailableError) as info:
            load_backbone("resnet18", pretrained=True, allow_download=False)
        self.assert_helpful(info.value, status)

    def test_offline_env(self, torch_home, monkeypatch):
        """QTL_OFFLINE=1 never tries the network."""
        monkeypatch.setenv(OFFLINE_ENV, "1")
        monkeypatch.setattr(torchvision_models, "download", pytest.fail)
        with pytest.raises(WeightsUnavailableError, match=OFFLINE_ENV):
            load_backbone("resnet18", pretrained=True)

    @pytest.mark.parametrize("server", ["refused", "silent"])
    def test_unreachable_server_fails_fast(self, torch_home, monkeypatch, server):
        """A refused connection, or a server that accepts but never answers, fails within the timeout."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if server == "refused":
            listener.close()
        else:
            listener.listen(1)  # the kernel completes the handshake; nobody ever replies
        real = weights_status("resnet18")
        fake = dataclasses.replace(real, url=f"http://127.0.0.1:{port}/models/{real.filename}")
        monkeypatch.setattr(torchvision_models, "weights_status", lambda name: fake)
        start = time.perf_counter()
        try:
            with pytest.raises(WeightsUnavailableError) as info:
                load_backbone("resnet18", pretrained=True, timeout=0.5)
        finally:
            listener.close()
        assert time.perf_counter() - start < 5
        self.assert_helpful(info.value, fake)
        assert not fake.path.exists()


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """Serve tmp_path/www over HTTP on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = lambda *a, **kw: _FileHandler(*a, directory=str(www), **kw)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class TestDownload:
    def serve_weights(self, www: Path, tamper: bool = False) -> tuple[dict, str]:
        torch.manual_seed(7)
        state = torchvision.models.resnet18(weights=None).state_dict()
        tmp = www / "tmp.pth"
        torch.save(state, tmp)
        prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
        if tamper:
            with open(tmp, "ab") as f:
                f.write(b"x")
        name = f"resnet18-{prefix}.pth"
        os.replace(tmp, www / name)
        return state, name

    def test_download_checks_hash_and_loads(self, torch_home, file_server, monkeypatch):
        """Not cached + reachable: streamed into the checkpoints folder with progress, then loaded."""
        www, base = file_server
        state, name = self.serve_weights(www)
        real = weights_status("resnet18")
        monkeypatch.setattr(
            torchvision_models, "weights_status", lambda n: dataclasses.replace(real, url=f"{base}/{name}")
        )
        calls = []
        model, _ = load_backbone("resnet18", pretrained=True, progress=lambda d, t: calls.append((d, t)))
        size = (www / name).stat().st_size
        assert calls[-1] == (size, size)
        assert real.path.read_bytes() == (www / name).read_bytes()
        assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])

    def test_bad_hash_leaves_nothing(self, torch_home, file_server, monkeypatch):
        """A file whose SHA-256 does not match its torch.hub name prefix is rejected and not kept."""
        www, base = file_server
        _, name = self.serve_weights(www, tamper=True)
        real = weights_status("resnet18")
        monkeypatch.setattr(
            torchvision_models, "weights_status", lambda n: dataclasses.replace(real, url=f"{base}/{name}")
        )
        with pytest.raises(WeightsUnavailableError, match="SHA-256"):
            load_backbone("resnet18", pretrained=True)
        assert not real.path.exists()
        assert list(real.path.parent.iterdir()) == []


def solid(size=(300, 200), colour=(200, 100, 50)) -> Image.Image:
    return Image.new("RGB", size, colour)


class TestTransforms:
    def test_pretrained_eval_matches_the_weights_preset(self):
        """Eval preprocessing of pretrained backbones is the weights' own transforms()."""
        g = torch.Generator().manual_seed(0)
        arr = torch.randint(0, 256, (180, 260, 3), generator=g, dtype=torch.uint8).numpy()
        image = Image.fromarray(arr)
        for name, weights in TORCHVISION_WEIGHTS.items():
            out = image_transform(name, pretrained=True)(image)
            assert out.shape == (3, 224, 224) and out.dtype == torch.float32
            torch.testing.assert_close(out, weights.transforms()(image))

    @pytest.mark.parametrize("pretrained", [True, False])
    def test_eval_normalises_with_imagenet_statistics(self, pretrained):
        """A flat colour maps to (c / 255 - mean) / std in every pixel."""
        colour = (200, 100, 50)
        out = image_transform("resnet18", pretrained)(solid(colour=colour))
        mean = torch.tensor([0.485, 0.456, 0.406])
        std = torch.tensor([0.229, 0.224, 0.225])
        expected = (torch.tensor(colour) / 255 - mean) / std
        assert out.shape == (3, 224, 224)
        torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)
        assert out.std(dim=(1, 2)).max() < 1e-4

    def test_augment_is_random_crop_and_flip(self):
        """augment=True gives 224 crops that vary with the RNG."""
        g = torch.Generator().manual_seed(1)
        image = Image.fromarray(torch.randint(0, 256, (120, 160, 3), generator=g, dtype=torch.uint8).numpy())
        transform = image_transform("resnet18", True, augment=True)
        torch.manual_seed(0)
        a = transform(image)
        b = transform(image)
        torch.manual_seed(0)
        assert torch.equal(transform(image), a)
        assert a.shape == (3, 224, 224)
        assert not torch.equal(a, b)

    def test_transform_key_tells_transforms_apart(self):
        """Eval and augment differ; a bicubic preset differs from a bilinear one; keys are stable."""
        assert transform_key("resnet18", True) == transform_key("resnet18", True)
        assert transform_key("resnet18", True) != transform_key("resnet18", True, augment=True)
        assert transform_key("efficientnet_b0", True) != transform_key("resnet18", True)
