"""Multi-step neuron kernels behind one boundary.

:func:`neuron_multi_step` is the only entry point: it flattens the neuron dimensions, picks a kernel with
:func:`~spikeforge.kernels.dispatch.select_kernel` and runs it as a single autograd node (not T small ops):

* the fused kernels (``'cpu'``: numba, :mod:`.cpu`; ``'triton'``: CUDA, :mod:`.triton`) go through the
  ``torch.library`` custom op ``spikeforge::neuron_multi_step`` (:mod:`.ops`), which ``torch.compile`` keeps
  as one opaque op;
* the reference kernel (and the smooth, ``spiking=False`` surrogate mode, which only it implements) goes
  through a ``torch.autograd.Function``.
"""

from __future__ import annotations

import torch

from . import ops as _ops
from .cpu import CpuKernel
from .dispatch import available_backends, register_kernel, select_kernel
from .reference import NeuronSpec, ReferenceKernel, compute_dtype
from .triton import TritonKernel

register_kernel("cpu", CpuKernel)
register_kernel("triton", TritonKernel)

__all__ = [
    "CpuKernel",
    "NeuronSpec",
    "ReferenceKernel",
    "TritonKernel",
    "available_backends",
    "compute_dtype",
    "neuron_multi_step",
    "register_kernel",
    "select_kernel",
]


class _MultiStepNeuron(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_seq, v0, decay_param, decay_value, spec, store_v_seq, kernel):
        need_decay_grad = decay_param is not None and decay_param.requires_grad
        spike_seq, v_last, v_seq, saved = kernel.forward(
            x_seq, v0, decay_value, spec, store_v_seq, need_decay_grad
        )
        ctx.save_for_backward(*saved)
        ctx.decay_value = decay_value
        ctx.spec = spec
        ctx.kernel = kernel
        ctx.need_decay_grad = need_decay_grad
        ctx.v0_dtype = v0.dtype
        ctx.x_dtype = x_seq.dtype
        if v_seq is None:
            v_seq = v_last.new_empty(0)
        return spike_seq, v_last, v_seq

    @staticmethod
    def backward(ctx, grad_spike, grad_v_last, grad_v_seq):
        if grad_v_seq is not None and grad_v_seq.numel() == 0:
            grad_v_seq = None
        grad_x, grad_v0, grad_decay = ctx.kernel.backward(
            ctx.saved_tensors, grad_spike, grad_v_last, grad_v_seq, ctx.decay_value, ctx.spec,
            ctx.need_decay_grad,
        )
        grad_x = grad_x.to(ctx.x_dtype)
        grad_v0 = grad_v0.to(ctx.v0_dtype) if ctx.needs_input_grad[1] else None
        if grad_decay is not None and ctx.needs_input_grad[2]:
            grad_decay = grad_decay.reshape(()).to(ctx.saved_tensors[0].dtype)
        else:
            grad_decay = None
        return grad_x, grad_v0, grad_decay, None, None, None, None


def neuron_multi_step(
    x_seq: torch.Tensor,
    v0: torch.Tensor,
    decay: float | torch.Tensor,
    spec: NeuronSpec,
    store_v_seq: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run T steps of the neuron family described in :mod:`spikeforge.kernels.reference`.

    ``x_seq`` is ``[T, *shape]``; ``v0`` is the membrane before step 0, shaped ``shape`` (float32, or float64 for
    float64 input); ``decay`` is d (a float, or a 0-d tensor when it is learnable). Returns
    ``(spike_seq [T, *shape] in x's dtype, v_last [*shape], v_seq [T, *shape] or None)``; the state stays in
    float32 (float64 for float64 input) whatever the input dtype.
    """
    shape = x_seq.shape[1:]
    T = x_seq.shape[0]
    x_flat = x_seq.reshape(T, -1)
    if not x_flat.is_contiguous():
        x_flat = x_flat.contiguous()
    v_flat = v0.reshape(-1)
    kernel = select_kernel(x_seq.device, backend, spec)
    if kernel is not ReferenceKernel:
        spike_seq, v_last, v_seq = _ops.call(x_flat, v_flat, decay, spec, bool(store_v_seq), kernel.name)
    else:
        if isinstance(decay, torch.Tensor):
            decay_param, decay_value = decay, float(decay.detach())
        else:
            decay_param, decay_value = None, float(decay)
        spike_seq, v_last, v_seq = _MultiStepNeuron.apply(
            x_flat, v_flat, decay_param, decay_value, spec, bool(store_v_seq), kernel
        )
    spike_seq = spike_seq.reshape(T, *shape)
    v_last = v_last.reshape(shape)
    v_seq = v_seq.reshape(T, *shape) if store_v_seq else None
    return spike_seq, v_last, v_seq
