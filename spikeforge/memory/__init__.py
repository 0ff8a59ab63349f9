"""Training memory that does not grow with the number of time steps T.

* :func:`bit_spikes` — Conv / Linear / MaxPool layers whose input is binary spikes (known from the producing
  neuron's ``spec.binary_output``) save that input for backward as bits, 8 per byte, instead of float32
  (:mod:`.transform`, :mod:`.bits`); gradients unchanged.
* :func:`checkpoint_time` — a multi-step module runs in time chunks, each recomputed in backward, with the
  neuron state carried across chunk boundaries (:mod:`.checkpoint`); gradients as plain BPTT's.
* truncated BPTT, OTTT and SLTT are training-engine options: :mod:`spikeforge.training.online`.
"""

from .bits import BitPackedMaxPool, pack_bits, packed_nbytes, saved_as_bits, unpack_bits
from .checkpoint import checkpoint_time, chunk_bounds, remove_checkpoint_time
from .transform import binary_inputs, bit_spikes, is_binary_neuron, remove_bit_spikes

__all__ = ["bit_spikes", "remove_bit_spikes", "binary_inputs", "is_binary_neuron", "checkpoint_time",
           "remove_checkpoint_time", "chunk_bounds", "pack_bits", "unpack_bits", "packed_nbytes", "saved_as_bits",
           "BitPackedMaxPool"]
