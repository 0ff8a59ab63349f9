r"""More of SpikingJelly 2.0's neurons, with its signatures (positional order included), defaults and numbers.

Two roads, as for every spikeforge neuron:

* **fused** — a neuron whose update is one of the :class:`~spikeforge.spec.NeuronSpec` laws runs on the fused
  kernels through :func:`spikeforge.functional.neuron_multi_step`: the non-spiking readouts
  (``NonSpikingIFNode``, ``NonSpikingLIFNode``: the IF / LIF charge with a threshold that is never reached),
  ``HalfThresholdIFNode`` (soft-reset IF starting at V_th/2) and the online-training LIF neurons
  (``OTTTLIFNode``, ``SLTTLIFNode``: LIF with the carried membrane detached in training);
* **reference path** — a neuron with its own charge, fire or reset law runs the Python step loop of
  :mod:`spikeforge.neuron._dynamics` (ordinary autograd over T; logged once per class); it has
  ``spec = None``. These are ``QIFNode``, ``EIFNode``, ``AdaptBaseNode`` / ``IzhikevichNode``, ``CUBALIFNode``,
  ``KLIFNode``, ``LIAFNode``, ``ComplementaryLIFNode``, ``GatedLIFNode``, ``RAFNode``, ``TernaryIFNode`` /
  ``TernaryLIFNode``, ``ILIFNode``, ``MPBNBaseNode`` / ``MPBNLIFNode``.

Notation per step t: input X, membrane before the step V (``self.v``), charged membrane H, spike
S = Θ(H − V_th) (surrogate gradient backward), S_r = S or S.detach() (``detach_reset``), and the reset
R(H, S) = S_r·V_reset + (1 − S_r)·H (hard) or H − S_r·V_th (``v_reset=None``, soft).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from .. import functional as F
from .. import surrogate
from ..spec import NeuronSpec, check_threshold, check_time_constant, if_spec, lif_spec
from ._dynamics import log_python_path, overrides_dynamics
from .core import BaseNode, IFNode, LIFNode

__all__ = [
    "NonSpikingBaseNode",
    "NonSpikingIFNode",
    "NonSpikingLIFNode",
    "HalfThresholdIFNode",
    "OTTTLIFNode",
    "SLTTLIFNode",
    "QIFNode",
    "EIFNode",
    "AdaptBaseNode",
    "IzhikevichNode",
    "CUBALIFNode",
    "KLIFNode",
    "LIAFNode",
    "ComplementaryLIFNode",
    "GatedLIFNode",
    "RAFNode",
    "TernaryIFNode",
    "TernaryLIFNode",
    "ILIFNode",
    "MPBNBaseNode",
    "MPBNLIFNode",
]


def _lif_charge(v, x, tau: float, decay_input: bool, v_reset):
    """SpikingJelly's LIF charge (V_reset = 0 for a soft reset)."""
    v_r = 0.0 if v_reset is None else v_reset
    if decay_input:
        return v + (x - (v - v_r)) / tau
    return v - (v - v_r) / tau + x


def _reset(h, spike, v_threshold, v_reset, detach_reset: bool):
    """R(H, S): hard S_r·V_reset + (1 − S_r)·H, soft H − S_r·V_th."""
    spike_d = spike.detach() if detach_reset else spike
    if v_reset is None:
        return h - spike_d * v_threshold
    return spike_d * v_reset + (1.0 - spike_d) * h


