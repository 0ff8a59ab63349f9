"""Fused multi-step neuron kernel for the CPU, compiled with numba.

Same equations as :mod:`spikeforge.kernels.reference` (read that docstring for them). What differs is the
memory traffic: the neurons are cut into chunks, numba's ``prange`` hands the chunks to the threads, and each
chunk is walked through all T steps with its membrane in a chunk-local buffer, so every input byte is read once
and every output byte written once. The inner loops run over contiguous neurons of one time step, which lets
LLVM vectorise them; the neuron options (reset kind, tie rule, detach_reset, surrogate id) are runtime
arguments, so only a handful of specialisations are ever compiled (one per dtype), and ``cache=True`` keeps
them on disk between processes.

What backward needs, and what is saved:
    the forward saves nothing it allocates: only the input ``x`` and the initial membrane ``v0`` (tensors that
    exist anyway). Backward recomputes the charged membranes H_t of a chunk, with the very same float operations
    as the forward (so the spikes are bit-identical), into the rows of the ``grad_x`` output it is about to
    overwrite, then walks the chunk backwards in time while those rows are still in cache. The surrogate
    derivative σ'(H_t − V_th) is evaluated there, once per element.

float16 / bfloat16 inputs are widened to float32 before the kernel (numba has no half type); the spikes are
written straight into the half-precision output as bit patterns. float64 runs in float64 (for gradcheck).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .reference import NeuronSpec, ReferenceKernel, compute_dtype

logger = logging.getLogger("spikeforge.kernels")

# Chunk sizing: backward keeps T rows of one chunk hot in cache while it walks them backwards.
_BACKWARD_CACHE_BYTES = 256 * 1024
_MAX_CHUNK = 4096
_MIN_CHUNK = 64
_VECTOR = 16  # chunks are multiples of this many neurons, so the vector loops have no ragged middle
_PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, handing work to threads costs more than it saves

# Bit patterns of 1.0 for the half-precision spike outputs.
_ONE_BITS = {torch.float16: 0x3C00, torch.bfloat16: 0x3F80}

_state: dict[str, object] = {"kernels": None, "error": None}


def numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def _build_kernels():
    """Compile (or load from numba's cache) the forward and backward kernels; returns (forward, backward)."""
    import numba
    from numba import njit
    from numba.extending import overload

    def fast_exp(x):  # pragma: no cover - replaced by the overload below inside numba
        return math.exp(x)

    @overload(fast_exp, inline="always")
    def _fast_exp_impl(x):
        if isinstance(x, numba.types.Float) and x.bitwidth == 32:
            # Cephes-style expf: x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^n by building the
            # float's exponent bits. Pure arithmetic, so LLVM vectorises it (libm's expf is a scalar call).
            def impl(x):
                x = min(max(x, np.float32(-87.33654)), np.float32(88.72283))
                n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
                r = x - n * np.float32(0.693359375)
                r = r - n * np.float32(-2.12194440e-4)
                p = np.float32(1.9875691500e-4)
                p = p * r + np.float32(1.3981999507e-3)
                p = p * r + np.float32(8.3334519073e-3)
                p = p * r + np.float32(4.1665795894e-2)
                p = p * r + np.float32(1.6666665459e-1)
                p = p * r + np.float32(5.0000001201e-1)
                p = p * (r * r) + r + np.float32(1.0)
                # n + 127 lies in [1, 254] after the clamp: a normal float's biased exponent.
                scale = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
                return p * scale
            return impl
        return lambda x: math.exp(x)

    @njit(inline="always", error_model="numpy")
    def charge(v, x, decay, v_r, leaky, decay_input):
        # Operation order matches the reference exactly, so spikes agree bit for bit.
        if not leaky:
            return v + x
        if decay_input:
            return v + (x - (v - v_r)) * decay
        return v - (v - v_r) * decay + x

    @njit(inline="always", error_model="numpy")
    def fires(h, vth, fire_on_tie):
        return (h > vth) | (fire_on_tie & (h == vth))

    @njit(inline="always", error_model="numpy")
    def reset(h, s, one, vth, v_r, hard):
        if hard:
            return h * (one - s) + v_r * s
        return h - vth * s

    @njit(inline="always", error_model="numpy")
    def reset_grad(h, sg, one, vth, v_r, hard, fire_on_tie, detach_reset):
        """∂V_t/∂H_t, with the surrogate path through the reset unless detach_reset (reference order)."""
        if hard:
            g = (one - one) if fires(h, vth, fire_on_tie) else one
            if not detach_reset:
                g = g + (v_r - h) * sg
            return g
        if detach_reset:
            return one
        return one - vth * sg

    @njit(inline="always", error_model="numpy")
    def surrogate_inplace(sid, sp, z, n, one):
        """Replace z[:n] (= H − V_th) by σ'(z); one loop per surrogate so each loop vectorises.

        ``sp`` holds the constants the reference forms from (p0, p1) in double precision before they meet the
        tensor: [p0, p1, π/2·p0, p0/√π, 1/p0, p0², 0.5/p0, p0/2, 1/(2·p0)].
        """
        # Constants in locals: loads from ``sp`` inside the loops could alias ``z`` and block vectorisation.
        p0, p1, c_atan, c_erf, inv_p0, p0_sq, rect_half, half_p0, leaky_in = (
            sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], sp[6], sp[7], sp[8])
        zero = one - one
        if sid == 0:  # Sigmoid: p0·s·(1 − s), s = σ(p0·z)
            for i in range(n):
                s = one / (one + fast_exp(-(p0 * z[i])))
                z[i] = p0 * s * (one - s)
        elif sid == 1:  # ATan: (p0/2) / (1 + (π/2·p0·z)²)
            for i in range(n):
                u = c_atan * z[i]
                z[i] = half_p0 / (one + u * u)
        elif sid == 2:  # PiecewiseQuadratic: p0 − p0²|z| inside |z| ≤ 1/p0
            for i in range(n):
                a = abs(z[i])
                z[i] = zero if a > inv_p0 else p0 - p0_sq * a
        elif sid == 3:  # PiecewiseExp: (p0/2)·exp(−p0|z|)
            for i in range(n):
                z[i] = half_p0 * fast_exp(-(p0 * abs(z[i])))
        elif sid == 4:  # SoftSign: p0 / (2(1 + p0|z|)²)
            for i in range(n):
                u = one + p0 * abs(z[i])
                z[i] = p0 / ((one + one) * (u * u))
        elif sid == 5:  # SuperSpike: p0 / (1 + |z|)²
            for i in range(n):
                u = one + abs(z[i])
                z[i] = p0 / (u * u)
        elif sid == 6:  # Erf: (p0/√π)·exp(−(p0·z)²)
            for i in range(n):
                u = p0 * z[i]
                z[i] = c_erf * fast_exp(-(u * u))
        elif sid == 7:  # Rect: p0 inside |z| < 0.5/p0
            for i in range(n):
                z[i] = p0 if abs(z[i]) < rect_half else zero
        else:  # PiecewiseLeakyReLU: 1/(2w) inside |z| < w, c outside (w = p0, c = p1)
            for i in range(n):
                z[i] = leaky_in if abs(z[i]) < p0 else p1

    @njit(cache=True, nogil=True, error_model="numpy")
    def forward(x, v0, spike, one_bits, v_last, v_seq, store_v_seq, one, decay, v_r, vth, leaky, decay_input,
                hard, fire_on_tie, chunk, begin, end):
        """Neurons [begin, end) of x [T, M] → spike [T, M] (0 / one_bits), v_last [M], v_seq [T, M] if asked."""
        T = x.shape[0]
        zero = one - one
        zero_bits = one_bits - one_bits
        for lo in range(begin, end, chunk):
            n = min(chunk, end - lo)
            v = v0[lo:lo + n].copy()
            for t in range(T):
                # Row slices (not x[t, lo + i]) let LLVM see unit-stride, non-negative indices and vectorise.
                xt = x[t, lo:lo + n]
                st = spike[t, lo:lo + n]
                for i in range(n):
                    h = charge(v[i], xt[i], decay, v_r, leaky, decay_input)
                    fired = fires(h, vth, fire_on_tie)
                    st[i] = one_bits if fired else zero_bits
                    v[i] = reset(h, one if fired else zero, one, vth, v_r, hard)
                if store_v_seq:
                    v_seq[t, lo:lo + n] = v
            v_last[lo:lo + n] = v

    @njit(cache=True, nogil=True, error_model="numpy")
    def backward(x, v0, grad_spike, gs_stride, grad_v_last, grad_v_seq, gvs_stride, grad_x, grad_v0,
                 need_decay_grad, one, decay, v_r, vth, leaky, decay_input, hard, fire_on_tie, detach_reset, sid, sp,
                 chunk, begin, end):
        """Recompute H of a chunk into grad_x's rows, then run the reverse-time recursion of the reference.

        Works on neurons [begin, end); returns this range's share of the decay gradient. ``grad_spike`` /
        ``grad_v_seq`` are [T, M], or one row of zeros read with stride 0 when autograd gave none.
        """
        T = x.shape[0]
        zero = one - one
        scale_input_grad = decay_input and leaky
        gd = 0.0
        for lo in range(begin, end, chunk):
            n = min(chunk, end - lo)
            v = v0[lo:lo + n].copy()
            for t in range(T):
                xt = x[t, lo:lo + n]
                ht = grad_x[t, lo:lo + n]
                for i in range(n):
                    h = charge(v[i], xt[i], decay, v_r, leaky, decay_input)
                    ht[i] = h
                    v[i] = reset(h, one if fires(h, vth, fire_on_tie) else zero, one, vth, v_r, hard)
            gv = grad_v_last[lo:lo + n].copy()
            sg = np.empty_like(gv)
            for t in range(T - 1, -1, -1):
                ht = grad_x[t, lo:lo + n]
                gvs = grad_v_seq[t * gvs_stride, lo:lo + n]
                gs = grad_spike[t * gs_stride, lo:lo + n]
                for i in range(n):
                    gv[i] = gv[i] + gvs[i]
                    sg[i] = ht[i] - vth
                surrogate_inplace(sid, sp, sg, n, one)
                if need_decay_grad:
                    # V_{t−1} − V_r (and X_t) enter the decay gradient; H_{t−1} is still in row t − 1.
                    xt = x[t, lo:lo + n]
                    hp = grad_x[max(t - 1, 0), lo:lo + n]
                    for i in range(n):
                        if t > 0:
                            v_prev = reset(hp[i], one if fires(hp[i], vth, fire_on_tie) else zero, one, vth, v_r, hard)
                        else:
                            v_prev = v0[lo + i]
                        gh = gs[i] * sg[i] + gv[i] * reset_grad(ht[i], sg[i], one, vth, v_r, hard, fire_on_tie,
                                                               detach_reset)
                        x_term = xt[i] if decay_input else zero
                        gd += gh * (x_term - (v_prev - v_r))
                for i in range(n):
                    gh = gs[i] * sg[i] + gv[i] * reset_grad(ht[i], sg[i], one, vth, v_r, hard, fire_on_tie,
                                                           detach_reset)
                    ht[i] = gh * decay if scale_input_grad else gh
                    gv[i] = gh - gh * decay
            grad_v0[lo:lo + n] = gv
        return gd

    return forward, backward


