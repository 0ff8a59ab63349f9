"""Attention over time, channels and space for multi-step tensors (SpikingJelly's ``layer.attention``)."""

from __future__ import annotations

import torch
import torch.nn as nn


def _squeeze_excite_mlp(channels: int, reduction: int, conv3d: bool) -> nn.Sequential:
    hidden = channels // reduction
    if conv3d:
        return nn.Sequential(nn.Conv3d(channels, hidden, 1, bias=False), nn.ReLU(),
                             nn.Conv3d(hidden, channels, 1, bias=False))
    return nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels, bias=False))


class TemporalWiseAttention(nn.Module):
    """Temporal-wise attention (TA-SNN, Yao et al. 2021): one weight per time step and sample.

    For x_seq [T, N, ...]: s = σ(MLP(avg_{...}(x)) + MLP(max_{...}(x))) ∈ (0, 1)^{N×T}, the MLP T → T/r → T
    without bias (shared by both pools), and y[t] = s[:, t] · x[t]. ``dimension`` is 4 for [T, N, C, H, W] input
    and 2 for [T, N, M]. Multi-step only; T must be ≥ ``reduction``.
    """

    def __init__(self, T: int, reduction: int = 16, dimension: int = 4):  # noqa: N803 - SpikingJelly's name
        super().__init__()
        self.step_mode = "m"
        if dimension not in (2, 4):
            raise ValueError(f"TemporalWiseAttention: dimension must be 4 ([T, N, C, H, W]) or 2 ([T, N, M]), "
                             f"got {dimension}")
        if T < reduction:
            raise ValueError(f"TemporalWiseAttention: reduction ({reduction}) cannot be greater than T ({T})")
        if dimension == 2:
            self.avg_pool, self.max_pool = nn.AdaptiveAvgPool1d(1), nn.AdaptiveMaxPool1d(1)
        else:
            self.avg_pool, self.max_pool = nn.AdaptiveAvgPool3d(1), nn.AdaptiveMaxPool3d(1)
        self.sharedMLP = _squeeze_excite_mlp(T, reduction, conv3d=False)  # noqa: N815 - state_dict key name

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() not in (3, 5):
            raise ValueError(f"TemporalWiseAttention expects [T, N, M] or [T, N, C, H, W], got {tuple(x_seq.shape)}")
        x = x_seq.transpose(0, 1)  # [N, T, ...]: T plays the channel role of the pools
        n, t = x.shape[:2]
        score = torch.sigmoid(self.sharedMLP(self.avg_pool(x).view(n, t)) + self.sharedMLP(self.max_pool(x).view(n, t)))
        return (x * score.view(n, t, *([1] * (x.dim() - 2)))).transpose(0, 1)


class _AxisAttention(nn.Module):
    """Squeeze-excitation over one axis of [N, T, C, H, W]: T (default) or C (``channel_axis``)."""

    def __init__(self, planes: int, reduction: int, channel_axis: bool = False):
        super().__init__()
        self.channel_axis = channel_axis
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.max_pool = nn.AdaptiveMaxPool3d(1)
        self.sharedMLP = _squeeze_excite_mlp(planes, reduction, conv3d=True)  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_axis:
            x = x.transpose(1, 2)
        score = torch.sigmoid(self.sharedMLP(self.avg_pool(x)) + self.sharedMLP(self.max_pool(x)))
        return score.transpose(1, 2) if self.channel_axis else score


class _SpatialAttention(nn.Module):
    """A [1, H, W] map from the mean and max over (T, C), by a k×k convolution and a sigmoid."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, 2)
        pooled = torch.cat((x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values), dim=1)
        return torch.sigmoid(self.conv(pooled)).unsqueeze(1)


class MultiDimensionalAttention(nn.Module):
    """Multi-dimensional attention (MA-SNN, Yao et al. 2023) on [T, N, C, H, W].

    Applied in order, each a multiplicative gate in (0, 1): temporal (squeeze-excitation over T, ratio
    ``reduction_t``), channel (over C, ratio ``reduction_c``), spatial (a ``kernel_size`` conv, 3 or 7, on the
    mean and max over T and C); then ReLU. Each part can be switched off; at least one must stay on.
    """

    def __init__(self, T: int, C: int, reduction_t: int = 16, reduction_c: int = 16, kernel_size: int = 3,  # noqa: N803
                 use_temporal: bool = True, use_channel: bool = True, use_spatial: bool = True):
        super().__init__()
        if not (use_temporal or use_channel or use_spatial):
            raise ValueError("MultiDimensionalAttention: at least one of use_temporal, use_channel and use_spatial "
                             "must be True")
        if use_temporal and T < reduction_t:
            raise ValueError(f"MultiDimensionalAttention: reduction_t ({reduction_t}) cannot be greater than T ({T})")
        if use_channel and C < reduction_c:
            raise ValueError(f"MultiDimensionalAttention: reduction_c ({reduction_c}) cannot be greater than C ({C})")
        if kernel_size not in (3, 7):
            raise ValueError(f"MultiDimensionalAttention: kernel_size must be 3 or 7, got {kernel_size}")
        self.step_mode = "m"
        self.ta = _AxisAttention(T, reduction_t) if use_temporal else None
        self.ca = _AxisAttention(C, reduction_c, channel_axis=True) if use_channel else None
        self.sa = _SpatialAttention(kernel_size) if use_spatial else None
        self.relu = nn.ReLU()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 5:
            raise ValueError(f"MultiDimensionalAttention expects [T, N, C, H, W], got {tuple(x_seq.shape)}")
        out = x_seq.transpose(0, 1)
        for gate in (self.ta, self.ca, self.sa):
            if gate is not None:
                out = gate(out) * out
        return self.relu(out).transpose(0, 1)


__all__ = ["TemporalWiseAttention", "MultiDimensionalAttention"]
