r"""Research neurons of SpikingJelly 2.0 with their own training rules (reference path; ``spec is None``).

* :class:`DSRIFNode`, :class:`DSRLIFNode` — differentiation on spike representation (Meng et al., CVPR 2022):
  the forward pass is a soft-reset IF / LIF emitting spikes of amplitude V_th (firing at α·V_th); the backward
  pass differentiates the *rate* map instead of the spikes (see each class).
* :class:`ILCBaseNode`, :class:`ILCIFNode`, :class:`ILCLIFNode`, :class:`ILCCUBALIFNode` — population neurons
  with intra-layer connections (Chen et al., "Deep reinforcement learning with spiking Q-learning" / ILC-SAN):
  the spikes of step t feed step t+1 of the same layer through a grouped ``Conv1d`` over each action's
  population.
* :class:`ActivationAwareIFNode` — the IF of activation-aware redistribution (ANN→SNN), with a scalar or
  per-channel threshold and membrane offset.
* :class:`STBIFNode` — SpikeZIP's signed-threshold bounded IF (quantised-ANN → SNN, inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .. import functional as F
from .. import surrogate
from ..base import MemoryModule
from ..spec import check_reset, check_threshold
from ._dynamics import log_python_path
from .extra import _ChargeFireReset, _MultiStepOnly, _reset

__all__ = ["DSRIFNode", "DSRLIFNode", "ILCBaseNode", "ILCIFNode", "ILCLIFNode", "ILCCUBALIFNode",
           "ActivationAwareIFNode", "STBIFNode"]


# ================================================================================================== DSR
class _DSRIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, T, v_threshold, alpha, grad_scaling):
        ctx.save_for_backward(x_seq)
        ctx.T, ctx.v_threshold, ctx.grad_scaling = T, v_threshold, grad_scaling
        v, out = torch.zeros_like(x_seq[0]), []
        for x in x_seq:
            v = v + x
            spike = (v >= alpha * v_threshold).to(x.dtype) * v_threshold
            v = v - spike
            out.append(spike)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad_out):
        (x_seq,) = ctx.saved_tensors
        T, vth = ctx.T, ctx.v_threshold
        rate_in = x_seq.mean(0)
        g = grad_out.mean(0) * T
        inside = (rate_in >= 0) & (rate_in <= vth)
        grad_x = (g * inside).expand(T, *g.shape) / T
        grad_vth = (g * (rate_in > vth)).sum() * ctx.grad_scaling
        return grad_x, None, grad_vth, None, None


def _weighted_rate(seq: torch.Tensor, tau: float, delta_t: float) -> torch.Tensor:
    T = seq.shape[0]
    # float32 weights, as SpikingJelly builds them, promoted by the product
    w = torch.tensor([math.exp(-1 / tau * (delta_t * T - i * delta_t)) for i in range(1, T + 1)]).to(seq.device)
    return (seq.movedim(0, -1) * w).sum(-1) / w.sum()


class _DSRLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, T, v_threshold, tau, delta_t, alpha, grad_scaling):
        ctx.save_for_backward(x_seq)
        ctx.T, ctx.v_threshold, ctx.tau, ctx.delta_t, ctx.grad_scaling = T, v_threshold, tau, delta_t, grad_scaling
        beta = math.exp(-delta_t / tau)
        v, out = torch.zeros_like(x_seq[0]), []
        for x in x_seq:
            v = beta * v + (1 - beta) * x
            spike = (v >= alpha * v_threshold).to(x.dtype) * v_threshold
            v = v - spike
            out.append(spike / delta_t)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad_out):
        (x_seq,) = ctx.saved_tensors
        T, vth, tau, dt = ctx.T, ctx.v_threshold, ctx.tau, ctx.delta_t
        rate_in = _weighted_rate(x_seq, tau, dt)
        g = _weighted_rate(grad_out, tau, dt) * T
        inside = (rate_in > 0) & (rate_in < vth / dt * tau)
        grad_x = (g * inside / tau).expand(T, *g.shape) / T
        grad_vth = (g * (rate_in > vth / dt * tau)).sum() * dt * ctx.grad_scaling
        return grad_x, None, grad_vth, None, None, None, None


class _DSRBase(_MultiStepOnly, MemoryModule):
    spec = None

    def __init__(self, T, v_threshold, alpha, v_threshold_training, v_threshold_grad_scaling,
                 v_threshold_lower_bound, step_mode):
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        if not v_threshold_lower_bound > 0:
            raise ValueError(f"v_threshold_lower_bound must be > 0, got {v_threshold_lower_bound}")
        if not v_threshold >= v_threshold_lower_bound:
            raise ValueError(f"v_threshold ({v_threshold}) must be >= v_threshold_lower_bound "
                             f"({v_threshold_lower_bound})")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
        super().__init__(step_mode)
        self.T = T
        vth = torch.tensor(float(v_threshold))
        self.v_threshold = nn.Parameter(vth) if v_threshold_training else vth
        self.alpha = float(alpha)
        self.v_threshold_lower_bound = float(v_threshold_lower_bound)
        self.v_threshold_grad_scaling = float(v_threshold_grad_scaling)

    def _threshold(self) -> torch.Tensor:
        return self.v_threshold.clamp(min=self.v_threshold_lower_bound)


class DSRIFNode(_DSRBase):
    r"""DSR's IF. Forward (V_0 = 0): :math:`V \leftarrow V + X_t`,
    :math:`S_t = V_{th}\,\Theta(V - \alpha V_{th})`, :math:`V \leftarrow V - S_t`. Backward, with the rates
    :math:`r = \frac{1}{T}\sum_t X_t` and :math:`g = \sum_t \partial L/\partial S_t`:
    :math:`\partial L/\partial X_t = \frac{g}{T}\,1[0 \le r \le V_{th}]`,
    :math:`\partial L/\partial V_{th} = s \sum g\,1[r > V_{th}]` (s = ``v_threshold_grad_scaling``; V_th is
    clamped below at ``v_threshold_lower_bound``). Multi-step only."""

    def __init__(self, T: int = 20, v_threshold: float = 6.0, alpha: float = 0.5, v_threshold_training: bool = True,
                 v_threshold_grad_scaling: float = 1.0, v_threshold_lower_bound: float = 0.01, step_mode: str = "m"):
        super().__init__(T, v_threshold, alpha, v_threshold_training, v_threshold_grad_scaling,
                         v_threshold_lower_bound, step_mode)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        return _DSRIF.apply(x_seq, self.T, self._threshold(), self.alpha, self.v_threshold_grad_scaling)

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}, vth_bound={self.v_threshold_lower_bound}"


class DSRLIFNode(_DSRBase):
    r"""DSR's LIF. Forward (V_0 = 0, β = exp(−Δt/τ)): :math:`V \leftarrow \beta V + (1 - \beta) X_t`,
    :math:`s_t = V_{th}\,\Theta(V - \alpha V_{th})`, :math:`V \leftarrow V - s_t`, output :math:`s_t/\Delta t`.
    Backward on the exponentially weighted rates :math:`\bar r = \sum_i w_i X_i / \sum_i w_i`,
    :math:`w_i = e^{-(T - i)\Delta t/\tau}` (and likewise ḡ of the output gradient, times T):
    :math:`\partial L/\partial X_t = \frac{\bar g}{\tau T}\,1[0 < \bar r < V_{th}\tau/\Delta t]`,
    :math:`\partial L/\partial V_{th} = s\,\Delta t \sum \bar g\,1[\bar r > V_{th}\tau/\Delta t]`."""

    def __init__(self, T: int = 20, v_threshold: float = 1.0, tau: float = 2.0, delta_t: float = 0.05,
                 alpha: float = 0.3, v_threshold_training: bool = True, v_threshold_grad_scaling: float = 1.0,
                 v_threshold_lower_bound: float = 0.1, step_mode: str = "m"):
        super().__init__(T, v_threshold, alpha, v_threshold_training, v_threshold_grad_scaling,
                         v_threshold_lower_bound, step_mode)
        self.tau, self.delta_t = float(tau), float(delta_t)

    @classmethod
    def weight_rate_spikes(cls, data: torch.Tensor, tau: float, delta_t: float) -> torch.Tensor:
        """The exponentially weighted rate of ``data`` ``[T, ...]`` (see the class)."""
        return _weighted_rate(data, tau, delta_t)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        return _DSRLIF.apply(x_seq, self.T, self._threshold(), self.tau, self.delta_t, self.alpha,
                             self.v_threshold_grad_scaling)

    def extra_repr(self) -> str:
        return f"T={self.T}, tau={self.tau}, dt={self.delta_t}, alpha={self.alpha}"


# ================================================================================================== ILC
class ILCBaseNode(_MultiStepOnly, _ChargeFireReset, nn.Module):
    r"""Population neurons with intra-layer connections, over ``[T, N, act_dim·dec_pop_dim]``. Each call starts
    at V = V_reset; per step t: the charge (yours: ``neuronal_charge``) of
    :math:`X_t + C(S_{t-1})`, fire :math:`S_t = \Theta(V - V_{th})`, hard / soft reset (no detach), where C is
    ``conn``, a ``Conv1d(act_dim, act_dim·dec_pop_dim, dec_pop_dim, groups=act_dim)`` reading each action's
    population. (SpikingJelly adds C(S_t) into the caller's ``x_seq`` in place; here the input is left alone.)"""

    spec = None

    def __init__(self, act_dim, dec_pop_dim, v_threshold: float = 1.0, v_reset: float | None = 0.0,
                 surrogate_function=None):
        super().__init__()
        self.act_dim, self.dec_pop_dim = int(act_dim), int(dec_pop_dim)
        self.out_pop_dim = self.act_dim * self.dec_pop_dim
        self.conn = nn.Conv1d(self.act_dim, self.out_pop_dim, self.dec_pop_dim, groups=self.act_dim)
        self.v_threshold = check_threshold(v_threshold)
        self.v_reset = check_reset(v_reset)
        self.surrogate_function = surrogate.Rect() if surrogate_function is None else surrogate_function

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        log_python_path(type(self))
        self.init_tensor(x_seq[0].data)
        spikes, recurrent = [], None
        for t in range(x_seq.shape[0]):
            self.neuronal_charge(x_seq[t] if recurrent is None else x_seq[t] + recurrent)
            spike = self.neuronal_fire()
            self.neuronal_reset(spike)
            spikes.append(spike)
            if t + 1 < x_seq.shape[0]:
                recurrent = self.conn(spike.view(-1, self.act_dim, self.dec_pop_dim)).view(-1, self.out_pop_dim)
        return torch.stack(spikes)


class ILCIFNode(ILCBaseNode):
    r"""ILC population IF: :math:`V \leftarrow V + X`."""

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + x


class ILCLIFNode(ILCBaseNode):
    r"""ILC population LIF with a multiplicative decay: :math:`V \leftarrow \delta_v V + X`."""

    def __init__(self, act_dim, dec_pop_dim, v_decay: float = 0.75, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None):
        super().__init__(act_dim, dec_pop_dim, v_threshold, v_reset, surrogate_function)
        self.v_decay = float(v_decay)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v * self.v_decay + x


class ILCCUBALIFNode(ILCBaseNode):
    r"""ILC population CUBA LIF: :math:`I \leftarrow \delta_c I + X`, :math:`V \leftarrow \delta_v V + I`."""

    def __init__(self, act_dim, dec_pop_dim, c_decay: float = 0.5, v_decay: float = 0.75, v_threshold: float = 0.5,
                 v_reset: float | None = 0.0, surrogate_function=None):
        super().__init__(act_dim, dec_pop_dim, v_threshold, v_reset, surrogate_function)
        self.c_decay, self.v_decay = float(c_decay), float(v_decay)

    def init_tensor(self, data: torch.Tensor) -> None:
        super().init_tensor(data)
        self.c = torch.zeros_like(data)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.c = self.c * self.c_decay + x
        self.v = self.v * self.v_decay + self.c


# ====================================================================================== activation-aware IF
class ActivationAwareIFNode(MemoryModule):
    r"""IF with a membrane offset O for activation-aware redistribution (ANN→SNN):
    :math:`H_t = V_{t-1} + X_t`, :math:`S_t = \Theta(H_t + O - V_{th})`, then the hard / soft reset of H (soft:
    :math:`H_t - S_r V_{th}`). ``v_threshold`` and ``v_offset`` are scalars or 1-D per-channel tensors along
    ``channel_dim`` of one step's input (buffers). ``store_v_seq`` keeps ``v_seq`` in multi-step mode only."""

    spec = None

    def __init__(self, v_threshold=1.0, v_offset=0.0, channel_dim: int = -1, v_reset: float | None = None,
                 surrogate_function=None, detach_reset: bool = False, step_mode: str = "s",
                 store_v_seq: bool = False):
        super().__init__(step_mode)
        threshold, offset = torch.as_tensor(v_threshold).clone().detach(), torch.as_tensor(v_offset).clone().detach()
        if threshold.dim() > 1 or not bool(torch.isfinite(threshold).all()) or not bool((threshold > 0).all()):
            raise ValueError("v_threshold must be a finite positive scalar or 1-D tensor")
        if offset.dim() > 1 or not bool(torch.isfinite(offset).all()):
            raise ValueError("v_offset must be a finite scalar or 1-D tensor")
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise ValueError(f"channel_dim must be an int, got {channel_dim!r}")
        self.register_buffer("v_threshold", threshold)
        self.register_buffer("v_offset", offset)
        self.channel_dim = channel_dim
        self.v_reset = check_reset(v_reset)
        self.surrogate_function = surrogate.default() if surrogate_function is None else surrogate_function
        self.detach_reset = bool(detach_reset)
        self.store_v_seq = bool(store_v_seq)
        self.register_memory("v", 0.0 if v_reset is None else float(v_reset))
        self.register_memory("v_seq", None)

    def _broadcast(self, p: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
        p = p.to(device=x.device, dtype=x.dtype)
        if p.dim() == 0:
            return p
        dim = self.channel_dim % x.dim()
        if p.numel() != x.shape[dim]:
            raise ValueError(f"{name} has {p.numel()} values but the input has {x.shape[dim]} channels at "
                             f"channel_dim={self.channel_dim}")
        shape = [1] * x.dim()
        shape[dim] = p.numel()
        return p.view(shape)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        log_python_path(type(self))
        v = self.v
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            v = torch.full_like(x.data, 0.0 if self.v_reset is None else self.v_reset)
        vth = self._broadcast(self.v_threshold, x, "v_threshold")
        h = v + x
        spike = self.surrogate_function(h + self._broadcast(self.v_offset, x, "v_offset") - vth)
        self.v = _reset(h, spike, vth, self.v_reset, self.detach_reset)
        return spike

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        spikes, vs = [], []
        for x in x_seq:
            spikes.append(self.single_step_forward(x))
            vs.append(self.v)
        self.v_seq = torch.stack(vs) if self.store_v_seq else None
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"channel_dim={self.channel_dim}, v_reset={self.v_reset}, step_mode={self.step_mode}"


# ============================================================================================ SpikeZIP
def _scalar_tensor(value) -> torch.Tensor:
    return (value if torch.is_tensor(value) else torch.tensor(value)).detach().clone().float()


class STBIFNode(MemoryModule):
    r"""SpikeZIP's signed-threshold bounded IF (You et al. 2024), the conversion target of a ``level``-level
    quantiser with step ``q_threshold`` (θ). State, per element: the residual q (starts at ½), the net count A
    (starts at 0). Per step:

    .. math::
        q \leftarrow q + X_t/\theta,\quad A \leftarrow \mathrm{round}(A),\quad
        s_t = 1[q \ge 1 \wedge A < A_{max}] - 1[q < 0 \wedge A > A_{min}],\quad
        A \leftarrow A + s_t,\quad q \leftarrow q - s_t,\quad Y_t = \theta\,s_t

    with A_max = ``pos_max`` (``level//2 − 1`` if ``sym`` else ``level − 1``) and A_min = ``neg_min``
    (``−level//2`` if ``sym`` else 0); so Σ_t Y_t tracks the quantised activation. ``accumulated`` is θ·A.
    An inference neuron (no surrogate gradient); ``cur_output`` holds s_t.
    """

    spec = None

    def __init__(self, q_threshold, level: int, sym: bool = False, pos_max=None, neg_min=None, step_mode: str = "s"):
        if isinstance(level, bool) or int(level) < 2:
            raise ValueError(f"level must be an int >= 2, got {level!r}")
        super().__init__(step_mode)
        self.level, self.sym = int(level), bool(sym)
        self.register_buffer("q_threshold", _scalar_tensor(q_threshold))
        default_max = self.level // 2 - 1 if self.sym else self.level - 1
        default_min = -self.level // 2 if self.sym else 0
        self.register_buffer("pos_max", _scalar_tensor(default_max if pos_max is None else pos_max))
        self.register_buffer("neg_min", _scalar_tensor(default_min if neg_min is None else neg_min))
        self.register_memory("q", None)
        self.register_memory("acc_q", None)
        self.register_memory("cur_output", None)

    @classmethod
    def from_quantizer(cls, quantizer: nn.Module) -> STBIFNode:
        """From a quantiser with ``s`` (step), ``sym``, ``pos_max``, ``neg_min`` (and optionally ``level``)."""
        top, bottom = _scalar_tensor(quantizer.pos_max), _scalar_tensor(quantizer.neg_min)
        default_level = int(top.item()) - int(bottom.item()) + 1
        return cls(quantizer.s, level=int(getattr(quantizer, "level", default_level)), sym=bool(quantizer.sym),
                   pos_max=quantizer.pos_max, neg_min=quantizer.neg_min)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        log_python_path(type(self))
        if self.q is None or self.q.shape != x.shape:
            self.q, self.acc_q, self.cur_output = torch.full_like(x, 0.5), torch.zeros_like(x), torch.zeros_like(x)
        theta = self.q_threshold.to(device=x.device, dtype=x.dtype)
        top = self.pos_max.to(device=x.device, dtype=x.dtype)
        bottom = self.neg_min.to(device=x.device, dtype=x.dtype)
        q = self.q.to(x) + x / theta
        acc = self.acc_q.to(x).round()
        up, down = (q >= 1) & (acc < top), (q < 0) & (acc > bottom)
        s = up.to(x.dtype) - down.to(x.dtype)
        self.q, self.acc_q, self.cur_output = q - s, acc + s, s
        return s * theta

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        return torch.stack([self.single_step_forward(x) for x in x_seq])

    @property
    def accumulated(self) -> torch.Tensor:
        if self.acc_q is None:
            raise RuntimeError("STBIFNode has no accumulated state before its first forward")
        return self.acc_q * self.q_threshold.to(dtype=self.acc_q.dtype)

    def extra_repr(self) -> str:
        return f"level={self.level}, sym={self.sym}, step_mode={self.step_mode}"
