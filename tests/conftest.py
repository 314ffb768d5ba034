"""Shared fixtures. Tests never touch the network: weights are random-init or files the tests write."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from qtl.paths import HYMENOPTERA_DIRNAME, cache_root
from qtl.testing import served_app
from qtl.testing.image_folders import make_class_folders, make_image_folder, zip_folder

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
    "TiedServer",
    "make_class_folders",
    "make_image_folder",
    "run_cli",
    "tied_to_this_process",
    "zip_folder",
]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# prctl, looked up before any fork: the child between fork and exec only calls it
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
if _PRCTL is not None:
    _PRCTL.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


def tied_to_this_process() -> dict:
    """Keyword arguments for `subprocess.Popen` (or `run`): a server started with them cannot outlive us.

    The child gets its own session, so a teardown's `os.killpg` reaches whatever it starts, and on Linux the
    kernel's parent-death signal (prctl PR_SET_PDEATHSIG, SIGKILL): when pytest is killed (SIGKILL, a CI
    timeout, a second Ctrl-C) and no teardown runs, the server goes too instead of holding its port. The
    signal comes when the *thread* that started the child ends, so start servers from pytest's own thread
    (fixtures and tests run there). Elsewhere than Linux: the session only. What the server itself starts
    gets no signal (neither streamlit nor `qtl serve` starts a process); teardown's killpg reaches it.
    """
    if _PRCTL is None:
        return {"start_new_session": True}
    parent = os.getpid()

    def die_with_parent() -> None:  # in the child, between fork and exec (the setting survives exec)
        if _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0):  # Popen raises SubprocessError
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the setting: no signal will come
            os.kill(os.getpid(), signal.SIGKILL)

    return {"start_new_session": True, "preexec_fn": die_with_parent}


class _TiedSubprocess:
    """`subprocess` as `qtl.testing.served_app` sees it while a `TiedServer` starts: Popen is tied."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(*args, **{**kwargs, **tied_to_this_process()})


class TiedServer(served_app.Server):
    """`qtl.testing.served_app.Server` (`streamlit run app.py`) started with `tied_to_this_process()`: it
    dies with pytest. Stopping it is unchanged (its `stop`, or leaving the `with` block)."""

    def __init__(self, env: dict, log: Path) -> None:
        with mock.patch.object(served_app, "subprocess", _TiedSubprocess()):
            super().__init__(env, log)


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
