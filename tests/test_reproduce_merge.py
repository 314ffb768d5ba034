"""`qtl reproduce --from a.json b.json`: reports of runs under different protocols (the given split and k
folds, other epochs, another dataset) merge into separate rows, each named by what sets it apart, never
into one row of mixed runs; a seed counts once per variant and protocol."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import make_image_folder

from qtl.cli import main
from qtl.experiments.reproduce import markdown, merge_reports, paper_report

TINY = ["--variants", "quantum", "linear", "--random-init", "--qubits", "2", "--depth", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two real reports of a tiny dataset, as `qtl reproduce` writes them: quantum and linear over seeds 0
    and 1 on k folds (the default), and seed 0 on the dataset's own train/val (`--split given`)."""
    tmp = tmp_path_factory.mktemp("reproduce")
    data = make_image_folder(tmp / "tiny")
    common = ["-q", "reproduce", *TINY, "--data", str(data), "--models-dir", str(tmp / "m")]
    assert main([*common, "--seeds", "2", "--out", str(tmp / "kfold.md")]) == 0
    assert main([*common, "--seeds", "1", "--split", "given", "--out", str(tmp / "given.md")]) == 0
    return {
        "dir": tmp,
        "kfold": json.loads((tmp / "kfold.json").read_text()),
        "given": json.loads((tmp / "given.json").read_text()),
    }


def table_rows(report: dict) -> list[tuple]:
    return [(s["variant"], s["protocol"], s["seeds"]) for s in report["summary"]]


def test_each_report_says_its_split(reports):
    """A report of one protocol keeps its plain rows and says its data above the table."""
    kfold, given = reports["kfold"], reports["given"]
    assert table_rows(kfold) == [("quantum", "", [0, 1]), ("linear", "", [0, 1])]
    assert {r["split"] for r in kfold["runs"]} == {"kfold-5"} and {r["split"] for r in given["runs"]} == {
        "given"
    }
    assert "Data: kfold-5 (`--split kfold`)" in markdown(kfold)
    assert "Data: the dataset's own split (`--split given`)" in markdown(given)
    assert "| A | quantum | resnet18 (random init) | 2 |" in markdown(kfold)


def test_cli_merge_keeps_kfold_and_given_runs_apart(reports, capsys, caplog):
    """The reviewer's case: one quantum row of 3 "seeds" (two of them seed 0, one per split) became a row
    per split, each with its own seeds, labelled, said in the notes and on stderr, and compared within
    its split only (test accuracy on folds, val accuracy on the given split: it has no test/)."""
    tmp = reports["dir"]
    out = tmp / "merged.md"
    paths = [str(tmp / "kfold.json"), str(tmp / "given.json")]
    with caplog.at_level(logging.WARNING, logger="qtl.experiments.reproduce"):
        assert main(["-q", "reproduce", "--from", *paths, "--out", str(out)]) == 0
    merged = json.loads(out.with_suffix(".json").read_text())
    assert table_rows(merged) == [
        ("quantum", "kfold-5", [0, 1]),
        ("quantum", "given split", [0]),
        ("linear", "kfold-5", [0, 1]),
        ("linear", "given split", [0]),
    ]
    assert len(merged["runs"]) == 6  # every run kept, none pooled
    assert merged["data"] is None  # no one protocol to name above the table
    assert any("runs of several protocols (they differ in split)" in n for n in merged["notes"])
    assert "runs of several protocols" in caplog.text
    text = out.read_text()
    assert "| A | quantum (kfold-5) | resnet18 (random init) | 2 |" in text
    assert "| A | quantum (given split) | resnet18 (random init) | 1 |" in text
    assert "| quantum (given split) | 0 |" in text  # the runs table names each run's protocol too
    assert [(c["quantum"]["split"], c["control"], c["n"], c["metric"]) for c in merged["comparisons"]] == [
        ("kfold-5", "linear", 2, "test_acc"),
        ("given", "linear", 1, "val_acc"),
    ]
    assert "on test_acc where both cells have it on every paired seed, else val_acc" in text


