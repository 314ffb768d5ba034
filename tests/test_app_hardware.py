"""The app's Hardware page with AppTest: a run on a fake backend with every mitigation, demo bounds, and a
real device (a service double) only behind a confirmation that shows the estimate."""

from __future__ import annotations

import pytest
import streamlit as st
from test_app import app, app_env, texts  # noqa: F401  (app_env is a fixture)
from test_hardware_runs import with_account


@pytest.fixture(scope="module")
def quantum(app_env):  # noqa: F811
    """A 3-qubit, depth-2 quantum checkpoint, 1 epoch on the tiny dataset."""
    from qtl.config import ModelConfig
    from qtl.experiments.runs import plan_runs
    from qtl.quantum.circuit import CircuitConfig
    from qtl.training.fit import fit

    base = ModelConfig(pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(3, 2))
    (run,) = plan_runs(["quantum"], base, [0], app_env / "hw", epochs=1)
    return str(
        fit(
            run.model_config, run.train_config, run.machine, checkpoint_path=run.checkpoint_path
        ).checkpoint_path
    )


def test_run_on_a_fake_backend_beside_the_simulations(app_env, quantum, monkeypatch):  # noqa: F811
    """FakeManilaV2, 4000 shots, 8 images, readout and ZNE on: one run gives the exact and noisy
    simulations and a row per mitigation; readout mitigation is closer to the exact <Z> than none."""
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    at = app("hardware", {"loaded": [quantum]})
    assert "Estimate:" in texts(at.markdown)
    at.selectbox(key="hw_samples").set_value(8).run()
    assert "26 executions (8 samples as parameter sets) x 4000 shots" in texts(at.markdown)
    at.button(key="hw_run").click().run()
    assert not at.exception, at.exception
    rows = at.dataframe[0].value
    assert list(rows["run"]) == [
        "exact simulation",
        "noisy simulation",
        "FakeManilaV2, none",
        "FakeManilaV2, readout",
        "FakeManilaV2, zne",
        "FakeManilaV2, readout+zne",
    ]
    error = dict(zip(rows["run"], rows["expval_error"], strict=True))
    assert error["FakeManilaV2, readout"] < error["FakeManilaV2, none"]


def test_demo_mode_is_bounded_and_local_only(app_env, quantum, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QTL_DEMO", "1")
    monkeypatch.setenv("QISKIT_IBM_TOKEN", "demo-visitors-never-reach-a-device")
    at = app("hardware", {"loaded": [quantum]})
    assert max(at.select_slider(key="hw_shots").options, key=int) == "4000"
    assert "None" not in at.selectbox(key="hw_samples").options
    assert all(
        o.startswith("Fake") or o.startswith("braket_") for o in at.selectbox(key="hw_backend").options
    )


def test_real_device_needs_a_confirmation(app_env, quantum, monkeypatch):  # noqa: F811
    """With an account (a service double), the real device is offered; Submit stays disabled until the
    estimate is confirmed, then the job is recorded and its results fetched by id."""
    with_account(monkeypatch, "qtl-app-test-token")
    at = app("hardware", {"loaded": [quantum]})
    at.selectbox(key="hw_backend").set_value("fake_manila").run()
    at.selectbox(key="hw_samples").set_value(8).run()
    at.toggle(key="hw_zne").set_value(False).run()
    assert "real device" in texts(at.warning) and at.button(key="hw_submit").disabled
    at.checkbox(key="hw_confirm").check().run()
    assert "10 executions (8 samples as parameter sets)" in at.checkbox(key="hw_confirm").label
    at.button(key="hw_submit").click().run()
    (job_id,) = at.session_state["hw_jobs"]
    at.button(key=f"hw_fetch_{job_id}").click().run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["run"])[-1] == "fake_manila, readout"


