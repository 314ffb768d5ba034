"""The app's one UI helper module: settings and demo mode, session state, caches, the sidebar and shared
widgets. Pages import this and `qtl`; they never copy code from one another.

Heavy libraries (torch, torchvision, pennylane) are imported inside functions, so the first page paints
before they load.

Settings (environment variables win over `.streamlit/secrets.toml`'s `[qtl]` table):

| env                   | secrets `[qtl]`      | meaning                                                |
|-----------------------|----------------------|--------------------------------------------------------|
| `QTL_DEMO=1`          | `demo = true`        | shared demo: read-only models/, own area, limits       |
| `QTL_DEMO_MAX_EPOCHS` | `max_epochs`         | demo cap on epochs per run (default 5)                 |
| `QTL_DEMO_MAX_QUBITS` | `max_qubits`         | demo cap on qubits (default 8)                         |
| `QTL_AUTOLOAD=1`      | `autoload = true`    | new sessions load models/'s checkpoints (demo default) |
| `QTL_PRETRAINED=0`    | `pretrained = false` | start with random init instead of ImageNet weights     |
| `QTL_TORCH_THREADS`   | `torch_threads`      | torch intra-op threads (demo default 1, else torch's)  |
| `QTL_MODELS_DIR`      | -                    | the checkpoint store (default `models/`)               |
| `QTL_DATA_DIR`        | -                    | the dataset root (default: qtl.data's search)          |
"""

from __future__ import annotations

import os
import shutil
import sys
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
    max_runs: int  # (variant, seed) runs per training request
    autoload: bool  # new sessions start with models/'s checkpoints loaded
    torch_threads: int | None  # intra-op threads; None keeps torch's default (one per core)


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


def _int_setting(env: str, secret: str, default: int | None) -> int | None:
    raw = os.environ.get(env) or _secret(secret, None)
    return default if raw in (None, "") else int(raw)


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
        max_runs=6 if demo else 100,
        autoload=_flag("QTL_AUTOLOAD", "autoload", demo),
        torch_threads=_int_setting("QTL_TORCH_THREADS", "torch_threads", 1 if demo else None),
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
    st.session_state.setdefault("loaded", shipped_checkpoints() if settings().autoload else [])  # paths (str)
    st.session_state.setdefault("job_id", None)  # this session's latest training job
    st.session_state.setdefault("session_dir", None)  # demo: this visitor's private area
    s, c = settings(), st.session_state["config"]
    c["epochs"], c["n_qubits"] = min(c["epochs"], s.max_epochs), min(c["n_qubits"], s.max_qubits)
    if s.torch_threads:
        _set_torch_threads(s.torch_threads)


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


AUTOLOAD_MAX = 6


def shipped_checkpoints() -> list[str]:
    """The newest checkpoint files in models/ (at most AUTOLOAD_MAX), by name only: nothing is read here,
    so the first page paints at once; a bad file is dropped when a page loads it."""
    directory = settings().models_dir
    files = (
        sorted(directory.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        if directory.is_dir()
        else []
    )
    return [str(p.resolve()) for p in files[:AUTOLOAD_MAX]]


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
def checkpoint_infos(directory: str, version: float) -> list:
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
        except (OSError, ValueError, RuntimeError) as exc:  # gone, invalid, or weights unavailable
            st.session_state["loaded"].remove(path)
            st.toast(f"Unloaded {Path(path).name}: {exc}")
            continue
        out[model_label(loaded.variant, path)] = loaded
    return out


def model_label(variant: str, path: str | Path) -> str:
    """How a loaded model is named on every page: its file stem, prefixed by the variant unless the stem
    already starts with it ("quantum-resnet18-random-q4d6-s0-...", "linear · my-upload")."""
    stem = Path(path).stem
    return stem if stem.startswith(f"{variant}-") else f"{variant} · {stem}"


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
                f"training is limited to at most {s.max_epochs} epoch(s) per run, {s.max_qubits} qubits, and "
                "one training request at a time on this server."
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
            reason = str(exc.__cause__ or exc)
            if "cannot identify image file" in reason:  # PIL's message ends in the stream's repr
                reason = f"not a recognised image format (accepted: {', '.join(IMAGE_TYPES)})"
            out.append((f.name, f"cannot decode {f.name}: {reason}"))
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
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "run:N", legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=420)
            ),
            strokeDash=alt.StrokeDash("split:N", sort=["val", "train"], legend=alt.Legend(orient="top")),
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
            try:
                load(summary["checkpoint"])
            except (OSError, ValueError, RuntimeError) as exc:
                st.error(f"Saved, but could not load {Path(summary['checkpoint']).name}: {exc}")
                return
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


