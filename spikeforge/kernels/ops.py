"""The fused kernels as ``torch.library`` custom ops, so ``torch.compile`` sees one op per multi-step call.

``spikeforge::neuron_multi_step`` runs a registered kernel's forward; its autograd formula calls
``spikeforge::neuron_multi_step_backward``. Both ops are opaque to the compiler (it traces neither the numba
nor the Triton code) and have fake implementations that only produce shapes and dtypes, so a compiled model
keeps the neuron as a single node in forward and in backward. The kernel is named by a string argument, looked
up in the dispatch registry; the ops save only ``x`` and ``v0`` (the fused kernels recompute the rest).

The neuron options travel as plain arguments (the op schema has no room for a dataclass) and the decay as a 0-d
tensor, so a learnable decay (ParametricLIF) stays in the graph and gets its gradient through the op.
"""

from __future__ import annotations

import torch

from . import dispatch
from .reference import NeuronSpec, compute_dtype

_NAMESPACE = "spikeforge"


def _spec(v_threshold, v_reset, soft_reset, detach_reset, decay_input, surrogate_id, p0, p1, fire_on_tie):
    return NeuronSpec(v_threshold=v_threshold, v_reset=None if soft_reset else v_reset, detach_reset=detach_reset,
                      decay_input=decay_input, surrogate_id=surrogate_id, surrogate_p0=p0, surrogate_p1=p1,
                      fire_on_tie=fire_on_tie)


@torch.library.custom_op(f"{_NAMESPACE}::neuron_multi_step", mutates_args=())
def neuron_multi_step_op(
    x: torch.Tensor, v0: torch.Tensor, decay: torch.Tensor, v_threshold: float, v_reset: float, soft_reset: bool,
    detach_reset: bool, decay_input: bool, surrogate_id: int, p0: float, p1: float, fire_on_tie: bool,
    store_v_seq: bool, kernel: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [T, M], v0 [M] → (spike_seq [T, M] in x's dtype, v_last [M], v_seq [T, M], or [0] when not stored)."""
    spec = _spec(v_threshold, v_reset, soft_reset, detach_reset, decay_input, surrogate_id, p0, p1, fire_on_tie)
    impl = dispatch._KERNELS[kernel]
    spike_seq, v_last, v_seq, _ = impl.forward(x, v0, float(decay), spec, store_v_seq, False)
    if v_seq is None:
        v_seq = v_last.new_empty(0)
    return spike_seq, v_last, v_seq


@neuron_multi_step_op.register_fake
def _(x, v0, decay, v_threshold, v_reset, soft_reset, detach_reset, decay_input, surrogate_id, p0, p1,
      fire_on_tie, store_v_seq, kernel):
    cdt = compute_dtype(x.dtype)
    v_last = x.new_empty(x.shape[1:], dtype=cdt)
    v_seq = x.new_empty(x.shape, dtype=cdt) if store_v_seq else x.new_empty(0, dtype=cdt)
    return torch.empty_like(x), v_last, v_seq


@torch.library.custom_op(f"{_NAMESPACE}::neuron_multi_step_backward", mutates_args=())
def neuron_multi_step_backward_op(
    x: torch.Tensor, v0: torch.Tensor, decay: torch.Tensor, grad_spike: torch.Tensor | None,
    grad_v_last: torch.Tensor | None, grad_v_seq: torch.Tensor | None, v_threshold: float, v_reset: float,
    soft_reset: bool, detach_reset: bool, decay_input: bool, surrogate_id: int, p0: float, p1: float,
    fire_on_tie: bool, need_decay_grad: bool, kernel: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x in x's dtype, grad_v0 in v0's dtype, grad_decay in decay's dtype, 0-d; zero when not needed)."""
    spec = _spec(v_threshold, v_reset, soft_reset, detach_reset, decay_input, surrogate_id, p0, p1, fire_on_tie)
    impl = dispatch._KERNELS[kernel]
    grad_x, grad_v0, grad_decay = impl.backward(
        (x, v0), grad_spike, grad_v_last, grad_v_seq, float(decay), spec, need_decay_grad
    )
    if grad_decay is None:
        grad_decay = torch.zeros((), dtype=decay.dtype, device=decay.device)
    return grad_x.to(x.dtype), grad_v0.to(v0.dtype), grad_decay.reshape(()).to(decay.dtype, copy=True)


@neuron_multi_step_backward_op.register_fake
def _(x, v0, decay, grad_spike, grad_v_last, grad_v_seq, v_threshold, v_reset, soft_reset, detach_reset,
      decay_input, surrogate_id, p0, p1, fire_on_tie, need_decay_grad, kernel):
    return torch.empty_like(x), torch.empty_like(v0), decay.new_empty(())


def _setup_context(ctx, inputs, output):
    x, v0, decay = inputs[0], inputs[1], inputs[2]
    ctx.save_for_backward(x, v0, decay)
    ctx.options = inputs[3:12]  # v_threshold … fire_on_tie
    ctx.store_v_seq = inputs[12]
    ctx.kernel = inputs[13]
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_spike, grad_v_last, grad_v_seq):
    x, v0, decay = ctx.saved_tensors
    if grad_v_seq is not None and (not ctx.store_v_seq or grad_v_seq.numel() == 0):
        grad_v_seq = None
    need_decay_grad = bool(ctx.needs_input_grad[2])
    grad_x, grad_v0, grad_decay = neuron_multi_step_backward_op(
        x, v0, decay, grad_spike, grad_v_last, grad_v_seq, *ctx.options, need_decay_grad, ctx.kernel
    )
    return (grad_x, grad_v0 if ctx.needs_input_grad[1] else None, grad_decay if need_decay_grad else None,
            *([None] * 11))


torch.library.register_autograd(f"{_NAMESPACE}::neuron_multi_step", _backward, setup_context=_setup_context)


def call(x, v0, decay, spec: NeuronSpec, store_v_seq: bool, kernel_name: str):
    """Run a fused kernel through the custom op; ``decay`` is a float or a 0-d tensor (learnable)."""
    if not isinstance(decay, torch.Tensor):
        decay = torch.tensor(float(decay), dtype=torch.float64)
    return neuron_multi_step_op(
        x, v0, decay, float(spec.v_threshold), float(spec.reset_value), spec.v_reset is None,
        bool(spec.detach_reset), bool(spec.decay_input), int(spec.surrogate_id), float(spec.surrogate_p0),
        float(spec.surrogate_p1), bool(spec.fire_on_tie), bool(store_v_seq), kernel_name,
    )
