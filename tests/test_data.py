"""Datasets: layout validation, every image format, bad files, locations, status and the download."""

from __future__ import annotations

import errno
import functools
import hashlib
import http.server
import io
import logging
import os
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from PIL import Image, features

from qtl.data import sources as data
from qtl.data.folders import DatasetError, validate_dataset
from qtl.data.images import ImageFolderDataset, ImageLoadError, load_image
from qtl.data.sources import dataset_status, download_hymenoptera, resolve_dataset
from qtl.paths import default_data_dir
from qtl.utils.atomic import WriteError

# (file name, PIL mode written, PIL format) for every accepted extension, in both letter cases.
FORMATS = [
    ("a.jpg", "RGB", "JPEG"),
    ("b.JPEG", "L", "JPEG"),
    ("c.png", "RGBA", "PNG"),
    ("d.bmp", "RGB", "BMP"),
    ("e.gif", "P", "GIF"),
    ("f.webp", "RGB", "WEBP"),
    ("g.tiff", "RGB", "TIFF"),
    ("h.TIF", "CMYK", "TIFF"),
    ("i.Png", "LA", "PNG"),
]


def write_image(path: Path, mode: str = "RGB", fmt: str = "PNG", size=(48, 40)) -> None:
    g = torch.Generator().manual_seed(len(path.name))
    channels = len(Image.new(mode, (1, 1)).getbands())
    arr = torch.randint(0, 256, (size[1], size[0], channels), generator=g, dtype=torch.uint8)
    image = Image.fromarray(arr.squeeze(-1).numpy() if channels == 1 else arr.numpy())
    if mode == "P":
        image = Image.fromarray(arr[..., 0].numpy()).convert("P")
    elif image.mode != mode:
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture
def every_format(tmp_path) -> Path:
    """train/ and val/ of two classes; train/cats holds one file of every accepted format."""
    root = make_image_folder(tmp_path / "formats", per_split=(1, 1))
    for name, mode, fmt in FORMATS:
        write_image(root / "train" / "cats" / name, mode, fmt)
    (root / "train" / "cats" / "notes.txt").write_text("not an image")
    (root / "train" / "cats" / ".hidden.png").write_bytes(b"")
    return root


class TestFormats:
    def test_webp_is_supported_by_this_pillow(self):
        """The webp case below only means something if Pillow can write webp here."""
        assert features.check("webp")

    def test_every_format_loads_as_rgb(self, every_format):
        """jpg, jpeg, png, bmp, gif, webp, tif(f), any letter case: all samples, all RGB 224 tensors."""
        ds = ImageFolderDataset(every_format, "train")
        names = {p.name for p, label in ds.samples if label == ds.classes.index("cats")}
        assert names == {name for name, _, _ in FORMATS} | {"cats_0.png"}
        assert ds.skipped == []
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.mode == "RGB"
            assert label == ds.targets[i]

    def test_transform_is_applied(self, every_format):
        """With a transform, items are its output."""
        ds = ImageFolderDataset(every_format, "val", transform=lambda im: torch.tensor(im.size))
        x, label = ds[0]
        assert torch.equal(x, torch.tensor([40, 32])) and label == 0


