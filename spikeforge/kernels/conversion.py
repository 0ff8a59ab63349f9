"""Kernels of the ANN→SNN conversion IF neuron (:class:`spikeforge.neuron.ConversionIFNode`).

Per step t, with threshold θ (a float or one per channel), membrane v and, for signed spikes, the net spike
count c (``spec.conversion`` holds the options)::

    v ← v + x_t
    s = 1                      if v ≥ θ
      = −1                     if signed_spikes and v < 0 and c > 0
      = 0                      otherwise
    v ← v − s·θ                (soft reset)
    c ← c + s                  (signed_spikes only)
    out_t = s·θ if emit_threshold else s

The membrane starts at θ/2 with ``half_threshold`` (set by the module), else 0. A kernel's contract::

    run(x_seq [S, *shape], steps, static, v [*shape], count [*shape] | None, theta [*shape], spec) -> [steps, *shape]

``v`` and ``count`` are updated in place (they are the module's state); ``static=True`` means ``x_seq`` holds one
frame (S = 1) fed at every one of ``steps`` steps (direct coding) without repeating it in memory.

``reference`` is plain in-place PyTorch (any device, dtype, autograd); ``cpu`` is one fused numba loop (float32
CPU tensors that need no gradient — conversion is inference — else it hands over to the reference).
"""

from __future__ import annotations

import functools
import weakref

import torch

from ..spec import NeuronSpec
from . import _alloc
from .cpu import numba_installed

_NUMBA_KERNEL = None


def _numba_if_kernel():
    """The fused multi-step IF loop compiled by numba (None when numba is not installed).

    One pass per element: read x (or the single static frame), keep v in a register, write the spike. The
    jitted loop is ``_cpu_jit.conversion_if``, at module level so that numba's on-disk cache hits in later
    processes (see that module); its first call, which compiles it or loads it from the cache, runs inside
    ``cpu.interrupt_guard`` so that Ctrl-C stops it.
    """
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        from .cpu import compile_call, interrupt_guard

        try:
            with interrupt_guard():  # imports numba
                from ._cpu_jit import conversion_if
        except ImportError:
            _NUMBA_KERNEL = False
            return None
        _NUMBA_KERNEL = functools.partial(compile_call, ("conversion.if",), conversion_if)
    return _NUMBA_KERNEL or None


# Per-channel thresholds broadcast to the full frame, kept between the steps of a batch: the converted network
# calls the kernel once per step with the same threshold tensor, and expanding it each time wrote a frame-sized
# copy per layer per step. Keyed by the tensor's identity (a weak reference, so a freed tensor whose id is reused
# never matches), its version counter (bumped by any in-place change) and the frame's shape.
_THETA_CACHE: dict[int, tuple] = {}
_THETA_CACHE_SIZE = 64


def _full_theta(theta: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    entry = _THETA_CACHE.get(id(theta))
    if entry is not None:
        ref, version, shape, dtype, full = entry
        if ref() is theta and version == theta._version and shape == frame.shape and dtype == frame.dtype:
            return full
    full = theta.to(frame.dtype).expand_as(frame).contiguous()
    if len(_THETA_CACHE) >= _THETA_CACHE_SIZE:
        _THETA_CACHE.clear()
    _THETA_CACHE[id(theta)] = (weakref.ref(theta), theta._version, frame.shape, frame.dtype, full)
    return full


class ConversionReferenceKernel:
    """In-place PyTorch loop over the steps; the oracle of the conversion family."""

    name = "reference"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return True

    @staticmethod
    def run(x_seq, steps: int, static: bool, v, count, theta, spec: NeuronSpec):
        options = spec.conversion
        frame = x_seq[0]
        out = torch.empty((steps, *frame.shape), dtype=frame.dtype, device=frame.device)
        amplitude = theta if options.emit_threshold else torch.ones_like(theta)
        for t in range(steps):
            x, o = (frame if static else x_seq[t]), out[t]
            v.add_(x)
            torch.mul(torch.ge(v, theta), amplitude, out=o)
            if options.signed_spikes:
                negative = torch.lt(v, 0) & (count > 0)
                o.sub_(negative * amplitude)
                count.add_(torch.sign(o))
            v.sub_(o if options.emit_threshold else o * theta)
        return out


class ConversionCpuKernel:
    """One fused numba pass over (tiles of neurons) × steps; float32 CPU inference."""

    name = "cpu"

    @staticmethod
    def is_available(device: torch.device) -> bool:
        return ConversionCpuKernel.unavailable_reason(device) is None

    @staticmethod
    def unavailable_reason(device: torch.device) -> str | None:
        if torch.device(device).type != "cpu":
            return "runs on the CPU only"
        if not numba_installed():
            return "needs numba (pip install spikeforge[fast])"
        return None

    @staticmethod
    def supports(x: torch.Tensor) -> bool:
        return x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad)

    @staticmethod
    def run(x_seq, steps: int, static: bool, v, count, theta, spec: NeuronSpec):
        kernel = _numba_if_kernel()
        if kernel is None or not ConversionCpuKernel.supports(x_seq) or not v.is_contiguous():
            return ConversionReferenceKernel.run(x_seq, steps, static, v, count, theta, spec)
        options = spec.conversion
        x_seq = x_seq.contiguous()
        frame = x_seq[0]
        out = _alloc.empty((steps, *frame.shape), frame.dtype)
        # a layer-wise threshold goes in as one number; a per-channel one is broadcast to the frame (cached)
        theta = theta.reshape(1).to(frame.dtype) if theta.numel() == 1 else _full_theta(theta, frame)
        count = count if options.signed_spikes else torch.zeros(1)
        kernel(x_seq.reshape(x_seq.shape[0], -1).numpy(), steps, static, v.view(-1).numpy(), count.view(-1).numpy(),
               theta.view(-1).numpy(), options.emit_threshold, options.signed_spikes, out.view(steps, -1).numpy())
        return out


__all__ = ["ConversionReferenceKernel", "ConversionCpuKernel"]
