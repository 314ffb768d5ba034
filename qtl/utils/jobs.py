"""Background jobs: run long work (training) in one worker thread, one job at a time.

A `JobRunner` owns a single worker thread and a bounded queue. `submit(name, work)` enqueues a job and
returns it at once; the work runs later as `work(job)` in the worker thread. The work reports progress
with `job.report(...)` and checks `job.cancelled` (or `job.raise_if_cancelled()`) to stop early. Anyone
may read a consistent copy of a job's state with `job.snapshot()` at any time, from any thread.

    runner = JobRunner(max_queued=0)          # 0: refuse a second job while one runs
    job = runner.submit("train quantum", work)
    job.snapshot().progress                   # 0.0 .. 1.0
    job.cancel()

This module is plain Python: it knows nothing of streamlit or of what the work does.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import threading
import time
import traceback
import urllib.error
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

STATES = ("queued", "running", "done", "cancelled", "failed")
FINISHED = ("done", "cancelled", "failed")


EXPECTED_OS_ERRORS = (ConnectionError, TimeoutError, urllib.error.URLError)
"""The OSErrors of a host out of reach: expected on a machine offline. Any other OSError (a permission, a
full disk, a missing file) keeps its traceback in the log."""


def expected_failure(exc: BaseException) -> bool:
    """Whether a job's failure is one its user caused or can fix, logged as one line (the reason is all
    there is to say): a host out of reach, an error class of qtl's own (DatasetError, CheckpointError,
    SpecError, a download that failed, weights out of reach ...), or a ValueError qtl raised (its checks
    of a value). Anything else is a bug or a broken server, logged with its traceback: a ValueError
    raised by a library (a reshape, a JSON decode, an int() of text) and any other OSError, qtl's
    WriteError (a full or read-only disk) included."""
    if isinstance(exc, EXPECTED_OS_ERRORS):
        return True
    if isinstance(exc, OSError):
        return False
    if any(c.__module__.split(".")[0] == "qtl" for c in type(exc).__mro__):
        return True
    return isinstance(exc, ValueError) and _raised_by_qtl(exc)


_QTL = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _raised_by_qtl(exc: BaseException) -> bool:
    """Whether the innermost frame of `exc`'s traceback is qtl's code (not a library it called)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_QTL)


class RunnerBusyError(RuntimeError):
    """A job was submitted while the runner's queue is full."""


class JobCancelled(Exception):
    """Raised inside a job's work by `Job.raise_if_cancelled` to unwind after a cancel request."""


