"""The numba-compiled CPU kernels, at module level so numba's on-disk cache finds them again in a new process.

Imported only when numba is installed: lazily by :mod:`spikeforge.kernels.cpu` and
:mod:`spikeforge.kernels.conversion` (their docstrings describe the algorithms), and by
:mod:`spikeforge.kernels.encoding` for :func:`cached_njit`.

Why module level. numba keys a cached function by its signature, its bytecode and, when the function has a
``__closure__``, a hash of the pickled closure cells. A kernel defined inside a function closes over the helper
dispatchers it calls, and a dispatcher pickles with a uuid that is new in every process, so that hash changed
every time: each process missed the cache, compiled again and appended one more ``.nbc`` file. Functions
defined here have no closure: the index key is the same in every process and a later process loads the machine
code instead of compiling it. Keep it that way: no kernel defined inside a function, no globals that change
between processes (numba freezes a global's value into the compiled code).

Where the cache lives (numba's own order): ``$NUMBA_CACHE_DIR`` when set and writable; else ``__pycache__``
next to this file when writable; else the user's cache directory (``$XDG_CACHE_HOME/numba`` or
``~/.cache/numba``). When none of them is writable, :func:`cached_njit` compiles without a cache (every process
compiles again) and logs a warning once. numba invalidates an entry when the source file's contents change;
helpers called from a cached kernel must live in the same file, or editing them would not invalidate it.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np
from numba.extending import overload

logger = logging.getLogger("spikeforge.kernels")

_NO_CACHE_WARNED = []


def cached_njit(**options):
    """``numba.njit(cache=True, **options)``, or without the cache when no cache directory is writable."""

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available for file ..."
            if "locator" not in str(exc):
                raise
            if not _NO_CACHE_WARNED:
                _NO_CACHE_WARNED.append(True)
                logger.warning("spikeforge: no writable numba cache directory (%s); the fused kernels are compiled "
                               "in every process. Set NUMBA_CACHE_DIR to a writable directory to keep them.", exc)
            return numba.njit(**options)(func)

    return decorate


# ---------------------------------------------------------------------------------------------------------------
# Fused multi-step neuron kernels (spikeforge.kernels.cpu)
# ---------------------------------------------------------------------------------------------------------------


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


@numba.njit(inline="always", error_model="numpy")
def charge(v, x, decay, v_r, leaky, decay_input):
    # Operation order matches the reference exactly, so spikes agree bit for bit.
    if not leaky:
        return v + x
    if decay_input:
        return v + (x - (v - v_r)) * decay
    return v - (v - v_r) * decay + x


@numba.njit(inline="always", error_model="numpy")
def fires(h, vth, fire_on_tie):
    return (h > vth) | (fire_on_tie & (h == vth))


@numba.njit(inline="always", error_model="numpy")
def reset(h, s, one, vth, v_r, hard):
    if hard:
        return h * (one - s) + v_r * s
    return h - vth * s


@numba.njit(inline="always", error_model="numpy")
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


@numba.njit(inline="always", error_model="numpy")
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


@cached_njit(nogil=True, error_model="numpy")
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


# The reverse-time rows run with reassociation-free fast-math flags: FMA contraction, division through the
# reciprocal, no signed zeros. They only ever touch gradients (the spikes come from the recompute above, which is
# compiled strictly, so the firing decisions stay bit-identical to the forward); the gradients move by an ulp or
# two, well inside the 1e-5 relative tolerance the kernels are tested to against the reference.
_GRAD_FASTMATH = {"contract", "arcp", "nsz"}


@cached_njit(nogil=True, error_model="numpy", fastmath=_GRAD_FASTMATH)
def _surrogate_row(ht, sg, n, sid, sp, one, vth):
    """sg[:n] = σ'(H_t − V_th) for the row ht."""
    for i in range(n):
        sg[i] = ht[i] - vth
    surrogate_inplace(sid, sp, sg, n, one)


@cached_njit(nogil=True, error_model="numpy", fastmath=_GRAD_FASTMATH)
def _update_row(ht, gs, gv, sg, n, one, decay, vth, v_r, hard, fire_on_tie, detach_reset, scale_input_grad):
    """∂L/∂H_t = ∂L/∂S_t·σ' + ∂L/∂V_t·∂V_t/∂H_t → ∂L/∂X_t into ht, and ∂L/∂V_{t−1} into gv."""
    for i in range(n):
        gh = gs[i] * sg[i] + gv[i] * reset_grad(ht[i], sg[i], one, vth, v_r, hard, fire_on_tie, detach_reset)
        ht[i] = gh * decay if scale_input_grad else gh
        gv[i] = gh - gh * decay


@cached_njit(nogil=True, error_model="numpy", fastmath=_GRAD_FASTMATH)
def _atan_row(ht, gs, gv, n, sp, one, decay, vth, v_r, hard, fire_on_tie, detach_reset, scale_input_grad):
    """:func:`_surrogate_row` and :func:`_update_row` in one pass for ATan (the surrogate of lif_fc_mnist and
    most SpikingJelly examples): the surrogate value stays in a register instead of a row buffer, same
    arithmetic. Measured 3.8 -> 3.1 ms single-threaded at T=32, M=131072; the same fusion made Sigmoid
    slower (4.6 -> 5.5 ms), so the other surrogates keep the two passes."""
    c_atan, half_p0 = sp[2], sp[7]
    for i in range(n):
        u = c_atan * (ht[i] - vth)
        sg = half_p0 / (one + u * u)
        gh = gs[i] * sg + gv[i] * reset_grad(ht[i], sg, one, vth, v_r, hard, fire_on_tie, detach_reset)
        ht[i] = gh * decay if scale_input_grad else gh
        gv[i] = gh - gh * decay


