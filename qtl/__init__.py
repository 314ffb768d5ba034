"""qtl: quantum transfer learning, as a library.

Hybrid image classifiers whose last layers are a simulated variational quantum circuit, trained end to
end with the classical layers by automatic differentiation. This package never imports streamlit.

    import qtl

    result = qtl.fit(qtl.ModelConfig("quantum"), qtl.recipe("quantum"), checkpoint_path="models/q.pt")
    loaded = qtl.load_checkpoint("models/q.pt")
    qtl.predict(loaded, "bee.jpg")["q"].predicted       # ['bees']

The names below load lazily: `import qtl` costs no torch until one of them is used. The subpackages
follow the chain: `qtl.quantum` (circuit, noise, engines) -> `qtl.models` (backbones, heads,
variants, checkpoints) -> `qtl.data` -> `qtl.training` (`fit`) -> `qtl.experiments` (runs, sweeps,
statistics) -> `qtl.analysis` (inference, explanations, noise robustness) -> `qtl.deploy` (ONNX and
TorchScript export, the REST API); `qtl.utils` is plumbing.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "CircuitConfig": "qtl.quantum.circuit",
    "NoiseConfig": "qtl.quantum.noise",
    "make_engine": "qtl.quantum.engines",
    "ModelConfig": "qtl.config",
    "TrainConfig": "qtl.config",
    "MachineConfig": "qtl.config",
    "recipe": "qtl.config",
    "build_model": "qtl.models.variants",
    "load_backbone": "qtl.models.backbones",
    "save_checkpoint": "qtl.models.checkpoint",
    "load_checkpoint": "qtl.models.checkpoint",
    "open_dataset": "qtl.data.datasets",
    "fit": "qtl.training.fit",
    "Callback": "qtl.training.fit",
    "predict": "qtl.analysis.inference",
    "evaluate": "qtl.analysis.inference",
    "explain": "qtl.analysis.explain",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qtl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup skips this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
