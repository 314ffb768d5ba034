"""Running a sweep: plan its runs, register them in the results database, skip the finished ones, run
the rest on a backend and write each result as it arrives.

    spec = load_spec("study.toml")
    report = run_sweep(spec, "models/results.db", backend="processes", workers=2)
    report.done, report.failed, report.skipped

Re-running a spec resumes it: runs already `done` (in this or any other sweep of the same database) are
skipped, anything else (never started, interrupted, killed, failed) runs again from scratch. A sweep is
its name: another spec under a name the database holds adds its runs to that sweep, which keeps the
earlier spec's runs (`SweepReport.earlier`, said by the CLI and the app; `earlier_note`).

Several sweeps may share a database at once: each claims a run as it dispatches it (`ResultsDB.start`),
and skips one another sweep has finished or is training by then (`SweepReport.elsewhere`, `taken_note`),
so none trains a run twice or resets one the other finished.

A run's id names its dataset by name, so each finished run also records which images it trained on
(`qtl.data.folders.file_listing_id`). A done run whose dataset now lists other images (images added,
removed or renamed since, or another folder under the same name) is not taken as done: the sweep stops
before training with `ChangedData`, unless `rerun_changed` runs those again, replacing their results.

What a sweep tells its user besides its counts (those notes, runs that keep no checkpoint, failed runs'
errors, warnings, a stop) has one source, `sweep_notes`: `qtl sweep` prints it, the app's sweep job
(`sweep_work`, `job_notes`) shows it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

from qtl.config import DataRegime
from qtl.data.features import extract_features
from qtl.data.feed import check_regime, feature_needs, labels_listed
from qtl.data.folders import DatasetError, file_listing_id
from qtl.experiments.database import ResultsDB
from qtl.experiments.executors import Done, execute
from qtl.experiments.runs import Run, RunObserver
from qtl.experiments.spec import SweepSpec, plan
from qtl.models.backbones import load_backbone
from qtl.training.gradients import COLUMNS as GRAD_COLUMNS
from qtl.utils.words import error_line

# mlflow (an optional extra) is imported only when a sweep logs to it.


@dataclass
class SweepReport:
    """How a `run_sweep` call went."""

    name: str
    planned: int  # distinct runs in the spec
    skipped: int  # already done before this call
    earlier: int = 0  # runs the sweep held from an earlier spec under its name, not in this one
    changed: int = 0  # of `done`, runs trained again: their dataset lists other images now (rerun_changed)
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    elsewhere: int = 0  # runs another sweep was running when their turn came: left to it, not trained here
    stopped: bool = False  # a stop request ended it early
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # "label: reason" per failed run
    warnings: list[str] = field(default_factory=list)  # what went wrong beside the runs (MLflow logging)

    @property
    def remaining(self) -> int:
        return self.planned - self.skipped - self.done


@dataclass(frozen=True)
class SweepNote:
    """One thing to tell about a sweep besides its counts (`sweep_notes`). kind: "note" (how the sweep
    stands: runs it also holds of an earlier spec, runs that keep no checkpoint), "warning" (what went
    otherwise than asked: changed data, runs left to another sweep, MLflow), "failed" (one failed run:
    "label (id): error") or "stopped" (a stop ended it with runs left)."""

    kind: str
    text: str


def sweep_notes(
    spec: SweepSpec | None = None,
    runs: list[Run] = (),
    *,
    earlier: int = 0,
    done: list[Run] = (),
    changed: list[Run] = (),
    report: SweepReport | None = None,
    again: str = "run the same command again",
) -> list[SweepNote]:
    """What to tell about a sweep besides its counts, in the order to say it: the words of `qtl sweep`
    (its dry run, its plan, its close) and of the app's sweep job.

    Before it runs, from `spec` and its planned `runs`: `earlier` runs the sweep holds of an earlier spec
    (`earlier_note`), kernel runs a spec that keeps checkpoints has no file for (`unsaved_note`), the
    `done` runs (finished before, not trained again) without a checkpoint where it keeps them
    (`unsaved_done_note`), and `changed` done runs whose dataset lists other images now, which stop it
    (`changed_note`; pass none where they are trained again).
    Once it ran, from its `report`: each failed run's error, its warnings (`SweepReport.warnings`: done
    runs without a checkpoint, runs another sweep finished or is training, MLflow) and a stop, whose
    words say to `again` to resume."""
    notes = []
    if spec is not None:
        notes += [
            SweepNote("note", earlier_note(spec.name, earlier)),
            SweepNote("note", unsaved_note(spec, runs)),
            SweepNote("note", unsaved_done_note(spec, list(done))),
            SweepNote("warning", changed_note(spec.name, list(changed))),
        ]
    if report is not None:
        notes += [SweepNote("failed", error) for error in report.errors]
        notes += [SweepNote("warning", warning) for warning in report.warnings]
        if report.stopped:
            notes.append(SweepNote("stopped", f"stopped; {again} to resume"))
    return [n for n in notes if n.text]


class SweepObserver(RunObserver):
    """Progress of a sweep (the CLI's stderr lines, the app's job). Override what you need."""

    def planned(self, spec: SweepSpec, runs: list[Run], todo: list[Run], earlier: int = 0) -> None:
        """After planning: every distinct run, those that will run now, and how many runs the sweep
        holds from an earlier spec under its name."""

    def started(self, index: int, total: int, run: Run) -> None:
        """Run `index` of `total` (counting the runs to do now) was dispatched."""

    def ended(self, index: int, total: int, run: Run, done: Done) -> None:
        """A run came back (finished, failed or cancelled) and is in the database."""


class ChangedData(ValueError):
    """Done runs of a sweep trained on other images than their dataset lists now (`changed_data`)."""


def listing_ids(runs: list[Run]) -> dict[str, str | None]:
    """Run id -> `file_listing_id` of its dataset folder as it is now (one listing per folder)."""
    ids = functools.cache(file_listing_id)
    return {r.id: ids(r.machine.data_dir) for r in runs}


def changed_data(db: ResultsDB, runs: list[Run], now: dict[str, str | None]) -> list[Run]:
    """The done runs whose recorded images differ from their dataset's images `now` (`listing_ids`)."""
    recorded = db.recorded_data([r.id for r in runs])
    return [r for r in runs if r.id in recorded and now[r.id] is not None and recorded[r.id] != now[r.id]]