def _state_like(value, x: torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.full_like(x.data, float(value))


class _ChargeFireReset:
    """SpikingJelly's charge / fire / reset split for the multi-step research neurons (Noisy*, ILC*): the subclass
    writes ``neuronal_charge``; firing is the surrogate of V − V_th, the reset hard or soft by ``v_reset``, and
    ``v`` starts at ``v_reset`` (0 for soft reset)."""

    def neuronal_charge(self, x: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define neuronal_charge(self, x)")

    def neuronal_fire(self) -> torch.Tensor:
        return self.surrogate_function(self.v - self.v_threshold)

    def neuronal_reset(self, spike: torch.Tensor) -> None:
        self.v = _reset(self.v, spike, self.v_threshold, self.v_reset, False)

    def init_tensor(self, data: torch.Tensor) -> None:
        self.v = torch.full_like(data, 0.0 if self.v_reset is None else self.v_reset)


class _MultiStepOnly:
    """``step_mode`` is 'm' and stays 'm' (SpikingJelly's ``MultiStepModule``)."""

    @property
    def step_mode(self) -> str:
        return "m"

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value != "m":
            raise ValueError(f"{type(self).__name__} runs whole sequences only: step_mode must be 'm', got {value!r}")


# ============================================================================================ non-spiking
_NEVER = float(torch.finfo(torch.float32).max)  # a threshold no finite membrane reaches


class NonSpikingBaseNode(_MultiStepOnly, nn.Module):
    r"""A readout that integrates without firing (SpikingJelly's ``NonSpikingBaseNode``).

    Each call starts from V = 0 and runs ``neuronal_charge`` over the T steps of ``x_seq`` ``[T, N, ...]``; the
    result is decoded by ``decode``: ``None`` → the list of the T membranes (as SpikingJelly returns it),
    ``'max-mem'`` → max over t, ``'max-abs-mem'`` → the value of largest magnitude (max if |max| > |min|, else
    min), ``'mean-mem'`` → mean over t, ``'last_mem'`` → V_T. Subclass and define ``neuronal_charge(x)``.
    """

    def __init__(self, decode: str | None = None):
        super().__init__()
        if decode not in (None, "max-mem", "max-abs-mem", "mean-mem", "last_mem"):
            raise ValueError(f"decode must be None, 'max-mem', 'max-abs-mem', 'mean-mem' or 'last_mem', got {decode!r}")
        self.decode = decode

    def neuronal_charge(self, x: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define neuronal_charge(self, x), which updates self.v")

    def _membranes(self, x_seq: torch.Tensor) -> torch.Tensor:
        log_python_path(type(self))
        self.v = torch.zeros_like(x_seq[0].data)
        v_seq = []
        for x in x_seq:
            self.neuronal_charge(x)
            v_seq.append(self.v)
        return torch.stack(v_seq)

    def forward(self, x_seq: torch.Tensor):
        F.check_sequence(x_seq)
        v_seq = self._membranes(x_seq)
        if self.decode == "max-mem":
            return v_seq.max(0).values
        if self.decode == "max-abs-mem":
            top, bottom = v_seq.max(0).values, v_seq.min(0).values
            return top * (top.abs() > bottom.abs()) + bottom * (top.abs() <= bottom.abs())
        if self.decode == "mean-mem":
            return v_seq.mean(0)
        if self.decode == "last_mem":
            return v_seq[-1]
        return list(v_seq.unbind(0))

    def extra_repr(self) -> str:
        return f"decode={self.decode!r}"


class _FusedNonSpiking(NonSpikingBaseNode):
    """IF / LIF readout on the fused kernels: the IF / LIF spec with V_th = float32 max (never reached), a hard
    reset to 0 that therefore never happens, and the Rect surrogate, whose derivative is exactly 0 that far from
    the threshold — so the kernel's v_seq and its gradient are those of the plain integrator."""

    _owner: type

    def __init__(self, decode: str | None = None, *, backend: str | None = None):
        super().__init__(decode)
        self.backend = F.check_backend(backend)

    def _kernel_spec(self) -> NeuronSpec:
        raise NotImplementedError

    def _membranes(self, x_seq: torch.Tensor) -> torch.Tensor:
        if overrides_dynamics(type(self), type(self)._owner):
            return super()._membranes(x_seq)
        _, v_last, v_seq = F.neuron_multi_step(x_seq, 0.0, self._kernel_spec(), None, True, self.backend)
        self.v = v_last.to(x_seq.dtype)
        return v_seq.to(x_seq.dtype)


class NonSpikingIFNode(_FusedNonSpiking):
    r"""Non-spiking IF readout: :math:`V_t = V_{t-1} + X_t`, :math:`V_0 = 0` (fused kernel)."""

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + x

    def _kernel_spec(self) -> NeuronSpec:
        return if_spec(_NEVER, 0.0, surrogate.Rect().spec)


class NonSpikingLIFNode(_FusedNonSpiking):
    r"""Non-spiking LIF readout: :math:`V_t = V_{t-1} + (X_t - V_{t-1})/\tau`, :math:`V_0 = 0` (fused kernel)."""

    def __init__(self, tau: float = 2.0, decode: str | None = None, *, backend: str | None = None):
        super().__init__(decode, backend=backend)
        self.tau = check_time_constant(tau)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + (x - self.v) / self.tau

    def _kernel_spec(self) -> NeuronSpec:
        return lif_spec(self.tau, True, _NEVER, 0.0, surrogate.Rect().spec)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


NonSpikingIFNode._owner = NonSpikingIFNode
NonSpikingLIFNode._owner = NonSpikingLIFNode


# ==================================================================================== fused IF/LIF variants
class HalfThresholdIFNode(IFNode):
    r"""Soft-reset IF whose membrane starts (and restarts after :meth:`reset`) at :math:`V_{th}/2`:
    :math:`H_t = V_{t-1} + X_t`, :math:`S_t = \Theta(H_t - V_{th})`, :math:`V_t = H_t - S_t V_{th}`,
    :math:`V_0 = V_{th}/2` — so the spike count rounds the accumulated input instead of flooring it (fused)."""

    _python_dynamics = False

    def __init__(
        self,
        v_threshold: float = 1.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        v_threshold = check_threshold(v_threshold)
        if v_threshold <= 0.0:
            raise ValueError(f"v_threshold must be > 0, got {v_threshold}")
        super().__init__(v_threshold, None, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self._memory_defaults["v"] = v_threshold / 2.0
        self.v = v_threshold / 2.0


class _OnlineLIFNode(LIFNode):
    """LIF for online training: in training the membrane carried from the previous step is detached, so the
    graph spans one step only; in eval it is a plain LIF. Single-step mode only (fused kernel, T = 1)."""

    _python_dynamics = False

    def __init__(self, tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                 store_v_seq, backend):
        if step_mode != "s":
            raise ValueError(f"{type(self).__name__} trains online, one step per call: step_mode must be 's', "
                             f"got {step_mode!r}")
        super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend=backend)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and isinstance(self.v, torch.Tensor):
            self.v = self.v.detach()
        return super().single_step_forward(x)


class OTTTLIFNode(_OnlineLIFNode):
    r"""OTTT's LIF (Xiao et al. 2022): the LIF step with the previous membrane detached in training, plus a
    presynaptic trace :math:`a_t = (1 - 1/\tau)\,a_{t-1} + S_t` (no gradient). In training a call returns
    ``[spike, trace]``; in eval the spike only. Defaults as SpikingJelly: ``decay_input=False``, soft reset,
    ``detach_reset=True``."""

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = False,
        v_threshold: float = 1.0,
        v_reset: float | None = None,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = True,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend)
        self.register_memory("trace", None)

    def single_step_forward(self, x: torch.Tensor):
        spike = super().single_step_forward(x)
        if not self.training:
            return spike
        with torch.no_grad():
            trace = torch.zeros_like(spike) if self.trace is None else self.trace
            self.trace = trace * (1.0 - 1.0 / self.tau) + spike
        return [spike, self.trace]


class SLTTLIFNode(_OnlineLIFNode):
    r"""SLTT's LIF (Meng et al. 2023): the LIF step with the previous membrane detached in training (the
    spatial gradient only). Defaults as SpikingJelly: ``decay_input=True``, hard reset, ``detach_reset=True``."""

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function: surrogate.SurrogateFunctionBase | None = None,
        detach_reset: bool = True,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(tau, decay_input, v_threshold, v_reset, surrogate_function, detach_reset, step_mode,
                         store_v_seq, backend)


# =================================================================================== reference-path neurons
class QIFNode(BaseNode):
    r"""Quadratic integrate-and-fire:
    :math:`H_t = V_{t-1} + \frac{1}{\tau}\big(X_t + a_0 (V_{t-1} - V_{rest})(V_{t-1} - V_c)\big)`,
    then fire and reset R(H, S). ``v`` starts at ``v_reset`` (−0.1)."""

    _python_dynamics = True

    def __init__(
        self,
        tau: float = 2.0,
        v_c: float = 0.8,
        a0: float = 1.0,
        v_threshold: float = 1.0,
        v_rest: float = 0.0,
        v_reset: float | None = -0.1,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.tau = check_time_constant(tau)
        if self.v_reset is not None and not (self.v_threshold > self.v_reset and v_rest >= self.v_reset):
            raise ValueError("QIFNode needs v_threshold > v_reset and v_rest >= v_reset")
        if not a0 > 0:
            raise ValueError(f"a0 must be > 0, got {a0}")
        self.v_c, self.a0, self.v_rest = float(v_c), float(a0), float(v_rest)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + (x + self.a0 * (self.v - self.v_rest) * (self.v - self.v_c)) / self.tau

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, v_c={self.v_c}, a0={self.a0}, v_rest={self.v_rest}"


class EIFNode(BaseNode):
    r"""Exponential integrate-and-fire:
    :math:`H_t = V_{t-1} + \frac{1}{\tau}\big(X_t - (V_{t-1} - V_{rest})
    + \Delta_T \exp\big(\frac{V_{t-1} - \theta_{rh}}{\Delta_T}\big)\big)`, then fire and reset R(H, S).
    ``v`` starts at ``v_reset`` (−0.1)."""

    _python_dynamics = True

    def __init__(
        self,
        tau: float = 2.0,
        delta_T: float = 1.0,
        theta_rh: float = 0.8,
        v_threshold: float = 1.0,
        v_rest: float = 0.0,
        v_reset: float | None = -0.1,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.tau = check_time_constant(tau)
        if self.v_reset is not None and not (self.v_threshold > self.v_reset and v_rest >= self.v_reset):
            raise ValueError("EIFNode needs v_threshold > v_reset and v_rest >= v_reset")
        if not delta_T > 0:
            raise ValueError(f"delta_T must be > 0, got {delta_T}")
        self.delta_T, self.theta_rh, self.v_rest = float(delta_T), float(theta_rh), float(v_rest)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        v = self.v
        self.v = v + (x + self.v_rest - v + self.delta_T * torch.exp((v - self.theta_rh) / self.delta_T)) / self.tau

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, delta_T={self.delta_T}, theta_rh={self.theta_rh}"


class AdaptBaseNode(BaseNode):
    r"""A neuron with an adaptation current w (SpikingJelly's ``AdaptBaseNode``). Per step: ``neuronal_charge``
    (yours) gives H; :math:`w \leftarrow w + \frac{1}{\tau_w}\big(a (H - V_{rest}) - w\big)`; fire; reset
    V = R(H, S) and the jump :math:`w \leftarrow w + b\,S`. ``w`` starts at ``w_rest``."""

    _python_dynamics = True

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        v_rest: float = 0.0,
        w_rest: float = 0.0,
        tau_w: float = 2.0,
        a: float = 0.0,
        b: float = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.register_memory("w", float(w_rest))
        self.w_rest, self.v_rest, self.tau_w, self.a, self.b = (float(w_rest), float(v_rest), float(tau_w),
                                                                float(a), float(b))

    def neuronal_adaptation(self) -> None:
        self.w = self.w + (self.a * (self.v - self.v_rest) - self.w) / self.tau_w

    def neuronal_reset(self, spike: torch.Tensor) -> None:
        super().neuronal_reset(spike)
        self.w = self.w + self.b * spike

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        self.w = _state_like(self.w, x)
        self.neuronal_charge(x)
        self.neuronal_adaptation()
        spike = self.neuronal_fire()
        self.neuronal_reset(spike)
        return spike

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", v_rest={self.v_rest}, w_rest={self.w_rest}, tau_w={self.tau_w}, "
                f"a={self.a}, b={self.b}")


class IzhikevichNode(AdaptBaseNode):
    r"""Izhikevich-type neuron (quadratic charge with adaptation):
    :math:`H_t = V_{t-1} + \frac{1}{\tau}\big(X_t + a_0 (V_{t-1} - V_{rest})(V_{t-1} - V_c) - w_{t-1}\big)`,
    :math:`w_t = w_{t-1} + \frac{1}{\tau_w}\big(a (H_t - V_{rest}) - w_{t-1}\big) + b\,S_t`, V_t = R(H_t, S_t)."""

    def __init__(
        self,
        tau: float = 2.0,
        v_c: float = 0.8,
        a0: float = 1.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        v_rest: float = -0.1,
        w_rest: float = 0.0,
        tau_w: float = 2.0,
        a: float = 0.0,
        b: float = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, v_rest, w_rest, tau_w, a, b, surrogate_function, detach_reset,
                         step_mode, store_v_seq, backend=backend)
        self.tau = check_time_constant(tau)
        if not a0 > 0:
            raise ValueError(f"a0 must be > 0, got {a0}")
        self.v_c, self.a0 = float(v_c), float(a0)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        v = self.v
        self.v = v + (x + self.a0 * (v - self.v_rest) * (v - self.v_c) - self.w) / self.tau

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, v_c={self.v_c}, a0={self.a0}"


class CUBALIFNode(BaseNode):
    r"""Current-based LIF (Loihi's CUBA neuron): :math:`I_t = \delta_c I_{t-1} + X_t`,
    :math:`H_t = \delta_v V_{t-1} + I_t`, fire, V_t = R(H_t, S_t); ``c`` (the current) starts at 0.

    SpikingJelly's signature is ``(c_decay, v_decay, v_threshold, v_reset, surrogate_function)`` (Rect surrogate
    by default); ``detach_reset``, ``step_mode``, ``store_v_seq`` and ``backend`` are keyword-only here.
    """

    _python_dynamics = True

    def __init__(
        self,
        c_decay: float = 0.5,
        v_decay: float = 0.75,
        v_threshold: float = 0.5,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        *,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate.Rect() if surrogate_function is None else surrogate_function,
                         detach_reset, step_mode, store_v_seq, backend=backend)
        self.register_memory("c", 0.0)
        self.c_decay, self.v_decay = float(c_decay), float(v_decay)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.c = _state_like(self.c, x) * self.c_decay + x
        self.v = self.v * self.v_decay + self.c

    def extra_repr(self) -> str:
        return super().extra_repr() + f", c_decay={self.c_decay}, v_decay={self.v_decay}"


class KLIFNode(BaseNode):
    r"""KLIF (Jiang & Zhang 2023): the LIF charge, then :math:`F_t = \mathrm{ReLU}(k H_t)` with a learnable
    k (init 1), :math:`S_t = \Theta(F_t - V_{th})`; reset V_t = R(F_t, S_t), or with ``scale_reset``
    hard :math:`\frac{F_t}{k}(1 - S_r) + V_{reset} S_r`, soft :math:`\frac{1}{k}(F_t - S_r V_{th})`."""

    _python_dynamics = True

    def __init__(
        self,
        scale_reset: bool = False,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.scale_reset = bool(scale_reset)
        self.tau = check_time_constant(tau)
        self.decay_input = bool(decay_input)
        self.k = nn.Parameter(torch.as_tensor(1.0))

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = torch.relu(self.k * _lif_charge(self.v, x, self.tau, self.decay_input, self.v_reset))

    def neuronal_reset(self, spike: torch.Tensor) -> None:
        if self.scale_reset:
            self.v = _reset(self.v / self.k, spike, self.v_threshold / self.k, self.v_reset, self.detach_reset)
        else:
            self.v = _reset(self.v, spike, self.v_threshold, self.v_reset, self.detach_reset)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}, "
                f"scale_reset={self.scale_reset}")


class LIAFNode(LIFNode):
    r"""Leaky integrate-and-analog-fire (Wu et al. 2021): the LIF charge and reset, but the output is the analog
    :math:`Y_t = \mathrm{act}(H_t - V_{th})` (``threshold_related=True``) or :math:`\mathrm{act}(H_t)`; the spike
    :math:`S_t = \Theta(H_t - V_{th})` only drives the reset. The remaining arguments are :class:`LIFNode`'s."""

    _python_dynamics = True

    def __init__(self, act, threshold_related: bool, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not callable(act):
            raise TypeError(f"act must be callable (e.g. torch.nn.ReLU()), got {type(act).__name__}")
        self.act = act
        self.threshold_related = bool(threshold_related)

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        h = _lif_charge(self.v, x, self.tau, self.decay_input, self.v_reset)
        y = self.act(h - self.v_threshold if self.threshold_related else h)
        spike = self.surrogate_function(h - self.v_threshold)
        self.v = _reset(h, spike, self.v_threshold, self.v_reset, self.detach_reset)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", threshold_related={self.threshold_related}"


class ComplementaryLIFNode(BaseNode):
    r"""CLIF (Huang et al. 2024), soft reset with a complementary memory m:
    :math:`H_t = V_{t-1} - V_{t-1}/\tau + X_t`, :math:`S_t = \Theta(H_t - V_{th})`,
    :math:`m_t = m_{t-1}\,\sigma(H_t/\tau) + S_t`, :math:`V_t = H_t - S_t\,(V_{th} + \sigma(m_t))`.
    In eval with a spiking surrogate the spike is the plain Heaviside. ``store_state_seqs=True`` keeps
    ``state_seqs = [v_seq, m_seq]`` in multi-step mode (there is no ``store_v_seq``)."""

    _python_dynamics = True

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        surrogate_function=None,
        step_mode: str = "s",
        store_state_seqs: bool = False,
    ):
        super().__init__(v_threshold, None, surrogate.Rect(1.0) if surrogate_function is None else surrogate_function,
                         False, step_mode, False)
        self.tau = check_time_constant(tau)
        self.register_memory("m", 0.0)
        self.store_state_seqs = bool(store_state_seqs)
        self.state_seqs = None

    def reset(self) -> None:
        super().reset()
        self.state_seqs = None

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        m = _state_like(self.m, x)
        h = self.v - self.v / self.tau + x
        decayed = m * torch.sigmoid(h / self.tau)
        sg = self.surrogate_function
        if not self.training and getattr(sg, "spiking", True):
            spike = surrogate.heaviside(h - self.v_threshold)
        else:
            spike = sg(h - self.v_threshold)
        self.m = decayed + spike
        self.v = h - spike * (self.v_threshold + torch.sigmoid(self.m))
        return spike

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not self.store_state_seqs:
            return super().multi_step_forward(x_seq)
        F.check_sequence(x_seq)
        log_python_path(type(self))
        spikes, vs, ms = [], [], []
        for x in x_seq:
            spikes.append(self._python_step(x))
            vs.append(self.v)
            ms.append(self.m)
        self.state_seqs = [torch.stack(vs), torch.stack(ms)]
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}"


class GatedLIFNode(_MultiStepOnly, BaseNode):
    r"""GLIF (Yao et al. 2022), multi-step only, T fixed at construction. All gates are sigmoids of learnable
    logits (per channel with ``inplane``, else scalars): α, β, γ ∈ (0, 1) (init 0.2·(U − ½)), τ, V_th, the linear
    decay λ, the sub-reset V_sr, and the per-step conductance c_t. With the previous spike S_{t−1} (0 at t = 0):

    .. math::
        I_t = X_t\,(1 - \beta(1 - c_t)),\qquad k = 1 - \alpha(1 - \tau)

        V_t = k V_{t-1} - (1 - \alpha)\lambda + I_t - k V_{t-1}\gamma S_{t-1} - (1 - \gamma) V_{sr} S_{t-1}

        S_t = \Theta(V_t - V_{th})

    Parameters broadcast as ``[1, C, 1, 1]`` (images ``[T, N, C, H, W]``), as in SpikingJelly.
    """

    _python_dynamics = True

    def __init__(
        self,
        T: int,
        inplane: int | None = None,
        init_linear_decay: float | None = None,
        init_v_subreset: float | None = None,
        init_tau: float = 0.25,
        init_v_threshold: float = 0.5,
        init_conduct: float = 0.5,
        surrogate_function=None,
        step_mode: str = "m",
    ):
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int (the number of time steps), got {T!r}")
        if inplane is not None and (isinstance(inplane, bool) or not isinstance(inplane, int)):
            raise ValueError(f"inplane must be an int (channels) or None, got {inplane!r}")
        super().__init__(1.0, 0.0, surrogate.default() if surrogate_function is None else surrogate_function,
                         False, step_mode, False)
        del self.v_threshold  # a learnable parameter of the same name is registered below
        self.T = T
        self.register_memory("u", 0.0)
        shape = () if inplane is None else (inplane,)
        init_linear_decay = init_v_threshold / (T * 2) if init_linear_decay is None else init_linear_decay
        init_v_subreset = init_v_threshold if init_v_subreset is None else init_v_subreset
        for name, value in (("init_tau", init_tau), ("init_v_threshold", init_v_threshold),
                            ("init_conduct", init_conduct), ("init_linear_decay", init_linear_decay),
                            ("init_v_subreset", init_v_subreset)):
            if not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1) (it is a sigmoid's value), got {value}")

        def logit(p):
            return -math.log(1.0 / p - 1.0)

        self.alpha, self.beta, self.gamma = (
            nn.Parameter(torch.tensor(0.2 * (np.random.rand(*shape) - 0.5), dtype=torch.float)) for _ in range(3))
        self.tau = nn.Parameter(torch.full(shape, logit(init_tau)))
        self.v_threshold = nn.Parameter(torch.full(shape, logit(init_v_threshold)))
        self.linear_decay = nn.Parameter(torch.full(shape, logit(init_linear_decay)))
        self.v_subreset = nn.Parameter(torch.full(shape, logit(init_v_subreset)))
        self.conduct = nn.Parameter(torch.full((T, *shape), logit(init_conduct)))

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("GatedLIFNode runs whole sequences only (step_mode='m')")

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        F.check_sequence(x_seq)
        log_python_path(type(self))

        def gate(p):
            return p.view(1, -1, 1, 1).sigmoid()

        alpha, beta, gamma = gate(self.alpha), gate(self.beta), gate(self.gamma)
        tau, v_th, decay, v_sub = gate(self.tau), gate(self.v_threshold), gate(self.linear_decay), gate(self.v_subreset)
        v = _state_like(self.v, x_seq[0])
        spike = torch.zeros_like(x_seq[0])
        k = 1 - alpha * (1 - tau)
        spikes = []
        for t in range(self.T):
            current = x_seq[t] * (1 - beta * (1 - gate(self.conduct[t])))
            v = k * v - (1 - alpha) * decay + current - k * v * gamma * spike - (1 - gamma) * v_sub * spike
            spike = self.surrogate_function(v - v_th)
            spikes.append(spike)
        self.v = v
        self.u = v
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"T={self.T}, step_mode={self.step_mode}"


class RAFNode(BaseNode):
    r"""Resonate-and-fire (Izhikevich 2001), a damped oscillator (u, v) rotated by ω·dt and shrunk by
    :math:`e^{b\,dt}` (b < 0) each step:
    :math:`u_t = e^{b\,dt}(u_{t-1}\cos\omega dt - V_{t-1}\sin\omega dt) + X_t`,
    :math:`H_t = e^{b\,dt}(u_{t-1}\sin\omega dt + V_{t-1}\cos\omega dt)`, fire on H, V_t = R(H_t, S_t)."""

    _python_dynamics = True

    def __init__(
        self,
        b: float = -0.2,
        omega: float = 1.0,
        dt: float = 1.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        *,
        backend: str | None = None,
    ):
        if not (b < 0 and omega > 0 and dt > 0):
            raise ValueError(f"RAFNode needs b < 0, omega > 0 and dt > 0, got b={b}, omega={omega}, dt={dt}")
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.register_memory("u", 0.0)
        self.b, self.omega, self.dt = float(b), float(omega), float(dt)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        shrink = math.exp(self.b * self.dt)
        cos, sin = math.cos(self.omega * self.dt), math.sin(self.omega * self.dt)
        u, v = _state_like(self.u, x), self.v
        self.u = shrink * (u * cos - v * sin) + x
        self.v = shrink * (u * sin + v * cos)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", b={self.b}, omega={self.omega}, dt={self.dt}"


class _TernaryMixin:
    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        self.neuronal_charge(x)
        h = self.v
        positive = self.surrogate_function(h - self.v_threshold)
        negative = self.surrogate_function(-h - self.v_threshold)
        spike = positive - negative
        event = spike if self.v_reset is None else positive + negative
        self.v = _reset(h, event, self.v_threshold, self.v_reset, self.detach_reset)
        return spike


class TernaryIFNode(_TernaryMixin, BaseNode):
    r"""IF with spikes in {−1, 0, 1}: :math:`H_t = V_{t-1} + X_t`,
    :math:`S_t = \Theta(H_t - V_{th}) - \Theta(-H_t - V_{th})`; soft reset :math:`V_t = H_t - S_r V_{th}`,
    hard reset to V_reset wherever either side fired."""

    _python_dynamics = True

    def __init__(self, v_threshold: float = 1.0, v_reset: float | None = 0.0, surrogate_function=None,
                 detach_reset: bool = False, step_mode: str = "s", store_v_seq: bool = False, *,
                 backend: str | None = None):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = self.v + x


class TernaryLIFNode(_TernaryMixin, BaseNode):
    r"""LIF with spikes in {−1, 0, 1}: the LIF charge, then fire and reset as :class:`TernaryIFNode`."""

    _python_dynamics = True

    def __init__(self, tau: float = 2.0, decay_input: bool = True, v_threshold: float = 1.0,
                 v_reset: float | None = 0.0, surrogate_function=None, detach_reset: bool = False,
                 step_mode: str = "s", store_v_seq: bool = False, *, backend: str | None = None):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        self.tau = check_time_constant(tau)
        self.decay_input = bool(decay_input)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = _lif_charge(self.v, x, self.tau, self.decay_input, self.v_reset)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}"



class ILIFNode(LIFNode):
    r"""Integer LIF (multi-level spikes; SpikingJelly's ``ILIFNode``): :math:`H_t = (1 - 1/\tau) V_{t-1} + X_t`,
    :math:`S_t = \mathrm{round}(\mathrm{clamp}(H_t/V_{th}, 0, K))` with the gradient of
    ``surrogate.MultiLevelSpikeCount(K)`` (1 inside its window), soft reset :math:`V_t = H_t - S_r V_{th}`.
    ``tau`` defaults to 4/3 (decay 1/4)."""

    _python_dynamics = True

    def __init__(
        self,
        tau: float = 4.0 / 3.0,
        v_threshold: float = 1.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
    ):
        if surrogate_function is None:
            surrogate_function = surrogate.MultiLevelSpikeCount(4)
        if not isinstance(surrogate_function, surrogate.MultiLevelSpikeCount) or not surrogate_function.spiking:
            raise ValueError("surrogate_function must be a spiking surrogate.MultiLevelSpikeCount")
        super().__init__(tau, False, v_threshold, None, surrogate_function, detach_reset, step_mode, store_v_seq)

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        h = (1.0 - 1.0 / self.tau) * self.v + x
        spike = self.surrogate_function(h / self.v_threshold)
        self.v = _reset(h, spike, self.v_threshold, None, self.detach_reset)
        return spike


class MPBNBaseNode(BaseNode):
    r"""A neuron with membrane-potential batch normalisation (MPBN, Guo et al. 2023): the charged membrane is
    normalised by ``vbn`` (``BatchNorm1d(out_features)`` or ``BatchNorm2d(out_channels)``; ``nn.Identity`` with
    ``mpbn=False``) before firing, and the normalised value is what fires and is carried. ``learnable_vth``
    fires against :math:`e^{a}` per feature (a learnable, init 0). After training,
    :meth:`re_parameterize_v_threshold` folds the BN into the threshold,
    :math:`V_{th}' = (V_{th} - \beta)\sqrt{\sigma^2 + \epsilon}/\gamma + \mu`, so inference needs no BN;
    ``normalize_residual`` then still normalises the sub-threshold membrane, and a model trained further in that
    state (test-time adaptation) re-estimates μ, σ² from each batch (``running_stats``: as a running average
    whose momentum decays by ``bn_decay_momentum`` per step down to ``bn_min_momentum``). Exactly one of
    ``out_features`` / ``out_channels`` is required."""

    _python_dynamics = True

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        mpbn: bool = True,
        out_features=None,
        out_channels=None,
        learnable_vth: bool = False,
        bn_momentum: float = 0.1,
        bn_decay_momentum: float = 0.94,
        bn_min_momentum: float = 0.005,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq,
                         backend=backend)
        if (out_features is None) == (out_channels is None):
            raise ValueError("give exactly one of out_features or out_channels")
        features = out_channels if out_channels is not None else out_features
        if mpbn:
            self.vbn = nn.BatchNorm2d(features) if out_channels is not None else nn.BatchNorm1d(features)
        else:
            self.vbn = nn.Identity()
        self.register_buffer("mu", None)
        self.register_buffer("sigma2", None)
        self.gamma = self.beta = self.eps = None
        self.fold_bn = self.normalize_residual = self.running_stats = False
        self.bn_momentum, self.bn_decay_momentum, self.bn_min_momentum = (float(bn_momentum), float(bn_decay_momentum),
                                                                          float(bn_min_momentum))
        self.learnable_vth = bool(learnable_vth)
        if self.learnable_vth:
            self.a = nn.Parameter(torch.zeros(features))

    def re_parameterize_v_threshold(self, normalize_residual: bool = False, running_stats: bool = False) -> None:
        """Fold ``vbn`` into the threshold (see the class); a learnt e^a becomes the fixed ``v_threshold``."""
        if isinstance(self.vbn, nn.Identity):
            return
        self.fold_bn = True
        if self.learnable_vth:
            self.v_threshold = torch.exp(self.a.detach())
            del self.a
            self.learnable_vth = False
        self.normalize_residual, self.running_stats = bool(normalize_residual), bool(running_stats)
        self.mu, self.sigma2 = self.vbn.running_mean, self.vbn.running_var
        self.gamma, self.beta, self.eps = self.vbn.weight, self.vbn.bias, self.vbn.eps
        self.vbn = nn.Identity()

    def _normalise(self, v: torch.Tensor) -> torch.Tensor:
        bn = self.vbn
        if isinstance(bn, nn.Identity):
            return v
        factor = 0.0 if bn.momentum is None else bn.momentum
        if self.training:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked)
        return torch.nn.functional.batch_norm(v, bn.running_mean, bn.running_var, bn.weight, bn.bias, self.training,
                                              factor, bn.eps)

    def _python_step(self, x: torch.Tensor) -> torch.Tensor:
        self.v_float_to_tensor(x)
        self.neuronal_charge(x)
        v = self._normalise(self.v)
        folded = self.fold_bn and not self.learnable_vth
        if folded and self.training and not (v.dim() == 2 and v.shape[0] == 1):
            dims = 0 if v.dim() == 2 else (0, 2, 3)
            batch_mu, batch_var = v.mean(dims).detach(), v.var(dims, unbiased=True).detach()
            if self.running_stats:
                m = self.bn_momentum
                self.mu = self.mu.detach() * (1 - m) + batch_mu * m
                self.sigma2 = self.sigma2.detach() * (1 - m) + batch_var * m
                self.bn_momentum = max(m * self.bn_decay_momentum, self.bn_min_momentum)
            else:
                self.mu, self.sigma2 = batch_mu, batch_var
        shape = (1, -1) if v.dim() == 2 else (1, -1, 1, 1)
        if folded:
            threshold = ((self.v_threshold - self.beta) * torch.sqrt(self.sigma2 + self.eps) / self.gamma
                         + self.mu).view(shape)
        elif self.learnable_vth:
            threshold = torch.exp(self.a).view(shape)
        else:
            threshold = self.v_threshold
        diff = v - threshold
        spike = self.surrogate_function(diff)
        if self.normalize_residual:
            sigma = torch.sqrt(self.sigma2 + self.eps).view(shape)
            normalised = (v - self.mu.view(shape)) / sigma * self.gamma.view(shape) + self.beta.view(shape)
            v = torch.where(diff <= 0, normalised, v)
        self.v = _reset(v, spike, self.v_threshold, self.v_reset, self.detach_reset)
        return spike


