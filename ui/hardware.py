"""The Hardware page's glue: which devices this session may use, the estimate, the run, the results.

Demo mode offers only local devices (fake IBM backends, Braket's simulators) with bounded shots and
samples; locally, real IBM devices appear when an IBM Quantum account is there, and Braket's devices
when AWS credentials are, always behind a confirmation that shows the estimate.
"""

from __future__ import annotations

import streamlit as st

from qtl.utils.words import count, duration
from ui.checkpoint_dirs import session_dir
from ui.settings import settings

SHOTS = (100, 1000, 4000, 10000)
DEMO_MAX_SHOTS = 4000
SAMPLES = (8, 16, 32, 64)
DEMO_MAX_SAMPLES = 32
LOCAL_BRAKET = ("braket_sv", "braket_dm")


@st.cache_data(ttl=300, show_spinner="Asking IBM Quantum for its devices ...")
def _ibm_devices() -> tuple[list[str], list[str]]:
    """(the account's IBM devices, notes): an account that cannot be used gives none and says why."""
    from qtl.quantum.hardware.backends import list_backends

    notes: list[str] = []
    return [r["name"] for r in list_backends(real=True, notes=notes) if r["kind"] == "ibm"], notes


def _aws_credentials() -> bool:
    try:
        import boto3
    except ImportError:
        return False
    return boto3.Session().get_credentials() is not None


def devices() -> tuple[list[str], list[str], list[str]]:
    """(local devices, real devices, notes) this session may pick; real ones only outside demo mode and
    with an account; notes: why an account's devices are missing (a rejected token, no connection).
    Raises ImportError (HardwareUnavailableError) without the hardware extra."""
    from qtl.quantum.hardware.backends import fake_backend_names, ibm_account
    from qtl.quantum.hardware.braket import DEVICES

    local = fake_backend_names() + list(LOCAL_BRAKET)
    if settings().demo:
        return local, [], []
    real, notes = _ibm_devices() if ibm_account() else ([], [])
    return local, real + (list(DEVICES) if _aws_credentials() else []), notes


def bounds() -> tuple[tuple[int, ...], tuple[int | None, ...]]:
    """(shot choices, sample choices; None = the whole split) for this session."""
    if settings().demo:
        return tuple(s for s in SHOTS if s <= DEMO_MAX_SHOTS), tuple(
            n for n in SAMPLES if n <= DEMO_MAX_SAMPLES
        )
    return SHOTS, (*SAMPLES, None)


def database():
    """The results database this session's hardware jobs go to (demo: the session's private one)."""
    from qtl.paths import results_db

    return session_dir() / "results.db" if settings().demo else results_db()


def plan(loaded, data_dir: str | None, backend: str, shots: int, mitigations: list[str], samples: int | None):
    """`qtl.analysis.hardware_runs.prepare` for a loaded checkpoint on its val split (a seeded subset)."""
    from qtl.analysis.hardware_runs import prepare, select
    from qtl.quantum.hardware.backends import DEFAULT_BACKEND
    from qtl.quantum.hardware.calibration import noise_from_backend
    from ui.cache import data_version
    from ui.noise import head_inputs

    key = str(loaded.path), loaded.path.stat().st_mtime, data_dir, data_version(data_dir) if data_dir else ()
    inputs = select(head_inputs(*key), samples)
    noise = None
    if backend == "braket_dm":  # it simulates DEFAULT_BACKEND's calibration, which the page never names
        try:
            noise = noise_from_backend(loaded.model_config.circuit, DEFAULT_BACKEND)
        except ValueError as exc:
            raise ValueError(
                f"braket_dm simulates the calibration of {DEFAULT_BACKEND} here, and {exc}: pick a fake IBM "
                "backend as wide as the circuit, which simulates its own calibration"
            ) from None
    return prepare(loaded, inputs, backend, shots=shots, mitigations=mitigations, noise=noise)


def run(plan_) -> dict:
    """Submit the plan as one job, recorded in `database()`, wait for it and score it -> the report."""
    from qtl.analysis.hardware_runs import collect, submit
    from qtl.experiments.database import ResultsDB

    with ResultsDB(database()) as db:
        job_id, job = submit(plan_, db)
        return collect(job_id, db, job)


def submit_only(plan_) -> str:
    """Submit to a real device and record the job; its results come later (`fetch`)."""
    from qtl.analysis.hardware_runs import submit
    from qtl.experiments.database import ResultsDB

    with ResultsDB(database()) as db:
        return submit(plan_, db)[0]


def fetch(job_id: str) -> dict:
    """A recorded job's report: stored if done, else waited for and scored now."""
    from qtl.analysis.hardware_runs import job_report
    from qtl.experiments.database import ResultsDB

    with ResultsDB(database()) as db:
        return job_report(job_id, db)


def estimate_text(e: dict) -> str:
    """One line: what the job will run and cost."""
    seconds = duration(e["device_seconds"])
    cost = "" if not e.get("cost_usd") else f", list price about ${e['cost_usd']:.2f}"
    return (
        f"1 job: {count(e['executions'], 'execution')} ({count(e['samples'], 'sample')} as parameter sets) x "
        f"{e['shots_per_execution']} shots = {e['total_shots']:,} shots; depth {e['depth']}, "
        f"{e['two_qubit_gates']} two-qubit gates on qubits {e['qubits']}; device time {seconds}{cost}"
    )


def report_rows(report: dict) -> list[dict]:
    """The simulations and one row per mitigation, as table rows."""
    rows = [
        {"run": s["name"], "accuracy": s["accuracy"], "expval_error": s["expval_error"], "shots": None}
        for s in report["simulations"]
    ]
    rows += [
        {"run": f"{report['backend']}, {r['mitigation']}", "accuracy": r["accuracy"],
         "expval_error": r["expval_error"], "shots": r["shots"]}
        for r in report["results"]
    ]  # fmt: skip
    return rows


def error_chart(rows: list[dict]):
    """Altair bars: expval_error per simulation and mitigation."""
    import altair as alt
    import pandas as pd

    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            x=alt.X("expval_error:Q", title="mean |<Z> - exact <Z>|"),
            y=alt.Y("run:N", sort=None, title=None),
            tooltip=[
                "run",
                alt.Tooltip("expval_error:Q", format=".4f"),
                alt.Tooltip("accuracy:Q", format=".3f"),
            ],
        )
        .properties(height=34 * len(rows))
    )
