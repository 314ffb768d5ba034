"""Per-session state: the keys every page may use, and the active configuration they share.

Shared keys: session_id, config (the active configuration, plain values), loaded (paths of this session's
loaded checkpoints), load_errors (file name -> why it could not be loaded), job_id (its latest training
job), session_dir (demo: its private area), data_dir (the active dataset's root; None: the configured
default). Page-local keys use a page prefix.
"""

from __future__ import annotations

import os
import sys
import uuid

import streamlit as st

from qtl.config import ModelConfig, recipe
from qtl.quantum.circuit import CircuitConfig
from ui.checkpoint_dirs import autoload_checkpoints
from ui.settings import settings

#: Epochs of a first run from the Train form: a short run to try things (the recipes' are 25-30).
FORM_EPOCHS = 3


def default_config() -> dict:
    """The active configuration a new session starts with (plain values; the sidebar shows it): the
    library's defaults (`qtl.config.ModelConfig()`, the default variant's recipe), a short run."""
    mc = ModelConfig()
    tc = recipe(mc.variant)
    return {
        "variants": [mc.variant],
        "backbone": mc.backbone,
        "pretrained": settings().pretrained,
        "n_qubits": mc.circuit.n_qubits,
        "depth": mc.circuit.depth,
        "entangler": mc.circuit.entangler,
        "rotation": mc.circuit.rotation,
        "reupload": mc.circuit.reupload,  # embed the inputs in every block (data re-uploading)
        "q_delta": mc.q_delta,
        "engine": mc.engine,
        "diff_method": mc.diff_method,
        "shots": mc.shots or 0,  # the form's 0: exact expectation values (None)
        "max_bond": mc.max_bond or 0,  # the form's 0: the MPS engine simulates exactly (None)
        "epochs": FORM_EPOCHS,
        "seeds": str(tc.seed),
        "override_recipe": False,
        "lr": tc.lr,
        "batch_size": tc.batch_size,
        "augment": tc.augment,
        "split": tc.regime.split,  # "kfold": held-out test accuracy from stratified folds (fold = seed % 5)
    }


def init_session() -> None:
    """Initialise every shared session key once (page-local keys use a page prefix)."""
    st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])
    st.session_state.setdefault("config", default_config())
    st.session_state.setdefault(
        "loaded", autoload_checkpoints() if settings().autoload else []
    )  # paths (str)
    st.session_state.setdefault("load_errors", {})  # file name -> why it could not be loaded
    st.session_state.setdefault("job_id", None)  # this session's latest training job
    st.session_state.setdefault("session_dir", None)  # demo: this visitor's private area
    st.session_state.setdefault("data_dir", None)  # the active dataset; None: settings().data_dir
    st.session_state.setdefault("backbone_notice", None)  # why the active backbone is the fallback
    if "backbone_resolved" not in st.session_state:  # once, before any page: every page agrees
        resolve_weights()
        st.session_state["backbone_resolved"] = True
    s, c = settings(), st.session_state["config"]
    c["epochs"], c["n_qubits"] = min(c["epochs"], s.max_epochs), min(c["n_qubits"], s.max_qubits)
    if s.torch_threads:
        _set_torch_threads(s.torch_threads)


KEPT_CHOICES = (
    "circ_model", "circ_samples", "cls_explain", "cls_method", "cls_samples", "cmp_eval",
    "data_pick", "data_class", "data_ratio", "data_seed",
    "lab_engines", "lab_methods", "lab_qubits", "lab_depth", "lab_batch", "lab_cap",
    "exp_db", "exp_pick", "exp_effect",
    "hw_model", "hw_backend", "hw_shots", "hw_samples", "hw_readout", "hw_zne",
    "noise_models", "noise_backend", "noise_backend_shots",
    "noise_dep1", "noise_dep2", "noise_amp", "noise_phase", "noise_readout", "noise_shots",
)  # fmt: skip
"""The pages' own choices (a picked model, a slider) that a visit to another page keeps: Streamlit drops
the state of widgets a run does not draw. Not kept: widgets bound to the configuration (`widgets.bound`
restores them), the sweep form (submitted as a whole), and a confirmation to spend a device's time
(`hw_confirm`), which each visit asks afresh. tests/test_app.py checks the list against the pages."""


