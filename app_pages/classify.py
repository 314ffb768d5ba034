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
    explained = good[:EXPLAIN_MAX] if why else []
    with st.spinner(f"Classifying {len(good)} image(s) with {len(models)} model(s) ..."):
        # an explanation runs the model as a prediction does: its probabilities are the answer, so an
        # explained image takes no second pass; grad-cam where the backbone has a feature map, else saliency
        maps = [
            explain_all(models, im, method="saliency" if method == "saliency" else "auto")
            for _, im in explained
        ]
        rest = predict(models, [im for _, im in good[len(maps) :]]) if len(good) > len(maps) else {}
    answers = [{label: ex.probs for label, ex in m.items()} for m in maps]  # per image: {label: (C,)}
    answers += [{label: p.probs[k] for label, p in rest.items()} for k in range(len(good) - len(maps))]
    timings = [
        {
            "model": label,
            "variant": m.variant,
            "seconds": sum(e[label].seconds for e in maps) + (rest[label].latency_s if rest else 0.0),
            "shared": any(e[label].shared_backbone for e in maps)
            or bool(rest and rest[label].shared_backbone),
        }
        for label, m in models.items()
    ]
    st.dataframe(tables.latency_table(timings, len(good)), hide_index=True)
    for i, (name, image) in enumerate(good):
        st.divider()
        left, right = st.columns([1, 3])
        left.image(widgets.preview(image), caption=name, width="stretch")
        rows = [
            {"model": label, "class": c, "probability": float(p)}
            for label, probs in answers[i].items()
            for c, p in zip(models[label].class_names, probs.tolist(), strict=True)
        ]
        right.markdown(
            "  \n".join(
                f"`{label}` → **{models[label].class_names[int(probs.argmax())]}** ({float(probs.max()):.1%})"
                for label, probs in answers[i].items()
            )
        )
        right.altair_chart(charts.probs_chart(rows), width="stretch")
        if i < len(maps):
            cols = st.columns(max(4, len(maps[i])))
            for j, (label, ex) in enumerate(maps[i].items()):
                cols[j % len(cols)].image(
                    overlay(ex.image, ex.heatmap),
                    caption=widgets.explanation_caption(label, ex),
                    width="stretch",
                )
