"""Fast Poisson encoding, alone or fused with the linear layer that reads it (public entry points).

The functions go through :mod:`spikeforge.functional` like every other kernel call; the algorithm, the exact
spike probabilities and the random stream are described in :mod:`spikeforge.kernels.encoding`.
"""

from __future__ import annotations

from .functional import has_fast_poisson_kernels as has_fast_kernels
from .functional import poisson_linear, poisson_spikes

__all__ = ["poisson_linear", "poisson_spikes", "has_fast_kernels"]
