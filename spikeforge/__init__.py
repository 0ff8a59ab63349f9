"""spikeforge: spiking neural networks on PyTorch.

The sub-modules follow SpikingJelly's ``activation_based`` names (``neuron``, ``surrogate``, ``layer``,
``functional``, ``encoding``, ``monitor``, ``learning``), so code written for it runs with only the import changed.
The STBP names (``tdLayer``, ``tdBatchNorm``, ``LIFSpike``) are exported here as STBP code imports them.
"""

__version__ = "0.1.0"

from . import encoding, functional, layer, learning, monitor, neuron, surrogate  # noqa: E402
from .layer import tdBatchNorm, tdLayer  # noqa: E402
from .neuron import LIFSpike  # noqa: E402

__all__ = [
    "__version__",
    "encoding",
    "functional",
    "layer",
    "learning",
    "monitor",
    "neuron",
    "surrogate",
    "tdBatchNorm",
    "tdLayer",
    "LIFSpike",
]