def test_an_ibm_account_that_cannot_be_used_leaves_the_local_devices(app_env, quantum, monkeypatch):  # noqa: F811
    """A rejected token: the page says why in one line and runs the local devices (it was an
    InvalidAccountError traceback, then a one-line AccountError that ended the page)."""
    import qiskit_ibm_runtime
    from test_hardware import RefusedService

    monkeypatch.setenv("QISKIT_IBM_TOKEN", "bogus")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", RefusedService)
    st.cache_data.clear()  # the devices another test's account listed
    at = app("hardware", {"loaded": [quantum]})
    assert not at.exception, at.exception
    assert any("could not be used" in w.value and "\n" not in w.value for w in at.warning)
    assert "FakeManilaV2" in at.selectbox(key="hw_backend").options


def test_without_a_quantum_checkpoint_says_why(app_env):  # noqa: F811
    at = app("hardware", {"loaded": []})
    assert "Load a `quantum` or `hybrid` checkpoint" in texts(at.info)


def test_braket_dm_on_a_circuit_wider_than_its_calibration(app_env):  # noqa: F811
    """braket_dm takes FakeManilaV2's calibration (5 qubits), which the page never names: a 6-qubit
    checkpoint was refused as "FakeManilaV2 has 5 qubits", a device the user had not picked."""
    from qtl.config import ModelConfig
    from qtl.experiments.runs import plan_runs
    from qtl.quantum.circuit import CircuitConfig
    from qtl.training.fit import fit

    base = ModelConfig(pretrained=False, class_names=("cats", "dogs"), circuit=CircuitConfig(6, 1))
    (run,) = plan_runs(["quantum"], base, [0], app_env / "hw6", epochs=1)
    wide = str(
        fit(
            run.model_config, run.train_config, run.machine, checkpoint_path=run.checkpoint_path
        ).checkpoint_path
    )
    at = app("hardware", {"loaded": [wide]})
    at.selectbox(key="hw_backend").set_value("braket_dm").run()
    assert not at.exception, at.exception
    error = texts(at.error)
    assert error.startswith(
        "braket_dm simulates the calibration of FakeManilaV2 here, and FakeManilaV2 has 5"
    )
    assert error.endswith(
        "pick a fake IBM backend as wide as the circuit, which simulates its own calibration"
    )


def test_the_estimate_gives_device_time_in_a_unit_that_shows_it(monkeypatch):
    """The page's estimate line said "device time 0 s" for a simulator's 0.35 ms; it now words it as the
    CLI's estimate does (`qtl.utils.words.duration`); and "1 samples" is "1 sample"."""
    from conftest import REPO

    monkeypatch.syspath_prepend(str(REPO))
    from ui.hardware import estimate_text

    e = {"executions": 2, "samples": 1, "shots_per_execution": 100, "total_shots": 200, "depth": 9}
    e |= {"two_qubit_gates": 4, "qubits": [0, 1], "cost_usd": None}
    assert "device time 0.35 ms" in estimate_text(e | {"device_seconds": 0.00035})
    assert "device time 2.5 min" in estimate_text(e | {"device_seconds": 150})
    assert "device time n/a" in estimate_text(e | {"device_seconds": None})
    assert "2 executions (1 sample as parameter sets)" in estimate_text(e | {"device_seconds": None})


def test_noise_and_hardware_say_when_they_score_on_the_active_dataset(app_env, quantum, tmp_path):  # noqa: F811
    """A checkpoint that records no dataset is scored on the active one: Compare said so; Noise and
    Hardware scored it there without a word."""
    import torch

    payload = torch.load(quantum, weights_only=True)
    del payload["meta"]["dataset"]
    copy = tmp_path / "quantum-unrecorded.pt"
    torch.save(payload, copy)
    note = "the active dataset: this checkpoint does not record its own"
    at = app("noise", {"loaded": [str(copy)]})
    assert not at.exception, at.exception
    assert any(c.value.endswith(f"images of {note}") for c in at.caption), texts(at.caption)
    at = app("hardware", {"loaded": [str(copy)]})
    assert not at.exception, at.exception
    assert f"Its images: {note}." in texts(at.caption)
    at = app("noise", {"loaded": [quantum]})  # its own dataset: nothing to say
    assert not any(note in c.value for c in at.caption)
