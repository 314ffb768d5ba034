"""Compare: the loaded variants side by side (mean ± std over seeds), curves, confusion matrices, mistakes."""

from pathlib import Path

import streamlit as st

from qtl.analysis.inference import WHY_TRAINING_DIFFERS, accuracy_at_training
from qtl.experiments.runs import checkpoint_row
from qtl.experiments.stats import one_per_run, summarise
from ui import cache, charts, datasets, session_models, tables, widgets

st.title("Compare")
models = session_models.loaded_models()
if not models:
    widgets.no_models_hint()
else:
    rows = []
    for label, loaded in models.items():
        latency = cache.model_latency(str(loaded.path), loaded.path.stat().st_mtime)
        rows.append({"model": label, **checkpoint_row(loaded), "latency_ms": latency * 1e3})
    fields = ("val_acc", "val_loss", "classical", "quantum", "train_time_s", "latency_ms")
    st.markdown("Runs that differ only in their seed are grouped: each cell is mean ± std over the seeds.")
    distinct, repeats = one_per_run(rows)
    st.dataframe(tables.summary_table(summarise(distinct, fields), fields), hide_index=True, width="stretch")
    if repeats:
        names = ", ".join(row["model"] for row in repeats)
        st.caption(f"Left out of the means, as other checkpoints of the same runs: {names}.")
    with st.expander("Every run"):
        st.dataframe(rows, hide_index=True, width="stretch")

    st.subheader("Learning curves")
    records = [{"run": label, **row} for label, loaded in models.items() for row in loaded.history]
    if records:
        left, right = st.columns(2)
        left.altair_chart(charts.curves_chart(records, "loss"), width="stretch")
        right.altair_chart(charts.curves_chart(records, "acc"), width="stretch")

    st.subheader("Evaluation on the val split")
    st.caption(
        "Each model is scored on the val split of the dataset it was trained on (the active one if that is "
        "gone); a model trained on k folds, on its own run's val fold, never on images it trained on."
    )
    if st.toggle("Evaluate every loaded model (confusion matrices and misclassified images)", key="cmp_eval"):
        evaluations, roots = {}, {}
        for label, loaded in models.items():
            root, why = datasets.scoring_data(loaded)
            try:
                if root is None:
                    raise ValueError(why)
                version = cache.data_version(root)
                evaluations[label] = cache.evaluation(
                    str(loaded.path), loaded.path.stat().st_mtime, root, version
                )
                roots[label] = root
            except ValueError as exc:  # no dataset, or one whose classes are not the model's
                st.warning(f"**{label}**: cannot evaluate it: {exc}.")
        cols = st.columns(min(3, max(1, len(evaluations))))
        for i, (label, ev) in enumerate(evaluations.items()):
            with cols[i % len(cols)]:
                st.altair_chart(charts.confusion_chart(ev.metrics, label), width="stretch")
                m, auc = ev.metrics, ev.metrics["roc_auc"]
                recorded = accuracy_at_training(models[label], roots[label], "val", m["n"])
                trained = ""
                if recorded is not None and abs(recorded - m["accuracy"]) > 1e-9:  # as `qtl evaluate` says
                    trained = (
                        f" ({recorded:.3f} at training, as the table above shows: {WHY_TRAINING_DIFFERS})"
                    )
                where = f"on {Path(roots[label]).name}, {m['n']} val images"
                if note := datasets.fallback_note(models[label]):
                    where += f" ({note})"
                st.caption(
                    f"{where}: accuracy {m['accuracy']:.3f}{trained}, macro F1 {m['macro_f1']:.3f}, "
                    f"ROC-AUC {'–' if auc is None else f'{auc:.3f}'}"
                )
                st.dataframe(tables.per_class_table(m), hide_index=True, width="stretch")
        for label, ev in evaluations.items():
            wrong = ev.misclassified
            with st.expander(f"{label}: {len(wrong)} misclassified of {len(ev.samples)}"):
                names = ev.metrics["class_names"]
                shown = wrong[:24]
                captions = [f"{names[s.label]} → {names[s.pred]} ({max(s.probs):.0%})" for s in shown]
                if shown:
                    st.image([s.path for s in shown], caption=captions, width=140)
