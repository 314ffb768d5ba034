"""The executors' window and errors without training: a stop with runs still queued ends the window (it
spun for ever on the processes and Ray backends), and a Ray cancellation or traceback is one clean line."""

from __future__ import annotations

import threading

import pytest

from qtl.experiments import executors
from qtl.experiments.executors import STOPPED, Done, _result, _windowed, one_line


class FakePool:
    """submit/wait_any/cancel_all for `_windowed`: a submitted run finishes when waited on after the stop
    (as a cancelled worker does), and the stop is set once the first run is in flight."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.submitted, self.cancelled, self.waits = stop, [], [], 0

    def submit(self, run, t):
        self.submitted.append(run)
        self.stop.set()  # Ctrl-C while the first window runs, the queue still holding runs
        return run

    def wait_any(self, handles):
        self.waits += 1
        if self.waits > 50:  # the old loop: nothing in flight, runs queued, waiting on none for ever
            raise AssertionError("the window never ended after the stop")
        if not self.stop.is_set() or not handles:
            return []
        return [(handles[0], Done(None, STOPPED))]

    def cancel_all(self, handles):
        self.cancelled += handles


def test_a_stop_with_runs_still_queued_ends_the_window_after_the_runs_in_flight():
    stop = threading.Event()
    pool = FakePool(stop)
    started = []
    out = list(
        _windowed(
            ["a", "b", "c", "d"], 2, lambda i, run: started.append(run), stop,
            pool.submit, pool.wait_any, pool.cancel_all,
        )
    )  # fmt: skip
    # "a" was dispatched before the stop; "b", "c" and "d" never start (they stay pending): the stop,
    # set while "a" was being dispatched, is seen before the next dispatch
    assert started == pool.submitted == ["a"]
    assert [run for _, run, _ in out] == ["a"]
    assert pool.cancelled == []  # "a" came back stopped before the loop's top saw the stop: none in flight


def test_no_stop_runs_every_run_in_windows():
    class Pool(FakePool):
        def submit(self, run, t):
            self.submitted.append(run)
            return run

        def wait_any(self, handles):
            return [(handles[0], Done(None, "x"))]

    pool = Pool(threading.Event())
    out = list(_windowed(list("abcde"), 2, lambda i, r: None, None, pool.submit, pool.wait_any, None))
    assert [run for _, run, _ in out] == list("abcde")


class TaskCancelledError(Exception):
    """Named as Ray's, which `_result` knows by name (ray need not be installed)."""


class RayTaskError(Exception):
    def __init__(self, text, cause):
        super().__init__(text)
        self.cause = cause


RAY_TRACE = (
    '\x1b[36mray::work()\x1b[39m (pid=4242, ip=10.0.0.1)\n  File "python/ray/_raylet.pyx", line 1, in x\n'
    "    raise TaskCancelledError\n" + "  more traceback\n" * 80
)


def test_a_cancelled_ray_task_is_stopped_not_failed():
    cancelled = type("RayTaskError(TaskCancelledError)", (RayTaskError, TaskCancelledError), {})
    for exc in (TaskCancelledError("Task: TaskID(abc) was cancelled."), cancelled(RAY_TRACE, None)):

        def get(exc=exc):
            raise exc

        done = _result(get)
        assert done.outcome is None and done.error == STOPPED and done.cancelled


def test_a_ray_error_is_one_clean_line():
    wrapped = RayTaskError(RAY_TRACE + "\x1b[31mValueError: bad qubits\x1b[0m\n", ValueError("bad qubits"))

    def get():
        raise wrapped

    done = _result(get)
    assert done.error == "ValueError: bad qubits" and not done.cancelled
    text = one_line(RuntimeError(RAY_TRACE + "RuntimeError: worker died"))
    assert text == "RuntimeError: worker died"
    long = one_line(OSError("x" * 5000))
    assert len(long) == executors.MAX_ERROR and "\n" not in long and "\x1b" not in long


def test_a_failing_run_in_work_is_one_line(monkeypatch):
    def boom(run, **kw):
        raise ValueError("first line\n\x1b[1mlast line\x1b[0m")

    monkeypatch.setattr(executors, "train_run", boom)
    monkeypatch.setattr(executors, "environment", lambda: {})
    done = executors.work(object(), 0.0)
    assert done.error == "ValueError: first line last line"  # a message of two lines: kept whole


def test_a_message_of_several_lines_keeps_its_cause():
    """Only a traceback is cut to its last line: torch's weights-only load error puts its cause first
    (it was stored as the advice alone), and a `cause` that is no exception is no exception's place."""
    text = one_line(RuntimeError("Weights only load failed.\nUnsupported global: x.Y\nCheck the docs."))
    assert text == "RuntimeError: Weights only load failed. Unsupported global: x.Y Check the docs."
    odd = ValueError("disk full")
    odd.cause = "disk full"
    assert one_line(odd) == "ValueError: disk full"


@pytest.mark.parametrize("error", [None, "ValueError: x"])
def test_a_run_without_an_outcome_is_cancelled_only_when_stopped(error):
    assert not Done(None, error).cancelled


def test_a_cancelled_task_is_recorded_cancelled_in_one_line(tmp_path):
    """`_record` of a Ray task the stop cancelled: status cancelled, counted stopped, not failed."""
    from qtl.config import ModelConfig, TrainConfig
    from qtl.experiments.database import ResultsDB
    from qtl.experiments.runs import Run
    from qtl.experiments.sweeps import SweepReport, _record

    run = Run(ModelConfig("linear", pretrained=False), TrainConfig(epochs=1))
    report = SweepReport("s", 1, 0)
    with ResultsDB(tmp_path / "r.db") as db:
        db.add_sweep("s", "", [run])
        db.start(run.id)
        _record(db, run, Done(None, STOPPED), 0.0, None, report, None)
        (row,) = db.rows("s", status=None)
    assert (row["status"], row["error"]) == ("cancelled", STOPPED)
    assert (report.cancelled, report.failed, report.errors) == (1, 0, [])
