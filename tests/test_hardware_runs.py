"""`qtl hardware` end to end on what runs here: IBM fake backends in qiskit-ibm-runtime's local testing
mode (the code a real account runs, the service stood in by a double that hands out fake backends),
Braket's local simulators, the results database, resume after a restart, and credentials that stay out
of every file. A tiny 3-qubit, depth-2 checkpoint (trained for FakeManilaV2's calibration) on a tiny
image folder keeps it fast: 8 val images, few shots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, tied_to_this_process

from qtl.analysis.hardware_runs import collect, prepare, submit
from qtl.analysis.robustness import head_inputs
from qtl.experiments.database import ResultsDB
from qtl.models.checkpoint import load_checkpoint, read_checkpoint_info
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.hardware.calibration import noise_from_backend

SENTINEL = "qtl-test-token-5f1c9a7e"


@pytest.fixture(scope="session")
def tiny(hw_data) -> Path:
    return hw_data


@pytest.fixture(scope="session")
def ckpt(hw_ckpt) -> Path:
    """conftest's quantum checkpoint trained noise-aware for FakeManilaV2 (`--noise-from`), 1 epoch."""
    return hw_ckpt


@pytest.fixture(scope="module")
def loaded(ckpt):
    return load_checkpoint(ckpt)


@pytest.fixture(scope="module")
def inputs(loaded, tiny):
    return head_inputs(loaded, tiny)


def test_noise_from_a_backend_is_trained_and_recorded(ckpt):
    """`qtl train --noise-from FakeManilaV2` trains with that backend's calibration for the circuit."""
    noise = read_checkpoint_info(ckpt).model_config.noise
    assert noise == noise_from_backend(CircuitConfig(3, 2), "FakeManilaV2")
    assert noise.depolarizing_2q > 0 and noise.readout > 0.01


