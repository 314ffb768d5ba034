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
        m3 = readout_corrected(counts, matrices, [[10, 11, 12]] * 2, [10, 11, 12])  # any device qubits
        full = matrices[2]
        for m in matrices[1::-1]:
            full = np.kron(full, m)  # bit n-1 is the most significant: A_2 (x) A_1 (x) A_0
        inverse = np.linalg.solve(full, (counts / shots).T).T
        np.testing.assert_allclose(m3, counts_expvals(inverse), atol=2e-4)
        exact = 1 - 2 * probs1
        assert np.abs(m3 - exact).max() < 0.03
        assert np.abs(counts_expvals(counts) - exact).max() > 0.08
        # the same qubits holding other wires: each is corrected with its own matrix (the matrices went
        # by wire, so qubit 11 got qubit 10's), and a qubit nobody calibrated is refused
        swapped = (
            counts.reshape(2, 2, 2, 2)[:, :, :, [0, 1]].transpose(0, 1, 3, 2).reshape(2, 8)
        )  # wires 0, 1
        m3_swapped = readout_corrected(swapped, matrices, [[11, 10, 12]] * 2, [10, 11, 12])
        np.testing.assert_allclose(m3_swapped[:, [1, 0, 2]], m3, atol=1e-6)
        with pytest.raises(ValueError, match=r"device qubits \[13\] were measured but not calibrated"):
            readout_corrected(counts, matrices, [[10, 11, 13]] * 2, [10, 11, 12])

    def test_a_calibration_too_near_random_is_refused_by_qubit(self):
        """One shot per calibration circuit that read 1 for a prepared 0 on wire 1: a singular matrix (it
        gave NaN <Z>, scored as an accuracy); a 50/50 qubit the same; a good one passes."""
        from qtl.quantum.hardware.mitigation import readout_refusal

        cal0, cal1 = np.zeros(8, np.int64), np.zeros(8, np.int64)
        cal0[0b010], cal1[0b111] = 1, 1  # wire 1 read 1 whether prepared 0 or 1
        matrices = readout_matrices(cal0, cal1)
        said = readout_refusal(matrices, [5, 8, 11], shots=1)
        assert said.startswith("qubit 8's readout calibration (1 shots) reads 0 as 1 with probability 1.00")
        good = np.array([[[0.97, 0.04], [0.03, 0.96]]] * 3)
        assert readout_refusal(good, [5, 8, 11], shots=4000) is None
        assert "qubit 11" in readout_refusal(
            np.concatenate([good[:2], [[[0.5, 0.45], [0.5, 0.55]]]]), [5, 8, 11], 4000
        )


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

    @pytest.mark.parametrize("backend", ["FakeManilaV2", "FakeSherbrooke"])
    def test_folds_of_the_compiled_circuit_scale_what_the_device_runs(self, backend):
        """A ring circuit that needs routing (cx on FakeManilaV2, ecr on FakeSherbrooke): each fold of the
        compiled circuit runs exactly 3x and 5x its two-qubit gates and one-qubit pulses, measures the same
        device qubits, and is the same unitary. Folding the logical circuit gave 27/51/75 two-qubit gates
        on FakeManilaV2, and mitiq's folds of the compiled one 5x and 9x the ECR gates."""
        from qiskit.quantum_info import Operator

        from qtl.quantum.hardware.backends import parameter_values
        from qtl.quantum.hardware.ibm import IBMDevice, fold_compiled

        device = IBMDevice(backend)
        config = CircuitConfig(4, 3, "ring", "rot")
        isa, x, w = device.compile(config).circuit
        angles, weights = torch.rand(1, 4), torch.rand(config.weight_shape)

        def pulses(circuit) -> tuple[int, int]:  # (two-qubit gates, one-qubit pulses; rz is virtual)
            ops = [i.operation for i in circuit.data if i.operation.name not in ("measure", "barrier")]
            return sum(o.num_qubits == 2 for o in ops), sum(o.num_qubits == 1 and o.name != "rz" for o in ops)

        def measured(circuit) -> list[int]:
            return [
                circuit.find_bit(i.qubits[0]).index for i in circuit.data if i.operation.name == "measure"
            ]

        def unitary(circuit) -> Operator:
            bound = circuit.assign_parameters(parameter_values(circuit, x, w, angles, weights)[0])
            return Operator(bound.remove_final_measurements(inplace=False))

        two, one = pulses(isa)
        assert two > config.n_qubits  # routed: more two-qubit gates than the ring's own
        for scale in (3, 5):
            folded = fold_compiled(isa, scale, device.backend)
            assert pulses(folded) == (scale * two, scale * one)
            assert measured(folded) == measured(isa)
            if device.num_qubits <= 5:  # a 2**5 x 2**5 unitary
                assert unitary(folded).equiv(unitary(isa))
        with pytest.raises(ValueError, match="odd whole number"):
            fold_compiled(isa, 2, device.backend)


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

    def test_every_pulse_counts_whatever_the_backend_calls_it(self):
        """FakeBoeblingenV2 runs u1/u2/u3 (no sx or x): its u2/u3 pulses count, u1 (virtual) does not,
        so its one-qubit noise is not 0 (it was: only sx and x were counted); the pulse error is the mean
        of what the backend reports for the gates the circuit uses."""
        from qtl.quantum.hardware.backends import get_backend
        from qtl.quantum.hardware.calibration import calibration, noise_from_backend

        config = CircuitConfig(4, 2)
        backend = get_backend("FakeBoeblingenV2")
        assert not {"sx", "x"} & set(backend.target.operation_names)
        c = calibration(config, backend)
        assert c["k1"] > 0 and c["pulse_error"] > 0 and c["pulse_duration"] > 0
        noise = noise_from_backend(config, backend)
        assert noise.depolarizing > 0 and noise.amplitude_damping > 0

    def test_a_backend_narrower_than_the_circuit_is_one_line(self, capsys, tmp_path):
        """6 qubits from FakeManilaV2's 5 (`--noise-from`): the device's own words, not qiskit's
        CircuitTooWideForTarget traceback."""
        from conftest import make_image_folder

        from qtl import cli
        from qtl.quantum.hardware.calibration import noise_from_backend

        with pytest.raises(ValueError, match="^FakeManilaV2 has 5 qubits; the circuit needs 6$"):
            noise_from_backend(CircuitConfig(6, 2), "FakeManilaV2")
        argv = ["train", "quantum", "--qubits", "6", "--noise-from", "FakeManilaV2", "--random-init"]
        data = make_image_folder(tmp_path / "tiny")
        assert cli.main([*argv, "--data", str(data), "--out", str(tmp_path / "q.pt")]) != 0
        assert "FakeManilaV2 has 5 qubits; the circuit needs 6" in capsys.readouterr().err
        assert not (tmp_path / "q.pt").exists()