@cached_njit(nogil=True, error_model="numpy")
def backward(x, v0, grad_spike, gs_stride, grad_v_last, grad_v_seq, gvs_stride, grad_x, grad_v0,
             need_decay_grad, one, decay, v_r, vth, leaky, decay_input, hard, fire_on_tie, detach_reset, sid, sp,
             chunk, begin, end):
    """Recompute H of a chunk into grad_x's rows, then run the reverse-time recursion of the reference.

    Works on neurons [begin, end); returns this range's share of the decay gradient. ``grad_spike`` /
    ``grad_v_seq`` are [T, M], or a single row read with stride 0: a gradient that is the same at every step
    (``out.sum().backward()`` hands an expanded one) or, for ``grad_spike``, absent (a row of zeros).
    ``gvs_stride`` −1 says that no gradient reached ``v_seq`` (the loop that adds it is skipped).
    """
    T = x.shape[0]
    zero = one - one
    scale_input_grad = decay_input and leaky
    gd = 0.0
    sg = np.empty(min(chunk, max(end - begin, 0)), dtype=x.dtype)
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
        for t in range(T - 1, -1, -1):
            ht = grad_x[t, lo:lo + n]
            gs = grad_spike[t * gs_stride, lo:lo + n]
            if gvs_stride >= 0:
                gvs = grad_v_seq[t * gvs_stride, lo:lo + n]
                for i in range(n):
                    gv[i] = gv[i] + gvs[i]
            if sid == 1 and not need_decay_grad:
                _atan_row(ht, gs, gv, n, sp, one, decay, vth, v_r, hard, fire_on_tie, detach_reset,
                          scale_input_grad)
                continue
            _surrogate_row(ht, sg, n, sid, sp, one, vth)
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
            _update_row(ht, gs, gv, sg, n, one, decay, vth, v_r, hard, fire_on_tie, detach_reset, scale_input_grad)
        grad_v0[lo:lo + n] = gv
    return gd


# ---------------------------------------------------------------------------------------------------------------
# Conversion IF neuron (spikeforge.kernels.conversion)
# ---------------------------------------------------------------------------------------------------------------


@cached_njit(parallel=True, nogil=True)
def conversion_if(x, steps, static, v, count, theta, emit, signed, out):  # pragma: no cover - compiled
    """IF with reset by subtraction over ``steps`` steps, in place on ``v``; float32 throughout.

    ``theta`` holds one threshold per neuron, or a single one (layer-wise scale: nothing frame-sized to read).
    Tiles of the neuron axis stay in L1 while the tile walks through time; each step's inner loop runs over a
    contiguous row slice with float32 constants and no per-element branch on the options, so it vectorises.
    """
    size = v.shape[0]
    tile = 1024
    per_neuron = theta.shape[0] > 1
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for b in numba.prange((size + tile - 1) // tile):
        lo = b * tile
        hi = min(lo + tile, size)
        n = hi - lo
        vt = v[lo:hi]
        th_row = theta[lo:hi] if per_neuron else theta[0:1]
        th0 = theta[0]
        for t in range(steps):
            row = 0 if static else t
            xt = x[row, lo:hi]
            ot = out[t, lo:hi]
            if signed:
                ct = count[lo:hi]
                for i in range(n):
                    th = th_row[i] if per_neuron else th0
                    vm = vt[i] + xt[i]
                    s = zero
                    if vm >= th:
                        s = one
                    elif vm < zero and ct[i] > zero:
                        s = -one
                    vt[i] = vm - s * th
                    ct[i] += s
                    ot[i] = s * th if emit else s
            elif per_neuron:
                for i in range(n):
                    th = th_row[i]
                    vm = vt[i] + xt[i]
                    s = one if vm >= th else zero
                    vt[i] = vm - s * th
                    ot[i] = s * th if emit else s
            else:
                for i in range(n):
                    vm = vt[i] + xt[i]
                    s = one if vm >= th0 else zero
                    vt[i] = vm - s * th0
                    ot[i] = s * th0 if emit else s


# ---------------------------------------------------------------------------------------------------------------
# Non-overlapping average pooling (spikeforge.kernels.pooling)
# ---------------------------------------------------------------------------------------------------------------


@cached_njit(parallel=True, nogil=True, error_model="numpy")  # numpy: no zero-divisor check, so it vectorises
def avg_pool_tiles(x, kh, kw, zero, divisor, out):  # pragma: no cover - compiled
    """out[p, i, j] = (sum of the kh x kw window, added row by row from ``zero``) / divisor, as ATen does.

    The window offsets are the outer loops and the output column the inner one, so each add runs along a whole
    output row (vectorised); every output element still receives its window's values in ATen's order."""
    planes = x.shape[0]
    h_out, w_out = out.shape[1], out.shape[2]
    if kh == 2 and kw == 2:  # the common 2 x 2 window, unrolled (4x faster than the general loops below)
        for p in numba.prange(planes):
            for i in range(h_out):
                o = out[p, i]
                r0 = x[p, 2 * i]
                r1 = x[p, 2 * i + 1]
                for j in range(w_out):
                    acc = zero + r0[2 * j]
                    acc += r0[2 * j + 1]
                    acc += r1[2 * j]
                    acc += r1[2 * j + 1]
                    o[j] = acc / divisor
        return
    for p in numba.prange(planes):
        for i in range(h_out):
            o = out[p, i]
            for j in range(w_out):
                o[j] = zero
            for a in range(kh):
                row = x[p, i * kh + a]
                for b in range(kw):
                    for j in range(w_out):
                        o[j] += row[j * kw + b]
            for j in range(w_out):
                o[j] = o[j] / divisor
