"""Shared fixtures. Tests never touch the network: weights are random-init or files the tests write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qtl.paths import HYMENOPTERA_DIRNAME, cache_root
from qtl.testing.image_folders import make_class_folders, make_image_folder, zip_folder
from qtl.testing.processes import tied_to_this_process

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "QTL_TESTS_SHARED_DATA"  # a copy beside the checkout; point it elsewhere to hide that one
# Where the suite looks for hymenoptera, read from the environment before the session isolates qtl's
# caches: $QTL_DATA_DIR, qtl's own cache, then a shared copy beside the checkout; else it downloads it
# into qtl's cache once.
DATA_DIR_AT_START = os.environ.get("QTL_DATA_DIR")
CACHED_HYMENOPTERA = cache_root() / "data" / HYMENOPTERA_DIRNAME
SHARED_HYMENOPTERA = Path(
    os.environ.get(SHARED_DATA_ENV) or REPO.parent / "shared" / "data" / HYMENOPTERA_DIRNAME
)
OFFLINE_AT_START = os.environ.get("QTL_OFFLINE", "") not in ("", "0")
# `from conftest import ...` in tests
__all__ = [
    "REPO",
    "make_class_folders",
    "make_image_folder",
    "run_cli",
    "tied_to_this_process",
    "zip_folder",
]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`qtl.cli.main(argv)` in this process -> (exit status, stdout, stderr)."""
    from qtl import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory):
    """Keep TORCH_HOME and qtl's caches inside a temporary folder for the whole session, online unless a
    test sets QTL_OFFLINE."""
    root = tmp_path_factory.mktemp("caches")
    with pytest.MonkeyPatch.context() as mp:  # restores the environment afterwards
        mp.setenv("TORCH_HOME", str(root / "torch"))
        mp.setenv("QTL_CACHE_DIR", str(root / "qtl"))
        mp.delenv("QTL_OFFLINE", raising=False)  # tests that need it offline say so
        yield root


def find_hymenoptera() -> Path:
    """The real ants/bees dataset, found where qtl looks for it or beside the checkout, else downloaded
    into qtl's cache by qtl's own checked downloader. Raises LookupError (one line: what to do)."""
    from qtl.data.folders import DatasetError, validate_dataset
    from qtl.data.sources import download_hymenoptera, find_root

    places = [Path(DATA_DIR_AT_START).expanduser()] if DATA_DIR_AT_START else []
    places += [CACHED_HYMENOPTERA, SHARED_HYMENOPTERA]
    for place in places:
        try:
            if validate_dataset(find_root(place)) == ["ants", "bees"]:
                return find_root(place)
        except DatasetError:
            continue
    looked = ", ".join(str(p) for p in places)
    if OFFLINE_AT_START:
        raise LookupError(
            f"hymenoptera not found (looked in {looked}) and QTL_OFFLINE is set: run `qtl data` once "
            "online, or set QTL_DATA_DIR to a copy (train/ and val/ of ants and bees)"
        )
    try:
        return download_hymenoptera(CACHED_HYMENOPTERA)
    except DatasetError as exc:
        raise LookupError(f"hymenoptera not found (looked in {looked}) and not downloaded: {exc}") from None


@pytest.fixture(scope="session")
def hymenoptera_dir() -> Path:
    """The real ants/bees dataset (train/val, 245/153 images): see `find_hymenoptera`."""
    try:
        return find_hymenoptera()
    except LookupError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the handler: one line, no chained traceback


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """A 2-class dataset with 6 train and 4 val images per class."""
    return make_image_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def hw_data(tmp_path_factory) -> Path:
    """A tiny image folder for the hardware tests (test_hardware*.py)."""
    return make_image_folder(tmp_path_factory.mktemp("hw") / "tiny")


@pytest.fixture(scope="session")
def hw_ckpt(hw_data, tmp_path_factory) -> Path:
    """A 3-qubit, depth-2 quantum checkpoint trained noise-aware for FakeManilaV2 (`--noise-from`), 1
    epoch on `hw_data`."""
    from qtl import cli

    path = tmp_path_factory.mktemp("hw-ckpt") / "q.pt"
    argv = [
        "train",
        "quantum",
        "--random-init",
        "--data",
        hw_data,
        "--epochs",
        1,
        "--qubits",
        3,
        "--depth",
        2,
    ]
    argv += ["--lr", 0.01, "--batch-size", 4, "--noise-from", "FakeManilaV2", "-q", "--out", path]
    assert cli.main([str(a) for a in argv]) == 0
    return path