class TestIBMFake:
    def test_one_job_recorded_before_waiting_and_mitigation_lowers_the_error(self, loaded, inputs, tmp_path):
        """FakeManilaV2, 4000 shots, every mitigation from ONE job: the row (with everything scoring
        needs) is in the database as `submitted` when submit returns; readout and readout+zne bring <Z>
        closer to the exact simulation than the raw counts; the device and the noisy simulation of its
        calibration both shrink |<Z>|."""
        plan = prepare(
            loaded, inputs, "FakeManilaV2", shots=4000, mitigations=["none", "readout", "zne", "readout+zne"]
        )
        e = plan.estimate
        assert (e["jobs"], e["executions"], e["samples"]) == (1, 8 + 2 * 8 + 2, 8)
        assert e["two_qubit_gates"] >= 4 and e["device_seconds"] > 0
        with ResultsDB(tmp_path / "r.db") as db:
            job_id, job = submit(plan, db)
            row = db.hardware_job(job_id)
            assert row["status"] == "submitted" and len(row["plan"]["angles"]) == 8
            assert [p["kind"] for p in row["plan"]["programs"]] == ["base", "fold", "fold", "cal", "cal"]
            report = collect(job_id, db, job)
            assert db.hardware_job(job_id)["status"] == "done"
        errors = {r["mitigation"]: r["expval_error"] for r in report["results"]}
        assert errors["readout+zne"] < errors["none"] and errors["readout"] < errors["none"]
        exact, raw, noisy = (np.abs(report["expvals"][k]) for k in ("exact", "none", "noisy simulation"))
        assert (raw < exact).mean() > 0.8 and (noisy < exact).mean() > 0.8  # noise shrinks |<Z>|
        assert report["simulations"][0]["expval_error"] == 0.0

    def test_a_calibration_too_near_random_skips_readout_and_scores_the_rest(self, loaded, inputs, tmp_path):
        """A calibration whose qubit read 1 whatever it was prepared in (one shot each can): readout and
        readout+zne are skipped with the reason, none and zne still scored, and no accuracy comes from
        NaN <Z> (it printed "accuracy 0.7500, expval_error nan")."""
        from qtl.analysis.hardware_runs import score

        mitigations = ["none", "readout", "zne", "readout+zne"]
        plan = prepare(loaded, inputs, "FakeManilaV2", shots=200, mitigations=mitigations)
        with ResultsDB(tmp_path / "r.db") as db:
            job_id, job = submit(plan, db)
            record = db.hardware_job(job_id)["plan"]
        from qtl.quantum.hardware.programs import Program

        programs = [Program.from_dict(p) for p in record["programs"]]
        counts = plan.device.counts(job, programs)
        kinds = [(p.kind, p.value) for p in programs]
        for bit in (0, 1):  # wire 1 reads 1 on every shot, prepared 0 or 1
            cal = np.zeros_like(counts[kinds.index(("cal", bit))])
            cal[0, 0b010 | (0b101 if bit else 0)] = 200
            counts[kinds.index(("cal", bit))] = cal
        report = score(record, counts, programs)
        assert [r["mitigation"] for r in report["results"]] == ["none", "zne"]
        assert all(np.isfinite(r["expval_error"]) for r in report["results"])
        assert [s["mitigation"] for s in report["skipped"]] == ["readout", "readout+zne"]
        physical = programs[kinds.index(("cal", 0))].physical[0]
        assert report["skipped"][0]["reason"].startswith(f"qubit {physical[1]}'s readout calibration")
        from qtl.cli.hardware import format_report

        table = format_report({**report, "job_id": job_id})  # the CLI's table says so too
        assert f"device, readout       not applied: qubit {physical[1]}'s readout calibration" in table

    def test_cli_run_json_then_resume_after_a_restart(self, capsys, ckpt, tiny, tmp_path):
        """`run --no-wait` records the job and stops; `resume JOB_ID` (a new invocation, nothing in memory)
        scores it from the database: the local job runs again, seeded, so its <Z> equals a run that
        waited. `jobs` lists both; `resume` of a finished job prints its stored report."""
        db = tmp_path / "r.db"
        common = [ckpt, "--backend", "FakeManilaV2", "--shots", 500, "--data", tiny, "--db", db, "-q"]
        code, out, err = run_cli(
            capsys, "hardware", "run", *common, "--mitigation", "none", "readout", "--no-wait"
        )
        assert code == 0
        job_id = out.strip()
        assert ResultsDB(db).hardware_job(job_id)["status"] == "submitted"
        code, out, _ = run_cli(
            capsys, "hardware", "resume", job_id, "--db", db, "--json", tmp_path / "a.json", "-q"
        )
        assert code == 0 and "run again from the database" in out and "device, readout" in out
        resumed = json.loads((tmp_path / "a.json").read_text())
        code, _, _ = run_cli(
            capsys,
            "hardware",
            "run",
            *common,
            "--mitigation",
            "none",
            "readout",
            "--json",
            tmp_path / "b.json",
        )
        direct = json.loads((tmp_path / "b.json").read_text())
        assert resumed["expvals"] == direct["expvals"] and [r["mitigation"] for r in direct["results"]] == [
            "none",
            "readout",
        ]
        code, out, _ = run_cli(capsys, "hardware", "jobs", "--db", db)
        assert code == 0 and job_id in out and out.count("done") == 2
        assert run_cli(capsys, "hardware", "resume", job_id, "--db", db, "-q")[0] == 0

    def test_estimate_and_one_line_errors(self, capsys, ckpt, tiny, tmp_path):
        code, out, _ = run_cli(
            capsys,
            "hardware",
            "estimate",
            ckpt,
            "--backend",
            "FakeManilaV2",
            "--shots",
            100,
            "--mitigation",
            "zne",
            "--data",
            tiny,
            "-q",
            "--json",
            tmp_path / "e.json",
        )
        assert code == 0 and "two-qubit gates" in out and "device time" in out
        assert json.loads((tmp_path / "e.json").read_text())["executions"] == 3 * 8
        ResultsDB(tmp_path / "r.db").close()
        for argv, message in (
            (["estimate", ckpt, "--backend", "FakeNowhere", "--data", tiny], "unknown fake IBM backend"),
            (["resume", "nope", "--db", tmp_path / "r.db"], "no hardware job 'nope'"),
            (["run", ckpt, "--backend", "ibm_nowhere", "--data", tiny], "needs an account"),
        ):
            code, _, err = run_cli(capsys, "hardware", *argv, "-q")
            assert code == 1 and err.count("\n") == 1 and message in err, err


