"""What a sweep over datasets with and without a test split reports: its closing report, `qtl study`,
`qtl runs --dataset` and the dry run count every finished run and name it one way; a dataset that fails
is named; `qtl data` lists each unreadable file once, as its user knows it. Real tiny runs (random-init
backbone, one epoch) on image folders the tests write."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from conftest import make_class_folders, make_image_folder, run_cli, zip_folder

from qtl.experiments.database import ResultsDB
from qtl.experiments.findings import findings

SPEC = """
name = "mixed"
pretrained = false
epochs = 1
qubits = 2
depth = 1

[[grid]]
dataset = ["data/notest", "data/tested.zip"]
variant = ["quantum", "dressed-classical", "linear"]
seeds = 2
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(folder, spec, db, closing report): a sweep of 12 runs, on a train/val folder (no test split) and
    a zip with train/, val/ and test/."""
    folder = tmp_path_factory.mktemp("mixed")
    make_image_folder(folder / "data" / "notest")
    tested = make_image_folder(folder / "src" / "tested")
    shutil.copytree(tested / "val", tested / "test")
    zip_folder(tested, folder / "data" / "tested.zip")
    spec, db = folder / "spec.toml", folder / "r.db"
    spec.write_text(SPEC)
    from qtl import cli

    assert cli.main(["-q", "sweep", str(spec), "--db", str(db)]) == 0
    return folder, spec, db


@pytest.fixture
def report(swept, capsys):
    folder, spec, db = swept
    code, out, _ = run_cli(capsys, "-q", "sweep", spec, "--db", db)  # all done: the report alone
    assert code == 0
    return out


def test_the_closing_report_shows_every_run_on_the_metric_it_has(report):
    """The report switched to test_acc where any run had it and listed only the cells that did: the runs
    on the folder without test/ vanished, unsaid. Each cell is now on test_acc where its runs have it,
    else on val_acc, and says which; so is each comparison."""
    assert "per cell, test_acc where a cell's runs have a test split, else val_acc" in report
    for variant in ("quantum 2q d1", "dressed-classical 2q", "linear"):
        on_zip = next(
            line for line in report.splitlines() if line.startswith(f"  {variant} resnet18 on tested")
        )
        on_folder = next(
            line for line in report.splitlines() if line.startswith(f"  {variant} resnet18 on notest")
        )
        assert " test_acc " in on_zip and " val_acc " in on_folder and "n=2" in on_folder
    assert "on notest vs dressed-classical, on val_acc" in report
    assert "on tested.zip vs linear, on test_acc" in report
    assert "4 comparisons" in report


def test_runs_report_on_test_acc_names_the_runs_it_leaves_out(swept, capsys):
    _, _, db = swept
    code, out, _ = run_cli(capsys, "runs", "--db", db, "--report", "--metric", "test_acc")
    assert code == 0 and "on notest" not in out.split("note:")[0]
    assert "note: left out 6 run(s) without test_acc (on notest): --metric val_acc reports them" in out


def test_study_has_every_dataset_and_says_what_the_runs_did(swept, capsys, tmp_path):
    _, _, db = swept
    out = tmp_path / "study.md"
    code, _, _ = run_cli(capsys, "study", "--db", db, "--sweep", "mixed", "--out", out)
    text = out.read_text()
    assert code == 0 and "12 finished runs" in text
    assert "## notest, 2 classes; all labels" in text and "## tested.zip, 2 classes; all labels" in text
    assert (
        "Asked on held-out test accuracy where the data has a test split (tested.zip) and on val accuracy, "
        "which also selected each run's epoch, where it has none (notest), on two datasets that need no "
        "network." in text
    )
    assert "Every run used its dataset's own train, val and test splits" not in text
    assert "Data without a test split (notest): its runs are reported on val accuracy" in text
    assert "| variant | seeds | val accuracy (no test split) | 95% CI |" in text
    assert "| notest, 2 classes; all labels (val accuracy: no test split) |" in text


def test_not_tested_is_not_counted_as_inconclusive(swept, capsys, tmp_path):
    """One seed per cell: every comparison is "not tested"; the bullet said "inconclusive in 2" beside a
    table of 0 inconclusive and 2 not tested."""
    _, _, db = swept
    with ResultsDB(db, readonly=True) as results:
        rows = [r for r in results.rows("mixed") if r["seed"] == 0]
    from qtl.experiments.findings import _summary, tally

    sections = findings(rows)
    assert tally(sections)["linear"] == {
        "better": 0, "worse": 0, "equivalent": 0, "inconclusive": 0, "not tested": 2,
    }  # fmt: skip
    bullets = _summary(sections)
    assert "- **dressed circuit vs linear**: not tested in 2." in bullets
    assert not any("inconclusive" in b for b in bullets)


@pytest.mark.parametrize("name", ["data/notest", "data/notest/", "notest"])
def test_runs_dataset_matches_every_name_qtl_shows(swept, capsys, name):
    _, _, db = swept
    code, out, err = run_cli(capsys, "runs", "--db", db, "--dataset", name)
    assert code == 0 and "6 run(s)" in err and "tested.zip" not in out


@pytest.mark.parametrize("name", ["data/tested.zip", "tested.zip", "tested"])
def test_runs_dataset_matches_a_zip_by_its_names(swept, capsys, name):
    _, _, db = swept
    code, out, _ = run_cli(capsys, "runs", "--db", db, "--sweep", "mixed", "--dataset", name, "--report")
    assert code == 0 and "on tested.zip" in out and "on notest" not in out


def test_a_dataset_that_fails_is_named(tmp_path, capsys):
    make_class_folders(tmp_path / "ok", 2, 4)
    make_class_folders(tmp_path / "one", 2, 4)
    lonely = tmp_path / "one" / "lonely"
    lonely.mkdir()
    shutil.copy(tmp_path / "one" / "class_0" / "0_0.png", lonely / "x.png")
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "bad"\npretrained = false\ndataset = ["ok", "one"]\n')
    code, _, err = run_cli(capsys, "sweep", spec, "--db", tmp_path / "r.db", "--dry-run")
    assert code == 1 and err.count("\n") == 1
    assert "qtl: error: sweep 'bad', dataset 'one': class 'lonely' has 1 image" in err


def test_dry_run_counts_changed_runs_apart(swept, capsys, tmp_path):
    """Runs marked changed were counted "to run", though the sweep refuses them without --rerun-changed."""
    folder, spec, db = swept
    copy = tmp_path / "r.db"
    shutil.copy(db, copy)
    with sqlite3.connect(copy) as raw:  # as if the folder had listed other images when they ran
        raw.execute(
            "UPDATE runs SET config = json_set(config, '$.data', 'other') WHERE dataset = 'data/notest'"
        )
    code, out, _ = run_cli(capsys, "sweep", spec, "--db", copy, "--dry-run")
    assert code == 0 and "12 runs, 6 done, 6 changed (need --rerun-changed), 0 to run" in out
    code, out, _ = run_cli(capsys, "sweep", spec, "--db", copy, "--dry-run", "--rerun-changed")
    assert code == 0 and "12 runs, 6 done, 6 to run" in out


def test_qtl_data_lists_each_unreadable_file_once_by_its_own_name(tmp_path, capsys):
    data = make_class_folders(tmp_path / "flat", 2, 6)
    (data / "class_0" / "notes.txt").write_text("hello")
    good = (data / "class_0" / "0_0.png").read_bytes()
    (data / "class_0" / "broken.png").write_bytes(good[: len(good) // 2])
    (data / "class_1" / "empty.png").write_bytes(b"")
    code, out, err = run_cli(capsys, "data", "--path", data)
    assert code == 0
    # an empty file does not open as an image: skipped when the folder is arranged (cc6237d); a file whose
    # header opens and whose pixels are cut short is found when the images are decoded
    assert (
        "skipped 2 file(s):\n  class_0/notes.txt: not an image file (.txt)\n"
        "  class_1/empty.png: not a readable image (an empty file)\n"
    ) in out
    assert "unreadable 1 image file(s), skipped when training:\n  class_0/broken.png: " in out
    assert "ok, 1 unreadable file(s) will be skipped" in out and out.count("empty.png") == 1
    assert "skipping image" not in err and "datasets/" not in out.split("\n", 1)[1]
