"""Experiments: compose a sweep and run it in the background, then browse the sweeps in the results
database: heatmap over qubits x depth, confidence intervals, paired comparisons, parameters, cost, CSV."""

import streamlit as st

from qtl.experiments.stats import cells, comparisons, settings_apart
from ui import charts, experiments, findings, tables, widgets
from ui.settings import settings

st.title("Experiments")
s = settings()
c = st.session_state["config"]
st.session_state.setdefault("exp_job_id", None)
dataset, dataset_words, no_dataset = experiments.sweep_dataset()

with st.expander("New sweep", expanded=False), st.form("exp_form"):
    st.caption(
        "Every combination of the values below, each an independent run with a stable id; runs the "
        "database already holds are not trained again. A name the database holds adds these runs to "
        "that sweep; a new name starts a sweep of their own."
        + (f" Demo: frozen heads only, at most {experiments.DEMO_MAX_SWEEP_RUNS} runs." if s.demo else "")
    )
    left, right = st.columns(2)
    name = left.text_input("name", "app-sweep", key="exp_name")
    variants = right.multiselect(
        "variants", experiments.DEMO_VARIANTS, ["quantum", "dressed-classical", "linear"], key="exp_variants"
    )
    left, mid, right = st.columns(3)
    qubits = left.multiselect("qubits", list(range(1, s.max_qubits + 1)), [2, 4], key="exp_qubits")
    depths = mid.multiselect("depth", [0, 1, 2, 3, 4, 6, 8, 10], [1, 3], key="exp_depths")
    seeds = right.multiselect("seeds", list(range(10)), [0, 1, 2], key="exp_seeds")
    left, mid, right = st.columns(3)
    epochs = left.number_input("epochs", 1, s.max_epochs, min(5, s.max_epochs), key="exp_epochs")
    backbones = widgets.backbone_options(c["backbone"])  # the bundled one too: offline sessions use it
    backbone = mid.selectbox("backbone", backbones, backbones.index(c["backbone"]), key="exp_backbone")
    pretrained = right.toggle("ImageNet weights", c["pretrained"], key="exp_pretrained")
    st.caption(dataset_words)
    submitted = st.form_submit_button("Run sweep", type="primary", icon=":material/play_arrow:")

databases = experiments.databases()
if submitted:
    form = dict(name=name, variants=variants, qubits=qubits, depths=depths, seeds=seeds, epochs=epochs)
    try:
        if no_dataset:
            raise ValueError(no_dataset)
        spec, text = experiments.compose_spec(
            {**form, "backbone": backbone, "pretrained": pretrained, "dataset": dataset}
        )
    except ValueError as exc:
        st.error(f"Cannot run this sweep: {exc}")
    else:
        st.code(text, language="toml")
        if experiments.submit_sweep(spec, next(iter(databases.values()))):
            st.toast(f"Sweep {spec.name} started.")
experiments.sweep_panel()

st.subheader("Sweeps")
sweep, rows = experiments.browse(databases)
if rows and any(r.get("test_acc") is not None for r in rows):
    st.subheader("Findings on held-out test accuracy")
    effect = st.number_input(
        "difference to detect (power analysis)", 0.005, 0.2, 0.02, 0.005, key="exp_effect"
    )
    findings.render(rows, effect=effect)
if rows:
    cell_list = cells(rows)
    st.markdown(f"**{len(rows)} finished runs** in {len(cell_list)} configurations (mean over seeds).")
    if charts.heatmap_worth_drawing(cell_list):
        st.altair_chart(charts.sweep_heatmap(cell_list))
    if len(charts.widths(cell_list)) > 2:
        st.subheader("Accuracy vs width")
        st.altair_chart(charts.width_chart(cell_list), width="stretch")
        st.caption("Each point: mean val accuracy over seeds with its 95% CI; hover for the training time.")
    st.subheader("Quantum vs controls, paired by seed")
    apart = settings_apart(cell_list)
    st.dataframe(tables.comparison_table(comparisons(rows), apart), hide_index=True, width="stretch")
    st.caption(
        "Difference = quantum − control on the same seed; 95% CI of the mean difference; paired t-test, "
        "p adjusted over every comparison shown (Benjamini-Hochberg)."
    )
    left, right = st.columns(2)
    with left:
        st.markdown("##### Val accuracy per configuration (95% CI)")
        st.altair_chart(charts.cell_errorbars(cell_list), width="stretch")
    with right:
        st.markdown("##### Accuracy vs trainable parameters")
        st.altair_chart(charts.params_chart(rows), width="stretch")
        st.markdown("##### Training cost")
        st.altair_chart(charts.cost_chart(cell_list), width="stretch")
    st.download_button(
        "Download the runs (CSV)",
        tables.csv_bytes(rows),
        f"{sweep}.csv",
        "text/csv",
        icon=":material/download:",
    )
