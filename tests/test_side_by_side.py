"""`qtl.utils.threads.side_by_side`: tasks at once, each on one torch thread, in the caller's grad mode."""

from __future__ import annotations

import threading

import pytest
import torch

from qtl.utils.threads import side_by_side


def _probe():
    return threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test (the machine's is restored after)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_tasks_run_in_order_on_one_torch_thread_each_and_the_count_is_restored(torch_threads):
    torch_threads(2)
    (main, main_threads, _), (worker, worker_threads, _) = side_by_side([_probe, _probe])
    assert main == threading.get_ident() and worker != main
    assert main_threads == worker_threads == 1
    assert torch.get_num_threads() == 2


def test_workers_take_the_callers_grad_mode(torch_threads):
    torch_threads(2)
    with torch.no_grad():
        assert [grad for *_, grad in side_by_side([_probe, _probe])] == [False, False]
    assert [grad for *_, grad in side_by_side([_probe, _probe])] == [True, True]


def test_one_torch_thread_runs_the_tasks_in_turn_in_the_calling_thread(torch_threads):
    torch_threads(1)
    idents = {ident for ident, *_ in side_by_side([_probe, _probe, _probe])}
    assert idents == {threading.get_ident()}
