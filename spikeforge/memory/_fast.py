"""numba kernels for the bit packing (optional: without numba, :mod:`.bits` uses torch ops with the same results).

One pass each, parallel over bytes / pooling planes: pack a float tensor's nonzeros into bits, unpack bits into
0 / scale, and the gradient of a 2×2 max pool computed straight from its input's bits.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is an optional extra
    numba = None

__all__ = ["available", "pack", "unpack", "pool2x2_backward"]


def available(t: torch.Tensor) -> bool:
    return (numba is not None and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
            and t.is_contiguous())


if numba is not None:

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _pack(x, out):  # pragma: no cover - compiled
        n = x.shape[0]
        for i in numba.prange(out.shape[0]):
            b = 0
            base = i * 8
            for k in range(8):
                j = base + k
                if j < n and x[j] != 0:
                    b |= 1 << k
            out[i] = b

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _unpack(packed, out, scale):  # pragma: no cover - compiled
        n = out.shape[0]
        for i in numba.prange(packed.shape[0]):
            b = packed[i]
            base = i * 8
            for k in range(8):
                j = base + k
                if j < n:
                    out[j] = scale if (b >> k) & 1 else 0.0

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _pool2x2_backward(packed, grad_out, grad_in, planes, H, W):  # pragma: no cover - compiled
        Ho = H // 2
        Wo = W // 2
        for p in numba.prange(planes):
            for i in range(Ho):
                for j in range(Wo):
                    g = grad_out[(p * Ho + i) * Wo + j]
                    q00 = (p * H + 2 * i) * W + 2 * j
                    q01 = q00 + 1
                    q10 = q00 + W
                    q11 = q10 + 1
                    s00 = (packed[q00 >> 3] >> (q00 & 7)) & 1
                    s01 = (packed[q01 >> 3] >> (q01 & 7)) & 1
                    s10 = (packed[q10 >> 3] >> (q10 & 7)) & 1
                    s11 = (packed[q11 >> 3] >> (q11 & 7)) & 1
                    grad_in[q00] = 0.0
                    grad_in[q01] = 0.0
                    grad_in[q10] = 0.0
                    grad_in[q11] = 0.0
                    # the first maximum in row-major order, as max_pool2d picks it (none set: the first element)
                    if s00 == 1:
                        grad_in[q00] = g
                    elif s01 == 1:
                        grad_in[q01] = g
                    elif s10 == 1:
                        grad_in[q10] = g
                    elif s11 == 1:
                        grad_in[q11] = g
                    else:
                        grad_in[q00] = g


def pack(x: torch.Tensor) -> torch.Tensor:
    flat = x.detach().reshape(-1)
    out = torch.empty((flat.numel() + 7) // 8, dtype=torch.uint8)
    _pack(flat.numpy(), out.numpy())
    return out


def unpack(packed: torch.Tensor, n: int, dtype: torch.dtype, scale: float) -> torch.Tensor:
    out = torch.empty(n, dtype=dtype)
    _unpack(packed.numpy(), out.numpy(), np.float64(scale) if dtype == torch.float64 else np.float32(scale))
    return out


def pool2x2_backward(packed: torch.Tensor, grad_out: torch.Tensor, shape) -> torch.Tensor:
    grad_out = grad_out.contiguous()
    grad_in = torch.empty(shape, dtype=grad_out.dtype)
    _pool2x2_backward(packed.numpy(), grad_out.reshape(-1).numpy(), grad_in.view(-1).numpy(),
                      shape[0] * shape[1], shape[2], shape[3])
    return grad_in
