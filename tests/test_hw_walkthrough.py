"""What a walkthrough of `qtl hardware` found: work lost after a job ran (a noisy simulation too large to
score, a circuit too wide to count, a Braket local task recorded only after it ran), a noise-trained
checkpoint scored without its noise, refusals that came late or named what the user never gave, and
commands that should only read writing files. The tiny 3-qubit checkpoint of conftest (trained with
FakeManilaV2's calibration) on its tiny image folder; few samples and shots."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from qtl.analysis.hardware_runs import OWN_NOISE, collect, prepare, select, submit
from qtl.analysis.robustness import evaluate_noise, head_inputs
from qtl.experiments.database import ResultsDB
from qtl.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def loaded(hw_ckpt):
    return load_checkpoint(hw_ckpt)


@pytest.fixture(scope="module")
def inputs(loaded, hw_data):
    return head_inputs(loaded, hw_data)


def one_line(code: int, err: str, *words: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("qtl: error:"), err
    for word in words:
        assert word in err, err


def widened(loaded, n: int, folder):
    """The tiny checkpoint's backbone with an n-qubit, depth-1 circuit (untrained, noise-free)."""
    from qtl.models.checkpoint import save_checkpoint
    from qtl.models.variants import build_model
    from qtl.quantum.noise import NoiseConfig

    circuit = dataclasses.replace(loaded.model_config.circuit, n_qubits=n, depth=1)
    config = dataclasses.replace(loaded.model_config, circuit=circuit, noise=NoiseConfig())
    model = build_model(config, backbone=(loaded.model.backbone, loaded.model.in_features))
    return save_checkpoint(folder / f"q{n}.pt", model.eval(), config)


@pytest.fixture(scope="module")
def wide_ckpt(loaded, tmp_path_factory):
    return widened(loaded, 17, tmp_path_factory.mktemp("wide"))


# --- 1: no work lost to scoring -------------------------------------------------------------------


def test_a_noisy_simulation_too_large_is_skipped_and_the_device_rows_scored(
    monkeypatch, capsys, loaded, inputs, hw_ckpt, hw_data, tmp_path
):
    """A density-matrix budget the circuit does not fit (as 14 qubits do not fit the default one): the
    estimate says the noisy simulations will be skipped, and the job's counts are scored, the job done,
    the skipped rows in the report with their reason (it failed after the job ran, and every resume
    failed the same way)."""
    monkeypatch.setenv("QTL_NATIVE_MEMORY_BUDGET", "2000")
    plan = prepare(loaded, select(inputs, 2), "FakeManilaV2", shots=100, mitigations=["none", "readout"])
    skipped = plan.estimate["skipped_simulations"]
    assert [s["name"] for s in skipped] == [OWN_NOISE, "noisy simulation"]
    assert "memory budget" in skipped[0]["reason"]
    with ResultsDB(tmp_path / "r.db") as db:
        job_id, job = submit(plan, db)
        report = collect(job_id, db, job)
        assert db.hardware_job(job_id)["status"] == "done"
    assert [r["mitigation"] for r in report["results"]] == ["none", "readout"]
    assert [s["name"] for s in report["simulations"]] == ["noiseless simulation"]
    assert report["skipped_simulations"] == skipped
    from qtl.cli.hardware import format_report

    assert "noisy simulation      not run: the density-matrix engine needs" in format_report(report)
    # the CLI loads the checkpoint's own noisy engine, which that budget refuses: refuse by name instead
    import qtl.analysis.hardware_runs as runs

    monkeypatch.delenv("QTL_NATIVE_MEMORY_BUDGET")
    monkeypatch.setattr(runs, "simulation_refusal", lambda config, noise: "the density-matrix engine ...")
    argv = ["hardware", "run", hw_ckpt, "--samples", 2, "--shots", 50, "--data", hw_data]
    code, out, err = run_cli(capsys, *argv, "--db", tmp_path / "c.db", "-q")
    assert code == 0 and "device, none" in out and "noisy simulation      not run" in out, err
    assert "warning: noisy simulation will be skipped" in err.split("submitted")[0]
    code, out, _ = run_cli(capsys, "hardware", "estimate", *argv[2:], "-q")
    assert code == 0 and "noisy simulation will be skipped: the density-matrix engine" in out


