"""The app's one UI helper module: settings and demo mode, session state, caches, the sidebar and shared
widgets. Pages import this and `qtl`; they never copy code from one another.

Heavy libraries (torch, torchvision, pennylane) are imported inside functions, so the first page paints
before they load.

Settings (environment variables win over `.streamlit/secrets.toml`'s `[qtl]` table):

| env                    | secrets `[qtl]` | meaning                                                  |
|------------------------|-----------------|----------------------------------------------------------|
| `QTL_DEMO=1`           | `demo = true`   | shared demo (read-only shipped models, own area, limits) |
| `QTL_DEMO_MAX_EPOCHS`  | `max_epochs`    | demo cap on epochs per run (default 5)                   |
| `QTL_DEMO_MAX_QUBITS`  | `max_qubits`    | demo cap on qubits (default 8)                           |
| `QTL_MODELS_DIR`       | -               | the checkpoint store (default `models/`)                 |
| `QTL_DATA_DIR`         | -               | the dataset root (default: qtl.data's search)            |
| `QTL_PRETRAINED=0`     | `pretrained = false` | start with random init instead of ImageNet weights  |
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from qtl.circuit import ENTANGLERS, ROTATIONS, CircuitConfig
from qtl.jobs import JobRunner

REPO = Path(__file__).resolve().parent
LOCAL_MAX_QUBITS = 16  # the form's range in local mode (the circuit itself allows up to 24)
QUICKSTART_VARIANTS = ("quantum", "linear", "finetuned")
SESSION_TTL_S = 24 * 3600  # per-session demo areas older than this are removed
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"]


# ---------------------------------------------------------------- settings and demo mode


@dataclass(frozen=True)
class Settings:
    """Where things live and what a visitor may do."""

    demo: bool  # shared demo mode
    models_dir: Path  # shipped / local checkpoints
    data_dir: str | None  # dataset root override; None lets qtl.data find or download it
    pretrained: bool  # default of the pretrained switch
    max_epochs: int  # per run
    max_qubits: int
    max_queued: int  # training requests that may wait while one runs (0: refuse)


def _secret(name: str, default):
    try:
        return st.secrets.get("qtl", {}).get(name, default)
    except FileNotFoundError:  # no secrets.toml: StreamlitSecretNotFoundError subclasses it
        return default


def _flag(env: str, secret: str, default: bool) -> bool:
    raw = os.environ.get(env)
    if raw is None:
        return bool(_secret(secret, default))
    return raw.strip().lower() in ("1", "true", "yes", "on")


def settings() -> Settings:
    """Read the settings (cheap; re-read each run so tests can change the environment)."""
    demo = _flag("QTL_DEMO", "demo", False)
    models = Path(os.environ.get("QTL_MODELS_DIR") or REPO / "models")
    return Settings(
        demo=demo,
        models_dir=models,
        data_dir=os.environ.get("QTL_DATA_DIR") or None,
        pretrained=_flag("QTL_PRETRAINED", "pretrained", True),
        max_epochs=int(os.environ.get("QTL_DEMO_MAX_EPOCHS") or _secret("max_epochs", 5)) if demo else 500,
        max_qubits=int(os.environ.get("QTL_DEMO_MAX_QUBITS") or _secret("max_qubits", 8))
        if demo
        else LOCAL_MAX_QUBITS,
        max_queued=0 if demo else 4,
    )


# ---------------------------------------------------------------- session state


def default_config() -> dict:
    """The active configuration a new session starts with (plain values; the sidebar shows it)."""
    return {
        "variants": ["quantum"],
        "backbone": "resnet18",
        "pretrained": settings().pretrained,
        "n_qubits": 4,
        "depth": 6,
        "entangler": "chain",
        "rotation": "ry",
        "q_delta": 0.01,
        "engine": "native",
        "diff_method": "best",
        "shots": 0,
        "epochs": 3,
        "seeds": "0",
        "override_recipe": False,
        "lr": 4e-4,
        "batch_size": 4,
        "augment": False,
    }


def init_session() -> None:
    """Initialise every shared session key once (page-local keys use a page prefix)."""
    st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])
    st.session_state.setdefault("config", default_config())
    st.session_state.setdefault("loaded", [])  # checkpoint paths (str), in load order
    st.session_state.setdefault("job_id", None)  # this session's latest training job
    st.session_state.setdefault("session_dir", None)  # demo: this visitor's private area


def circuit_config(config: dict | None = None) -> CircuitConfig:
    """The active (or given) configuration's circuit."""
    c = config or st.session_state["config"]
    return CircuitConfig(c["n_qubits"], c["depth"], c["entangler"], c["rotation"])


