"""Circuit: the drawn circuit, parameter counts, trained weights and one image's angles and <Z>."""

from dataclasses import replace

import streamlit as st

from qtl.analysis.inference import quantum_trace
from qtl.models.heads import DressedQuantumCircuit, count_parameters
from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS, circuit_summary
from qtl.quantum.engines.mps import bond_profile
from ui import cache, charts, session_models, widgets

st.title("Circuit")
NONE = "none: the active configuration"
models = {k: m for k, m in session_models.loaded_models().items() if m.model_config.is_quantum}
choice = st.selectbox("Quantum checkpoint", [NONE, *models], key="circ_model")
model = models.get(choice)

if model is None:
    config = widgets.circuit_widgets("circ")
    c = st.session_state["config"]
    weights, backbone, n_classes = None, c["backbone"], 2
    in_features, backbone_params = cache.backbone_size(backbone, c["pretrained"])
else:
    config = model.model_config.circuit
    weights = model.model.head.q_params.detach().cpu()
    backbone, n_classes = model.model_config.backbone, len(model.class_names)
    in_features = model.model.in_features
    backbone_params = sum(p.numel() for p in model.model.backbone.parameters())
    st.caption(
        f"{choice}: {config.n_qubits} qubits, depth {config.depth}, {config.entangler}, {config.rotation}"
    )

DRAW_MAX_QUBITS = 16  # wider circuits are summarised: one block on a few wires, and the MPS bonds
SAMPLE_WIRES = 8
if config.n_qubits <= DRAW_MAX_QUBITS:
    st.image(
        cache.circuit_png(config, None if weights is None else tuple(weights.flatten().tolist())),
        width="stretch",
    )
else:
    sample = replace(config, n_qubits=SAMPLE_WIRES, depth=min(config.depth, 1))
    st.markdown(
        f"**{config.n_qubits} wires are too many to draw legibly.** Below: the embedding and one "
        f"[entangler, rotation] block on {SAMPLE_WIRES} wires; the full circuit repeats the block "
        f"{config.depth} time(s) across all {config.n_qubits} wires."
    )
    st.image(cache.circuit_png(sample), width="stretch")
profile = bond_profile(config)
if profile:
    exact = 2 ** max(profile)
    engines = "the MPS engine" if config.n_qubits > STATEVECTOR_MAX_QUBITS else "the MPS or native engine"
    st.altair_chart(
        charts.bond_chart(profile, f"Exact MPS bond per cut: at most {exact} ({engines})"), width="stretch"
    )

# the counts do not depend on the engine; the MPS engine at bond 1 builds at every width
head = DressedQuantumCircuit(in_features, n_classes, config, engine="mps", max_bond=1)
counts = count_parameters(head)
summary = circuit_summary(config)
cols = st.columns(4)
cols[0].metric("classical parameters (head)", f"{counts['classical']:,}")
cols[1].metric("quantum parameters", f"{counts['quantum']:,}")
cols[2].metric(f"{backbone} parameters", f"{backbone_params:,}")
cols[3].metric("gates / circuit depth", f"{summary['n_gates']} / {summary['circuit_depth']}")
st.caption(
    f"Head: Linear({in_features} → {config.n_qubits}), tanh·π/2, the circuit, Linear({config.n_qubits} → "
    f"{n_classes}). Gates: " + ", ".join(f"{k} × {v}" for k, v in summary["gate_counts"].items())
)

if model is not None:
    st.subheader("Trained circuit weights")
    if weights.numel():
        st.altair_chart(charts.weights_chart(weights), width="stretch")
    else:
        st.caption("Depth 0: the circuit has no trained angles, only its embedding of the inputs.")
    st.subheader("Input angles and ⟨Z⟩ for an image")
    images = widgets.image_inputs("circ", multiple=False)
    for name, image in images:
        if isinstance(image, str):
            st.error(image)
            continue
        trace = quantum_trace(model, image)
        left, right = st.columns([1, 3])
        left.image(widgets.preview(image), caption=name, width="stretch")
        probs = ", ".join(
            f"{c} {p:.2f}" for c, p in zip(trace.class_names, trace.probs.tolist(), strict=True)
        )
        left.markdown(f"**{trace.class_names[int(trace.probs.argmax())]}** ({probs})")
        series = {"input angle (rad)": trace.angles.tolist(), "⟨Z⟩": trace.expvals.tolist()}
        right.altair_chart(charts.qubit_chart(series, "per qubit"), width="stretch")
elif not session_models.loaded_models():
    st.info(
        "Load a `quantum` or `hybrid` checkpoint to see its trained weights and an image's ⟨Z⟩ per qubit."
    )
