"""Named datasets (qtl.data.sources): scikit-learn's bundled digits, and torchvision datasets read by
torchvision's own classes from small files these tests write in the real formats (no network)."""

from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torchvision
from PIL import Image

from qtl.data.datasets import open_dataset
from qtl.data.folders import DatasetError


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("QTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QTL_OFFLINE", "1")  # nothing may be downloaded
    return tmp_path / "cache"


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_digits_are_the_1797_scikit_learn_images_in_a_stratified_split(store):
    """digits: every one of scikit-learn's 1,797 images, written once as PNG class folders (ink dark on
    white), split 60/20/20 with every class on every side; a second call finds the same folder."""
    from sklearn.datasets import load_digits

    ds = open_dataset("digits")
    assert ds.classes == [str(d) for d in range(10)] and ds.n_images == 1797 and ds.name == "digits"
    assert all(min(ds.counts[s].values()) >= 30 for s in ("train", "val", "test"))
    assert sum(ds.counts["test"].values()) == 360
    written = {pixels(p).tobytes() for p in ds.root.glob("*/*/*.png")}
    expected = {(255 - np.rint(img * 255 / 16)).astype(np.uint8).tobytes() for img in load_digits().images}
    assert written == expected  # the same pixels (duplicates in the data collapse on both sides alike)
    assert open_dataset("digits").root == ds.root


def write_idx(path, array: np.ndarray) -> None:
    """The MNIST idx format: big-endian magic (0x08 = uint8, then the rank), the sizes, the bytes."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_idx_files(store):
    """torchvision.datasets.MNIST reads the idx files; qtl keeps its class names and every image."""
    raw = store / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    train_y, test_y = np.arange(30) % 3, np.arange(10) % 3  # classes 0, 1, 2 only
    write_idx(raw / "train-images-idx3-ubyte", train)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    ds = open_dataset("torchvision/MNIST:0 - zero,1 - one,2 - two")
    assert ds.classes == ["0 - zero", "1 - one", "2 - two"]
    assert {s: sum(c.values()) for s, c in ds.counts.items()} == {"train": 24, "val": 6, "test": 10}
    written = sorted(pixels(p).tobytes() for p in (ds.root / "test").glob("*/*.png"))
    assert written == sorted(img.astype(np.uint8).tobytes() for img in test)


def test_torchvision_cifar10_two_classes_from_python_batches(store, monkeypatch):
    """CIFAR-10 restricted to two classes: torchvision.datasets.CIFAR10 reads pickled batches in its
    format (their checksums are these files', not the real ones'), qtl keeps only cat and dog."""
    folder = store / "torchvision" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10)) * 2
        batches[name] = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": labels}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(cls, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5("batches.meta")})
    ds = open_dataset("torchvision/CIFAR10:cat,dog")
    assert ds.classes == ["cat", "dog"]
    assert {s: sum(c.values()) for s, c in ds.counts.items()} == {"train": 16, "val": 4, "test": 4}
    cats = [row.reshape(3, 32, 32).transpose(1, 2, 0) for row in batches["test_batch"]["data"][3::10]]
    written = sorted(pixels(p).tobytes() for p in (ds.root / "test" / "cat").glob("*.png"))
    assert written == sorted(c.tobytes() for c in cats)


def test_missing_or_unknown_named_datasets_are_one_line_errors(store):
    with pytest.raises(DatasetError, match="cannot be had: downloading is off"):
        open_dataset("torchvision/FashionMNIST")
    with pytest.raises(DatasetError, match="torchvision has no dataset 'NoSuchSet'"):
        open_dataset("torchvision/NoSuchSet")