def changed_note(name: str, changed: list[Run]) -> str:
    """The words for a sweep whose done runs `changed` trained on other images ("" for none)."""
    if not changed:
        return ""
    datasets = sorted({r.dataset or "the default dataset" for r in changed})
    n = len(changed)
    return (
        f"sweep {name}: {n} done run{'s' * (n > 1)} trained on other images than {', '.join(datasets)} "
        "holds now (images added, removed or renamed since, or another folder of the same name): run them "
        "again on these images with --rerun-changed (their results are replaced), or keep both with "
        "another --db"
    )


def run_sweep(
    spec: SweepSpec,
    db_path: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    machine: dict | None = None,
    models_dir: str | Path | None = None,
    observer: SweepObserver | None = None,
    stop=None,
    address: str | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    mlflow_uri: str | None = None,
    limit: int | None = None,
    rerun_changed: bool = False,
) -> SweepReport:
    """Run every run of `spec` not yet done in the database at `db_path`; see
    `qtl.experiments.executors.execute`
    for the backend options and `qtl.experiments.spec.plan` for machine, models_dir and limit.
    ChangedData (before anything is written) where done runs trained on other images than their dataset
    holds now; rerun_changed: run those again instead."""
    t0 = time.perf_counter()
    observer = observer or SweepObserver()
    runs = plan(spec, machine=machine, models_dir=models_dir, limit=limit)
    data = listing_ids(runs)
    with ResultsDB(db_path) as db:
        changed = {r.id for r in changed_data(db, runs, data)}
        if changed and not rerun_changed:
            raise ChangedData(changed_note(spec.name, [r for r in runs if r.id in changed]))
        earlier = db.held_beside(spec.name, [r.id for r in runs])
        db.add_sweep(spec.name, spec.source, runs)
        status = db.statuses([r.id for r in runs])
        todo = [r for r in runs if status.get(r.id) != "done" or r.id in changed]
        report = SweepReport(spec.name, len(runs), len(runs) - len(todo), earlier=earlier)
        observer.planned(spec, runs, todo, earlier)
        if todo and backend != "local":
            warm_features(todo, observer)

        dispatched, taken = {}, {"done": 0, "running": 0}

        def on_start(i: int, run: Run) -> bool:
            """Claim the run (`ResultsDB.start`); False, and not dispatched, where another sweep of this
            database finished it or is running it since this one planned."""
            held = db.start(run.id, redo=run.id in changed)
            if held is not None:
                taken[held] += 1
                return False
            dispatched[run.id] = time.time()
            observer.started(i, len(todo), run)
            return True

        try:
            for i, run, done in execute(
                todo,
                backend=backend,
                workers=workers,
                on_start=on_start,
                observer=observer,
                stop=stop,
                address=address,
                cpus_per_run=cpus_per_run,
                gpus_per_run=gpus_per_run,
            ):
                _record(db, run, done, dispatched.pop(run.id), stop, report, data[run.id])
                if mlflow_uri and done.outcome is not None and not done.cancelled:
                    try:
                        log_to_mlflow(mlflow_uri, spec.name, run, done)
                    except Exception as exc:  # MLflow's own errors: the sweep goes on, logging stops
                        reason = error_line(exc)[:300]
                        report.warnings.append(f"MLflow logging stopped at {run.name}: {reason}")
                        mlflow_uri = None
                observer.ended(i, len(todo), run, done)
        except KeyboardInterrupt:
            for run_id in dispatched:  # a second Ctrl-C: what was running did not finish
                db.fail(run_id, "interrupted", status="cancelled")
            raise
        now = {r.id for r in todo}
        if note := unsaved_done_note(spec, [r for r in runs if r.id not in now]):
            report.warnings.append(note)
        report.skipped += taken["done"]
        report.elsewhere = taken["running"]
        if note := taken_note(spec.name, **taken):
            report.warnings.append(note)
        now_done = db.recorded_data(sorted(changed))  # those trained again that finished on today's images
        report.changed = sum(now_done.get(i) == data[i] for i in changed)
        report.stopped = bool(stop is not None and stop.is_set() and report.remaining > 0)
    report.seconds = time.perf_counter() - t0
    return report


