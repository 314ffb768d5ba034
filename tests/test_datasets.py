"""qtl.data.datasets: one entry point for hymenoptera, folders and zips; layouts, junk, the seeded split."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_class_folders, make_image_folder, zip_folder

from qtl.data.archive import ArchiveError
from qtl.data.datasets import (
    MANIFEST,
    delete_dataset,
    list_datasets,
    open_dataset,
    read_manifest,
    stratified_split,
)
from qtl.data.folders import DatasetError, list_images
from qtl.data.images import ImageFolderDataset
from qtl.data.sources import resolve_dataset

PNG = b"\x89PNG\r\n\x1a\n" + bytes.fromhex(
    "0000000d49484452000000010000000108000000003a7e9b55"  # IHDR: 1 x 1, 8-bit gray
    "0000000a4944415478da6360000000020001e221bc33"  # IDAT
    "0000000049454e44ae426082"  # IEND
)  # a real 1-pixel image: the layouts below are refused for their layout, not for unreadable files

JUNK = {
    "__MACOSX/shapes/._class_0": b"\x00\x05\x16\x07",
    "shapes/.DS_Store": b"\x00",
    "shapes/README.txt": b"my images",
    "shapes/class_1/notes.txt": b"n",
    "shapes/class_1/.hidden.png": b"x",
    "shapes/class_2/more/9.png": b"x",
}


def names(root: Path, split: str, cls: str) -> list[str]:
    return sorted(p.name for p in (root / split / cls).iterdir())


@pytest.fixture
def three(tmp_path) -> Path:
    """3 classes x 10 images, class folders only."""
    return make_class_folders(tmp_path / "three", 3, 10)


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


def test_a_class_named_train_is_a_class(three, tmp_path, store):
    """Class folders "train", "bus", "car" (vehicles): three classes, split here; "train" was taken for
    the training split, and the dataset had 0 classes. A train/ of class folders stays the split."""
    vehicles = tmp_path / "vehicles"
    vehicles.mkdir()
    for name, cls in zip(("train", "bus", "car"), sorted(three.iterdir()), strict=True):
        cls.rename(vehicles / name)
    ds = open_dataset(vehicles, store=store)
    assert ds.layout == "classes" and ds.classes == ["bus", "car", "train"]
    from qtl.data.folders import scan

    assert scan(ds.root)[0] == "splits"  # its arranged train/ holds class folders: the split
    # train/ and test/ of unlabelled images (labels kept elsewhere) are no two classes "test" and "train"
    kaggle = tmp_path / "kaggle"
    for split in ("train", "test"):
        (kaggle / split).mkdir(parents=True)
        for i, image in enumerate(sorted((vehicles / "bus").iterdir())[:3]):
            (kaggle / split / f"cat.{i}{image.suffix}").write_bytes(image.read_bytes())
    with pytest.raises(DatasetError, match="found 0"):
        open_dataset(kaggle, store=store)


class TestZip:
    def test_class_folders_in_a_wrapper_with_junk(self, three, tmp_path, store):
        """A macOS-style zip: wrapper folder, __MACOSX, dotfiles, text, a nested folder: each skipped once."""
        archive = zip_folder(three, tmp_path / "shapes.zip", prefix="shapes/", extra=JUNK)
        ds = open_dataset(archive, store=store)
        assert ds.layout == "classes" and ds.classes == ["class_0", "class_1", "class_2"]
        assert ds.counts == {"train": dict.fromkeys(ds.classes, 8), "val": dict.fromkeys(ds.classes, 2)}
        assert (ds.val_ratio, ds.seed, ds.source) == (0.2, 0, "shapes.zip")
        reasons = dict(ds.skipped)
        assert len(ds.skipped) == len(reasons) == 6  # each exactly once
        assert reasons["__MACOSX"] == "macOS archive metadata"
        assert reasons["shapes/.DS_Store"] == "hidden file"
        assert reasons["shapes/README.txt"] == "not inside a class folder"
        assert reasons["shapes/class_1/notes.txt"] == "not an image file (.txt)"
        assert reasons["shapes/class_1/.hidden.png"] == "hidden file"
        assert reasons["shapes/class_2/more"] == "a folder inside a class folder"
        # a ready ImageFolder root inside the store, with nothing else left there
        assert ds.root.parent == store and sorted(os.listdir(store)) == [ds.root.name]
        assert len(ImageFolderDataset(ds.root, "val")) == 6
        assert read_manifest(ds.root) == ds

    def test_same_zip_is_extracted_once(self, three, tmp_path, store):
        archive = zip_folder(three, tmp_path / "shapes.zip")
        first = open_dataset(archive, store=store)
        stamp = first.root.stat().st_mtime_ns
        with open(archive, "rb") as f:  # an upload: a binary file object
            again = open_dataset(f, store=store)
        assert again.root == first.root and first.root.stat().st_mtime_ns == stamp

    def test_splits_with_aliases_and_test(self, tmp_path, store):
        src = make_image_folder(tmp_path / "src", classes=("a", "b", "c"), per_split=(5, 2))
        (src / "val").rename(src / "validation")
        shutil.copytree(src / "validation", src / "test")
        ds = open_dataset(zip_folder(src, tmp_path / "s.zip"), store=store)
        assert ds.layout == "splits" and ds.val_ratio is None
        assert ds.counts == {s: dict.fromkeys("abc", n) for s, n in (("train", 5), ("val", 2), ("test", 2))}
        assert len(ImageFolderDataset(ds.root, "test")) == 6

    def test_train_only_gets_a_val_split(self, tmp_path, store):
        src = make_image_folder(tmp_path / "src", per_split=(10, 1))
        shutil.rmtree(src / "val")
        ds = open_dataset(zip_folder(src, tmp_path / "t.zip"), store=store, val_ratio=0.3)
        assert ds.counts["val"] == {"cats": 3, "dogs": 3} and ds.val_ratio == 0.3

    def test_hostile_zip_leaves_the_store_empty(self, tmp_path, store):
        import zipfile

        with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
            zf.writestr("a/1.png", b"x")
            zf.writestr("../../escape.png", b"x")
        with pytest.raises(ArchiveError, match="leaves the target folder"):
            open_dataset(tmp_path / "evil.zip", store=store)
        assert os.listdir(store) == []
        assert not (tmp_path / "escape.png").exists()

    @pytest.mark.parametrize(
        ("members", "message"),
        [
            ({"only/1.png": PNG, "only/2.png": PNG}, r"2 class folders with images, found 1 \(only\)"),
            ({"wrap/only/1.png": PNG, "wrap/only/2.png": PNG}, r"found 1 \(only\)"),  # in a wrapper
            ({"only/1.png": PNG}, r"found 1 \(only\)"),  # the classes before the split's image count
            ({"a/1.png": PNG, "b/1.png": PNG, "b/2.png": PNG}, "class 'a' has 1 image"),
            ({"notes.txt": b"x"}, r"found 0; skipped notes.txt \(not inside a class folder\): images go "),
            # images a folder too deep: what was skipped says so (it said "found 0" and no more)
            (
                {"ants/sub/1.png": PNG, "bees/sub/1.png": PNG},
                r"found 0; skipped ants/sub \(a folder inside a "
                r"class folder\); .*: images go directly in <class>/ folders, or in train/<class>/",
            ),
        ],
    )
    def test_unusable_layouts_say_why(self, tmp_path, store, members, message):
        import zipfile

        with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        with pytest.raises(DatasetError, match=message):
            open_dataset(tmp_path / "bad.zip", store=store)
        assert os.listdir(store) == []


class TestSplit:
    def test_stratified_and_reproducible(self, three, store, tmp_path):
        """Same seed: same split in another store; another seed: another split; classes keep their share."""
        a = open_dataset(three, store=store, seed=3)
        b = open_dataset(three, store=tmp_path / "other", seed=3)
        c = open_dataset(three, store=store, seed=4)
        for cls in a.classes:
            assert names(a.root, "val", cls) == names(b.root, "val", cls)
            assert len(names(a.root, "val", cls)) == 2
            assert not set(names(a.root, "val", cls)) & set(names(a.root, "train", cls))
        assert any(names(a.root, "val", k) != names(c.root, "val", k) for k in a.classes)
        assert a.root != c.root

    def test_every_class_keeps_one_image_each_side(self):
        train, val = stratified_split({"a": [1, 2], "b": list(range(100))}, 0.01, 0)
        assert (len(train["a"]), len(val["a"]), len(val["b"])) == (1, 1, 1)
        train, val = stratified_split({"a": [1, 2]}, 0.99, 0)
        assert (len(train["a"]), len(val["a"])) == (1, 1)

    def test_bad_ratio(self, three):
        with pytest.raises(DatasetError, match="strictly between 0 and 1"):
            open_dataset(three, val_ratio=1.0)


class TestFolder:
    def test_canonical_folder_is_used_in_place(self, tiny_image_folder, store):
        ds = open_dataset(tiny_image_folder, store=store)
        assert ds.root == tiny_image_folder and ds.layout == "splits" and not store.exists()
        assert ds.counts["train"] == {"cats": 6, "dogs": 6}

    def test_class_folders_are_linked_and_the_source_untouched(self, three, store):
        before = sorted(p.relative_to(three) for p in three.rglob("*"))
        ds = open_dataset(three, store=store)
        assert sorted(p.relative_to(three) for p in three.rglob("*")) == before
        first = next((ds.root / "train" / "class_0").iterdir())
        assert first.is_symlink() and first.resolve().parent == three / "class_0"
        assert open_dataset(ds.root).root == ds.root  # an arranged root reads its manifest

    def test_default_store_and_hymenoptera(self, three, tmp_path, monkeypatch, hymenoptera_dir):
        monkeypatch.setenv("QTL_CACHE_DIR", str(tmp_path / "cache"))
        root = open_dataset(zip_folder(three, tmp_path / "three.zip")).root
        assert root.parent == tmp_path / "cache" / "datasets"
        assert len(list_images(root, "train", ["class_0", "class_1", "class_2"])) == 24
        assert resolve_dataset(root) == root  # an arranged root is an ordinary dataset root
        monkeypatch.setenv("QTL_DATA_DIR", str(hymenoptera_dir))
        hym = open_dataset(download=False)
        assert hym.source == "hymenoptera" and hym.classes == ["ants", "bees"]
        assert hym.counts == {"train": {"ants": 124, "bees": 121}, "val": {"ants": 70, "bees": 83}}

    def test_missing_source(self, tmp_path):
        with pytest.raises(DatasetError, match="does not exist"):
            open_dataset(tmp_path / "nowhere")


class TestStore:
    def test_list_and_delete(self, three, tmp_path, store):
        ds = open_dataset(zip_folder(three, tmp_path / "x.zip"), store=store)
        assert [d.root for d in list_datasets(store)] == [ds.root]
        delete_dataset(ds.root, store)
        assert list_datasets(store) == []

    def test_delete_refuses_anything_else(self, three, store, tmp_path):
        (store / "mine").mkdir(parents=True)
        for target in (three, store / "mine", store):
            with pytest.raises(DatasetError, match="left alone"):
                delete_dataset(target, store)
        assert (three / "class_0").is_dir() and (store / "mine").is_dir()

    def test_manifest_records_the_split(self, three, store):
        ds = open_dataset(three, store=store, val_ratio=0.3, seed=7)
        rec = ds.record()
        assert (rec["val_ratio"], rec["seed"], rec["layout"], rec["source"]) == (
            0.3,
            7,
            "classes",
            three.name,  # a folder outside the data folder and the store is recorded by its name
        )
        assert (ds.root / MANIFEST).is_file() and rec["n_skipped"] == 0


def test_feature_cache_keys_follow_the_split_and_the_bytes(three, tmp_path):
    """The feature cache key names the split's files and bytes: same split, same key (even in another
    store); another seed or a changed image, another key."""
    from qtl.data.features import cache_key

    def key(ds):
        return cache_key("resnet18", False, ds.root, "train")

    a = open_dataset(three, store=tmp_path / "a", seed=0)
    assert key(a) == key(open_dataset(three, store=tmp_path / "b", seed=0))
    assert key(a) != key(open_dataset(three, store=tmp_path / "c", seed=1))
    before = key(a)
    victim = sorted((a.root / "train" / "class_0").iterdir())[0]
    victim.resolve().write_bytes(victim.read_bytes() + b"\0")  # the source file the link points to
    assert key(a) != before
