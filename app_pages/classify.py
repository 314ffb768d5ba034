"""Classify: every loaded variant's class and probabilities for uploaded or val images, with latency."""

import streamlit as st

from qtl.inference import predict
from ui import charts, session_models, tables, widgets

st.title("Classify")
models = session_models.loaded_models()
if not models:
    widgets.no_models_hint()
images = widgets.image_inputs("cls")
good = [(name, im) for name, im in images if not isinstance(im, str)]
for name, message in images:
    if isinstance(message, str):
        st.error(f"**{name}**: {message}")

if models and good:
    with st.spinner(f"Classifying {len(good)} image(s) with {len(models)} model(s) ..."):
        predictions = predict(models, [im for _, im in good])
    st.dataframe(tables.latency_table(predictions, len(good)), hide_index=True)
    for i, (name, image) in enumerate(good):
        st.divider()
        left, right = st.columns([1, 3])
        left.image(image, caption=name, width="stretch")
        rows = [
            {"model": label, "class": c, "probability": float(p)}
            for label, pred in predictions.items()
            for c, p in zip(pred.class_names, pred.probs[i].tolist(), strict=True)
        ]
        right.markdown(
            "  \n".join(
                f"`{label}` → **{pred.predicted[i]}** ({pred.confidence[i]:.1%})"
                for label, pred in predictions.items()
            )
        )
        right.altair_chart(charts.probs_chart(rows), width="stretch")
