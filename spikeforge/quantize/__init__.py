"""Quantisation: fake-quant QAT, an integer fake-quant model, its integer export and simulator, hardware profiles.

=======================================  ==========================================================================
``quantize_tensor(w, bits)``             the STBP reference's symmetric signed fake quantisation (per tensor;
                                         ``per_channel=True``: one scale per output channel), with the STE
``prepare_qat(model, bits, per_channel)`` in place: Conv/Linear compute with fake-quantised weights, the float
                                         master copy stays the parameter (any model; the reference's QAT)
``prepare_qat(..., integer=True, ...)``  in place: the exact fake-quant twin of an integer network (input
                                         quantiser, integer weights/biases/thresholds, leak as a shift or an
                                         integer fraction, saturating membrane, BatchNorm folded), for models
                                         with ``integer_graph()`` (the STBP zoo); equations in :mod:`.integer`
``export_integer(model)``                → :class:`IntegerNetwork` (``run``, ``save``, ``size_bytes``), checked
                                         against a :class:`HardwareProfile`
``load_integer(path)``                   read a saved network (manifest.json + arrays.npz, no pickle)
``compare_spikes(model, net, x, y)``     every spike of every layer, fake-quant vs integer
``GENERIC_INT8``, ``GENERIC_INT4``       generic hardware profiles; ``generic_profile(bits)``
=======================================  ==========================================================================
"""

from .fake import FakeQuantConfig, is_fake_quant, prepare_qat, quantize_tensor, weight_codes, weight_scale
from .integer import IntegerPlan, fold_batchnorm_into, is_integer_prepared, leak_fraction, prepare_integer
from .network import (
    IntegerFileError,
    IntegerNetwork,
    check_profile,
    compare_spikes,
    export_integer,
    load_integer,
)
from .profile import (
    GENERIC_INT4,
    GENERIC_INT8,
    PROFILES,
    HardwareProfile,
    ProfileViolationError,
    generic_profile,
)

__all__ = [
    "quantize_tensor", "weight_scale", "weight_codes", "FakeQuantConfig", "prepare_qat", "is_fake_quant",
    "prepare_integer", "IntegerPlan", "is_integer_prepared", "fold_batchnorm_into", "leak_fraction",
    "export_integer", "load_integer", "IntegerNetwork", "IntegerFileError", "compare_spikes", "check_profile",
    "HardwareProfile", "ProfileViolationError", "GENERIC_INT8", "GENERIC_INT4", "PROFILES", "generic_profile",
]
