"""Error mitigation against independent references: M3 readout correction against the exact inverse of
the tensored assignment matrix, mitiq's folds against the unfolded unitary, ZNE's fits against numpy's,
and a backend's calibration mapped onto a NoiseConfig against the reported numbers and the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qtl.quantum.circuit import CircuitConfig
from qtl.quantum.hardware.mitigation import (
    check_mitigations,
    counts_expvals,
    counts_from_bits,
    extrapolate,
    fold,
    readout_corrected,
    readout_matrices,
)

RNG = np.random.default_rng(7)


def flip(bits: np.ndarray, p01: np.ndarray, p10: np.ndarray) -> np.ndarray:
    """Readout error per wire: 0 reads as 1 with p01[i], 1 reads as 0 with p10[i]."""
    u = RNG.random(bits.shape)
    return np.where(bits == 0, u < p01, u >= p10).astype(np.uint8)


class TestCounts:
    def test_counts_and_expvals_match_the_bits(self):
        """Dense counts hold every shot once, and <Z_i> from counts is 1 - 2 * mean(bit i)."""
        bits = RNG.integers(0, 2, size=(5, 300, 3), dtype=np.uint8)
        counts = counts_from_bits(bits)
        assert counts.shape == (5, 8) and (counts.sum(1) == 300).all()
        assert counts[2, 0b101] == ((bits[2, :, 0] == 1) & (bits[2, :, 1] == 0) & (bits[2, :, 2] == 1)).sum()
        np.testing.assert_allclose(counts_expvals(counts), 1 - 2 * bits.mean(axis=1), atol=1e-12)

    def test_unknown_mitigation(self):
        assert check_mitigations(["zne", "none", "zne"]) == ["zne", "none"]
        with pytest.raises(ValueError, match="unknown mitigation.*readout\\+zne"):
            check_mitigations(["magic"])


class TestReadout:
    def test_m3_equals_the_exact_inverse_and_removes_the_bias(self):
        """Asymmetric readout errors on 3 wires: calibration from prepared-0/1 shots gives each wire's
        matrix; M3's <Z_i> equals the exact inverse of the tensored matrix applied to the counts (all 8
        bitstrings observed, so M3's subspace is the whole space) and lands within shot noise of the
        true <Z_i>, where the raw estimate is off by the readout bias."""
        n, shots = 3, 20000
        p01, p10 = np.array([0.02, 0.05, 0.08]), np.array([0.04, 0.10, 0.03])
        cal = [flip(np.full((1, shots, n), b, np.uint8), p01, p10) for b in (0, 1)]
        matrices = readout_matrices(counts_from_bits(cal[0])[0], counts_from_bits(cal[1])[0])
        np.testing.assert_allclose(matrices[:, 1, 0], p01, atol=0.01)
        np.testing.assert_allclose(matrices[:, 0, 1], p10, atol=0.01)
        probs1 = np.array([[0.1, 0.5, 0.85], [0.7, 0.3, 0.2]])  # P(bit i = 1) for two samples
        true = RNG.random((2, shots, n)) < probs1[:, None, :]
        counts = counts_from_bits(flip(true.astype(np.uint8), p01, p10))
        m3 = readout_corrected(counts, matrices, [[10, 11, 12]] * 2)  # any device qubits
        full = matrices[2]
        for m in matrices[1::-1]:
            full = np.kron(full, m)  # bit n-1 is the most significant: A_2 (x) A_1 (x) A_0
        inverse = np.linalg.solve(full, (counts / shots).T).T
        np.testing.assert_allclose(m3, counts_expvals(inverse), atol=2e-4)
        exact = 1 - 2 * probs1
        assert np.abs(m3 - exact).max() < 0.03
        assert np.abs(counts_expvals(counts) - exact).max() > 0.08


class TestZNE:
    def test_richardson_and_linear_fits(self):
        """Richardson through 1, 3, 5 is exact for a quadratic in the scale; linear equals numpy's
        least-squares line at 0; both clip to [-1, 1]."""
        scales = np.array([1.0, 3.0, 5.0])
        quad = 0.8 - 0.05 * scales - 0.004 * scales**2
        values = np.stack([np.full((2, 3), v) for v in quad])  # (S, N, n)
        np.testing.assert_allclose(extrapolate(values, scales, "richardson"), 0.8, atol=1e-12)
        line = np.polyfit(scales, quad, 1)[1]
        np.testing.assert_allclose(extrapolate(values, scales, "linear"), line, atol=1e-12)
        steep = np.stack([np.full((1, 1), v) for v in (0.9, 0.5, 0.1)])
        assert extrapolate(steep, scales, "linear")[0, 0] == 1.0
        with pytest.raises(ValueError, match="unknown extrapolation"):
            extrapolate(values, scales, "cubic")

    def test_folds_keep_the_unitary_and_scale_the_gates(self):
        """mitiq's folds of the model circuit at 3 and 5 are the same unitary with 3x and 5x the gates."""
        from qiskit.quantum_info import Operator

        from qtl.quantum.hardware.backends import parameter_values, qiskit_circuit

        config = CircuitConfig(3, 2)
        qc, x, w = qiskit_circuit(config, measure=False)
        values = parameter_values(qc, x, w, torch.rand(1, 3), torch.rand(config.weight_shape))
        bound = qc.assign_parameters(values[0])
        folds = fold([bound], (3, 5), seed=1)
        for scale, (folded,) in folds.items():
            assert len(folded.data) == scale * len(bound.data)
            assert Operator(folded).equiv(Operator(bound))


class TestCalibration:
    def test_mapping_matches_the_reported_numbers(self):
        """FakeManilaV2 for a 3-qubit circuit: readout is the mean reported measurement error of the
        measured qubits, the dampings follow T1/T2 and the gate time, and the one-qubit channel's average
        infidelity equals the reported pulse error compounded over the pulses per logical gate."""
        from qiskit.quantum_info import average_gate_fidelity

        from qtl.quantum.hardware.backends import get_backend
        from qtl.quantum.hardware.calibration import _channel, calibration, noise_from_backend

        config = CircuitConfig(3, 2)
        backend = get_backend("FakeManilaV2")
        c = calibration(config, backend)
        noise = noise_from_backend(config, backend)
        reported = np.mean([backend.target["measure"][(q,)].error for q in c["qubits"]])
        assert noise.readout == pytest.approx(reported, rel=1e-3)
        t = c["k2"] * c["two_qubit_duration"]
        assert noise.amplitude_damping_2q == pytest.approx(1 - np.exp(-t / c["t1"]), rel=1e-3)
        assert 0 < noise.depolarizing_2q < 0.05 and noise.shots is None
        channel = _channel(noise.depolarizing, noise.amplitude_damping, noise.phase_damping)
        r1 = 1 - (1 - c["pulse_error"]) ** c["k1"]
        assert 1 - average_gate_fidelity(channel) == pytest.approx(r1, rel=2e-3)
