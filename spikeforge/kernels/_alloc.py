"""Output buffers of the CPU kernels: reused between calls, and backed by transparent huge pages where Linux
lets a process ask for them.

Why. A kernel output of T x M floats is usually too large for glibc to keep on its heap (blocks over its mmap
threshold, at most 32 MiB, get their own mapping and go back to the system when freed), so every call maps fresh
memory, and the first write to each 4 KiB page takes a page fault and a page clear in the kernel. For a 32 MiB
output that is 8192 faults, which cost as much as the fused neuron loop itself; two threads faulting at once
also contend for the process's memory-map lock.

Two things, both for spikeforge's own outputs only (nothing about the process's allocator or other tensors
changes):

* **Reuse** (:class:`BufferCache`). An output of at least 128 KiB (glibc's default mmap threshold) is a tensor
  over an anonymous mapping (``mmap``) that the cache keeps when the tensor is freed. The next request of the
  same size (rounded up to whole pages, and to 2 MiB from 2 MiB on) gets that memory back without a fault or
  a page clear: a training loop asks for the same shapes every step. A mapping counts as free when nothing
  holds its buffer any more: every tensor, view or numpy array over it releases its buffer export when it
  dies, which CPython's reference count of the mapping shows exactly. When a new mapping is made, free ones
  beyond ``SPIKEFORGE_BUFFER_CACHE_MB`` (default 1024) are unmapped, oldest first; :func:`empty_cache` unmaps
  all free ones now (as ``torch.cuda.empty_cache`` does on the GPU); ``SPIKEFORGE_BUFFER_CACHE_MB=0`` turns
  reuse off. The cache is per process (a forked DataLoader worker starts with an empty one), and off where reference
  counts are not exact (interpreters other than CPython, or CPython without the GIL).
* **Huge pages.** New mappings of at least 4 MiB ask for transparent huge pages
  (``madvise(MADV_HUGEPAGE)``, before the first write), which turns the 8192 faults of a fresh 32 MiB output
  into 16 of 2 MiB. On systems whose THP setting is ``always`` the kernel does this by itself; with
  ``madvise`` (the default of many distributions) only when asked; with ``never`` (or off Linux) nothing
  changes. ``SPIKEFORGE_HUGEPAGES=0`` turns the request off.

What a user sees: the outputs are ordinary contiguous CPU tensors. Like tensors made by ``torch.from_numpy``
their storage cannot be resized in place (``resize_`` beyond their size raises). Memory freed by the user
stays resident in the cache until reused or unmapped, as with PyTorch's CUDA caching allocator; peak-memory
probes call :func:`empty_cache` first so that they count what a step really maps.
"""
from __future__ import annotations

import ctypes
import math
import mmap
import os
import sys
import threading

import torch

