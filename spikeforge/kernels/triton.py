"""Fused multi-step neuron kernel for CUDA devices, written in Triton.

The equations are those of :mod:`spikeforge.kernels.reference`. One program owns ``BLOCK`` neurons and walks
them through all T steps with the membrane in registers, so the input is read once and the spikes written once.
The neuron options and the surrogate id are ``tl.constexpr``: Triton compiles one small kernel per combination
actually used, with no branches left inside the time loop.

Saved for backward, as in the CPU kernel: only the input ``x`` and ``v0``. Backward first recomputes H_t into
the rows of ``grad_x`` (its own output buffer, so no extra memory), then runs the reverse-time recursion, each
program over its own neurons, overwriting H_t by the input gradient. The float parameters travel in a small
tensor of the compute dtype, so float64 runs entirely in float64.

On machines without a GPU the same kernels run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how the test-suite checks them; ``is_available`` accepts the CPU then.
"""

from __future__ import annotations

import importlib.util
import math
import os

import torch

from .cpu import _reference_backward, _reference_forward
from .reference import NeuronSpec, compute_dtype

_BLOCK = 256


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _kernels():
    from . import _triton_jit

    return _triton_jit.forward_kernel, _triton_jit.backward_kernel


def _params(decay: float, spec: NeuronSpec, cdt: torch.dtype, device) -> torch.Tensor:
    p0, p1 = float(spec.surrogate_p0), float(spec.surrogate_p1)
    values = [decay, spec.reset_value, spec.v_threshold, p0, p1, math.pi / 2.0 * p0, p0 / math.sqrt(math.pi)]
    return torch.tensor(values, dtype=cdt, device=device)


class TritonKernel:
    """Triton kernel; registered as ``'triton'`` and first in the CUDA preference list."""

    name = "triton"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return TritonKernel.unavailable_reason(device) is None

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        """Why the kernel cannot run on ``device`` (None when it can); the dispatch logs it once."""
        device = torch.device(device)
        if not triton_installed():
            return "needs triton (pip install spikeforge[gpu])"
        if device.type == "cuda" or (device.type == "cpu" and _interpreting()):
            return None
        return "runs on CUDA devices (or on the CPU under TRITON_INTERPRET=1)"

    @staticmethod
    def forward(x_seq, v0, decay: float, spec: NeuronSpec, store_v_seq: bool, need_decay_grad: bool):
        if spec.smooth:
            return _reference_forward(x_seq, v0, decay, spec, store_v_seq)
        forward_kernel, _ = _kernels()
        cdt = compute_dtype(x_seq.dtype)
        x = x_seq.contiguous()
        v_init = v0.to(cdt).contiguous()
        T, M = x.shape
        spike_seq = torch.empty_like(x)
        v_last = torch.empty(M, dtype=cdt, device=x.device)
        v_seq = torch.empty((T, M), dtype=cdt, device=x.device) if store_v_seq else v_last
        grid = (triton_cdiv(M, _BLOCK),)
        forward_kernel[grid](x, v_init, spike_seq, v_last, v_seq, _params(decay, spec, cdt, x.device), T, M,
                             LEAKY=spec.leaky, DECAY_INPUT=spec.decay_input, HARD=spec.v_reset is not None,
                             TIE=spec.fire_on_tie, STORE_V=bool(store_v_seq), BLOCK=_BLOCK)
        return spike_seq, v_last, (v_seq if store_v_seq else None), (x_seq, v0)

    @staticmethod
    def backward(saved, grad_spike, grad_v_last, grad_v_seq, decay: float, spec: NeuronSpec,
                 need_decay_grad: bool):
        if spec.smooth:
            return _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)
        _, backward_kernel = _kernels()
        x_seq, v0 = saved[0], saved[1]
        cdt = compute_dtype(x_seq.dtype)
        x = x_seq.contiguous()
        T, M = x.shape
        dev = x.device
        v_init = v0.to(cdt).contiguous()
        zero_row = torch.zeros(M, dtype=cdt, device=dev)  # an absent gradient, read with stride 0
        gs = zero_row if grad_spike is None else grad_spike.to(cdt).contiguous()
        gvs = zero_row if grad_v_seq is None else grad_v_seq.to(cdt).contiguous()
        gvl = zero_row if grad_v_last is None else grad_v_last.to(cdt).contiguous()
        grad_x = torch.empty((T, M), dtype=cdt, device=dev)
        grad_v0 = torch.empty(M, dtype=cdt, device=dev)
        n_programs = triton_cdiv(M, _BLOCK)
        partials = torch.zeros(M if need_decay_grad else 1, dtype=cdt, device=dev)  # per-neuron sums over t
        backward_kernel[(n_programs,)](
            x, v_init, gs, 0 if grad_spike is None else M, gvl, gvs, 0 if grad_v_seq is None else M, grad_x,
            grad_v0, partials, _params(decay, spec, cdt, dev), T, M,
            LEAKY=spec.leaky, DECAY_INPUT=spec.decay_input, HARD=spec.v_reset is not None, TIE=spec.fire_on_tie,
            DETACH=spec.detach_reset, SID=int(spec.surrogate_id), NEED_DECAY_GRAD=bool(need_decay_grad),
            BLOCK=_BLOCK,
        )
        grad_decay = partials.sum() if need_decay_grad else None
        return grad_x, grad_v0, grad_decay


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["TritonKernel", "triton_installed"]
