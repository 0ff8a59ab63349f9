"""Binary tensors saved for backward as bits (8 spikes per byte), restored exactly when backward needs them.

:func:`pack_bits` / :func:`unpack_bits` turn a {0, c} tensor into a uint8 tensor of ⌈n/8⌉ bytes and back (c = 1
for spikes, c = 1/(1 − p) behind a dropout mask). :func:`saved_as_bits` is a ``saved_tensors_hooks`` context:
while it is active, any tensor autograd saves that *is* the given input (same storage, size and dtype) is stored
packed; every other saved tensor (weights, ...) is kept as it is. The consumer's backward then receives the very
same values, so its gradients are unchanged.

Whether an input is binary is never guessed from its values: the caller says so, from the producer neuron's
``spec.binary_output`` (see :mod:`spikeforge.memory.transform`).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes", "saved_as_bits", "BitPackedMaxPool"]

_SHIFTS = {}


def _shifts(device: torch.device) -> torch.Tensor:
    shifts = _SHIFTS.get(device)
    if shifts is None:
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=device)
        _SHIFTS[device] = shifts
    return shifts


def packed_nbytes(numel: int) -> int:
    """Bytes :func:`pack_bits` uses for ``numel`` elements."""
    return (int(numel) + 7) // 8


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """``x != 0`` as bits, most significant bit first: a flat uint8 tensor of ⌈numel/8⌉ bytes."""
    flat = (x.reshape(-1) != 0)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    groups = flat.view(-1, 8).to(torch.uint8)
    return (groups << _shifts(x.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape, dtype: torch.dtype, scale=None) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a ``dtype`` tensor of ``shape`` holding 0 and ``scale`` (default 1)."""
    shape = torch.Size(shape)
    n = shape.numel()
    bits = (packed.unsqueeze(1) >> _shifts(packed.device)) & 1
    out = bits.view(-1)[:n].to(dtype).view(shape)
    if scale is not None:
        out = out * scale.to(dtype) if isinstance(scale, torch.Tensor) else out * float(scale)
    return out


def _same_tensor(t: torch.Tensor, x: torch.Tensor) -> bool:
    if t.dtype != x.dtype or t.numel() != x.numel() or t.device != x.device or not t.is_contiguous():
        return False
    if not x.is_contiguous():
        return False
    try:
        return (t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
                and t.storage_offset() == x.storage_offset())
    except RuntimeError:  # tensors without storage (e.g. under a tracer)
        return False


@contextlib.contextmanager
def saved_as_bits(x: torch.Tensor, scale=None):
    """Within this block, autograd saves ``x`` (known to hold only 0 and ``scale``, default 1) as bits.

    Only a saved tensor that is ``x`` itself or a contiguous view of all of it (a reshape) is packed; anything
    else autograd saves is kept unchanged. ``scale`` may be a 0-d tensor (read when the tensor is saved).
    """
    if not isinstance(x, torch.Tensor) or x.is_floating_point() is False:
        yield
        return

    def pack(t: torch.Tensor):
        if _same_tensor(t, x):
            s = scale() if callable(scale) else scale
            return ("bits", pack_bits(t), t.shape, t.dtype, s)
        return t

    def unpack(saved):
        if isinstance(saved, tuple) and len(saved) == 5 and saved[0] == "bits":
            _, packed, shape, dtype, s = saved
            return unpack_bits(packed, shape, dtype, s)
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield


class BitPackedMaxPool(torch.autograd.Function):
    """Max pooling of a {0, c} tensor whose backward keeps only its input's bits.

    Backward unpacks the input, finds the argmax of every window again (the same positions the forward pass
    chose: the computation is deterministic) and scatters the output gradient onto them, which is exactly
    ``max_pool``'s own gradient. 1 bit per input element instead of ``max_pool``'s float input (or the int32
    indices of :class:`spikeforge.layer.MaxPool2d`).
    """

    @staticmethod
    def forward(ctx, x, pool_fn, kwargs, scale):
        ctx.pool_fn, ctx.kwargs = pool_fn, kwargs
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.packed = pack_bits(x)
        ctx.scale = scale
        return pool_fn(x, **kwargs)

    @staticmethod
    def backward(ctx, grad_out):
        x = unpack_bits(ctx.packed, ctx.shape, ctx.dtype, ctx.scale)
        _, indices = ctx.pool_fn(x, return_indices=True, **ctx.kwargs)
        n, c = x.shape[:2]
        grad_in = grad_out.new_zeros(n, c, x[0, 0].numel())
        grad_in.scatter_add_(2, indices.flatten(2), grad_out.flatten(2))
        return grad_in.view(ctx.shape), None, None, None
