"""`qtl.utils.threads.side_by_side`: tasks at once, each on one torch thread, in the caller's grad mode."""

from __future__ import annotations

import threading

import torch

from qtl.utils.threads import side_by_side


def _probe():
    return threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled()


def test_tasks_run_in_order_on_one_torch_thread_each_and_the_count_is_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        (main, main_threads, _), (worker, worker_threads, _) = side_by_side([_probe, _probe])
        assert main == threading.get_ident() and worker != main
        assert main_threads == worker_threads == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_workers_take_the_callers_grad_mode():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            assert [grad for *_, grad in side_by_side([_probe, _probe])] == [False, False]
        assert [grad for *_, grad in side_by_side([_probe, _probe])] == [True, True]
    finally:
        torch.set_num_threads(before)


def test_one_torch_thread_runs_the_tasks_in_turn_in_the_calling_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents = {ident for ident, *_ in side_by_side([_probe, _probe, _probe])}
        assert idents == {threading.get_ident()}
    finally:
        torch.set_num_threads(before)
