"""Output buffers of the CPU kernels, backed by transparent huge pages where Linux lets a process ask for them.

A kernel output of T x M floats is usually too large for glibc to keep on its heap (blocks over its mmap
threshold, at most 32 MiB, get their own mapping and go back to the system when freed), so every call maps fresh
memory, and the first write to each 4 KiB page takes a page fault and a page clear in the kernel. For a 32 MiB
output that is 8192 faults, which cost as much as the fused neuron loop itself. Asking for transparent huge
pages on the new mapping (``madvise(MADV_HUGEPAGE)``, before the first write) turns them into 16 faults of
2 MiB. On systems whose THP setting is ``always`` the kernel does this by itself; with ``madvise`` (the default
of many distributions) it only does it when asked; with ``never`` (or off Linux) nothing changes.

``SPIKEFORGE_HUGEPAGES=0`` turns the request off. Only spikeforge's own outputs are advised; nothing about the
process's allocator or other tensors changes.
"""
from __future__ import annotations

import ctypes
import os
import sys

import torch

_MIN_BYTES = 4 << 20     # below this, glibc usually reuses heap memory and there is little to fault
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


def _load_madvise():
    if not sys.platform.startswith("linux") or os.environ.get("SPIKEFORGE_HUGEPAGES", "1") == "0":
        return None
    if thp_mode() != "madvise":
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


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, with huge pages asked for when it is large."""
    out = torch.empty(shape, dtype=dtype)
    if _madvise is not None and out.numel() * out.element_size() >= _MIN_BYTES:
        advise_huge_pages(out)
    return out


__all__ = ["advise_huge_pages", "empty", "thp_mode"]
