"""Training runs from the active configuration: the Train form's and the quick start's (qtl.experiments.runs
plans them; submit them with `ui.server_jobs.submit_training`), and the live gradient-norm panel."""

from __future__ import annotations

import streamlit as st

from ui.cache import dataset_classes
from ui.checkpoint_dirs import session_dir
from ui.session import active_data_dir, circuit_config
from ui.settings import settings

QUICKSTART_EPOCHS = {"quantum": 10, "linear": 10, "finetuned": 2}  # before the demo cap


def gradient_panel(records: list[dict]) -> None:
    """The running job's gradient norms per parameter group, and the latest vanishing-circuit warning."""
    from ui import charts

    chart = charts.grad_norms_chart(records)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    warnings = [r["warning"] for r in records if r.get("warning")]
    if warnings:
        st.warning(warnings[-1])


def quickstart_epochs() -> dict[str, int]:
    """Epochs per quick-start variant, within the demo cap."""
    cap = settings().max_epochs
    return {v: min(e, cap) for v, e in QUICKSTART_EPOCHS.items()}


def model_config(variant: str | None = None):
    """A qtl ModelConfig from the active configuration (class names come from the dataset in fit)."""
    from qtl.config import ModelConfig

    c = st.session_state["config"]
    classes = dataset_classes(active_data_dir())
    return ModelConfig(
        variant=variant or c["variants"][0],
        **({"class_names": tuple(classes)} if classes else {}),
        backbone=c["backbone"],
        pretrained=c["pretrained"],
        circuit=circuit_config(),
        engine=c["engine"],
        diff_method=c["diff_method"],
        shots=c["shots"] or None,
        max_bond=c.get("max_bond") or None,
        q_delta=c["q_delta"],
    )


def quickstart_runs() -> list:
    """The quick start's runs: quantum, linear and finetuned, seed 0, into this session's area.

    Raises ValueError where the active circuit cannot run (as the Train form refuses it)."""
    from qtl.config import MachineConfig
    from qtl.experiments.runs import plan_runs

    machine = MachineConfig(data_dir=active_data_dir())
    runs = []
    for variant, epochs in quickstart_epochs().items():
        mc = checked(model_config(variant))
        runs += plan_runs([variant], mc, [0], session_dir(), epochs=epochs, machine=machine)
    return runs


def checked(mc):
    """`mc`, its circuit's engine settings checked where it has a circuit: ValueError now, not a failed
    job in the background."""
    from qtl.quantum.engines import make_engine

    if mc.is_quantum:
        make_engine(mc.circuit, mc.engine, **mc.engine_options())
    return mc


def planned_runs() -> list:
    """The Train form's runs from the active configuration, checked against the demo limits.

    Raises ValueError for anything invalid (bad seeds, too many runs, an impossible engine setting).
    """
    from qtl.config import DataRegime, MachineConfig
    from qtl.experiments.runs import parse_seeds, plan_runs

    s, c = settings(), st.session_state["config"]
    if not c["variants"]:
        raise ValueError("choose at least one variant")
    seeds = parse_seeds(c["seeds"])
    n_runs = len(c["variants"]) * len(seeds)
    if n_runs > s.max_runs:
        raise ValueError(f"{n_runs} runs requested; at most {s.max_runs} per request here")
    if c["epochs"] > s.max_epochs or c["n_qubits"] > s.max_qubits:
        raise ValueError(f"at most {s.max_epochs} epochs and {s.max_qubits} qubits here")
    mc = model_config()
    for variant in c["variants"]:
        checked(model_config(variant))
    overrides = {"lr": c["lr"], "batch_size": int(c["batch_size"]), "augment": c["augment"]}
    overrides = overrides if c["override_recipe"] else {}
    if c.get("split", "given") != "given":  # held-out test folds: the cached features of every image
        overrides.update(regime=DataRegime(split=c["split"]), augment=False)
    return plan_runs(
        c["variants"],
        mc,
        seeds,
        session_dir(),
        epochs=int(c["epochs"]),
        overrides=overrides or None,
        machine=MachineConfig(data_dir=active_data_dir()),
    )
