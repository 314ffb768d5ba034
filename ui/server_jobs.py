"""Training jobs: the server's one job runner, submitting this session's job, and its live panel."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from qtl.utils.jobs import JobRunner
from qtl.utils.words import duration, error_line
from ui import charts, datasets, training
from ui.checkpoint_dirs import session_dir
from ui.session_models import load
from ui.settings import settings


@st.cache_resource(show_spinner=False)
def job_runner(max_queued: int) -> JobRunner:
    """The one training runner of this server process, shared by every session."""
    return JobRunner(max_queued=max_queued)


def runner() -> JobRunner:
    return job_runner(settings().max_queued)


def submit(name: str, work, state_key: str, what: str, data_dirs=None) -> bool:
    """Submit `work` as this session's job, its id kept in st.session_state[state_key]; shows why not
    ("{what} refused: ...") when the runner is busy, or this session's job of that key has not finished
    (a second one would hide the first one's progress and Cancel button).

    data_dirs: the dataset folders the job trains on (`jobs_on` keeps them from being deleted meanwhile);
    None: the session's active dataset, which a sweep from the Experiments page runs on."""
    from qtl.utils.jobs import RunnerBusyError
    from ui.session import active_data_dir

    current = runner().get(st.session_state.get(state_key))
    if current is not None and not (snap := current.snapshot()).finished:  # its panel shows one job
        st.warning(f"{what} refused: your {snap.name!r} is still {snap.state}; cancel it below, or wait.")
        return False
    folders = [active_data_dir()] if data_dirs is None else data_dirs
    uses = {str(Path(d).resolve()) for d in folders if d}  # `jobs_on` reads them
    try:
        job = runner().submit(name, work, owner=st.session_state["session_id"], uses=uses)
    except RunnerBusyError as exc:
        st.warning(f"{what} refused: {exc}.")
        return False
    st.session_state[state_key] = job.id
    return True


def jobs_on(folder) -> list:
    """Snapshots of the server's jobs not yet finished (running, queued) that train on `folder` or on a
    folder inside it or around it (compared resolved): deleting it would pull their images away."""
    target = Path(folder).resolve()
    out = []
    for job in runner().active():
        uses = [Path(d) for d in job.uses]
        if any(d == target or target in d.parents or d in target.parents for d in uses):
            if not (snap := job.snapshot()).finished:
                out.append(snap)
    return out


def busy_words(snaps: list, what: str) -> str:
    """One line: `what` cannot be deleted while the jobs `snaps` (from `jobs_on`) train on it."""
    snap = snaps[0]
    whose = "your job" if snap.owner == st.session_state.get("session_id") else "another session's job"
    more = f" (and {len(snaps) - 1} more)" if len(snaps) > 1 else ""
    return (
        f"Cannot delete {what} now: {whose} {snap.name!r}{more} is {snap.state} on it; "
        "delete it once that job has finished, or cancel it."
    )


def live_panel(state_key: str, render) -> None:
    """This session's job (id in st.session_state[state_key]) drawn by `render(job_id)` in a fragment
    that polls every second while it runs, so the rest of the page (and other pages and sessions) stay
    responsive."""
    job = runner().get(st.session_state.get(state_key))
    if job is None:
        return
    running = not job.snapshot().finished
    st.fragment(render, run_every=1.0 if running else None)(job.id)


def job_header(job_id: int):
    """The job's name, state, time and progress bar; returns (job, snapshot), or None when it is gone."""
    job = runner().get(job_id)
    if job is None:
        return None
    snap = job.snapshot()
    st.markdown(f"**{snap.name}**: {snap.state}, {duration(snap.elapsed)}")
    st.progress(snap.progress, text=None if snap.state == "failed" else snap.message)  # said once, below
    return job, snap


def submit_training(name: str, runs: list) -> bool:
    """Submit `runs` (from qtl.experiments.runs.plan_runs) as this session's job; shows why not when
    refused."""
    folders = [run.machine.data_dir for run in runs]
    return submit(name, _training_work(runs), "job_id", "Training request", data_dirs=folders)


def _training_work(runs: list):
    """The job work for `runs`: `train_runs` reporting to the job; returns one row (ROW_FIELDS) per run,
    and whether its file kept an earlier run of its settings (`Outcome.kept_earlier`)."""
    from qtl.experiments.runs import RunObserver, train_runs
    from qtl.training.fit import Callback

    class Reporter(RunObserver, Callback):
        """Forwards progress to the job: overall fraction, a status line, and one record per epoch."""

        def __init__(self, job) -> None:
            self.job = job
            self.index, self.total, self.run = 0, 1, None

        def callbacks(self, index, total, run):
            self.index, self.total, self.run = index, total, run
            self.job.report(index / total, f"{run.name} ({index + 1}/{total}): preparing data and features")
            return [self]

        def finished(self, index, total, run, outcome):
            self.job.report(message=f"{run.name}: done")

        def _fraction(self, p) -> float:
            return (self.index + p.fraction) / self.total

        def on_batch_end(self, p) -> None:
            self.job.report(
                self._fraction(p),
                f"{self.run.name} ({self.index + 1}/{self.total}): epoch {p.epoch}/{p.epochs}, "
                f"batch {p.batch}/{p.batches}, loss {p.loss:.3f}",
            )

        def on_epoch_end(self, p) -> None:
            mc, tc = self.run.model_config, self.run.train_config
            row = {"run": self.run.name, "variant": mc.variant, "seed": tc.seed, "warning": p.warning}
            self.job.report(self._fraction(p), record={**row, **p.metrics})

    if not runs:
        raise ValueError("nothing to train")

    def work(job) -> list[dict]:
        outcomes = train_runs(runs, observer=Reporter(job), stop=job)
        return [{**o.row, "kept_earlier": o.kept_earlier} for o in outcomes]

    return work


def job_panel() -> None:
    """This session's training job: live progress, curves per epoch, Cancel, then a summary."""
    live_panel("job_id", _render_job)


def _render_job(job_id: int) -> None:
    shown = job_header(job_id)
    if shown is None:
        return
    job, snap = shown
    if not snap.finished:
        position = [j.id for j in runner().active()].index(snap.id) if snap.state == "queued" else 0
        if position:
            st.caption(f"Queued: {position} job(s) ahead of this one.")
        if st.button("Cancel", key=f"cancel_{snap.id}", icon=":material/stop:"):
            job.cancel()
            st.caption("Cancelling after the current batch ...")
    if snap.records:
        left, right = st.columns(2)
        left.altair_chart(charts.curves_chart(snap.records, "loss"), width="stretch")
        right.altair_chart(charts.curves_chart(snap.records, "acc"), width="stretch")
        training.gradient_panel(snap.records)
    if snap.state == "failed":
        st.error(datasets.failed_job_text("Training", snap.error))
    if snap.finished:
        _finish(snap)


def _finish(snap) -> None:
    """Summary of a finished job. Once per job: load every checkpoint it saved, then rerun the app; the
    summary counts the ones saved and, where some could not be, the ones loaded, and says each one that
    could not be loaded in one line."""
    import pandas as pd

    saved = [s for s in snap.result or [] if s["checkpoint"]]  # kept files too: loaded below
    if st.session_state.get("job_done") != snap.id:
        st.session_state["job_done"] = snap.id
        st.session_state["job_unloaded"] = (snap.id, _load_saved(saved))
        st.rerun(scope="app")
    of_job, unloaded = st.session_state.get("job_unloaded") or (None, {})
    unloaded = unloaded if of_job == snap.id else {}
    new = [s for s in saved if not s.get("kept_earlier")]  # written by this job (the rest kept earlier runs)
    loaded = sum(Path(s["checkpoint"]).name not in unloaded for s in new)
    if snap.state != "failed":
        verb = "Cancelled" if snap.state == "cancelled" else "Finished"
        said = " and loaded." if loaded == len(new) else f"; {loaded} loaded."
        kept = len(saved) - len(new)
        note = " run(s) stopped before beating the earlier run in their file; it keeps that run (loaded)."
        note = f" {kept}{note}" if kept else ""
        st.success(f"{verb}: {len(new)} checkpoint(s) saved to `{session_dir()}`{said}{note}")
    for name, why in unloaded.items():
        st.error(f"Saved, but could not load {name}: {why}")
    if snap.result and snap.state != "failed":
        table = pd.DataFrame(snap.result)[
            [
                "label",
                "best_epoch",
                "val_acc",
                "val_loss",
                "test_acc",
                "epochs_done",
                "train_time_s",
                "checkpoint",
            ]
        ]
        st.dataframe(table, hide_index=True, width="stretch")


def _load_saved(saved: list) -> dict[str, str]:
    """Load into this session every checkpoint of the rows `saved`; returns file name -> why, one line,
    for each that could not be loaded (a file deleted meanwhile: "it is gone (deleted?)")."""
    failed = {}
    for row in saved:
        path = Path(row["checkpoint"])
        try:
            load(path)
        except (OSError, ValueError, RuntimeError) as exc:
            failed[path.name] = error_line(exc) if path.exists() else "it is gone (deleted?)"
    return failed
