"""Dropout that keeps one mask for a whole sequence, and DropConnect (SpikingJelly's ``layer.dropout``).

A spiking network sees the same sample at every time step; dropping different units at each step would average
the mask away. The mask is drawn on the first step after :func:`~spikeforge.functional.reset_net` and reused until
the next reset (in 'm' mode: one mask for all T of the call).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as torch_F

from ..base import MemoryModule


class Dropout(MemoryModule):
    """Dropout whose mask is drawn once per sequence and shared by all time steps (kept until reset)."""

    def __init__(self, p: float = 0.5, step_mode: str = "s"):
        super().__init__(step_mode)
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p (the dropout probability) must be in [0, 1), got {p}")
        self.p = p
        self.register_memory("mask", None)

    def _mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def _mask_for(self, x_step: torch.Tensor) -> torch.Tensor:
        shape = self._mask_shape(x_step)
        if self.mask is None or tuple(self.mask.shape) != shape:
            keep = torch.full(shape, 1.0 - self.p, device=x_step.device)
            self.mask = torch.bernoulli(keep).div_(1.0 - self.p)
        return self.mask.to(x_step.dtype)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * self._mask_for(x)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x_seq
        return x_seq * self._mask_for(x_seq[0])

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"


class Dropout2d(Dropout):
    """Channel dropout with one mask per sequence: whole channels of [N, C, H, W] (or [N, C, L]) per step.

    The default p is 0.2, as in SpikingJelly (``Dropout``'s is 0.5).
    """

    def __init__(self, p: float = 0.2, step_mode: str = "s"):
        super().__init__(p, step_mode)

    def _mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() not in (3, 4):
            raise ValueError(f"Dropout2d expects [N, C, H, W] (or [N, C, L]) per step, got shape {tuple(x.shape)}")
        return (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)


_RELU = nn.ReLU()  # the default activation (stateless, so one instance can be shared, as SpikingJelly's default)


class DropConnectLinear(MemoryModule):
    """Linear layer with DropConnect (Wan et al. 2013): each weight and bias is dropped with probability ``p``.

    Training: every sample of the batch gets its own masks M_w, M_b (entries ~ Bernoulli(1 − p)) and
    y = act(x (W ⊙ M_w)ᵀ + b ⊙ M_b). With ``invariant=True`` the masks are drawn once and kept until reset
    (the same masks for all time steps), otherwise they are redrawn every step.
    Inference: the pre-activation is approximated by a Gaussian with mean μ = (1 − p)(x Wᵀ + b) and variance
    σ² = p(1 − p)(x² (W²)ᵀ + b²); ``samples_num`` samples are drawn, passed through ``activation`` and averaged.
    No rescaling by 1/(1 − p) is applied (as in the paper and in SpikingJelly).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5,
                 samples_num: int = 1024, invariant: bool = False, activation: nn.Module | None = _RELU,
                 step_mode: str = "s") -> None:
        super().__init__(step_mode)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()
        self.p = p
        self.samples_num = samples_num
        self.invariant = invariant
        self.activation = activation
        self.register_memory("dropped_w", None)
        if self.bias is not None:
            self.register_memory("dropped_b", None)

    def reset_parameters(self) -> None:
        """The initialisation of ``torch.nn.Linear`` (Kaiming-uniform weight, U(−1/√fan_in, 1/√fan_in) bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def reset(self) -> None:
        super().reset()
        if hasattr(self.activation, "reset"):
            self.activation.reset()

    def drop(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample dropped copies: weight [N, out, in] and bias [N, out] (None without bias)."""
        keep_w = torch.rand((batch_size, *self.weight.shape), device=self.weight.device) >= self.p
        w = self.weight * keep_w
        b = None
        if self.bias is not None:
            keep_b = torch.rand((batch_size, *self.bias.shape), device=self.bias.device) >= self.p
            b = self.bias * keep_b
        return w, b

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if not self.invariant or self.dropped_w is None:
                w, b = self.drop(x.shape[0])
                self.dropped_w = w
                if self.bias is not None:
                    self.dropped_b = b
            y = torch.bmm(self.dropped_w, x.unsqueeze(-1)).squeeze(-1)
            if self.bias is not None:
                y = y + self.dropped_b
            return y if self.activation is None else self.activation(y)
        with torch.no_grad():  # a Monte-Carlo estimate, not differentiated (as a distribution's sample())
            mean = (1.0 - self.p) * torch_F.linear(x, self.weight, self.bias)
            bias_sq = None if self.bias is None else self.bias.square()
            var = self.p * (1.0 - self.p) * torch_F.linear(x.square(), self.weight.square(), bias_sq)
            noise = torch.randn((self.samples_num, *mean.shape), device=mean.device, dtype=mean.dtype)
            samples = mean + var.sqrt() * noise  # also defined where σ = 0 (e.g. an all-zero spike input)
        if self.activation is not None:
            samples = self.activation(samples)
        return samples.mean(dim=0)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"p={self.p}, invariant={self.invariant}, step_mode={self.step_mode}")


__all__ = ["Dropout", "Dropout2d", "DropConnectLinear"]