class TestBadFiles:
    @pytest.fixture
    def with_bad_files(self, tiny_image_folder) -> Path:
        ants = tiny_image_folder / "train" / "cats"
        (ants / "garbage.jpg").write_bytes(b"this is not a jpeg at all")
        truncated_jpeg(ants / "truncated.jpg")
        (ants / "empty.png").write_bytes(b"")
        return tiny_image_folder

    def test_bad_files_are_skipped_and_reported_once(self, with_bad_files, caplog):
        """Undecodable, truncated and empty files are logged once each with path and reason, and skipped."""
        with caplog.at_level(logging.WARNING, logger="qtl.data.images"):
            ds = ImageFolderDataset(with_bad_files, "train")
            for i in range(len(ds)):
                ds[i]
        bad = {"garbage.jpg", "truncated.jpg", "empty.png"}
        assert {p.name for p, _ in ds.skipped} == bad
        assert all(reason for _, reason in ds.skipped)
        assert len(ds) == 12 and ds.targets.count(0) == 6
        assert not bad & {p.name for p, _ in ds.samples}
        for name in bad:
            hits = [r for r in caplog.records if name in r.getMessage()]
            assert len(hits) == 1, name
            assert str(with_bad_files) in hits[0].getMessage()

    def test_file_broken_after_construction_does_not_stop_iteration(self, tiny_image_folder, caplog):
        """A file that breaks mid-run is reported and replaced by the next good sample."""
        ds = ImageFolderDataset(tiny_image_folder, "train")
        broken, _ = ds.samples[2]
        broken.write_bytes(b"gone bad")
        with caplog.at_level(logging.WARNING, logger="qtl.data.images"):
            image, label = ds[2]
            ds[2]
        assert image.size == (40, 32) and label == ds.samples[3][1]
        assert [p for p, _ in ds.skipped] == [broken]
        assert len([r for r in caplog.records if str(broken) in r.getMessage()]) == 1

    def test_imagenotfound_gif_is_a_real_image(self, hymenoptera_dir):
        """The shared set's train/ants/imageNotFound.gif is a decodable 300x300 placeholder, kept as data."""
        image = load_image(hymenoptera_dir / "train" / "ants" / "imageNotFound.gif")
        assert image.mode == "RGB" and image.size == (300, 300)


class TestDegenerate:
    def test_one_class(self, tmp_path):
        root = make_image_folder(tmp_path / "one", classes=("only",))
        with pytest.raises(DatasetError, match="at least 2 class"):
            validate_dataset(root)

    def test_empty_split(self, tiny_image_folder):
        for f in (tiny_image_folder / "val" / "dogs").iterdir():
            f.unlink()
        with pytest.raises(DatasetError, match=r"val/dogs has no image files"):
            validate_dataset(tiny_image_folder)

    def test_missing_val(self, tiny_image_folder):
        shutil.rmtree(tiny_image_folder / "val")
        with pytest.raises(DatasetError, match="no val/ folder"):
            ImageFolderDataset(tiny_image_folder, "train")

    def test_mismatched_classes(self, tiny_image_folder):
        (tiny_image_folder / "val" / "dogs").rename(tiny_image_folder / "val" / "wolves")
        with pytest.raises(DatasetError, match="same class folders"):
            validate_dataset(tiny_image_folder)

    def test_missing_root(self, tmp_path):
        with pytest.raises(DatasetError, match="does not exist"):
            validate_dataset(tmp_path / "nowhere")

    def test_only_undecodable_files(self, tiny_image_folder):
        for f in (tiny_image_folder / "val").rglob("*.png"):
            f.write_bytes(b"broken")
        with pytest.raises(DatasetError, match="val/cats has no readable image"):
            ImageFolderDataset(tiny_image_folder, "val")

    def test_bad_split_name(self, tiny_image_folder):
        with pytest.raises(ValueError, match="split must be one of"):
            ImageFolderDataset(tiny_image_folder, "holdout")
        with pytest.raises(DatasetError, match="has no test/ split"):
            ImageFolderDataset(tiny_image_folder, "test")


class TestHymenoptera:
    def test_shared_copy(self, hymenoptera_dir):
        """2 classes; 245 train (124 ants, 121 bees) and 153 val (70 ants, 83 bees) images, none skipped."""
        assert validate_dataset(hymenoptera_dir) == ["ants", "bees"]
        counts = {}
        for split in ("train", "val"):
            ds = ImageFolderDataset(hymenoptera_dir, split)
            assert ds.skipped == []
            counts[split] = (ds.targets.count(0), ds.targets.count(1))
        assert counts == {"train": (124, 121), "val": (70, 83)}


class TestLoadImage:
    def test_path_bytes_and_file(self, tmp_path):
        path = tmp_path / "x.png"
        write_image(path, "RGBA", "PNG")
        raw = path.read_bytes()
        for source in (path, str(path), raw, io.BytesIO(raw)):
            image = load_image(source)
            assert image.mode == "RGB" and image.size == (48, 40)

    def test_palette_with_transparency(self, tmp_path):
        image = Image.new("P", (8, 8), 1)
        image.info["transparency"] = 0
        buffer = io.BytesIO()
        image.save(buffer, format="GIF", transparency=0)
        assert load_image(buffer.getvalue()).mode == "RGB"

    def test_undecodable(self, tmp_path):
        with pytest.raises(ImageLoadError, match="cannot decode uploaded image"):
            load_image(b"\x89PNG but not really")
        bad = tmp_path / "bad.jpg"
        truncated_jpeg(bad)
        with pytest.raises(ImageLoadError, match=str(bad)):
            load_image(bad)
        with pytest.raises(ImageLoadError, match="no such image file"):
            load_image(tmp_path / "missing.png")


