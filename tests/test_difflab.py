"""qtl.analysis.difflab: time per step and gradient agreement with a float64 reference."""

from __future__ import annotations

import torch

from qtl.analysis.difflab import LabCase, _batch, build_head, gradients, run_case, run_lab


class TestDiffLab:
    def test_pennylane_backprop_gradients_agree_with_reference(self):
        result = run_case(LabCase("default.qubit", "backprop", n_qubits=3, depth=2, batch=4), repeats=1)
        assert result.error is None and result.step_ms > 0
        assert result.max_grad_error < 1e-5

    def test_shot_noise_shows_in_the_agreement(self):
        """Exact engines agree to float32 rounding; 50-shot parameter-shift gradients visibly do not."""
        exact = run_case(LabCase("native", None, n_qubits=2, depth=1, batch=3), repeats=1)
        noisy = run_case(
            LabCase("default.qubit", "parameter-shift", n_qubits=2, depth=1, batch=3, shots=50), repeats=1
        )
        assert noisy.error is None
        assert exact.max_grad_error < 1e-5 and noisy.max_grad_error > 1e-3

    def test_impossible_combination_is_an_error_row(self):
        (result,) = run_lab([LabCase("default.qubit", "adjoint", n_qubits=2, depth=1, batch=2, shots=100)])
        assert result.error and result.step_ms is None

    def test_depth_zero_compares_the_gradients_that_exist(self):
        """Depth 0: the circuit has no angles (an empty (0, n) weight, left without a gradient by autograd);
        the embedding's gradient still runs through the circuit and is compared with the reference."""
        case = LabCase("native", None, n_qubits=3, depth=0, batch=2)
        head = build_head(case)
        x, y = _batch(case, 0, torch.float32)
        grads = gradients(head, x, y)
        assert grads["q_params"].shape == (0, 3) and grads["pre_net.weight"].abs().sum() > 0
        results = run_lab([case, LabCase("mps", None, n_qubits=3, depth=0, batch=2)], repeats=1)
        assert all(r.error is None and r.step_ms > 0 and r.max_grad_error < 1e-5 for r in results)

    def test_an_empty_batch_is_refused_by_name_and_its_series_skipped(self):
        small, large = (LabCase("native", None, n_qubits=q, depth=1, batch=0) for q in (2, 3))
        first, second = run_lab([small, large], repeats=1)
        assert first.error == "ValueError: a training step needs a batch of at least 1 sample, got 0"
        assert second.error == "skipped: a smaller size failed" and second.step_ms is None

    def test_any_failure_of_a_case_is_its_error_row(self, monkeypatch):
        """An error type outside the usual ones (here a KeyError from the step) ends its case, not the lab."""
        from qtl.analysis import difflab

        real = difflab.time_step

        def step(case, *args, **kwargs):
            if case.engine == "mps":
                raise KeyError("no such wire")
            return real(case, *args, **kwargs)

        monkeypatch.setattr(difflab, "time_step", step)
        broken, fine = run_lab([LabCase("mps", None, 2, 1, 2), LabCase("native", None, 2, 1, 2)], repeats=1)
        assert broken.error == "KeyError: 'no such wire'" and broken.step_ms is None
        assert fine.error is None and fine.max_grad_error < 1e-5
