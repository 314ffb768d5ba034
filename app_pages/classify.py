"""Classify: every loaded variant's class and probabilities for uploaded or val images, with latency, and
each variant's heatmap of what drove its decision."""

import streamlit as st

from qtl.analysis.explain import explain_all, overlay
from qtl.analysis.inference import predict
from ui import charts, session_models, tables, widgets

EXPLAIN_MAX = 4  # images that get heatmaps (one backward pass per model each)

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
    left, right = st.columns([1, 2])
    why = left.toggle(
        "Show why: heatmaps", value=True, key="cls_explain", help=f"for the first {EXPLAIN_MAX} images"
    )
    method = right.segmented_control(
        "method",
        ["grad-cam", "saliency"],
        default="grad-cam",
        key="cls_method",
        help="Grad-CAM (CNN backbones): which regions of the last feature map raise the predicted class's "
        "score. Saliency (any backbone): how strongly each pixel moves it. Both backpropagate through the "
        "whole model, quantum circuit included. Transformer backbones always get saliency.",
        disabled=not why,
    )
    with st.spinner(f"Classifying {len(good)} image(s) with {len(models)} model(s) ..."):
        predictions = predict(models, [im for _, im in good])
    st.dataframe(tables.latency_table(predictions, len(good)), hide_index=True)
    for i, (name, image) in enumerate(good):
        st.divider()
        left, right = st.columns([1, 3])
        left.image(widgets.preview(image), caption=name, width="stretch")
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
        if why and i < EXPLAIN_MAX:
            with st.spinner("Backpropagating through every model ..."):
                # grad-cam where the backbone has a feature map, else saliency (transformers)
                maps = explain_all(models, image, method="saliency" if method == "saliency" else "auto")
            cols = st.columns(max(4, len(maps)))
            for j, (label, ex) in enumerate(maps.items()):
                cols[j % len(cols)].image(
                    overlay(ex.image, ex.heatmap),
                    caption=f"{label}: {ex.class_name} {ex.probs[ex.target]:.0%} · {ex.method}",
                    width="stretch",
                )