def test_other_epochs_are_another_row(reports):
    """Runs of one split but another recipe (here the epochs) are not seeds of one row either."""
    kfold = reports["kfold"]
    longer = {
        **kfold,
        "runs": [{**r, "id": f"{r['id']}-e2", "epochs": 2, "epochs_done": 2} for r in kfold["runs"]],
    }
    merged = merge_reports([kfold, longer], command="qtl reproduce --from a.json b.json")
    assert table_rows(merged) == [
        ("quantum", "epochs 1", [0, 1]),
        ("quantum", "epochs 2", [0, 1]),
        ("linear", "epochs 1", [0, 1]),
        ("linear", "epochs 2", [0, 1]),
    ]
    assert merged["data"].startswith("kfold-5")  # one data protocol: said above the table
    assert any("they differ in epochs" in n for n in merged["notes"])


def test_another_dataset_is_another_row(reports):
    given = reports["given"]
    other = {
        **given,
        "runs": [{**r, "id": f"{r['id']}-o", "dataset": "C:\\data\\other\\"} for r in given["runs"]],
    }
    merged = merge_reports([given, other], command="qtl reproduce --from a.json b.json")
    assert [(s["variant"], s["protocol"], s["n"]) for s in merged["summary"]] == [
        ("quantum", "on tiny", 1),
        ("quantum", "on other", 1),
        ("linear", "on tiny", 1),
        ("linear", "on other", 1),
    ]


def test_a_dataset_is_named_by_its_last_path_part():
    """One naming of a dataset path for run names, table rows and cells, with / or \\ between parts."""
    from qtl.config import ModelConfig, TrainConfig
    from qtl.experiments.runs import Run
    from qtl.experiments.stats import cell_name, dataset_label

    for path in ("digits", "data/digits/", "C:\\data\\digits", "D:\\sets/digits\\"):
        assert dataset_label(path) == "digits"
        assert Run(ModelConfig("linear"), TrainConfig(seed=2), dataset=path).name == "linear on digits seed 2"
        assert (
            cell_name({"variant": "linear", "backbone": "resnet18", "dataset": path})
            == "linear resnet18 on digits"
        )


def test_a_second_run_of_a_seed_in_one_protocol_counts_once(reports):
    """Two runs of seed 0 under one protocol (ids apart: something no column records) are one sample:
    the second is left out and said, not counted as another seed."""
    given = reports["given"]
    again = {**given, "runs": [{**r, "id": f"{r['id']}-again", "val_acc": 0.0} for r in given["runs"]]}
    merged = merge_reports([given, again], command="qtl reproduce --from a.json b.json")
    assert table_rows(merged) == [("quantum", "", [0]), ("linear", "", [0])]
    assert [r["id"] for r in merged["runs"]] == [r["id"] for r in given["runs"]]
    left = [n for n in merged["notes"] if n.startswith("left out a second run of")]
    assert len(left) == 2 and "quantum seed 0" in left[0] and given["runs"][0]["id"] in left[0]
    assert merged["summary"][0]["best_val_acc_mean"] == given["summary"][0]["best_val_acc_mean"]


