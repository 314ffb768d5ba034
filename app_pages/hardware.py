"""Hardware: a quantum checkpoint on a fake IBM backend, a Braket simulator or (locally, with an account) a
real device: estimate, one job, readout and zero-noise mitigation, results beside the simulations."""

import json

import streamlit as st

from qtl.utils.words import error_line
from ui import datasets, hardware, session_models
from ui.settings import settings

st.title("Hardware")
st.caption(
    "Run a trained circuit on a device: every val image as a parameter set of one compiled circuit, in one "
    "job, with readout (M3) and zero-noise (mitiq) mitigation; see docs/hardware.md."
)
models = {k: m for k, m in session_models.loaded_models().items() if m.model_config.is_quantum}


def show(models: dict, local: list[str], real: list[str]) -> None:
    """Pickers, the estimate, the run (or the confirmed submission) and the results."""
    name = st.selectbox("Quantum checkpoint", list(models), key="hw_model")
    loaded = models[name]
    left, mid, right = st.columns([2, 1, 1])
    choices = local + real
    backend = left.selectbox(
        "Device",
        choices,
        index=choices.index("FakeManilaV2"),
        key="hw_backend",
        help="Fake IBM backends and Braket's simulators run here; real devices need an account",
    )
    shot_choices, sample_choices = hardware.bounds()
    shots = mid.select_slider("shots", shot_choices, value=min(4000, shot_choices[-1]), key="hw_shots")
    samples = right.selectbox(
        "val images", sample_choices, format_func=lambda n: "all" if n is None else str(n), key="hw_samples"
    )
    a, b = st.columns(2)
    readout = a.toggle("readout mitigation (M3)", value=True, key="hw_readout")
    zne = b.toggle("zero-noise extrapolation (folds 1, 3, 5)", value=True, key="hw_zne")
    mitigations = ["none"] + ["readout"] * readout + ["zne"] * zne + ["readout+zne"] * (readout and zne)
    if settings().demo:
        st.caption(
            f"Demo: local devices only, at most {shot_choices[-1]} shots and {sample_choices[-1]} images."
        )

    root, why = datasets.scoring_data(loaded)
    if root is None:
        st.info(f"Cannot run {name}: {why}.")
        return
    try:
        with st.spinner(f"Compiling for {backend} ..."):
            plan = hardware.plan(loaded, root, backend, shots, mitigations, samples)
    except (ValueError, ImportError) as exc:
        st.error(error_line(exc))
        return
    st.markdown(f"**Estimate:** {hardware.estimate_text(plan.estimate)}")
    if note := datasets.fallback_note(loaded):
        st.caption(f"Its images: {note}.")

    if backend in local:
        if st.button(f"Run on {backend}", key="hw_run", type="primary"):
            with st.spinner(f"Running one job on {backend} ..."):
                st.session_state["hw_report"] = hardware.run(plan)
    else:
        st.warning(f"{backend} is a real device: the job queues there and uses your account's time or money.")
        agreed = st.checkbox(f"Submit: {hardware.estimate_text(plan.estimate)}", key="hw_confirm")
        if st.button(f"Submit to {backend}", key="hw_submit", disabled=not agreed):
            st.session_state.setdefault("hw_jobs", []).append(hardware.submit_only(plan))
        for job_id in st.session_state.get("hw_jobs", []):
            if st.button(f"Fetch job {job_id} (waits for it)", key=f"hw_fetch_{job_id}"):
                with st.spinner(f"Waiting for {job_id} ..."):
                    st.session_state["hw_report"] = hardware.fetch(job_id)

    report = st.session_state.get("hw_report")
    if report:
        st.subheader(f"Job {report['job_id']} on {report['backend']}")
        rows = hardware.report_rows(report)
        st.dataframe(rows, hide_index=True)
        st.altair_chart(hardware.error_chart(rows), width="stretch")
        for skipped in report.get("skipped", []):  # reports from before it had none
            st.warning(f"{skipped['mitigation']}: not applied: {skipped['reason']}.")
        st.caption(
            f"{report['samples']} val images x {report['shots']} shots of {report['checkpoint']}. "
            "expval_error: mean |<Z> - exact <Z>| over images and wires; the noisy simulation is the "
            "device's calibration as a NoiseConfig on the density-matrix engine."
        )
        st.download_button(
            "Report (JSON)", json.dumps(report, indent=1), "hardware-report.json", key="hw_json"
        )


if not models:
    st.info("Load a `quantum` or `hybrid` checkpoint (Checkpoints page) to run it on a device.")
else:
    try:
        local, real, notes = hardware.devices()
    except ImportError as exc:
        st.info(str(exc))
    else:
        for note in notes:  # an IBM account that cannot be used: the local devices still run
            st.warning(note)
        show(models, local, real)
