"""Local synaptic plasticity (SpikingJelly's ``activation_based.learning``).

* :class:`STDPLearner` — trace-based STDP for Linear / Conv1d / Conv2d synapses, single- or multi-step, whose
  update can be added to ``.grad`` so it combines with gradient descent in one optimiser step;
* :class:`MSTDPLearner`, :class:`MSTDPETLearner` — reward-modulated STDP (with an eligibility trace);
* :mod:`.rules` — the same rules as pure functions (SpikingJelly 2.0's ``functional.learning`` names, and the
  0.0.0.0.14 ``*_single_step`` names);
* :mod:`.online_learning` — OTTT and FPTT training loops that step the optimiser at every time step.
"""

from . import online_learning, plasticity, rules
from .online_learning import fptt_online_training, fptt_online_training_init_w_ra, ottt_online_training
from .plasticity import MSTDPETLearner, MSTDPLearner, SpikeRecorder, STDPLearner
from .rules import *  # noqa: F401,F403

__all__ = ["plasticity", "rules", "online_learning", "fptt_online_training", "fptt_online_training_init_w_ra",
           "ottt_online_training", "STDPLearner", "MSTDPLearner", "MSTDPETLearner", "SpikeRecorder",
           *rules.__all__]
