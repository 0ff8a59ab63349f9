"""Spiking neuron modules (SpikingJelly ``activation_based.neuron`` names, signatures and semantics).

A neuron whose update is one of the :class:`spikeforge.spec.NeuronSpec` laws exposes it as ``module.spec`` and
runs through :mod:`spikeforge.functional` → :mod:`spikeforge.kernels` dispatch → a fused kernel; a neuron with
its own equations runs them as ordinary autograd operations over T (the *reference path*, logged once per class)
and has ``spec = None``:

* :mod:`.core` — ``IFNode``, ``LIFNode``, ``ParametricLIFNode`` and STBP's ``LIFSpike``;
* :mod:`.conversion` — ``ConversionIFNode``, the ANN→SNN IF neuron (per-channel threshold, signed spikes,
  half-threshold start);
* :mod:`.group` — ``GroupLIF``, SNN-MLP's full-precision group LIF;
* :mod:`.custom` — ``SimpleBaseNode`` / ``SimpleIFNode`` / ``SimpleLIFNode``: neurons written as Python
  ``neuronal_charge`` methods (also: subclass ``BaseNode`` and override ``neuronal_charge``), run step by step
  on the reference path (:mod:`._dynamics`), logged once per class;
* :mod:`.extra` — more SpikingJelly 2.0 neurons (non-spiking readouts, QIF, EIF, Izhikevich, CUBA LIF, KLIF,
  LIAF, CLIF, GLIF, RAF, ternary, ILIF, MPBN LIF, OTTT/SLTT, half-threshold IF), fused where a spec law fits,
  else reference;
* :mod:`.psn` — the parallel spiking neurons ``PSN``, ``MaskedPSN``, ``SlidingPSN`` (one GEMM over T);
* :mod:`.research` — DSR IF/LIF (rate-based backward), the ILC population neurons, the activation-aware IF,
  SpikeZIP's STBIF;
* :mod:`.noisy` — the colored-noise exploration neurons of deep RL (``Noisy*``, ``powerlaw_psd_gaussian``);
* :mod:`.few_spike` — few-spike neurons (``FewSpikeNode``, ``OutlierAwareThresholdNode``, ``HGNode``);
* :mod:`.flexsn` — ``FlexSN``, a neuron from a pure single-step function.
"""

from ..base import MemoryModule, StepModule
from ..spec import NeuronKind, NeuronSpec
from .conversion import ConversionIFNode
from .core import BaseNode, IFNode, LIFNode, LIFSpike, ParametricLIFNode
from .custom import SimpleBaseNode, SimpleIFNode, SimpleLIFNode
from .extra import (
    AdaptBaseNode,
    ComplementaryLIFNode,
    CUBALIFNode,
    EIFNode,
    GatedLIFNode,
    HalfThresholdIFNode,
    ILIFNode,
    IzhikevichNode,
    KLIFNode,
    LIAFNode,
    MPBNBaseNode,
    MPBNLIFNode,
    NonSpikingBaseNode,
    NonSpikingIFNode,
    NonSpikingLIFNode,
    OTTTLIFNode,
    QIFNode,
    RAFNode,
    SLTTLIFNode,
    TernaryIFNode,
    TernaryLIFNode,
)
from .few_spike import FewSpikeNode, FewSpikeTable, HGNode, OutlierAwareThresholdNode
from .flexsn import FlexSN
from .group import GroupLIF
from .noisy import (
    NoisyBaseNode,
    NoisyCUBALIFNode,
    NoisyILCBaseNode,
    NoisyILCCUBALIFNode,
    NoisyNonSpikingBaseNode,
    NoisyNonSpikingIFNode,
    powerlaw_psd_gaussian,
)
from .psn import PSN, MaskedPSN, SlidingPSN
from .research import (
    ActivationAwareIFNode,
    DSRIFNode,
    DSRLIFNode,
    ILCBaseNode,
    ILCCUBALIFNode,
    ILCIFNode,
    ILCLIFNode,
    STBIFNode,
)

__all__ = [
    "MemoryModule",
    "StepModule",
    "NeuronKind",
    "NeuronSpec",
    "BaseNode",
    "IFNode",
    "LIFNode",
    "ParametricLIFNode",
    "LIFSpike",
    "ConversionIFNode",
    "GroupLIF",
    "SimpleBaseNode",
    "SimpleIFNode",
    "SimpleLIFNode",
    "AdaptBaseNode",
    "ComplementaryLIFNode",
    "CUBALIFNode",
    "EIFNode",
    "GatedLIFNode",
    "HalfThresholdIFNode",
    "ILIFNode",
    "IzhikevichNode",
    "KLIFNode",
    "LIAFNode",
    "MPBNBaseNode",
    "MPBNLIFNode",
    "NonSpikingBaseNode",
    "NonSpikingIFNode",
    "NonSpikingLIFNode",
    "OTTTLIFNode",
    "QIFNode",
    "RAFNode",
    "SLTTLIFNode",
    "TernaryIFNode",
    "TernaryLIFNode",
    "PSN",
    "MaskedPSN",
    "SlidingPSN",
    "ActivationAwareIFNode",
    "DSRIFNode",
    "DSRLIFNode",
    "ILCBaseNode",
    "ILCCUBALIFNode",
    "ILCIFNode",
    "ILCLIFNode",
    "STBIFNode",
    "NoisyBaseNode",
    "NoisyCUBALIFNode",
    "NoisyILCBaseNode",
    "NoisyILCCUBALIFNode",
    "NoisyNonSpikingBaseNode",
    "NoisyNonSpikingIFNode",
    "powerlaw_psd_gaussian",
    "FewSpikeTable",
    "FewSpikeNode",
    "OutlierAwareThresholdNode",
    "HGNode",
    "FlexSN",
]