def test_a_circuit_too_wide_to_count_is_refused_before_anything_runs(capsys, wide_ckpt, inputs, tmp_path):
    """17 qubits on FakeMumbaiV2 (27): refused in one line before the features (a missing --data folder
    is never read), and by `prepare` before the device is opened; no database is written (the job ran
    and failed counting 2**17 bitstrings)."""
    wide = load_checkpoint(wide_ckpt)
    for backend in ("FakeMumbaiV2", "braket_sv"):
        db = tmp_path / f"{backend}.db"
        argv = [wide_ckpt, "--backend", backend, "--samples", 2, "--data", tmp_path / "nowhere", "--db", db]
        for command in ("estimate", "run"):
            code, _, err = run_cli(capsys, "hardware", command, *argv, "-q")
            one_line(code, err, "count up to 16 measured qubits", "the circuit has 17")
        assert not db.exists()
    angles = inputs.angles.repeat(1, 6)[:, :17]
    with pytest.raises(ValueError, match="count up to 16"):
        prepare(wide, dataclasses.replace(inputs, angles=angles), "FakeMumbaiV2", shots=10)


# --- 2: a Braket local task is recorded before it runs --------------------------------------------


def test_a_braket_local_task_is_recorded_before_it_runs(monkeypatch, capsys, loaded, inputs, tmp_path):
    """`submit` returns with the row written and nothing simulated yet (LocalSimulator.run simulated the
    whole task first, so a killed run left no row); the wait, in `collect`, runs it. `jobs` says what it
    can of a local job still `submitted`: its process ended (resume runs it again) or still runs."""
    from braket.devices import LocalSimulator

    import qtl.experiments.database as database

    ran = []
    run = LocalSimulator.run
    monkeypatch.setattr(LocalSimulator, "run", lambda self, *a, **k: ran.append(1) or run(self, *a, **k))
    db_path = tmp_path / "r.db"
    plan = prepare(loaded, select(inputs, 2), "braket_sv", shots=100)
    with ResultsDB(db_path) as db:
        job_id, job = submit(plan, db)
        assert ran == [] and db.hardware_job(job_id)["status"] == "submitted"
        collect(job_id, db, job)
        assert ran == [1] and db.hardware_job(job_id)["status"] == "done"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = f"{socket.gethostname()}:{int(gone.stdout)}"  # a process that has ended
    for owner in (dead, database.owner_tag()):
        monkeypatch.setattr(database, "owner_tag", lambda owner=owner: owner)
        with ResultsDB(db_path) as db:
            submit(prepare(loaded, select(inputs, 2), "braket_sv", shots=100), db)
    code, out, _ = run_cli(capsys, "hardware", "jobs", "--db", db_path)
    assert code == 0 and "its process ended before it finished; resume runs it again" in out
    assert f"local: running in process {os.getpid()}" in out


def test_resume_leaves_a_local_job_its_live_process_runs(monkeypatch, loaded, inputs, tmp_path):
    """`resume` of a local job another process of this host still runs simulated it a second time beside
    it (the last report won): it is refused, naming the process, and the job stays submitted."""
    import qtl.experiments.database as database
    from qtl.analysis.hardware_runs import job_report

    parent = f"{socket.gethostname()}:{os.getppid()}"  # alive: the test runner's parent
    monkeypatch.setattr(database, "owner_tag", lambda: parent)
    with ResultsDB(tmp_path / "r.db") as db:
        job_id, _ = submit(prepare(loaded, select(inputs, 2), "braket_sv", shots=100), db)
    monkeypatch.undo()
    with ResultsDB(tmp_path / "r.db") as db:
        with pytest.raises(ValueError, match=f"still running locally in process {os.getppid()}"):
            job_report(job_id, db)
        assert db.hardware_job(job_id)["status"] == "submitted"


# --- 3: a noise-trained checkpoint is scored with its noise too -----------------------------------


