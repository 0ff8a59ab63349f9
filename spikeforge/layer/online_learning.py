"""OTTT plumbing (Xiao et al. 2022, "Online training through time"; SpikingJelly's ``layer.online_learning``).

In OTTT training an OTTT neuron (``neuron.OTTTLIFNode``) returns ``[spike, trace]``, the trace
â_t = λ â_{t−1} + s_t of its spikes. The next synaptic layer computes its output from the spikes but takes its
weight gradient from the trace: ΔW = δ_t ⊗ â_t instead of δ_t ⊗ s_t. :class:`GradwithTrace` does that for one
layer, :class:`SpikeTraceOp` carries a parameter-free layer (pooling, flatten) over both, and
:class:`OTTTSequential` routes a Sequential automatically. In eval the neurons return spikes only and every module
runs as usual.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ReplaceforGrad(torch.autograd.Function):
    """Forward returns ``x_r``; backward sends the incoming gradient to both ``x`` and ``x_r``.

    ``ReplaceforGrad.apply(x, x_r)`` shows the value of ``x_r`` while the gradient also flows into the graph
    of ``x`` (used to give a layer the trace's gradient path and the spikes' value).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, x_r: torch.Tensor) -> torch.Tensor:
        return x_r

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, grad


def _value_of_spike_grad_of_trace(module: nn.Module, spike: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        value = module(spike)
    # the input shows the spikes' value, but the weight gradient of ``module`` sees the trace
    differentiable = module(ReplaceforGrad.apply(spike, trace))
    return ReplaceforGrad.apply(differentiable, value)


def _on_spike_and_trace(module: nn.Module, spike: torch.Tensor, trace: torch.Tensor) -> list[torch.Tensor]:
    spike = module(spike)
    with torch.no_grad():
        trace = module(trace)
    return [spike, trace]


class GradwithTrace(nn.Module):
    """Wrap a synaptic layer: input ``[spike, trace]``; output ``module(spike)`` with weight gradients from the
    trace (the output tensor's gradient flows into ``module`` evaluated at the trace)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        spike, trace = x
        return _value_of_spike_grad_of_trace(self.module, spike, trace)


class SpikeTraceOp(nn.Module):
    """Apply a parameter-free ``module`` to both parts of ``[spike, trace]`` (the trace without gradient)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        spike, trace = x
        return _on_spike_and_trace(self.module, spike, trace)


class OTTTSequential(nn.Sequential):
    """A Sequential that passes ``[spike, trace]`` pairs on: an OTTT neuron gets the spike part of the pair; a
    module without parameters maps both parts (:class:`SpikeTraceOp`); one with parameters takes its value from
    the spikes and its weight gradient from the trace (:class:`GradwithTrace`). Plain tensors pass as usual."""

    def forward(self, x):
        from .. import neuron  # the OTTT neuron class, looked up when used

        ottt_neuron = getattr(neuron, "OTTTLIFNode", ())
        for module in self:
            if isinstance(x, list):
                spike, trace = x
                if isinstance(module, ottt_neuron):
                    x = module(spike)
                elif next(module.parameters(), None) is None:
                    x = _on_spike_and_trace(module, spike, trace)
                else:
                    x = _value_of_spike_grad_of_trace(module, spike, trace)
            else:
                x = module(x)
        return x


__all__ = ["ReplaceforGrad", "GradwithTrace", "SpikeTraceOp", "OTTTSequential"]
