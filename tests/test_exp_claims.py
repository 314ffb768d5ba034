"""Two sweeps on one database: a run is claimed as it is dispatched (`ResultsDB.start`), so a run another
sweep finished or is training is skipped, never reset (it was restarted, its epochs deleted, and left
uncounted when that sweep was stopped)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys

import pytest
from conftest import make_image_folder

from qtl.config import ModelConfig, TrainConfig
from qtl.experiments.database import ResultsDB
from qtl.experiments.runs import Outcome, Run
from qtl.experiments.spec import parse_spec
from qtl.experiments.sweeps import SweepObserver, run_sweep, taken_note

RUNS = [Run(ModelConfig("linear", pretrained=False), TrainConfig(epochs=1, seed=s)) for s in range(3)]


def live_owner() -> str:
    """Another process of this host that is alive: the test runner's parent."""
    return f"{socket.gethostname()}:{os.getppid()}"


def gone_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    return f"{socket.gethostname()}:{int(proc.stdout)}"


def finished(db: ResultsDB, run: Run) -> None:
    row = {"val_acc": 0.5, "seed": run.train_config.seed, "train_time_s": 1.0}
    db.finish(run.id, Outcome(row, [{"epoch": 1, "val_acc": 0.5}], 1.0))


def test_a_run_another_sweep_finished_or_runs_is_not_claimed(tmp_path):
    path = tmp_path / "r.db"
    with ResultsDB(path) as a, ResultsDB(path) as b:
        a.add_sweep("a", "", RUNS)
        b.add_sweep("b", "", RUNS[::-1])
        assert a.start(RUNS[0].id) is None
        finished(a, RUNS[0])
        assert b.start(RUNS[0].id) == "done"  # it reset it: running, its epochs deleted
        assert [h["epoch"] for h in b.history(RUNS[0].id)] == [1]
        assert b.rows("b", status="done")[0]["id"] == RUNS[0].id
        assert b.start(RUNS[0].id, redo=True) is None  # --rerun-changed trains it again
        assert a.start(RUNS[1].id, owner=live_owner()) is None
        assert b.start(RUNS[1].id) == "running"  # another live sweep trains it
        assert a.start(RUNS[2].id, owner=gone_owner()) is None
        assert b.start(RUNS[2].id) is None  # its sweep was killed: interrupted, trained again


def test_a_run_marked_by_another_host_or_a_reused_pid_is_taken_over(tmp_path):
    """A sweep killed on one node and run again on another (a batch job resubmitted), or a pid another
    process took after a restart: such runs were skipped for ever as "being trained by another sweep".
    Only a live process of this host that started when its tag says keeps its run."""
    from qtl.experiments.database import _started, owner_gone, owner_tag

    parent = live_owner()
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_sweep("s", "", RUNS)
        assert db.start(RUNS[0].id, owner="node17:4242") is None
        assert db.start(RUNS[0].id) is None  # another host: cannot be checked, taken over
        assert db.start(RUNS[1].id, owner=f"{parent}@1") is None  # its pid, another start: reused
        assert owner_gone(f"{parent}@1") and db.start(RUNS[1].id) is None
        assert db.start(RUNS[2].id, owner=f"{parent}@{_started(os.getppid())}") is None
        assert db.start(RUNS[2].id) == "running"  # that very process, alive: left to it
    assert owner_tag().endswith(f":{os.getpid()}@{_started(os.getpid())}")


def test_a_sweep_skips_runs_another_sweep_took_after_it_planned(tmp_path):
    """Between this sweep's planning and its dispatching, another sweep finished one run and is training
    another: this one trains only the third, counts the first as done and says so."""
    data = make_image_folder(tmp_path / "tiny")
    text = f'name = "b"\ndataset = "{data}"\npretrained = false\nepochs = 1\nvariant = "linear"\nseeds = 3\n'
    spec = parse_spec(__import__("tomllib").loads(text), source=text)
    path = tmp_path / "r.db"

    class Other(SweepObserver):
        def planned(self, spec, runs, todo, earlier=0):
            assert len(todo) == 3
            with sqlite3.connect(path) as other:  # sweep A, in another connection
                other.execute("UPDATE runs SET status = 'done', val_acc = 0.5 WHERE id = ?", (todo[0].id,))
                other.execute(
                    "UPDATE runs SET status = 'running', owner = ? WHERE id = ?", (live_owner(), todo[1].id)
                )
            other.close()
            self.todo = todo

    observer = Other()
    report = run_sweep(spec, path, observer=observer)
    assert (report.done, report.skipped, report.elsewhere, report.remaining) == (1, 1, 1, 1)
    assert report.warnings == [taken_note("b", done=1, running=1)]
    with ResultsDB(path, readonly=True) as db:
        rows = {r["id"]: r for r in db.rows("b", status=None)}
    first, second, third = (rows[r.id] for r in observer.todo)
    assert (first["status"], first["val_acc"], first["attempts"]) == ("done", 0.5, 0)  # never reset
    assert (second["status"], second["attempts"]) == ("running", 0)
    assert third["status"] == "done" and third["attempts"] == 1


@pytest.mark.parametrize("counts", [{}, {"done": 0, "running": 0}])
def test_nothing_taken_says_nothing(counts):
    assert taken_note("s", **counts) == ""


def test_the_note_names_both():
    note = taken_note("s", done=2, running=1)
    assert "2 finished by another sweep" in note and "1 being trained by another sweep" in note