def taken_note(name: str, done: int = 0, running: int = 0) -> str:
    """The words for runs another sweep of the database finished (`done`) or was running (`running`)
    when this one came to them, and so left alone ("" for none)."""
    parts = []
    if done:
        parts.append(f"{done} finished by another sweep meanwhile (counted as done)")
    if running:
        parts.append(
            f"{running} being trained by another sweep on this machine (left to it; run the spec again "
            "once it has ended to train any it did not finish)"
        )
    if not parts:
        return ""
    return f"sweep {name}: skipped {' and '.join(parts)}: a run is trained by one sweep at a time"


def _record(db: ResultsDB, run: Run, done: Done, dispatched: float, stop, report, data: str | None) -> None:
    """One result into the database (one transaction) and the report; data: its images' listing id."""
    if done.outcome is None:  # a Ray task the stop cancelled (`Done.cancelled`) is no failure either
        stopped = done.cancelled or (stop is not None and stop.is_set())
        db.fail(run.id, done.error or "no result", status="cancelled" if stopped else "failed")
        if stopped:
            report.cancelled += 1
        else:
            report.failed += 1
            report.errors.append(failure(run, done))
        return
    wall = done.outcome.wall_s
    epochs = done.outcome.row["train_time_s"]
    timings = {
        "wall": wall,  # the whole train_run call in the worker
        "epochs": epochs,  # the training epochs alone
        "setup": wall - epochs,  # data, features, model
        "queue": max(0.0, done.queue_s),  # dispatch -> the worker starting it
        "dispatch": max(0.0, time.time() - dispatched - wall - max(0.0, done.queue_s)),  # result transfer
    }
    db.finish(run.id, done.outcome, done.environment, timings, data)
    if done.cancelled:
        report.cancelled += 1
    else:
        report.done += 1


def failure(run: Run, done: Done) -> str:
    """The words for a run that failed (`SweepReport.errors`): "name (id): error", the name telling the
    sweep's runs apart (`Run.name`: "quantum 4q d6 seed 0")."""
    return f"{run.name} ({run.id}): {done.error or 'no result'}"


