"""Spiking neuron modules (SpikingJelly ``activation_based.neuron`` names, signatures and semantics).

The equations live once, in :mod:`spikeforge.kernels.reference`; these modules hold the state and the
hyper-parameters and call the functional multi-step boundary (:mod:`spikeforge.functional`). Single-step mode is
the same kernel with T = 1, so both modes compute identical numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from . import functional as F
from . import surrogate
from .base import MemoryModule, StepModule
from .kernels import NeuronSpec, neuron_multi_step


class BaseNode(MemoryModule):
    """Charge → fire → reset neuron, run through the multi-step kernel boundary.

    Subclasses define the charge by :meth:`decay` (the coefficient d of the reference kernel) and
    ``decay_input``. ``v`` starts as the float ``v_reset`` (0.0 for soft reset) and becomes a float32 tensor
    shaped like one step of the input on first use.
    """

    decay_input: bool = False

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str | None = None,
        store_v_seq: bool = False,
    ):
        super().__init__(step_mode)
        self.v_threshold = F.check_threshold(v_threshold)
        self.v_reset = F.check_reset(v_reset)
        if surrogate_function is None:
            surrogate_function = surrogate.Sigmoid()
        if not isinstance(surrogate_function, surrogate.SurrogateFunctionBase):
            raise TypeError("surrogate_function must be a spikeforge.surrogate module, got "
                            f"{type(surrogate_function).__name__}")
        self.surrogate_function = surrogate_function
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        self.store_v_seq = bool(store_v_seq)
        self.register_memory("v", 0.0 if v_reset is None else float(v_reset))
        self.register_memory("v_seq", None)

    # The comparison Θ(H − V_th) fires on a tie (H == V_th), as SpikingJelly does.
    fire_on_tie = True

    def decay(self) -> float | torch.Tensor:
        raise NotImplementedError

    def spec(self) -> NeuronSpec:
        kernel_id, p0, p1 = self.surrogate_function.kernel_params
        return NeuronSpec(
            v_threshold=self.v_threshold,
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
            decay_input=self.decay_input,
            surrogate_id=kernel_id,
            surrogate_p0=p0,
            surrogate_p1=p1,
            fire_on_tie=self.fire_on_tie,
            smooth=not self.surrogate_function.spiking,
        )

    def _run(self, x_seq: torch.Tensor, store_v_seq: bool):
        F.check_sequence(x_seq, "x" if self.step_mode == "s" else "x_seq")
        v0 = F._initial_state(x_seq, self.v, name="the stored membrane v")
        spike_seq, v_last, v_seq = neuron_multi_step(
            x_seq, v0, self.decay(), self.spec(), store_v_seq, self.backend
        )
        self.v = v_last
        return spike_seq, v_seq

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise ValueError("x must be a tensor of shape [N, ...] in single-step mode")
        spike_seq, _ = self._run(x.unsqueeze(0), store_v_seq=False)
        return spike_seq[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        spike_seq, v_seq = self._run(x_seq, store_v_seq=self.store_v_seq)
        if self.store_v_seq:
            self.v_seq = v_seq
        return spike_seq

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"step_mode={self.step_mode}, backend={self.backend}")


class IFNode(BaseNode):
    """Integrate-and-fire: H_t = V_{t−1} + X_t; fire S_t = Θ(H_t − V_th); hard or soft reset."""

    def decay(self) -> float:
        return 0.0


class LIFNode(BaseNode):
    """Leaky integrate-and-fire with time constant ``tau`` (> 1).

    decay_input=True:  H_t = V_{t−1} + (X_t − (V_{t−1} − V_reset)) / τ
    decay_input=False: H_t = V_{t−1} − (V_{t−1} − V_reset) / τ + X_t
    (V_reset = 0 in the charge for soft reset), then fire and reset as :class:`IFNode`.
    """

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str | None = None,
        store_v_seq: bool = False,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq)
        self.tau = F.check_tau(tau)
        self.decay_input = bool(decay_input)

    def decay(self) -> float:
        return 1.0 / self.tau

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class ParametricLIFNode(BaseNode):
    """LIF with a learnable time constant (Fang et al. 2021): 1/τ = sigmoid(w), w₀ = −log(init_tau − 1)."""

    def __init__(
        self,
        init_tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        backend: str | None = None,
        store_v_seq: bool = False,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, backend, store_v_seq)
        init_tau = F.check_tau(init_tau, "init_tau")
        self.decay_input = bool(decay_input)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    def decay(self) -> torch.Tensor:
        return torch.sigmoid(self.w)

    def extra_repr(self) -> str:
        tau = 1.0 / torch.sigmoid(self.w.detach()).item()
        return f"tau={tau:.4g}, decay_input={self.decay_input}, " + super().extra_repr()


class LIFSpike(nn.Module):
    """The STBP LIF neuron (Wu et al. 2018; tdBN, Zheng et al. 2021), used like an activation.

    u_t = τ·u_{t−1}·(1 − o_{t−1}) + x_t,   o_t = 1[u_t > V_th]  (strict),   u_0 = 0,

    with τ a multiplicative decay (0.25) and V_th = 0.4 by default, both per instance. The reset path is
    differentiable (o_{t−1} is not detached); ∂o/∂u is the STBP rectangle (1/(2a))·1[|u − V_th| < a], a = 0.5,
    centred at the threshold (the STBP repository centres it at 0 by a bug).

    Like STBP's LIFSpike it consumes a whole sequence per call and keeps no state between calls. spikeforge is
    time-first ([T, N, ...]); pass ``time_dim=-1`` for STBP's time-last tensors ([N, ..., T]).
    """

    def __init__(self, tau: float = 0.25, v_th: float = 0.4, a: float = 0.5, time_dim: int = 0,
                 surrogate_function: surrogate.SurrogateFunctionBase | None = None, backend: str | None = None):
        super().__init__()
        tau = float(tau)
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be the multiplicative decay in [0, 1] (STBP uses 0.25), got {tau}")
        self.tau = tau
        self.v_th = F.check_threshold(v_th)
        self.time_dim = int(time_dim)
        self.surrogate_function = surrogate_function if surrogate_function is not None else surrogate.STBPRectangle(a)
        self.backend = backend

    def spec(self) -> NeuronSpec:
        kernel_id, p0, p1 = self.surrogate_function.kernel_params
        return NeuronSpec(v_threshold=self.v_th, v_reset=0.0, detach_reset=False, decay_input=False,
                          surrogate_id=kernel_id, surrogate_p0=p0, surrogate_p1=p1, fire_on_tie=False,
                          smooth=not self.surrogate_function.spiking)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.movedim(self.time_dim, 0) if self.time_dim != 0 else x
        F.check_sequence(x_seq, "x")
        v0 = torch.zeros(x_seq.shape[1:], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                         device=x.device)
        spike_seq, _, _ = neuron_multi_step(x_seq, v0, 1.0 - self.tau, self.spec(), False, self.backend)
        return spike_seq.movedim(0, self.time_dim) if self.time_dim != 0 else spike_seq

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_th={self.v_th}, time_dim={self.time_dim}"


__all__ = ["MemoryModule", "StepModule", "BaseNode", "IFNode", "LIFNode", "ParametricLIFNode", "LIFSpike"]
