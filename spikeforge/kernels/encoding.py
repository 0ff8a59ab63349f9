r"""Fast Poisson encoding, alone or fused with the linear layer that reads it.

A Poisson encoder turns an intensity :math:`x \in [0, 1]` into independent spikes
:math:`S_t = \mathbb{1}[u_t < x]` for :math:`t = 0..T-1`. Feeding ``[T, B, F]`` such spikes to
``Linear(F, O)`` costs a dense ``[T*B, F] x [F, O]`` product, but images are mostly black: in MNIST
about 150 of 784 pixels are non-zero. A pixel with :math:`x = 0` never fires, so it needs neither random
numbers nor a column of the product. With :math:`\mathcal{K}_b` the non-zero inputs of sample ``b``,

.. math::
    y_{t,b,o} = \sum_{k \in \mathcal{K}_b} S_{t,b,k} W_{o,k}, \qquad
    \frac{\partial L}{\partial W_{o,k}} = \sum_{b : k \in \mathcal{K}_b} \sum_t S_{t,b,k}
    \frac{\partial L}{\partial y_{t,b,o}},

so both passes touch only ~150 of 784 columns (5x less work than the dense product), and the random
numbers are drawn only for those inputs.

Probabilities: ``u`` is a uniform 32-bit integer and an input fires when ``u < threshold``. Grey level
``p`` (uint8) gets ``threshold = p * 16843009`` (``255 * 16843009 = 2^32 - 1``), so
:math:`P(S=1) = (p/255)(1 - 2^{-32})`, and ``p = 255`` always fires; a float ``x`` gets
``round(x * 2^32)``, within :math:`2^{-33}` of ``x``. That is finer than ``torch.rand(...) <= x``
(24-bit floats) and keeps ``PoissonEncoder``'s meaning: 0 never fires, 1 always does.

Random numbers: a counter-based SplitMix64 stream per sample (the finaliser hashes a counter, so every
(sample, input, step) draw is independent of loop order and vectorises). The seed is drawn from torch's
generator, so ``torch.manual_seed`` makes runs repeatable and a checkpointed RNG state resumes them.
The kernels need numba (extra ``fast``); without it the same functions run dense torch code with the
same distribution (a different random stream).
"""

from __future__ import annotations

import sys

import torch

from .cpu import compile_call

try:  # numba is optional (extra "fast"); the torch fallback keeps everything working without it
    import numba
    import numpy as np
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None

__all__ = ["poisson_linear", "poisson_spikes", "has_fast_kernels"]

_UINT8_SCALE = 16843009  # (2^32 - 1) / 255
_ALWAYS = 1 << 32  # above every 32-bit draw
_FAST_MAX_OUT = 64  # beyond this many outputs a BLAS product over the spikes is faster


def has_fast_kernels() -> bool:
    """True when the numba kernels are available (otherwise dense torch code is used)."""
    return numba is not None