_MIN_BYTES = 128 << 10   # glibc's default mmap threshold: smaller blocks come from its heap, which it reuses
_HUGE_MIN_BYTES = 4 << 20  # huge pages are asked for from here on
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = _THP_ENABLED) -> str:
    """The system's transparent-huge-page mode: ``always``, ``madvise``, ``never`` (also when unknown)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return "never"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "never"


def _huge_pages_wanted() -> bool:
    return (sys.platform.startswith("linux") and os.environ.get("SPIKEFORGE_HUGEPAGES", "1") != "0"
            and thp_mode() == "madvise")


def _load_madvise():
    if not _huge_pages_wanted():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def advise_huge_pages(tensor: torch.Tensor) -> bool:
    """Ask for huge pages under the whole 2 MiB pages inside ``tensor``'s memory; True when asked and granted.

    Harmless on memory already written (it only changes how later faults and ``khugepaged`` treat it)."""
    if _madvise is None or tensor.device.type != "cpu":
        return False
    start = tensor.data_ptr()
    nbytes = tensor.untyped_storage().nbytes()
    lo = -(-start // _HUGE_PAGE) * _HUGE_PAGE
    hi = (start + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if hi <= lo:
        return False
    return _madvise(lo, hi - lo, _MADV_HUGEPAGE) == 0


class _Buffer:
    __slots__ = ("mm", "nbytes", "stamp")

    def __init__(self, nbytes: int, stamp: int):
        # Private: Python's default for an anonymous map is MAP_SHARED, whose pages a forked child would share
        # (and which shmem's own huge-page setting governs, not madvise).
        self.mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.nbytes = nbytes
        self.stamp = stamp


def _refs(buffer: _Buffer) -> int:
    return sys.getrefcount(buffer.mm)


def _idle_refs() -> int:
    """The reference count :func:`_refs` reads for a mapping nothing else holds (measured, not assumed: how many
    references the interpreter's own stack adds differs between Python versions)."""
    probe = _Buffer(mmap.PAGESIZE, 0)
    try:
        return _refs(probe)
    finally:
        probe.mm.close()


def _exact_refcounts() -> bool:
    gil = getattr(sys, "_is_gil_enabled", None)
    return sys.implementation.name == "cpython" and (gil is None or gil())


class BufferCache:
    """Anonymous mappings handed out as tensors and taken back once nothing refers to them (module docstring)."""

    def __init__(self, idle_limit_bytes: int, huge_pages: bool):
        self.idle_limit = idle_limit_bytes
        self.huge_pages = huge_pages
        self._lock = threading.Lock()
        self._buffers: dict[int, list[_Buffer]] = {}
        self._pid = os.getpid()
        self._clock = 0
        self._idle = _idle_refs()

    def _is_free(self, buffer: _Buffer) -> bool:
        return _refs(buffer) <= self._idle

    def _own(self) -> dict[int, list[_Buffer]]:
        if self._pid != os.getpid():  # a forked child: the parent's mappings are copies it must not hand out
            self._buffers, self._pid = {}, os.getpid()
        return self._buffers

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        nbytes = max(numel * dtype.itemsize, 1)
        grain = _HUGE_PAGE if nbytes >= _HUGE_PAGE else mmap.PAGESIZE
        nbytes = -(-nbytes // grain) * grain
        with self._lock:
            buffers = self._own()
            self._clock += 1
            same = buffers.setdefault(nbytes, [])
            buffer = next((b for b in same if self._is_free(b)), None)
            if buffer is None:
                buffer = _Buffer(nbytes, self._clock)
                if self.huge_pages and nbytes >= _HUGE_MIN_BYTES:
                    try:
                        buffer.mm.madvise(_MADV_HUGEPAGE)
                    except (OSError, AttributeError):
                        pass
                same.append(buffer)
                self._trim(keep=buffer)  # only a new mapping can take the free bytes over the limit
            buffer.stamp = self._clock
            # The export is taken inside the lock, so no other thread can see this mapping as free.
            return torch.frombuffer(buffer.mm, dtype=dtype, count=numel).view(shape)

    def _trim(self, keep: _Buffer | None = None, limit: int | None = None) -> int:
        """Unmap free mappings, oldest first, until the free bytes are within ``limit``; returns bytes unmapped."""
        limit = self.idle_limit if limit is None else limit
        free = [b for same in self._buffers.values() for b in same if b is not keep and self._is_free(b)]
        idle = sum(b.nbytes for b in free)
        released = 0
        for buffer in sorted(free, key=lambda b: b.stamp):
            if idle <= limit:
                break
            self._buffers[buffer.nbytes].remove(buffer)
            buffer.mm.close()
            idle -= buffer.nbytes
            released += buffer.nbytes
        return released

    def release_free(self) -> int:
        with self._lock:
            self._own()
            return self._trim(limit=0)

    def stats(self) -> dict[str, int]:
        """Mapped bytes in use, free bytes kept, and the number of mappings."""
        with self._lock:
            buffers = [b for same in self._own().values() for b in same]
            free = sum(b.nbytes for b in buffers if self._is_free(b))
            return {"in_use_bytes": sum(b.nbytes for b in buffers) - free, "free_bytes": free,
                    "mappings": len(buffers)}


def _cache_limit_bytes() -> int:
    text = os.environ.get("SPIKEFORGE_BUFFER_CACHE_MB", "1024")
    try:
        mib = float(text)
    except ValueError:
        raise ValueError(f"SPIKEFORGE_BUFFER_CACHE_MB={text!r}: expected a number of MiB (0 turns the reuse of "
                         "kernel output buffers off)") from None
    return int(mib * (1 << 20))


def _make_cache() -> BufferCache | None:
    limit = _cache_limit_bytes()
    if limit <= 0 or not _exact_refcounts() or not hasattr(mmap, "MAP_PRIVATE"):  # no private maps: Windows
        return None
    return BufferCache(limit, _huge_pages_wanted())


_cache = _make_cache()


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor for a kernel output: from the buffer cache from 128 KiB on, else
    ``torch.empty`` (with huge pages asked for from 4 MiB on when the cache is off)."""
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes >= _MIN_BYTES and _cache is not None:
        return _cache.empty(shape, dtype)
    out = torch.empty(shape, dtype=dtype)
    if nbytes >= _HUGE_MIN_BYTES and _madvise is not None:
        advise_huge_pages(out)
    return out


def empty_cache() -> int:
    """Unmap every kernel output buffer that nothing refers to any more; returns the bytes given back."""
    return 0 if _cache is None else _cache.release_free()


def cache_stats() -> dict[str, int]:
    """``in_use_bytes``, ``free_bytes`` and ``mappings`` of the output buffer cache (zeros when it is off)."""
    return {"in_use_bytes": 0, "free_bytes": 0, "mappings": 0} if _cache is None else _cache.stats()


__all__ = ["BufferCache", "advise_huge_pages", "cache_stats", "empty", "empty_cache", "thp_mode"]