@dataclass
class JobSnapshot:
    """A copy of a job's state at one moment; safe to read without locks."""

    id: int
    name: str
    owner: str | None  # who submitted it (a session id), so a UI can tell "yours" from "someone else's"
    state: str  # one of STATES
    progress: float  # fraction of the whole job done, 0.0 .. 1.0
    message: str  # one line for a status bar
    records: list[dict] = field(default_factory=list)  # per-epoch (or per-step) records, oldest first
    result: Any = None  # what `work` returned
    error: str | None = None  # one-line reason when state == "failed"
    trace: str | None = None  # its traceback, for a log (never shown to a visitor)
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def elapsed(self) -> float:
        """Seconds spent running so far (0 while queued)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at


class Job:
    """One unit of background work. Created by `JobRunner.submit`; thread-safe."""

    def __init__(
        self, job_id: int, name: str, work: Callable[[Job], Any], owner: str | None, uses=frozenset()
    ) -> None:
        self.uses = uses  # what the work reads that must stay while it runs (folders: `JobRunner.submit`)
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._work = work
        self._snap = JobSnapshot(job_id, name, owner, "queued", 0.0, "queued", submitted_at=time.time())

    @property
    def id(self) -> int:
        return self._snap.id

    @property
    def cancelled(self) -> bool:
        """True once `cancel()` was called; the work should stop at its next check."""
        return self._cancel.is_set()

    def is_set(self) -> bool:
        """Same as `cancelled`: lets a job serve as a stop flag (anything with `is_set()`)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the work to stop. A queued job never starts; a running one stops at its next check."""
        self._cancel.set()

    def raise_if_cancelled(self) -> None:
        """Raise `JobCancelled` if a cancel was requested (for work without its own stop mechanism)."""
        if self._cancel.is_set():
            raise JobCancelled()

    def report(self, progress: float | None = None, message: str | None = None, record: dict | None = None):
        """Update progress (clamped to 0..1), the status line, and/or append one record."""
        with self._lock:
            if progress is not None:
                self._snap.progress = min(1.0, max(0.0, float(progress)))
            if message is not None:
                self._snap.message = message
            if record is not None:
                self._snap.records.append(dict(record))

    def snapshot(self) -> JobSnapshot:
        """A deep copy of the current state."""
        with self._lock:
            return copy.deepcopy(self._snap)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; False if `timeout` seconds passed first."""
        return self._done.wait(timeout)

    def _set(self, **fields) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def _run(self) -> None:
        if self.cancelled:
            self._set(state="cancelled", message="cancelled before it started", finished_at=time.time())
            self._done.set()
            return
        self._set(state="running", message="starting", started_at=time.time())
        try:
            result = self._work(self)
        except JobCancelled:
            self._set(state="cancelled", message="cancelled")
        except Exception as exc:  # the worker must survive any failure of the work it runs
            reason = f"{type(exc).__name__}: {exc}"
            trace = traceback.format_exc()
            log = logging.getLogger(__name__)
            if expected_failure(exc):  # one line; its traceback only at debug level
                log.warning("job %s (%s) failed: %s", self._snap.id, self._snap.name, reason)
                log.debug("job %s traceback\n%s", self._snap.id, trace)
            else:
                log.error("job %s (%s) failed\n%s", self._snap.id, self._snap.name, trace)
            self._set(state="failed", error=reason, message=reason, trace=trace)
        else:
            if self.cancelled:
                self._set(state="cancelled", result=result, message="cancelled")
            else:
                self._set(state="done", result=result, message="done", progress=1.0)
        self._set(finished_at=time.time())
        self._done.set()


class JobRunner:
    """Runs submitted jobs one at a time, in submission order, in one daemon thread.

    Args:
        max_queued: how many jobs may wait while one runs. 0 refuses any job while one is queued or
            running (`RunnerBusyError`), which is what a shared demo wants.
        keep: how many finished jobs to remember for `get()`.
    """

    def __init__(self, max_queued: int = 0, keep: int = 50) -> None:
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        self.max_queued = max_queued
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
        self._jobs: dict[int, Job] = {}
        self._keep = keep
        self._thread: threading.Thread | None = None

    def submit(
        self, name: str, work: Callable[[Job], Any], owner: str | None = None, uses: Iterable = ()
    ) -> Job:
        """Queue `work(job)` to run in the background and return its `Job` at once; `uses`: what the work
        reads that must stay while it is active (e.g. its data folders), as `Job.uses`, set before any
        other thread can see the job.

        Raises:
            RunnerBusyError: the queue is full; the message names the running job.
        """
        with self._cond:
            pending = ([self._current] if self._current else []) + list(self._queue)
            if len(pending) > self.max_queued:
                running = pending[0].snapshot().name
                raise RunnerBusyError(
                    f"a job is already running ({running!r}) and "
                    + ("no queue is allowed here" if self.max_queued == 0 else f"{self.max_queued} wait")
                    + "; try again when it has finished"
                )
            job = Job(next(self._ids), name, work, owner, frozenset(uses))
            self._jobs[job.id] = job
            self._queue.append(job)
            self._forget_old()
            self._ensure_worker()
            self._cond.notify()
            return job

    def get(self, job_id: int | None) -> Job | None:
        """The job with this id, or None if unknown or forgotten."""
        with self._cond:
            return self._jobs.get(job_id) if job_id is not None else None

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        with self._cond:
            return self._current is not None or bool(self._queue)

    def active(self) -> list[Job]:
        """The running job (first) and the queued ones, in order."""
        with self._cond:
            return ([self._current] if self._current else []) + list(self._queue)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j._done.is_set()]
        for job in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[job.id]

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="qtl-jobs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                self._current = self._queue.popleft()
            try:
                self._current._run()
            finally:
                with self._cond:
                    self._current = None
