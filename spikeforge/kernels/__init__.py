"""Neuron kernels behind one boundary.

:func:`neuron_multi_step` runs the charge-fire-reset family (IF / LIF / PLIF / STBP LIF); it flattens the neuron
dimensions, picks a kernel with :func:`~spikeforge.kernels.dispatch.select_kernel` from the
:class:`~spikeforge.spec.NeuronSpec` and runs it as a single autograd node (not T small ops):

* the fused kernels (``'cpu'``: numba, :mod:`.cpu`; ``'triton'``: CUDA, :mod:`.triton`) go through the
  ``torch.library`` custom op ``spikeforge::neuron_multi_step`` (:mod:`.ops`), which ``torch.compile`` keeps
  as one opaque op;
* the reference kernel (and the smooth, ``spiking=False`` surrogate mode, which only it implements) goes
  through a ``torch.autograd.Function``.

The conversion-IF and group-LIF families have their own kernels (:mod:`.conversion`, :mod:`.group`) behind the
same dispatch. Only :mod:`spikeforge.functional` calls into this package (and a user who wants the CPU
kernels' cached output buffers back now: :func:`empty_cache`, :func:`cache_stats`, :mod:`._alloc`).
"""

from __future__ import annotations

import torch

from ..spec import KernelFamily, NeuronSpec
from . import ops as _ops
from ._alloc import cache_stats, empty_cache
from .conversion import ConversionCpuKernel, ConversionReferenceKernel
from .cpu import CpuKernel
from .dispatch import (
    BACKENDS,
    NeuronKernel,
    available_backends,
    check_backend,
    get_kernel,
    register_kernel,
    registered_kernels,
    select_kernel,
)
from .group import GroupLIFReferenceKernel
from .reference import ReferenceKernel, compute_dtype
from .triton import TritonKernel

register_kernel("reference", ReferenceKernel)
register_kernel("cpu", CpuKernel)
register_kernel("triton", TritonKernel)
register_kernel("reference", ConversionReferenceKernel, KernelFamily.CONVERSION_IF)
register_kernel("cpu", ConversionCpuKernel, KernelFamily.CONVERSION_IF)
register_kernel("reference", GroupLIFReferenceKernel, KernelFamily.GROUP_LIF)

__all__ = [
    "BACKENDS",
    "ConversionCpuKernel",
    "ConversionReferenceKernel",
    "CpuKernel",
    "GroupLIFReferenceKernel",
    "NeuronKernel",
    "NeuronSpec",
    "ReferenceKernel",
    "TritonKernel",
    "available_backends",
    "cache_stats",
    "check_backend",
    "compute_dtype",
    "empty_cache",
    "get_kernel",
    "neuron_multi_step",
    "register_kernel",
    "registered_kernels",
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
    spec: NeuronSpec,
    decay: torch.Tensor | None = None,
    store_v_seq: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run T steps of the charge-fire-reset neuron described by ``spec`` (:mod:`spikeforge.kernels.reference`).

    ``x_seq`` is ``[T, *shape]``; ``v0`` is the membrane before step 0, shaped ``shape`` in the spec's state
    dtype; ``decay`` is the charge coefficient d as a 0-d tensor when the leak is learnable (ParametricLIF:
    sigmoid(w), so its gradient flows), and ``None`` otherwise (d comes from ``spec.leak``). Returns
    ``(spike_seq [T, *shape] in x's dtype, v_last [*shape], v_seq [T, *shape] or None)``.
    """
    if spec.leak.learnable != (decay is not None):
        raise ValueError("decay must be given (as a 0-d tensor) exactly when the spec's leak is learnable")
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
        decay_value = spec.leak.decay if decay is None else float(decay.detach())
        spike_seq, v_last, v_seq = _MultiStepNeuron.apply(
            x_flat, v_flat, decay, decay_value, spec, bool(store_v_seq), kernel
        )
    spike_seq = spike_seq.reshape(T, *shape)
    v_last = v_last.reshape(shape)
    v_seq = v_seq.reshape(T, *shape) if store_v_seq else None
    return spike_seq, v_last, v_seq