class StubService:
    """Stands in for QiskitRuntimeService: its devices are fake backends, its jobs those submitted here."""

    jobs: dict = {}
    made_with: list = []

    def __init__(self, *args, **kwargs):
        StubService.made_with.append((args, kwargs))

    @staticmethod
    def saved_accounts():
        return {}

    def backend(self, name):
        from qiskit_ibm_runtime.fake_provider import FakeManilaV2

        return FakeManilaV2()

    def backends(self, simulator=False):
        return [self.backend("ibm_stub")]

    def job(self, job_id):
        return StubService.jobs[job_id]


def with_account(monkeypatch, token: str) -> None:
    """An IBM account (QISKIT_IBM_TOKEN = token) whose service is StubService, which keeps every job
    SamplerV2 submits so that `service.job(id)` finds it."""
    import qiskit_ibm_runtime

    monkeypatch.setenv("QISKIT_IBM_TOKEN", token)
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", StubService)
    run = qiskit_ibm_runtime.SamplerV2.run

    def keep(self, pubs, **kw):
        job = run(self, pubs, **kw)
        StubService.jobs[job.job_id()] = job
        return job

    monkeypatch.setattr(qiskit_ibm_runtime.SamplerV2, "run", keep)


def test_real_device_path_resumes_by_id_and_never_writes_the_token(monkeypatch, capsys, ckpt, tiny, tmp_path):
    """With QISKIT_IBM_TOKEN set, a device name that is not a fake backend goes through the service (here
    a double), is recorded as a real job, and `resume` fetches that job by id instead of running it
    again. qtl never passes the token on, and it appears in no output, database or file."""
    with_account(monkeypatch, SENTINEL)
    db = tmp_path / "r.db"
    argv = ["hardware", "run", ckpt, "--backend", "ibm_stub", "--shots", 200, "--data", tiny, "--db", db]
    code, out, err = run_cli(capsys, *argv, "--mitigation", "readout", "--no-wait")
    assert code == 0
    job_id = out.strip()
    record = ResultsDB(db).hardware_job(job_id)
    assert record["local"] is False and record["backend"] == "ibm_stub"
    code, out2, err2 = run_cli(
        capsys, "hardware", "resume", job_id, "--db", db, "--json", tmp_path / "r.json"
    )
    assert code == 0 and "run again" not in out2
    code, out3, err3 = run_cli(capsys, "hardware", "backends", "--json", tmp_path / "b.json")
    assert code == 0 and "ibm_stub" not in out3 and "fake_manila" in out3
    assert all(
        "token" not in kwargs and SENTINEL not in map(str, args) for args, kwargs in StubService.made_with
    )
    texts = [out, err, out2, err2, out3, err3]
    files = [p for p in tmp_path.rglob("*") if p.is_file()] + [ckpt]
    assert SENTINEL not in "".join(texts)
    assert not [p for p in files if SENTINEL.encode() in p.read_bytes()]
    assert os.environ["QISKIT_IBM_TOKEN"] == SENTINEL


