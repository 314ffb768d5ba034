"""The feature cache: hits skip the backbone, every key ingredient invalidates, results match the backbone,
and the faster extraction (folded batch norms, bfloat16, drafts) stays close to the exact pass."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from qtl.data import features as features_module
from qtl.data.features import FeatureSet, cache_key, extract_features
from qtl.data.images import load_image
from qtl.models.backbones import image_transform, load_backbone

BACKBONE = "resnet18"


class BackboneBuilt(AssertionError):
    """Raised by the stand-in for load_backbone where a cache hit must not build one."""


def refuse_backbone(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise BackboneBuilt("the backbone was built")

    monkeypatch.setattr(features_module, "load_backbone", refuse)


def extract(root, cache_dir, split="train", **kwargs) -> FeatureSet:
    torch.manual_seed(0)  # random-init weights: the same backbone on every miss
    kwargs.setdefault("num_workers", 0)
    return extract_features(BACKBONE, False, root, split, cache_dir=cache_dir, **kwargs)


def float32_extraction(monkeypatch) -> None:
    monkeypatch.setattr(features_module, "extraction_dtype", lambda device: torch.float32)


def test_features_equal_running_the_backbone_directly(tiny_image_folder, tmp_path, monkeypatch):
    """Extracted (N, F) features are the backbone's outputs on the eval-transformed images, in order (in
    float32 the folded batch norms change nothing but rounding)."""
    float32_extraction(monkeypatch)
    fs = extract(tiny_image_folder, tmp_path / "cache")
    torch.manual_seed(0)
    model, dim = load_backbone(BACKBONE, pretrained=False)
    transform = image_transform(BACKBONE, pretrained=False)
    with torch.no_grad():
        direct = model(torch.stack([transform(load_image(p)) for p in fs.paths]))
    assert fs.features.shape == (12, dim) and fs.features.dtype == torch.float32
    torch.testing.assert_close(fs.features, direct, rtol=1e-4, atol=1e-5)
    assert fs.classes == ["cats", "dogs"]
    assert fs.labels.dtype == torch.long
    assert fs.labels.tolist() == [fs.classes.index(p.split("/")[-2]) for p in fs.paths]
    assert fs.views == 0 and fs.feature_dim == dim


def test_hit_returns_identical_tensors_without_the_backbone(tiny_image_folder, tmp_path, monkeypatch):
    """The second call reads the file: same tensors, same paths, and no backbone is built."""
    first = extract(tiny_image_folder, tmp_path / "cache")
    refuse_backbone(monkeypatch)
    second = extract(tiny_image_folder, tmp_path / "cache")
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert (second.paths, second.classes, second.key) == (first.paths, first.classes, first.key)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_cached_features_feed_autograd(tiny_image_folder, tmp_path):
    """Both fresh and cached features are ordinary tensors a trainable head can use."""
    for _ in range(2):
        fs = extract(tiny_image_folder, tmp_path / "cache")
        head = torch.nn.Linear(fs.feature_dim, 2)
        torch.nn.functional.cross_entropy(head(fs.features), fs.labels).backward()
        assert head.weight.grad is not None


def test_workers_give_the_same_features(tiny_image_folder, tmp_path):
    """Decoding in a worker process changes nothing."""
    cache = tmp_path / "cache"
    a = extract(tiny_image_folder, cache, "val", use_cache=False, num_workers=0)
    b = extract(tiny_image_folder, cache, "val", use_cache=False, num_workers=1, batch_size=3)
    torch.testing.assert_close(a.features, b.features, rtol=1e-4, atol=1e-5)
    assert not cache.exists()


def rewrite_one_pixel(path) -> None:
    image = Image.open(path).convert("RGB")
    r, g, b = image.getpixel((0, 0))
    image.putpixel((0, 0), ((r + 1) % 256, g, b))
    image.save(path)


class TestInvalidation:
    def test_changed_image_bytes(self, tiny_image_folder, tmp_path, monkeypatch):
        """Rewriting one pixel of one image misses the cache and re-runs the backbone."""
        cache = tmp_path / "cache"
        first = extract(tiny_image_folder, cache)
        rewrite_one_pixel(next((tiny_image_folder / "train" / "dogs").iterdir()))
        refuse_backbone(monkeypatch)
        with pytest.raises(BackboneBuilt):
            extract(tiny_image_folder, cache)
        monkeypatch.undo()
        second = extract(tiny_image_folder, cache)
        assert second.key != first.key
        assert len(list(cache.iterdir())) == 2

    def test_backbone_weights_transform_views_and_renames_change_the_key(
        self, tiny_image_folder, monkeypatch
    ):
        """Each ingredient of the key changes it on its own."""
        base = cache_key(BACKBONE, False, tiny_image_folder, "train")
        keys = {
            "precision": cache_key(BACKBONE, False, tiny_image_folder, "train", precision=torch.bfloat16),
            "backbone": cache_key("resnet34", False, tiny_image_folder, "train"),
            "weights": cache_key(BACKBONE, True, tiny_image_folder, "train"),
            "views": cache_key(BACKBONE, False, tiny_image_folder, "train", views=2),
            "split": cache_key(BACKBONE, False, tiny_image_folder, "val"),
        }
        assert cache_key(BACKBONE, False, tiny_image_folder, "train", views=2, seed=1) != keys["views"]
        monkeypatch.setattr(features_module, "transform_key", lambda *a, **k: "another transform")
        keys["transform"] = cache_key(BACKBONE, False, tiny_image_folder, "train")
        monkeypatch.undo()
        path = sorted((tiny_image_folder / "train" / "cats").iterdir())[0]
        path.rename(path.with_name(path.stem + "a.png"))  # same bytes, same sort position, new name
        keys["rename"] = cache_key(BACKBONE, False, tiny_image_folder, "train")
        assert base not in keys.values(), keys
        assert len(set(keys.values())) == len(keys)

    def test_same_bytes_new_mtime_keeps_the_key(self, tiny_image_folder):
        """Only contents count: rewriting identical bytes keeps the key."""
        before = cache_key(BACKBONE, False, tiny_image_folder, "train")
        path = next((tiny_image_folder / "train" / "cats").iterdir())
        path.write_bytes(path.read_bytes())
        assert cache_key(BACKBONE, False, tiny_image_folder, "train") == before

    def test_moved_dataset_hits_with_new_paths(self, tiny_image_folder, tmp_path, monkeypatch):
        """The key is content-addressed; a hit reports paths under the dataset's current location."""
        first = extract(tiny_image_folder, tmp_path / "cache")
        moved = tiny_image_folder.rename(tmp_path / "moved")
        refuse_backbone(monkeypatch)
        second = extract(moved, tmp_path / "cache")
        assert torch.equal(first.features, second.features)
        assert all(p.startswith(str(moved)) for p in second.paths)

    def test_corrupt_cache_file_is_recomputed(self, tiny_image_folder, tmp_path, caplog):
        """A damaged cache file is reported and replaced, never trusted."""
        first = extract(tiny_image_folder, tmp_path / "cache")
        (cache_file,) = (tmp_path / "cache").iterdir()
        cache_file.write_bytes(b"garbage")
        with caplog.at_level(logging.WARNING, logger="qtl.data.features"):
            second = extract(tiny_image_folder, tmp_path / "cache")
        assert "unreadable feature cache" in caplog.text
        torch.testing.assert_close(first.features, second.features)


