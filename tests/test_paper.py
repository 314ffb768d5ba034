"""`qtl reproduce` and qtl.experiments.reproduce: the paper's comparison as a Markdown + JSON report."""

from __future__ import annotations

import json

import pytest
from conftest import make_image_folder

from qtl.cli import main
from qtl.experiments.reproduce import PUBLISHED, markdown, merge_reports, paper_report, summarise_variants


def row(variant: str, seed: int, best: float, final: float, t: float = 10.0) -> dict:
    return {
        "variant": variant, "seed": seed, "backbone": "efficientnet_lite0", "weights": "imagenet",
        "val_acc": best, "final_val_acc": final, "best_epoch": 3, "epochs_done": 30, "train_time_s": t,
        "classical": 5134, "quantum": 24 if variant == "quantum" else 0,
    }  # fmt: skip


def test_summary_statistics_and_published_numbers():
    """Mean and sample std over seeds, per variant in the paper's order, the published value beside it."""
    rows = [row("linear", 0, 0.94, 0.93), row("quantum", 0, 0.95, 0.94), row("quantum", 1, 0.97, 0.92, 20)]
    summary = summarise_variants(rows)
    assert [s["variant"] for s in summary] == ["quantum", "linear"]
    q = summary[0]
    assert (q["letter"], q["n"], q["seeds"]) == ("A", 2, [0, 1])
    assert q["best_val_acc_mean"] == pytest.approx(0.96) and q["best_val_acc_std"] == pytest.approx(
        0.02**0.5 / 10
    )
    assert q["final_val_acc_mean"] == pytest.approx(0.93) and q["train_time_s_mean"] == pytest.approx(15)
    assert q["published"] == PUBLISHED["quantum"] == 0.9673 and summary[1]["published"] == 0.9542
    assert q["backbone"] == "efficientnet_lite0 (ImageNet, bundled)"
    text = markdown(paper_report(rows, command="qtl reproduce"))
    cells = (
        "A | quantum | efficientnet_lite0 (ImageNet, bundled) | 2 | 30 | 0.9600 ± 0.0141 | 0.9300 ± 0.0141"
    )
    assert f"| {cells} | n/a | 0.9673 |" in text  # no test split in these rows: no test accuracy


def test_merge_keeps_every_run_and_says_where_they_came_from():
    a = paper_report([row("quantum", 0, 0.95, 0.94)], command="qtl reproduce --variants quantum")
    b = paper_report([row("linear", 0, 0.94, 0.93)], command="qtl reproduce --variants linear")
    merged = merge_reports([a, b], command="qtl reproduce --from a.json b.json")
    assert [s["variant"] for s in merged["summary"]] == ["quantum", "linear"]
    assert len(merged["runs"]) == 2
    assert merged["notes"] == [
        "runs from: `qtl reproduce --variants quantum`",
        "runs from: `qtl reproduce --variants linear`",
    ]


def test_a_run_counts_once_and_the_merge_keeps_the_effect():
    """A report merged with itself (or two checkpoints of one run loaded): each run once, the rest said
    in the notes (seeds 6 from 3, and a smaller std); the merged power analysis is for the effect asked
    (it stayed ±0.02)."""
    runs = [{**row("quantum", s, 0.9 + s / 100, 0.9), "id": f"q{s}", "dataset": None} for s in range(3)]
    once = paper_report(runs, command="qtl reproduce")
    merged = merge_reports([once, once], command="qtl reproduce --from a.json a.json", effect=0.05)
    assert len(merged["runs"]) == 3 and merged["summary"][0]["n"] == 3
    assert merged["summary"][0]["best_val_acc_std"] == once["summary"][0]["best_val_acc_std"]
    assert any("left out 3 row(s) of runs already counted" in n for n in merged["notes"])
    assert merged["effect"] == 0.05


def test_load_alone_reports_the_checkpoints_without_training(tmp_path, capsys):
    """`qtl reproduce --load CKPT`: a report of that run alone (it also trained every variant over 3
    seeds on the default dataset, unless --seeds 0 was given)."""
    data = make_image_folder(tmp_path / "tiny")
    ckpt = tmp_path / "l.pt"
    assert (
        main(
            [
                "-q",
                "train",
                "linear",
                "--random-init",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--out",
                str(ckpt),
            ]
        )
        == 0
    )
    out = tmp_path / "r.md"
    assert main(["-q", "reproduce", "--load", str(ckpt), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["variant"] for r in report["runs"]] == ["linear"]


def test_cli_trains_seeds_and_writes_both_reports(tmp_path, capsys):
    """Two variants x two seeds on a tiny dataset: the Markdown and JSON reports hold every run."""
    data = make_image_folder(tmp_path / "tiny")
    out = tmp_path / "results.md"
    args = ["-q", "reproduce", "--variants", "quantum", "linear", "dressed-classical", "--seeds", "2"]
    args += ["--random-init"]  # linear: its recipe's 5 augmented views, of every fold's training images
    args += ["--epochs", "2", "--qubits", "2", "--depth", "1", "--data", str(data), "--split", "kfold"]
    assert main([*args, "--models-dir", str(tmp_path / "m"), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert [(s["variant"], s["n"], s["epochs"]) for s in report["summary"]] == [
        ("quantum", 2, [2]),
        ("linear", 2, [2]),
        ("dressed-classical", 2, [2]),
    ]
    assert all(0 <= r["final_val_acc"] <= 1 and r["epochs_done"] == 2 for r in report["runs"])
    assert all(r["n_test"] == 4 and r["split"] == "kfold-5" for r in report["runs"])  # 20 images, 5 folds
    assert report["summary"][0]["backbone"] == "resnet18 (random init)"
    assert report["metric"] == "test_acc" and [c["n"] for c in report["comparisons"]] == [2, 2]  # by seed
    assert "power" in report["comparisons"][0]
    text = out.read_text()
    assert text == capsys.readouterr().out.split("wrote ")[0].rstrip("\n") + "\n"
    assert "| A | quantum | resnet18 (random init) | 2 |" in text and "0.9673" in text
    merged = tmp_path / "merged.md"
    assert main(["-q", "reproduce", "--from", str(out.with_suffix(".json")), "--out", str(merged)]) == 0
    assert json.loads(merged.with_suffix(".json").read_text())["runs"] == report["runs"]


def test_reports_name_no_folder_of_this_machine(tmp_path, monkeypatch):
    """The command and notice a report records are made portable: the working folder and the home
    folder never appear (docs/results.md is such a report)."""
    from qtl.paths import portable

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = f"qtl reproduce --data {tmp_path}/data --out {tmp_path}/home/r.md; see {tmp_path / 'home' / 'w'}"
    assert portable(text) == "qtl reproduce --data data --out ~/r.md; see ~/w"
    assert portable(str(tmp_path)) == "."
