"""Noise: a quantum checkpoint's val accuracy and per-qubit <Z> under noise, shots and a fake IBM backend."""

from dataclasses import replace

import streamlit as st

from qtl.analysis.robustness import backend_refusal, noise_refusal
from ui import cache, datasets, noise, session_models

st.title("Noise")
st.caption(
    "Would the model survive a real quantum computer? Its circuit runs on the native density-matrix engine "
    "with a channel after every gate, readout error and finite shots; see docs/noise.md."
)
quantum = {k: m for k, m in session_models.loaded_models().items() if m.model_config.is_quantum}
refused = {name: why for name, m in quantum.items() if (why := noise_refusal(m))}
models = {k: m for k, m in quantum.items() if k not in refused}


def scored(name: str, loaded) -> tuple | None:
    """The cache key (path, mtime, dataset root, its version) to score `loaded` with, or None after saying
    why not."""
    root, why = datasets.scoring_data(loaded)
    if root is None:
        st.warning(f"**{name}**: {why}.")
        return None
    return str(loaded.path), loaded.path.stat().st_mtime, root, cache.data_version(root)


def show(models: dict) -> None:
    """Sliders, per-checkpoint accuracy and <Z> distributions, the curve and the fake-backend run."""
    chosen = st.multiselect(
        "Quantum checkpoints (e.g. one trained ideal, one trained with noise)",
        list(models),
        default=noise.default_pair(models),
        key="noise_models",
    )
    config = noise.noise_widgets("noise")
    st.caption(f"Noise: **{config.label()}**")

    curve = []
    for name in chosen:
        loaded = models[name]
        key = scored(name, loaded)
        if key is None:
            continue
        try:
            result = noise.evaluate(*key, config.to_dict())
        except ValueError as exc:  # the dataset's classes are not the model's
            st.warning(f"**{name}**: cannot score it: {exc}.")
            continue
        inputs = noise.head_inputs(*key)
        trained = loaded.model_config.noise.label()
        st.subheader(name)
        left, right = st.columns([1, 3])
        left.metric("val accuracy", f"{result.accuracy:.3f}")
        note = datasets.fallback_note(loaded)  # scored on the active dataset: say why
        left.caption(
            f"trained {'ideal' if trained == 'ideal' else 'with ' + trained}; {len(inputs.labels)} images"
            + (f" of {note}" if note else "")
        )
        right.altair_chart(
            noise.z_distribution_chart(result.expvals, inputs.labels, loaded.class_names), width="stretch"
        )
        with st.spinner("Sweeping depolarizing strengths ..."):
            for p in noise.CURVE_STRENGTHS:
                point = replace(config, depolarizing=p, depolarizing_2q=p)
                curve.append(
                    {"model": name, "p": p, "accuracy": noise.evaluate(*key, point.to_dict()).accuracy}
                )

    if curve:
        st.subheader("Accuracy against depolarizing strength")
        st.caption(
            "The other channels, readout error and shots as set above; the dashed rule is the sliders' p."
        )
        st.altair_chart(noise.curve_chart(curve, config.depolarizing), width="stretch")

    st.subheader("Fake IBM backend")
    try:
        from qtl.quantum.hardware.backends import DEFAULT_BACKEND, fake_backend_names

        names = fake_backend_names()
    except ImportError as exc:
        st.info(str(exc))
    else:
        left, mid, right = st.columns([2, 1, 1])
        backend = left.selectbox("backend", names, index=names.index(DEFAULT_BACKEND), key="noise_backend")
        shots = mid.select_slider("shots", [100, 1000, 4000], value=1000, key="noise_backend_shots")
        right.write("")
        if right.button("Run on the backend", key="noise_run_backend") and chosen:
            with st.spinner(f"Transpiling and simulating on {backend} ..."):
                rows, skipped = [], []
                for name in chosen:
                    key = scored(name, models[name])
                    if key is None:
                        continue
                    if why := backend_refusal(models[name], backend):  # wider than the backend
                        skipped.append(f"**{name}**: cannot run it there: {why}.")
                        continue
                    result = noise.evaluate(*key, {"shots": shots}, backend)
                    rows.append(
                        {
                            "checkpoint": name,
                            "backend": result.label,
                            "val accuracy": round(result.accuracy, 3),
                        }
                    )
            st.session_state["noise_backend_rows"], st.session_state["noise_backend_skipped"] = rows, skipped
        for line in st.session_state.get("noise_backend_skipped", []):
            st.warning(line)
        if st.session_state.get("noise_backend_rows"):
            st.dataframe(st.session_state["noise_backend_rows"], hide_index=True)
        st.caption(
            "Transpiled to the backend's coupling map and basis gates, simulated on Aer with its "
            "calibrated noise model. A real IBM device runs the same way with a backend from "
            "QiskitRuntimeService (README)."
        )


if refused:
    st.info(
        "Not simulated under noise: "
        + "; ".join(f"**{name}**: {why}" for name, why in refused.items())
        + ". Load a narrower quantum checkpoint to see one."
    )
if models:
    show(models)
elif not quantum:
    st.info("Load a `quantum` or `hybrid` checkpoint (Checkpoints page) to see how it holds up under noise.")
