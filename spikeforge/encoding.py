"""Encoders turning analog inputs into spikes (SpikingJelly ``activation_based.encoding`` names).

* :class:`PoissonEncoder`: S = 1[U ≤ x], U ~ Uniform[0, 1) fresh at every call (rate coding, x ∈ [0, 1]).
* :class:`LatencyEncoder`: one spike per input, earlier for larger x (t_f = round((T − 1)(1 − x)) for 'linear',
  t_f = round(T − 1 − ln(αx + 1)) with α = e^{T−1} − 1 for 'log').
* :class:`RepeatEncoder` (alias ``DirectEncoder``): the analog input repeated for T steps (direct coding).

Stateless encoders follow ``step_mode``: in 's' mode they encode one step; in 'm' mode they take ``[T, N, ...]``.
:meth:`PoissonEncoder.encode_sequence` draws all T steps of a ``[N, ...]`` input at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from . import functional as F
from .base import MemoryModule


def _check_input(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


class StatelessEncoder(nn.Module):
    def __init__(self, step_mode: str = "s"):
        super().__init__()
        self.step_mode = F.check_step_mode(step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(_check_input(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PoissonEncoder(StatelessEncoder):
    """Rate coding: each element spikes with probability x (clipped to [0, 1]) at every call."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.rand_like(x) <= x).to(x.dtype)

    def encode_sequence(self, x: torch.Tensor, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """All T steps at once: ``[N, ...]`` → ``[T, N, ...]`` (one random draw, no Python loop)."""
        x = _check_input(x)
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        noise = torch.rand((int(T), *x.shape), device=x.device, generator=generator)
        return (noise <= x).to(x.dtype)


class RepeatEncoder(StatelessEncoder):
    """Direct coding: repeat the analog input for T steps (``[N, ...]`` → ``[T, N, ...]``)."""

    def __init__(self, T: int):
        super().__init__(step_mode="m")
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        self.T = int(T)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).expand(self.T, *x.shape)


DirectEncoder = RepeatEncoder


class LatencyEncoder(MemoryModule):
    """Time-to-first-spike coding over T steps; one spike per element, earlier for larger x ∈ [0, 1].

    In 'm' mode a call returns the whole ``[T, N, ...]`` train; in 's' mode successive calls return steps
    0, 1, …, T−1, 0, … of the train encoded at the first call after a reset (as SpikingJelly does).
    """

    def __init__(self, T: int, enc_function: str = "linear", step_mode: str = "s"):
        super().__init__(step_mode)
        if int(T) < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if enc_function not in ("linear", "log"):
            raise ValueError(f"enc_function must be 'linear' or 'log', got {enc_function!r}")
        self.T = int(T)
        self.enc_function = enc_function
        self.alpha = math.exp(self.T - 1.0) - 1.0 if enc_function == "log" else None
        self.register_memory("spike", None)
        self.register_memory("index", 0)

    def spike_times(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x).clamp(0.0, 1.0)
        if self.enc_function == "log":
            t_f = self.T - 1.0 - torch.log(self.alpha * x + 1.0)
        else:
            t_f = (self.T - 1.0) * (1.0 - x)
        return t_f.round().long().clamp_(0, self.T - 1)

    def encode_sequence(self, x: torch.Tensor) -> torch.Tensor:
        t_f = self.spike_times(x)
        steps = torch.arange(self.T, device=x.device).view(self.T, *([1] * x.dim()))
        return (steps == t_f.unsqueeze(0)).to(x.dtype)

    def multi_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_sequence(x)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spike is None:
            self.spike = self.encode_sequence(x)
        out = self.spike[self.index]
        self.index = (self.index + 1) % self.T
        return out


__all__ = ["StatelessEncoder", "PoissonEncoder", "RepeatEncoder", "DirectEncoder", "LatencyEncoder"]
