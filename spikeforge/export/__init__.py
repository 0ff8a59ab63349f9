"""Leave the library with a model: NIR (neuromorphic hardware and other SNN libraries) and ONNX (runtimes).

* :func:`to_nir` / :func:`from_nir` — a ``nir.NIRGraph`` from a spiking network and back (``pip install
  spikeforge[nir]``); the discretisation is stated in :mod:`spikeforge.export.nir`.
* :func:`to_onnx` — an ONNX file, unrolled over T steps or one step with explicit membranes (``pip install
  spikeforge[onnx]``); see :mod:`spikeforge.export.onnx`.

Errors: :class:`UnsupportedModuleError` (a module, function or NIR node without a translation, named with its
path and type), :class:`DynamicControlFlowError` (a forward that branches on tensor values),
:class:`NIRFileError` (not a NIR file), all :class:`ExportError`.
"""

from ._common import DynamicControlFlowError, ExportError, NIRFileError, UnsupportedModuleError
from .nir import DEFAULT_DT, from_nir, to_nir
from .onnx import OnnxExport, to_onnx

__all__ = [
    "to_nir",
    "from_nir",
    "to_onnx",
    "OnnxExport",
    "DEFAULT_DT",
    "ExportError",
    "UnsupportedModuleError",
    "DynamicControlFlowError",
    "NIRFileError",
]
