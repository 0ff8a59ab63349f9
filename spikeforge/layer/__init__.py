"""Layers with a ``step_mode`` (SpikingJelly's ``activation_based.layer``).

* :mod:`.stateless` — ``torch.nn`` layers with ``step_mode`` (T folded into the batch in 'm' mode), weight
  standardisation (``WSConv2d``, ``WSLinear``), max unpooling.
* :mod:`.container` — ``SeqToANNContainer``, ``MultiStepContainer``, ``StepModeContainer``, time-last containers,
  element-wise and linear recurrent containers, STBP's ``tdLayer``.
* :mod:`.misc` — ``SynapseFilter``, ``Delay``, ``VotingLayer``, ``PrintShapeModule``, spike-count slots.
* :mod:`.dropout` — ``Dropout``/``Dropout2d`` with one mask per sequence, ``DropConnectLinear``.
* :mod:`.bn` — tdBN, TEBN, BNTT, NeuNorm and STBP's ``tdBatchNorm``.
* :mod:`.attention` — temporal-wise and multi-dimensional attention, spiking self-attention blocks.
* :mod:`.online_learning` — OTTT's spike/trace routing (``OTTTSequential``, ``GradwithTrace``).

Layers hold configuration (and, for the stateful ones, state) and use torch operations; spiking neurons live in
:mod:`spikeforge.neuron` only.
"""

from . import attention, bn, container, dropout, misc, online_learning, stateless
from .attention import *  # noqa: F401,F403
from .bn import *  # noqa: F401,F403
from .bn import _ThresholdDependentBatchNorm  # noqa: F401 - used by energy/export
from .container import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .misc import *  # noqa: F401,F403
from .online_learning import *  # noqa: F401,F403
from .stateless import *  # noqa: F401,F403
from .stateless import _MaxPoolSavingIndices, _step_layer  # noqa: F401

__all__ = [*stateless.__all__, *container.__all__, *misc.__all__, *dropout.__all__, *bn.__all__,
           *attention.__all__, *online_learning.__all__]

# the public classes are documented, named in messages and pickled as spikeforge.layer.<Name>
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