class MPBNLIFNode(MPBNBaseNode):
    r"""LIF with membrane-potential BN (:class:`MPBNBaseNode`): the LIF charge (``decay_input`` False by
    default), :math:`\tilde H_t = \mathrm{BN}(H_t)`, fire on :math:`\tilde H_t`, reset :math:`\tilde H_t`."""

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = False,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        surrogate_function=None,
        detach_reset: bool = False,
        step_mode: str = "s",
        store_v_seq: bool = False,
        mpbn: bool = True,
        out_features=None,
        out_channels=None,
        learnable_vth: bool = False,
        bn_momentum: float = 0.1,
        bn_decay_momentum: float = 0.94,
        bn_min_momentum: float = 0.005,
        *,
        backend: str | None = None,
    ):
        super().__init__(v_threshold, v_reset, surrogate_function, detach_reset, step_mode, store_v_seq, mpbn,
                         out_features, out_channels, learnable_vth, bn_momentum, bn_decay_momentum, bn_min_momentum,
                         backend=backend)
        self.tau = check_time_constant(tau)
        self.decay_input = bool(decay_input)

    def neuronal_charge(self, x: torch.Tensor) -> None:
        self.v = _lif_charge(self.v, x, self.tau, self.decay_input, self.v_reset)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", tau={self.tau}, decay_input={self.decay_input}"
