"""The ANN→SNN conversion IF neuron (equations: :mod:`spikeforge.kernels.conversion`)."""

from __future__ import annotations

import torch

from .. import functional as F
from ..base import MemoryModule
from ..spec import NeuronSpec, conversion_if_spec


class ConversionIFNode(MemoryModule):
    r"""Integrate-and-fire neuron with soft reset and the low-latency options used for conversion.

    Charge and fire (threshold :math:`\theta`, soft reset, i.e. subtract :math:`\theta` on a spike):

    .. math::
        v_t = v_{t-1} + x_t,\qquad s_t = \mathbb{1}[v_t \ge \theta],\qquad v_t \leftarrow v_t - \theta s_t

    ``v_threshold`` is a float or a tensor broadcasting against one step of the input (one threshold per
    channel). With ``emit_threshold=True`` a spike is emitted with amplitude :math:`\theta` instead of 1,
    which is ``VoltageScaler(1/theta) -> IF(threshold 1) -> VoltageScaler(theta)`` fused into one pass.

    Options:

    * ``half_threshold`` starts the membrane at :math:`\theta/2` instead of 0, so the spike count after
      ``t`` steps rounds the accumulated input instead of flooring it (halves the worst-case error).
    * ``signed`` allows a *negative* spike :math:`s_t=-1` (and :math:`v_t \mathrel{+}= \theta`) when
      :math:`v_t < 0` and the neuron has a positive net spike count. The net count then tracks
      :math:`\mathrm{clip}(\lfloor S_t/\theta + v_0/\theta \rfloor, 0, t)` of the accumulated input
      :math:`S_t`, which removes the over-firing that happens when a neuron fires early and later receives
      net negative input.

    With neither option this is the standard soft-reset IF neuron (SpikingJelly's ``IFNode(v_reset=None)``).
    State: ``v`` (membrane) and, with ``signed``, ``count``; cleared by ``reset()``.

    ``backend`` takes the names every neuron takes: ``'auto'`` (default) runs the time loop as one fused numba
    kernel (``'cpu'``) when numba is installed and the input is a float32 CPU tensor that needs no gradient
    (conversion is inference), else the in-place PyTorch loop (``'reference'``), which ``'reference'`` forces.
    """

    def __init__(self, v_threshold: float | torch.Tensor = 1.0, half_threshold: bool = False,
                 signed: bool = False, emit_threshold: bool = False, step_mode: str = "s",
                 backend: str | None = "auto"):
        super().__init__(step_mode)
        self.backend = F.check_backend(backend)
        threshold = torch.as_tensor(v_threshold, dtype=torch.float32).clone()
        if not bool((threshold > 0).all()) or not bool(torch.isfinite(threshold).all()):
            raise ValueError(f"v_threshold must be finite and > 0, got {v_threshold!r}")
        self.register_buffer("v_threshold", threshold)
        self.half_threshold = bool(half_threshold)
        self.signed = bool(signed)
        self.emit_threshold = bool(emit_threshold)
        self._spec_cache: tuple | None = None
        self.register_memory("v", None)
        self.register_memory("count", None)

    @property
    def spec(self) -> NeuronSpec:
        """The neuron's description; a per-channel threshold is recorded as ``per_channel_threshold``."""
        per_channel = self.v_threshold.numel() > 1
        scalar = None if per_channel else float(self.v_threshold)
        inputs = (per_channel, scalar, self.half_threshold, self.signed, self.emit_threshold)
        if self._spec_cache is None or self._spec_cache[0] != inputs:
            self._spec_cache = (inputs, conversion_if_spec(1.0 if per_channel else scalar, per_channel,
                                                           self.half_threshold, self.signed, self.emit_threshold))
        return self._spec_cache[1]

    def _init_state(self, x: torch.Tensor, spec: NeuronSpec) -> None:
        v0 = spec.conversion.initial_membrane_fraction * self.v_threshold
        self.v = torch.empty_like(x, memory_format=torch.contiguous_format).copy_(v0.to(x.dtype).expand_as(x))
        self.count = torch.zeros_like(x) if spec.conversion.signed_spikes else None

    def _run(self, x_seq: torch.Tensor, steps: int, static: bool) -> torch.Tensor:
        spec = self.spec
        frame = x_seq[0]
        if self.v is None or self.v.shape != frame.shape:
            self._init_state(frame, spec)
        return F.conversion_if_multi_step(x_seq, steps, static, self.v, self.count, self.v_threshold, spec,
                                          self.backend)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.unsqueeze(0), 1, False)[0]

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self._run(x_seq, x_seq.shape[0], False)

    def static_forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` steps of the same input ``x`` ``[N, ...]`` (direct coding) without repeating it in memory."""
        return self._run(x.unsqueeze(0), steps, True)

    def extra_repr(self) -> str:
        theta = (f"{self.v_threshold.item():.6g}" if self.v_threshold.numel() == 1
                 else f"<{tuple(self.v_threshold.shape)} channel-wise>")
        return (f"v_threshold={theta}, half_threshold={self.half_threshold}, signed={self.signed}, "
                f"emit_threshold={self.emit_threshold}, step_mode={self.step_mode}")


__all__ = ["ConversionIFNode"]
