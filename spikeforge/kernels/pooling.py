"""Average pooling with non-overlapping windows (kernel = stride, no padding) on the CPU.

ATen pools a contiguous NCHW float tensor window by window through a generic loop; a converted ANN -> SNN network
pools spikes at every time step, and there the pooling cost more than the IF neurons before it. Here one numba
pass per plane adds each window row by row starting from zero and divides by the window size, which is the order
and the arithmetic of ATen's kernel: the outputs are the same floats. Without numba the same sum is taken over
the ``kh * kw`` strided views of the input (same order, same division).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_KERNEL = None


def _numba_kernel():
    global _KERNEL
    if _KERNEL is None:
        from .cpu import compile_call, interrupt_guard, numba_installed

        if not numba_installed():
            _KERNEL = False
        else:
            with interrupt_guard():
                from ._cpu_jit import avg_pool_tiles
            _KERNEL = lambda dtype, *args: compile_call(("pooling.avg_tiles", dtype), avg_pool_tiles, *args)  # noqa: E731
    return _KERNEL or None


def supports(x: torch.Tensor, kh: int, kw: int) -> bool:
    """CPU float32/float64 ``[N, C, H, W]`` contiguous input without autograd, at least one window."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and x.is_contiguous() and not (torch.is_grad_enabled() and x.requires_grad)
            and x.shape[-2] >= kh and x.shape[-1] >= kw)


def avg_pool2d_tiles(x: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """``F.avg_pool2d(x, (kh, kw))`` (stride = kernel, no padding, floor), the same floats; unsupported inputs
    (see :func:`supports`) go to ``F.avg_pool2d``."""
    if not supports(x, kh, kw):
        return F.avg_pool2d(x, (kh, kw))
    n, c, h, w = x.shape
    ho, wo = h // kh, w // kw
    kernel = _numba_kernel()
    if kernel is not None:
        out = torch.empty((n, c, ho, wo), dtype=x.dtype)
        np_type = x.numpy().dtype.type
        kernel(x.dtype, x.view(n * c, h, w).numpy(), kh, kw, np_type(0), np_type(kh * kw),
               out.view(n * c, ho, wo).numpy())
        return out
    out = torch.zeros((n, c, ho, wo), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            out.add_(x[..., a:ho * kh:kh, b:wo * kw:kw])
    return out.div_(kh * kw)


__all__ = ["avg_pool2d_tiles", "supports"]
