"""The executors' window and errors without training: a stop with runs still queued ends the window (it
spun for ever on the processes and Ray backends)."""

from __future__ import annotations

import threading

from qtl.experiments.executors import Done, _windowed


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
        return [(handles[0], Done(None, "cancelled"))]

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
    # "a" and "b" were dispatched before the stop was seen; "c" and "d" never start (they stay pending)
    assert started == pool.submitted == ["a", "b"]
    assert sorted(run for _, run, _ in out) == ["a", "b"]
    assert pool.cancelled == ["b"]  # what was still in flight when the stop was seen


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