# ---------------------------------------------------------------- storage areas


def _cleanup_old_sessions(root: Path) -> None:
    for d in root.glob("session-*"):
        if d.is_dir() and time.time() - d.stat().st_mtime > SESSION_TTL_S:
            shutil.rmtree(d, ignore_errors=True)


def session_dir() -> Path:
    """Where this session writes checkpoints and uploads: models/ locally, a private temp dir in demo mode."""
    s = settings()
    if not s.demo:
        s.models_dir.mkdir(parents=True, exist_ok=True)
        return s.models_dir
    current = st.session_state.get("session_dir")
    if current and Path(current).is_dir():
        return Path(current)
    root = Path(tempfile.gettempdir()) / "qtl-sessions"
    root.mkdir(parents=True, exist_ok=True)
    _cleanup_old_sessions(root)
    path = Path(tempfile.mkdtemp(prefix=f"session-{st.session_state['session_id']}-", dir=root))
    st.session_state["session_dir"] = str(path)
    return path


def checkpoint_areas() -> list[tuple[str, Path, bool]]:
    """(label, directory, writable) for each place checkpoints are listed from."""
    s = settings()
    if not s.demo:
        return [("models/", s.models_dir, True)]
    return [("shipped (read-only)", s.models_dir, False), ("this session", session_dir(), True)]


def can_modify(path: str | Path) -> bool:
    """May this session delete or overwrite `path`? Always locally; in demo mode only in its own area."""
    if not settings().demo:
        return True
    return Path(path).resolve().is_relative_to(session_dir().resolve())


# ---------------------------------------------------------------- caches


@st.cache_resource(show_spinner=False)
def job_runner(max_queued: int) -> JobRunner:
    """The one training runner of this server process, shared by every session."""
    return JobRunner(max_queued=max_queued)


def runner() -> JobRunner:
    return job_runner(settings().max_queued)


@st.cache_resource(show_spinner="Loading checkpoint ...", max_entries=32)
def _load_checkpoint(path: str, mtime: float):
    """A loaded checkpoint (model in eval mode), shared read-only across sessions; keyed by file version."""
    from qtl.checkpoint import load_checkpoint

    return load_checkpoint(path)


def load_checkpoint(path: str | Path):
    """Load (cached) the checkpoint at `path`; raises qtl.checkpoint.CheckpointError on a bad file."""
    p = Path(path)
    return _load_checkpoint(str(p.resolve()), p.stat().st_mtime)


@st.cache_data(show_spinner=False, ttl=60)
def checkpoint_infos(directory: str, _version: float) -> list:
    """Metadata of the checkpoints in `directory`, newest first (re-read when the folder changes)."""
    from qtl.checkpoint import list_checkpoints

    return list_checkpoints(directory)


def list_area(directory: Path) -> list:
    if not directory.is_dir():
        return []
    version = max([directory.stat().st_mtime] + [f.stat().st_mtime for f in directory.iterdir()])
    return checkpoint_infos(str(directory), version)


@st.cache_data(show_spinner=False, ttl=120)
def weights_state(backbone: str):
    """Cached, downloadable or offline, for the backbone's ImageNet weights (never downloads; <= 2 s)."""
    from qtl.status import weights_state as state

    return state(backbone)


@st.cache_data(show_spinner=False, ttl=30)
def dataset_status(data_dir: str | None):
    """Found, downloadable or missing, for the configured dataset root."""
    from qtl.data import dataset_status as status

    return status(data_dir)


@st.cache_data(show_spinner=False, ttl=60)
def dataset_classes(data_dir: str | None) -> list[str]:
    """Class names of the dataset, or [] when it is not on disk yet (it may be downloaded later)."""
    from qtl.data import DatasetError, resolve_dataset, validate_dataset

    try:
        return validate_dataset(resolve_dataset(data_dir, download=False))
    except DatasetError:
        return []


# ---------------------------------------------------------------- loaded checkpoints