def regime_refusals(runs: list[Run]) -> dict[str, str]:
    """Run id -> why it would fail, for the dry run: its engine refuses its width (`engine_refusal`), or
    its dataset cannot serve its data regime (`check_regime`: too many classes, too few images of a class
    for the folds or the few-shot draw); runs whose dataset is not here yet (downloaded when they run)
    are not checked for the regime."""
    refused, listings = {}, {}
    for run in runs:
        if reason := engine_refusal(run):
            refused[run.id] = reason
            continue
        root, tc = run.machine.data_dir, run.train_config
        if tc.regime == DataRegime():  # the dataset's own splits: nothing to check
            continue
        try:
            if root not in listings:  # one listing per dataset, however many runs
                listings[root] = labels_listed(root)
            check_regime(root, tc.regime, tc.seed, listings[root])
        except DatasetError:
            continue
        except ValueError as e:
            refused[run.id] = str(e)
    return refused


def engine_refusal(run: Run) -> str | None:
    """Why the run's circuit engine refuses its width (a statevector engine stops at
    STATEVECTOR_MAX_QUBITS: 30 qubits on "native" failed only when the run started), or None; told from
    the configs alone (`qtl.quantum.engines.make_engine`'s check, which builds nothing this wide)."""
    from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS
    from qtl.quantum.engines import make_engine

    mc = run.model_config
    if not (mc.is_quantum or mc.variant == "quantum-kernel") or mc.circuit.n_qubits <= STATEVECTOR_MAX_QUBITS:
        return None
    try:
        make_engine(mc.circuit, mc.engine)
    except ValueError as exc:
        return str(exc)
    return None


def warm_features(runs: list[Run], observer: SweepObserver | None = None) -> None:
    """Extract (or find cached) the features every frozen run needs, once each, in this process, so
    parallel workers on this machine (or on storage it shares) read the cache instead of racing."""
    seen = set()
    for run in runs:
        mc, tc, m = run.model_config, run.train_config, run.machine
        if not mc.frozen or (tc.augment and tc.views == 0):
            continue
        for split, v in feature_needs(tc, m.data_dir):
            key = (mc.backbone, mc.pretrained, m.data_dir, split, v, m.cache_dir)
            if key in seen:
                continue
            seen.add(key)
            backbone = functools.cache(lambda mc=mc: load_backbone(mc.backbone, mc.pretrained)[0])
            hook = observer.preparing(0, 1, run) if observer else None
            extract_features(
                mc.backbone, mc.pretrained, m.data_dir, split, views=v, cache_dir=m.cache_dir,
                progress=hook, backbone=backbone,
            )  # fmt: skip


def log_to_mlflow(uri: str, sweep: str, run: Run, done: Done) -> None:
    """Log a finished run to MLflow (experiment = the sweep; params, per-epoch metrics, the run id as
    a tag), so MLflow's UI shows qtl sweeps. Needs `mlflow` (or `mlflow-skinny`) installed."""
    import mlflow

    row = done.outcome.row
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(sweep)
    params = {k: row[k] for k in ("variant", "backbone", "weights", "dataset", "qubits", "depth", "seed")}
    params.update(
        {k: row[k] for k in ("entangler", "rotation", "lr", "epochs", "engine", "noise", "reupload")}
    )
    params.update({k: row[k] for k in ("feature_dim", "split", "per_class", "label_noise")})
    params.update({k: row[k] for k in ("recipe", "circuit_options")})  # what else makes a cell of its own
    with mlflow.start_run(run_name=f"{run.name} {run.id}", tags={"qtl.run_id": run.id}):
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        for h in done.outcome.history:
            keys = ("train_loss", "train_acc", "val_loss", "val_acc", *GRAD_COLUMNS)
            mlflow.log_metrics({k: h[k] for k in keys if h.get(k) is not None}, step=h["epoch"])
        final = {
            "best_val_acc": row["val_acc"],
            "test_acc": row["test_acc"],
            "train_time_s": row["train_time_s"],
        }
        mlflow.log_metrics({k: v for k, v in final.items() if v is not None})


# ---- the app's background job


