"""Reference multi-step neuron kernel in plain PyTorch: the oracle every fused kernel is tested against.

One kernel serves the whole IF / LIF / ParametricLIF family (and the STBP LIF), because they differ only in the
charge coefficient ``decay`` (written d below). Per step t, with input X_t and the membrane V_{t-1}:

    charge   H_t = V_{t-1} − d·(V_{t-1} − V_r) + c·X_t          c = d if decay_input else 1
    fire     S_t = Θ(H_t − V_th)                               Θ(z) = 1[z ≥ 0]  (1[z > 0] if not fire_on_tie)
    reset    V_t = H_t·(1 − S_r) + V_r·S_r    (hard, v_reset = V_r)
             V_t = H_t − V_th·S_r            (soft, v_reset = None; V_r = 0 in the charge)
             S_r = S_t, or S_t detached from the graph when detach_reset

The neuron is described by a :class:`spikeforge.spec.NeuronSpec`; d is its ``leak.decay`` (the leak laws are
tabulated in :mod:`spikeforge.spec`), or the value of a learnable parameter passed next to the spec:

    IF:       leak NONE              d = 0, H_t = V_{t-1} + X_t
    LIF:      leak TIME_CONSTANT     d = 1/τ (SpikingJelly's LIFNode; decay_input selects c)
    PLIF:     leak LEARNABLE         d = sigmoid(w), w learnable
    STBP LIF: leak RETENTION         d = 1 − r, c = 1, V_r = 0, strict >:  u_t = r·u_{t−1}·(1 − o_{t−1}) + x_t

Backward (reverse time) uses the surrogate derivative σ'(H_t − V_th) for ∂S_t/∂H_t:

    ∂V_t/∂H_t = (1 − S_t) + (V_r − H_t)·σ'    hard reset (the σ' term is dropped when detach_reset)
              = 1 − V_th·σ'                    soft reset (likewise)
    gH_t = gS_t·σ' + gV_t·∂V_t/∂H_t,   gX_t = c·gH_t,   gV_{t−1} = (1 − d)·gH_t
    g_d += Σ gH_t·(X_t·[decay_input] − (V_{t−1} − V_r))

With a surrogate in ``spiking=False`` mode (``spec.smooth``) S_t = g(H_t − V_th) replaces Θ everywhere, so the
whole pass is differentiable and float64 ``gradcheck`` verifies every term of the backward above exactly.

Saved for backward: H (the charged membrane, [T, ...]), from which S_t and V_t are recomputed; plus V_0 and X
only when the gradient of d is needed (ParametricLIF).
"""

from __future__ import annotations

import torch

from .. import surrogate as _surrogate
from ..spec import NeuronSpec, StateDtype


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """State and arithmetic precision (:class:`spikeforge.spec.StateDtype`): float64 stays float64, else float32."""
    return StateDtype.FLOAT32_OR_64.resolve(dtype)


def _fire(h: torch.Tensor, spec: NeuronSpec) -> torch.Tensor:
    """S = Θ(H − V_th) in H's dtype, or the smooth g(H − V_th) when ``spec.smooth``, or the forward of a
    ``CUSTOM`` surrogate module (SpikingJelly's neurons emit ``surrogate_function(H − V_th)``)."""
    if spec.smooth or spec.custom_surrogate:
        return _surrogate.spec_primitive(spec.surrogate, h - spec.v_threshold)
    return ((h >= spec.v_threshold) if spec.fire_on_tie else (h > spec.v_threshold)).to(h.dtype)


def _reset(h: torch.Tensor, spike: torch.Tensor, spec: NeuronSpec) -> torch.Tensor:
    if spec.v_reset is None:
        return h - spec.v_threshold * spike
    return h * (1.0 - spike) + spec.v_reset * spike


class ReferenceKernel:
    """Plain-PyTorch loop over T. Works on any device and dtype; the numerical oracle."""

    name = "reference"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return True

    @staticmethod
    def forward(x_seq, v0, decay: float, spec: NeuronSpec, store_v_seq: bool, need_decay_grad: bool):
        """x_seq [T, M], v0 [M] (float32/64) -> (spike_seq [T, M] in x's dtype, v_last, v_seq or None, saved)."""
        cdt = compute_dtype(x_seq.dtype)
        x = x_seq.to(cdt)
        v = v0.to(cdt)
        v_r = spec.reset_value
        h_seq = torch.empty_like(x)
        spike_seq = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x) if store_v_seq else None
        for t in range(x.shape[0]):
            if not spec.leaky:
                h = v + x[t]
            elif spec.decay_input:
                h = v + (x[t] - (v - v_r)) * decay
            else:
                h = v - (v - v_r) * decay + x[t]
            spike = _fire(h, spec)
            v = _reset(h, spike, spec)
            h_seq[t] = h
            spike_seq[t] = spike
            if v_seq is not None:
                v_seq[t] = v
        saved = (h_seq, v0.to(cdt), x) if need_decay_grad else (h_seq,)
        return spike_seq, v, v_seq, saved

    @staticmethod
    def backward(saved, grad_spike, grad_v_last, grad_v_seq, decay: float, spec: NeuronSpec,
                 need_decay_grad: bool):
        """Returns (grad_x [T, M], grad_v0 [M], grad_decay (0-d tensor) or None)."""
        h_seq = saved[0]
        cdt = h_seq.dtype
        v_r = spec.reset_value
        vth = spec.v_threshold
        grad_x = torch.empty_like(h_seq)
        grad_v = grad_v_last.to(cdt) if grad_v_last is not None else torch.zeros_like(h_seq[0])
        grad_decay = torch.zeros((), dtype=cdt, device=h_seq.device) if need_decay_grad else None
        for t in range(h_seq.shape[0] - 1, -1, -1):
            if grad_v_seq is not None:
                grad_v = grad_v + grad_v_seq[t].to(cdt)
            h = h_seq[t]
            sg = _surrogate.spec_derivative(spec.surrogate, h - vth)
            spike = _fire(h, spec)
            # ∂V_t/∂H_t, the surrogate path through S_r included unless detach_reset
            if spec.v_reset is None:
                reset_grad = 1.0 if spec.detach_reset else 1.0 - vth * sg
            else:
                reset_grad = 1.0 - spike
                if not spec.detach_reset:
                    reset_grad = reset_grad + (spec.v_reset - h) * sg
            grad_h = grad_v * reset_grad
            if grad_spike is not None:
                grad_h = grad_spike[t].to(cdt) * sg + grad_h
            grad_x[t] = grad_h * decay if spec.decay_input and spec.leaky else grad_h
            if need_decay_grad:
                v_prev = saved[1] if t == 0 else _reset(h_seq[t - 1], _fire(h_seq[t - 1], spec), spec)
                x_term = saved[2][t] if spec.decay_input else 0.0
                grad_decay = grad_decay + (grad_h * (x_term - (v_prev - v_r))).sum()
            grad_v = grad_h - grad_h * decay
        return grad_x, grad_v, grad_decay