def test_a_noise_trained_checkpoint_is_scored_as_evaluated(loaded, inputs, tmp_path):
    """The checkpoint carries FakeManilaV2's calibration as its noise: the noise-free row is called the
    noiseless simulation, and a "checkpoint's noise" row scores it as `qtl evaluate` does (the same
    accuracy and <Z> as `evaluate_noise` under its noise); the table says which noise each row has."""
    subset = select(inputs, 4)
    plan = prepare(loaded, subset, "FakeManilaV2", shots=100)
    with ResultsDB(tmp_path / "r.db") as db:
        report = collect(*submit(plan, db)[:1], db=db)
    names = [s["name"] for s in report["simulations"]]
    assert names == ["noiseless simulation", OWN_NOISE, "noisy simulation"]
    own = report["simulations"][1]
    evaluated = evaluate_noise(loaded, subset, loaded.model_config.noise)
    assert own["accuracy"] == round(evaluated.accuracy, 4)
    assert np.allclose(report["expvals"][OWN_NOISE], evaluated.expvals.numpy(), atol=1e-4)
    assert own["noise"] == loaded.model_config.noise.label()
    from qtl.cli.hardware import format_report

    table = format_report(report)
    assert f"{OWN_NOISE}: the noise the checkpoint was trained with" in table
    assert "exact simulation" not in table


# --- 4-7: refusals up front, in words about what was given; nothing written -----------------------