def _intensities(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` checked and flattened to ``[B, F]`` on the CPU: uint8 grey levels or float64 probabilities."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name} must be [B, ...] with a batch dimension, got shape {tuple(x.shape)}")
    if x.requires_grad:
        raise ValueError(f"{name} must not require grad: spikes are not differentiable w.r.t. intensities")
    x = x.detach().reshape(x.shape[0], -1).cpu().contiguous()
    if x.dtype == torch.uint8:
        return x
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be uint8 grey levels or floats in [0, 1], got {x.dtype}")
    x = x.double()
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(f"{name} must lie in [0, 1] (firing probabilities), got values in "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    return x


def _scale(x: torch.Tensor) -> tuple[float, float]:
    """(scale, always_at): threshold = round(x * scale), and inputs >= always_at always fire."""
    return (float(_UINT8_SCALE), 255.0) if x.dtype == torch.uint8 else (float(_ALWAYS), 1.0)


def _torch_thresholds(x: torch.Tensor) -> torch.Tensor:
    scale, always_at = _scale(x)
    thr = torch.floor(x.double() * scale + 0.5).to(torch.int64)
    return thr.masked_fill_(x >= always_at, _ALWAYS)


def _draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int (number of time steps), got {T!r}")
    return T


if numba is not None:
    # cache=True, or no cache where no cache directory is writable (see kernels/_cpu_jit.py for where it goes)
    from ._cpu_jit import cached_njit

    _GAMMA = np.uint64(0x9E3779B97F4A7C15)
    _M1 = np.uint64(0xBF58476D1CE4E5B9)
    _M2 = np.uint64(0x94D049BB133111EB)
    _S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
    _LOW32 = np.uint64(0xFFFFFFFF)

    # The kernels are single-threaded on purpose: on a small shared CPU, numba's parallel loops lost
    # vectorisation and waited on busy cores (8x slower in our measurements), while these loops
    # vectorise over the time axis and leave the other core to torch.

    @numba.njit(inline="always")
    def _mix(z):
        """SplitMix64's finaliser: a bijective hash of the 64-bit counter (counter-based RNG)."""
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        return z ^ (z >> _S31)

    @cached_njit(nogil=True)
    def _compact(x, scale, always_at):
        """The non-zero inputs of all samples, sample after sample (a ragged layout).

        Returns ``columns`` (input index of each row), ``thresholds`` (round(x * scale), or 2^32 = always
        fires where x >= always_at) and ``row_start`` (sample b owns rows row_start[b]:row_start[b+1]).
        """
        B, F = x.shape
        row_start = np.zeros(B + 1, np.int64)
        for b in range(B):
            n = 0
            for f in range(F):
                if x[b, f] > 0:
                    n += 1
            row_start[b + 1] = row_start[b] + n
        columns = np.empty(row_start[B], np.int64)
        thresholds = np.empty(row_start[B], np.uint64)
        for b in range(B):
            r = row_start[b]
            for f in range(F):
                v = x[b, f]
                if v > 0:
                    columns[r] = f
                    if v >= always_at:
                        thresholds[r] = np.uint64(4294967296)
                    else:
                        thresholds[r] = np.uint64(np.floor(np.float64(v) * scale + 0.5))
                    r += 1
        return columns, thresholds, row_start

    @cached_njit(nogil=True, fastmath=True)
    def _fire_kernel(thresholds, row_start, T, seed, flags):
        """flags[r, t] = 1 if row r (a non-zero input of some sample) fires at step t; the padding steps
        t >= T (flags.shape[1] rounds T up to whole vectors) are 0."""
        B = row_start.shape[0] - 1
        padded = flags.shape[1]
        half = (T + 1) // 2
        for b in range(B):
            stream = _mix(np.uint64(seed) ^ _mix(np.uint64(b + 1) * _GAMMA))
            for r in range(row_start[b], row_start[b + 1]):
                threshold = thresholds[r]
                start = stream + np.uint64((r - row_start[b]) * T) * _GAMMA
                # each 64-bit hash gives two 32-bit draws: the low half for step t, the high half for
                # step t + half (two independent uniforms: the finaliser's output bits are uniform)
                for t in range(half):
                    z = _mix(start + np.uint64(t) * _GAMMA)
                    flags[r, t] = 1 if (z & _LOW32) < threshold else 0
                    flags[r, t + half] = 1 if (z >> _S32) < threshold else 0
                for t in range(T, padded):  # also clears slot T that an odd T fills above
                    flags[r, t] = 0

    @cached_njit(nogil=True, fastmath=True)
    def _forward_kernel(flags, columns, row_start, weight, out):
        """out[b, o, t] = sum over rows r of sample b of flags[r, t] * weight[o, columns[r]]
        (rows outer: each row of flags is read once and reused for every output while in L1)."""
        B, O, T = out.shape
        for b in range(B):
            for o in range(O):
                for t in range(T):
                    out[b, o, t] = 0
            for r in range(row_start[b], row_start[b + 1]):
                column = columns[r]
                for o in range(O):
                    w = weight[o, column]
                    for t in range(T):
                        out[b, o, t] += flags[r, t] * w

    @cached_njit(nogil=True, fastmath=True)
    def _weight_grad_kernel(flags, columns, row_start, grad_out, grad_weight):
        """grad_weight[o, columns[r]] += sum_t flags[r, t] * grad_out[b, o, t] for the rows r of sample b."""
        B, O, T = grad_out.shape
        for b in range(B):
            for r in range(row_start[b], row_start[b + 1]):
                column = columns[r]
                for o in range(O):
                    acc = grad_out.dtype.type(0)
                    for t in range(T):
                        acc += flags[r, t] * grad_out[b, o, t]
                    grad_weight[o, column] += acc


class _BufferPool:
    """Reuses large scratch arrays between calls.

    A fresh multi-megabyte array costs page faults on first touch every training step; a pooled one
    does not. An array is handed out again only when nothing but the pool refers to it (the autograd
    context that saved it for backward has been freed), so results never share memory.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self.arrays: list = []

    def get(self, shape: tuple, dtype) -> np.ndarray:
        size = int(np.prod(shape))
        for array in self.arrays:
            # 3 references: the list, `array`, and getrefcount's argument
            if array.dtype == dtype and array.size >= size and sys.getrefcount(array) <= 3:
                return array[:size].reshape(shape)
        array = np.empty(max(size, 1), dtype)
        self.arrays = ([array] + self.arrays)[: self.keep]
        return array[:size].reshape(shape)


_POOL = _BufferPool()


def _fast_flags(x: torch.Tensor, T: int, seed: int, dtype):
    """Fire flags ``[rows, T rounded up to 16]`` of all non-zero inputs (see :func:`_compact`)."""
    # compile_call: the first call of each dtype compiles (or loads from the cache) with Ctrl-C kept working
    columns, thresholds, row_start = compile_call(("poisson.compact", x.dtype), _compact, x.numpy(), *_scale(x))
    # Steps are padded to a multiple of 16 so the vectorised loops over t need no scalar remainder.
    flags = _POOL.get((len(columns), -(-T // 16) * 16), np.dtype(dtype))
    compile_call(("poisson.fire", flags.dtype), _fire_kernel, thresholds, row_start, T, seed, flags)
    return flags, columns, row_start


def _torch_spikes(x: torch.Tensor, T: int, seed: int) -> torch.Tensor:
    thr = _torch_thresholds(x)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randint(0, _ALWAYS, (T, *thr.shape), generator=gen, dtype=torch.int64)
    return (u < thr).to(torch.uint8)


def poisson_spikes(x: torch.Tensor, T: int, *, seed: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson spike trains ``[T, *x.shape]`` (uint8 0/1) for intensities ``x`` (``[B, ...]``).

    ``x`` is uint8 grey levels (``P(spike) = p / 255``) or floats in [0, 1] (``P(spike) = x``); see the
    module docstring for the exact probabilities. All T steps are drawn at once and zero inputs cost
    nothing. ``seed`` fixes the random stream (``poisson_linear`` with the same seed sees the same
    spikes); otherwise one is drawn from ``generator`` / torch's default generator.
    """
    T = _check_T(T)
    flat = _intensities(x, "x")
    seed = _draw_seed(generator) if seed is None else int(seed)
    return _spikes(flat, T, seed).reshape(T, *x.shape)


def _spikes(x: torch.Tensor, T: int, seed: int) -> torch.Tensor:
    """uint8 spikes [T, B, F] for checked intensities [B, F]."""
    if numba is None:
        return _torch_spikes(x, T, seed)
    flags, columns, row_start = _fast_flags(x, T, seed, np.uint8)
    B, F = x.shape
    dense = np.zeros((B, F, T), np.uint8)
    samples = np.repeat(np.arange(B), np.diff(row_start))
    dense[samples, columns] = flags[:, :T]
    return torch.from_numpy(np.ascontiguousarray(dense.transpose(2, 0, 1)))


class _PoissonLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, T, seed):
        weight_np = weight.detach().contiguous().numpy()
        flags, columns, row_start = _fast_flags(x, T, seed, weight_np.dtype)
        out = np.empty((x.shape[0], weight.shape[0], flags.shape[1]), weight_np.dtype)
        compile_call(("poisson.forward", out.dtype), _forward_kernel, flags, columns, row_start, weight_np, out)
        ctx.saved = (flags, columns, row_start, weight.shape)
        return torch.from_numpy(out[:, :, :T]).permute(2, 0, 1)  # [B, O, T] -> [T, B, O]

    @staticmethod
    def backward(ctx, grad_out):
        if not ctx.needs_input_grad[1]:
            return None, None, None, None
        flags, columns, row_start, shape = ctx.saved
        T = grad_out.shape[0]
        grad_np = np.zeros((grad_out.shape[1], grad_out.shape[2], flags.shape[1]),
                           torch.empty(0, dtype=grad_out.dtype).numpy().dtype)
        grad_np[:, :, :T] = grad_out.permute(1, 2, 0).numpy()
        grad_weight = np.zeros(shape, grad_np.dtype)
        compile_call(("poisson.weight_grad", flags.dtype, grad_np.dtype), _weight_grad_kernel, flags, columns,
                     row_start, grad_np, grad_weight)
        return None, torch.from_numpy(grad_weight), None, None


def poisson_linear(x: torch.Tensor, weight: torch.Tensor, T: int, bias: torch.Tensor | None = None, *,
                   seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""``linear(S_t, weight, bias)`` for Poisson spikes ``S_t`` of ``x``, all ``T`` steps: ``[T, B, O]``.

    Equals ``poisson_spikes(x, T, seed=s).flatten(2).to(weight.dtype) @ weight.T + bias`` for the same
    seed, computed from the non-zero inputs only (module docstring).
    ``x``: ``[B, ...]`` uint8 grey levels or floats in [0, 1], flattened to ``[B, F]`` (data: no
    gradient); ``weight``: ``[O, F]``, differentiable. The numba path serves float32/float64 CPU weights
    with up to 64 outputs; anything else runs the dense product.
    """
    T = _check_T(T)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a 2-d tensor [out_features, in_features], got "
                         f"{getattr(weight, 'shape', type(weight).__name__)}")
    flat = _intensities(x, "x")
    if flat.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {flat.shape[1]} features per sample but weight expects {weight.shape[1]}")
    seed = _draw_seed(generator) if seed is None else int(seed)
    fast = (numba is not None and weight.device.type == "cpu" and weight.shape[0] <= _FAST_MAX_OUT
            and weight.dtype in (torch.float32, torch.float64))
    if fast:
        out = _PoissonLinear.apply(flat, weight, T, seed)
    else:
        spikes = _spikes(flat, T, seed)
        out = spikes.to(device=weight.device, dtype=weight.dtype) @ weight.t()
    if bias is not None:
        out = out + bias
    return out