def _kernels():
    if _state["kernels"] is None and _state["error"] is None:
        try:
            _state["kernels"] = _build_kernels()
        except Exception as exc:  # numba missing or broken: the reference takes over
            _state["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning("spikeforge: fused CPU neuron kernel unavailable (%s); using the reference kernel",
                           _state["error"])
    return _state["kernels"]


def _mark_broken(exc: Exception) -> None:
    _state["kernels"], _state["error"] = None, f"{type(exc).__name__}: {exc}"
    logger.warning("spikeforge: fused CPU neuron kernel failed (%s); using the reference kernel from now on",
                   _state["error"])


def _chunk_size(T: int) -> int:
    chunk = max(_MIN_CHUNK, min(_MAX_CHUNK, _BACKWARD_CACHE_BYTES // (4 * max(T, 1))))
    return chunk // _VECTOR * _VECTOR


def _pool() -> ThreadPoolExecutor:
    threads = max(1, torch.get_num_threads())
    pool = _state.get("pool")
    # A forked child (DataLoader worker) inherits the pool object but not its threads: make a new one there.
    if pool is None or _state.get("pool_key") != (threads, os.getpid()):
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spikeforge-cpu")
        _state["pool"], _state["pool_key"] = pool, (threads, os.getpid())
    return pool


def _run_split(kernel, args: tuple, T: int, M: int) -> list:
    """Call ``kernel(*args, chunk, begin, end)`` over neuron ranges covering [0, M), on torch's thread count.

    The kernels release the GIL, so plain Python threads run them in parallel. There are a few more ranges
    than threads, so a thread slowed down by another process on the same core does not hold the others up.
    """
    chunk = _chunk_size(T)
    threads = max(1, torch.get_num_threads())
    if threads == 1 or T * M < _PARALLEL_MIN_ELEMENTS:
        return [kernel(*args, chunk, 0, M)]
    pieces = min(4 * threads, -(-M // chunk))
    step = -(-M // pieces)
    step = -(-step // _VECTOR) * _VECTOR
    futures = [_pool().submit(kernel, *args, chunk, lo, min(lo + step, M)) for lo in range(0, M, step)]
    return [f.result() for f in futures]


def _scalars(decay: float, spec: NeuronSpec, np_dtype):
    """(1, d, V_r, V_th) rounded to the compute dtype, as torch rounds Python scalars in the reference."""
    f = np_dtype.type
    return f(1.0), f(decay), f(spec.reset_value), f(spec.v_threshold)


def _surrogate_constants(spec: NeuronSpec, np_dtype) -> np.ndarray:
    """The constants :func:`spikeforge.surrogate.derivative` forms in double precision from (p0, p1)."""
    p0, p1 = float(spec.surrogate_p0), float(spec.surrogate_p1)
    return np.array([p0, p1, math.pi / 2.0 * p0, p0 / math.sqrt(math.pi), 1.0 / p0, p0 * p0, 0.5 / p0, p0 / 2.0,
                     1.0 / (2.0 * p0)], dtype=np_dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class CpuKernel:
    """Fused numba kernel; registered as ``'cpu'`` and first in the CPU preference list."""

    name = "cpu"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return CpuKernel.unavailable_reason(device) is None

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        """Why the kernel cannot run on ``device`` (None when it can); the dispatch logs it once."""
        if torch.device(device).type != "cpu":
            return "runs on the CPU only"
        if not numba_installed():
            return "needs numba (pip install spikeforge[fast])"
        if _state["error"] is not None:
            return f"failed to compile ({_state['error']})"
        return None

    @staticmethod
    def forward(x_seq, v0, decay: float, spec: NeuronSpec, store_v_seq: bool, need_decay_grad: bool):
        kernels = None if spec.smooth else _kernels()
        if kernels is None:  # smooth (non-spiking) surrogates are left to the reference
            return _reference_forward(x_seq, v0, decay, spec, store_v_seq)
        cdt = compute_dtype(x_seq.dtype)
        x = x_seq if x_seq.dtype == cdt else x_seq.to(cdt)
        x = x.contiguous()
        v_init = v0.to(cdt).contiguous()
        T, M = x.shape
        spike_seq = torch.empty((T, M), dtype=x_seq.dtype)
        if x_seq.dtype in _ONE_BITS:
            spike_view, one_bits = spike_seq.view(torch.int16), np.int16(_ONE_BITS[x_seq.dtype])
        else:
            spike_view, one_bits = spike_seq, np.dtype(str(cdt).replace("torch.", "")).type(1.0)
        v_last = torch.empty(M, dtype=cdt)
        v_seq = torch.empty((T, M), dtype=cdt) if store_v_seq else torch.empty((1, 1), dtype=cdt)
        xn = _np(x)
        one, d, v_r, vth = _scalars(decay, spec, xn.dtype)
        try:
            args = (xn, _np(v_init), _np(spike_view), one_bits, _np(v_last), _np(v_seq), bool(store_v_seq), one,
                    d, v_r, vth, spec.leaky, spec.decay_input, spec.v_reset is not None, spec.fire_on_tie)
            _run_split(kernels[0], args, T, M)
        except Exception as exc:
            _mark_broken(exc)
            return _reference_forward(x_seq, v0, decay, spec, store_v_seq)
        return spike_seq, v_last, (v_seq if store_v_seq else None), (x_seq, v0)

    @staticmethod
    def backward(saved, grad_spike, grad_v_last, grad_v_seq, decay: float, spec: NeuronSpec,
                 need_decay_grad: bool):
        x_seq, v0 = saved[0], saved[1]
        kernels = None if spec.smooth else _kernels()
        if kernels is None:
            return _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)
        cdt = compute_dtype(x_seq.dtype)
        x = (x_seq if x_seq.dtype == cdt else x_seq.to(cdt)).contiguous()
        T, M = x.shape
        v_init = v0.to(cdt).contiguous()
        zero_row = torch.zeros((1, M), dtype=cdt)  # stands for an absent gradient, read with stride 0
        gs = zero_row if grad_spike is None else grad_spike.to(cdt).contiguous()
        gvs = zero_row if grad_v_seq is None else grad_v_seq.to(cdt).contiguous()
        gvl = torch.zeros(M, dtype=cdt) if grad_v_last is None else grad_v_last.to(cdt).contiguous()
        grad_x = torch.empty((T, M), dtype=cdt)
        grad_v0 = torch.empty(M, dtype=cdt)
        xn = _np(x)
        one, d, v_r, vth = _scalars(decay, spec, xn.dtype)
        try:
            args = (xn, _np(v_init), _np(gs), int(grad_spike is not None), _np(gvl), _np(gvs),
                    int(grad_v_seq is not None), _np(grad_x), _np(grad_v0), bool(need_decay_grad), one, d, v_r, vth,
                    spec.leaky, spec.decay_input, spec.v_reset is not None, spec.fire_on_tie, spec.detach_reset,
                    int(spec.surrogate_id), _surrogate_constants(spec, xn.dtype))
            partials = _run_split(kernels[1], args, T, M)
        except Exception as exc:
            _mark_broken(exc)
            return _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)
        grad_decay = torch.tensor(math.fsum(partials), dtype=cdt) if need_decay_grad else None
        return grad_x, grad_v0, grad_decay


def _reference_forward(x_seq, v0, decay, spec, store_v_seq):
    spike_seq, v_last, v_seq, _ = ReferenceKernel.forward(x_seq, v0, decay, spec, store_v_seq, False)
    return spike_seq, v_last, v_seq, (x_seq, v0)


def _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad):
    """Backward from (x, v0) alone: rerun the reference forward for its saved tensors, then its backward."""
    x_seq, v0 = saved[0], saved[1]
    ref_saved = ReferenceKernel.forward(x_seq, v0, decay, spec, False, need_decay_grad)[3]
    return ReferenceKernel.backward(ref_saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)


__all__ = ["CpuKernel", "numba_installed"]
