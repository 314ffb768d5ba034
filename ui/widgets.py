"""Inputs shared by pages: widgets bound to the active configuration, the circuit form, image inputs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from qtl.config import BACKBONE_NAMES
from qtl.quantum.circuit import ENTANGLERS, MAX_DEPTH, ROTATIONS, CircuitConfig
from ui.cache import val_samples
from ui.session import active_data_dir, circuit_config
from ui.settings import settings

IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]
PREVIEW_PX = 448  # uploads are shown at most this large: a phone photo is not sent to the browser whole


def bound(widget, label: str, field: str, key: str, **kwargs):
    """A widget bound to `st.session_state.config[field]`: it starts from the active value and writes back.

    `key` must be unique per page (use a page prefix). Works inside forms: the value is written back when
    the script sees it, i.e. on submit.
    """
    config = st.session_state["config"]
    if key not in st.session_state:
        st.session_state[key] = config[field]
    value = widget(label, key=key, **kwargs)
    config[field] = value
    return value


#: The Train form's choice of protocol: `split` values and what they mean.
SPLIT_CHOICE = dict(
    options=["given", "kfold"],
    format_func=lambda s: {"given": "the dataset's own (test/ if any)", "kfold": "5 folds (test = seed % 5)"}[
        s
    ],
    help="Every run keeps its best epoch by val accuracy. 5 folds also scores that epoch once on a held-out "
    "test fold never used for selection (without augmentation: cached features of every image).",
)
REUPLOAD_HELP = dict(help="Embed the features again in every circuit block (data re-uploading).")


def circuit_widgets(prefix: str, max_qubits: int | None = None) -> CircuitConfig:
    """Qubits, depth, entangler and rotation, bound to the active configuration."""
    max_q = max_qubits or settings().max_qubits
    if st.session_state["config"]["n_qubits"] > max_q:
        st.session_state["config"]["n_qubits"] = max_q
    cols = st.columns(4)
    with cols[0]:
        bound(
            st.number_input, "qubits", "n_qubits", f"{prefix}_n_qubits", min_value=1, max_value=max_q, step=1
        )
    with cols[1]:
        bound(st.number_input, "depth", "depth", f"{prefix}_depth", min_value=0, max_value=MAX_DEPTH, step=1)
    with cols[2]:
        bound(st.selectbox, "entangler", "entangler", f"{prefix}_entangler", options=ENTANGLERS)
    with cols[3]:
        bound(st.selectbox, "rotation", "rotation", f"{prefix}_rotation", options=ROTATIONS)
    return circuit_config()


def backbone_options(current: str) -> list[str]:
    """The backbones a form offers: the library's names, and `current` (a timm name chosen before)."""
    return list(dict.fromkeys([*BACKBONE_NAMES, current]))


def read_images(files) -> list[tuple[str, object]]:
    """[(name, PIL image or error message)] for uploaded files; a bad file becomes its own message."""
    from qtl.data.images import ImageLoadError, load_image

    out = []
    for f in files:
        try:
            out.append((f.name, load_image(f.getvalue())))
        except ImageLoadError as exc:
            reason = str(exc.__cause__ or exc)
            if "cannot identify image file" in reason:  # PIL's message ends in the stream's repr
                reason = f"not a recognised image format (accepted: {', '.join(IMAGE_TYPES)})"
            out.append((f.name, f"cannot decode {f.name}: {reason}"))
    return out


def image_inputs(prefix: str, multiple: bool = True) -> list[tuple[str, object]]:
    """Uploaded images and/or picked val samples: [(name, PIL image or error message)]."""
    from qtl.data.images import ImageLoadError, load_image

    files = st.file_uploader(
        "Upload image(s)" if multiple else "Upload an image",
        type=IMAGE_TYPES,
        accept_multiple_files=multiple,
        key=f"{prefix}_upload",
    )
    files = files if multiple else [files] if files else []
    cap = settings().max_images if multiple else 1  # a demo classifies at most this many at once
    if cap is not None and len(files) > cap:
        st.warning(
            f"{len(files)} images uploaded; this server classifies at most {cap} at once: the first {cap}."
        )
        files = files[:cap]
    samples = val_samples(active_data_dir())
    picked = st.multiselect(
        "or pick val samples",
        [p for p, _ in samples],
        format_func=lambda p: f"{Path(p).parent.name}/{Path(p).name}",
        key=f"{prefix}_samples",
        max_selections=None if cap is None else max(cap - len(files), 1),
        placeholder="val images" if samples else "no dataset on disk",
    )
    if cap is not None and len(files) + len(picked) > cap:  # picked before the uploads came
        picked = picked[: max(cap - len(files), 0)]
    out = read_images(files or [])
    for path in picked:
        try:
            out.append((f"{Path(path).parent.name}/{Path(path).name}", load_image(path)))
        except ImageLoadError as exc:
            out.append((Path(path).name, str(exc)))
    return out


def preview(image):
    """A copy of a PIL image no larger than PREVIEW_PX on either side, for display."""
    small = image.copy()
    small.thumbnail((PREVIEW_PX, PREVIEW_PX))
    return small


def explanation_caption(label: str, ex) -> str:
    """A heatmap's caption: the model, its class and probability, the method, and why the map is blank
    where it is (`Explanation.note`: a uniform tint would read as a map)."""
    note = f" · {ex.note}" if ex.note else ""
    return f"{label}: {ex.class_name} {ex.probs[ex.target]:.0%} · {ex.method}{note}"


def no_models_hint() -> None:
    """Tell a visitor how to get a model when none is loaded."""
    st.info(
        "No checkpoint is loaded. Train one on the **Train** page (or the one-click quick start on the "
        "**Overview**), or load one on the **Checkpoints** page (shipped checkpoints in `models/` are listed "
        "there)."
    )
