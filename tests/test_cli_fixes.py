"""Command-line paths a review found wrong: `qtl data --path` downloading hymenoptera into any missing
path, `qtl hardware` scoring on another split or dataset than `qtl evaluate`, `qtl runs --report` of a
metric no run has, and help texts naming defaults that ignore the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, make_class_folders, make_image_folder, run_cli

from qtl import cli


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


# --- qtl hardware: the data a checkpoint recorded, split as it recorded, as qtl evaluate scores it ------


@pytest.fixture(scope="module")
def split_ckpt(tmp_path_factory) -> tuple[Path, Path]:
    """(scans.zip: 3 classes x 10 images, no splits; a 2-qubit quantum checkpoint trained 1 epoch on it
    with --val-ratio 0.3 --split-seed 1, which the default 0.2/seed 0 split does not match)."""
    pytest.importorskip("qiskit_ibm_runtime")
    folder = tmp_path_factory.mktemp("scans")
    archive = zip_of(make_class_folders(folder / "scans", 3, 10), folder / "scans.zip")
    ckpt = folder / "q.pt"
    argv = ["train", "quantum", "--random-init", "--data", archive, "--val-ratio", 0.3, "--split-seed", 1]
    argv += ["--epochs", 1, "--qubits", 2, "--depth", 1, "--batch-size", 8, "-q", "--out", ckpt]
    assert cli.main([str(a) for a in argv]) == 0
    return archive, ckpt


def zip_of(folder: Path, archive: Path) -> Path:
    from qtl.testing.image_folders import zip_folder

    zip_folder(folder, archive)
    shutil.rmtree(folder)  # only the zip is the dataset
    return archive


@pytest.mark.parametrize("with_data", [True, False], ids=["--data", "recorded"])
def test_hardware_scores_the_split_evaluate_scores(capsys, monkeypatch, tmp_path, split_ckpt, with_data):
    """`--data scans.zip` is split as the checkpoint recorded (0.3, seed 1: 9 val images, not the default
    split's 6, which held training images); without --data the dataset the checkpoint recorded is used
    (it was hymenoptera, refused: "predicts [class_0, ...], but ... has classes ['ants', 'bees']")."""
    archive, ckpt = split_ckpt
    monkeypatch.setenv("QTL_OFFLINE", "1")
    monkeypatch.setenv("QTL_DATA_DIR", str(tmp_path / "no-hymenoptera"))  # never the one scored
    data = ["--data", archive] if with_data else []
    code, out, err = run_cli(capsys, "evaluate", ckpt, *data, "--json", "-q")
    assert code == 0, err
    n = json.loads(out)["metrics"]["n"]
    assert n == 9
    code, out, err = run_cli(capsys, "hardware", "estimate", ckpt, *data, "--shots", 10, "--json", "-", "-q")
    assert code == 0, err
    assert json.loads(out)["samples"] == n


# --- qtl runs --report --metric test_acc: why there is nothing to report ---------------------------------


def test_report_of_a_metric_no_run_has_says_why(capsys, tmp_path):
    """docs/wide.db's runs have no test split: the report was a header alone, exit 0."""
    db = tmp_path / "wide.db"
    db.write_bytes((REPO / "docs" / "wide.db").read_bytes())
    csv = tmp_path / "runs.csv"
    argv = ["runs", "--db", db, "--sweep", "wide", "--report", "--metric", "test_acc", "--csv", csv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert len(csv.read_text().splitlines()) == 1 + 50  # the listing asked for is written all the same
    assert one_line(err) == (
        "qtl: error: no finished run of sweep 'wide' has test_acc, a held-out test accuracy: train with "
        'split = "kfold", or on a dataset with a test/ split (--metric val_acc reports the val accuracy)'
    )
    code, out, err = run_cli(capsys, "runs", "--db", db, "--report", "--markdown", "--status", "failed")
    assert code == 1 and out == ""
    assert (
        err.strip()
        == f"qtl: error: no finished run in {db} matching the filters: a report counts finished runs only"
    )
    code, out, _ = run_cli(capsys, "runs", "--db", db, "--sweep", "wide", "--report")  # val_acc: there
    assert code == 0 and "val_acc per cell" in out


# --- help texts: the real defaults, from the environment ---------------------------------------------------


def help_of(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit:
        cli.main([*command, "--help"])
    assert exit.value.code == 0
    return one_line(capsys.readouterr().out)


@pytest.mark.parametrize("command", ["train", "compare", "reproduce"])
def test_help_names_the_folders_the_environment_sets(capsys, command):
    text = help_of(capsys, command)
    assert (
        "--models-dir DIR checkpoint folder (default: $QTL_MODELS_DIR, else models/ at the repository root)"
        in text
    )
    assert "feature cache folder (default: $QTL_CACHE_DIR/features, else ~/.cache/qtl/features)" in text


def test_help_of_noise_sweep_and_hardware(capsys):
    text = help_of(capsys, "noise")
    assert "(default: noise-<time> in $QTL_MODELS_DIR, else models/ at the repository root)" in text
    assert "<models-dir>" not in text
    text = help_of(capsys, "sweep")
    assert "$QTL_CACHE_DIR/features" in text and "DIR/sweeps/NAME/ (default DIR: $QTL_MODELS_DIR" in text
    assert "Ctrl-C stops the current run(s) after their batch, without counting them (they run again" in text
    text = help_of(capsys, "hardware", "estimate")  # one checkpoint: its recorded dataset and split
    assert "the dataset the checkpoint recorded" in text and "or the split the checkpoint recorded" in text
    text = help_of(capsys, "train")  # scores no checkpoint: no recorded split
    assert "default 0.2)" in text and "or the split" not in text and "(default 0)" in text
