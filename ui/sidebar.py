"""The sidebar on every page: demo limits, the active configuration, loaded checkpoints, training progress."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import session
from ui.server_jobs import runner
from ui.session import active_data_dir
from ui.settings import settings


def render() -> None:
    """The active configuration and the loaded checkpoints, on every page."""
    s = settings()
    c = st.session_state["config"]
    with st.sidebar:
        if s.demo:
            st.info(
                f"**Demo mode**: shipped checkpoints are read-only, your files stay in your session, "
                f"training is limited to at most {s.max_epochs} epoch(s) per run, {s.max_qubits} qubits, and "
                "one training request at a time on this server."
            )
        st.markdown("#### Active configuration")
        engine = c["engine"] if c["engine"] == "native" else f"{c['engine']} / {c['diff_method']}"
        data = active_data_dir()
        st.markdown(
            f"- data: {Path(data).name if data else 'hymenoptera (default)'}\n"
            f"- variants: {', '.join(c['variants'])}\n"
            f"- backbone: {session.backbone_label(c)}\n"
            f"- circuit: {c['n_qubits']} qubits, depth {c['depth']}, {c['entangler']}, {c['rotation']}\n"
            f"- engine: {engine}\n"
            f"- epochs {c['epochs']}, seeds {c['seeds']}"
        )
        if st.session_state.get("backbone_notice"):
            st.caption(st.session_state["backbone_notice"])
        st.markdown("#### Loaded checkpoints")
        if not st.session_state["loaded"]:
            st.caption("None yet: train one, or load one on the Checkpoints page.")
        for path in st.session_state["loaded"]:
            st.markdown(f"- `{Path(path).name}`")
        for name, why in st.session_state["load_errors"].items():
            st.caption(f":material/error: `{name}` could not be loaded: {why}")
        job = runner().get(st.session_state["job_id"])
        if job is not None and not job.snapshot().finished:
            # its own fragment, polling as the page's job panel does: the sidebar is drawn once per run
            # of the page, so a plain progress bar here would stay at the first run's step
            st.fragment(_progress, run_every=1.0)(job.id)


def _progress(job_id: int) -> None:
    """The training job's progress bar, until it finishes."""
    job = runner().get(job_id)
    snap = job.snapshot() if job is not None else None
    if snap is not None and not snap.finished:
        st.progress(snap.progress, text=f"training: {snap.message}")