def test_rows_from_before_the_regime_columns_are_given_split_runs(reports):
    """A report written before rows recorded their split (every run then trained on the given split):
    its runs share a row with new given-split runs of the same settings, not with k-fold ones."""
    new = ("split", "n_classes", "per_class", "label_noise", "test_acc", "test_loss", "n_train", "n_test")
    new += ("reupload", "feature_dim", "recipe", "circuit_options")
    old_runs = [
        {**{k: v for k, v in r.items() if k not in new}, "id": f"{r['id']}-old", "seed": 5}
        for r in reports["given"]["runs"]
    ]
    old = paper_report(old_runs, command="qtl reproduce (old)")
    with_given = merge_reports([old, reports["given"]], command="qtl reproduce --from old.json given.json")
    assert table_rows(with_given) == [("quantum", "", [5, 0]), ("linear", "", [5, 0])]
    # the comparisons group the runs as the table does: one test of both seeds, not one per report
    assert comparisons_of(with_given) == [("given", "linear", [0, 5], "val_acc")]
    with_kfold = merge_reports([old, reports["kfold"]], command="qtl reproduce --from old.json kfold.json")
    assert table_rows(with_kfold) == [
        ("quantum", "given split", [5]),
        ("quantum", "kfold-5", [0, 1]),
        ("linear", "given split", [5]),
        ("linear", "kfold-5", [0, 1]),
    ]
    assert comparisons_of(with_kfold) == [
        ("given", "linear", [5], "val_acc"),
        ("kfold-5", "linear", [0, 1], "test_acc"),
    ]


def test_old_quantum_runs_compare_with_new_controls(reports):
    """docs/results.md's way to add a variant: merge the old report with new runs. Old quantum runs (no
    regime columns) merged with new given-split linear runs of the same seed are compared with them, on
    the given split, as the table pools them."""
    new = ("split", "n_classes", "per_class", "label_noise", "test_acc", "test_loss", "n_train", "n_test")
    new += ("reupload", "feature_dim", "recipe", "circuit_options")
    given = reports["given"]
    old_quantum = [
        {**{k: v for k, v in r.items() if k not in new}, "id": f"{r['id']}-old"}
        for r in given["runs"]
        if r["variant"] == "quantum"
    ]
    new_linear = [r for r in given["runs"] if r["variant"] == "linear"]
    merged = merge_reports(
        [paper_report(old_quantum, command="old"), paper_report(new_linear, command="new")], command="merge"
    )
    assert table_rows(merged) == [("quantum", "", [0]), ("linear", "", [0])]
    assert comparisons_of(merged) == [("given", "linear", [0], "val_acc")]
    (c,) = merged["comparisons"]
    assert c["diff"] == pytest.approx(old_quantum[0]["val_acc"] - new_linear[0]["val_acc"])


def comparisons_of(report: dict) -> list[tuple]:
    return [(c["quantum"]["split"], c["control"], c["seeds"], c["metric"]) for c in report["comparisons"]]


def with_accuracies(runs: list[dict], acc: dict) -> list[dict]:
    """Copies of `runs` with the (val_acc, test_acc) that `acc` gives each (variant, seed)."""
    return [{**r, "val_acc": acc[r["variant"], r["seed"]][0], "test_acc": acc[r["variant"], r["seed"]][1]}
            for r in runs]  # fmt: skip


ACC = {  # (val_acc, test_acc): quantum better than linear by 0.035 on val, by 0.095 on test
    ("quantum", 0): (0.95, 0.81),
    ("quantum", 1): (0.93, 0.80),
    ("linear", 0): (0.90, 0.70),
    ("linear", 1): (0.91, 0.72),
}


def test_a_pair_is_compared_on_test_only_where_both_cells_have_it(reports):
    """The reviewer's case: quantum runs all with a test accuracy, one linear run without. The pair is
    compared on val accuracy for both (not quantum's test less linear's val), and says so."""
    runs = with_accuracies(reports["kfold"]["runs"], {**ACC, ("linear", 1): (0.91, None)})
    report = paper_report(runs, command="qtl reproduce")
    assert comparisons_of(report) == [("kfold-5", "linear", [0, 1], "val_acc")]
    (c,) = report["comparisons"]
    assert c["diff"] == pytest.approx(0.035)
    assert "paired by seed on val_acc" in markdown(report)
    # every run with a test accuracy: on test, for both
    (c,) = paper_report(with_accuracies(runs, ACC), command="qtl reproduce")["comparisons"]
    assert (c["metric"], c["diff"]) == ("test_acc", pytest.approx(0.095))


