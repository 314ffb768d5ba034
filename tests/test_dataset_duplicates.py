"""Byte-identical images in a dataset: leaks across splits, the same image under two classes, copies inside
one class; found by qtl.data.datasets, kept in the manifest, printed by `qtl data`, shown on the Data page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_image_folder, run_cli, zip_folder
from test_app import app, app_env, texts  # noqa: F401  (app_env is a fixture)

from qtl.data.datasets import MANIFEST, Duplicates, Leak, open_dataset, read_manifest

LEAK = ("val/cats/leak.png", "train/cats/cats_0.png")  # (copy, original)
ACROSS = ("train/cats/cats_1.png", "train/dogs/cross.png")  # (first class's, the other class's)
WITHIN = ("train/dogs/dogs_2.png", "train/dogs/again.png")  # (copy, first in the folder by name)
EXPECTED = Duplicates(
    images=23,  # 20 generated + 3 copies
    leaks=(Leak("val", "train", 1, (LEAK,)),),
    across_classes=1,
    across_examples=(ACROSS,),
    within=1,
    within_examples=(WITHIN,),
)


def copy(root: Path, src: str, dst: str) -> None:
    shutil.copyfile(root / src, root / dst)


@pytest.fixture
def clean(tmp_path) -> Path:
    """train/{cats,dogs} 6 each, val/ 4 each, every image different."""
    return make_image_folder(tmp_path / "clean")


@pytest.fixture
def dups(tmp_path) -> Path:
    """The clean folder with one train image copied to val, one to the other class and one in its class."""
    root = make_image_folder(tmp_path / "dups")
    copy(root, LEAK[1], LEAK[0])
    copy(root, ACROSS[0], ACROSS[1])
    copy(root, WITHIN[0], WITHIN[1])
    return root


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store"


class TestFound:
    def test_each_kind_is_counted_with_an_example(self, dups):
        """A folder used in place is not hashed when opened, and is when asked."""
        ds = open_dataset(dups)
        assert ds.root == dups and ds.duplicates is None  # open_dataset (training) hashes nothing
        assert ds.check_duplicates() == EXPECTED and ds.duplicates == EXPECTED
        levels = [level for level, _ in EXPECTED.summary()]
        assert levels == ["warning", "warning", "note"]

    def test_a_clean_dataset_has_none(self, clean):
        found = open_dataset(clean).check_duplicates()
        assert found == Duplicates(images=20) and not found.found and found.summary() == []

    def test_counts_are_per_split_and_examples_capped(self, clean):
        """5 val copies of train images: one leak of 5 with 3 examples; a test image copied from val is a
        leak of test against val, one copied from train against train, as is one in train and val (the
        earliest twin)."""
        for i in range(5):
            copy(clean, f"train/dogs/dogs_{i}.png", f"val/dogs/v{i}.png")
        (clean / "test" / "cats").mkdir(parents=True)
        (clean / "test" / "dogs").mkdir(parents=True)
        copy(clean, "val/cats/cats_0.png", "test/cats/from_val.png")
        copy(clean, "train/dogs/dogs_5.png", "test/dogs/from_train.png")
        copy(clean, "train/dogs/dogs_0.png", "test/dogs/both.png")  # in val (v0.png) too: against train
        found = open_dataset(clean).check_duplicates()
        assert [(x.split, x.twin_split, x.count, len(x.examples)) for x in found.leaks] == [
            ("val", "train", 5, 3),
            ("test", "train", 2, 2),
            ("test", "val", 1, 1),
        ]
        assert found.leaks[1].examples == (
            ("test/dogs/both.png", "train/dogs/dogs_0.png"),
            ("test/dogs/from_train.png", "train/dogs/dogs_5.png"),
        )
        assert found.leaks[0].examples[0] == ("val/dogs/v0.png", "train/dogs/dogs_0.png")
        assert (found.across_classes, found.within) == (0, 0)
        said = [s for _, s in found.summary()]
        assert said[0].startswith("5 val images are byte-identical to train images")
        assert said[2].startswith("1 test image is byte-identical to a val image")

    def test_a_changed_folder_is_checked_again(self, clean):
        """The per-process cache keys on the folders' versions: a copy added later is found."""
        assert not open_dataset(clean).check_duplicates().found
        folder = clean / "val" / "cats"
        copy(clean, "train/cats/cats_0.png", "val/cats/late.png")
        st = folder.stat()  # a coarse clock may leave the folder's mtime as it was: move it on
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert open_dataset(clean).check_duplicates().leaks[0].examples == (
            ("val/cats/late.png", "train/cats/cats_0.png"),
        )


