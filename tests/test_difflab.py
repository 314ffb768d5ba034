"""qtl.analysis.difflab: time per step and gradient agreement with a float64 reference."""

from __future__ import annotations

from qtl.analysis.difflab import LabCase, run_case, run_lab


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
