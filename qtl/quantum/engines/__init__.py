"""Simulation engines for the variational circuit.

An engine is a parameter-free `torch.nn.Module` built from a `CircuitConfig`:

    engine(angles, weights) -> expvals
        angles:  (B, n_qubits) embedded angles
        weights: config.weight_shape trainable angles
        expvals: (B, n_qubits) <Z_i>, same dtype and device as `angles`

The weights live in the layer that owns the engine (see `qtl.models.heads`), so a checkpoint trained with one
engine runs on any other.

    native        the statevector engine (`NativeEngine`), with autograd
    density       its noisy path: batched density matrices
    mps           the matrix product state engine, for wide circuits
    pennylane     the circuit as a QNode on any installed PennyLane device
    adjoint       the adjoint method: a backward that keeps no intermediate states
    _compiler     `gates(config)` compiled to a `Plan`
    _statevector  tensor kernels: gate matrices, Kronecker products, layers, permutations, <Z>
    _memory       memory budgets and large buffers
    _units        a chain's layers as one matrix per wire group, CNOTs folded in
    _split        a chain's first layers as its two halves' states, and <Z> from their Gram matrices
    _halves       those layers as matrix products, backward by hand
    _wide         a wide circuit a chunk of samples at a time: halves, then units
    _brickwall    brick-wall circuits on an MPS, every site of one parity in one tensor
    _mps_strings  Pauli strings' expectations on an MPS, forward and backward by hand
    _pauli        Pauli strings carried through CNOTs, and moved onto a tensor's bra side
"""

from __future__ import annotations

from qtl.config import MPS, NATIVE
from qtl.quantum.circuit import STATEVECTOR_MAX_QUBITS, CircuitConfig

# Each engine module is imported when an engine of its kind is made (PennyLane's alone takes seconds).

#: PennyLane devices that simulate tensor networks, not statevectors: no 2**n wall.
TENSOR_NETWORK_DEVICES = ("default.tensor",)


def make_engine(config: CircuitConfig, name: str = NATIVE, **options):
    """Build an engine by name: "native", "mps", or the name of any installed PennyLane device.

    Options for PennyLane devices: diff_method (one of `qtl.config.DIFF_METHODS`) and shots (None for
    exact expectation values). Options for the native engine: memory_budget (bytes). Both take noise (a
    `qtl.quantum.noise.NoiseConfig`): the native engine then simulates density matrices (`engines.density`),
    a PennyLane engine inserts the same channels (on a mixed-state device such as "default.mixed").
    Options for the MPS engine: max_bond (None for exact), memory_budget; it simulates pure states only.
    Invalid combinations raise ValueError here, before any training starts; statevector engines refuse
    more than STATEVECTOR_MAX_QUBITS qubits (the MPS engine and TENSOR_NETWORK_DEVICES do not).
    """
    noise = options.pop("noise", None)
    if name == MPS:
        if noise is not None and not noise.is_ideal:
            raise ValueError(
                "the MPS engine simulates pure states: noise needs engine 'native' (density matrices) "
                "or a mixed-state PennyLane device"
            )
        from qtl.quantum.engines.mps import MPSEngine

        return MPSEngine(config, **options)
    if config.n_qubits > STATEVECTOR_MAX_QUBITS and name not in TENSOR_NETWORK_DEVICES:
        raise ValueError(
            f"engine {name!r} simulates a statevector of 2**n amplitudes per sample and stops at "
            f"{STATEVECTOR_MAX_QUBITS} qubits ({config.n_qubits} asked); use engine 'mps' for wider circuits"
        )
    if name == NATIVE:
        if noise is not None and not noise.is_ideal:
            from qtl.quantum.engines.density import DensityMatrixEngine

            return DensityMatrixEngine(config, noise, **options)
        from qtl.quantum.engines.native import NativeEngine

        return NativeEngine(config, **options)
    from qtl.quantum.engines.pennylane import PennyLaneEngine

    return PennyLaneEngine(config, device=name, noise=noise, **options)