class TestManifest:
    def test_arranged_once_and_kept_in_the_manifest(self, dups, tmp_path, store):
        """An arranged zip's manifest holds the duplicates (read back equal); a checkpoint's record does
        not carry them."""
        ds = open_dataset(zip_folder(dups, tmp_path / "dups.zip"), store=store)
        assert ds.root.parent == store and ds.duplicates == EXPECTED
        assert json.loads((ds.root / MANIFEST).read_text())["duplicates"]["within"] == 1
        assert read_manifest(ds.root) == ds
        assert "duplicates" not in ds.record()

    def test_an_older_manifest_loads_and_is_checked_when_asked(self, dups, tmp_path, store):
        ds = open_dataset(zip_folder(dups, tmp_path / "dups.zip"), store=store)
        d = json.loads((ds.root / MANIFEST).read_text())
        del d["duplicates"]
        (ds.root / MANIFEST).write_text(json.dumps(d))
        old = read_manifest(ds.root)
        assert old is not None and old.duplicates is None and old.counts == ds.counts
        assert old.check_duplicates() == EXPECTED

    def test_an_unreadable_duplicates_entry_is_not_checked(self, clean, tmp_path, store):
        ds = open_dataset(zip_folder(clean, tmp_path / "clean.zip"), store=store)
        d = json.loads((ds.root / MANIFEST).read_text())
        d["duplicates"] = {"images": 3}
        (ds.root / MANIFEST).write_text(json.dumps(d))
        assert read_manifest(ds.root).duplicates is None


class TestCli:
    def test_qtl_data_warns_with_examples(self, capsys, dups):
        code, out, _ = run_cli(capsys, "data", "--path", dups, "--no-download")
        assert code == 0
        lines = out.splitlines()
        assert (
            "warning: 1 val image is byte-identical to a train image (a leak: it flatters val accuracy), "
            f"e.g. {LEAK[0]} = {LEAK[1]}"
        ) in lines
        assert (
            f"warning: the same image under two or more classes: 1 image, e.g. {ACROSS[0]} = {ACROSS[1]}"
            in lines
        )
        (note,) = [line for line in lines if line.startswith("note: ")]
        assert note.startswith("note: 1 extra copy of an image inside one split and class (less serious")
        assert note.endswith(f"e.g. {WITHIN[0]} = {WITHIN[1]}")
        assert "duplicates: none" not in out

    def test_qtl_data_on_a_clean_dataset_warns_of_nothing(self, capsys, clean):
        code, out, _ = run_cli(capsys, "data", "--path", clean, "--no-download")
        assert code == 0
        assert "duplicates: none (SHA-256 of 20 image files)" in out.splitlines()
        assert "warning" not in out and "byte-identical" not in out and "note:" not in out


class TestUnreadable:
    def test_an_unreadable_image_is_counted_not_fatal(self, capsys, clean, tmp_path, store, monkeypatch):
        """A file the hashing cannot read (a permission, an I/O error) is counted as not checked: arranging
        a dataset, `qtl data` and the summary go on (it raised, so one such file stopped training)."""
        import qtl.data.datasets as datasets

        hashed = datasets.sha256_file

        def sha256_file(path):
            if Path(path).name == "cats_3.png":
                raise PermissionError(13, "Permission denied", str(path))
            return hashed(path)

        monkeypatch.setattr(datasets, "sha256_file", sha256_file)
        ds = open_dataset(zip_folder(clean, tmp_path / "clean.zip"), store=store)
        assert ds.duplicates == Duplicates(images=18, unread=2)  # cats_3.png in train and in val
        assert read_manifest(ds.root).duplicates == ds.duplicates
        code, out, _ = run_cli(capsys, "data", "--path", clean, "--no-download")
        assert code == 0
        assert "duplicates: none (SHA-256 of 18 image files, 2 unreadable not checked)" in out.splitlines()


class TestDataPage:
    def test_the_page_shows_them(self, app_env, dups, monkeypatch):  # noqa: F811
        monkeypatch.setenv("QTL_DATA_DIR", str(dups))
        at = app("data")
        assert not at.exception and not at.error, texts(at.error)
        warned = texts(at.warning)
        assert (
            "1 val image is byte-identical to a train image" in warned and f"{LEAK[0]} = {LEAK[1]}" in warned
        )
        assert "The same image under two or more classes: 1 image" in warned
        assert "1 extra copy of an image" in texts(at.info)
        assert "No byte-identical images" not in texts(at.caption)

    def test_a_clean_dataset_says_so(self, app_env, clean, monkeypatch):  # noqa: F811
        monkeypatch.setenv("QTL_DATA_DIR", str(clean))
        at = app("data")
        assert not at.exception and not at.warning
        assert "No byte-identical images (SHA-256 of 20 image files)." in texts(at.caption)