def keep_choices() -> None:
    """Keep `KEPT_CHOICES` through this run, whatever page it drew: Streamlit drops, at the end of a run,
    the state of widgets the run did not draw; assigning a key to itself makes it state the script set,
    which it keeps (Streamlit's documented way). Called after the page (also when it stopped with
    st.rerun), and only for the widgets it did not draw: assigned before the page, a widget drawn in the
    same run with a default value logged "The widget with key ... was created with a default value but
    also had its value set via the Session State API" (data_ratio on the Data page)."""
    from streamlit.errors import StreamlitAPIException

    for key in KEPT_CHOICES:
        if key in st.session_state:
            try:
                st.session_state[key] = st.session_state[key]
            except StreamlitAPIException:  # drawn in this run: Streamlit keeps it
                pass


def _set_torch_threads(n: int) -> None:
    """A shared server answers many requests at once: one intra-op thread per request avoids
    oversubscribing the cores (on 2 busy cores, 2 threads made a resnet18 pass ~5x slower than 1).
    Before torch is imported this only sets OMP_NUM_THREADS, so the first page does not wait for torch."""
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def resolve_weights():
    """The active backbone's `qtl.models.weights.WeightsAvailability`. Where its ImageNet weights cannot be
    had,
    the session switches to the bundled pretrained efficientnet_lite0 (random init stays an explicit
    choice) and keeps a notice for the sidebar, so every page names the same backbone and weights."""
    from ui import cache

    c = st.session_state["config"]
    try:
        choice = cache.backbone_choice(c["backbone"], c["pretrained"])
    except ValueError as exc:  # a name no form lets through (`check_backbone`): never a page's traceback
        default = ModelConfig().backbone
        st.warning(f"Cannot use the backbone {c['backbone']}: {exc}; back to {default}.")
        c["backbone"] = default
        st.session_state.pop("train_backbone", None)
        choice = cache.backbone_choice(c["backbone"], c["pretrained"])
    if choice.notice:
        c["backbone"], c["pretrained"] = choice.backbone, choice.pretrained
        st.session_state["backbone_notice"] = choice.notice
        for key in ("train_backbone", "train_pretrained", "ov_pretrained"):  # the widgets showing them
            st.session_state.pop(key, None)
    return cache.weights_availability(c["backbone"])


def refuse_backbone(key: str) -> str | None:
    """Why the backbone a form's widget `key` holds (typed in, submitted) cannot be used, else None. Call it
    before the widget is drawn: a refused name never reaches the configuration (a timm model timm does not
    know failed every page's status check, and its training job), and the widget shows the backbone
    before it again."""
    from qtl.models.weights import check_backbone

    c = st.session_state["config"]
    typed = st.session_state.get(key)
    if typed is None or typed == c["backbone"]:
        return None
    try:
        check_backbone(typed)
    except ValueError as exc:
        st.session_state[key] = c["backbone"]
        return str(exc)
    return None


def backbone_label(config: dict | None = None) -> str:
    """The active (or given) backbone and its weights, e.g. "efficientnet_lite0 (ImageNet, bundled)"."""
    from qtl.models.weights import describe_backbone

    c = config or st.session_state["config"]
    return describe_backbone(c["backbone"], c["pretrained"])


def active_data_dir() -> str | None:
    """The root of the dataset this session trains, classifies and evaluates on (None: the default one,
    $QTL_DATA_DIR or hymenoptera). A chosen dataset that has been deleted falls back to the default."""
    chosen = st.session_state.get("data_dir")
    if chosen and not os.path.isdir(chosen):
        st.session_state["data_dir"] = chosen = None
    return chosen or settings().data_dir


def circuit_config(config: dict | None = None) -> CircuitConfig:
    """The active (or given) configuration's circuit."""
    c = config or st.session_state["config"]
    return CircuitConfig(
        c["n_qubits"], c["depth"], c["entangler"], c["rotation"], reupload=c.get("reupload", False)
    )
