"""The random number generators a training run draws from, saved and restored as plain data.

:func:`get_rng_state` returns tensors, ints and lists only, so the state goes into a checkpoint that
``torch.load(weights_only=True)`` reads; :func:`set_rng_state` restores it, and the next draws are the same as
those of the run that saved it (batch order, Poisson spikes, dropout masks).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state", "rank_seed"]


def get_rng_state() -> dict:
    """torch (CPU and every CUDA device), Python's ``random`` and NumPy's global generator."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = list(state["cuda"])[: torch.cuda.device_count()]
        for device, cuda_state in enumerate(cuda):
            torch.cuda.set_rng_state(cuda_state, device)


def rank_seed(base_seed: int, rank: int) -> int:
    """A seed for process ``rank`` derived from ``base_seed`` (rank 0 keeps ``base_seed``).

    Distributed ranks are seeded alike so that they build the same initial model; afterwards every rank
    but 0 moves to its own stream, so that their Poisson spikes and dropout masks are not copies of each other.
    """
    if rank == 0:
        return base_seed
    return (base_seed * 1_000_003 + 7_919 * rank) % (2**63 - 1)
