"""Edges of opening a dataset: class folders behind symlinks, a class with no decodable image, files that
are no image among the duplicates, split options on a dataset with its own val split, the order of the
splits and the stray entries of a folder used in place."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
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
        for f in (root / "class_1").iterdir():  # every image of one class cut short: its header opens (the
            f.write_bytes(f.read_bytes()[:64])  # arrangement keeps it), its pixels do not decode
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


class TestFilesThatAreNoImage:
    """A zip or a folder arranged by qtl: a file named as an image whose header Pillow cannot open is
    skipped and listed with its reason (it was arranged and counted, and training failed later), and a
    class left with no readable image is refused, naming the class (the Data page made it active)."""

    @pytest.mark.parametrize("kind", ["zip", "folder"])
    def test_skipped_and_listed_with_the_reason(self, tmp_path, kind):
        src = make_class_folders(tmp_path / "src", 2, 5)
        (src / "class_0/broken.png").write_bytes(b"not an image")
        (src / "class_1/empty.jpg").write_bytes(b"")
        (src / "class_1/notes.txt").write_text("x")
        given = zip_folder(src, tmp_path / "src.zip") if kind == "zip" else src
        ds = open_dataset(given, store=tmp_path / "store")
        assert ds.skipped == [
            ("class_0/broken.png", "not a readable image"),
            ("class_1/empty.jpg", "not a readable image (an empty file)"),
            ("class_1/notes.txt", "not an image file (.txt)"),
        ]
        assert ds.counts == {"train": {"class_0": 4, "class_1": 4}, "val": {"class_0": 1, "class_1": 1}}
        placed = sorted(p.name for p in ds.root.rglob("*.*") if p.name != "qtl-dataset.json")
        assert len(placed) == 10 and "broken.png" not in placed and "empty.jpg" not in placed
        assert read_manifest(ds.root).skipped == ds.skipped

    def test_a_class_with_no_readable_image_is_refused(self, tmp_path):
        """The app's broken.zip: every .png of both classes is text. Refused in one line naming the class,
        its unreadable files and why (it was "2 classes, 6 images"); nothing is left in the store."""
        with zipfile.ZipFile(tmp_path / "broken.zip", "w") as zf:
            for c in ("cats", "dogs"):
                for i in range(3):
                    zf.writestr(f"{c}/{i}.png", b"not an image")
        store = tmp_path / "store"
        with pytest.raises(DatasetError) as caught:
            open_dataset(tmp_path / "broken.zip", store=store)
        assert str(caught.value) == (
            "broken.zip: cats/ has no readable image (3 unreadable: 0.png, 1.png, 2.png: not a readable "
            "image): replace or remove them, or add a readable image"
        )
        assert arranged(store) == []

    def test_a_split_class_with_no_readable_image_is_refused(self, tmp_path):
        """In a train/val layout the refusal names the split's class folder, below a wrapping folder too;
        an image beside the broken files would have been enough."""
        root = make_image_folder(tmp_path / "d")
        for f in (root / "val/dogs").iterdir():
            f.write_bytes(b"GIF8 but no image")
        archive = zip_folder(root, tmp_path / "d.zip", prefix="wrap/")
        with pytest.raises(
            DatasetError, match=r"^d.zip: wrap/val/dogs/ has no readable image \(4 unreadable: "
        ):
            open_dataset(archive, store=tmp_path / "store")

    def test_valid_images_are_arranged_as_before(self, tmp_path):
        """Valid images (junk and a text file beside them, a truncated image whose header opens: only
        headers are read) give the same counts, listing, folder and file listing id as before."""
        from qtl.data.folders import file_listing_id

        src = make_class_folders(tmp_path / "src", 3, 6)
        cut = (src / "class_2/2_5.png").read_bytes()[:64]
        (src / "class_2/2_5.png").write_bytes(cut)
        extra = {"__MACOSX/shapes/._x": b"\x00", "shapes/notes.txt": b"hello"}
        archive = zip_folder(src, tmp_path / "shapes.zip", prefix="shapes/", extra=extra)
        ds = open_dataset(archive, store=tmp_path / "store")
        assert ds.skipped == [
            ("__MACOSX", "macOS archive metadata"),
            ("shapes/notes.txt", "not inside a class folder"),
        ]
        assert ds.counts == {
            "train": {"class_0": 5, "class_1": 5, "class_2": 5},
            "val": {"class_0": 1, "class_1": 1, "class_2": 1},
        }
        assert ds.root.name.startswith("shapes-") and file_listing_id(ds.root) == "e93f92158bf21b29"


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
