"""Stateful synapses, delays and small utility layers (SpikingJelly's ``layer.misc``)."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from .. import functional as F
from ..base import MemoryModule, StepModule
from .stateless import fold_time

_log = logging.getLogger("spikeforge.layer")


class SynapseFilter(MemoryModule):
    """Exponentially decaying synaptic current driven by spikes (a LIF neuron with an infinite threshold).

    τ dI/dt = −I between spikes and I ← I + 1 at a spike; discretised, with input S[t]:

        I[t] = I[t−1] − (1 − S[t]) · I[t−1] / τ + S[t],   I[−1] = 0.

    With ``learnable=True`` the rate is 1/τ = sigmoid(w), w a parameter initialised to −ln(τ − 1). τ must be > 1.
    The output is the current I (same shape as the input); it persists until reset.
    """

    def __init__(self, tau: float = 100.0, learnable: bool = False, step_mode: str = "s"):
        super().__init__(step_mode)
        if not tau > 1:
            raise ValueError(f"SynapseFilter: tau must be > 1, got {tau}")
        self.learnable = learnable
        if learnable:
            self.w = nn.Parameter(torch.as_tensor(-math.log(tau - 1.0)))
        else:
            self.tau = tau
        self.register_memory("out_i", 0.0)

    def _rate(self):
        return self.w.sigmoid() if self.learnable else 1.0 / self.tau

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        prev = self.out_i
        if not isinstance(prev, torch.Tensor) or prev.shape != x.shape:
            prev = torch.full_like(x, float(prev) if not isinstance(prev, torch.Tensor) else 0.0)
        self.out_i = F.synapse_filter_step(x, prev, self._rate())
        return self.out_i

    def extra_repr(self) -> str:
        if self.learnable:
            with torch.no_grad():
                tau = float(1.0 / self.w.sigmoid())
        else:
            tau = self.tau
        return f"tau={tau}, learnable={self.learnable}, step_mode={self.step_mode}"


class PrintShapeModule(nn.Module):
    """Identity that logs ``ext_str`` and the input shape at DEBUG level (logger ``spikeforge.layer``)."""

    def __init__(self, ext_str: str = "PrintShapeModule"):
        super().__init__()
        self.ext_str = ext_str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _log.debug("%s shape=%s", self.ext_str, tuple(x.shape))
        return x


class VotingLayer(StepModule, nn.Module):
    """Average each group of ``voting_size`` consecutive units of the last dimension: [..., C·v] → [..., C].

    A population of ``voting_size`` output neurons votes for each class (average pooling with kernel = stride =
    ``voting_size`` on the last dimension; a remainder shorter than ``voting_size`` is dropped).
    """

    def __init__(self, voting_size: int = 10, step_mode: str = "s"):
        nn.Module.__init__(self)
        self.voting_size = voting_size
        self.step_mode = step_mode

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = torch_F.avg_pool1d(x.reshape(-1, 1, x.shape[-1]), self.voting_size, self.voting_size)
        return y.reshape(*lead, y.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return self.single_step_forward(x)
        return fold_time(x, self.single_step_forward)

    def extra_repr(self) -> str:
        return f"voting_size={self.voting_size}, step_mode={self.step_mode}"


class Delay(MemoryModule):
    """y[t] = x[t − delay_steps], zeros before the first input arrives.

    The last ``delay_steps`` inputs are kept in ``queue`` (oldest first) across calls until reset, so a sequence
    fed step by step ('s') or in chunks ('m') gives the same outputs. Gradients flow to the delayed inputs.
    """

    def __init__(self, delay_steps: int, step_mode: str = "s"):
        super().__init__(step_mode)
        if not isinstance(delay_steps, int) or isinstance(delay_steps, bool) or delay_steps < 0:
            raise ValueError(f"Delay: delay_steps must be a non-negative int, got {delay_steps!r}")
        self._delay_steps = delay_steps
        self.register_memory("queue", [])

    @property
    def delay_steps(self) -> int:
        return self._delay_steps

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        y, queue = F.delay_step(x, tuple(self.queue), self.delay_steps)
        self.queue = list(queue)
        return y

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        d, T, held = self.delay_steps, x_seq.shape[0], len(self.queue)
        if d == 0:
            return x_seq
        full = torch.cat([torch.stack(self.queue), x_seq]) if held else x_seq
        # output step t is full[held + t - d]; indices below 0 are the zeros before the first input
        first = held - d
        parts = []
        if first < 0:
            parts.append(x_seq.new_zeros((min(-first, T), *x_seq.shape[1:])))
        start = max(first, 0)
        stop = held + T - d
        if stop > start:
            parts.append(full[start:stop])
        self.queue = list(full[-d:].unbind(0))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def extra_repr(self) -> str:
        return f"delay_steps={self.delay_steps}, step_mode={self.step_mode}"


class SpikeCountToBinary(StepModule, nn.Module):
    """Expand integer spike counts in [0, num_slots] into ``num_slots`` binary slots each: [T, N, ...] → [T·S, N, ...].

    Slot s of a count c is 1 when s < c. The backward pass is straight-through with derivative 1/num_slots per slot
    (so the slots of one bin average their gradients). Multi-step only. By default it converts in eval mode and is
    the identity in training (``always_convert=True``: always).
    """

    def __init__(self, num_slots: int, always_convert: bool = False) -> None:
        nn.Module.__init__(self)
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_slots = num_slots
        self.always_convert = always_convert
        self.step_mode = "m"

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.training and not self.always_convert:
            return x_seq
        if x_seq.dim() < 2 or x_seq.shape[0] == 0:
            raise ValueError(f"SpikeCountToBinary expects x_seq [T, N, ...] with T > 0, got {tuple(x_seq.shape)}")
        counts = x_seq.unsqueeze(1)  # [T, 1, N, ...]
        slot = torch.arange(self.num_slots, device=x_seq.device).view(1, -1, *([1] * (x_seq.dim() - 1)))
        hard = (slot < counts).to(x_seq.dtype)
        soft = counts / self.num_slots
        return (hard + (soft - soft.detach())).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"num_slots={self.num_slots}, always_convert={self.always_convert}"


class TemporalBinSum(StepModule, nn.Module):
    """Sum every ``num_slots`` consecutive time steps: [T, N, ...] → [ceil(T / S), N, ...] (zero-padded at the end).

    The inverse of :class:`SpikeCountToBinary` for the layers between them. Multi-step only; identity in
    training unless ``always_convert``.
    """

    def __init__(self, num_slots: int, always_convert: bool = False) -> None:
        nn.Module.__init__(self)
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.num_slots = num_slots
        self.always_convert = always_convert
        self.step_mode = "m"

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.training and not self.always_convert:
            return x_seq
        if x_seq.dim() < 2 or x_seq.shape[0] == 0:
            raise ValueError(f"TemporalBinSum expects x_seq [T, N, ...] with T > 0, got {tuple(x_seq.shape)}")
        extra = -x_seq.shape[0] % self.num_slots
        if extra:
            x_seq = torch.cat([x_seq, x_seq.new_zeros((extra, *x_seq.shape[1:]))])
        return x_seq.unflatten(0, (-1, self.num_slots)).sum(dim=1)

    def extra_repr(self) -> str:
        return f"num_slots={self.num_slots}, always_convert={self.always_convert}"


__all__ = ["SynapseFilter", "PrintShapeModule", "VotingLayer", "Delay", "SpikeCountToBinary", "TemporalBinSum"]