class TestLocations:
    def test_default_dir_respects_env(self, tmp_path, monkeypatch):
        monkeypatch.delenv("QTL_DATA_DIR", raising=False)
        monkeypatch.setenv("QTL_CACHE_DIR", str(tmp_path / "cache"))
        assert default_data_dir() == tmp_path / "cache" / "data" / "hymenoptera_data"
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "mine"))
        assert default_data_dir() == tmp_path / "mine"

    def test_explicit_path_and_unzipped_parent(self, tiny_image_folder, tmp_path):
        """--data may point at the root or at the folder an archive was unzipped into."""
        assert resolve_dataset(tiny_image_folder) == tiny_image_folder
        assert resolve_dataset(tiny_image_folder.parent) == tiny_image_folder
        with pytest.raises(DatasetError, match="does not exist"):
            resolve_dataset(tmp_path / "nowhere")

    def test_env_dir_used(self, tiny_image_folder, monkeypatch):
        monkeypatch.setenv("QTL_DATA_DIR", str(tiny_image_folder))
        assert resolve_dataset() == tiny_image_folder

    def test_missing_without_download_says_where(self, tmp_path, monkeypatch):
        target = tmp_path / "absent"
        monkeypatch.setenv("QTL_DATA_DIR", str(target))
        with pytest.raises(DatasetError) as info:
            resolve_dataset(download=False)
        message = str(info.value)
        assert str(target) in message and "--data" in message and "QTL_DATA_DIR" in message


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to resolve or open a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


class TestStatus:
    def test_found(self, hymenoptera_dir, no_network):
        status = dataset_status(hymenoptera_dir)
        assert status.state == "found" and status.path == hymenoptera_dir

    def test_missing_explicit(self, tmp_path, no_network):
        status = dataset_status(tmp_path / "nope")
        assert status.state == "missing" and "does not exist" in status.message

    def test_downloadable_default(self, tmp_path, monkeypatch, no_network):
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "later"))
        status = dataset_status()
        assert status.state == "downloadable" and status.path == tmp_path / "later"
        assert "first use" in status.message

    def test_offline_default_is_missing(self, tmp_path, monkeypatch, no_network):
        """QTL_OFFLINE=1: a dataset not on disk yet is missing (with where to put it), not downloadable."""
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "later"))
        monkeypatch.setenv("QTL_OFFLINE", "1")
        status = dataset_status()
        assert (
            status.state == "missing" and "QTL_OFFLINE" in status.message and "QTL_DATA_DIR" in status.message
        )

    def test_empty_default_folder_is_downloadable(self, tmp_path, monkeypatch, no_network):
        (tmp_path / "empty").mkdir()
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "empty"))
        assert dataset_status().state == "downloadable"

    def test_broken_default(self, tiny_image_folder, monkeypatch, no_network):
        shutil.rmtree(tiny_image_folder / "val")
        monkeypatch.setenv("QTL_DATA_DIR", str(tiny_image_folder))
        status = dataset_status()
        assert status.state == "missing" and "val/" in status.message


