"""Train: the full form; training runs as a background job with live progress, curves and Cancel."""

import streamlit as st

from qtl.config import DIFF_METHODS, ENGINES, VARIANTS
from ui import server_jobs, session, training, widgets
from ui.settings import settings

st.title("Train")
s = settings()
c = st.session_state["config"]
c["epochs"] = min(c["epochs"], s.max_epochs)
refused = session.refuse_backbone("train_backbone")  # a typed name qtl cannot build: kept out, said below
session.resolve_weights()
if st.session_state.get("backbone_notice"):
    st.caption(st.session_state["backbone_notice"])

with st.form("train_form"):
    st.markdown("##### Model")
    left, mid, right = st.columns([2, 1, 1])
    with left:
        widgets.bound(st.multiselect, "variants", "variants", "train_variants", options=VARIANTS)
    with mid:
        options = widgets.backbone_options(c["backbone"])
        widgets.bound(
            st.selectbox,
            "backbone",
            "backbone",
            "train_backbone",
            options=options,
            accept_new_options=not s.demo,  # a public demo does not fetch arbitrary models
            help=None if s.demo else "Or type any timm model as timm/<model>, e.g. timm/convnext_atto.",
        )
    with right:
        widgets.bound(
            st.toggle, "ImageNet weights", "pretrained", "train_pretrained", help="Off: random-init backbone."
        )
    st.markdown("##### Circuit")
    widgets.circuit_widgets("train")
    left, mid, right, last, bond = st.columns(5)
    with left:
        widgets.bound(
            st.number_input,
            "q_delta (initial angle spread)",
            "q_delta",
            "train_q_delta",
            format="%.3f",
            min_value=0.0,
            max_value=3.2,
            step=0.01,
        )
    with mid:
        widgets.bound(
            st.selectbox,
            "engine",
            "engine",
            "train_engine",
            options=ENGINES,
            help="native: statevector, up to 24 qubits. mps: matrix product state, up to 128 qubits "
            "(exact at bond 2**depth for the chain entangler). Others: PennyLane devices.",
        )
    with right:
        widgets.bound(
            st.selectbox, "diff method (PennyLane)", "diff_method", "train_diff", options=DIFF_METHODS
        )
    with last:
        widgets.bound(
            st.number_input, "shots (0: exact)", "shots", "train_shots", min_value=0, max_value=100_000
        )
    with bond:
        widgets.bound(
            st.number_input,
            "max bond (mps; 0: exact)",
            "max_bond",
            "train_max_bond",
            min_value=0,
            max_value=4096,
            help="Below the exact bond the MPS engine truncates by SVD and reports the discarded weight.",
        )
    st.markdown("##### Training")
    cols = st.columns(4)
    with cols[0]:
        widgets.bound(
            st.number_input, "epochs", "epochs", "train_epochs", min_value=1, max_value=s.max_epochs
        )
    with cols[1]:
        widgets.bound(st.text_input, "seeds (comma-separated)", "seeds", "train_seeds")
    with cols[2]:
        widgets.bound(
            st.number_input, "lr", "lr", "train_lr", format="%.5f", min_value=1e-6, max_value=1.0, step=1e-4
        )
    with cols[3]:
        widgets.bound(st.number_input, "batch size", "batch_size", "train_batch", min_value=1, max_value=256)
    cols = st.columns(4)
    with cols[0]:
        widgets.bound(
            st.toggle,
            "override the recipes",
            "override_recipe",
            "train_override",
            help="Off: each variant uses its own recipe's learning rate, batch size and augmentation; "
            "on: the values here apply to every variant.",
        )
    with cols[1]:
        widgets.bound(st.toggle, "augmentation", "augment", "train_augment")
    with cols[2]:
        widgets.bound(st.selectbox, "held-out test", "split", "train_split", **widgets.SPLIT_CHOICE)
    with cols[3]:
        widgets.bound(
            st.toggle, "re-upload data (quantum)", "reupload", "train_reupload", **widgets.REUPLOAD_HELP
        )
    submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")

if refused:
    st.error(f"Cannot use this backbone: {refused}")
    submitted = False
if submitted:
    try:
        runs = training.planned_runs()
    except ValueError as exc:
        st.error(f"Cannot train this configuration: {exc}")
    else:
        if server_jobs.submit_training(f"train {', '.join(c['variants'])}", runs):
            st.toast(f"Training started: {len(runs)} run(s).")

server_jobs.job_panel()
