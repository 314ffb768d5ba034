"""Simulation engines for the variational circuit.

An engine is a parameter-free `torch.nn.Module` built from a `CircuitConfig`:

    engine(angles, weights) -> expvals
        angles:  (B, n_qubits) embedded angles
        weights: config.weight_shape trainable angles
        expvals: (B, n_qubits) <Z_i>, same dtype and device as `angles`

The weights live in the layer that owns the engine (see `qtl.heads`), so a checkpoint trained with one
engine runs on any other.
"""

from __future__ import annotations

from qtl.circuit import CircuitConfig
from qtl.config import NATIVE


def make_engine(config: CircuitConfig, name: str = NATIVE, **options):
    """Build an engine by name: "native", or the name of any installed PennyLane device.

    Options for PennyLane devices: diff_method (one of `qtl.config.DIFF_METHODS`) and shots (None for
    exact expectation values). Options for the native engine: memory_budget (bytes). Both take noise (a
    `qtl.noise.NoiseConfig`): the native engine then simulates density matrices (`engines.density`),
    a PennyLane engine inserts the same channels (on a mixed-state device such as "default.mixed").
    Invalid combinations raise ValueError here, before any training starts.
    """
    noise = options.pop("noise", None)
    if name == NATIVE:
        if noise is not None and not noise.is_ideal:
            from qtl.engines.density import DensityMatrixEngine

            return DensityMatrixEngine(config, noise, **options)
        from qtl.engines.native import NativeEngine

        return NativeEngine(config, **options)
    from qtl.engines.pennylane import PennyLaneEngine

    return PennyLaneEngine(config, device=name, noise=noise, **options)
