"""Shared pieces of the STBP tests: the public vectors, spike counting, the regenerated CifarNet weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from spikeforge.neuron import LIFSpike

SHARED = Path(__file__).resolve().parents[3] / "shared"
VECTORS = SHARED / "specs" / "vectors" / "stbp_public.pt"
CHECKPOINTS = SHARED / "specs" / "checkpoints"
needs_vectors = pytest.mark.skipif(not VECTORS.is_file(), reason="../shared/specs/vectors/stbp_public.pt absent")

_CACHE: dict = {}


def vectors() -> dict:
    if "v" not in _CACHE:
        _CACHE["v"] = torch.load(VECTORS, weights_only=True)
    return _CACHE["v"]


def time_first(x: torch.Tensor) -> torch.Tensor:
    """The vectors' time-last [N, C, H, W, T] input as spikeforge's [T, N, C, H, W]."""
    return x.permute(4, 0, 1, 2, 3)


def run_counting_spikes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The output and the spike count of every LIF call, in forward order."""
    counts: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: counts.append(int(out.sum())))
             for m in model.modules() if isinstance(m, LIFSpike)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, counts


def cifarnet_state_dict() -> dict[str, torch.Tensor]:
    """The CifarNet weights of the vectors: the stored partial state_dict plus the regenerated big tensors."""
    entry = vectors()["CifarNet"]
    torch.manual_seed(1)
    convs = [nn.Conv2d(3, 128, 3, 1, 1, bias=False), nn.Conv2d(128, 256, 3, 1, 1, bias=False),
             nn.Conv2d(256, 512, 3, 1, 1, bias=False), nn.Conv2d(512, 1024, 3, 1, 1, bias=False),
             nn.Conv2d(1024, 512, 3, 1, 1, bias=False)]
    fcs = [nn.Linear(32768, 1024), nn.Linear(1024, 512), nn.Linear(512, 10)]
    state = dict(entry["state_dict_partial"])
    with torch.no_grad():
        for i in range(1, 5):
            state[f"conv{i}.weight"] = state[f"conv{i}_s.layer.weight"] = convs[i].weight * 4.0
        for i in range(2):
            state[f"fc{i + 1}.weight"] = state[f"fc{i + 1}_s.layer.weight"] = fcs[i].weight * 2.0
    return state


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(key, shape)]`` of ``../shared/specs/checkpoints/stbp_<name>.txt``."""
    rows = []
    for line in (CHECKPOINTS / f"stbp_{name}.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split(" ", 1)
            rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows
