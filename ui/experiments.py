"""The Experiments page's glue: which results databases this session sees, a sweep spec from the form
(checked against the demo limits), the sweep as a background job, and its live panel."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from ui import datasets, server_jobs
from ui.checkpoint_dirs import session_dir
from ui.settings import settings

DEMO_VARIANTS = ("quantum", "dressed-classical", "linear")  # frozen heads only: seconds per run
DEMO_MAX_SWEEP_RUNS = 24
#: How the sweep panel shows each kind of `qtl.experiments.sweeps.SweepNote` (one line each): the st
#: function and the words before the note's.
NOTE_SHOWN = {
    "note": ("info", ""),
    "warning": ("warning", ""),
    "failed": ("error", "Run failed: "),
    "stopped": ("info", "Sweep "),
}


#: The studies shipped with the repository (docs/), browsable read-only beside the session's own.
SHIPPED_STUDIES = {
    "study: quantum vs controls and kernels, test accuracy, 2 datasets (docs/study.md)": "study.db",
    "wide: accuracy vs width, 4-64 qubits (docs/wide.md)": "wide.db",
}
DOCS = Path(__file__).resolve().parents[1] / "docs"


def databases() -> dict[str, Path]:
    """label -> results database this session may browse: its own (written by its sweeps; first), in demo
    mode the shipped one in models/, and the studies in docs/ (read only: this session never writes
    there)."""
    from qtl.paths import results_db

    s = settings()
    if not s.demo:
        found = {"results database": results_db()}
    else:
        found = {"this session": session_dir() / "results.db"}
        if results_db().is_file():
            found["shipped (read-only)"] = results_db()
    found.update({label: DOCS / name for label, name in SHIPPED_STUDIES.items() if (DOCS / name).is_file()})
    return found


def worth_opening(path: Path) -> bool:
    """Whether the page should open on the results database at `path`: it holds a sweep, or it cannot be
    read (opened first, its error says so: a QTL_RESULTS_DB set to another kind of file); False when it is
    absent or holds no sweep (a Hardware run's)."""
    from qtl.experiments.database import ResultsDB

    if not path.is_file():
        return False
    try:
        with ResultsDB(path, readonly=True) as db:
            return bool(db.sweeps())
    except (ValueError, OSError):
        return True


def browse(databases: dict[str, Path]) -> tuple[str | None, list[dict]]:
    """The database and sweep pickers and the sweeps table; returns the picked sweep's name and its
    finished runs (None, [] with a hint shown when there is nothing to show yet)."""
    from qtl.experiments.database import ResultsDB

    labels = list(databases)
    # one with sweeps: the session's own first, else a shipped study (a database a Hardware run made holds
    # no sweeps), else one that exists
    first = next((i for i, label in enumerate(labels) if worth_opening(databases[label])), None)
    if first is None:
        first = next((i for i, label in enumerate(labels) if databases[label].is_file()), 0)
    label = st.selectbox("results database", labels, first, key="exp_db") if len(labels) > 1 else labels[0]
    path = databases[label]
    if not path.is_file():
        st.info(f"No sweeps yet in `{path}`: compose one above, or run `qtl sweep SPEC.toml`.")
        return None, []
    try:
        db = ResultsDB(path, readonly=True)  # browsing never changes the file
    except (ValueError, OSError) as exc:
        st.error(f"Cannot read `{path}`: {exc}. Pick another database, or set QTL_RESULTS_DB to one.")
        return None, []
    with db:
        sweeps = db.sweeps()  # none in a file a sweep that just started is creating
        names = [sw["name"] for sw in sweeps]
        if not names:
            st.info("No sweeps yet: compose one above, or run `qtl sweep SPEC.toml`.")
            return None, []
        st.dataframe(sweeps, hide_index=True, width="stretch")
        wanted = st.session_state.get("exp_sweep")
        sweep = st.selectbox("sweep", names, names.index(wanted) if wanted in names else 0, key="exp_pick")
        rows = db.rows(sweep)
    if not rows:
        st.info("No finished runs in this sweep yet.")
    return sweep, rows


def sweep_dataset() -> tuple[str | None, str, str | None]:
    """The dataset a sweep from this session runs on, the active one: (its root for the spec, None for
    qtl's default dataset as `qtl sweep` names it; the form's words for it; why a sweep cannot run on it
    now, or None). A sweep ran on qtl's default dataset whatever the Data page made active."""
    from ui.cache import dataset_status
    from ui.session import active_data_dir

    root = active_data_dir() if st.session_state.get("data_dir") else None  # a deleted choice: None
    status = dataset_status(active_data_dir())
    name = f"**{status.path.name}**"
    if status.state == "found":
        return root, f"Runs on {name}, the active dataset (choose another on the Data page).", None
    if status.state == "downloadable" and not datasets.download_failed(status):
        return root, f"Runs on {name}, the default dataset: {status.message}.", None
    why = f"no dataset on disk ({datasets.status_words(status)}); {datasets.what_to_do()}"
    return root, f"No dataset on disk to run on: {datasets.what_to_do()}.", why


def compose_spec(form: dict):
    """A `SweepSpec` from the form's values, as TOML text the CLI would take (shown on the page).

    form: name, variants, qubits, depths, seeds (lists), epochs, backbone, pretrained, and dataset (a
    root; None or absent: qtl's default dataset).
    Raises ValueError for anything invalid or over the demo limits.
    """
    import tomllib

    from qtl.experiments.spec import parse_spec, plan

    s = settings()
    quantum = [v for v in form["variants"] if v != "linear"]
    if not form["variants"]:
        raise ValueError("choose at least one variant")
    if quantum and not (form["qubits"] and form["depths"]):
        raise ValueError("choose at least one qubit count and one depth")
    if not form["seeds"]:
        raise ValueError("give at least one seed")
    if s.demo:
        if set(form["variants"]) - set(DEMO_VARIANTS):
            raise ValueError(f"only {', '.join(DEMO_VARIANTS)} here")
        if form["epochs"] > s.max_epochs or max(form["qubits"] or [0]) > s.max_qubits:
            raise ValueError(f"at most {s.max_epochs} epochs and {s.max_qubits} qubits here")
    toml = json.dumps  # a JSON string, number or list of them is TOML too, quotes in a name escaped
    lines = [
        f"name = {toml(form['name'])}",
        f"backbone = {toml(form['backbone'])}",
        f"pretrained = {toml(bool(form['pretrained']))}",
        f"epochs = {int(form['epochs'])}",
    ]
    if form.get("dataset"):
        lines.append(f"dataset = {toml(str(form['dataset']))}")
    if quantum:
        lines += ["", "[[grid]]", f"variant = {toml(quantum)}", f"qubits = {toml(form['qubits'])}"]
        lines += [f"depth = {toml(form['depths'])}", f"seeds = {toml(form['seeds'])}"]
    if "linear" in form["variants"]:
        lines += ["", "[[grid]]", 'variant = "linear"', f"seeds = {toml(form['seeds'])}"]
    text = "\n".join(lines) + "\n"
    spec = parse_spec(tomllib.loads(text), source=text)
    n = len(plan(spec))
    if s.demo and n > DEMO_MAX_SWEEP_RUNS:
        raise ValueError(f"{n} runs requested; at most {DEMO_MAX_SWEEP_RUNS} per sweep here")
    return spec, text


def submit_sweep(spec, db: Path) -> bool:
    """Run `spec` into `db` as this session's job (the server's one job runner); says why not if refused."""
    from qtl.experiments.sweeps import sweep_work

    machine = {"num_workers": 0}  # no forking inside the web server
    # runs done on images the dataset no longer lists train again here (said when it finishes): the app's
    # user changed the data and asks for results on it; the CLI stops and asks (--rerun-changed)
    work = sweep_work(spec, db, machine=machine, models_dir=session_dir(), rerun_changed=True)
    return server_jobs.submit(f"sweep {spec.name}", work, "exp_job_id", "Sweep")


def sweep_panel() -> None:
    """This session's sweep job: live progress and finished runs, Cancel, and what `qtl sweep` would say
    of it (`sweep_notes`) as soon as it is known; polls every second."""
    server_jobs.live_panel("exp_job_id", _render)


def _render(job_id: int) -> None:
    from qtl.experiments.sweeps import job_notes, job_rows

    shown = server_jobs.job_header(job_id)
    if shown is None:
        return
    job, snap = shown
    if not snap.finished and st.button("Cancel", key=f"exp_cancel_{snap.id}", icon=":material/stop:"):
        job.cancel()
        st.caption("Stopping after the current batch; finished runs are kept.")
    if rows := job_rows(snap.records):
        columns = ["label", "qubits", "depth", "val_acc", "best_epoch", "train_time_s"]
        st.dataframe([{k: r[k] for k in columns} for r in rows], hide_index=True, width="stretch")
    report = snap.result if snap.finished else None  # a cancel before it started has none
    if snap.state == "failed":
        st.error(datasets.failed_job_text("Sweep", snap.error))
    elif report is not None:
        r = report
        st.success(
            f"{r.name}: {r.done} run(s) trained, {r.skipped} already done, {r.failed} failed"
            + (f", {r.changed} of them again on the dataset's changed images" if r.changed else "")
            + (", stopped early" if r.stopped else "")
        )
    for note in job_notes(snap.records, report, again="run the same sweep again from the form"):
        say, prefix = NOTE_SHOWN[note.kind]
        getattr(st, say)(prefix + note.text)
    if report is not None and st.session_state.get("exp_job_done") != snap.id:
        st.session_state["exp_job_done"] = snap.id  # once: show the new results below
        st.session_state["exp_sweep"] = report.name
        st.rerun(scope="app")
