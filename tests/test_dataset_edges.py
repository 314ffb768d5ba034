"""Edges of opening a dataset: class folders behind symlinks, a class with no decodable image, files that
are no image among the duplicates, split options on a dataset with its own val split, the order of the
splits and the stray entries of a folder used in place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import make_class_folders, make_image_folder, run_cli, zip_folder

from qtl.data.datasets import find_duplicates, open_dataset, read_manifest
from qtl.data.folders import DatasetError
from qtl.data.images import ImageFolderDataset


def arranged(store: Path) -> list[str]:
    return sorted(p.name for p in store.iterdir() if not p.name.startswith("."))


class TestLinkedClassFolders:
    def test_an_image_added_behind_a_linked_class_folder_arranges_again(self, tmp_path):
        """The arranged copy of a folder whose class folders are symlinks is keyed on what the links hold:
        an image added to a linked folder gives a new arrangement that counts it (the old key listed the
        links alone, so the stale copy was reused)."""
        make_class_folders(tmp_path / "real", 2, 5)
        linked = tmp_path / "linked"
        linked.mkdir()
        for c in ("class_0", "class_1"):
            os.symlink(tmp_path / "real" / c, linked / c)
        store = tmp_path / "store"
        before = open_dataset(linked, store=store)
        assert sum(before.counts["train"].values()) + sum(before.counts["val"].values()) == 10
        shutil.copy(tmp_path / "real/class_0/0_0.png", tmp_path / "real/class_0/0_new.png")
        after = open_dataset(linked, store=store)
        assert after.root != before.root
        assert after.counts["train"]["class_0"] + after.counts["val"]["class_0"] == 6
        assert open_dataset(linked, store=store).root == after.root  # unchanged: found again

    def test_a_link_loop_is_read_once(self, tmp_path):
        """A link back to the folder itself (a loop) is walked once: the key is found, the same each time,
        and the loop is skipped by the arrangement as a folder without images."""
        src = make_class_folders(tmp_path / "src", 2, 4)
        os.symlink(src, src / "loop")
        os.symlink(src / "class_0", src / "class_1" / "back")
        store = tmp_path / "store"
        ds = open_dataset(src, store=store)
        assert ds.classes == ["class_0", "class_1"] and open_dataset(src, store=store).root == ds.root
        assert ("class_1/back", "a folder inside a class folder") in ds.skipped


class TestClassWithoutReadableImage:
    def test_refused_where_images_are_decoded(self, tmp_path, capsys):
        """val/dogs holding only an empty file passes the file listing (it is named .png) but has no image
        to score: decoding the split refuses it in one line naming split, class and file, and `qtl data`
        fails with that line (it said "dogs 0" and "ok")."""
        root = make_image_folder(tmp_path / "d")
        for f in (root / "val/dogs").iterdir():
            f.unlink()
        (root / "val/dogs/zero.png").write_bytes(b"")
        assert len(ImageFolderDataset(root, "train")) == 12  # the other split is whole
        message = r"^val/dogs has no readable image \(1 unreadable: zero.png: an empty file \(0 bytes\)\) in "
        with pytest.raises(DatasetError, match=message):
            ImageFolderDataset(root, "val")
        code, out, err = run_cli(capsys, "data", "--path", root, "--no-download", "-q")
        assert code == 1 and "val/dogs has no readable image" in err and "ok" not in out.split()

    def test_named_in_the_users_folder_with_what_to_do(self, tmp_path, capsys):
        """Class folders only, arranged by qtl under its cache: the refusal names the user's folder holding
        the unreadable files (not the arranged copy's) and what to do."""
        root = make_class_folders(tmp_path / "flat", 2, 5)
        for f in (root / "class_1").iterdir():
            f.write_bytes(b"")  # every image of one class empty: val draws only unreadable ones
        code, _, err = run_cli(capsys, "data", "--path", root, "--no-download", "-q")
        (line,) = err.strip().splitlines()
        assert code == 1 and "/class_1 has no readable image" in line, line
        assert line.endswith(
            f" in {(root / 'class_1').resolve()}: replace or remove them, or add a readable image"
        )

    def test_one_readable_image_is_enough(self, tmp_path):
        """A class with a broken file beside a good one keeps the good one (the broken one is skipped)."""
        root = make_image_folder(tmp_path / "d", per_split=(2, 2))
        (root / "val/dogs/dogs_0.png").write_bytes(b"not a png")
        val = ImageFolderDataset(root, "val")
        assert val.targets == [0, 0, 1] and [p.name for p, _ in val.skipped] == ["dogs_0.png"]


class TestDuplicatesOfNoImage:
    def test_empty_and_undecodable_files_are_unread_not_twins(self, tmp_path):
        """Two empty files, or two copies of one non-image, are byte-identical but no image: counted as
        unreadable, never reported as the same image under two classes. A real twin still is."""
        root = make_image_folder(tmp_path / "d")
        for c in ("cats", "dogs"):
            (root / "train" / c / "l_zero.png").write_bytes(b"")
            (root / "train" / c / "notes.png").write_bytes(b"hello, not an image")
        assert find_duplicates(root, ["cats", "dogs"]).across_classes == 0
        shutil.copy(root / "train/cats/cats_0.png", root / "train/dogs/twin.png")
        dups = find_duplicates(root, ["cats", "dogs"])
        assert dups.across_examples == (("train/cats/cats_0.png", "train/dogs/twin.png"),)
        assert (dups.images, dups.unread) == (21, 4)
        assert dups.checked == "21 image files, 4 unreadable not checked"


class TestSplitOptionsOnOwnSplits:
    def test_a_zip_with_val_is_arranged_once_and_says_the_options_did_not_apply(self, tmp_path):
        """A zip with its own val/ given a val ratio and seed is found again as the one arrangement (it was
        extracted into a second, identical folder named -r0.5-s0), and `.notes` says why the options did
        not apply; a zip of class folders is split as asked, with no note."""
        archive = zip_folder(make_image_folder(tmp_path / "d"), tmp_path / "d.zip")
        store = tmp_path / "store"
        plain = open_dataset(archive, store=store)
        asked = open_dataset(archive, val_ratio=0.5, seed=3, store=store)
        assert asked.root == plain.root and arranged(store) == [plain.root.name]
        assert plain.notes == [] and asked.val_ratio is None and asked.counts == plain.counts
        said = "the split asked for (val ratio 0.5, seed 3) does not apply: d.zip has its own val split"
        assert asked.notes == [said + ", used as it is"]
        store2 = tmp_path / "store2"  # asked first, then the default: still the one folder
        assert open_dataset(archive, val_ratio=0.5, store=store2).root.name == plain.root.name
        assert open_dataset(archive, store=store2).root.name == plain.root.name
        assert "notes" not in (plain.root / "qtl-dataset.json").read_text() and "notes" not in plain.record()

        classes = zip_folder(make_class_folders(tmp_path / "c", 2, 6), tmp_path / "c.zip")
        split = open_dataset(classes, val_ratio=0.5, seed=3, store=store)
        assert split.root.name.endswith("-r0.5-s3") and (split.val_ratio, split.seed, split.notes) == (
            0.5,
            3,
            [],
        )
        assert open_dataset(classes, val_ratio=0.5, seed=3, store=store).root == split.root

    def test_a_folder_used_in_place_notes_the_options(self, tmp_path):
        root = make_image_folder(tmp_path / "d")
        assert (
            open_dataset(root, val_ratio=0.3, store=tmp_path / "s")
            .notes[0]
            .startswith("the split asked for (val ratio 0.3, seed 0) does not apply")
        )
        assert open_dataset(root, store=tmp_path / "s").notes == []


class TestListing:
    def test_splits_in_train_val_test_order(self, tmp_path):
        """Counts list train, val, test (an arranged folder listed them by name: test, train, val), also
        from a manifest written in that order."""
        root = make_image_folder(tmp_path / "d")
        shutil.copytree(root / "val", root / "test")
        ds = open_dataset(zip_folder(root, tmp_path / "d.zip"), store=tmp_path / "store")
        assert list(ds.counts) == ["train", "val", "test"]
        manifest = ds.root / "qtl-dataset.json"
        d = json.loads(manifest.read_text())
        d["counts"] = {s: d["counts"][s] for s in ("test", "train", "val")}
        manifest.write_text(json.dumps(d))
        assert list(read_manifest(ds.root).counts) == ["train", "val", "test"]

    def test_stray_entries_of_a_folder_used_in_place_are_listed(self, tmp_path):
        """Entries beside the splits and beside a split's class folders are listed with their reasons, as
        an arranged folder lists them (they were not listed at all)."""
        root = make_image_folder(tmp_path / "d")
        (root / "README.txt").write_text("x")
        (root / "train/notes.txt").write_text("x")
        (root / "train/.DS_Store").write_bytes(b"\x00")
        (root / "val/Thumbs.db").write_bytes(b"\x00")
        ds = open_dataset(root, store=tmp_path / "store")
        assert ds.root == root
        assert ds.skipped == [
            ("README.txt", "not in train/val/test"),
            ("train/.DS_Store", "hidden file"),
            ("train/notes.txt", "not inside a class folder"),
            ("val/Thumbs.db", "Windows thumbnail cache"),
        ]
