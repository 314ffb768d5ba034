"""Edges of opening a dataset: class folders behind symlinks, a class with no decodable image, files that
are no image among the duplicates, split options on a dataset with its own val split, the order of the
splits and the stray entries of a folder used in place."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_image_folder, run_cli

from qtl.data.datasets import find_duplicates
from qtl.data.folders import DatasetError
from qtl.data.images import ImageFolderDataset


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