ENGINES = ("native", "default.qubit", "lightning.qubit")
DIFF_METHODS = ("best", "backprop", "adjoint", "parameter-shift", "finite-diff")


def parse_seeds(text: str) -> list[int]:
    """ "0, 1,2" -> [0, 1, 2]; ValueError naming the bad item."""
    seeds = []
    for item in text.replace(";", ",").split(","):
        if item.strip():
            try:
                seeds.append(int(item))
            except ValueError:
                raise ValueError(f"seed {item.strip()!r} is not an integer") from None
    if not seeds:
        raise ValueError("give at least one seed")
    return seeds


def planned_runs() -> list:
    """The Train form's runs from the active configuration, checked against the demo limits.

    Raises ValueError for anything invalid (bad seeds, too many runs, an impossible engine setting).
    """
    from qtl.engines import make_engine
    from qtl.runs import plan_runs

    s, c = settings(), st.session_state["config"]
    seeds = parse_seeds(c["seeds"])
    n_runs = len(c["variants"]) * len(seeds)
    if n_runs > s.max_runs:
        raise ValueError(f"{n_runs} runs requested; at most {s.max_runs} per request here")
    if c["epochs"] > s.max_epochs or c["n_qubits"] > s.max_qubits:
        raise ValueError(f"at most {s.max_epochs} epochs and {s.max_qubits} qubits here")
    mc = model_config()
    if any(v in ("quantum", "hybrid") for v in c["variants"]):
        make_engine(mc.circuit, mc.engine, **mc.engine_options())  # fail now, not in the background
    overrides = {"lr": c["lr"], "batch_size": int(c["batch_size"]), "augment": c["augment"]}
    return plan_runs(
        c["variants"],
        mc,
        seeds,
        session_dir(),
        epochs=int(c["epochs"]),
        overrides=overrides if c["override_recipe"] else None,
        data=s.data_dir,
    )


def checkpoint_table(infos: list, loaded: set[str]):
    """A dataframe of checkpoint metadata, one row per CheckpointInfo."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "file": i.path.name,
                "loaded": str(i.path.resolve()) in loaded,
                "variant": i.variant,
                "backbone": i.backbone,
                "weights": i.weights,
                "qubits": i.n_qubits,
                "depth": i.depth,
                "val acc": i.val_acc,
                "epochs": i.epochs,
                "created": i.created[:19].replace("T", " "),
                "size": f"{i.size_bytes / 1024:.0f} KB"
                if i.size_bytes < 2**20
                else f"{i.size_bytes / 2**20:.1f} MB",
            }
            for i in infos
        ]
    )


# ---------------------------------------------------------------- circuit, images and charts


@st.cache_resource(show_spinner="Drawing the circuit ...", max_entries=16)
def circuit_figure(config: CircuitConfig, weights: tuple | None = None):
    """Matplotlib figure of `config` (optionally with trained weights), shared and never mutated."""
    import torch

    from qtl.draw import draw_figure

    w = None if weights is None else torch.tensor(weights).reshape(config.weight_shape)
    return draw_figure(config, weights=w)


@st.cache_resource(show_spinner=False)
def backbone_size(name: str) -> tuple[int, int]:
    """(feature size F, parameter count) of a backbone, from a random-init build (no download)."""
    from qtl.backbones import load_backbone

    module, features = load_backbone(name, pretrained=False)
    return features, sum(p.numel() for p in module.parameters())


def head_counts(config: CircuitConfig, in_features: int, n_classes: int) -> dict[str, int]:
    """Classical and quantum parameter counts of the dressed quantum circuit for these sizes."""
    from qtl.heads import DressedQuantumCircuit, count_parameters

    return count_parameters(DressedQuantumCircuit(in_features, n_classes, config))


@st.cache_data(show_spinner=False, ttl=300)
def val_samples(data_dir: str | None) -> list[tuple[str, str]]:
    """[(path, class name)] of the dataset's val split; [] when there is no dataset on disk."""
    from qtl.data import DatasetError, list_images, resolve_dataset, validate_dataset

    try:
        root = resolve_dataset(data_dir, download=False)
        classes = validate_dataset(root)
    except DatasetError:
        return []
    return [(str(p), classes[i]) for p, i in list_images(root, "val", classes)]


