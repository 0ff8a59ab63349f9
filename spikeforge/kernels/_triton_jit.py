"""The Triton kernels behind :class:`spikeforge.kernels.triton.TritonKernel` (see that module's docstring).

Kept in their own module, imported on first use, because ``triton.jit`` decides at decoration time whether a
kernel is compiled for the GPU or run by the interpreter (``TRITON_INTERPRET=1``), and resolves helper kernels
from module globals. The kernels avoid ``tl.sum`` and friends: their combine functions are decorated when
``triton`` is first imported, so in a process that imported triton before setting ``TRITON_INTERPRET`` they
would not run under the interpreter.
"""

import triton
import triton.language as tl


@triton.jit
def surrogate(z, p0, p1, c_atan, c_erf, SID: tl.constexpr):
    az = tl.abs(z)
    if SID == 0:  # Sigmoid
        s = 1.0 / (1.0 + tl.exp(-(p0 * z)))
        g = p0 * s * (1.0 - s)
    elif SID == 1:  # ATan
        u = c_atan * z
        g = (p0 / 2.0) / (1.0 + u * u)
    elif SID == 2:  # PiecewiseQuadratic
        g = tl.where(az > 1.0 / p0, 0.0 * z, p0 - p0 * p0 * az)
    elif SID == 3:  # PiecewiseExp
        g = (p0 / 2.0) * tl.exp(-(p0 * az))
    elif SID == 4:  # SoftSign
        u = 1.0 + p0 * az
        g = p0 / (2.0 * (u * u))
    elif SID == 5:  # SuperSpike
        u = 1.0 + az
        g = p0 / (u * u)
    elif SID == 6:  # Erf
        u = p0 * z
        g = c_erf * tl.exp(-(u * u))
    elif SID == 7:  # Rect
        g = tl.where(az < 0.5 / p0, p0 + 0.0 * z, 0.0 * z)
    else:  # PiecewiseLeakyReLU (w = p0, c = p1)
        g = tl.where(az < p0, 1.0 / (2.0 * p0) + 0.0 * z, p1 + 0.0 * z)
    return g

@triton.jit
def charge(v, x, decay, v_r, LEAKY: tl.constexpr, DECAY_INPUT: tl.constexpr):
    if LEAKY:
        if DECAY_INPUT:
            h = v + (x - (v - v_r)) * decay
        else:
            h = v - (v - v_r) * decay + x
    else:
        h = v + x
    return h

@triton.jit
def fire(h, vth, TIE: tl.constexpr):
    if TIE:
        f = h >= vth
    else:
        f = h > vth
    return f

@triton.jit
def reset(h, s, vth, v_r, HARD: tl.constexpr):
    if HARD:
        v = h * (1.0 - s) + v_r * s
    else:
        v = h - vth * s
    return v

@triton.jit
def forward_kernel(x_ptr, v0_ptr, spike_ptr, v_last_ptr, v_seq_ptr, par_ptr, T, M,
                   LEAKY: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD: tl.constexpr, TIE: tl.constexpr,
                   STORE_V: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    decay = tl.load(par_ptr + 0)
    v_r = tl.load(par_ptr + 1)
    vth = tl.load(par_ptr + 2)
    v = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        row = t * M + offs
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        h = charge(v, x, decay, v_r, LEAKY, DECAY_INPUT)
        s = tl.where(fire(h, vth, TIE), 1.0, 0.0).to(v.dtype)
        tl.store(spike_ptr + row, s.to(spike_ptr.dtype.element_ty), mask=mask)
        v = reset(h, s, vth, v_r, HARD)
        if STORE_V:
            tl.store(v_seq_ptr + row, v, mask=mask)
    tl.store(v_last_ptr + offs, v, mask=mask)

@triton.jit
def backward_kernel(x_ptr, v0_ptr, gs_ptr, gs_stride, gvl_ptr, gvs_ptr, gvs_stride, gx_ptr, gv0_ptr,
                    partial_ptr, par_ptr, T, M,
                    LEAKY: tl.constexpr, DECAY_INPUT: tl.constexpr, HARD: tl.constexpr, TIE: tl.constexpr,
                    DETACH: tl.constexpr, SID: tl.constexpr, NEED_DECAY_GRAD: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M
    decay = tl.load(par_ptr + 0)
    v_r = tl.load(par_ptr + 1)
    vth = tl.load(par_ptr + 2)
    p0 = tl.load(par_ptr + 3)
    p1 = tl.load(par_ptr + 4)
    c_atan = tl.load(par_ptr + 5)
    c_erf = tl.load(par_ptr + 6)
    v0 = tl.load(v0_ptr + offs, mask=mask, other=0.0)
    v = v0
    for t in range(T):  # recompute H_t into grad_x's rows
        row = t * M + offs
        x = tl.load(x_ptr + row, mask=mask, other=0.0).to(v.dtype)
        h = charge(v, x, decay, v_r, LEAKY, DECAY_INPUT)
        tl.store(gx_ptr + row, h, mask=mask)
        v = reset(h, tl.where(fire(h, vth, TIE), 1.0, 0.0).to(v.dtype), vth, v_r, HARD)
    gv = tl.load(gvl_ptr + offs, mask=mask, other=0.0)
    gd = 0.0 * gv  # per-lane partial sums of the decay gradient (no tl.sum: see the module docstring)
    for i in range(T):
        t = T - 1 - i
        row = t * M + offs
        gv = gv + tl.load(gvs_ptr + t * gvs_stride + offs, mask=mask, other=0.0)
        h = tl.load(gx_ptr + row, mask=mask, other=0.0)
        sg = surrogate(h - vth, p0, p1, c_atan, c_erf, SID)
        s = tl.where(fire(h, vth, TIE), 1.0, 0.0).to(h.dtype)
        if HARD:
            rg = 1.0 - s
            if not DETACH:
                rg = rg + (v_r - h) * sg
        else:
            if DETACH:
                rg = 1.0 + 0.0 * h
            else:
                rg = 1.0 - vth * sg
        gs = tl.load(gs_ptr + t * gs_stride + offs, mask=mask, other=0.0)
        gh = gs * sg + gv * rg
        if NEED_DECAY_GRAD:
            hp = tl.load(gx_ptr + tl.maximum(t - 1, 0) * M + offs, mask=mask, other=0.0)
            sp = tl.where(fire(hp, vth, TIE), 1.0, 0.0).to(h.dtype)
            v_prev = tl.where(t > 0, reset(hp, sp, vth, v_r, HARD), v0)
            if DECAY_INPUT:
                x_term = tl.load(x_ptr + row, mask=mask, other=0.0).to(h.dtype)
            else:
                x_term = 0.0 * h
            gd += tl.where(mask, gh * (x_term - (v_prev - v_r)), 0.0 * h)
        if DECAY_INPUT and LEAKY:
            tl.store(gx_ptr + row, gh * decay, mask=mask)
        else:
            tl.store(gx_ptr + row, gh, mask=mask)
        gv = gh - gh * decay
    tl.store(gv0_ptr + offs, gv, mask=mask)
    if NEED_DECAY_GRAD:
        tl.store(partial_ptr + offs, gd, mask=mask)
