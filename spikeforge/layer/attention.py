"""Attention for multi-step tensors (SpikingJelly's ``layer.attention``).

* :class:`TemporalWiseAttention`, :class:`MultiDimensionalAttention` — gates over time, channels and space.
* :class:`SpikingSelfAttention` (Spikformer), :class:`QKAttention` / :class:`TokenQKAttention` /
  :class:`ChannelQKAttention` (QKFormer), :class:`SpikeDrivenSelfAttention` (Spike-driven Transformer) — spiking
  self-attention blocks. Their spiking neurons are :class:`spikeforge.neuron.LIFNode` (τ = 2, detach_reset, the
  attention neuron with V_th = 0.5) unless ``spiking_neuron`` (a neuron class) is given; extra keyword
  arguments go to every neuron. The neurons are multi-step ('m'), so the blocks take [T, N, ...].
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .. import neuron as _neuron
from .container import SeqToANNContainer
from .stateless import BatchNorm2d, Conv2d


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


def _multi_step_neuron(spiking_neuron: Callable | None, kwargs: dict[str, Any], defaults: dict[str, Any]):
    """A multi-step neuron: ``spiking_neuron(**kwargs)``, or a LIFNode with ``defaults`` updated by kwargs."""
    if kwargs.get("step_mode", "m") != "m":
        raise ValueError(f"the spiking neurons of an attention block are multi-step: step_mode must be 'm', "
                         f"got {kwargs['step_mode']!r}")
    params = copy.deepcopy(defaults) if spiking_neuron is None else {}
    params.update(copy.deepcopy(kwargs))
    params["step_mode"] = "m"
    return (_neuron.LIFNode if spiking_neuron is None else spiking_neuron)(**params)


_LIF = {"tau": 2.0, "detach_reset": True}
_ATTN_LIF = {"tau": 2.0, "v_threshold": 0.5, "detach_reset": True}


def _check_heads(dim: int, num_heads: int) -> None:
    if num_heads <= 0 or dim % num_heads:
        raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")


def _conv1x1_bn(c_in: int, c_out: int) -> SeqToANNContainer:
    return SeqToANNContainer(nn.Conv1d(c_in, c_out, kernel_size=1, stride=1, bias=False), nn.BatchNorm1d(c_out))


class SpikingSelfAttention(nn.Module):
    """Spiking self-attention (Spikformer, Zhou et al. 2023) on [T, N, C, L] (L tokens).

    Q, K, V = LIF(BN(Conv1×1(x))) split into heads; A = LIF_{V_th=0.5}(s · Q Kᵀ V) with s = 0.125 (no softmax:
    spikes are non-negative); out = LIF(BN(Conv1×1(A))).
    """

    def __init__(self, dim: int, num_heads: int = 8, spiking_neuron: Callable | None = None, **kwargs: Any) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.scale = 0.125
        self.qkv_conv_bn = _conv1x1_bn(dim, 3 * dim)
        self.qkv_lif = _multi_step_neuron(spiking_neuron, kwargs, _LIF)
        self.attn_lif = _multi_step_neuron(spiking_neuron, kwargs, _ATTN_LIF)
        self.proj_conv_bn = _conv1x1_bn(dim, dim)
        self.proj_lif = _multi_step_neuron(spiking_neuron, kwargs, _LIF)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 4:
            raise ValueError(f"SpikingSelfAttention expects [T, N, C, L], got {tuple(x_seq.shape)}")
        T, N, C, L = x_seq.shape  # noqa: N806
        qkv = self.qkv_lif(self.qkv_conv_bn(x_seq))
        channels = qkv.shape[2] // 3
        if channels % self.num_heads:
            raise ValueError(f"SpikingSelfAttention: {channels} channels per Q/K/V do not split into "
                             f"{self.num_heads} heads")
        # [T, N, 3, heads, head_dim, L] → q, k, v each [T, N, heads, head_dim, L]
        q, k, v = qkv.reshape(T, N, 3, self.num_heads, channels // self.num_heads, L).flatten(2, 3).chunk(3, dim=2)
        attn = (v @ k.transpose(-2, -1)) @ q * self.scale  # per head: [head_dim, head_dim] @ [head_dim, L]
        x = self.attn_lif(attn).reshape(T, N, channels, L)
        return self.proj_lif(self.proj_conv_bn(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class QKAttention(nn.Module):
    """Q-K attention (QKFormer, Zhou et al. 2024) on [T, N, C, L]; linear in the number of tokens.

    Q, K = LIF(BN(Conv1×1(x))) in heads. ``qka_type='token'``: a token mask LIF_{0.5}(Σ_channels Q) gates K
    per token; ``'channel'``: a channel mask LIF_{0.5}(Σ_tokens Q) gates K per channel. out = LIF(BN(Conv1×1)).
    """

    def __init__(self, dim: int, num_heads: int = 8, qka_type: str = "token", spiking_neuron: Callable | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        if qka_type not in ("token", "channel"):
            raise ValueError(f"qka_type must be 'token' or 'channel', got {qka_type!r}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self._qka_type = qka_type
        self.qk_conv_bn = _conv1x1_bn(dim, 2 * dim)
        self.qk_lif = _multi_step_neuron(spiking_neuron, kwargs, _LIF)
        self.sum_dim = 3 if qka_type == "token" else 4
        self.attn_lif = _multi_step_neuron(spiking_neuron, kwargs, _ATTN_LIF)
        self.proj_conv_bn = _conv1x1_bn(dim, dim)
        self.proj_lif = _multi_step_neuron(spiking_neuron, kwargs, _LIF)

    @property
    def qka_type(self) -> str:
        return self._qka_type

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() != 4:
            raise ValueError(f"QKAttention expects [T, N, C, L], got {tuple(x_seq.shape)}")
        T, N, C, L = x_seq.shape  # noqa: N806
        qk = self.qk_lif(self.qk_conv_bn(x_seq))
        q, k = qk.reshape(T, N, 2, self.num_heads, C // self.num_heads, L).flatten(2, 3).chunk(2, dim=2)
        mask = self.attn_lif(q.sum(dim=self.sum_dim, keepdim=True))  # [T, N, heads, 1, L] or [.., head_dim, 1]
        x = (mask * k).flatten(2, 3)
        return self.proj_lif(self.proj_conv_bn(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, qka_type={self.qka_type}"


class TokenQKAttention(QKAttention):
    """:class:`QKAttention` with ``qka_type='token'``."""

    def __init__(self, dim: int, num_heads: int = 8, spiking_neuron: Callable | None = None, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, qka_type="token", spiking_neuron=spiking_neuron, **kwargs)


class ChannelQKAttention(QKAttention):
    """:class:`QKAttention` with ``qka_type='channel'``."""

    def __init__(self, dim: int, num_heads: int = 8, spiking_neuron: Callable | None = None, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, qka_type="channel", spiking_neuron=spiking_neuron, **kwargs)


class SpikeDrivenSelfAttention(nn.Module):
    """Spike-driven self-attention (Spike-driven Transformer, Yao et al. 2023) on [T, N, C, H, W].

    s = LIF(x); Q, K, V = LIF(BN(Conv1×1(s))) in heads over the H·W tokens; the mask
    LIF_{0.5}(Σ_tokens K ⊙ V) gates Q per channel; out = BN(Conv1×1(Q ⊙ mask)) + x.
    """

    def __init__(self, dim: int, num_heads: int = 8, spiking_neuron: Callable | None = None, **kwargs: Any) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.shortcut_lif = _multi_step_neuron(spiking_neuron, kwargs, _LIF)
        for name in ("q", "k", "v"):
            setattr(self, f"{name}_conv", Conv2d(dim, dim, 1, bias=False, step_mode="m"))
            setattr(self, f"{name}_bn", BatchNorm2d(dim, step_mode="m"))
            setattr(self, f"{name}_lif", _multi_step_neuron(spiking_neuron, kwargs, _LIF))
        self.attn_lif = _multi_step_neuron(spiking_neuron, kwargs, _ATTN_LIF)
        self.proj_conv = Conv2d(dim, dim, 1, step_mode="m")
        self.proj_bn = BatchNorm2d(dim, step_mode="m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"SpikeDrivenSelfAttention expects [T, N, C, H, W], got {tuple(x.shape)}")
        T, N, C, H, W = x.shape  # noqa: N806
        s = self.shortcut_lif(x)

        def heads(name: str) -> torch.Tensor:  # [T, N, C, H, W] → [T, N, heads, H·W, head_dim]
            y = getattr(self, f"{name}_lif")(getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(s)))
            return y.flatten(3).transpose(-1, -2).reshape(T, N, H * W, self.num_heads, self.head_dim).transpose(2, 3)

        q, k, v = heads("q"), heads("k"), heads("v")
        kv = self.attn_lif((k * v).sum(dim=-2, keepdim=True))
        y = (q * kv).transpose(3, 4).reshape(T, N, C, H, W)
        return self.proj_bn(self.proj_conv(y)) + x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


__all__ = ["TemporalWiseAttention", "MultiDimensionalAttention", "SpikingSelfAttention", "QKAttention",
           "TokenQKAttention", "ChannelQKAttention", "SpikeDrivenSelfAttention"]