def test_a_real_braket_device_without_credentials_writes_nothing(monkeypatch, capsys, hw_ckpt, tmp_path):
    """Region set, no credentials: refused when the device is opened, before the features (a missing
    --data folder is never read) and before the database exists (it was made, empty)."""
    from test_hardware import no_aws

    no_aws(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_REGION", "us-west-1")
    db = tmp_path / "b.db"
    for backend in ("rigetti/Ankaa-3", "arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3"):
        argv = [hw_ckpt, "--backend", backend, "--mitigation", "readout", "--data", tmp_path / "none"]
        code, _, err = run_cli(capsys, "hardware", "run", *argv, "--db", db, "-q")
        one_line(code, err, backend, "AWS credentials", "AWS_ACCESS_KEY_ID")
    assert not db.exists()


def test_options_a_run_would_ignore_are_refused(capsys, hw_ckpt, hw_data):
    """--noise-from with a backend other than braket_dm (FakeManilaV2's noisy simulation kept its own
    calibration) and --extrapolation without ZNE: one line each, before the features."""
    base = ["hardware", "estimate", hw_ckpt, "--data", hw_data / "nowhere", "-q"]
    code, _, err = run_cli(capsys, *base, "--backend", "FakeManilaV2", "--noise-from", "FakeLagosV2")
    one_line(code, err, "--noise-from sets the noise of braket_dm alone", "its own calibration")
    code, _, err = run_cli(capsys, *base, "--extrapolation", "linear", "--mitigation", "none", "readout")
    one_line(code, err, "--extrapolation fits ZNE", "drop it")


def test_refusals_name_what_was_given_and_come_before_the_features(capsys, hw_ckpt, loaded, tmp_path):
    """braket_dm's default --noise-from is named as the default; a Braket simulator is no calibration; a
    negative --seed is a usage error; a backend too narrow is refused before the features (a missing
    --data folder is never read); an unknown fake backend gets its close matches, not sixty names."""
    from qtl.cli.hardware import NOISE_FROM

    base = ["hardware", "estimate", "--data", tmp_path / "nowhere", "-q"]
    code, _, err = run_cli(capsys, *base, widened(loaded, 8, tmp_path), "--backend", "braket_dm")
    one_line(code, err, f"by default {NOISE_FROM}", "has 5 qubits; the circuit needs 8", "--noise-from")
    code, _, err = run_cli(capsys, *base, hw_ckpt, "--backend", "braket_dm", "--noise-from", "braket_sv")
    one_line(code, err, "braket_sv is an Amazon Braket device", "no calibration")
    assert "account" not in err
    with pytest.raises(SystemExit) as exit:
        run_cli(capsys, *base, hw_ckpt, "--seed", -1)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "--seed: must be a whole number of at least 0, got -1" in err
    code, _, err = run_cli(capsys, *base, hw_ckpt, "--backend", "FakeArmonkV2")
    one_line(code, err, "FakeArmonkV2 has 1 qubit; the circuit needs 3")
    code, _, err = run_cli(capsys, *base, hw_ckpt, "--backend", "FakeManila")
    one_line(code, err, "did you mean FakeManilaV2?", "'qtl hardware backends' lists them")
    assert "FakeSherbrooke" not in err


def test_commands_that_read_write_nothing(capsys, hw_ckpt, hw_data, tmp_path):
    """`jobs` and `resume` on a missing database refuse in one line and make neither it nor its folder;
    `run` refuses a database in a missing folder before any work (it made the folder)."""
    missing = tmp_path / "no" / "dir" / "x.db"
    for argv in (["jobs"], ["resume", "nosuchjob"]):
        for db in (missing, tmp_path / "new.db"):
            code, _, err = run_cli(capsys, "hardware", *argv, "--db", db)
            one_line(code, err, f"no results database at {db}")
    code, _, err = run_cli(
        capsys, "hardware", "run", hw_ckpt, "--data", tmp_path / "nowhere", "--db", missing
    )
    one_line(code, err, f"no folder {missing.parent}")
    assert list(tmp_path.iterdir()) == []
    # another program's SQLite file: refused before the features (--data names no folder), left as it was
    import sqlite3

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as other:
        other.execute("CREATE TABLE foo (x)")
    before = foreign.read_bytes()
    code, _, err = run_cli(
        capsys, "hardware", "run", hw_ckpt, "--data", tmp_path / "nowhere", "--db", foreign
    )
    one_line(code, err, f"{foreign}")
    assert "qtl" in err and foreign.read_bytes() == before


def test_the_jobs_table_stays_aligned():
    """A mitigations list longer than 12 characters pushed the created column out of line."""
    from qtl.cli.hardware import format_jobs

    row = {"id": "j1", "status": "done", "backend": "FakeManilaV2", "samples": 8, "shots": 100}
    rows = [
        {**row, "mitigations": ["none", "readout", "zne", "readout+zne"], "error": None, "created": "C1"},
        {**row, "id": "j2", "mitigations": ["none"], "error": "boom", "created": "C2"},
    ]
    lines = format_jobs(rows).splitlines()
    assert len({line.index(c) for line, c in zip(lines, ("created", "C1", "C2"), strict=True)}) == 1
    assert lines[2].endswith("C2  (boom)")


# --- 9: a backend simulation that would take too long is skipped, in one line --------------------


def test_a_backend_simulation_too_slow_is_skipped_with_its_reason(monkeypatch, loaded, inputs, tmp_path):
    """153 images x 10 shots of a 20-qubit circuit on FakeMumbaiV2 ran 11 minutes and more without a
    word: estimated from the circuit's width, images and shots, it is skipped with the reason, as a
    density matrix too large is; a quick one still runs."""
    from qtl.analysis.robustness import backend_slow_refusal, noise_grid, noise_sweep

    wide = load_checkpoint(widened(loaded, 20, tmp_path))
    reason = backend_slow_refusal(wide, 153, 10, "FakeMumbaiV2")
    assert reason.startswith("simulating its 20-qubit circuit with FakeMumbaiV2's noise would take about")
    assert backend_slow_refusal(loaded, len(inputs.labels), 16, "FakeManilaV2") is None
    refused: list = []
    grid = noise_grid([0.0])
    results = noise_sweep(  # a limit under which the tiny circuit's 64 shots are too slow
        [loaded], [inputs], grid, backends=["FakeManilaV2"], backend_shots=[1, 64], refused=refused,
        backend_max_s=1e-4,
    )  # fmt: skip
    assert [(r.backend, r.noise.shots) for r in results] == [(None, None), ("FakeManilaV2", 1)]
    assert [(name, where) for name, where, _ in refused] == [(loaded.name, "FakeManilaV2")]
    assert "64 shots" in refused[0][2] and "qtl noise --backend-minutes" in refused[0][2]
    # the rate is one machine's: a higher limit, or none (--backend-minutes 0), runs it
    unlimited = noise_sweep(
        [loaded], [inputs], grid, backends=["FakeManilaV2"], backend_shots=[64], backend_max_s=None
    )
    assert [(r.backend, r.noise.shots) for r in unlimited] == [(None, None), ("FakeManilaV2", 64)]
    from qtl.cli.parser import build_parser

    noise = build_parser().commands["noise"]
    assert noise.parse_args(["q.pt", "--backend-minutes", "0"]).backend_minutes == 0