class TestViews:
    def test_shape_and_reproducibility(self, tiny_image_folder, tmp_path):
        """views=k gives (k, N, F); the same seed repeats, another seed and each view differ."""
        a = extract(tiny_image_folder, tmp_path / "cache", "val", views=2)
        assert a.features.shape == (2, 8, a.feature_dim) and a.views == 2
        assert a.labels.shape == (8,)
        assert not torch.allclose(a.features[0], a.features[1])
        again = extract(tiny_image_folder, tmp_path, "val", views=2, use_cache=False)
        torch.testing.assert_close(a.features, again.features, rtol=1e-4, atol=1e-5)
        other = extract(tiny_image_folder, tmp_path, "val", views=2, seed=1, use_cache=False)
        assert not torch.allclose(a.features, other.features)

    def test_views_are_cached(self, tiny_image_folder, tmp_path, monkeypatch):
        """An explicit number of augmented views is cached like the eval view."""
        a = extract(tiny_image_folder, tmp_path / "cache", "val", views=2)
        refuse_backbone(monkeypatch)
        b = extract(tiny_image_folder, tmp_path / "cache", "val", views=2)
        assert torch.equal(a.features, b.features)

    @pytest.mark.parametrize("views", [-1, 1.5, True])
    def test_bad_views(self, tiny_image_folder, tmp_path, views):
        with pytest.raises(ValueError, match="views must be an int"):
            extract(tiny_image_folder, tmp_path, views=views)


def test_progress_and_skipped_files(tiny_image_folder, tmp_path):
    """progress(done, total) per batch; an undecodable file is left out and listed, also on a hit."""
    bad = tiny_image_folder / "train" / "cats" / "bad.jpg"
    bad.write_bytes(b"not an image")
    calls = []
    fs = extract(
        tiny_image_folder, tmp_path / "cache", batch_size=5, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(5, 12), (10, 12), (12, 12)]
    assert fs.skipped == [str(bad)] and len(fs.paths) == 12
    hit = extract(tiny_image_folder, tmp_path / "cache")
    assert hit.skipped == [str(bad)]


