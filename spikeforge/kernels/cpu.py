"""Fused multi-step neuron kernel for the CPU, compiled with numba.

Same equations as :mod:`spikeforge.kernels.reference` (read that docstring for them). What differs is the
memory traffic: the neurons are cut into chunks, a pool of Python threads runs the chunks (the kernels release
the GIL), and each chunk is walked through all T steps with its membrane in a chunk-local buffer, so every input
byte is read once and every output byte written once. The inner loops run over contiguous neurons of one time
step, which lets LLVM vectorise them; the neuron options (reset kind, tie rule, detach_reset, surrogate id) are runtime
arguments, so only a handful of specialisations are ever compiled (one per dtype), and ``cache=True`` keeps
them on disk between processes. The jitted functions themselves live in :mod:`._cpu_jit` (why at module level,
and where the cache goes, is said there).

The first call of each specialisation compiles it (or loads it from the cache) in the calling thread, before any
worker thread runs, inside :func:`interrupt_guard`: Ctrl-C during that compile raises KeyboardInterrupt even when
the signal lands in one of the callbacks numba's compile runs through (ctypes callbacks of LLVM's object cache,
weakref finalisers), which would otherwise print "Exception ignored ..." and let the program go on.

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

import _thread
import contextlib
import importlib.util
import logging
import math
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import _alloc
from .reference import NeuronSpec, ReferenceKernel, compute_dtype

logger = logging.getLogger("spikeforge.kernels")


def _l2_bytes(path: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """The per-core level-2 data cache in bytes, from Linux's sysfs; None where it cannot be read."""
    try:
        for index in sorted(Path(path).glob("index*")):
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            if level == "2" and kind in ("Data", "Unified"):
                text = (index / "size").read_text().strip().upper()
                return int(text.rstrip("KM")) * {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    except (OSError, ValueError):
        return None
    return None


# Chunk sizing: backward keeps T rows of one chunk hot in cache while it walks them backwards: half the core's
# L2 (the other half holds the rows of x and of the spike gradient it streams through), 256 KiB when unknown.
# On a 1 MiB-L2 core this took T=128 from 6.4 to 5.3 ms against a fixed 256 KiB.
_BACKWARD_CACHE_BYTES = max(128 << 10, min(4 << 20, (_l2_bytes() or (512 << 10)) // 2))
_MAX_CHUNK = 4096
_MIN_CHUNK = 64
_VECTOR = 16  # chunks are multiples of this many neurons, so the vector loops have no ragged middle
_PARALLEL_MIN_ELEMENTS = 1 << 16  # below this, handing work to threads costs more than it saves

# Bit patterns of 1.0 for the half-precision spike outputs.
_ONE_BITS = {torch.float16: 0x3C00, torch.bfloat16: 0x3F80}

_state: dict[str, object] = {"kernels": None, "error": None}

# Keys (kernel, argument dtypes) of the specialisations this process has compiled or loaded already.
_compiled: set = set()


def numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def _build_kernels():
    """Import the jitted forward and backward kernels (numba compiles them, or loads them from its on-disk cache,
    on their first call with new argument types); returns (forward, backward).

    They live at module level in :mod:`._cpu_jit` (imported only here, so numba stays an optional extra):
    defined inside this function they were closures, whose cache key changes in every process.
    """
    from . import _cpu_jit

    return _cpu_jit.forward, _cpu_jit.backward


@contextlib.contextmanager
def interrupt_guard():
    """Let Ctrl-C stop a numba compile run inside this block (in the main thread; elsewhere it does nothing).

    Python runs a signal handler at the next bytecode after the signal, and during a compile that is often
    Python code called back from C (llvmlite's object-cache hooks are ctypes callbacks, run by LLVM right after
    it has emitted the machine code; weakref finalisers run from the garbage collector). An exception raised
    there cannot propagate: CPython hands it to ``sys.unraisablehook`` ("Exception ignored on calling ctypes
    callback function") and carries on, so the compile finished and the program went on.

    While the block runs, the SIGINT handler in place is wrapped (called as before, not replaced) to remember
    the exception it raised. If that very exception reaches the unraisable hook, it is not printed but
    delivered again ~10 ms later (``_thread.interrupt_main`` from a timer thread), when the interpreter is back
    in ordinary code; and if the block ends although the handler raised, that exception is raised at the end.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # signals go to the main thread only; SIG_IGN / SIG_DFL are left to the OS
        return
    # exc: raised by the handler and not seen leaving the block; in_hook: on_unraisable is re-arming it
    pending: dict[str, object] = {"exc": None, "in_hook": False, "timer": None}

    def on_sigint(signum, frame):
        if pending["in_hook"]:
            return  # another Ctrl-C while the first is being re-armed: that re-delivery stands for both
        try:
            previous(signum, frame)
        except BaseException as exc:
            pending["exc"] = exc
            raise

    previous_hook = sys.unraisablehook

    def on_unraisable(unraisable):
        if pending["exc"] is None or unraisable.exc_value is not pending["exc"]:
            previous_hook(unraisable)
            return
        pending["in_hook"] = True
        try:
            timer = threading.Timer(0.01, _thread.interrupt_main, (signal.SIGINT,))
            timer.daemon = True
            timer.start()
            pending["timer"] = timer
        finally:
            pending["in_hook"] = False

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        try:
            timer = pending["timer"]
            if timer is not None:  # a re-delivery on its way lands here (under on_sigint) or not at all
                timer.cancel()
                timer.join()
        finally:
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = previous_hook
    if pending["exc"] is not None:  # the block finished although the handler raised inside it
        raise pending["exc"]


def compile_call(key, kernel, *args):
    """``kernel(*args)``; the first time ``key`` (naming the kernel and its argument types) is seen, inside
    :func:`interrupt_guard`, since that call compiles the kernel or loads it from numba's cache."""
    if key in _compiled:
        return kernel(*args)
    with interrupt_guard():
        result = kernel(*args)
    _compiled.add(key)
    return result


def _kernels():
    if _state["kernels"] is None and _state["error"] is None:
        try:
            with interrupt_guard():  # imports numba and registers the kernels (no compile yet)
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
    """Neurons per backward chunk: its T rows of H fit in :data:`_BACKWARD_CACHE_BYTES`."""
    chunk = max(_MIN_CHUNK, min(_MAX_CHUNK, _BACKWARD_CACHE_BYTES // (4 * max(T, 1))))
    return chunk // _VECTOR * _VECTOR


# The forward revisits nothing, so its chunk only bounds the chunk-local membrane (16 KiB, in L1); long row
# segments stream better than page-sized ones (T=128, one thread: 6.0 ms at 1024 neurons, 4.4 ms at 4096).
_FORWARD_CHUNK = _MAX_CHUNK


def _pool() -> ThreadPoolExecutor:
    threads = max(1, torch.get_num_threads())
    pool = _state.get("pool")
    # A forked child (DataLoader worker) inherits the pool object but not its threads: make a new one there.
    if pool is None or _state.get("pool_key") != (threads, os.getpid()):
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="spikeforge-cpu")
        _state["pool"], _state["pool_key"] = pool, (threads, os.getpid())
    return pool


def _run_split(kernel, args: tuple, T: int, M: int, key, chunk: int) -> list:
    """Call ``kernel(*args, chunk, begin, end)`` over neuron ranges covering [0, M), on torch's thread count.

    The kernels release the GIL, so plain Python threads run them in parallel. There are a few more ranges
    than threads, so a thread slowed down by another process on the same core does not hold the others up.
    A ``key`` not seen before is first compiled here, in the calling thread, by a call over the empty range
    [0, 0) (no work, so the split and the results are those of every later call).
    """
    if key not in _compiled:
        compile_call(key, kernel, *args, chunk, 0, 0)
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
        spike_seq = _alloc.empty((T, M), x_seq.dtype)
        if x_seq.dtype in _ONE_BITS:
            spike_view, one_bits = spike_seq.view(torch.int16), np.int16(_ONE_BITS[x_seq.dtype])
        else:
            spike_view, one_bits = spike_seq, np.dtype(str(cdt).replace("torch.", "")).type(1.0)
        v_last = _alloc.empty((M,), cdt)
        v_seq = _alloc.empty((T, M), cdt) if store_v_seq else _zero_rows(1, cdt)
        xn = _np(x)
        one, d, v_r, vth = _scalars(decay, spec, xn.dtype)
        try:
            args = (xn, _np(v_init), _np(spike_view), one_bits, _np(v_last), _np(v_seq), bool(store_v_seq), one,
                    d, v_r, vth, spec.leaky, spec.decay_input, spec.v_reset is not None, spec.fire_on_tie)
            _run_split(kernels[0], args, T, M, ("cpu.forward", xn.dtype, spike_view.dtype), _FORWARD_CHUNK)
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
        gs, gs_stride = _time_rows(grad_spike, T, M, cdt)
        gvs, gvs_stride = _time_rows(grad_v_seq, T, M, cdt)
        if grad_v_seq is None:
            gvs_stride = -1  # nothing reached v_seq: the kernel skips that term
        gvl = _zero_rows(M, cdt)[0] if grad_v_last is None else grad_v_last.to(cdt).contiguous()
        grad_x = _alloc.empty((T, M), cdt)
        grad_v0 = _alloc.empty((M,), cdt)
        xn = _np(x)
        one, d, v_r, vth = _scalars(decay, spec, xn.dtype)
        try:
            args = (xn, _np(v_init), _np(gs), gs_stride, _np(gvl), _np(gvs), gvs_stride, _np(grad_x), _np(grad_v0),
                    bool(need_decay_grad), one, d, v_r, vth, spec.leaky, spec.decay_input, spec.v_reset is not None,
                    spec.fire_on_tie, spec.detach_reset,
                    int(spec.surrogate_id), _surrogate_constants(spec, xn.dtype))
            partials = _run_split(kernels[1], args, T, M, ("cpu.backward", xn.dtype), _chunk_size(T))
        except Exception as exc:
            _mark_broken(exc)
            return _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)
        grad_decay = torch.tensor(math.fsum(partials), dtype=cdt) if need_decay_grad else None
        return grad_x, grad_v0, grad_decay


def _time_rows(grad: torch.Tensor | None, T: int, M: int, cdt: torch.dtype) -> tuple[torch.Tensor, int]:
    """A [T, M] gradient as (rows, stride) for the kernel: the tensor itself with stride 1, or a single row read
    with stride 0 when every step's row is the same one (``spike_seq.sum().backward()`` hands an expanded
    tensor whose time stride is 0: materialising it would write T·M floats just to read them once) or when the
    gradient is absent (zeros)."""
    if grad is None:
        return _zero_rows(M, cdt), 0
    if T > 1 and grad.stride(0) == 0:
        return grad[:1].to(cdt).contiguous(), 0
    return grad.to(cdt).contiguous(), 1


_ZEROS: dict[torch.dtype, torch.Tensor] = {}


def _zero_rows(M: int, cdt: torch.dtype) -> torch.Tensor:
    """A [1, M] row of zeros that the kernels only read (an absent gradient): one per dtype, kept and grown, so
    a backward without ∂L/∂V allocates (and page-faults) nothing for it."""
    zeros = _ZEROS.get(cdt)
    if zeros is None or zeros.numel() < M:
        zeros = torch.zeros(max(M, 1), dtype=cdt)
        _ZEROS[cdt] = zeros
    return zeros[:M].view(1, M)


def _reference_forward(x_seq, v0, decay, spec, store_v_seq):
    spike_seq, v_last, v_seq, _ = ReferenceKernel.forward(x_seq, v0, decay, spec, store_v_seq, False)
    return spike_seq, v_last, v_seq, (x_seq, v0)


def _reference_backward(saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad):
    """Backward from (x, v0) alone: rerun the reference forward for its saved tensors, then its backward."""
    x_seq, v0 = saved[0], saved[1]
    ref_saved = ReferenceKernel.forward(x_seq, v0, decay, spec, False, need_decay_grad)[3]
    return ReferenceKernel.backward(ref_saved, grad_spike, grad_v_last, grad_v_seq, decay, spec, need_decay_grad)


__all__ = ["CpuKernel", "numba_installed"]
