"""Shared fixtures. Tests never touch the network: weights are random-init or files the tests write."""

from __future__ import annotations

from pathlib import Path

import pytest

from qtl.testing.image_folders import make_class_folders, make_image_folder, zip_folder

REPO = Path(__file__).resolve().parents[1]
SHARED_HYMENOPTERA = REPO.parent / "shared" / "data" / "hymenoptera_data"
# `from conftest import ...` in tests
__all__ = [
    "REPO",
    "SHARED_HYMENOPTERA",
    "make_class_folders",
    "make_image_folder",
    "run_cli",
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


@pytest.fixture(scope="session")
def hymenoptera_dir() -> Path:
    """The real ants/bees dataset shipped beside the repo (train/val, 245/153 images)."""
    if not SHARED_HYMENOPTERA.is_dir():
        pytest.fail(f"hymenoptera dataset missing at {SHARED_HYMENOPTERA}")
    return SHARED_HYMENOPTERA


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """A 2-class dataset with 6 train and 4 val images per class."""
    return make_image_folder(tmp_path / "tiny")