class _JobProgress(SweepObserver):
    """Forwards a sweep's progress to a `qtl.utils.jobs.Job`: fraction of runs done, a status line, one
    record per finished run (its row), and one per note as soon as it is known (`NOTE`: the notes of its
    plan, then each failed run's error as it comes back; `job_notes` reads them)."""

    def __init__(self, job) -> None:
        self.job, self.total, self.finished_runs = job, 1, 0

    def note(self, note: SweepNote) -> None:
        self.job.report(record={NOTE: note.kind, "text": note.text})

    def planned(self, spec, runs, todo, earlier=0):
        self.total = max(1, len(todo))
        done = len(runs) - len(todo)
        self.job.report(0.0, f"{spec.name}: {len(runs)} runs, {done} already done")
        for note in sweep_notes(spec, runs, earlier=earlier):
            self.note(note)

    def started(self, index, total, run):
        self.job.report(message=f"{run.name} ({index + 1}/{total}): training")

    def ended(self, index, total, run, done):
        self.finished_runs += 1
        if done.outcome is not None and not done.cancelled:
            self.job.report(self.finished_runs / self.total, record=done.outcome.row)
            return
        self.job.report(self.finished_runs / self.total, f"{run.name}: {done.error or 'stopped'}")
        if not (done.cancelled or self.job.is_set()):  # as `_record` tells a failure from a stop
            self.note(SweepNote("failed", failure(run, done)))


NOTE = "sweep_note"
"""The key of a sweep job's record that holds a note (its kind; its words under "text"), not a run's row."""


def job_rows(records: list[dict]) -> list[dict]:
    """The finished runs' rows among a sweep job's records (`sweep_work`)."""
    return [r for r in records if NOTE not in r]


def job_notes(
    records: list[dict], report: SweepReport | None = None, again: str = "run the same sweep again"
) -> list[SweepNote]:
    """The notes of a sweep job (`sweep_work`): those its records hold (its plan's, each failed run's as it
    came back), then what its `report` adds once it has returned (`sweep_notes`; a stop says to `again`
    to resume), each once."""
    notes = [SweepNote(r[NOTE], r["text"]) for r in records if NOTE in r]
    if report is not None:
        notes += sweep_notes(report=report, again=again)
    return list(dict.fromkeys(notes))


def earlier_note(name: str, earlier: int) -> str:
    """The words for a sweep that also holds `earlier` runs of an earlier spec ("" for none)."""
    if not earlier:
        return ""
    runs = "run" if earlier == 1 else "runs"
    return (
        f"sweep {name} also holds {earlier} {runs} of an earlier spec under this name, and its reports "
        "count them; give this spec another name to keep the two apart"
    )


def unsaved_note(spec: SweepSpec, runs: list[Run]) -> str:
    """The words for a spec that keeps checkpoints and has kernel SVM runs, which have none ("" else)."""
    kernels = sorted({r.model_config.variant for r in runs if r.model_config.is_kernel})
    if not spec.checkpoints or not kernels:
        return ""
    return (
        f"checkpoints = true keeps no file for the {' and '.join(kernels)} runs: a kernel SVM has no "
        "checkpoint (its scores are in the results database)"
    )


def unsaved_done_note(spec: SweepSpec, skipped: list[Run]) -> str:
    """The words for a spec that keeps checkpoints whose runs finished before (in this or another sweep
    of the database) have no file where it keeps them: they are not trained again to save one ("" for
    none). checkpoints = true saved nothing for them, silently."""
    missing = [r for r in skipped if r.checkpoint_path is not None and not Path(r.checkpoint_path).exists()]
    if not spec.checkpoints or not missing:
        return ""
    n = len(missing)
    return (
        f"checkpoints = true: {n} run{'s' * (n > 1)} finished before (in this or another sweep) "
        f"{'have' if n > 1 else 'has'} no checkpoint in {missing[0].checkpoint_path.parent} and "
        f"{'are' if n > 1 else 'is'} not trained again to save one (their scores are in the database): "
        f"{', '.join(r.name for r in missing[:5])}{', ...' if n > 5 else ''}"
    )


def sweep_work(spec: SweepSpec, db_path: str | Path, **options):
    """The job work for a sweep (see `run_sweep` for options): stops at the job's cancel; returns the
    SweepReport. Each finished run's row is a job record as it arrives, and so is each note known before
    the end (`job_rows`, `job_notes`)."""

    def work(job) -> SweepReport:
        return run_sweep(spec, db_path, observer=_JobProgress(job), stop=job, **options)

    return work