def loaded_models() -> dict[str, object]:
    """{label: LoadedModel} of this session's loaded checkpoints; vanished or broken files are dropped."""
    out = {}
    for path in list(st.session_state["loaded"]):
        try:
            loaded = load_checkpoint(path)
        except (OSError, ValueError) as exc:
            st.session_state["loaded"].remove(path)
            st.toast(f"Unloaded {Path(path).name}: {exc}")
            continue
        out[model_label(loaded.config.variant, path)] = loaded
    return out


def model_label(variant: str, path: str | Path) -> str:
    """How a loaded model is named on every page, e.g. "quantum · quantum-resnet18-q4-d6"."""
    return f"{variant} · {Path(path).stem}"


def load(path: str | Path) -> None:
    """Load a checkpoint into this session (validates it; raises CheckpointError / OSError)."""
    load_checkpoint(path)
    p = str(Path(path).resolve())
    if p not in st.session_state["loaded"]:
        st.session_state["loaded"].append(p)


def unload(path: str | Path) -> None:
    p = str(Path(path).resolve())
    if p in st.session_state["loaded"]:
        st.session_state["loaded"].remove(p)


# ---------------------------------------------------------------- sidebar


def sidebar() -> None:
    """The active configuration and the loaded checkpoints, on every page."""
    s = settings()
    c = st.session_state["config"]
    with st.sidebar:
        if s.demo:
            st.info(
                f"**Demo mode**: shipped checkpoints are read-only, your files stay in your session, "
                f"training is limited to {s.max_epochs} epochs, {s.max_qubits} qubits and one run at a time."
            )
        st.markdown("#### Active configuration")
        weights = "ImageNet" if c["pretrained"] else "random init"
        engine = c["engine"] if c["engine"] == "native" else f"{c['engine']} / {c['diff_method']}"
        st.markdown(
            f"- variants: {', '.join(c['variants'])}\n"
            f"- backbone: {c['backbone']} ({weights})\n"
            f"- circuit: {c['n_qubits']} qubits, depth {c['depth']}, {c['entangler']}, {c['rotation']}\n"
            f"- engine: {engine}\n"
            f"- epochs {c['epochs']}, seeds {c['seeds']}"
        )
        st.markdown("#### Loaded checkpoints")
        if not st.session_state["loaded"]:
            st.caption("None yet: train one, or load one on the Checkpoints page.")
        for path in st.session_state["loaded"]:
            st.markdown(f"- `{Path(path).name}`")
        job = runner().get(st.session_state["job_id"])
        if job is not None:
            snap = job.snapshot()
            if not snap.finished:
                st.progress(snap.progress, text=f"training: {snap.message}")


# ---------------------------------------------------------------- shared widgets


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
        bound(st.number_input, "depth", "depth", f"{prefix}_depth", min_value=0, max_value=20, step=1)
    with cols[2]:
        bound(st.selectbox, "entangler", "entangler", f"{prefix}_entangler", options=ENTANGLERS)
    with cols[3]:
        bound(st.selectbox, "rotation", "rotation", f"{prefix}_rotation", options=ROTATIONS)
    return circuit_config()


def read_images(files) -> list[tuple[str, object]]:
    """[(name, PIL image or error message)] for uploaded files; a bad file becomes its own message."""
    from qtl.data import ImageLoadError, load_image

    out = []
    for f in files:
        try:
            out.append((f.name, load_image(f.getvalue())))
        except ImageLoadError as exc:
            out.append((f.name, str(exc)))
    return out


def no_models_hint() -> None:
    """Tell a visitor how to get a model when none is loaded."""
    st.info(
        "No checkpoint is loaded. Train one on the **Train** page (or the one-click quick start on the "
        "**Overview**), or load one on the **Checkpoints** page (shipped checkpoints in `models/` are listed "
        "there)."
    )


# ---------------------------------------------------------------- training jobs


def submit_training(name: str, runs: list) -> bool:
    """Submit `runs` (from qtl.runs.plan_runs) as this session's job; shows why not when refused."""
    from qtl.jobs import RunnerBusyError
    from qtl.runs import training_work

    try:
        job = runner().submit(name, training_work(runs), owner=st.session_state["session_id"])
    except RunnerBusyError as exc:
        st.warning(f"Training request refused: {exc}.")
        return False
    st.session_state["job_id"] = job.id
    return True


