"""The circuit on IBM backends (fake ones in Qiskit, transpiled, with calibrated noise) and the `qtl hardware`
and `qtl noise` paths around them that users trip on: accounts, estimates, JSON on stdout; a tiny circuit."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import run_cli

from qtl import cli
from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.engines.native import NativeEngine
from qtl.quantum.hardware.backends import (
    AccountError,
    HardwareUnavailableError,
    backend_expvals,
    fake_backend_names,
    get_backend,
    list_backends,
)
from qtl.quantum.hardware.braket import BraketDevice


def test_fake_backend_agrees_with_ideal_within_its_noise():
    """FakeManilaV2 (5 qubits, its coupling map, basis gates and noise model), 2000 shots: every <Z_i>
    within 0.15 of the ideal value (its gate and readout errors move a 2-qubit circuit by a few 0.01),
    and a repeat with the same seed gives the same counts."""
    config = CircuitConfig(n_qubits=2, depth=1)
    g = torch.Generator().manual_seed(0)
    angles = torch.rand(4, 2, generator=g, dtype=torch.float64) * 3 - 1.5
    weights = torch.rand(config.weight_shape, generator=g, dtype=torch.float64) * 3 - 1.5
    ideal = NativeEngine(config)(angles, weights)
    measured = backend_expvals(config, angles, weights, "FakeManilaV2", shots=2000, seed=3)
    assert measured.shape == (4, 2)
    assert (measured - ideal).abs().max() < 0.15
    assert torch.equal(measured, backend_expvals(config, angles, weights, "FakeManilaV2", shots=2000, seed=3))


def test_unknown_backend_suggests_close_names():
    """Close matches and where the list is, not all sixty names in one line."""
    with pytest.raises(
        ValueError, match=r"unknown fake IBM backend 'FakeManila'; did you mean FakeManilaV2\?"
    ):
        get_backend("FakeManila")
    with pytest.raises(
        ValueError, match=r"^unknown fake IBM backend 'FakeNowhere' \('qtl hardware backends'"
    ):
        get_backend("FakeNowhere")


def test_missing_extras_give_one_line(monkeypatch, capsys, tmp_path):
    """Without qiskit-ibm-runtime: one error line naming the extra, from the library and from the CLI."""
    monkeypatch.setitem(sys.modules, "qiskit_ibm_runtime", None)
    with pytest.raises(HardwareUnavailableError, match=r"pip install 'qtl\[hardware\]'"):
        get_backend("FakeManilaV2")
    ckpt = tmp_path / "missing.pt"
    code = cli.main(["noise", str(ckpt), "--backends", "FakeManilaV2"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "qtl: error:" in err and "qtl[hardware]" in err


# --- the CLI and library on a tiny checkpoint: fake backends, accounts, estimates, JSON on stdout -------

NO_MEASURE = (
    "FakeAlmadenV2 FakeBurlingtonV2 FakeCambridgeV2 FakeEssexV2 FakeJohannesburgV2 FakeLondonV2 "
    "FakePoughkeepsieV2 FakeRochesterV2 FakeSingaporeV2"
).split()


def one_line(code: int, err: str, *words: str) -> None:
    assert code == 1 and err.count("\n") == 1 and err.startswith("qtl: error:"), err
    for word in words:
        assert word in err, err


def test_fake_backends_that_cannot_measure_are_left_out_and_refused(capsys, hw_ckpt, hw_data, tmp_path):
    """The nine snapshots whose target has no `measure` are not listed and, named, fail in one line
    (they ended in a TranspilerError traceback)."""
    names = fake_backend_names()
    assert "FakeManilaV2" in names and not set(NO_MEASURE) & set(names)
    listed = {r["name"] for r in list_backends(real=False)}
    assert "FakeManilaV2" in listed and not set(NO_MEASURE) & listed
    for name in NO_MEASURE:
        with pytest.raises(ValueError, match=f"{name} cannot run the circuit.*'measure'"):
            get_backend(name)
    code, _, err = run_cli(
        capsys, "hardware", "run", hw_ckpt, "--backend", "FakeAlmadenV2", "--data", hw_data, "-q"
    )
    one_line(code, err, "FakeAlmadenV2", "'measure'")
    code, _, err = run_cli(capsys, "noise", hw_ckpt, "--backends", "FakeLondonV2", "--data", hw_data, "-q")
    one_line(code, err, "FakeLondonV2", "'measure'")


def no_aws(monkeypatch, tmp_path) -> None:
    """No AWS setup anywhere boto3 looks: no variables, no ~/.aws files, no instance metadata."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_a_real_braket_device_without_aws_setup_says_what_to_set(
    monkeypatch, capsys, hw_ckpt, hw_data, tmp_path
):
    """No region, then no credentials: one line naming what to set (were botocore tracebacks)."""
    no_aws(monkeypatch, tmp_path)
    argv = [
        "hardware",
        "run",
        hw_ckpt,
        "--backend",
        "ionq/Forte-1",
        "--mitigation",
        "readout",
        "--samples",
        2,
    ]
    argv += ["--data", hw_data, "--db", tmp_path / "r.db", "-q"]
    code, out, err = run_cli(capsys, *argv)
    one_line(code, err, "ionq/Forte-1", "no AWS region", "AWS_REGION", "AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    code, out, err = run_cli(capsys, *argv)
    one_line(code, err, "ionq/Forte-1", "AWS credentials", "AWS_ACCESS_KEY_ID")
    assert "region" not in err and out == ""
    with pytest.raises(AccountError, match="AWS credentials"):
        BraketDevice("arn:aws:braket:::device/quantum-simulator/amazon/sv1")._device()


class RefusedService:
    """QiskitRuntimeService as IBM answers a bad token: InvalidAccountError when it is made."""

    made = 0

    def __init__(self, *args, **kwargs):
        from qiskit_ibm_runtime.accounts.exceptions import InvalidAccountError

        RefusedService.made += 1
        raise InvalidAccountError(
            "'Unable to retrieve instances. Please check that you are using a valid API token.'"
        )

    @staticmethod
    def saved_accounts():
        return {}


def test_an_ibm_account_that_cannot_be_used(monkeypatch, capsys, hw_ckpt, hw_data):
    """A bad QISKIT_IBM_TOKEN: `backends` still lists the fake backends and Braket's simulators and says
    in one line why the real devices are missing; a real device by name fails in one line (both were
    InvalidAccountError tracebacks)."""
    import qiskit_ibm_runtime

    monkeypatch.setenv("QISKIT_IBM_TOKEN", "bogus")
    monkeypatch.setattr(qiskit_ibm_runtime, "QiskitRuntimeService", RefusedService)
    code, out, err = run_cli(capsys, "hardware", "backends")
    assert code == 0 and "FakeManilaV2" in out and "braket_sv" in out and RefusedService.made
    assert err.count("\n") == 1 and "could not be used" in err and "valid API token" in err, err
    notes: list[str] = []
    assert {r["kind"] for r in list_backends(notes=notes)} == {"fake"} and len(notes) == 1
    with pytest.raises(AccountError, match=r"QISKIT_IBM_TOKEN\) could not be used"):
        list_backends()
    code, _, err = run_cli(
        capsys, "hardware", "estimate", hw_ckpt, "--backend", "ibm_brisbane", "--data", hw_data, "-q"
    )
    one_line(code, err, "IBM Quantum account (QISKIT_IBM_TOKEN) could not be used", "valid API token")


def test_estimates_refuse_what_runs_refuse_and_price_only_known_devices(
    monkeypatch, capsys, hw_ckpt, hw_data, tmp_path
):
    """A real Braket device refuses ZNE in the estimate as in the run (its ZNE shots were priced); an ARN
    of a device without a price in PRICES (SV1, billed per minute) has no price, not the task fee alone.
    An estimate needs no AWS account, where a run does: nothing asks AWS."""
    no_aws(monkeypatch, tmp_path)
    from qtl.analysis.hardware_runs import prepare, select
    from qtl.analysis.robustness import head_inputs
    from qtl.models.checkpoint import load_checkpoint
    from qtl.quantum.hardware.braket import DEVICES, PRICES

    base = ["hardware", "estimate", hw_ckpt, "--samples", 3, "--shots", 10, "--data", hw_data, "-q"]
    for m in ("zne", "readout+zne"):
        code, _, err = run_cli(capsys, *base, "--backend", "ionq/Forte-1", "--mitigation", "readout", m)
        one_line(code, err, "ionq/Forte-1", "ZNE")
    loaded = load_checkpoint(hw_ckpt)
    inputs = select(head_inputs(loaded, hw_data), 3)
    with pytest.raises(ValueError, match="cancel ZNE's folds"):
        prepare(loaded, inputs, "rigetti/Ankaa-3", shots=10, mitigations=["zne"])
    sv1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
    assert prepare(loaded, inputs, sv1, shots=10).estimate["cost_usd"] is None
    code, out, _ = run_cli(capsys, *base, "--backend", sv1)
    assert code == 0 and "list price not known to qtl" in out and "$" not in out
    for name in ("ionq/Forte-1", DEVICES["ionq/Forte-1"]):  # by name or by its ARN: 3 samples + 2 cals
        e = prepare(loaded, inputs, name, shots=10, mitigations=["readout"]).estimate
        assert e["cost_usd"] == pytest.approx(PRICES["task"] + 5 * 10 * PRICES["ionq/Forte-1"])


def test_json_to_stdout_is_the_json_alone(capsys, hw_ckpt, hw_data, tmp_path):
    """`--json -`: stdout parses as JSON (the table went before it); the table goes to stderr."""
    code, out, err = run_cli(capsys, "hardware", "backends", "--no-real", "--json", "-")
    assert code == 0 and "FakeManilaV2" in {r["name"] for r in json.loads(out)} and "status" in err
    common = [hw_ckpt, "--samples", 2, "--shots", 20, "--data", hw_data, "--db", tmp_path / "r.db", "-q"]
    code, out, err = run_cli(capsys, "hardware", "estimate", *common, "--json", "-")
    assert code == 0 and json.loads(out)["executions"] == 2 and "device time" in err
    code, out, err = run_cli(capsys, "hardware", "run", *common, "--mitigation", "none", "--json", "-")
    report = json.loads(out)
    assert code == 0 and report["results"][0]["mitigation"] == "none" and "expval_error" in err
    code, out, _ = run_cli(
        capsys, "hardware", "resume", report["job_id"], "--db", tmp_path / "r.db", "--json", "-"
    )
    assert code == 0 and json.loads(out)["job_id"] == report["job_id"]
    code, out, _ = run_cli(capsys, "hardware", "run", *common, "--no-wait", "--json", "-")
    assert code == 0 and json.loads(out)["status"] == "submitted"


def test_the_backend_seed_is_the_noise_seed(capsys, hw_ckpt, hw_data, tmp_path):
    """`qtl noise --noise-seed S` seeds the backend runs too (they were always seed 0): the JSON records
    S for every row, the same seed repeats, and another seed draws other shots."""
    from qtl.analysis.robustness import head_inputs, noise_grid, noise_sweep
    from qtl.models.checkpoint import load_checkpoint
    from qtl.quantum.noise import NoiseConfig

    argv = ["noise", hw_ckpt, "--strengths", 0, "--shots", 0, 20, "--backends", "FakeManilaV2"]
    argv += ["--backend-shots", 16, "--noise-seed", 7, "--data", hw_data, "-q", "--out", tmp_path / "n"]
    assert run_cli(capsys, *argv)[0] == 0
    rows = json.loads((tmp_path / "n.json").read_text())
    assert [r["backend"] for r in rows] == ["native", "native", "FakeManilaV2"]
    assert {r["noise"]["seed"] for r in rows} == {7}
    loaded = load_checkpoint(hw_ckpt)
    inputs = head_inputs(loaded, hw_data)

    def on_backend(seed: int):
        grid = noise_grid([0.0], [None], NoiseConfig(seed=seed))
        (r,) = noise_sweep([loaded], [inputs], grid, backends=["FakeManilaV2"], backend_shots=[16])[1:]
        assert r.backend == "FakeManilaV2" and r.noise.seed == seed and r.noise.shots == 16
        return r.expvals

    one, two = on_backend(1), on_backend(2)
    assert torch.equal(one, on_backend(1)) and not torch.equal(one, two)


def test_cosmetics(capsys, hw_ckpt, hw_data, tmp_path):
    """Words: a 1-qubit backend has "1 qubit" (not "1 qubits"), a fake backend "runs locally", a device
    time under a second is in ms (was "0.0 s"), a job of "1 circuit"; and a bad --shots or --samples
    fails before the split is read (here: a missing folder)."""
    argv = ["noise", hw_ckpt, "--backends", "FakeArmonkV2", "--data", hw_data, "-q", "--out", tmp_path / "n"]
    code, _, err = run_cli(capsys, *argv)  # its report in tmp_path, not the models folder
    assert "skipped q on FakeArmonkV2: FakeArmonkV2 has 1 qubit; the circuit needs 3" in err
    code, out, _ = run_cli(
        capsys, "hardware", "estimate", hw_ckpt, "--samples", 2, "--shots", 10, "--data", hw_data, "-q"
    )
    assert code == 0 and "(ibm, runs locally)" in out and "1 circuit," in out and " ms estimated" in out, out
    assert "0.0 s" not in out
    missing = hw_data.parent / "nowhere"
    for flag, value, message in (
        ("--shots", 0, "shots must be between 1"),
        ("--samples", 0, "samples must be"),
    ):
        code, _, err = run_cli(capsys, "hardware", "estimate", hw_ckpt, flag, value, "--data", missing, "-q")
        one_line(code, err, message)
