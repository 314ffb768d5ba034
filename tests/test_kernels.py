"""The kernel baselines: the fidelity kernel of the native engine against PennyLane's statevector, and
the SVMs (qtl.models.kernels) against scikit-learn used directly."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pennylane as qml
import pytest
import torch

from qtl.config import DataRegime, ModelConfig, recipe
from qtl.data.features import FeatureSet
from qtl.models.kernels import KernelSVM
from qtl.quantum.circuit import CircuitConfig, gates
from qtl.quantum.kernel import FeatureMap, product_kernel
from qtl.training.fit import fit


def pennylane_states(config: CircuitConfig, angles: torch.Tensor) -> np.ndarray:
    """(N, 2**n) states of the kernel's circuit (re-uploading, trainable angles 0) by default.qubit."""
    device = qml.device("default.qubit", wires=config.n_qubits)
    ops = {"Hadamard": qml.Hadamard, "RY": qml.RY, "RZ": qml.RZ, "CNOT": qml.CNOT}

    @qml.qnode(device)
    def state(x):
        for g in gates(dataclasses.replace(config, reupload=True)):
            if g.param is None:
                ops[g.name](wires=g.wires)
            else:
                ops[g.name](x[g.param[1]] if g.param[0] == "input" else 0.0, wires=g.wires)
        return qml.state()

    return np.stack([np.asarray(state(a.numpy())) for a in angles])


@pytest.mark.parametrize("config", [CircuitConfig(3, 2), CircuitConfig(4, 3, "ring", "rot")])
def test_fidelity_kernel_matches_pennylane_states(config):
    """k(a, b) = |<psi(a)|psi(b)>|^2 with the states from PennyLane: equal to 1e-12, a Gram matrix
    with unit diagonal and no negative eigenvalue."""
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(5, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * math.pi
    b = (torch.rand(4, config.n_qubits, generator=g, dtype=torch.float64) - 0.5) * math.pi
    sa, sb = pennylane_states(config, a), pennylane_states(config, b)
    want = np.abs(sa.conj() @ sb.T) ** 2
    fm = FeatureMap(config)
    np.testing.assert_allclose(fm.kernel(a, b).numpy(), want, atol=1e-12)
    gram = fm.kernel(a, a).numpy()
    assert np.allclose(np.diag(gram), 1) and np.linalg.eigvalsh(gram).min() > -1e-12


def test_without_blocks_the_kernel_is_the_product_of_one_qubit_kernels():
    """Depth 0 (data only in the first layer): the closed form prod cos^2((a_i - b_i) / 2)."""
    a, b = torch.rand(6, 4, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    torch.testing.assert_close(FeatureMap(CircuitConfig(4, 0)).kernel(a, b), product_kernel(a, b))


def blobs(n: int, seed: int, width: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian classes in `width` dimensions whose means differ along the first 3."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, width, generator=g)
    x[:, :3] += 2.5 * (2 * y[:, None] - 1)
    return x, y


def test_rbf_svm_is_scikit_learns_svc_on_the_same_inputs():
    """The chosen RBF SVM predicts exactly what scikit-learn's SVC with the same C and gamma predicts on
    the head's inputs, and it separates two clear classes."""
    from sklearn.svm import SVC

    (xt, yt), (xv, yv), (xs, ys) = blobs(60, 0), blobs(30, 1), blobs(40, 2)
    head = KernelSVM(32, 2, "rbf-svm", CircuitConfig(4, 1))
    chosen = head.fit(xt, yt, xv, yv)
    assert chosen["val_acc"] >= 0.9 and chosen["C"] in (0.1, 1.0, 10.0, 100.0)
    reference = SVC(C=chosen["C"], kernel="rbf", gamma=chosen["width"] / 4).fit(head.inputs(xt).numpy(), yt)
    want = reference.predict(head.inputs(xs).numpy())
    assert (head(xs).argmax(1).numpy() == want).all() and (want == ys.numpy()).mean() >= 0.9


def test_fit_runs_both_kernels_with_selection_on_val_and_one_test_score():
    """fit() on (train, val, test) features: one history row, C and width chosen on val, test read
    once; the quantum kernel separates the blobs too."""
    data = (blobs(60, 0, 512), blobs(30, 1, 512), blobs(40, 2, 512))  # resnet18's feature width
    sets = [FeatureSet(x, y, [f"{i}" for i in range(len(y))], ["a", "b"]) for x, y in data]
    for variant in ("quantum-kernel", "rbf-svm"):
        tc = dataclasses.replace(recipe(variant), regime=DataRegime())
        result = fit(
            ModelConfig(variant, pretrained=False, circuit=CircuitConfig(4, 2)), tc, features=tuple(sets)
        )
        m = result.metrics
        assert len(result.history) == 1 and m["val_loss"] is None and m["n_test"] == 40
        assert m["test_acc"] >= 0.85 and result.checkpoint_path is None
