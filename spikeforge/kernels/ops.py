"""The fused kernels as ``torch.library`` custom ops, so ``torch.compile`` sees one op per multi-step call.

``spikeforge::neuron_multi_step`` runs a registered kernel's forward; its autograd formula calls
``spikeforge::neuron_multi_step_backward``. Both ops are opaque to the compiler (it traces neither the numba
nor the Triton code) and have fake implementations that only produce shapes and dtypes, so a compiled model
keeps the neuron as a single node in forward and in backward. The ops save only ``x`` and ``v0`` (the fused
kernels recompute the rest).

The op schema has no room for a dataclass, so the :class:`~spikeforge.spec.NeuronSpec` travels as its canonical
string :attr:`~spikeforge.spec.NeuronSpec.key` and is looked up again with ``NeuronSpec.from_key`` (a dict hit
for every spec this process has built). The kernel travels as its backend name and is found with
:func:`~spikeforge.kernels.dispatch.get_kernel`. A learnable decay (ParametricLIF) is a 0-d tensor argument, so it
stays in the graph and gets its gradient through the op; a fixed leak comes from the spec (``decay=None``).
"""

from __future__ import annotations

import torch

from ..spec import NeuronSpec
from . import dispatch
from .reference import compute_dtype

_NAMESPACE = "spikeforge"


def _decay_value(decay: torch.Tensor | None, spec: NeuronSpec) -> float:
    return spec.leak.decay if decay is None else float(decay)


@torch.library.custom_op(f"{_NAMESPACE}::neuron_multi_step", mutates_args=())
def neuron_multi_step_op(
    x: torch.Tensor, v0: torch.Tensor, decay: torch.Tensor | None, spec_key: str, store_v_seq: bool, kernel: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, M], v0 [M] → (spike_seq [T, M] in x's dtype, v_last [M], v_seq [T, M], or [0] when not stored)."""
    spec = NeuronSpec.from_key(spec_key)
    impl = dispatch.get_kernel(kernel)
    spike_seq, v_last, v_seq, _ = impl.forward(x, v0, _decay_value(decay, spec), spec, store_v_seq, False)
    if v_seq is None:
        v_seq = v_last.new_empty(0)
    return spike_seq, v_last, v_seq


@neuron_multi_step_op.register_fake
def _(x, v0, decay, spec_key, store_v_seq, kernel):
    cdt = compute_dtype(x.dtype)
    v_last = x.new_empty(x.shape[1:], dtype=cdt)
    v_seq = x.new_empty(x.shape, dtype=cdt) if store_v_seq else x.new_empty(0, dtype=cdt)
    return torch.empty_like(x), v_last, v_seq


@torch.library.custom_op(f"{_NAMESPACE}::neuron_multi_step_backward", mutates_args=())
def neuron_multi_step_backward_op(
    x: torch.Tensor, v0: torch.Tensor, decay: torch.Tensor | None, grad_spike: torch.Tensor | None,
    grad_v_last: torch.Tensor | None, grad_v_seq: torch.Tensor | None, spec_key: str, need_decay_grad: bool,
    kernel: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x in x's dtype, grad_v0 in v0's dtype, grad_decay 0-d; zero when not needed)."""
    spec = NeuronSpec.from_key(spec_key)
    impl = dispatch.get_kernel(kernel)
    grad_x, grad_v0, grad_decay = impl.backward(
        (x, v0), grad_spike, grad_v_last, grad_v_seq, _decay_value(decay, spec), spec, need_decay_grad
    )
    decay_dtype = decay.dtype if decay is not None else x.dtype
    if grad_decay is None:
        grad_decay = torch.zeros((), dtype=decay_dtype, device=x.device)
    return grad_x.to(x.dtype), grad_v0.to(v0.dtype), grad_decay.reshape(()).to(decay_dtype, copy=True)


@neuron_multi_step_backward_op.register_fake
def _(x, v0, decay, grad_spike, grad_v_last, grad_v_seq, spec_key, need_decay_grad, kernel):
    decay_dtype = decay.dtype if decay is not None else x.dtype
    return torch.empty_like(x), torch.empty_like(v0), x.new_empty((), dtype=decay_dtype)


def _setup_context(ctx, inputs, output):
    x, v0, decay, spec_key, store_v_seq, kernel = inputs
    ctx.save_for_backward(x, v0, decay)
    ctx.spec_key = spec_key
    ctx.store_v_seq = store_v_seq
    ctx.kernel = kernel
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_spike, grad_v_last, grad_v_seq):
    x, v0, decay = ctx.saved_tensors
    if grad_v_seq is not None and (not ctx.store_v_seq or grad_v_seq.numel() == 0):
        grad_v_seq = None
    need_decay_grad = decay is not None and bool(ctx.needs_input_grad[2])
    grad_x, grad_v0, grad_decay = neuron_multi_step_backward_op(
        x, v0, decay, grad_spike, grad_v_last, grad_v_seq, ctx.spec_key, need_decay_grad, ctx.kernel
    )
    return (grad_x, grad_v0 if ctx.needs_input_grad[1] else None, grad_decay if need_decay_grad else None,
            None, None, None)


torch.library.register_autograd(f"{_NAMESPACE}::neuron_multi_step", _backward, setup_context=_setup_context)


def call(x, v0, decay: torch.Tensor | None, spec: NeuronSpec, store_v_seq: bool, kernel_name: str):
    """Run a fused kernel through the custom op; ``decay`` is a 0-d tensor for a learnable leak, else None."""
    return neuron_multi_step_op(x, v0, decay, spec.key, bool(store_v_seq), kernel_name)
