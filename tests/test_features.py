"""The feature cache: hits skip the backbone, every key ingredient invalidates, results match the backbone."""

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


def test_features_equal_running_the_backbone_directly(tiny_image_folder, tmp_path):
    """Extracted (N, F) features are the backbone's outputs on the eval-transformed images, in order."""
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
