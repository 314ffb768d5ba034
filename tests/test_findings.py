"""A study's findings (qtl.experiments.findings) and `qtl study`: verdicts from the paired tests and their
power, sections per dataset and regime, the Markdown written from a results database opened read-only."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from qtl import cli
from qtl.config import DataRegime, ModelConfig, recipe
from qtl.experiments.database import ResultsDB
from qtl.experiments.findings import conclusion, findings, tally
from qtl.experiments.runs import Outcome, Run
from qtl.quantum.circuit import CircuitConfig

SEEDS = range(10)
BASE = {"backbone": "b", "weights": "imagenet", "dataset": "d", "split": "kfold-5", "n_classes": 2}


def rows_for(variant, accs, **extra):
    cell = {**BASE, "variant": variant, "qubits": 4, "lr": 4e-4, "epochs": 30, **extra}
    return [
        {**cell, "seed": s, "test_acc": float(a), "val_acc": float(a)}
        for s, a in zip(SEEDS, accs, strict=True)
    ]


@pytest.fixture
def rows():
    """quantum: 0.08 above its dressed-classical control on every seed, within 0.001 of the RBF SVM, and
    against a linear head so noisy that nothing can be said; a few-shot regime with quantum alone."""
    rng = np.random.default_rng(0)
    q = 0.8 + rng.normal(0, 0.02, 10)
    out = rows_for("quantum", q, depth=6)
    out += rows_for("dressed-classical", q - 0.08 + rng.normal(0, 0.005, 10))
    out += rows_for("rbf-svm", q + rng.normal(0, 0.001, 10))
    out += rows_for("linear", q + rng.normal(0, 0.2, 10))
    out += rows_for("quantum", 0.6 + rng.normal(0, 0.02, 10), depth=6, per_class=2)
    return out


def test_verdicts_power_and_sections(rows):
    sections = findings(rows)
    assert [s.title for s in sections] == [
        "d, 2 classes; all labels",
        "d, 2 classes; 2 labelled images per class",
    ]
    words = {c["control"]: c["verdict_word"] for c in sections[0].comparisons}
    assert words == {"dressed-classical": "better", "rbf-svm": "equivalent", "linear": "inconclusive"}
    linear = next(c for c in sections[0].comparisons if c["control"] == "linear")
    assert linear["power"] < 0.8 and linear["seeds_needed"] > 10  # why it is inconclusive
    text = conclusion(sections[0])
    assert "better than dressed-classical by 0.08" in text and "equivalent to rbf-svm within ±0.02" in text
    assert f"{linear['seeds_needed']} seeds would give 80%" in text
    assert conclusion(sections[1]) == "No quantum head ran in this regime."
    assert tally(sections)["linear"]["inconclusive"] == 1


def test_each_quantum_configuration_keeps_its_own_answer(rows):
    """Two dressed circuits in one regime: each is a head of its own in the conclusion and the answer
    grid (the grid kept one number per control, the last configuration's, under "dressed circuit")."""
    from qtl.experiments.findings import _answer_grid

    q = [r["test_acc"] for r in rows if r["variant"] == "quantum" and not r.get("per_class")]
    more = rows_for("quantum", [a - 0.3 for a in q], depth=1, qubits=2)
    sections = findings(rows + more)
    text = conclusion(sections[0])
    assert "**dressed circuit (quantum 4q d6)**: better than dressed-classical" in text
    assert "**dressed circuit (quantum 2q d1)**: worse than linear" in text
    grid = [line for line in _answer_grid(sections) if line.startswith("| d, 2 classes; all labels")]
    assert len(grid) == 2 and any("better" in g for g in grid) and any("worse" in g for g in grid)
    assert "**dressed circuit**:" in conclusion(findings(rows)[0])  # one configuration: its plain name


@pytest.mark.parametrize("apart", ["noise", "backbone"])
def test_heads_that_differ_in_what_cell_name_leaves_out_are_told_apart(rows, apart):
    """An ideal and a noisy circuit, or one circuit on two backbones, in one regime: two heads in the
    conclusion and the answer grid, and two rows of the cell table (one name each, where both read
    "dressed circuit" and "quantum 4q d6" and the grid kept the last one's number)."""
    from qtl.experiments.findings import _answer_grid, _cell_table

    base = [r for r in rows if r["variant"] in ("quantum", "dressed-classical") and not r.get("per_class")]
    if apart == "noise":
        other = [
            {**r, "noise": "dep 0.1", "test_acc": r["test_acc"] - 0.3}
            for r in base
            if r["variant"] == "quantum"
        ]
        names = ("quantum 4q d6 noise-free", "quantum 4q d6 noise dep 0.1")
    else:
        other = [{**r, "backbone": "vit", "test_acc": r["test_acc"] - 0.3} for r in base]
        names = ("quantum 4q d6 b", "quantum 4q d6 vit")
    (section,) = findings(base + other)
    text = conclusion(section)
    assert all(f"**dressed circuit ({n})**" in text for n in names), text
    assert len(_answer_grid([section])) == 2 + 2
    table = [line.split(" | ")[0].lstrip("| ") for line in _cell_table(section)[2:]]
    assert len(table) == len(set(table)) and set(names) <= set(table)


def test_qtl_study_writes_the_document_from_a_database_it_never_changes(rows, tmp_path, capsys):
    """The rows go into a results database through its own API; `qtl study` writes the Markdown: the
    spec, the answer table, one part per regime with its comparisons and power; the file is untouched."""
    db_path = tmp_path / "study.db"
    runs, outcomes = [], []
    for r in rows:
        circuit = CircuitConfig(4, r.get("depth") or 1)
        regime = DataRegime(split="kfold", per_class=r.get("per_class"))
        tc = __import__("dataclasses").replace(recipe("quantum"), seed=r["seed"], regime=regime)
        run = Run(ModelConfig(r["variant"], circuit=circuit), tc, dataset="d")
        runs.append(run)
        outcomes.append(Outcome({**r, "setup": r["variant"], "depth": r.get("depth")}, [{"epoch": 1}], 1.0))
    with ResultsDB(db_path) as db:
        db.add_sweep("study", "name = 'study'\n", runs)
        for run, outcome in zip(runs, outcomes, strict=True):
            db.start(run.id)
            db.finish(run.id, outcome, {"device": "cpu (x86_64)", "cpus": 2}, {"wall": 1.0})
    before = db_path.read_bytes()
    out = tmp_path / "report" / "findings.md"
    out.parent.mkdir()
    assert cli.main(["study", "--db", str(db_path), "--out", str(out), "--made-by", "qtl sweep s.toml"]) == 0
    text = out.read_text()
    assert db_path.read_bytes() == before
    assert f"qtl study --db {db_path} --sweep study --out {out}     # this document" in text
    assert "qtl sweep s.toml" in text and "name = 'study'" in text and "## Answer" in text
    assert "## d, 2 classes; 2 labelled images per class" in text
    assert "| quantum 4q d6 | rbf-svm | 10 |" in text and "power for ±0.02" in text
    assert cli.main(["study", "--db", str(tmp_path / "none.db")]) == 1
    assert "no results database" in capsys.readouterr().err


def test_a_sweep_without_test_accuracy_is_refused_in_one_line(tmp_path, capsys):
    """docs/wide.db selected on val only: no study document (it was written empty, with a table of no
    rows, and said every run had a test split), one line saying why, and nothing written."""
    copy = tmp_path / "wide.db"
    copy.write_bytes((REPO / "docs" / "wide.db").read_bytes())
    code = cli.main(["study", "--db", str(copy), "--sweep", "wide", "--out", str(tmp_path / "wide.md")])
    assert code == 1 and "has no held-out test accuracy, which a study reports" in capsys.readouterr().err
    assert not (tmp_path / "wide.md").exists()


def test_the_question_names_the_heads_and_controls_the_runs_trained():
    """The study's question names what its runs trained: the shipped study's six variants as docs/study.md
    words them, and a sweep of the paper's circuit against a linear head without the controls and kernels
    it never ran."""
    from qtl.experiments.findings import _question

    every = [
        {"variant": "quantum", "reupload": 0},
        {"variant": "quantum", "reupload": 1},
        *({"variant": v} for v in ("dressed-classical", "linear", "quantum-kernel", "rbf-svm")),
    ]
    shipped = (REPO / "docs" / "study.md").read_text().splitlines()[2]
    assert shipped.startswith(_question(every) + " Asked on")
    small = _question([{"variant": "quantum", "reupload": 0}, {"variant": "linear"}])
    assert small == (
        "Does the dressed quantum circuit of Mari et al. (2019) classify differently from a plain linear "
        "head?"
    )
    rbf = _question([{"variant": "quantum", "reupload": 1}, {"variant": "rbf-svm"}])
    assert rbf == (
        "Does a data re-uploading circuit classify differently from support vector machines with a "
        "classical RBF kernel on the same inputs?"
    )
