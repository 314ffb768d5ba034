"""Overview: what quantum transfer learning is, status checks, and a one-click quick start."""

import streamlit as st

from qtl.models.weights import weights_label
from qtl.utils.words import count, error_line
from ui import cache, datasets, server_jobs, session, training, widgets
from ui.settings import settings

st.title("Quantum transfer learning explorer")
st.markdown(
    "**Transfer learning** reuses a network trained on ImageNet as a feature extractor. **Quantum** transfer "
    "learning (Mari et al. 2019) replaces its last layer by a *dressed quantum circuit*: a classical layer "
    "squeezes the features into a few angles, a variational circuit of qubits (simulated here) processes "
    "them, and a second classical layer reads the per-qubit ⟨Z⟩ out into class scores. Everything is trained "
    "end to end by automatic differentiation."
)

c = st.session_state["config"]
w = session.resolve_weights()  # first: the drawing below names the backbone and its weights
n = c["n_qubits"]
names = cache.dataset_classes(session.active_data_dir())
if not names:  # no dataset yet: the box says what will be there
    classes = "class probabilities"
else:
    classes = " / ".join(names) if len(names) <= 4 else f"{len(names)} classes"
st.graphviz_chart(
    f"""digraph {{
    rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f3f1ff", fontname="sans-serif"];
    img [label="image\\n3×224×224", fillcolor="#ffffff"];
    bb [label="{c["backbone"]}\\n({weights_label(c["backbone"], c["pretrained"])}, frozen)"];
    pre [label="Linear → {n}\\ntanh·π/2"];
    q [label="variational circuit\\n{n} qubits, depth {c["depth"]}\\n⟨Z⟩ per qubit", fillcolor="#dcd6ff"];
    post [label="Linear {n} → classes"];
    out [label="{classes}", fillcolor="#ffffff"];
    img -> bb -> pre -> q -> post -> out;
    subgraph cluster_head {{ label="dressed quantum circuit"; style=dashed; pre; q; post; }}
    }}""",
    width="stretch",
)

st.subheader("Status")
s = settings()
left, right = st.columns(2)
with left:
    data = cache.dataset_status(session.active_data_dir())
    if datasets.download_failed(data):  # in this session: no longer "downloadable"
        st.warning(f"**Dataset not downloaded**: {datasets.status_words(data)}; {datasets.what_to_do()}.")
    else:
        show = {"found": st.success, "downloadable": st.info, "missing": st.error}[data.state]
        show(f"**Dataset {data.state}**: {data.message}")
with right:
    if st.session_state.get("backbone_notice"):
        st.info(f"**Using the bundled pretrained backbone**: {st.session_state['backbone_notice']}")
    elif w.state == "cached":
        st.success(f"**ImageNet weights cached**: {w.message}")
    elif w.state == "downloadable":
        st.info(f"**ImageNet weights downloadable**: {w.message}")
    else:
        st.warning(f"**ImageNet weights offline**: {w.message}")
widgets.bound(
    st.toggle,
    "Use ImageNet weights (off: **random init**, a randomly initialised backbone: it runs, but its features "
    "carry no ImageNet knowledge, so accuracy stays near chance)",
    "pretrained",
    "ov_pretrained",
    disabled=w.state == "offline",
)

st.subheader("Quick start")
plan = ", ".join(f"`{v}` ({count(e, 'epoch')})" for v, e in training.quickstart_epochs().items())
st.markdown(
    f"Trains {plan} on the dataset above with the active backbone and circuit, then loads them for the "
    "**Classify** and **Compare** pages. The frozen variants train on cached features and finish in seconds; "
    "`finetuned` trains the whole backbone and takes longer."
)
if st.button(
    "Train quantum, linear and finetuned", type="primary", icon=":material/play_arrow:", key="ov_quick"
):
    try:
        server_jobs.submit_training("quick start", training.quickstart_runs())
    except ValueError as exc:  # the active configuration, as a refused Train form left it
        st.error(f"Cannot start the quick start: {error_line(exc)} (change it on the Train page)")
server_jobs.job_panel()
