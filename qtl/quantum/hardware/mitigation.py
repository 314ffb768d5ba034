"""Error mitigation of measured <Z_i>: readout (M3, `mthree`) and zero-noise extrapolation (`mitiq`).

Provider-neutral: everything here works on counts, so IBM and Braket jobs share it. Counts of one
circuit over many samples are a dense `(N, 2**n)` array whose column k is the bitstring with bit i
(wire i) = (k >> i) & 1, i.e. Qiskit's order ("b_{n-1} ... b_0").

    readout: two calibration circuits run in the same job (every measured qubit prepared in |0>, then
             in |1>: mthree's "marginal" calibration) give one 2x2 assignment matrix per physical qubit;
             `mthree.M3Mitigation` corrects every sample's counts with them (matrix-free, in the
             subspace of observed bitstrings) and its quasi-distributions give <Z_i>.
    zne:     every gate G becomes G G^dag G at scale factor 3, G (G^dag G)^2 at 5: on IBM the compiled
             circuit is folded (`qtl.quantum.hardware.ibm.fold_compiled`, exactly 3x and 5x what the
             device runs), on Braket `fold` (`mitiq.zne.construct_circuits` with
             `fold_gates_at_random`) folds each sample's circuit; the folds run in the same job as the
             unfolded circuit, and `extrapolate` (`mitiq.zne.combine_results`) takes each <Z_i> to zero
             noise (Richardson or linear through 1, 3, 5).
    readout+zne: ZNE over readout-corrected <Z_i>.

mitiq and mthree are imported only when mitigation runs (mitiq pulls in cirq).
"""

from __future__ import annotations

import numpy as np

MITIGATIONS = ("none", "readout", "zne", "readout+zne")
SCALE_FACTORS = (1, 3, 5)
EXTRAPOLATIONS = ("richardson", "linear")
MAX_COUNTED_QUBITS = 16  # dense counts hold 2**n columns per sample


def check_mitigations(names) -> list[str]:
    """The mitigation names, deduplicated in order; ValueError for an unknown one."""
    out = list(dict.fromkeys(names))
    unknown = [m for m in out if m not in MITIGATIONS]
    if unknown or not out:
        raise ValueError(f"unknown mitigation {unknown or names!r}; choose from: {', '.join(MITIGATIONS)}")
    return out


def needs(mitigations, what: str) -> bool:
    """Does any of the mitigations need the readout calibration ("readout") or the folds ("zne")?"""
    return any(what in m.split("+") for m in mitigations)


def counts_refusal(n: int) -> str | None:
    """Why a job measuring `n` qubits could not be counted, in one line, or None. Counts are dense, 2**n
    columns per sample and program (1 GiB per 153 samples at 20 qubits), so wider circuits are refused
    before anything is submitted (`qtl.analysis.hardware_runs.prepare`), not after the device ran them."""
    if n <= MAX_COUNTED_QUBITS:
        return None
    return (
        f"hardware runs count up to {MAX_COUNTED_QUBITS} measured qubits (2**n bitstrings per sample), and "
        f"the circuit has {n}: use a checkpoint of at most {MAX_COUNTED_QUBITS} qubits"
    )


def counts_from_bits(bits: np.ndarray) -> np.ndarray:
    """(N, S, n) measured bits (wire order) -> (N, 2**n) int64 counts per bitstring."""
    n_samples, _, n = bits.shape
    if refusal := counts_refusal(n):
        raise ValueError(refusal)
    index = bits.astype(np.int64) @ (1 << np.arange(n, dtype=np.int64))  # (N, S)
    flat = index + (np.arange(n_samples, dtype=np.int64) << n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_samples << n).reshape(n_samples, 1 << n)


def _signs(n: int) -> np.ndarray:
    """(2**n, n): +1 where bit i of the bitstring is 0, -1 where it is 1 (the eigenvalue of Z_i)."""
    k = np.arange(1 << n)[:, None]
    return 1.0 - 2.0 * ((k >> np.arange(n)) & 1)


def counts_expvals(counts: np.ndarray) -> np.ndarray:
    """(N, 2**n) counts -> (N, n) float64 <Z_i> (the raw, unmitigated estimate)."""
    n = int(counts.shape[1]).bit_length() - 1
    probs = counts / counts.sum(axis=1, keepdims=True)
    return probs @ _signs(n)


def readout_matrices(cal0: np.ndarray, cal1: np.ndarray) -> np.ndarray:
    """Counts (2**n,) of the all-|0> and all-|1> calibration circuits -> (n, 2, 2) assignment matrices
    A[i][measured, prepared] per wire (mthree's layout: each column sums to 1)."""
    n = int(cal0.shape[0]).bit_length() - 1
    p1_given0 = (1.0 - counts_expvals(cal0[None])[0]) / 2  # P(read 1 | prepared 0), per wire
    p0_given1 = (1.0 + counts_expvals(cal1[None])[0]) / 2  # P(read 0 | prepared 1)
    out = np.empty((n, 2, 2))
    out[:, 0, 0], out[:, 1, 0] = 1 - p1_given0, p1_given0
    out[:, 0, 1], out[:, 1, 1] = p0_given1, 1 - p0_given1
    return out


