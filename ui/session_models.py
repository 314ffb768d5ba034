"""This session's loaded checkpoints (paths in `st.session_state["loaded"]`, models from the shared cache)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.cache import load_checkpoint


def loaded_models() -> dict[str, object]:
    """{label: LoadedModel} of this session's loaded checkpoints, in the order they were loaded. A vanished
    or broken file, or one whose backbone weights are not here, is dropped, and why is kept in
    st.session_state["load_errors"] (the sidebar shows it on every page). Labels are unique: a checkpoint
    whose label an earlier one has (the same file name in another folder) is "label (2)", never hidden."""
    out, seen = {}, set()
    for path in list(st.session_state["loaded"]):
        if str(Path(path).resolve()) in seen:  # one file listed twice (as two spellings): shown once
            continue
        try:
            loaded = load_checkpoint(path)
        except (OSError, ValueError, RuntimeError) as exc:  # gone, invalid, or weights unavailable
            from qtl.models.backbones.common import one_line

            st.session_state["loaded"].remove(path)
            st.session_state["load_errors"][Path(path).name] = one_line(exc)
            continue
        seen.add(str(Path(path).resolve()))
        out[unique_label(model_label(loaded.variant, path), out)] = loaded
    return out


def unique_label(label: str, taken) -> str:
    """`label`, or "label (2)", "label (3)" ... the first not in `taken`."""
    found, k = label, 2
    while found in taken:
        found, k = f"{label} ({k})", k + 1
    return found


def model_label(variant: str, path: str | Path) -> str:
    """How a loaded model is named on every page: its file stem, prefixed by the variant unless the stem
    already starts with it ("quantum-resnet18-random-q4d6-s0-...", "linear · my-upload")."""
    stem = Path(path).stem
    return stem if stem.startswith(f"{variant}-") else f"{variant} · {stem}"


def load(path: str | Path) -> None:
    """Load a checkpoint into this session (validates it; raises CheckpointError / OSError)."""
    load_checkpoint(path)
    p = str(Path(path).resolve())
    st.session_state["load_errors"].pop(Path(p).name, None)
    if p not in st.session_state["loaded"]:
        st.session_state["loaded"].append(p)


def unload(path: str | Path) -> None:
    p = str(Path(path).resolve())
    if p in st.session_state["loaded"]:
        st.session_state["loaded"].remove(p)