def curves_chart(records: list[dict], metric: str):
    """Altair line chart of train and val `metric` ("loss" or "acc") per epoch, one colour per run."""
    import altair as alt
    import pandas as pd

    rows = [
        {"run": r["run"], "epoch": r["epoch"], "split": split, metric: r[f"{split}_{metric}"]}
        for r in records
        for split in ("train", "val")
    ]
    title = {"loss": "cross-entropy loss", "acc": "accuracy"}[metric]
    return (
        alt.Chart(pd.DataFrame(rows), title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N"),
            strokeDash=alt.StrokeDash("split:N", sort=["val", "train"]),
            tooltip=["run", "split", "epoch", alt.Tooltip(f"{metric}:Q", format=".3f")],
        )
        .properties(height=260)
    )


def _render_job(job_id: int) -> None:
    job = runner().get(job_id)
    if job is None:
        return
    snap = job.snapshot()
    st.markdown(f"**{snap.name}**: {snap.state}, {snap.elapsed:.0f} s")
    st.progress(snap.progress, text=snap.message)
    if not snap.finished:
        position = [j.id for j in runner().active()].index(snap.id) if snap.state == "queued" else 0
        if position:
            st.caption(f"Queued: {position} job(s) ahead of this one.")
        if st.button("Cancel", key=f"cancel_{snap.id}", icon=":material/stop:"):
            job.cancel()
            st.caption("Cancelling after the current batch ...")
    if snap.records:
        left, right = st.columns(2)
        left.altair_chart(curves_chart(snap.records, "loss"), width="stretch")
        right.altair_chart(curves_chart(snap.records, "acc"), width="stretch")
    if snap.state == "failed":
        st.error(f"Training failed: {snap.error}")
    if snap.finished:
        _finish(snap)


def _finish(snap) -> None:
    """Summary of a finished job. Once per job: load its checkpoints, then rerun the app."""
    import pandas as pd

    saved = [s for s in snap.result or [] if s["checkpoint"]]
    if snap.state != "failed":
        verb = "Cancelled" if snap.state == "cancelled" else "Finished"
        st.success(f"{verb}: {len(saved)} checkpoint(s) saved to `{session_dir()}` and loaded.")
    if snap.result and snap.state != "failed":
        table = pd.DataFrame(snap.result)[
            ["label", "best_epoch", "val_acc", "val_loss", "epochs_done", "train_time_s", "checkpoint"]
        ]
        st.dataframe(table, hide_index=True, width="stretch")
    if st.session_state.get("job_done") != snap.id:
        st.session_state["job_done"] = snap.id
        for summary in saved:
            load(summary["checkpoint"])
        st.rerun(scope="app")


def job_panel() -> None:
    """This session's training job: live progress, curves per epoch, Cancel, then a summary.

    Polls the background job every second in a fragment while it runs, so the rest of the page (and
    other pages and sessions) stay responsive.
    """
    job = runner().get(st.session_state["job_id"])
    if job is None:
        return
    running = not job.snapshot().finished
    st.fragment(_render_job, run_every=1.0 if running else None)(job.id)


def quickstart_epochs() -> dict[str, int]:
    """Epochs per quick-start variant, within the demo cap."""
    cap = settings().max_epochs
    return {v: min(e, cap) for v, e in {"quantum": 10, "linear": 10, "finetuned": 2}.items()}


def model_config(variant: str | None = None):
    """A qtl ModelConfig from the active configuration (class names come from the dataset in fit)."""
    from qtl.variants import ModelConfig

    c = st.session_state["config"]
    classes = dataset_classes(settings().data_dir)
    return ModelConfig(
        variant=variant or c["variants"][0],
        **({"class_names": tuple(classes)} if classes else {}),
        backbone=c["backbone"],
        pretrained=c["pretrained"],
        circuit=circuit_config(),
        engine=c["engine"],
        diff_method=c["diff_method"],
        shots=c["shots"] or None,
        q_delta=c["q_delta"],
    )


def quickstart_runs() -> list:
    """The quick start's runs: quantum, linear and finetuned, seed 0, into this session's area."""
    from qtl.runs import plan_runs

    runs = []
    for variant, epochs in quickstart_epochs().items():
        runs += plan_runs(
            [variant], model_config(), [0], session_dir(), epochs=epochs, data=settings().data_dir
        )
    return runs
