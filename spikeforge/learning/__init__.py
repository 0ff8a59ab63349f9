"""Local synaptic plasticity (SpikingJelly's ``activation_based.learning``).

* :class:`STDPLearner` — trace-based STDP for Linear / Conv1d / Conv2d synapses, single- or multi-step, whose
  update can be added to ``.grad`` so it combines with gradient descent in one optimiser step;
* :class:`MSTDPLearner`, :class:`MSTDPETLearner` — reward-modulated STDP (with an eligibility trace);
* :mod:`.rules` — the same rules as pure functions (SpikingJelly 2.0's ``functional.learning`` names, and the
  0.0.0.0.14 ``*_single_step`` names).
"""

from . import plasticity, rules
from .plasticity import MSTDPETLearner, MSTDPLearner, SpikeRecorder, STDPLearner
from .rules import *  # noqa: F401,F403

__all__ = ["plasticity", "rules", "STDPLearner", "MSTDPLearner", "MSTDPETLearner", "SpikeRecorder",
           *rules.__all__]
