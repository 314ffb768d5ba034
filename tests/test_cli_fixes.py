"""Command-line paths a review found wrong: `qtl data --path` downloading hymenoptera into any missing
path, `qtl hardware` scoring on another split or dataset than `qtl evaluate`, `qtl runs --report` of a
metric no run has, and help texts naming defaults that ignore the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image_folder, run_cli


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- qtl data --path: a named dataset, a folder or a zip; hymenoptera only at its default location ----


@pytest.fixture
def no_download(monkeypatch, tmp_path) -> list[Path]:
    """Work in an empty folder, offline, with hymenoptera's downloader replaced by one that records where
    it was asked to write and writes a tiny dataset there; returns that list of places."""
    import qtl.data.sources as sources

    asked: list[Path] = []

    def fake(dest=None, **kwargs):
        dest = Path(dest) if dest is not None else sources.default_data_dir()
        asked.append(dest)
        return make_image_folder(dest)

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("QTL_OFFLINE", "1")
    monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "default" / "hymenoptera_data"))
    monkeypatch.setattr(sources, "download_hymenoptera", fake)
    return asked


def test_data_path_that_is_missing_is_an_error_naming_it(capsys, no_download):
    """A mistyped folder was filled with hymenoptera (offline: an error about hymenoptera's zip)."""
    code, out, err = run_cli(capsys, "data", "--path", "scnas", "-q")
    assert code == 1 and no_download == [], err
    assert (
        err.strip()
        == "qtl: error: dataset scnas does not exist; give a folder of class folders or a zip file"
    )
    assert "hymenoptera" not in err and list(Path.cwd().iterdir()) == []


def test_data_path_names_a_dataset(capsys, no_download):
    """`--path digits` is the bundled digits, as `--data digits` (it was hymenoptera unpacked into
    ./digits); a torchvision dataset that cannot be had leaves no ./torchvision folder behind."""
    code, out, err = run_cli(capsys, "data", "--path", "digits", "-q")
    assert code == 0 and no_download == [], err
    assert "test: 360 images" in out and out.rstrip().endswith("ok")
    code, _, err = run_cli(capsys, "data", "--path", "torchvision/CIFAR10:cat,dog", "-q")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "CIFAR10" in err, err
    assert no_download == [] and list(Path.cwd().iterdir()) == []


def test_data_without_path_downloads_to_the_default_location(capsys, no_download, tmp_path):
    code, out, err = run_cli(capsys, "data", "-q")
    assert code == 0 and no_download == [tmp_path / "default" / "hymenoptera_data"], err
    assert "train: 12 images" in out and list(Path.cwd().iterdir()) == []