def test_each_pair_has_its_own_metric_in_one_family(reports):
    """A quantum cell with two controls, one with test accuracies on every paired seed and one without
    on one seed: the first pair is on test, the second on val, each named so, and the p-values are
    adjusted over both as compared."""
    runs = with_accuracies(reports["kfold"]["runs"], ACC)
    dressed = [
        {
            **r,
            "id": f"{r['id']}-d",
            "variant": "dressed-classical",
            "val_acc": r["val_acc"] - 0.1 * (1 + r["seed"]),
        }
        for r in runs
        if r["variant"] == "quantum"
    ]  # val 0.10 and 0.20 below quantum's
    dressed[0]["test_acc"] = None
    report = paper_report([*runs, *dressed], command="qtl reproduce")
    assert [(c["control"], c["metric"], c["n"]) for c in report["comparisons"]] == [
        ("dressed-classical", "val_acc", 2),
        ("linear", "test_acc", 2),
    ]
    on = {c["control"]: c for c in report["comparisons"]}
    assert on["dressed-classical"]["diff"] == pytest.approx(0.15)
    assert on["linear"]["diff"] == pytest.approx(0.095)
    p = [on["dressed-classical"]["p"], on["linear"]["p"]]
    assert None not in p
    from scipy.stats import false_discovery_control

    adjusted = [on["dressed-classical"]["p_adjusted"], on["linear"]["p_adjusted"]]
    assert adjusted == pytest.approx(list(false_discovery_control(p, method="bh")))
    text = markdown(report)
    assert "on test_acc where both cells have it on every paired seed, else val_acc" in text
    assert ", on val_acc | dressed-classical |" in text and ", on test_acc | linear |" in text


def test_from_refuses_options_it_would_ignore(reports, capsys):
    """--from trains nothing: a training option beside it (a split, epochs, checkpoints to load) did
    nothing, unsaid; now it is refused in one line, writing nothing."""
    tmp = reports["dir"]
    out = tmp / "ignored.md"
    argv = ["-q", "reproduce", "--from", str(tmp / "kfold.json"), "--out", str(out)]
    assert main([*argv, "--split", "given", "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "qtl: error: --from merges earlier reports and trains nothing, so --epochs, --split would do "
        "nothing: drop them"
    )
    assert not out.exists()
    assert main([*argv, "--effect", "0.05"]) == 0 and out.exists()  # what a merge uses is taken
    made_by = json.loads(out.with_suffix(".json").read_text())["command"]  # the command given, not pytest's
    assert made_by.startswith("qtl -q reproduce --from ") and made_by.endswith("--effect 0.05")


def test_cli_from_refuses_what_is_no_report(capsys, tmp_path):
    """--from reads qtl reproduce's own JSON reports: qtl compare's JSON gave a KeyError traceback, a spec
    or a database a decoder's message that named no file; each is now one line naming the file."""
    from test_cli_outputs import refused

    compare = tmp_path / "cmp.json"
    compare.write_text(json.dumps({"runs": [], "summary": []}))
    other = tmp_path / "x.json"
    other.write_text(json.dumps({"format": "x"}))
    spec, db = tmp_path / "s1.toml", tmp_path / "results.db"
    spec.write_text('name = "s1"\n')
    db.write_bytes(b"SQLite format 3\x00\xf8\xff")
    out = ["--out", tmp_path / "merged.md"]
    line = refused(capsys, "reproduce", "--from", compare, *out)
    assert f"{compare} is another JSON document, not a qtl reproduce report" in line
    assert f"{other} is a 'x' document" in refused(capsys, "reproduce", "--from", other, *out)
    assert f"{spec} is not a JSON file" in refused(capsys, "reproduce", "--from", spec, *out)
    assert f"{db} is not a JSON file" in refused(capsys, "reproduce", "--from", db, *out)
    line = refused(capsys, "reproduce", "--from", tmp_path / "nope.json", *out)
    assert f"cannot read {tmp_path / 'nope.json'}: No such file or directory" in line
    assert not (tmp_path / "merged.md").exists() and not (tmp_path / "merged.json").exists()