MIN_READOUT_DETERMINANT = 0.1
"""A qubit's assignment matrix has determinant 1 - P(1|0) - P(0|1); below this its inverse would amplify
shot noise more than tenfold (at 0 it has none: a calibration of few shots, or a qubit that reads at
random), so readout mitigation refuses it (`readout_refusal`)."""


def readout_refusal(matrices: np.ndarray, calibrated: list[int], shots: int) -> str | None:
    """Why the calibration cannot correct readout, in one line, or None: a qubit whose matrix is singular
    or nearly so (`MIN_READOUT_DETERMINANT`)."""
    for q, m in zip(calibrated, matrices, strict=True):
        if np.linalg.det(m) < MIN_READOUT_DETERMINANT:
            return (
                f"qubit {q}'s readout calibration ({shots} shots) reads 0 as 1 with probability "
                f"{m[1, 0]:.2f} and 1 as 0 with {m[0, 1]:.2f}: too near random to invert; more shots, or "
                "no readout mitigation"
            )
    return None


def readout_corrected(
    counts: np.ndarray, matrices: np.ndarray, physical: list[list[int]], calibrated: list[int]
) -> np.ndarray:
    """M3-corrected <Z_i>: (N, 2**n) counts, (n, 2, 2) matrices from the calibration circuits whose wire i
    was measured on device qubit calibrated[i], physical[s][i] the device qubit that wire i of sample s
    was measured on -> (N, n) float64. Each qubit is corrected with its own matrix, wherever its wire
    sits. ValueError for a qubit the calibration did not measure."""
    import mthree

    n = matrices.shape[0]
    by_qubit = dict(zip(calibrated, matrices, strict=True))
    missing = sorted({q for row in physical for q in row} - set(by_qubit))
    if missing:
        raise ValueError(
            f"device qubits {missing} were measured but not calibrated (calibrated: {calibrated})"
        )
    cals: list = [None] * (max(by_qubit) + 1)
    for q, m in by_qubit.items():
        cals[q] = np.asarray(m, dtype=np.float32)
    mit = mthree.M3Mitigation()
    mit.cals_from_matrices(cals)
    dicts = [{format(k, f"0{n}b"): int(row[k]) for k in np.flatnonzero(row)} for row in counts]
    quasis = mit.apply_correction(dicts, [list(row) for row in physical])
    # Z on wire i: bit i is character n - 1 - i of a bitstring
    z_ops = ["".join("Z" if j == n - 1 - i else "I" for j in range(n)) for i in range(n)]
    return np.array([q.expval(z_ops) for q in quasis], dtype=np.float64)


def fold(circuits: list, scale_factors=SCALE_FACTORS[1:], seed: int = 0) -> dict[int, list]:
    """Each circuit (any mitiq frontend: Qiskit, Braket, Cirq) folded at each scale factor by
    `mitiq.zne.construct_circuits` with `fold_gates_at_random` (seeded) -> {scale: [folded circuits]}."""
    from mitiq import zne
    from mitiq.zne.scaling import fold_gates_at_random

    def scale(circuit, factor):
        return fold_gates_at_random(circuit, factor, seed=seed)

    out: dict[int, list] = {s: [] for s in scale_factors}
    for circuit in circuits:
        folds = zne.construct_circuits(circuit, list(scale_factors), scale)
        for s, folded in zip(scale_factors, folds, strict=True):
            out[s].append(folded)
    return out


def extrapolate(values: np.ndarray, scale_factors=SCALE_FACTORS, method: str = "richardson") -> np.ndarray:
    """(S, N, n) <Z_i> measured at S scale factors -> (N, n) zero-noise estimates, clipped to [-1, 1],
    by `mitiq.zne.combine_results` with Richardson's or a linear fit's `extrapolate`."""
    from mitiq import zne
    from mitiq.zne.inference import LinearFactory, RichardsonFactory

    if method not in EXTRAPOLATIONS:
        raise ValueError(f"unknown extrapolation {method!r}; choose from: {', '.join(EXTRAPOLATIONS)}")
    fit = RichardsonFactory.extrapolate if method == "richardson" else LinearFactory.extrapolate
    scales = [float(s) for s in scale_factors]
    flat = values.reshape(len(scales), -1)
    out = np.array([zne.combine_results(scales, list(flat[:, j]), fit) for j in range(flat.shape[1])])
    return np.clip(out.reshape(values.shape[1:]), -1.0, 1.0)
