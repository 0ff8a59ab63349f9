"""Shared test tables: every surrogate the kernels know, and specs for kernel-level tests.

Imported by the tests as ``cases`` (tests/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import torch

from spikeforge import surrogate
from spikeforge.spec import Leak, LeakLaw, NeuronKind, NeuronSpec, SurrogateKind, SurrogateSpec

# Every surrogate module with its library defaults, and the kernel-level SurrogateSpec it stands for.
SURROGATE_MODULES = [
    surrogate.Sigmoid, surrogate.ATan, surrogate.PiecewiseQuadratic, surrogate.PiecewiseExp, surrogate.SoftSign,
    surrogate.SuperSpike, surrogate.Erf, surrogate.Rect, surrogate.PiecewiseLeakyReLU, surrogate.STBPRectangle,
]
SURROGATES = [
    SurrogateSpec(SurrogateKind.SIGMOID, 4.0), SurrogateSpec(SurrogateKind.ATAN, 2.0),
    SurrogateSpec(SurrogateKind.PIECEWISE_QUADRATIC, 1.0), SurrogateSpec(SurrogateKind.PIECEWISE_EXP, 1.0),
    SurrogateSpec(SurrogateKind.SOFT_SIGN, 2.0), SurrogateSpec(SurrogateKind.SUPER_SPIKE, 1.0),
    SurrogateSpec(SurrogateKind.ERF, 2.0), SurrogateSpec(SurrogateKind.RECT, 1.0),
    SurrogateSpec(SurrogateKind.PIECEWISE_LEAKY_RELU, 1.0, 0.01),
]
SURROGATE_IDS = [s.kind.name for s in SURROGATES]


def kernel_case(decay: float, learnable: bool = False, **options):
    """A charge-fire-reset spec with charge coefficient ``decay`` and the decay argument the kernels take.

    decay 0 is an IF neuron; a fixed decay d is a LIF with τ = 1/d; a learnable one is a PLIF whose d is passed
    as a tensor. ``options`` are NeuronSpec fields (v_threshold, v_reset, detach_reset, decay_input, ...).
    Returns ``(spec, decay_arg)`` with ``decay_arg`` None or a 0-d tensor.
    """
    if learnable:
        return NeuronSpec(NeuronKind.PLIF, leak=Leak(LeakLaw.LEARNABLE_TIME_CONSTANT), **options), torch.tensor(decay)
    if decay == 0.0:
        return NeuronSpec(NeuronKind.IF, leak=Leak(LeakLaw.NONE), **options), None
    return NeuronSpec(NeuronKind.LIF, leak=Leak(LeakLaw.TIME_CONSTANT, 1.0 / decay), **options), None