class TestFastExtraction:
    @pytest.mark.parametrize(("name", "pretrained"), [("resnet18", False), ("efficientnet_lite0", True)])
    def test_folded_batch_norms_compute_the_same_function(self, name, pretrained):
        """Every batch norm after a convolution folds (resnet18: all of them; efficientnet_lite0's come
        with activations, which stay), and the outputs agree to rounding on real images."""
        torch.manual_seed(0)
        model, _ = load_backbone(name, pretrained)
        model.eval()
        norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        folded = features_module.fold_batchnorm(model, torch.rand(1, 3, 64, 64))
        assert folded is not model and norms > 0
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want, got = model(x), folded(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))

    def test_a_fold_that_changes_the_function_is_refused(self, caplog):
        """A batch norm registered after a convolution but applied before it does not fold."""

        class NormFirst(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv, self.norm = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
                self.norm.running_mean.fill_(0.5)
                self.norm.running_var.fill_(4.0)

            def forward(self, x):
                return self.conv(self.norm(x))

        model = NormFirst().eval()
        with caplog.at_level(logging.WARNING):
            assert features_module.fold_batchnorm(model, torch.rand(1, 3, 8, 8)) is model
        assert "not folded" in caplog.text

    @pytest.mark.skipif(
        features_module.extraction_dtype("cpu") != torch.bfloat16, reason="this CPU has no native bfloat16"
    )
    def test_bfloat16_features_stay_close_to_float32(self, tmp_path, monkeypatch):
        """Where the CPU extracts in bfloat16, the pretrained efficientnet_lite0 features of photo-like
        images stay close to the float32 pass (norm of the difference over the norm: median under 10 %,
        every image under 20 %; cosine >= 0.99); they are cached under another key."""
        root = photo_folder(tmp_path / "data", short_side=300)
        fast = extract_features("efficientnet_lite0", True, root, "train", use_cache=False, num_workers=0)
        float32_extraction(monkeypatch)
        exact = extract_features("efficientnet_lite0", True, root, "train", use_cache=False, num_workers=0)
        relative = (fast.features - exact.features).norm(dim=1) / exact.features.norm(dim=1)
        assert float(relative.median()) < 0.1 and float(relative.max()) < 0.2
        assert float(torch.nn.functional.cosine_similarity(fast.features, exact.features).min()) > 0.99
        assert fast.key != exact.key


def test_exact_features_are_the_backbones_own_float32_outputs(tmp_path):
    """exact=True: large JPEGs decoded whole, no folding, float32 on any CPU: the backbone's outputs on
    the eval-transformed images to float32 rounding, whatever the fast path does here; cached apart."""
    root = photo_folder(tmp_path / "data", short_side=1100, per_class=2)
    fs = extract(root, tmp_path / "cache", exact=True)
    torch.manual_seed(0)
    model, _ = load_backbone(BACKBONE, pretrained=False)
    transform = image_transform(BACKBONE, pretrained=False)
    with torch.no_grad():
        direct = model.eval()(torch.stack([transform(load_image(p)) for p in fs.paths]))
    torch.testing.assert_close(fs.features, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))
    assert fs.key != extract(root, tmp_path / "cache").key


class TestDraftDecoding:
    def test_large_jpegs_decode_at_reduced_scale(self, tmp_path):
        """A 2048 x 1536 JPEG with draft 512 decodes at 1/2 (its short side stays >= 512); other formats
        and no draft decode at full size."""
        image = Image.radial_gradient("L").resize((2048, 1536)).convert("RGB")
        image.save(tmp_path / "big.jpg", quality=90)
        image.save(tmp_path / "big.png")
        assert load_image(tmp_path / "big.jpg", draft=512).size == (1024, 768)
        assert load_image(tmp_path / "big.jpg", draft=300).size == (512, 384)
        assert load_image(tmp_path / "big.jpg").size == (2048, 1536)
        assert load_image(tmp_path / "big.png", draft=512).size == (2048, 1536)

    def test_extraction_drafts_stay_close_to_full_decoding(self, tmp_path, monkeypatch):
        """Photo-like JPEGs of 4x the resize target: the eval pass decodes them at 1/2 scale, and the
        features stay within 5 % of decoding them whole."""
        root = photo_folder(tmp_path / "data", short_side=1100, per_class=2)
        float32_extraction(monkeypatch)
        drafted = extract(root, tmp_path / "cache", use_cache=False)
        monkeypatch.setattr(features_module, "DRAFT_MARGIN", 10**6)  # never smaller than the file
        whole = extract(root, tmp_path / "cache", use_cache=False)
        relative = (drafted.features - whole.features).norm(dim=1) / whole.features.norm(dim=1)
        assert 0 < float(relative.max()) < 0.05


def photo_folder(root, short_side: int, per_class: int = 3):
    """root/{train,val}/{a,b}/*.jpg: smooth photo-like images (blurred shapes on a gradient), 4:3; val
    holds one copy of each class's first."""
    from PIL import ImageDraw, ImageFilter

    g = torch.Generator().manual_seed(short_side)
    size = (short_side * 4 // 3, short_side)
    for c, cls in enumerate(("a", "b")):
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
        for i in range(per_class):
            image = Image.linear_gradient("L").resize(size).convert("RGB")
            draw = ImageDraw.Draw(image)
            for _ in range(12):
                x, y = (int(v) for v in torch.randint(0, short_side, (2,), generator=g))
                r = int(torch.randint(short_side // 20, short_side // 4, (1,), generator=g))
                colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=g))
                (draw.ellipse if c else draw.rectangle)((x, y, x + r, y + r), fill=colour)
            image.filter(ImageFilter.GaussianBlur(short_side / 200)).save(
                root / "train" / cls / f"{i}.jpg", quality=92
            )
        (root / "val" / cls / "0.jpg").write_bytes((root / "train" / cls / "0.jpg").read_bytes())
    return root