class TestBraket:
    def test_state_vector_simulator_with_every_mitigation(self, loaded, inputs, tmp_path):
        """braket_sv, 2 samples, one ProgramSet task: without noise every mitigation stays within shot
        noise of the exact <Z> (ZNE's folds are the same unitary)."""
        from qtl.analysis.hardware_runs import select

        plan = prepare(
            loaded, select(inputs, 2), "braket_sv", shots=2000, mitigations=["none", "readout+zne"]
        )
        with ResultsDB(tmp_path / "r.db") as db:
            report = collect(*submit(plan, db)[:1], db=db)  # as after a restart: the local task runs again
        assert report["rerun_locally"] and report["provider"] == "braket"
        for r in report["results"]:
            assert r["expval_error"] < 0.08, r

    def test_density_matrix_simulator_agrees_with_the_native_engine(self, loaded, inputs, tmp_path):
        """braket_dm with FakeManilaV2's calibration as a NoiseConfig (Braket's own channels after each
        gate, bit flips at readout): its counts agree with qtl's density-matrix engine under the same
        NoiseConfig within shot noise, and readout mitigation moves <Z> towards the exact values."""
        from qtl.analysis.hardware_runs import select

        noise = noise_from_backend(loaded.model_config.circuit, "FakeManilaV2")
        plan = prepare(
            loaded, select(inputs, 3), "braket_dm", shots=4000, mitigations=["none", "readout"], noise=noise
        )
        with ResultsDB(tmp_path / "r.db") as db:
            job_id, job = submit(plan, db)
            report = collect(job_id, db, job)
        raw, noisy = (np.array(report["expvals"][k]) for k in ("none", "noisy simulation"))
        assert np.abs(raw - noisy).max() < 4 / np.sqrt(4000) * 1.5
        errors = {r["mitigation"]: r["expval_error"] for r in report["results"]}
        assert errors["readout"] < errors["none"]

    def test_pennylane_plugin_device_is_an_engine(self):
        """The Braket PennyLane plugin's local device runs the circuit as any PennyLane engine does."""
        from qtl.quantum.engines import make_engine
        from qtl.quantum.engines.native import NativeEngine

        config = CircuitConfig(3, 2)
        angles, weights = (
            torch.rand(2, 3, dtype=torch.float64),
            torch.rand(config.weight_shape, dtype=torch.float64),
        )
        braket = make_engine(config, "braket.local.qubit", diff_method="parameter-shift")
        torch.testing.assert_close(
            braket(angles, weights).double(), NativeEngine(config)(angles, weights), atol=1e-6, rtol=0
        )


def test_select_keeps_what_the_inputs_were_scored_on():
    """A subset of head inputs still says which split, dataset and checkpoint it came from (select rebuilt
    them with the defaults: split val, no data, no checkpoint)."""
    import torch

    from qtl.analysis.hardware_runs import select
    from qtl.analysis.robustness import HeadInputs

    inputs = HeadInputs(
        torch.rand(6, 2), torch.arange(6) % 2, [f"{i}.png" for i in range(6)], "test", "d", "m.pt"
    )
    subset = select(inputs, 3, seed=1)
    assert (subset.split, subset.data, subset.checkpoint) == ("test", "d", "m.pt")
    kept = [int(p.removesuffix(".png")) for p in subset.paths]
    assert kept == sorted(kept) and len(kept) == 3
    assert torch.equal(subset.angles, inputs.angles[kept]) and torch.equal(subset.labels, inputs.labels[kept])


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="Ctrl-C as SIGINT")
def test_ctrl_c_ends_a_fake_backends_job_at_once_and_resume_runs_it_again(capsys, ckpt, tiny, tmp_path):
    """qiskit-aer holds the interpreter while it simulates, so a Ctrl-C took effect only once the job was
    over (a 100,000-shot ZNE run went on 100 s and printed its report). The run says what Ctrl-C does;
    it then ends the process at once, and the job stays recorded for `resume` to run again."""
    db = tmp_path / "r.db"
    argv = ["hardware", "run", ckpt, "--backend", "FakeManilaV2", "--shots", 100_000, "--mitigation"]
    argv += ["none", "zne", "--data", tiny, "--db", db, "-q"]
    env = {
        **os.environ,
        "QTL_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "qtl", *map(str, argv)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **tied_to_this_process(),
    )
    try:
        said = proc.stderr.readline()
        assert " submitted to FakeManilaV2; " in said and "Ctrl-C ends it at once" in said, said
        job_id = said.split()[1]
        time.sleep(1.0)  # into the simulation
        assert proc.poll() is None, "the job ended before the Ctrl-C: give it more shots"
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(120)
        waited = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert code == -signal.SIGINT and waited < 5, (code, waited)  # it was 130, once the job had run
    assert ResultsDB(db).hardware_job(job_id)["status"] == "submitted"
    code, out, _ = run_cli(capsys, "hardware", "jobs", "--db", db)
    assert code == 0 and job_id in out and "resume runs it again" in out