def image_inputs(prefix: str, multiple: bool = True) -> list[tuple[str, object]]:
    """Uploaded images and/or picked val samples: [(name, PIL image or error message)]."""
    from qtl.data import ImageLoadError, load_image

    files = st.file_uploader(
        "Upload image(s)" if multiple else "Upload an image",
        type=IMAGE_TYPES,
        accept_multiple_files=multiple,
        key=f"{prefix}_upload",
    )
    files = files if multiple else [files] if files else []
    samples = val_samples(settings().data_dir)
    picked = st.multiselect(
        "or pick val samples",
        [p for p, _ in samples],
        format_func=lambda p: f"{Path(p).parent.name}/{Path(p).name}",
        key=f"{prefix}_samples",
        max_selections=None if multiple else 1,
        placeholder="val images" if samples else "no dataset on disk",
    )
    out = read_images(files or [])
    for path in picked:
        try:
            out.append((f"{Path(path).parent.name}/{Path(path).name}", load_image(path)))
        except ImageLoadError as exc:
            out.append((Path(path).name, str(exc)))
    return out


def probs_chart(rows: list[dict]):
    """Altair grouped bars: probability per class, one group per model. rows: {model, class, probability}."""
    import altair as alt
    import pandas as pd

    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title=None, sort=None, axis=alt.Axis(labelLimit=320)),
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("class:N"),
            yOffset="class:N",
            tooltip=["model", "class", alt.Tooltip("probability:Q", format=".3f")],
        )
        .properties(height=alt.Step(14))
    )


