"""Differentiation lab: time per training step and gradient agreement, per engine and diff method."""

import streamlit as st

from qtl.analysis.difflab import REFERENCE, WIDE_REFERENCE, LabCase, run_lab
from qtl.config import DIFF_METHODS, ENGINES, MPS, NATIVE
from qtl.quantum.circuit import MAX_DEPTH, MAX_QUBITS, STATEVECTOR_MAX_QUBITS, CircuitConfig
from ui import charts, tables
from ui.settings import settings

st.title("Differentiation lab")
st.markdown(
    "Times one training step (forward, backward and Adam update of the dressed quantum circuit on random "
    f"resnet18-sized features) and compares its gradients with a reference ({REFERENCE}, exact to rounding; "
    f"above {STATEVECTOR_MAX_QUBITS} qubits, {WIDE_REFERENCE}). Pick `mps` for wide circuits: up to "
    f"{MAX_QUBITS} qubits."
)
s = settings()
with st.form("lab_form"):
    left, right = st.columns(2)
    engines = left.multiselect("engines", ENGINES, default=["native", "default.qubit"], key="lab_engines")
    methods = right.multiselect(
        "diff methods (PennyLane engines)", DIFF_METHODS, default=["backprop", "adjoint"], key="lab_methods"
    )
    cols = st.columns(4)
    qubits = cols[0].multiselect(
        "qubits",
        list(range(1, s.max_qubits + 1)),
        default=[q for q in (2, 4, 6, 8) if q <= s.max_qubits],
        key="lab_qubits",
    )
    depth = cols[1].number_input("depth", 0, MAX_DEPTH, CircuitConfig().depth, key="lab_depth")
    batch = cols[2].number_input("batch", 1, 512, 32, key="lab_batch")
    cap = cols[3].number_input("time cap per step (s)", 0.1, 30.0, 2.0, key="lab_cap")
    run = st.form_submit_button("Run", type="primary", icon=":material/speed:")

if run:
    cases = [
        LabCase(engine, method, q, int(depth), int(batch))
        for engine in engines
        for method in ([None] if engine in (NATIVE, MPS) else methods)
        for q in qubits
    ]
    if not cases:
        st.warning("Pick at least one engine (and a diff method for PennyLane engines) and one qubit count.")
    else:
        with st.spinner(f"Timing {len(cases)} case(s) ..."):
            st.session_state["lab_results"] = run_lab(cases, repeats=3, cap_s=float(cap))

results = st.session_state.get("lab_results")
if results:
    st.altair_chart(charts.lab_chart(results), width="stretch")
    columns = {name: st.column_config.NumberColumn(**how) for name, how in tables.LAB_COLUMNS.items()}
    st.dataframe(tables.lab_table(results), hide_index=True, width="stretch", column_config=columns)
