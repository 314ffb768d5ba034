"""qtl: quantum transfer learning, as a library.

Hybrid image classifiers whose last layers are a simulated variational quantum circuit, trained end to
end with the classical layers by automatic differentiation. This package never imports streamlit.
"""

from qtl.circuit import CircuitConfig, Gate, gates

__version__ = "0.1.0"

__all__ = ["CircuitConfig", "Gate", "gates", "__version__"]
