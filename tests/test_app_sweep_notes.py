"""What a sweep tells its user besides its counts (`qtl.experiments.sweeps.sweep_notes`): the app's sweep
panel shows it as `qtl sweep` prints it (runs of an earlier spec under the sweep's name, a run that
failed and why, runs another sweep on this machine is training), while the job runs where it is known and
when it ends; the CLI prints the same words it printed before the notes had one source.

Real sweeps of one-epoch heads on a tiny random-init dataset (seconds); a run of 25 qubits on the native
engine fails for real (its statevector engine stops at 24 qubits)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import make_image_folder, run_cli
from test_app import app, app_env, texts, ui_module  # noqa: F401  (app_env is a fixture)

NAME = "noted"


def sweep_from_the_form(at, variants, seeds, qubits=(2,), name=NAME):
    """Submit a one-epoch sweep from the Experiments form; returns its job (not awaited)."""
    at.text_input(key="exp_name").set_value(name)
    at.multiselect(key="exp_variants").set_value(list(variants))
    at.multiselect(key="exp_qubits").set_value(list(qubits))
    at.multiselect(key="exp_depths").set_value([1])
    at.multiselect(key="exp_seeds").set_value(list(seeds))
    at.number_input(key="exp_epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    return ui_module().runner().get(at.session_state["exp_job_id"])


def finish(at, job) -> None:
    assert job.wait(120), "the sweep did not finish"
    at.run()
    assert not at.exception, at.exception


def training(job) -> None:
    """Wait (bounded) until the job has planned its sweep and dispatched a run (held by `gate`)."""
    deadline = time.monotonic() + 60
    while "training" not in job.snapshot().message:
        assert time.monotonic() < deadline and not job.snapshot().finished, job.snapshot()
        time.sleep(0.1)


def said(at) -> tuple[str, str, str]:
    """(infos, warnings, errors) on the page; each one line."""
    for element in (*at.info, *at.warning, *at.error):
        assert "\n" not in element.value and "Traceback" not in element.value, element.value
    return texts(at.info), texts(at.warning), texts(at.error)


@pytest.fixture
def gate(monkeypatch):
    """Runs wait at their start until the test sets the event, so a test sees the job running."""
    from qtl.experiments import executors

    release, real = threading.Event(), executors.train_run

    def gated(run, **kwargs):
        release.wait(60)
        return real(run, **kwargs)

    monkeypatch.setattr(executors, "train_run", gated)
    yield release
    release.set()


def test_the_panel_says_an_earlier_spec_and_a_failed_run_while_running_and_when_done(app_env, gate):  # noqa: F811
    """No sweep yet: no panel. A first sweep ends without notes. The same name again with fewer runs and
    one run that fails: while it runs the panel already says the sweep holds a run of the earlier spec
    (the app said nothing of it, nor of the failure, but "1 failed"); when it ends, also the failed run
    and why, one line each, as `qtl sweep` prints them."""
    at = app("experiments")
    info, warning, error = said(at)
    assert "earlier spec" not in info and not warning and not error
    assert at.session_state["exp_job_id"] is None

    gate.set()
    finish(at, sweep_from_the_form(at, ["linear"], [0, 1]))
    info, warning, error = said(at)
    assert f"{NAME}: 2 run(s) trained, 0 already done, 0 failed" in texts(at.success)
    assert "earlier spec" not in info and not warning and not error  # finished without notes
    from qtl.utils.words import duration

    done = ui_module().runner().get(at.session_state["exp_job_id"]).snapshot()  # its time as words: it
    assert f": done, {duration(done.elapsed)}" in texts(at.markdown)  # read "3725 s" for an hour

    gate.clear()
    job = sweep_from_the_form(at, ["quantum", "linear"], [0], qubits=[25])  # linear seed 0 is done
    training(job)
    at.run()
    snap = job.snapshot()
    assert snap.state == "running", snap.error
    info, warning, error = said(at)
    earlier = (
        f"sweep {NAME} also holds 1 run of an earlier spec under this name, and its reports count them; "
        "give this spec another name to keep the two apart"
    )
    assert earlier in info and not error
    assert any(b.label == "Cancel" for b in at.button)

    gate.set()
    finish(at, job)
    report = job.snapshot().result
    assert (report.done, report.skipped, report.failed, report.earlier) == (0, 1, 1, 1)
    info, warning, error = said(at)
    assert f"{NAME}: 0 run(s) trained, 1 already done, 1 failed" in texts(at.success)
    assert earlier in info
    (failed,) = report.errors
    assert failed.startswith("quantum 25q d1 on tiny seed 0 (") and "stops at 24 qubits (25 asked)" in failed
    assert error.splitlines() == [f"Run failed: {failed}"]  # once, though also said as it came back


def test_runs_another_sweep_is_training_are_said_left_to_it(app_env, tmp_path):  # noqa: F811
    """A run of the sweep is being trained by another sweep process on this machine: the sweep leaves it
    to that one and the panel says so, as `qtl sweep` does (the app said "0 failed" and nothing else)."""
    from qtl.experiments.database import ResultsDB, _started
    from qtl.experiments.sweeps import taken_note

    at = app("experiments")
    finish(at, sweep_from_the_form(at, ["linear"], [0], name="shared"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        started = _started(other.pid)
        tag = f"{socket.gethostname()}:{other.pid}" + (f"@{started}" if started else "")
        with ResultsDB(app_env / "models" / "results.db") as results:
            (row,) = results.rows("shared")
            results.start(row["id"], owner=tag, redo=True)  # that sweep is training it now
        job = sweep_from_the_form(at, ["linear"], [0], name="shared")
        finish(at, job)
    finally:
        other.kill()
        other.wait()
    report = job.snapshot().result
    assert (report.done, report.elsewhere) == (0, 1)
    info, warning, error = said(at)
    assert taken_note("shared", running=1) in warning and not error
    assert "being trained by another sweep on this machine (left to it" in warning


def test_a_stopped_sweep_says_how_to_resume(app_env, gate):  # noqa: F811
    """Cancel while a run trains: the run ends after its batch, the next never starts, and the panel says
    the sweep stopped and how to resume it (`qtl sweep` says so after a Ctrl-C)."""
    at = app("experiments")
    job = sweep_from_the_form(at, ["linear"], [5, 6], name="halted")
    training(job)
    at.run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert job.cancelled and "Stopping after the current batch" in texts(at.caption)
    gate.set()
    finish(at, job)
    snap = job.snapshot()
    assert snap.state == "cancelled" and snap.result.stopped and snap.result.remaining >= 1
    info, warning, error = said(at)
    assert "stopped early" in texts(at.success) and not error
    assert "Sweep stopped; run the same sweep again from the form to resume" in info


def test_a_sweep_that_cannot_start_says_why_once(app_env, monkeypatch, tmp_path):  # noqa: F811
    """The job fails (a results database that is another kind of file): one error line, no notes, no
    traceback."""
    bad = tmp_path / "results.db"
    bad.write_text("not a database\n")
    monkeypatch.setenv("QTL_RESULTS_DB", str(bad))
    at = app("experiments")
    at.text_input(key="exp_name").set_value(NAME)
    at.multiselect(key="exp_variants").set_value(["linear"])
    at.button[0].click().run()
    job = ui_module().runner().get(at.session_state["exp_job_id"])
    finish(at, job)
    assert job.snapshot().state == "failed"
    info, warning, error = said(at)
    assert [e for e in error.splitlines() if e.startswith("Sweep failed:")] == [
        f"Sweep failed: {job.snapshot().error}"
    ]
    assert "Run failed" not in error and not warning


def test_the_cli_prints_the_notes_it_printed(capsys, tmp_path):
    """`qtl sweep` and its dry run print every note of `sweep_notes` with the prefixes they had: an
    earlier spec's run, a kernel SVM without a checkpoint, a done run without one, a failed run."""
    from qtl.experiments.spec import load_spec, plan
    from qtl.experiments.sweeps import sweep_notes

    data = make_image_folder(tmp_path / "tiny")
    spec = tmp_path / "s.toml"
    head = f'name = "n"\ndataset = "{data.as_posix()}"\npretrained = false\nepochs = 1\n'
    spec.write_text(head + 'variant = "linear"\nseeds = 2\n')
    db, models = tmp_path / "r.db", tmp_path / "models"
    code, out, err = run_cli(capsys, "-q", "sweep", spec, "--db", db, "--models-dir", models)
    assert code == 0 and "note:" not in err and "warning:" not in err
    assert re.search(r" remaining, [0-9.]+ (ms|s|min|h); database ", out), out  # in words: "3725.3s"
    spec.write_text(
        head + "checkpoints = true\n\n[[grid]]\n"
        'variant = "quantum"\nqubits = 25\ndepth = 1\nseeds = 1\n\n'
        '[[grid]]\nvariant = ["linear", "rbf-svm"]\nseeds = 1\n'
    )
    earlier = (
        "sweep n also holds 1 run of an earlier spec under this name, and its reports count them; give "
        "this spec another name to keep the two apart"
    )
    kernel = (
        "checkpoints = true keeps no file for the rbf-svm runs: a kernel SVM has no checkpoint (its scores "
        "are in the results database)"
    )
    undone = (
        f"checkpoints = true: 1 run finished before (in this or another sweep) has no checkpoint in "
        f"{models / 'sweeps' / 'n'} and is not trained again to save one (their scores are in the "
        "database): linear on tiny seed 0"
    )
    code, out, _ = run_cli(capsys, "sweep", spec, "--db", db, "--models-dir", models, "--dry-run")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("note: ")] == [
        f"note: {earlier}", f"note: {kernel}", f"note: {undone}"
    ]  # fmt: skip
    runs = plan(load_spec(spec), models_dir=models)
    notes = sweep_notes(
        load_spec(spec), runs, earlier=1, done=[r for r in runs if r.name.startswith("linear")]
    )
    assert [n.text for n in notes] == [earlier, kernel, undone]

    code, _, err = run_cli(capsys, "-q", "sweep", spec, "--db", db, "--models-dir", models)
    assert code == 1  # a run failed
    lines = err.splitlines()
    failed = [line for line in lines if line.startswith("  failed: ")]
    assert len(failed) == 1 and failed[0].startswith("  failed: quantum 25q d1 on tiny seed 0 (")
    assert failed[0].endswith(
        "ValueError: engine 'native' simulates a statevector of 2**n amplitudes per sample and stops at 24 "
        "qubits (25 asked); use engine 'mps' for wider circuits"
    )
    assert [line for line in lines if line.startswith(("qtl: note: ", "qtl: warning: ", "  failed: "))] == [
        f"qtl: note: {earlier}", f"qtl: note: {kernel}", failed[0], f"qtl: warning: {undone}"
    ]  # fmt: skip
