r"""Parallel spiking neurons (Fang et al., NeurIPS 2023): the membranes of all T steps come from one matrix product.

Removing the reset from a charge-fire neuron makes H a linear function of the inputs, so the T charged
membranes are one GEMM and the whole sequence fires at once (no loop over T). With the input flattened to
``[T, N·...]``:

* :class:`PSN` — :math:`H = W X + B`, :math:`S = \Theta(H)`, W ``[T, T]`` learnable (Kaiming-uniform, a = √5),
  B ``[T, 1]`` (init −1); multi-step only.
* :class:`MaskedPSN` — only the last k inputs count: :math:`H = (W \odot M_\lambda) X + B` with the band mask
  :math:`M_1[i, j] = 1[i - k < j \le i]` and :math:`M_\lambda = \lambda M_1 + (1 - \lambda)\mathbf{1}` (λ is
  annealed from ``lambda_init`` to 1 during training; at λ ≥ 1 the mask is exact and single-step mode works).
* :class:`SlidingPSN` — one shared kernel w of length k slides over time:
  :math:`H_t = \sum_{i=0}^{k-1} w_{k-1-i} X_{t-i} + b`; any T; ``exp_init`` starts w at
  :math:`(2^{-(k-1)}, …, 1/2, 1)`.

The surrogate (``ATan()`` by default, as SpikingJelly) makes S = Θ(H) differentiable. These are not
charge-fire-reset neurons, so they have no :class:`~spikeforge.spec.NeuronSpec` (``spec is None``); their work is
a GEMM plus an element-wise surrogate, which PyTorch already runs at full speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import functional as F
from .. import surrogate
from ..base import MemoryModule
from .extra import _MultiStepOnly

__all__ = ["PSN", "MaskedPSN", "SlidingPSN"]


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _sg(surrogate_function):
    return surrogate.ATan() if surrogate_function is None else surrogate_function


class PSN(_MultiStepOnly, nn.Module):
    r"""Parallel spiking neuron over a fixed number of steps ``T``: :math:`S = \Theta(W X + B)` (see module)."""

    spec = None

    def __init__(self, T: int, surrogate_function=None):
        super().__init__()
        self.T = _check_positive_int(T, "T")
        self.surrogate_function = _sg(surrogate_function)
        self.weight = nn.Parameter(torch.zeros(T, T))
        self.bias = nn.Parameter(torch.zeros(T, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.constant_(self.bias, -1.0)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        if x_seq.shape[0] != self.T:
            raise ValueError(f"PSN(T={self.T}) got a sequence of {x_seq.shape[0]} steps")
        h_seq = torch.addmm(self.bias, self.weight, x_seq.flatten(1))
        return self.surrogate_function(h_seq).view(x_seq.shape)

    def extra_repr(self) -> str:
        return f"T={self.T}"


class MaskedPSN(MemoryModule):
    r"""PSN whose step t sees only the inputs of steps t−k+1..t (see module); ``lambda_`` anneals the mask."""

    spec = None

    def __init__(self, k: int, T: int, lambda_init: float = 0.0, surrogate_function=None, step_mode: str = "s"):
        super().__init__(step_mode)
        self.k = _check_positive_int(k, "k")
        self.T = _check_positive_int(T, "T")
        self.surrogate_function = _sg(surrogate_function)
        self.register_memory("time_step", 0)
        self.register_memory("queue", ())
        self.register_buffer("_lambda_", torch.as_tensor(float(lambda_init)))
        self.weight = nn.Parameter(torch.zeros(T, T))
        self.bias = nn.Parameter(torch.zeros(T, 1))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.constant_(self.bias, -1.0)
        ones = torch.ones(T, T)
        self.register_buffer("mask0", torch.tril(ones) * torch.triu(ones, -(k - 1)))
        self.register_buffer("mask1", ones)

    @property
    def lambda_(self) -> torch.Tensor:
        return self._lambda_

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._lambda_.fill_(float(value))

    @staticmethod
    def gen_masked_weight(lambda_, mask0, mask1, weight):
        return (lambda_ * mask0 + (1.0 - lambda_) * mask1) * weight

    def masked_weight(self) -> torch.Tensor:
        if self.lambda_ >= 1.0:
            return self.weight * self.mask0
        return self.gen_masked_weight(self.lambda_, self.mask0, self.mask1, self.weight)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lambda_ < 1.0:
            raise ValueError("MaskedPSN works in single-step mode only once lambda_ >= 1 (the exact band mask)")
        t = self.time_step
        if t + 1 > self.T:
            raise OverflowError(f"MaskedPSN(T={self.T}) has already run {t} steps; reset it first")
        queue = (*self.queue, x.flatten())[-self.k:]
        weight = self.masked_weight()[t, t + 1 - len(queue): t + 1]
        h = torch.sum(weight.unsqueeze(-1) * torch.stack(queue), 0)
        self.queue = queue
        self.time_step = t + 1
        return self.surrogate_function(h + self.bias[t]).view(x.shape)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        if x_seq.shape[0] != self.T:
            raise ValueError(f"MaskedPSN(T={self.T}) got a sequence of {x_seq.shape[0]} steps")
        h_seq = torch.addmm(self.bias, self.masked_weight(), x_seq.flatten(1))
        return self.surrogate_function(h_seq).view(x_seq.shape)

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}, lambda_={float(self.lambda_)}, T={self.T}, k={self.k}"


class SlidingPSN(MemoryModule):
    r"""PSN with one kernel of length ``k`` shared by all steps (any T; see module)."""

    spec = None

    def __init__(self, k: int, exp_init: bool = True, surrogate_function=None, step_mode: str = "s"):
        super().__init__(step_mode)
        self.k = _check_positive_int(k, "k")
        self.surrogate_function = _sg(surrogate_function)
        self.register_memory("queue", ())
        if exp_init:
            weight = torch.tensor([2.0 ** -(k - 1 - i) for i in range(k)])
        else:
            weight = torch.ones(1, k)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            weight = weight[0]
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.as_tensor(-1.0))

    def gen_gemm_weight(self, T: int) -> torch.Tensor:
        """The ``[T, T]`` banded Toeplitz matrix whose row t holds the kernel's last min(t+1, k) taps."""
        rows = []
        for i in range(T):
            n = min(i + 1, self.k)
            rows.append(torch.cat((self.weight.new_zeros(i + 1 - n), self.weight[self.k - n:],
                                   self.weight.new_zeros(T - i - 1))))
        return torch.stack(rows)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        queue = (*self.queue, x.flatten())[-self.k:]
        weight = self.weight[self.k - len(queue):].unsqueeze(-1)
        h = torch.sum(weight * torch.stack(queue), 0)
        self.queue = queue
        return self.surrogate_function(h + self.bias).view(x.shape)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        h_seq = torch.addmm(self.bias, self.gen_gemm_weight(x_seq.shape[0]), x_seq.flatten(1))
        return self.surrogate_function(h_seq.view(x_seq.shape))

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}, order={self.k}"