def qubit_chart(values: dict[str, list[float]], title: str):
    """Altair grouped bars per qubit for several named series, e.g. {"angle": [...], "<Z>": [...]}."""
    import altair as alt
    import pandas as pd

    rows = [{"qubit": i, "series": k, "value": v} for k, vs in values.items() for i, v in enumerate(vs)]
    return (
        alt.Chart(pd.DataFrame(rows), title=title)
        .mark_bar()
        .encode(
            x=alt.X("qubit:O"),
            y=alt.Y("value:Q"),
            color="series:N",
            xOffset="series:N",
            tooltip=["qubit", "series", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=260)
    )


def weights_chart(weights):
    """Altair heatmap of trained circuit angles: (depth, n) or (depth, n, 3) -> one cell per angle."""
    import altair as alt
    import pandas as pd

    w = weights.detach().cpu().reshape(weights.shape[0], weights.shape[1], -1)
    rows = [
        {"layer": k, "qubit": i, "angle": j, "value": float(w[k, i, j])}
        for k in range(w.shape[0])
        for i in range(w.shape[1])
        for j in range(w.shape[2])
    ]
    return (
        alt.Chart(pd.DataFrame(rows))
        .mark_rect()
        .encode(
            x=alt.X("layer:O"),
            y=alt.Y("qubit:O"),
            color=alt.Color("value:Q", scale=alt.Scale(scheme="redblue", domainMid=0), title="θ (rad)"),
            facet=alt.Facet("angle:O", title=None) if w.shape[2] > 1 else alt.Undefined,
            tooltip=["layer", "qubit", alt.Tooltip("value:Q", format=".4f")],
        )
    )


def latency_table(predictions: dict, n_images: int):
    """One row per model: variant and wall time for the batch (backbone shared between frozen models)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "model": label,
                "variant": p.variant,
                "latency (ms)": round(p.latency_s * 1e3, 1),
                "per image (ms)": round(p.latency_s * 1e3 / n_images, 1),
                "shared backbone pass": p.shared_backbone,
            }
            for label, p in predictions.items()
        ]
    )


# ---------------------------------------------------------------- comparison


@st.cache_data(show_spinner="Measuring inference latency ...", max_entries=64)
def model_latency(path: str, mtime: float, repeats: int = 3) -> float:
    """Median seconds for one model to classify one 224x224 image (preprocessing included)."""
    import statistics

    from PIL import Image

    from qtl.inference import predict

    loaded = load_checkpoint(path)
    image = Image.new("RGB", (224, 224), (120, 110, 90))
    return statistics.median(predict([loaded], image).popitem()[1].latency_s for _ in range(repeats))


@st.cache_data(show_spinner="Evaluating on the val split ...", max_entries=64)
def evaluation(path: str, mtime: float, data_dir: str | None):
    """qtl.inference.evaluate of a checkpoint on the dataset's val split (cached per file version)."""
    from qtl.data import resolve_dataset
    from qtl.inference import evaluate

    return evaluate(load_checkpoint(path), resolve_dataset(data_dir, download=False))


def summary_table(summary: list[dict], fields: tuple[str, ...]):
    """A dataframe of qtl.runs.summarise output, each field as "mean ± std"."""
    import pandas as pd

    digits = {"val_acc": 3, "val_loss": 3, "train_time_s": 2, "latency_ms": 1}

    def cell(row, f):
        mean, std = row[f"{f}_mean"], row[f"{f}_std"]
        if mean is None:
            return "–"
        d = digits.get(f, 0)
        return f"{mean:.{d}f}" if row["n"] == 1 else f"{mean:.{d}f} ± {std:.{d}f}"

    names = {
        "val_acc": "val accuracy",
        "val_loss": "val loss",
        "classical": "classical params",
        "quantum": "quantum params",
        "train_time_s": "training time (s)",
        "latency_ms": "latency (ms)",
    }
    return pd.DataFrame(
        [{"setup": r["setup"], "seeds": r["n"], **{names[f]: cell(r, f) for f in fields}} for r in summary]
    )


def confusion_chart(metrics: dict, title: str):
    """Altair heatmap of a confusion matrix (rows = true class) with counts written in."""
    import altair as alt
    import pandas as pd

    names = metrics["class_names"]
    cm = metrics["confusion_matrix"]
    rows = [
        {"true": names[i], "predicted": names[j], "count": cm[i][j]}
        for i in range(len(names))
        for j in range(len(names))
    ]
    base = alt.Chart(pd.DataFrame(rows), title=alt.TitleParams(title, fontSize=11, limit=380)).encode(
        x="predicted:N", y="true:N"
    )
    heat = base.mark_rect().encode(color=alt.Color("count:Q", scale=alt.Scale(scheme="purples"), legend=None))
    return (heat + base.mark_text(fontSize=14).encode(text="count:Q")).properties(height=200)


# ---------------------------------------------------------------- differentiation lab


def lab_table(results: list):
    """A dataframe of qtl.difflab results: one row per case."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "engine / method": r.case.label,
                "qubits": r.case.n_qubits,
                "depth": r.case.depth,
                "batch": r.case.batch,
                "step (ms)": None if r.step_ms is None else round(r.step_ms, 2),
                "max |grad − ref|": r.max_grad_error,
                "note": r.error or ("over the time cap" if r.over_cap else ""),
            }
            for r in results
        ]
    )


def lab_chart(results: list):
    """Altair log-scale lines: step time against qubits, one line per engine / method."""
    import altair as alt
    import pandas as pd

    rows = [
        {"engine / method": r.case.label, "qubits": r.case.n_qubits, "step (ms)": r.step_ms}
        for r in results
        if r.step_ms is not None
    ]
    return (
        alt.Chart(
            pd.DataFrame(rows, columns=["engine / method", "qubits", "step (ms)"]), title="time per step"
        )
        .mark_line(point=True)
        .encode(
            x=alt.X("qubits:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("step (ms):Q", scale=alt.Scale(type="log")),
            color="engine / method:N",
            tooltip=["engine / method", "qubits", alt.Tooltip("step (ms):Q", format=".2f")],
        )
        .properties(height=320)
    )
