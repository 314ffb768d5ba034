"""The background job runner: one job at a time, progress snapshots, cancel, queue or refusal."""

from __future__ import annotations

import logging
import threading
import urllib.error

import pytest

from qtl.utils.jobs import JobCancelled, JobRunner, RunnerBusyError


def _blocking_work(release: threading.Event, steps: int = 3):
    """Work that reports `steps` records, then waits for `release` (checking for cancel)."""

    def work(job):
        for i in range(steps):
            job.report(progress=(i + 1) / (steps + 1), record={"epoch": i})
        while not release.wait(0.01):
            job.raise_if_cancelled()
        return "finished"

    return work


class TestJobRunner:
    def test_runs_in_background_and_reports(self):
        """submit returns at once; the snapshot shows records, then done with the result."""
        release = threading.Event()
        runner = JobRunner()
        job = runner.submit("a", _blocking_work(release), owner="s1")
        assert not job.wait(0.05)
        snap = job.snapshot()
        assert snap.state == "running" and snap.owner == "s1"
        assert [r["epoch"] for r in snap.records] == [0, 1, 2]
        release.set()
        assert job.wait(5)
        snap = job.snapshot()
        assert (snap.state, snap.result, snap.progress) == ("done", "finished", 1.0)
        assert snap.finished and snap.elapsed > 0

    def test_refuses_second_job_when_no_queue(self):
        """With max_queued=0 a second submit while one runs is refused with a message naming the first."""
        release = threading.Event()
        runner = JobRunner(max_queued=0)
        first = runner.submit("first", _blocking_work(release))
        with pytest.raises(RunnerBusyError, match="first"):
            runner.submit("second", _blocking_work(release))
        release.set()
        assert first.wait(5)
        assert runner.submit("third", lambda job: 3).wait(5)

    def test_queues_in_order(self):
        """With a queue, jobs run one after another in submission order."""
        release = threading.Event()
        order = []
        runner = JobRunner(max_queued=2)
        a = runner.submit("a", lambda job: (release.wait(5), order.append("a")))
        b = runner.submit("b", lambda job: order.append("b"))
        assert b.snapshot().state == "queued"
        assert [j.id for j in runner.active()] == [a.id, b.id]
        release.set()
        assert b.wait(5)
        assert order == ["a", "b"] and not runner.busy

    def test_cancel_running_and_queued(self):
        """A cancelled running job keeps its records; a cancelled queued one never starts."""
        release = threading.Event()
        started = []
        runner = JobRunner(max_queued=1)
        a = runner.submit("a", _blocking_work(release))
        b = runner.submit("b", lambda job: started.append(1))
        for _ in range(500):
            if len(a.snapshot().records) == 3:
                break
            threading.Event().wait(0.01)
        b.cancel()
        a.cancel()
        assert a.wait(5) and b.wait(5)
        assert a.snapshot().state == "cancelled" and len(a.snapshot().records) == 3
        assert b.snapshot().state == "cancelled" and not started

    def test_failure_is_reported_and_worker_survives(self, caplog):
        """An exception in the work marks the job failed with a one-line reason, its traceback logged once;
        the next job still runs."""
        runner = JobRunner()

        def boom(job):
            raise KeyError("bug")

        job = runner.submit("x", boom)
        assert job.wait(5)
        assert job.snapshot().state == "failed" and job.snapshot().error == "KeyError: 'bug'"
        # the traceback is kept apart from the result, which pages read as the work's return value
        assert job.snapshot().result is None and "raise KeyError" in job.snapshot().trace
        (logged,) = [r for r in caplog.records if "failed" in r.getMessage()]
        assert "raise KeyError" in logged.getMessage() and logged.levelname == "ERROR"
        assert runner.submit("y", lambda job: 1).wait(5)

    @pytest.mark.parametrize(
        "error",
        [
            "bad value",  # a ValueError qtl raises checking a value
            urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
            ConnectionResetError("reset"),
            "qtl",  # an error class of qtl's own: a download that failed
        ],
    )
    def test_expected_failure_is_one_line(self, caplog, error):
        """A failure its user can fix (a bad value, a dataset or checkpoint error, a host out of reach,
        qtl's own error classes) is logged as one line at warning level, its traceback at debug level and
        in the job; an OSError of the server itself keeps it in the log."""
        from qtl.config import ModelConfig
        from qtl.utils.download import OfflineError

        error = OfflineError("could not resolve download.pytorch.org") if error == "qtl" else error

        def boom(job):
            if error == "bad value":
                ModelConfig(variant="no-such-variant")
            raise error

        caplog.set_level(logging.DEBUG, logger="qtl.utils.jobs")
        job = JobRunner().submit("x", boom)
        assert job.wait(5)
        (logged,) = [r for r in caplog.records if "failed" in r.getMessage()]
        assert logged.getMessage() == f"job {job.id} (x) failed: {job.snapshot().error}"
        assert "\n" not in logged.getMessage() and "Traceback" in job.snapshot().trace
        assert logged.levelname == "WARNING"
        assert any(r.levelname == "DEBUG" and "Traceback" in r.getMessage() for r in caplog.records)

    @pytest.mark.parametrize("bug", ["int", "json", "reshape", "disk"])
    def test_a_libraries_value_error_or_a_full_disk_keeps_its_traceback(self, caplog, bug):
        """A ValueError a library raised (a bug, not a value the user gave) and qtl's WriteError (a full or
        read-only disk: the server's, not the user's) are logged at error level with their traceback."""
        import json

        import numpy as np

        from qtl.utils.atomic import WriteError

        def boom(job):
            if bug == "int":
                int("x")
            if bug == "json":
                json.loads("{")
            if bug == "reshape":
                np.zeros(3).reshape(2, 2)
            raise WriteError(28, "No space left on device")

        job = JobRunner().submit("x", boom)
        assert job.wait(5)
        (logged,) = [r for r in caplog.records if "failed" in r.getMessage()]
        assert logged.levelname == "ERROR" and "Traceback" in logged.getMessage()

    def test_server_oserror_keeps_its_traceback(self, caplog):
        def boom(job):
            raise PermissionError(13, "Permission denied", "/models/x.pt")

        job = JobRunner().submit("x", boom)
        assert job.wait(5)
        (logged,) = [r for r in caplog.records if "failed" in r.getMessage()]
        assert "raise PermissionError" in logged.getMessage()

    def test_snapshot_is_a_copy(self):
        """Mutating a snapshot does not change the job."""
        runner = JobRunner()
        job = runner.submit("x", lambda job: job.report(record={"a": 1}))
        job.wait(5)
        snap = job.snapshot()
        snap.records.append({"b": 2})
        assert job.snapshot().records == [{"a": 1}]

    def test_cancelled_exception_type(self):
        """raise_if_cancelled raises JobCancelled only after cancel()."""
        runner = JobRunner()
        job = runner.submit("x", lambda job: None)
        job.wait(5)
        job.raise_if_cancelled()
        job.cancel()
        with pytest.raises(JobCancelled):
            job.raise_if_cancelled()
