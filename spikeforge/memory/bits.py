"""Binary tensors saved for backward as bits (8 spikes per byte), restored exactly when backward needs them.

:func:`pack_bits` / :func:`unpack_bits` turn a {0, c} tensor into a uint8 tensor of ⌈n/8⌉ bytes and back (c = 1
for spikes, c = 1/(1 − p) behind a dropout mask). :func:`saved_as_bits` is a ``saved_tensors_hooks`` context:
while it is active, any tensor autograd saves that *is* the given input (same storage, size and dtype) is stored
packed; every other saved tensor (weights, ...) is kept as it is. The consumer's backward then receives the very
same values, so its gradients are unchanged.

Bits are stored least significant first (element 8i + k is bit k of byte i); with numba, packing and
unpacking are one parallel pass (:mod:`._fast`). Whether an input is binary is never guessed from its values:
the caller says so, from the producer neuron's
``spec.binary_output`` (see :mod:`spikeforge.memory.transform`).
"""

from __future__ import annotations

import contextlib

import torch

from . import _fast

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes", "saved_as_bits", "BitPackedMaxPool"]

_TABLES: dict = {}
# the 8 bytes of an int64 (each 0 or 1) times this constant carry byte k to bit 56 + k, without carries
_GATHER = 0x0102040810204080


def _table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[256, 8]: the 8 bits of every byte value, least significant first, as ``dtype``."""
    key = (dtype, device)
    table = _TABLES.get(key)
    if table is None:
        table = ((torch.arange(256, device=device).unsqueeze(1) >> torch.arange(8, device=device)) & 1).to(dtype)
        _TABLES[key] = table
    return table


def packed_nbytes(numel: int) -> int:
    """Bytes :func:`pack_bits` uses for ``numel`` elements."""
    return (int(numel) + 7) // 8


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """``x != 0`` as bits, element 8i + k in bit k of byte i: a flat uint8 tensor of ⌈numel/8⌉ bytes."""
    if _fast.available(x):
        return _fast.pack(x)
    flat = (x.reshape(-1) != 0)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    words = flat.view(torch.uint8).view(torch.int64)  # 8 spikes per word, one per byte
    return ((words * _GATHER) >> 56).bitwise_and_(0xFF).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, shape, dtype: torch.dtype, scale=None, start: int = 0) -> torch.Tensor:
    """The inverse of :func:`pack_bits`: a ``dtype`` tensor of ``shape`` holding 0 and ``scale`` (default 1).

    ``start`` (a multiple of 8) unpacks the elements from ``start`` on, for a part of the packed tensor.
    """
    shape = torch.Size(shape)
    n = shape.numel()
    if start % 8:
        raise ValueError("start must be a multiple of 8")
    part = packed[start // 8: start // 8 + packed_nbytes(n)]
    if _fast.numba is not None and dtype in (torch.float32, torch.float64) and part.device.type == "cpu":
        value = 1.0 if scale is None else float(scale)
        return _fast.unpack(part.contiguous(), n, dtype, value).view(shape)
    out = torch.index_select(_table(dtype, packed.device), 0, part.int()).view(-1)[:n].view(shape)
    if scale is not None:
        out = out * scale.to(dtype) if isinstance(scale, torch.Tensor) else out * float(scale)
    return out


def _identity(x: torch.Tensor):
    """What identifies ``x``'s memory (no reference to ``x``: autograd keeps the pack hook alive as long as the
    saved value, and a reference would keep the float tensor alive with it)."""
    if not x.is_contiguous():
        return None
    try:
        return (x.untyped_storage().data_ptr(), x.storage_offset(), x.numel(), x.dtype, x.device)
    except RuntimeError:  # tensors without storage (e.g. under a tracer)
        return None


def _matches(t: torch.Tensor, identity) -> bool:
    if identity is None or not t.is_contiguous():
        return False
    try:
        return (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype, t.device) == identity
    except RuntimeError:
        return False


@contextlib.contextmanager
def saved_as_bits(x: torch.Tensor, scale=None):
    """Within this block, autograd saves ``x`` (known to hold only 0 and ``scale``, default 1) as bits.

    Only a saved tensor that is ``x`` itself or a contiguous view of all of it (a reshape) is packed; anything
    else autograd saves is kept unchanged. ``scale`` may be a 0-d tensor or a callable giving one (read when the
    tensor is saved). The hooks hold no reference to ``x``, so once packed it is freed as usual.
    """
    identity = _identity(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else None
    if identity is None:
        yield
        return

    def pack(t: torch.Tensor):
        if _matches(t, identity):
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


def _is_2x2(x: torch.Tensor, pool_fn, kwargs) -> bool:
    """A 2-D pool with 2×2 windows that tile the input (the common SNN pool): the fast path applies."""
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (pool_fn is torch.nn.functional.max_pool2d and x.dim() == 4 and pair(kwargs["kernel_size"]) == (2, 2)
            and pair(kwargs["stride"] if kwargs["stride"] not in (None, ()) else kwargs["kernel_size"]) == (2, 2)
            and pair(kwargs["padding"]) == (0, 0) and pair(kwargs["dilation"]) == (1, 1)
            and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0)


class BitPackedMaxPool(torch.autograd.Function):
    """Max pooling of a {0, c} tensor whose backward keeps only its input's bits.

    Backward unpacks the input, finds the argmax of every window again (the same positions the forward pass
    chose: the computation is deterministic) and scatters the output gradient onto them, which is exactly
    ``max_pool``'s own gradient. 1 bit per input element instead of ``max_pool``'s float input (or the int32
    indices of :class:`spikeforge.layer.MaxPool2d`).

    For 2×2 windows that tile the input (with numba) backward is one pass over the bits: the gradient goes to
    the first position (row-major) of each window holding a spike, or to its first element when it has none,
    which is where ``max_pool2d`` puts it (the first of equal maxima).
    """

    @staticmethod
    def forward(ctx, x, pool_fn, kwargs, scale):
        ctx.pool_fn, ctx.kwargs = pool_fn, kwargs
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.packed = pack_bits(x)
        ctx.scale = scale
        ctx.fast = _is_2x2(x, pool_fn, kwargs) and _fast.available(x)
        return pool_fn(x, **kwargs)

    @staticmethod
    def backward(ctx, grad_out):
        shape = ctx.shape
        if ctx.fast and _fast.available(grad_out.new_empty(0)):
            return _fast.pool2x2_backward(ctx.packed, grad_out, shape), None, None, None
        n, c, per_sample = shape[0], shape[1], shape[1:].numel()
        grad_in = grad_out.new_zeros(n, c, shape[2:].numel())
        # a few samples at a time, so the unpacked input and the indices never exist for the whole batch
        rows = max(8, (n // 4) // 8 * 8)
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            x = unpack_bits(ctx.packed, (r1 - r0, *shape[1:]), ctx.dtype, ctx.scale, start=r0 * per_sample)
            _, indices = ctx.pool_fn(x, return_indices=True, **ctx.kwargs)
            del x
            grad_in[r0:r1].scatter_add_(2, indices.flatten(2), grad_out[r0:r1].flatten(2))
        return grad_in.view(shape), None, None, None