# --- download ------------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served_zip(tmp_path, monkeypatch):
    """A zip of a tiny dataset under hymenoptera_data/, served on 127.0.0.1: (url, size, sha256)."""
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    src = make_image_folder(tmp_path / "src" / "hymenoptera_data")
    www = tmp_path / "www"
    www.mkdir()
    archive = www / "hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent).as_posix())
    handler = functools.partial(_Quiet, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    raw = archive.read_bytes()
    yield (
        f"http://127.0.0.1:{server.server_address[1]}/{archive.name}",
        len(raw),
        hashlib.sha256(raw).hexdigest(),
    )
    server.shutdown()
    server.server_close()


class TestDownload:
    def test_download_extracts_atomically_with_progress(self, served_zip, tmp_path):
        url, size, sha = served_zip
        dest = tmp_path / "data" / "hymenoptera_data"
        calls = []
        out = download_hymenoptera(
            dest, url=url, size=size, sha256=sha, progress=lambda d, t: calls.append((d, t))
        )
        assert out == dest
        assert validate_dataset(dest) == ["cats", "dogs"]
        assert len(ImageFolderDataset(dest, "train")) == 12
        assert calls[-1] == (size, size)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert [p.name for p in dest.parent.iterdir()] == ["hymenoptera_data"]

    def test_offline_never_connects(self, served_zip, tmp_path, monkeypatch, no_network):
        """QTL_OFFLINE=1: the dataset download fails at once, saying why and where to put the data, without
        touching the network (no_network fails on any connection) or leaving anything behind."""
        url, size, sha = served_zip
        monkeypatch.setenv("QTL_OFFLINE", "1")
        dest = tmp_path / "data" / "hymenoptera_data"
        with pytest.raises(DatasetError, match="QTL_OFFLINE is set.*put the dataset"):
            download_hymenoptera(dest, url=url, size=size, sha256=sha)
        monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "default"))
        with pytest.raises(DatasetError, match="QTL_OFFLINE"):
            resolve_dataset(None)  # nothing at the default location: it would download
        assert not dest.exists() and list(dest.parent.iterdir()) == []

    def test_bad_hash(self, served_zip, tmp_path):
        url, size, _ = served_zip
        dest = tmp_path / "data" / "hymenoptera_data"
        with pytest.raises(DatasetError, match="corrupt"):
            download_hymenoptera(dest, url=url, size=size, sha256="0" * 64)
        assert not dest.exists() and list(dest.parent.iterdir()) == []

    def test_bad_size(self, served_zip, tmp_path):
        """Too few bytes, or more than expected (stopped early), is a corrupt download."""
        url, size, sha = served_zip
        with pytest.raises(DatasetError, match="bytes, expected"):
            download_hymenoptera(tmp_path / "d", url=url, size=size + 1, sha256=sha)
        with pytest.raises(DatasetError, match="more than the expected"):
            download_hymenoptera(tmp_path / "d", url=url, size=size - 1, sha256=sha)
        assert not (tmp_path / "d").exists()

    def test_full_disk_is_not_called_offline(self, served_zip, tmp_path, monkeypatch):
        """The disk refusing the zip is a WriteError naming the file, not "cannot download"; nothing stays."""
        url, size, sha = served_zip

        def full(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", full)
        dest = tmp_path / "data" / "hymenoptera_data"
        with pytest.raises(WriteError, match=r"archive\.zip: No space left on device"):
            download_hymenoptera(dest, url=url, size=size, sha256=sha)
        assert list(dest.parent.iterdir()) == []

    def test_offline_says_where_to_put_it(self, tmp_path):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        dest = tmp_path / "data" / "hymenoptera_data"
        with pytest.raises(DatasetError) as info:
            download_hymenoptera(dest, url=f"http://127.0.0.1:{port}/x.zip", timeout=1)
        message = str(info.value)
        assert str(dest) in message and "--data" in message and "QTL_DATA_DIR" in message
        assert "\n" not in message and not dest.exists()

    def test_zip_slip_refused(self, tmp_path, monkeypatch):
        evil = tmp_path / "evil.zip"
        with zipfile.ZipFile(evil, "w") as zf:
            zf.writestr("../escape.txt", "x")
        with pytest.raises(DatasetError, match="leaves the target folder"):
            data._unpack(evil, tmp_path / "out")
        assert not (tmp_path / "escape.txt").exists()

    def test_resolve_downloads_into_default(self, served_zip, tmp_path, monkeypatch):
        url, size, sha = served_zip
        target = tmp_path / "env_target"
        monkeypatch.setenv("QTL_DATA_DIR", str(target))
        monkeypatch.setattr(
            data,
            "download_hymenoptera",
            functools.partial(download_hymenoptera, url=url, size=size, sha256=sha),
        )
        assert resolve_dataset() == target
        assert validate_dataset(target) == ["cats", "dogs"]
