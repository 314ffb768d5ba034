"""The Noise page's glue: noise widgets, cached circuit inputs and sweeps, and its two charts."""

from __future__ import annotations

import streamlit as st

from qtl.quantum.noise import NoiseConfig

SHOTS = ("exact", 10, 100, 1000, 10000)
CURVE_STRENGTHS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2)


def default_pair(models: dict) -> list[str]:
    """The Noise page's first choice, as its label suggests: one quantum checkpoint trained ideal and one
    trained with noise, each the best of its kind by recorded val accuracy (the first two loaded were
    often a short run of the user's and an ideal one); the best two when all are of one kind."""

    def best(names: list[str], n: int = 1) -> list[str]:
        return sorted(names, key=lambda name: -(models[name].metrics.get("val_acc") or 0.0))[:n]

    ideal = [n for n, m in models.items() if m.model_config.noise.label() == "ideal"]
    noisy = [n for n in models if n not in ideal]
    return best(ideal) + best(noisy) if ideal and noisy else best(list(models), 2)


def noise_widgets(prefix: str) -> NoiseConfig:
    """Sliders for the channels, readout error and shots -> the NoiseConfig they describe."""
    left, right = st.columns(2)
    dep = left.slider("depolarizing p, one-qubit gates", 0.0, 0.2, 0.0, 0.005, key=f"{prefix}_dep1")
    dep2 = left.slider("depolarizing p, CNOTs (each wire)", 0.0, 0.2, dep, 0.005, key=f"{prefix}_dep2")
    amp = left.slider("amplitude damping γ (T1), every gate", 0.0, 0.1, 0.0, 0.005, key=f"{prefix}_amp")
    phase = right.slider("phase damping γ (T2), every gate", 0.0, 0.1, 0.0, 0.005, key=f"{prefix}_phase")
    readout = right.slider("readout bit-flip probability", 0.0, 0.2, 0.0, 0.01, key=f"{prefix}_readout")
    shots = right.select_slider("shots per ⟨Z⟩", SHOTS, value="exact", key=f"{prefix}_shots")
    return NoiseConfig(
        depolarizing=dep,
        amplitude_damping=amp,
        phase_damping=phase,
        depolarizing_2q=dep2,
        amplitude_damping_2q=amp,
        phase_damping_2q=phase,
        readout=readout,
        shots=None if shots == "exact" else int(shots),
    )


@st.cache_data(show_spinner="Running the backbone over the val split ...", max_entries=32)
def head_inputs(path: str, mtime: float, root: str, version: tuple):
    """qtl.analysis.robustness.head_inputs of a checkpoint on the val split of the dataset at `root`
    (cached per checkpoint file and `ui.cache.data_version` of the dataset). Raises ValueError when the
    dataset's classes are not the model's."""
    from qtl.analysis.robustness import head_inputs as inputs
    from ui.cache import load_checkpoint

    return inputs(load_checkpoint(path), root)


@st.cache_data(show_spinner=False, max_entries=256)
def evaluate(path: str, mtime: float, root: str, version: tuple, noise: dict, backend: str | None = None):
    """qtl.analysis.robustness.evaluate_noise of a checkpoint under `noise` (a NoiseConfig dict), or on a
    backend."""
    from qtl.analysis.robustness import evaluate_noise
    from ui.cache import load_checkpoint

    loaded = load_checkpoint(path)
    return evaluate_noise(
        loaded, head_inputs(path, mtime, root, version), NoiseConfig.from_dict(noise), backend=backend
    )


def z_distribution_chart(expvals, labels, class_names: list[str]):
    """Altair box plots of <Z_i> over the val images, per qubit, one colour per true class."""
    import altair as alt
    import pandas as pd

    rows = [
        {"qubit": f"q{i}", "⟨Z⟩": float(z), "class": class_names[int(y)]}
        for sample, y in zip(expvals.tolist(), labels.tolist(), strict=True)
        for i, z in enumerate(sample)
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_boxplot(extent="min-max")
        .encode(
            x=alt.X("qubit:N", title=None),
            xOffset="class:N",
            y=alt.Y("⟨Z⟩:Q", scale=alt.Scale(domain=[-1, 1])),
            color=alt.Color("class:N", scale=alt.Scale(scheme="category10")),
        )
        .properties(height=220)
    )


def curve_chart(rows: list[dict], current: float):
    """Altair lines: val accuracy against depolarizing p per model; a rule marks the sliders' p."""
    import altair as alt
    import pandas as pd

    lines = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("p:Q", title="depolarizing p (one- and two-qubit gates alike)"),
            y=alt.Y("accuracy:Q", title="val accuracy", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "model:N", legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=420)
            ),
            tooltip=["model", "p", alt.Tooltip("accuracy:Q", format=".3f")],
        )
    )
    rule = alt.Chart(pd.DataFrame([{"p": current}])).mark_rule(strokeDash=[4, 4]).encode(x="p:Q")
    return (lines + rule).properties(
        height=260, autosize=alt.AutoSizeParams(type="fit-x", contains="padding")
    )
